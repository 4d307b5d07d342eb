"""Run course notebooks headlessly, in order: `python -m minidiff.run_course NOTEBOOK… --out DIR`.

`make course` calls it for each notebook that changed. It prints one line per notebook (name,
seconds, ok/FAILED) and writes the executed notebook and an HTML page to DIR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from minidiff.files import write_atomic


def run_notebook(path: Path, out_dir: Path, timeout: int = 1800) -> tuple[bool, float]:
    """Execute one notebook headlessly (in its own folder) and write the executed .ipynb
    and an .html page to out_dir. Returns (ok, seconds)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    ok = True
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    except CellExecutionError as error:
        ok = False
        print(str(error)[-2000:], file=sys.stderr)
    seconds = time.perf_counter() - start
    write_atomic(out_dir / path.name, nbformat.writes(nb).encode())
    html, _ = HTMLExporter().from_notebook_node(nb)
    write_atomic(out_dir / path.with_suffix(".html").name, html.encode())
    return ok, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minidiff.run_course", description="Run course notebooks headlessly."
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks to run, in order")
    parser.add_argument("--out", type=Path, default=Path("build/course"), help="folder for executed notebooks and HTML")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.notebooks:
        if not path.is_file():
            parser.error(f"notebook not found: {path}")
        ok, seconds = run_notebook(path, args.out)
        failed += not ok
        print(f"{path.stem:<32} {seconds:7.1f} s  {'ok' if ok else 'FAILED'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
