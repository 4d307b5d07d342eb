"""How many torch threads should the course use? A digits U-Net training step (the shipped
recipe's network, batch 64, 1×16×16) timed with 1 and with 2 torch threads, on an otherwise idle
machine and next to one busy competitor (another process doing float work on one core, as a
second job or a browser tab would).

    python benchmarks/bench_threads.py [--steps 20]

It prints the median seconds per step for each case and the ratio of two threads to one; the
Makefile's THREADS default is chosen from these figures (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import torch

from minidiff import DiffusionObjective, NoiseSchedule
from minidiff.checkpoint import model_from_config
from minidiff.recipes import get_recipe


def busy(stop) -> None:
    """A competitor: one thread of float work until told to stop."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a / 256)


def step_seconds(threads: int, steps: int) -> float:
    """Median seconds of a training step (forward, backward, AdamW) with `threads` torch threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = model_from_config(get_recipe("digits").model)
    objective = DiffusionObjective(NoiseSchedule.cosine(), prediction="v")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0, g = torch.rand(64, 1, 16, 16) * 2 - 1, torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        objective(model, (x0,), g).backward()
        optimizer.step()
        if i >= 3:  # warm-up steps are not counted
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case (default 20)")
    args = parser.parse_args()
    print("| load | 1 thread, s/step | 2 threads, s/step | 2 threads / 1 |\n|---|---|---|---|")
    for load in ("idle", "one busy competitor"):
        stop = multiprocessing.Event()
        competitor = None
        if load != "idle":
            competitor = multiprocessing.Process(target=busy, args=(stop,), daemon=True)
            competitor.start()
            time.sleep(1)
        one, two = step_seconds(1, args.steps), step_seconds(2, args.steps)
        if competitor is not None:
            stop.set()
            competitor.join()
        print(f"| {load} | {one:.3f} | {two:.3f} | {two / one:.2f} |", flush=True)


if __name__ == "__main__":
    main()
