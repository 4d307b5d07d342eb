"""`python -m minidiff.exercises report NOTEBOOK`: a learner's notebook run headlessly and graded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from minidiff.exercises.__main__ import grade, lesson_exercises, main

CORRECT_ALPHA_BAR = "def my_alpha_bar(betas):\n    return torch.cumprod(1 - betas, 0)\n"
WRONG_Q_SAMPLE = (  # the classic mistake: alpha_bar[t] of shape (B,) used without reshaping
    "def my_q_sample(x0, t, eps, alpha_bar):\n"
    "    a = alpha_bar[t]\n"
    "    return a.sqrt() * x0 + (1 - a).sqrt() * eps\n"
)


def learner_notebook(folder, cells: list[str], name: str = "01_forward_process.ipynb"):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = folder / name
    nbformat.write(nb, path)
    return path


def test_a_learners_notebook_is_graded_exercise_by_exercise(tmp_path):
    path = learner_notebook(tmp_path, [
        "import torch\nfrom minidiff import exercises as ex",
        CORRECT_ALPHA_BAR + "ex.check_alpha_bar(my_alpha_bar)",
        "undefined_name + 1",  # a cell that raises: the rest still runs
        WRONG_Q_SAMPLE + "ex.check_q_sample(my_q_sample)",
    ])
    before = path.read_bytes()
    report = grade(path)
    assert path.read_bytes() == before  # the learner's file is not changed
    verdicts = {r["check"]: r for r in report["exercises"]}
    assert list(verdicts) == ["alpha_bar", "q_sample"] and report["passed"] == 1
    assert verdicts["alpha_bar"] == {"check": "alpha_bar", "ok": True, "message": "correct."}
    assert verdicts["q_sample"]["ok"] is False and "(B, 1, 1, 1)" in verdicts["q_sample"]["message"]
    assert report["errors"] == [{"cell": 2, "error": "NameError: name 'undefined_name' is not defined"}]
    assert report["mode"] == "fast"


def test_an_exercise_never_checked_is_listed_as_not_run(tmp_path):
    path = learner_notebook(tmp_path, ["import torch\nfrom minidiff import exercises as ex",
                                       CORRECT_ALPHA_BAR + "ex.check_alpha_bar(my_alpha_bar)"])
    report = grade(path)
    q_sample = report["exercises"][1]
    assert q_sample["check"] == "q_sample" and q_sample["ok"] is None and q_sample["message"].startswith("not run")


def test_the_command_prints_the_report_and_its_exit_status_says_whether_all_pass(tmp_path):
    path = learner_notebook(tmp_path, [
        "import torch\nfrom minidiff import exercises as ex",
        CORRECT_ALPHA_BAR + "ex.check_alpha_bar(my_alpha_bar)",
        "def my_q_sample(x0, t, eps, alpha_bar):\n    a = alpha_bar[t].view(-1, 1, 1, 1)\n"
        "    return a.sqrt() * x0 + (1 - a).sqrt() * eps\nex.check_q_sample(my_q_sample)",
    ])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "minidiff.exercises", "report", str(path)], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "2 of 2 exercises pass" in done.stdout and "✓ q_sample: correct." in done.stdout
    as_json = subprocess.run([sys.executable, "-m", "minidiff.exercises", "report", str(path), "--json"],
                             capture_output=True, text=True, env=env)
    assert json.loads(as_json.stdout)["passed"] == 2


def test_the_lessons_own_stubs_fail_with_an_explanation(capsys):
    """Lesson 01 as shipped: its stubs return None, and the report says so, exercise by exercise."""
    notebook = os.path.join(os.path.dirname(__file__), "..", "notebooks", "01_forward_process.ipynb")
    assert main(["report", notebook]) == 1
    out = capsys.readouterr().out
    assert "0 of 2 exercises pass" in out and out.count("returned None. Did you forget `return`?") == 2


@pytest.mark.parametrize("name, expected", [
    ("04_training-alice.ipynb", ["ema_update", "warmup_lr"]),
    ("homework.ipynb", []),
])
def test_a_notebook_is_matched_to_its_lesson_by_its_number(tmp_path, name, expected):
    assert lesson_exercises(tmp_path / name) == expected


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.ipynb")]) == 2
    assert "NOTEBOOK: no file" in capsys.readouterr().err
    broken = tmp_path / "01_forward_process.ipynb"
    broken.write_text("{not json")
    assert main(["report", str(broken)]) == 2
    assert "is not a readable Jupyter notebook" in capsys.readouterr().err
