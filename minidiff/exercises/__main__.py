"""Grade a learner's notebook: `python -m minidiff.exercises report NOTEBOOK.ipynb`.

It runs the notebook headlessly in a kernel of its own (in fast mode unless `--full`: the checks
do not depend on the run size), on to the end even where a cell raises, and prints every exercise
of the lesson with its check's verdict and explanation:

    04_training.ipynb — 1 of 2 exercises pass (fast mode, 21 s)
      ✓ ema_update: correct.
      ✗ warmup_lr: during the warm-up the rate rises from 0 …
    1 cell raised an error: cell 12, NameError: name 'x' is not defined

An exercise whose check never ran (its cell was deleted, or never reached) is listed as not run.
`--json` prints the same as one JSON object, for a gradebook. The exit status is 0 when every
exercise passes, 1 when one does not, 2 when the notebook cannot be read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from minidiff import exercises
from minidiff.exercises._common import EXERCISES_LOG
from minidiff.notebook import execute_notebook

CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")  # `ex.check_alpha_bar(my_alpha_bar)` → alpha_bar


def lesson_exercises(notebook: Path) -> list[str]:
    """The exercises of the lesson a notebook belongs to, from its name's number (`04_…` → the
    checks of `minidiff.exercises.l04_…`), in the order the lesson's module defines them."""
    number = re.match(r"\d\d", notebook.name)
    if number is None:
        return []
    module = next((m for name, m in vars(exercises).items() if name.startswith(f"l{number[0]}_")), None)
    return [name.removeprefix("check_") for name in vars(module) if name.startswith("check_")] if module else []


def grade(notebook: Path, *, full: bool = False, timeout: int = 1800) -> dict:
    """Run `notebook` (a copy: the learner's file is not changed) and return its report: for each
    exercise {"check", "ok", "message"} (ok None: not run), and the cells that raised."""
    try:
        nb = nbformat.read(notebook, as_version=4)
    except FileNotFoundError:
        raise FileNotFoundError(f"NOTEBOOK: no file {notebook}") from None
    except Exception as error:  # noqa: BLE001 — nbformat raises several kinds for a file that is not a notebook
        raise ValueError(f"NOTEBOOK: {notebook} is not a readable Jupyter notebook ({error})") from None
    called = [m[1] for cell in nb.cells if cell.cell_type == "code" for m in CHECK_CALL.finditer(cell.source)]
    names = list(dict.fromkeys(lesson_exercises(notebook) + called))  # the lesson's, then any others it calls
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "verdicts.jsonl"
        log.touch()
        env = {EXERCISES_LOG: str(log), "MINIDIFF_FAST": "" if full else "1"}
        start = time.perf_counter()
        execute_notebook(nb, notebook.resolve().parent, env, timeout=timeout, allow_errors=True)
        seconds = time.perf_counter() - start
        verdicts = {v["check"]: v for v in map(json.loads, log.read_text().splitlines())}  # the last of each
    not_run = "not run: its check was never called (the cell was removed, or the notebook stopped before it)"
    results = [verdicts.get(name, {"check": name, "ok": None, "message": not_run}) for name in names]
    errors = [
        {"cell": i, "error": f"{out.ename}: {out.evalue}"}
        for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.output_type == "error"
    ]
    return {"notebook": str(notebook), "mode": "full" if full else "fast", "seconds": round(seconds, 1),
            "passed": sum(r["ok"] is True for r in results), "exercises": results, "errors": errors}


def print_report(report: dict) -> None:
    results = report["exercises"]
    print(f"{Path(report['notebook']).name} — {report['passed']} of {len(results)} exercises pass "
          f"({report['mode']} mode, {report['seconds']:.0f} s)")
    for r in results:
        mark = {True: "✓", False: "✗", None: "·"}[r["ok"]]
        print(f"  {mark} {r['check']}: {r['message']}")
    if report["errors"]:
        n = len(report["errors"])
        print(f"{n} cell{'s' if n > 1 else ''} raised an error: "
              + "; ".join(f"cell {e['cell']}, {e['error']}" for e in report["errors"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.exercises", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="run a learner's notebook and list which exercises pass")
    report.add_argument("notebook", type=Path, metavar="NOTEBOOK", help="the learner's .ipynb file")
    report.add_argument("--full", action="store_true", help="run in full mode (the checks are the same; slower)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run (default 1800)")
    args = parser.parse_args(argv)
    try:
        result = grade(args.notebook, full=args.full, timeout=args.timeout)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_report(result)
    return 0 if result["passed"] == len(result["exercises"]) and result["exercises"] else 1


if __name__ == "__main__":
    sys.exit(main())
