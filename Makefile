# make course — set up .venv if needed, run every notebook in order, write build/course/
# make test   — same set-up, then the unit tests and every notebook under nbval (fast mode)
# make lab    — open JupyterLab on the course
#
# TORCH picks the PyTorch build pip installs first (e.g. TORCH='torch==2.13.0' for a
# CPU-only wheel); PYTHON picks the interpreter that creates .venv.

PYTHON ?= python3
TORCH ?= torch>=2.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
HTML := $(patsubst notebooks/%.ipynb,build/course/%.html,$(NOTEBOOKS))
PACKAGE := $(shell find minidiff -name '*.py')

.PHONY: course test lab lint clean

course: $(HTML)

build/course/%.html: notebooks/%.ipynb $(PACKAGE) $(STAMP)
	@$(BIN)/python -m minidiff.run_course $< --out build/course

test: $(STAMP)
	MINIDIFF_FAST=1 $(BIN)/python -m pytest -q tests --nbval-lax notebooks

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check minidiff tests benchmarks

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf build
