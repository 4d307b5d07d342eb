"""The course's own machinery: claims that check a lesson's sentences, the runner's report and
its offline pages, progress bars that reach the runner's terminal."""

from __future__ import annotations

import json

import nbformat
import pytest

from minidiff import course, run_course
from minidiff.course import CLAIMS_LOG, TERMINAL_PROGRESS, ClaimError, claim, progress


def test_a_claim_that_holds_prints_its_measurement(capsys):
    assert claim("SNR drops below 1 before t = 260", True, "t = 259") is True
    assert capsys.readouterr().out == "✓ SNR drops below 1 before t = 260 (measured: t = 259)\n"


@pytest.mark.parametrize("fast", ["1", ""])
def test_a_false_claim_fails_loudly_unless_left_to_full_mode(monkeypatch, capsys, fast):
    monkeypatch.setenv("MINIDIFF_FAST", fast)
    with pytest.raises(ClaimError, match=r"the lesson says: plateau ≈ 0\.07 — but it measured 0\.04123"):
        claim("plateau ≈ 0.07", False, 0.041234)
    if fast:
        assert claim("DDPM-1000 beats 20 calls", False, "0.05 vs 0.04", full_only=True) is False
        assert "checked in full mode only" in capsys.readouterr().out
    else:
        with pytest.raises(ClaimError):
            claim("DDPM-1000 beats 20 calls", False, "0.05 vs 0.04", full_only=True)


def test_claims_are_recorded_and_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDIFF_FAST", "1")
    log = tmp_path / "01_x.claims.jsonl"
    monkeypatch.setenv(CLAIMS_LOG, str(log))
    claim("a", True, 1.0)
    claim("b", False, 2.0, full_only=True)
    with pytest.raises(ClaimError):
        claim("c", False, 3.0)
    assert [c["status"] for c in map(json.loads, log.read_text().splitlines())] == ["held", "full-only", "failed"]
    capsys.readouterr()
    assert run_course.report(tmp_path) == 1  # a failed claim fails the course
    out = capsys.readouterr().out
    assert "3 claims: 1 held, 1 full mode only, 1 failed" in out and "failed: c (measured: 3)" in out
    log.write_text(log.read_text().splitlines()[0] + "\n")
    assert run_course.report(tmp_path) == 0


def test_pages_load_mathjax_from_a_local_copy(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("$x_t = \\sqrt{\\bar\\alpha_t} x_0$")])
    html = run_course.export_html(nb, tmp_path)
    assert '<script src="mathjax/MathJax.js?config=' in html and "libs/mathjax" not in html
    assert (tmp_path / "mathjax" / "MathJax.js").is_file()


def test_progress_bars_go_to_the_terminal_under_the_runner(monkeypatch):
    from tqdm.std import tqdm as plain

    monkeypatch.setenv(TERMINAL_PROGRESS, "1")
    bar = progress(range(3), disable=True)
    assert type(bar) is plain and list(bar) == [0, 1, 2]
    monkeypatch.delenv(TERMINAL_PROGRESS)
    assert list(course.progress(range(2), disable=True)) == [0, 1]
