"""Quality against CPU minutes: which training choices make an image recipe learn fastest.

    python benchmarks/bench_recipes.py --recipe shapes_class --minutes 4            # every variant
    python benchmarks/bench_recipes.py --variants baseline,min_snr --minutes 1      # a few, quickly
    python benchmarks/bench_recipes.py --plot benchmarks/results/recipes_*.jsonl   # curves of saved runs
    python benchmarks/bench_recipes.py --speed                                      # step times alone

Each *variant* is the recipe with one training choice changed (the literature's candidates
at this scale, see VARIANTS). Every variant gets the same budget of training CPU time: its
step time is measured first (a few steps of the engine, after a warm-up), the run is given
as many steps as fit in `--minutes`, and its EMA model is evaluated at `--evals` evenly
spaced points of that run. Evaluation: `--samples` images by DDIM-20 from the same noise, the
classes asked for in turn with guidance `--guidance` (conditional recipes), scored with the
dataset's classifier (`minidiff.metrics.ImageMetric`): Fréchet distance, next to that of
as many real images, and accuracy. The time axis counts training only (process CPU time,
evaluations excluded), at `--threads` torch threads (default 1).

Every result goes, one JSON line per evaluation, to `--out` (default
benchmarks/results/recipes_<recipe>.jsonl; a variant is written when its run is complete, and
one already there is skipped, so an interrupted benchmark continues), and the curves to a PNG
next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from minidiff.checkpoint import Checkpoint, model_from_config
from minidiff.generate import generate
from minidiff.metrics import ImageMetric
from minidiff.recipes import Recipe, get_recipe
from minidiff.train import train

RESULTS = Path(__file__).parent / "results"


def _training(r: Recipe, **changes) -> Recipe:
    return dataclasses.replace(r, training=dataclasses.replace(r.training, **changes))


def _net(r: Recipe, **changes) -> Recipe:
    return dataclasses.replace(r, model=dataclasses.replace(r.model, **changes))


# name → (how the recipe changes, why it is a candidate)
VARIANTS: dict[str, tuple[Callable[[Recipe], Recipe], str]] = {
    "baseline": (lambda r: r, "the recipe as it is"),
    "previous": (lambda r: _training(dataclasses.replace(r, weighting="uniform"), batch_size=64,
                                     lr_schedule="constant"),
                 "the shapes recipes before this benchmark: the plain loss, batch 64, constant learning rate"),
    "min_snr": (lambda r: dataclasses.replace(r, weighting="min_snr"),
                "Min-SNR-5 loss weighting (Hang et al. 2023: about 3x faster convergence)"),
    "log_normal": (lambda r: dataclasses.replace(r, timesteps="log_normal"),
                   "EDM's log-normal noise levels (Karras et al. 2022); with v-prediction the network "
                   "already has EDM's preconditioning for unit data variance"),
    "cosine_lr": (lambda r: _training(r, lr_schedule="cosine"), "warm-up, then cosine decay to 0"),
    "lr_2e-3": (lambda r: _training(r, lr=2e-3), "twice the learning rate"),
    "batch_32": (lambda r: _training(r, batch_size=32), "half the batch: twice the steps per minute"),
    "batch_128": (lambda r: _training(r, batch_size=128), "twice the batch: half the steps per minute"),
    "ema_0.99": (lambda r: _training(r, ema_decay=0.99), "a short EMA (about 100 steps)"),
    "ema_0.9995": (lambda r: _training(r, ema_decay=0.9995), "a long EMA (about 2,000 steps)"),
    "narrow": (lambda r: _net(r, channels=24), "base width 24 instead of 32: faster steps"),
    "wide": (lambda r: _net(r, channels=48), "base width 48: slower steps, more capacity"),
    "deep": (lambda r: _net(r, blocks_per_level=r.model.blocks_per_level + 1), "one more block per level"),
    "bf16": (lambda r: _net(r, bf16=True), "bfloat16 autocast (the weights stay float32)"),
    "no_channels_last": (lambda r: _net(r, channels_last=False), "NCHW memory format: the same weights, another speed"),
}


def step_seconds(recipe: Recipe, data: tuple, steps: int = 8) -> float:
    """Median seconds of one engine step of `recipe` (process CPU time), after two warm-up steps."""
    torch.manual_seed(0)
    model = model_from_config(recipe.model)
    stamps: list[float] = []
    config = dataclasses.replace(recipe.training, steps=steps + 2, warmup=0)
    train(model, data, recipe.objective(), config, callbacks=[lambda *_: stamps.append(time.process_time())])
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))


class Evaluate:
    """A training callback that scores the EMA model at chosen steps and writes one JSON line each."""

    def __init__(self, recipe: Recipe, variant: str, at: set[int], args: argparse.Namespace, step_s: float):
        self.recipe, self.variant, self.at, self.args, self.step_s = recipe, variant, at, args, step_s
        self.rows: list[dict] = []
        self.metric = ImageMetric(recipe.dataset)
        real = dataclasses.replace(recipe, latent=None).load_data()[0][: args.samples]
        self.baseline = self.metric.fd(real)
        self.start, self.evaluating = time.process_time(), 0.0

    def __call__(self, step: int, loss: float, ema: torch.nn.Module) -> None:
        if step not in self.at:
            return
        began = time.process_time()
        objective = self.recipe.objective()
        ckpt = Checkpoint(ema, objective.schedule, objective.prediction, self.recipe.sample_shape(), step, {}, {},
                          objective.vae)
        n = self.args.samples
        labels = torch.arange(n) % len(self.metric.class_names) if self.recipe.condition else None
        guidance = self.args.guidance if labels is not None else None
        images = generate(ckpt, n, steps=20, label=labels, guidance=guidance, seed=0)
        scores = self.metric.evaluate(images, labels)
        row = {"recipe": self.recipe.name, "variant": self.variant, "step": step,
               "train_cpu_s": round(began - self.start - self.evaluating, 1), "step_s": self.step_s, "loss": loss,
               "fd": scores["fd"], "fd_real": self.baseline, "accuracy": scores.get("accuracy"),
               "guidance": guidance, "samples": n, "threads": torch.get_num_threads()}
        self.rows.append(row)
        acc = f", accuracy {row['accuracy']:.0%}" if row["accuracy"] is not None else ""
        print(f"  {self.variant} step {step}: {row['train_cpu_s'] / 60:.1f} CPU min, FD {row['fd']:.2f} "
              f"(real {self.baseline:.2f}){acc}", flush=True)
        self.evaluating += time.process_time() - began


def run_variant(base: Recipe, variant: str, args: argparse.Namespace, log: Path) -> None:
    change, why = VARIANTS[variant]
    recipe = change(base)
    x, y = recipe.load_data()
    data = (x,) if y is None else (x, y)
    seconds = step_seconds(recipe, data)
    steps = max(args.evals, int(args.minutes * 60 / seconds))
    print(f"{variant}: {why}; {seconds:.3f} s/step → {steps} steps in {args.minutes} CPU min", flush=True)
    at = {round(steps * k / args.evals) for k in range(1, args.evals + 1)}
    torch.manual_seed(recipe.training.seed)
    model = model_from_config(recipe.model)
    config = dataclasses.replace(recipe.training, steps=steps, warmup=min(recipe.training.warmup, steps // 10))
    evaluate = Evaluate(recipe, variant, at, args, seconds)
    train(model, data, recipe.objective(), config, callbacks=[evaluate])
    with log.open("a") as f:  # a variant's rows are written when it is complete: an interrupted one runs again
        f.writelines(json.dumps(row) + "\n" for row in evaluate.rows)


def speed(base: Recipe, variants: list[str]) -> None:
    """Each variant's training step time, next to the baseline's, as a Markdown table."""
    x, y = base.load_data()
    data = (x,) if y is None else (x, y)
    reference = step_seconds(base, data)
    print(f"| variant | s / step | images / s | vs baseline |\n|---|---|---|---|\n| baseline | {reference:.3f} "
          f"| {base.training.batch_size / reference:.0f} | 1.00 |")
    for variant in variants:
        recipe = VARIANTS[variant][0](base)
        if variant != "baseline":
            seconds = step_seconds(recipe, data)
            print(f"| {variant} | {seconds:.3f} | {recipe.training.batch_size / seconds:.0f} "
                  f"| {reference / seconds:.2f} |", flush=True)


def plot(logs: list[Path]) -> None:
    """FD / real FD, and accuracy, against training CPU minutes: one PNG per log, next to it."""
    import matplotlib.pyplot as plt

    for log in logs:
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        conditional = any(r["accuracy"] is not None for r in rows)
        fig, axes = plt.subplots(1, 2 if conditional else 1, figsize=(12 if conditional else 6, 4.5), squeeze=False)
        for v in variants:
            mine = [r for r in rows if r["variant"] == v]
            minutes = [r["train_cpu_s"] / 60 for r in mine]
            axes[0, 0].plot(minutes, [r["fd"] / r["fd_real"] for r in mine], marker="o", label=v)
            if conditional:
                axes[0, 1].plot(minutes, [r["accuracy"] for r in mine], marker="o", label=v)
        axes[0, 0].set(yscale="log", xlabel="training CPU minutes", ylabel="FD / FD of real images (1 = perfect)",
                       title=f"{rows[0]['recipe']}: Fréchet distance")
        axes[0, 0].axhline(2, color="k", ls=":", lw=1)
        if conditional:
            axes[0, 1].set(xlabel="training CPU minutes", ylabel="accuracy",
                           title=f"accuracy at w = {rows[0]['guidance']}")
            axes[0, 1].axhline(0.95, color="k", ls=":", lw=1)
        axes[0, -1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(log.with_suffix(".png"), dpi=90)
        print(f"wrote {log.with_suffix('.png')}")


def table(log: Path) -> None:
    """The last evaluation of each variant as a Markdown table."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    last = {r["variant"]: r for r in rows}  # each variant's final evaluation
    print("| variant | s / step | steps | CPU min | FD | FD / real | accuracy |\n|---|---|---|---|---|---|---|")
    for v, r in sorted(last.items(), key=lambda kv: kv[1]["fd"]):
        acc = f"{r['accuracy']:.0%}" if r["accuracy"] is not None else "–"
        print(f"| {v} | {r['step_s']:.3f} | {r['step']} | {r['train_cpu_s'] / 60:.1f} | {r['fd']:.2f} "
              f"| {r['fd'] / r['fd_real']:.1f} | {acc} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="shapes_class")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--base", default="baseline", help="the variant every other one changes (e.g. previous)")
    parser.add_argument("--minutes", type=float, default=4.0, help="training CPU minutes per variant")
    parser.add_argument("--evals", type=int, default=3, help="evaluations per run, evenly spaced")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="the JSON-lines log (default results/recipes_<recipe>.jsonl)")
    parser.add_argument("--plot", type=Path, nargs="*", help="only plot these logs")
    parser.add_argument("--speed", action="store_true", help="only measure each variant's step time")
    args = parser.parse_args()
    if args.plot is not None:
        plot(args.plot)
        return
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    base = VARIANTS[args.base][0](get_recipe(args.recipe))
    if args.speed:
        speed(base, variants)
        return
    log = args.out or RESULTS / f"recipes_{args.recipe}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["variant"] for line in log.read_text().splitlines()} if log.exists() else set()
    for variant in variants:
        if variant in done:
            print(f"{variant}: already in {log}, skipped")
            continue
        run_variant(base, variant, args, log)
    plot([log])
    table(log)


if __name__ == "__main__":
    main()
