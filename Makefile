# make course — set up .venv if needed, run every notebook in order, write build/course/
# make test   — same set-up, then the unit tests and every notebook under nbval (fast mode)
# make unit   — the unit tests alone (fast mode), for quick work
# make lint   — ruff, and the package's layers (lint-imports, contracts in pyproject.toml)
# make lab    — open JupyterLab on the course (LAB_FLAGS=--no-browser on a remote machine)
# make site   — the course website in build/site/, from the executed course (runs `make course` first)
#
# FAST=1 runs the course in fast mode (MINIDIFF_FAST=1) into build/course-fast/ instead, and `make site FAST=1`
# builds build/site-fast/ from it: CI's site, in minutes.
#
# TORCH picks the PyTorch build pip installs first. Plain `torch` from PyPI is, on Linux, a CUDA
# build of several GB; on a laptop without a GPU, TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes the CPU-only build from the PyTorch project's CPU wheel index (a few hundred MB); CI pins
# TORCH='torch==2.13.0'. PYTHON picks the interpreter that creates .venv. THREADS pins torch's
# threads (the notebooks' kernels inherit it), so that run times are steady.

PYTHON ?= python3
TORCH ?= torch>=2.1
TORCH_INDEX ?=
LAB_FLAGS ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
FAST ?=
COURSE_DIR := build/course$(if $(FAST),-fast)
SITE_DIR := build/site$(if $(FAST),-fast)
HTML := $(patsubst notebooks/%.ipynb,$(COURSE_DIR)/%.html,$(NOTEBOOKS))
PACKAGE := $(filter-out minidiff/website.py,$(shell find minidiff -name '*.py'))  # what the lessons run
THREADS ?= 2
export OMP_NUM_THREADS := $(THREADS)
export MKL_NUM_THREADS := $(THREADS)

.PHONY: course site test unit lab lint clean
# a lesson that fails (or a claim it makes) leaves no page, so the next `make course` runs it again;
# its executed notebook, with the error, stays in build/course/
.DELETE_ON_ERROR:

course: $(HTML)
	@$(BIN)/python -m minidiff.run_course --report $(COURSE_DIR)

$(COURSE_DIR)/%.html: notebooks/%.ipynb $(PACKAGE) $(STAMP)
	@$(if $(FAST),MINIDIFF_FAST=1 )$(BIN)/python -m minidiff.run_course $< --out $(COURSE_DIR)

site: course
	$(BIN)/python -m minidiff.website $(COURSE_DIR) --out $(SITE_DIR)

test: $(STAMP)
	MINIDIFF_FAST=1 $(BIN)/python -m pytest -q tests --nbval-lax notebooks

unit: $(STAMP)
	MINIDIFF_FAST=1 $(BIN)/python -m pytest -q tests

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check minidiff tests benchmarks
	$(BIN)/lint-imports --no-logo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing PyTorch ($(TORCH)$(if $(TORCH_INDEX), from $(TORCH_INDEX))): a CUDA build from PyPI is several GB;"
	@echo "  for the CPU-only build: make $(or $(MAKECMDGOALS),course) TORCH_INDEX=https://download.pytorch.org/whl/cpu"
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	@echo "Installing minidiff and the course's packages (editable)"
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[dev]'  # (no setuptools banner about editable installs)
	touch $(STAMP)

clean:
	rm -rf build
