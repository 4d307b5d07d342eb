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
    assert 'src="https://' not in html  # no script from the web (nbconvert's template would load RequireJS)
    assert (tmp_path / "mathjax" / "MathJax.js").is_file()
    # the local copy has STIX fonts, not TeX's: the page's configuration asks for them
    assert ",local/minidiff" in html and '"webFont": "STIX-Web"' in (
        tmp_path / "mathjax" / "config" / "local" / "minidiff.js").read_text()


def test_pages_show_a_widgets_stand_in_and_load_no_widget_manager(tmp_path):
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "m", "version_major": 2, "version_minor": 0}}
    stand_in = {"text/html": '<div class="minidiff-stand-in">frames</div>', "text/plain": "FigureSlider()"}
    slider = {"output_type": "display_data", "metadata": {}, "data": {**view, **stand_in}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("viz.timestep_slider(x, s)", outputs=[slider])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"m": {}}, "version_major": 2}}
    html = run_course.export_html(nb, tmp_path)
    assert '<div class="minidiff-stand-in">frames</div>' in html
    assert "widget-view+json" not in html and "widget-state+json" not in html and "unpkg.com" not in html
    assert "widgets" in nb.metadata  # the executed notebook keeps its widgets for JupyterLab


def test_progress_bars_go_to_the_runners_file_under_the_runner(monkeypatch, tmp_path):
    from tqdm.std import tqdm as plain

    monkeypatch.setenv(TERMINAL_PROGRESS, str(tmp_path / "bars"))
    bar = progress(range(3), desc="train")
    assert type(bar) is plain and list(bar) == [0, 1, 2]
    assert "train: 100%" in (tmp_path / "bars").read_text()
    monkeypatch.delenv(TERMINAL_PROGRESS)
    assert list(course.progress(range(2), disable=True)) == [0, 1]
