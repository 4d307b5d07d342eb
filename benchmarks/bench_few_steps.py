"""Few steps on a trained model: FD and accuracy against denoiser calls, for every sampler and
spacing on the shipped class-conditional `shapes_class`, and its consistency student.

    python benchmarks/bench_few_steps.py                    # both parts (about 15 min on one thread)
    python benchmarks/bench_few_steps.py --part solvers     # the teacher's samplers alone
    python benchmarks/bench_few_steps.py --part distill --n 256

Part 1, solvers: `shapes_class` guided at w = 1.5 (its best FD in the manifest), `--n` samples
asked for every class in turn, from the same noise (seed 0), with every deterministic and
stochastic sampler of `minidiff.samplers` on the trailing, Karras and log-SNR spacings (and the
levels fitted to the model and stored with it, `publish.fit_steps`, where there are some) at about 5, 10 and 20 denoiser
calls (Heun: 2·steps - 1). One call of a guided denoiser is two network evaluations (conditional
and unconditional, in one batch).

Part 2, distillation: `shapes_class_cm`, the consistency student distilled from the guided teacher,
at 1, 2 and 4 calls (one network evaluation each: its guidance is distilled in), against the
teacher at the same calls with its best sampler and spacing, and the teacher at 25 calls.

Scores: the shapes classifier's FD against as many real images, and accuracy (the share of
samples it sees as the class asked for). Prints Markdown tables and writes
benchmarks/results/few_steps.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minidiff import generate, load_pretrained, pretrained_info
from minidiff.data.images import ShapesDataset
from minidiff.metrics import ImageMetric
from minidiff.samplers import SAMPLERS

TEACHER, STUDENT, W = "shapes_class", "shapes_class_cm", 1.5
SPACINGS = ("trailing", "karras", "logsnr")
ODE_AND_SDE = [s for s in SAMPLERS if s not in ("consistency", "ddpm", "euler")]  # ddpm = euler_ancestral, euler = ddim
RESULTS = Path(__file__).parent / "results" / "few_steps.json"


def steps_for(calls: int, sampler: str) -> int:
    return (calls + 1) // 2 if sampler == "heun" else calls  # Heun: 2·steps - 1 calls


def score(metric: ImageMetric, model: str, n: int, sampler: str, steps: int, spacing: str, w: float) -> dict:
    labels = torch.arange(n) % 16
    start = time.perf_counter()
    images = generate(model, n, sampler=sampler, steps=steps, spacing=spacing, label=labels, guidance=w, seed=0)
    seconds = time.perf_counter() - start
    return metric.evaluate(images, labels) | {"seconds": seconds}


def solvers(metric: ImageMetric, n: int, calls: tuple[int, ...]) -> list[dict]:
    fitted = load_pretrained(TEACHER).meta.get("optimised_sigmas", {})  # levels stored with the model
    rows = []
    for sampler in ODE_AND_SDE:
        for spacing in (*SPACINGS, "optimised"):
            for c in calls:
                if spacing == "optimised" and str(c) not in fitted.get(sampler, {}).get("levels", {}):
                    continue
                r = score(metric, TEACHER, n, sampler, steps_for(c, sampler), spacing, W)
                rows.append({"sampler": sampler, "spacing": spacing, "calls": c} | r)
                print(f"  {sampler:>16} {spacing:>9} {c:>3} calls: FD {r['fd']:7.2f}  accuracy {r['accuracy']:.0%}",
                      flush=True)
    return rows


def distill(metric: ImageMetric, n: int) -> dict:
    student = [{"calls": c} | score(metric, STUDENT, n, "consistency", c, "trailing", 1.0) for c in (1, 2, 4)]
    teacher = []
    for c in (1, 2, 4):
        tried = [{"sampler": s, "spacing": sp, "calls": c} | score(metric, TEACHER, n, s, c, sp, W)
                 for s in ("ddim", "euler_ancestral", "dpmpp_2m", "unipc") for sp in ("trailing", "karras", "logsnr")]
        teacher.append(min(tried, key=lambda r: r["fd"]))
    long = {"sampler": "unipc", "spacing": "trailing", "calls": 25}
    long |= score(metric, TEACHER, n, "unipc", 25, "trailing", W)
    return {"student": student, "teacher_same_calls": teacher, "teacher_25": long,
            "training_time": pretrained_info(STUDENT)["training_time"]}


def solver_table(rows: list[dict], calls: tuple[int, ...]) -> str:
    lines = ["| sampler | spacing | " + " | ".join(f"{c} calls: FD / acc." for c in calls) + " |",
             "|---|---|" + "---|" * len(calls)]
    for sampler in ODE_AND_SDE:
        for spacing in (*SPACINGS, "optimised"):
            cells = {r["calls"]: r for r in rows if r["sampler"] == sampler and r["spacing"] == spacing}
            if cells:
                lines.append(f"| {sampler} | {spacing} | " + " | ".join(
                    f"{cells[c]['fd']:.2f} / {cells[c]['accuracy']:.0%}" if c in cells else "—" for c in calls) + " |")
    for c in calls:
        best = min((r for r in rows if r["calls"] == c), key=lambda r: r["fd"])
        lines.append(f"\nbest at {c} calls: {best['sampler']} ({best['spacing']}), FD {best['fd']:.2f}")
    return "\n".join(lines)


def distill_table(d: dict) -> str:
    lines = ["| calls | student: FD / acc. (network evaluations) | teacher, best sampler at the same calls | FD / acc. "
             "(network evaluations) |", "|---|---|---|---|"]
    for s, t in zip(d["student"], d["teacher_same_calls"], strict=True):
        lines.append(f"| {s['calls']} | {s['fd']:.2f} / {s['accuracy']:.0%} ({s['calls']}) | {t['sampler']} "
                     f"({t['spacing']}) | {t['fd']:.2f} / {t['accuracy']:.0%} ({2 * t['calls']}) |")
    t = d["teacher_25"]
    lines.append(f"| 25 | — | {t['sampler']} ({t['spacing']}) | {t['fd']:.2f} / {t['accuracy']:.0%} (50) |")
    return "\n".join(lines) + f"\n\nstudent's training: {d['training_time']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("solvers", "distill", "both"), default="both")
    parser.add_argument("--n", type=int, default=256, help="samples per setting (16 per class at 256)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metric = ImageMetric("shapes")
    real = metric.evaluate(ShapesDataset(args.n, seed=1).images)
    print(f"{args.n} real held-out images: FD {real['fd']:.2f} (the floor at this sample size)")
    load_pretrained(TEACHER)  # (checked once before the timings)
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    out |= {"n": args.n, "real_fd": real["fd"], "threads": args.threads}
    calls = (5, 10, 20)
    if args.part in ("solvers", "both"):
        out["solvers"] = solvers(metric, args.n, calls)
        print(solver_table(out["solvers"], calls))
    if args.part in ("distill", "both"):
        out["distill"] = distill(metric, args.n)
        print(distill_table(out["distill"]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
