"""Run course notebooks headlessly, in order: `python -m minidiff.run_course NOTEBOOK… --out DIR`.

`make course` calls it for each notebook that changed, then `--report DIR` for the summary.
For each notebook it shows progress while it runs (cell i of n, the time so far, and the
training bars of the package in the terminal), then prints one line (name, seconds, ok/FAILED,
claims), and writes the executed notebook and an HTML page to DIR. The pages work offline:
MathJax comes from a local copy (the `jupyter-server-mathjax` package) in DIR/mathjax.

Every `minidiff.claim(...)` a lesson makes is recorded in DIR/<lesson>.claims.jsonl; the
report lists them all, and a claim that failed fails the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from minidiff.course import CLAIMS_LOG, TERMINAL_PROGRESS, missing_requirement
from minidiff.files import write_atomic
from minidiff.viz import static_outputs

PROGRESS_EVERY = 15  # seconds between progress lines in a log (on a terminal: one line, updated)


def run_notebook(path: Path, out_dir: Path, timeout: int = 1800) -> tuple[bool, float]:
    """Execute one notebook headlessly (in its own folder), showing progress, and write the
    executed .ipynb and an .html page to out_dir. Returns (ok, seconds)."""
    import nbformat

    from minidiff.notebook import execute_notebook

    nb = nbformat.read(path, as_version=4)
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    claims = claims_file(out_dir, path)
    claims.parent.mkdir(parents=True, exist_ok=True)
    claims.write_text("")
    start = last = time.perf_counter()
    tty = sys.stderr.isatty()

    def show(cell, cell_index: int) -> None:  # before each code cell: on a terminal one line that
        nonlocal last  # updates in place; in a log a line every PROGRESS_EVERY seconds
        now = time.perf_counter()
        if tty or now - last >= PROGRESS_EVERY or cell_index == code[0]:
            where = f"cell {code.index(cell_index) + 1}/{len(code)}, {now - start:.0f} s"
            print(f"\r  {path.stem}: {where}   " if tty else f"  {path.stem}: {where}", end="" if tty else "\n",
                  file=sys.stderr, flush=True)
            last = now

    bars = claims.with_suffix(".progress")  # the kernel's progress bars, copied to this terminal as they come
    bars.write_text("")
    stop = threading.Event()
    relay = threading.Thread(target=_relay, args=(bars, stop), daemon=True)
    relay.start()
    env = {CLAIMS_LOG: str(claims.resolve()), TERMINAL_PROGRESS: str(bars.resolve())}
    error = execute_notebook(nb, path.parent, env, timeout=timeout, on_cell=show)
    stop.set()
    relay.join()
    bars.unlink()
    if tty:
        print(file=sys.stderr)
    if error is not None:
        print(error[-2000:], file=sys.stderr)
    ok = error is None
    seconds = time.perf_counter() - start
    write_atomic(out_dir / path.name, nbformat.writes(nb).encode())
    write_atomic(out_dir / path.with_suffix(".html").name, export_html(nb, out_dir).encode())
    return ok, seconds


def _relay(path: Path, stop: threading.Event) -> None:
    """Copy what is appended to `path` onto stderr, every half second until `stop` is set."""
    with open(path, encoding="utf-8") as f:
        while not stop.wait(0.5):
            sys.stderr.write(f.read())
            sys.stderr.flush()
        sys.stderr.write(f.read())


def export_html(nb, out_dir: Path) -> str:
    """The executed notebook as an HTML page that works offline: its math renders from DIR/mathjax,
    and widgets, which need a kernel, show what `viz.static_outputs` gives them (a slider's
    stand-in, a progress bar as it ended) instead of loading a widget manager from the web."""
    import nbformat
    from nbconvert import HTMLExporter

    from minidiff.notebook import MATHJAX_URL, copy_mathjax

    copy_mathjax(out_dir)
    exporter = HTMLExporter(mathjax_url=MATHJAX_URL)
    html, _ = exporter.from_notebook_node(nbformat.from_dict(static_outputs(nb)))
    # the lab template loads RequireJS from a CDN for widgets and JavaScript outputs; these pages have none
    return html.replace(f'<script src="{exporter.require_js_url}"></script>', "")


def claims_file(out_dir: Path, notebook: Path) -> Path:
    return out_dir / f"{notebook.stem}.claims.jsonl"


def read_claims(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary(claims: list[dict]) -> str:
    counts = {s: sum(c["status"] == s for c in claims) for s in ("held", "full-only", "failed")}
    held, full_only, failed = counts["held"], counts["full-only"], counts["failed"]
    return f"{len(claims)} claims: {held} held, {full_only} full mode only, {failed} failed"


def report(out_dir: Path) -> int:
    """Print every lesson's claims and their status; returns 1 if any failed."""
    failed = 0
    files = sorted(out_dir.glob("*.claims.jsonl"))
    everything = []
    for path in files:
        claims = read_claims(path)
        everything += claims
        print(f"{path.name.removesuffix('.claims.jsonl'):<32} {summary(claims)}")
        for c in claims:
            if c["status"] != "held":
                print(f"    {c['status']:>9}: {c['claim']} (measured: {c['measured']})")
        failed += any(c["status"] == "failed" for c in claims)
    print(f"{'all lessons':<32} {summary(everything)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minidiff.run_course", description="Run course notebooks headlessly."
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run, in order")
    parser.add_argument("--out", type=Path, default=Path("build/course"), help="folder for executed notebooks and HTML")
    parser.add_argument("--report", type=Path, metavar="DIR", help="only report the claims recorded in DIR")
    args = parser.parse_args(argv)
    if args.report is not None:
        return report(args.report)
    if not args.notebooks:
        parser.error("give notebooks to run, or --report DIR")
    failed = 0
    for path in args.notebooks:
        if not path.is_file():
            parser.error(f"notebook not found: {path}")
        reason = missing_requirement(path)
        if reason:  # an optional lesson: skipped with its reason, not failed
            print(f"{path.stem:<32} skipped: {reason}", flush=True)
            continue
        ok, seconds = run_notebook(path, args.out)
        failed += not ok
        claims = summary(read_claims(claims_file(args.out, path)))
        print(f"{path.stem:<32} {seconds:7.1f} s  {'ok' if ok else 'FAILED'}  ({claims})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
