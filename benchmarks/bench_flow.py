"""Flow matching against diffusion: error and quality against model calls, for the exact Gaussian
mixture and for the shipped class-conditional shapes models.

    python benchmarks/bench_flow.py                      # both parts
    python benchmarks/bench_flow.py --part mixture       # the closed-form part alone (seconds)
    python benchmarks/bench_flow.py --part shapes --n 256

Part 1, no training: the 2-D Gaussian mixture of the tests, whose exact ε (diffusion) and exact
velocity on the straight path (flow matching) are both known. Both describe the same ODE in two
coordinates, so every solver should land on the same samples from the same noise; the table is
each solver's mean distance to a converged reference (Heun with 1,000 steps on the flow ODE) at 5,
10, 20 and 50 model calls. Diffusion samplers get the cosine schedule.

Part 2, trained models: `shapes_flow` (rectified flow, logit-normal times) and `shapes_class`
(diffusion, v-prediction with Min-SNR weighting) share the network and the training budget
(5,000 steps of batch 32). Each is sampled with two solvers at about 5, 10 and 25 model calls
(`steps_for`: a second-order solver's step costs two), `--n` samples asked for every class in turn at guidance
`--w`, from the same noise, and scored with the shapes classifier (FD next to as many real
images, accuracy). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time

import torch

from minidiff import flow, generate, load_pretrained
from minidiff.data import three_gaussians
from minidiff.data.images import ShapesDataset
from minidiff.metrics import ImageMetric
from minidiff.samplers import sample
from minidiff.schedules import NoiseSchedule

MIXTURE = three_gaussians()
CALLS = (5, 10, 20, 50)
# name → (kind, solver, spacing of a diffusion sampler's noise levels). DDIM is Euler's method in
# σ-space (lesson 05), so it stands for both; Heun in σ-space is given Karras levels.
MIXTURE_SOLVERS = {
    "flow Euler": ("flow", "euler", None), "flow Heun": ("flow", "heun", None),
    "flow midpoint": ("flow", "midpoint", None), "DDIM (trailing)": ("diffusion", "ddim", "trailing"),
    "Heun (σ, Karras)": ("diffusion", "heun", "karras"),
    "DPM-Solver++(2M) (trailing)": ("diffusion", "dpmpp_2m", "trailing"),
}


def steps_for(calls: int, solver: str) -> int:
    """The steps that cost at most `calls` model calls: Heun makes two per step but one in its last
    (an Euler step into the end), 2·steps - 1; midpoint two per step; the others one."""
    name = solver.removeprefix("flow_")
    if name == "heun":
        return (calls + 1) // 2
    return max(1, calls // 2) if name == "midpoint" else calls


def mixture_table(n: int) -> str:
    schedule = NoiseSchedule.cosine(1000)
    x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = flow.sample(MIXTURE.velocity_model(), x1, 1000, "heun")
    rows = ["| solver | " + " | ".join(f"{c} calls" for c in CALLS) + " |", "|---" * (len(CALLS) + 1) + "|"]
    for name, (kind, solver, spacing) in MIXTURE_SOLVERS.items():
        errors = []
        for calls in CALLS:
            steps = steps_for(calls, solver)
            if kind == "flow":
                x0 = flow.sample(MIXTURE.velocity_model(), x1, steps, solver)
            else:
                x0 = sample(MIXTURE.eps_model(schedule), x1, schedule, solver, steps, spacing)
            errors.append(f"{(x0 - reference).norm(dim=1).mean():.4f}")
        rows.append(f"| {name} | " + " | ".join(errors) + " |")
    return "\n".join(rows)


def shapes_table(n: int, w: float) -> str:
    metric = ImageMetric("shapes")
    labels = torch.arange(n) % 16
    real = metric.evaluate(ShapesDataset(n, 32, seed=0).images)
    runs = {"shapes_flow": ("flow_euler", "flow_heun"), "shapes_class": ("ddim", "dpmpp_2m")}
    rows = [f"| model | solver | {' | '.join(f'{c} calls' for c in (5, 10, 25))} |", "|---|---|---|---|---|"]
    for model, solvers in runs.items():
        ckpt = load_pretrained(model)
        for solver in solvers:
            cells = []
            for calls in (5, 10, 25):
                start = time.process_time()
                images = generate(ckpt, n, sampler=solver, steps=steps_for(calls, solver), label=labels, guidance=w)
                s = metric.evaluate(images, labels)
                cells.append(f"FD {s['fd']:.2f}, {s['accuracy']:.0%} ({time.process_time() - start:.0f} s)")
            rows.append(f"| {model} | {solver} | " + " | ".join(cells) + " |")
    rows.append(f"\nreal images: FD {real['fd']:.2f} ({n} of them); guidance w = {w:g}; CPU seconds in brackets")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["mixture", "shapes", "both"], default="both")
    parser.add_argument("--n", type=int, default=256, help="samples per run (default 256)")
    parser.add_argument("--w", type=float, default=2.0, help="guidance scale for the shapes models (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("mixture", "both"):
        print("Exact Gaussian mixture, 4,000 samples: mean distance to the converged reference\n")
        print(mixture_table(4000) + "\n")
    if args.part in ("shapes", "both"):
        print(f"Shipped shapes models, {args.n} samples per cell, guidance {args.w:g}: FD and accuracy\n")
        print(shapes_table(args.n, args.w))


if __name__ == "__main__":
    main()
