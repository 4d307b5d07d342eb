"""The course website (`make site`) in a real browser: headless Chromium, from Debian's packages,
driven by Playwright, opens every page over a local HTTP server and checks that it loads without
a Python error or a script error, that MathJax set its math, that every image, animation and sound
loads, that each slider's stand-in moves to another frame, and that no page asks for anything from
outside this machine (the site must work offline).

It tests the site in MINIDIFF_SITE (default build/site, else build/site-fast) and skips, saying
why, where none is built or no Chromium is installed; with MINIDIFF_SITE_REQUIRED=1 (CI, which
builds the site first: `.ci/run`) those skips are failures, so that it cannot pass by not running."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from minidiff import viz, website
from minidiff.course import missing_requirement

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("MINIDIFF_SITE_REQUIRED", "") == "1"
SITE = Path(os.environ.get("MINIDIFF_SITE", "")) if os.environ.get("MINIDIFF_SITE") else next(
    (d for d in (ROOT / "build" / "site", ROOT / "build" / "site-fast") if (d / "index.html").is_file()),
    ROOT / "build" / "site",
)
LESSONS = sorted(p.name for p in SITE.glob("[0-9][0-9]_*.html"))
LOCAL = r"(http://127\.0\.0\.1[:/]|data:|blob:|about:)"  # what a page may ask for: this machine, or itself
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable(reason: str):
    """Skip, saying why; where the site is required (CI), fail instead."""
    if REQUIRED:
        pytest.fail(f"{reason} (MINIDIFF_SITE_REQUIRED=1: the site must be built and tested here)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    chromium = os.environ.get("MINIDIFF_CHROMIUM") or next(
        (shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    if chromium is None:
        unavailable("no Chromium to test the website in: `apt-get install chromium` (Debian) installs one")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed: `pip install -e '.[dev]'`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path):
    """A local HTTP server for `folder` on a free port of 127.0.0.1, in a thread; returns it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        unavailable(f"no website built in {SITE}: `make site` builds it (`make site FAST=1`: from a fast run)")
    server = serve(SITE)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


class Visit:
    """A page opened in the browser, with every request it made and every error it met."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page()
        self.requests, self.failures, self.errors = [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed(r.url, r.failure))
        self.page.on("response", lambda r: r.status >= 400 and self.failed(r.url, f"HTTP {r.status}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # offline is a requirement: anything from elsewhere is refused (and reported below)
        self.page.route(re.compile(f"^(?!{LOCAL})"), lambda route: route.abort())
        self.response = self.page.goto(url, wait_until="load")

    def failed(self, url: str, why: str) -> None:
        if url != "about:blank" and not url.endswith("/favicon.ico"):  # (the browser's own)
            self.failures.append(f"{url}: {why}")

    def outside(self) -> list[str]:
        return [u for u in self.requests if not re.match(LOCAL, u)]


def wait_for_media(page) -> None:
    """Wait until every image has loaded (lazy ones too) and every sound or video has its metadata."""
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('audio, video')].every(m => m.readyState >= 1 || m.error)",
                           timeout=60_000)


def wait_for_math(page) -> dict:
    """Wait for MathJax to finish typesetting; count the math elements and those it rendered."""
    if page.locator(".math.notranslate").count():
        page.wait_for_function("window.MathJax && MathJax.isReady", timeout=60_000)
        page.evaluate("new Promise(done => MathJax.Hub.Queue(done))")
    return page.evaluate("""() => {
        const math = [...document.querySelectorAll('.math.notranslate')];  // Sphinx's, not MathJax's own
        const shown = e => e.querySelector('.MathJax, .MathJax_Display, .MathJax_CHTML, .MathJax_SVG');
        return {total: math.length, rendered: math.filter(shown).length,
                errors: document.querySelectorAll('.MathJax_Error, .noError, merror').length};
    }""")


def frame_shown(box) -> int:
    return box.evaluate("b => [...b.querySelectorAll('img')].findIndex(i => !i.hidden)")


def check_stand_ins(page) -> int:
    """Move every slider stand-in on the page, by its range input and by its next button; returns
    how many there were."""
    boxes = page.locator(".minidiff-stand-in")
    for k in range(boxes.count()):
        box = boxes.nth(k)
        box.scroll_into_view_if_needed()
        frames = box.locator("img")
        assert frames.count() >= 2, "a stand-in with fewer than 2 frames does not move"
        assert frame_shown(box) == 0 and box.locator("output").inner_text() == frames.nth(0).get_attribute("alt")
        box.locator("input[type=range]").fill("1")  # as dragging it does: sets the value, fires "input"
        assert frame_shown(box) == 1, "moving the stand-in's slider did not change the frame shown"
        assert box.locator("output").inner_text() == frames.nth(1).get_attribute("alt")
        assert frames.nth(1).is_visible() and not frames.nth(0).is_visible()
        box.locator("button[title=next]").click()
        assert frame_shown(box) == 2 % frames.count(), "the stand-in's next button did not step a frame"
    return boxes.count()


def test_a_stand_in_moves_in_a_browser(browser, tmp_path):
    """FigureSlider's stand-in on its own page (no site needed): its slider, buttons and label work."""

    def draw(t=0):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.set_title(f"t = {t}")
        return fig

    stand_in = viz.FigureSlider(draw, frames=3, t=[0, 10, 20, 30]).stand_in
    (tmp_path / "index.html").write_text(f"<!doctype html><meta charset=utf-8><body>{stand_in}</body>")
    server = serve(tmp_path)
    try:
        visit = Visit(browser, f"http://127.0.0.1:{server.server_port}/index.html")
        wait_for_media(visit.page)
        assert visit.page.evaluate("[...document.images].map(i => i.naturalWidth > 0)") == [True] * 3
        assert check_stand_ins(visit.page) == 1
        box = visit.page.locator(".minidiff-stand-in")
        box.locator("button[title=previous]").click()
        assert frame_shown(box) == 1 and box.locator("output").inner_text() == "t = 20"  # of t = 0, 20, 30
        assert not visit.errors and not visit.failures and not visit.outside()
    finally:
        server.shutdown()


