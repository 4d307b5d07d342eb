"""The course website: `python -m minidiff.website COURSE_DIR --out SITE_DIR` (`make site`).

Builds a static website of the whole course from the executed notebooks in COURSE_DIR (what
`make course` writes), with Sphinx and MyST-NB (the engine of Jupyter Book 1) and the book theme:
the README's course map is the front page, each lesson is one page, in order, with a sidebar and
previous/next links. It works offline: nothing is fetched from the web when it is built or read.
Math is set by the same local MathJax as the course's pages (`jupyter-server-mathjax`), figures
are files, animations and sounds are embedded in the page, and each widget shows its stand-in
(`viz.FigureSlider`), which moves without a kernel. The settings are in `site/conf.py`.

The lessons are whatever `notebooks/NN_topic.ipynb` there are, less those that need a package
that is not installed (`course.missing_requirement`; `make course` leaves them out too); the site
refuses to build while one of them has no executed copy in COURSE_DIR, or its copy holds an error.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from minidiff.course import missing_requirement
from minidiff.notebook import copy_mathjax
from minidiff.viz import static_outputs

ROOT = Path(__file__).resolve().parents[1]


class SiteError(Exception):
    """The site cannot be built from what is there; the message says what is missing."""


def lessons(notebooks: Path) -> list[Path]:
    """The course's notebooks, in order: notebooks/NN_topic.ipynb."""
    return sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))


def executed_lessons(course: Path, notebooks: Path) -> list[Path]:
    """The executed copy in `course` of every lesson in `notebooks` that can run here (a lesson
    that needs a package that is not installed is left out, with its reason, as `make course`
    leaves it out); SiteError if one is missing or ran into an error."""
    sources = lessons(notebooks)
    if not sources:
        raise SiteError(f"no lessons (NN_topic.ipynb) in {notebooks}")
    for source in list(sources):
        if reason := missing_requirement(source):
            print(f"{source.stem}: left out of the site, it {reason}", file=sys.stderr)
            sources.remove(source)
    missing = [s.name for s in sources if not (course / s.name).is_file()]
    if missing:
        raise SiteError(f"no executed notebook in {course}/ for {', '.join(missing)}: run `make course` first "
                        "(or `python -m minidiff.run_course NOTEBOOK… --out DIR`)")
    for source in sources:
        cells = json.loads((course / source.name).read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
                raise SiteError(f"{course / source.name}: cell {i + 1} ended in an error; fix the lesson and run "
                                "`make course` again")
    return [course / s.name for s in sources]


def front_page(readme: str, pages: set[str]) -> str:
    """The front page in MyST Markdown, from the README: its title and opening paragraphs, then its
    course map. Links to lessons (notebooks/NN_topic.ipynb) and to documents (docs/X.md) that are
    pages of the site, named in `pages`, point to those pages; other links into the repository
    become plain text."""
    head = readme.split("\n## ", 1)[0]
    course_map = re.search(r"^## Course map\n.*?(?=^## |\Z)", readme, flags=re.M | re.S)
    if course_map is None:
        raise SiteError("the README has no '## Course map' section for the front page")

    def link(match: re.Match) -> str:
        text, target = match.groups()
        if re.match(r"[a-z]+:", target):  # a web address stays a link
            return match.group(0)
        return f"[{text}]({Path(target).name})" if Path(target).name in pages else text

    return re.sub(r"\[([^]]*)\]\(([^)\s]+)\)", link, f"{head.rstrip()}\n\n{course_map.group(0).rstrip()}\n")


def build(course: Path, out: Path, notebooks: Path = ROOT / "notebooks", readme: Path = ROOT / "README.md",
          docs: Path = ROOT / "docs", conf: Path = ROOT / "site") -> list[Path]:
    """Build the site into `out` (replacing it) and return its lesson pages, in course order."""
    from sphinx.cmd.build import build_main

    executed = executed_lessons(course, notebooks)
    documents = sorted(docs.glob("*.md"))
    with tempfile.TemporaryDirectory(prefix="minidiff-site-") as tmp:
        src, static = Path(tmp) / "src", Path(tmp) / "static"
        src.mkdir()
        for path in executed:
            notebook = static_outputs(json.loads(path.read_text(encoding="utf-8")))
            (src / path.name).write_text(json.dumps(notebook, ensure_ascii=False), encoding="utf-8")
        for page in documents:
            shutil.copy(page, src / page.name)
        pages = [p.name for p in executed + documents]
        toc = "\n".join(Path(p).stem for p in pages)
        index = front_page(readme.read_text(encoding="utf-8"), set(pages))
        (src / "index.md").write_text(f"{index}\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{toc}\n```\n", "utf-8")
        copy_mathjax(static)
        site = Path(tmp) / "site"
        args = ["-b", "html", "-c", str(conf), "-D", f"html_static_path={static}", "-d", str(Path(tmp) / "doctrees")]
        if build_main([*args, "-q", "-W", "--keep-going", str(src), str(site)]) != 0:
            raise SiteError("Sphinx could not build the site (its messages are above)")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(site, out)
    return [out / f"{p.stem}.html" for p in executed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.website", description=__doc__.split("\n\n")[0])
    parser.add_argument("course", type=Path, help="folder of executed notebooks (`make course` writes build/course)")
    parser.add_argument("--out", type=Path, default=Path("build/site"), help="folder for the website")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        pages = build(args.course, args.out)
    except SiteError as error:
        print(f"cannot build the site: {error}", file=sys.stderr)
        return 1
    print(f"{args.out}/index.html: the course map and {len(pages)} lessons, in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
