"""A lesson that needs an optional package (lesson 15: diffusers) is skipped cleanly where it is
missing: `import minidiff` works, the bridge says how to install it, the course runner prints one
line and succeeds, and nbval skips the lesson with the reason. diffusers is hidden from a
subprocess by a sitecustomize that sets sys.modules["diffusers"] = None."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minidiff.course import missing_requirement

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "15_from_minidiff_to_diffusers.ipynb"
INSTALL = "pip install 'minidiff[diffusers]'"


def run_without_diffusers(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python *args` in the repository, with diffusers impossible to import."""
    hide = tmp_path / "hide"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['diffusers'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)]), "MINIDIFF_FAST": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_lesson_declares_what_it_needs():
    assert json.loads(LESSON.read_text())["metadata"]["minidiff"] == {"requires": ["diffusers"]}


def test_missing_requirement_names_the_package_and_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    assert missing_requirement(LESSON) == f"needs diffusers, which is not installed ({INSTALL})"
    plain = tmp_path / "plain.ipynb"
    plain.write_text(json.dumps({"cells": [], "metadata": {"minidiff": {"requires": ["no_such_package_x"]}}}))
    expected = "needs no_such_package_x, which is not installed (pip install no_such_package_x)"
    assert missing_requirement(plain) == expected
    assert missing_requirement(ROOT / "notebooks" / "01_forward_process.ipynb") is None


def test_without_diffusers_minidiff_imports_and_the_bridge_says_how_to_install(tmp_path):
    code = ("import minidiff, minidiff.exercises\n"
            "try:\n    import minidiff.diffusers_bridge\n"
            "except ModuleNotFoundError as error:\n    print('ERROR', error)\n")
    result = run_without_diffusers(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    assert f"ERROR minidiff.diffusers_bridge needs the diffusers package: {INSTALL}" in result.stdout


def test_without_diffusers_the_course_runner_skips_the_lesson(tmp_path):
    result = run_without_diffusers(tmp_path, "-m", "minidiff.run_course", str(LESSON), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{LESSON.stem:<32} skipped: needs diffusers, which is not installed ({INSTALL})"
    assert not (tmp_path / "out" / LESSON.name).exists()


@pytest.mark.filterwarnings("ignore")
def test_without_diffusers_nbval_skips_the_lesson_with_the_reason(tmp_path):
    result = run_without_diffusers(tmp_path, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--nbval-lax",
                                   str(LESSON.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " skipped" in result.stdout and " passed" not in result.stdout and " failed" not in result.stdout
    assert f"{LESSON.name} needs diffusers, which is not installed ({INSTALL})" in result.stdout