def test_the_front_page_is_the_readmes_course_map():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    page = website.front_page(readme, {"01_forward_process.ipynb", "teaching.md"})
    assert page.startswith("# minidiff\n") and "\n## Course map\n" in page and "## Quickstart" not in page
    assert "[01_forward_process.ipynb](01_forward_process.ipynb)" in page  # a lesson: its page
    assert "](notebooks/" not in page and "[02_reverse_process_2d.ipynb]" not in page  # not a page: plain text
    assert "](teaching.md)" in page and "](docs/" not in page
    readme = "# t\n\nintro [site](https://example.org)\n\n## Course map\n\n| a |\n|---|\n| [x](notebooks/x.ipynb) |\n"
    assert website.front_page(readme, {"x.ipynb"}).endswith("| [x](x.ipynb) |\n")
    assert "[site](https://example.org)" in website.front_page(readme, set())  # web links stay
    with pytest.raises(website.SiteError, match="no '## Course map' section"):
        website.front_page("# t\n", set())


def test_the_site_is_built_only_from_every_lesson_run_without_error(tmp_path, capsys):
    notebooks, course = tmp_path / "notebooks", tmp_path / "course"
    notebooks.mkdir(), course.mkdir()
    for name, requires in [("01_a", []), ("02_b", []), ("03_c", ["no_such_package_here"])]:
        metadata = {"minidiff": {"requires": requires}}
        (notebooks / f"{name}.ipynb").write_text(json.dumps({"cells": [], "metadata": metadata}))
    (course / "01_a.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    with pytest.raises(website.SiteError, match=r"no executed notebook in .*course/ for 02_b.ipynb: run `make course`"):
        website.executed_lessons(course, notebooks)
    failed = {"cell_type": "code", "outputs": [{"output_type": "error", "ename": "ValueError", "traceback": []}]}
    (course / "02_b.ipynb").write_text(json.dumps({"cells": [{"cell_type": "markdown"}, failed], "metadata": {}}))
    with pytest.raises(website.SiteError, match="02_b.ipynb: cell 2 ended in an error"):
        website.executed_lessons(course, notebooks)
    (course / "02_b.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    assert website.executed_lessons(course, notebooks) == [course / "01_a.ipynb", course / "02_b.ipynb"]
    assert "03_c: left out of the site, it needs no_such_package_here" in capsys.readouterr().err
    assert website.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "site")]) == 1
    assert "cannot build the site: no executed notebook in" in capsys.readouterr().err


def test_the_site_has_a_page_for_every_lesson(site):
    if REQUIRED:  # a site built for the tests must be the whole course, as the notebooks are now
        wanted = [p.with_suffix(".html").name for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                  if not missing_requirement(p)]
        assert LESSONS == wanted, f"the site at {SITE} is not the course's lessons: rebuild it (`make site`)"
    assert LESSONS, f"no lesson pages in {SITE}"
    front = (SITE / "index.html").read_text(encoding="utf-8")
    for lesson in LESSONS:
        assert f'href="{lesson}"' in front, f"the front page does not link {lesson}"


@pytest.mark.parametrize("name", ["index.html", *LESSONS])
def test_every_page_works_offline_in_a_browser(browser, site, name):
    visit = Visit(browser, f"{site}/{name}")
    page = visit.page
    try:
        assert visit.response is not None and visit.response.ok, f"{name} did not load"
        wait_for_media(page)
        text = page.inner_text("body")
        assert "Traceback (most recent call last)" not in text and page.locator(".output.traceback").count() == 0
        assert not re.search(r"\b\w+\(children=\(", text), "a widget without a stand-in is shown as text"
        assert page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count() == 0

        math = wait_for_math(page)
        assert math["rendered"] == math["total"], f"MathJax rendered {math['rendered']} of {math['total']} formulas"
        assert math["errors"] == 0, "MathJax could not set some formulas"
        if name == "index.html":
            assert math["total"] > 0, "the front page (the README's course map) has formulas to set"

        broken = page.evaluate("[...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
        assert not broken, f"images that did not load: {broken}"
        media = page.evaluate("""[...document.querySelectorAll('audio, video')]
            .filter(m => m.error || !(m.duration > 0)).map(m => m.outerHTML.slice(0, 80))""")
        assert not media, f"sounds or videos that did not load: {media}"
        check_stand_ins(page)

        assert not visit.outside(), f"{name} asked for addresses outside this machine: {visit.outside()[:5]}"
        assert not visit.failures, f"requests that failed: {visit.failures[:5]}"
        assert not visit.errors, f"script errors: {visit.errors[:5]}"
    finally:
        page.close()
