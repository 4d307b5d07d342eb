"""The project's own promises: the two set-up routes agree, the README's first commands
are the Makefile's, and the fast-mode switch works."""

import re
import tomllib
from pathlib import Path

import pytest

from minidiff import budget, fast_mode

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    wanted = {"pytorch" if n == "torch" else n for n in wanted}  # conda calls torch "pytorch"
    lines = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1].splitlines()
    listed = {_name(line[4:]) for line in lines if re.match(r"^  - [a-z][\w-]*($|[<>= ])", line)}
    assert wanted <= listed, f"missing from environment.yml: {wanted - listed}"
    assert listed - {"python", "pip"} <= wanted, f"only in environment.yml: {listed - wanted}"
    assert any(line.strip() == "- -e ." for line in lines), "environment.yml must install the package (editable)"


def test_no_exact_pins_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert "==" not in req and ">=" in req, f"{req}: use a lower bound, not a pin"


def test_readme_quickstart_starts_with_make_course_then_make_test():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1]
    commands = re.findall(r"^(make \w+)", quickstart, flags=re.M)
    assert commands[:2] == ["make course", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("course", "test", "lab"):
        assert re.search(rf"^{target}:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_notebook_is_in_the_course_map_and_clean():
    import nbformat

    readme = (ROOT / "README.md").read_text()
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for path in notebooks:
        assert path.name in readme, f"{path.name} missing from the README's course map"
        nb = nbformat.read(path, as_version=4)
        stale = [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not stale, f"{path.name}: commit notebooks without outputs"


@pytest.mark.parametrize("value, fast", [("1", True), ("true", True), ("", False), ("0", False)])
def test_budget_switch(monkeypatch, value, fast):
    monkeypatch.setenv("MINIDIFF_FAST", value)
    assert fast_mode() is fast
    assert budget(fast=10, full=1000) == (10 if fast else 1000)


def test_requires_python_matches_the_code_and_the_linter():
    """The tests import tomllib (Python 3.11+): the declared floor, ruff's target and the conda
    file must all say 3.11."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert pyproject["tool"]["ruff"]["target-version"] == "py311"
    assert "  - python>=3.11\n" in (ROOT / "environment.yml").read_text()


def test_the_layers_contract_covers_every_module():
    """Every module of the package sits in a layer of the import-linter contract, so none can
    slip past `lint-imports`."""
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    listed = {m.strip() for layer in contract["layers"] for m in re.split(r"[|:]", layer)}
    package = ROOT / "minidiff"
    modules = {f"minidiff.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"minidiff.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert modules <= listed, f"not in a layer: {sorted(modules - listed)}"
