"""A transformer (DiT) against the U-Net as a denoiser of the 32×32 shapes: what a patch costs,
and the two shipped flow models at equal CPU minutes.

    python benchmarks/bench_dit.py                   # both parts
    python benchmarks/bench_dit.py --part cost       # the cost table alone (a minute)
    python benchmarks/bench_dit.py --part shipped --n 256 --w 1.5

Part 1, cost per image against patch size: DiTs of width 128 and depth 6 (the shipped model's)
with 8×8, 4×4, 2×2 and 1×1 patches, and the shipped models' U-Net: tokens, parameters,
multiply-adds (`minidiff.nn.layers.multiply_adds`) and the time of one forward pass of a
batch of `--batch`, as a ratio to the shipped DiT (p = 4) measured in the same run.

Part 2, `shapes_dit` (DiT) against `shapes_flow` (U-Net): the same data, objective (flow matching,
logit-normal times, labels dropped 10%), batch and schedule, about the same CPU minutes (the
manifests' training times). Each is sampled with flow Euler at `--steps` steps and guidance
`--w` from the same noise, `--n` samples asked for every class in turn, and scored with the
shapes classifier (FD next to as many real held-out images, accuracy). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import time

import torch

from minidiff import generate, load_pretrained, pretrained_info
from minidiff.data.images import ShapesDataset
from minidiff.metrics import ImageMetric
from minidiff.nn import DiT, DiTConfig
from minidiff.nn.layers import multiply_adds

PATCHES = (8, 4, 2, 1)


def forward_seconds(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """The median time of one forward pass, after a warm-up."""
    times = []
    with torch.no_grad():
        model(x, t, y)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, t, y)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def cost_table(batch: int, repeats: int) -> str:
    x, t = torch.randn(batch, 3, 32, 32), torch.full((batch,), 500.0)
    y = torch.arange(batch) % 16
    models = {f"DiT, {p}×{p} patches": DiT(DiTConfig(patch_size=p, num_classes=16)).eval() for p in PATCHES}
    models["U-Net (shapes_flow)"] = load_pretrained("shapes_flow").model
    rows = {}
    for name, model in models.items():
        tokens = (32 // model.config.patch_size) ** 2 if isinstance(model, DiT) else "—"
        params = sum(q.numel() for q in model.parameters())
        macs = multiply_adds(model, x[:1], t[:1], y[:1])
        rows[name] = (tokens, params, macs, forward_seconds(model, x, t, y, repeats))
    ref = rows["DiT, 4×4 patches"][3]
    lines = [f"| network | tokens | parameters | multiply-adds per image | forward, batch of {batch} | × DiT p = 4 |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {tok} | {params / 1e6:.2f}M | {macs / 1e6:,.0f} M | {sec * 1e3:,.0f} ms | {sec / ref:.2f} |"
              for name, (tok, params, macs, sec) in rows.items()]
    return "\n".join(lines)


def shipped_table(n: int, w: float, steps: int) -> str:
    metric = ImageMetric("shapes")
    labels = torch.arange(n) % 16
    real = metric.evaluate(ShapesDataset(n, seed=1).images)["fd"]
    x, t, y = torch.randn(1, 3, 32, 32), torch.full((1,), 500.0), torch.zeros(1, dtype=torch.long)
    lines = ["| model | network | parameters | multiply-adds per image | training | FD | accuracy |",
             "|---|---|---:|---:|---|---:|---:|"]
    for name in ("shapes_flow", "shapes_dit"):
        info, net = pretrained_info(name), load_pretrained(name).model
        images = generate(name, n, sampler="flow_euler", steps=steps, label=labels, guidance=w, seed=0)
        s = metric.evaluate(images, labels)
        lines.append(f"| `{name}` | {type(net).__name__} | {info['parameters'] / 1e6:.2f}M | "
                     f"{multiply_adds(net, x, t, y) / 1e6:,.0f} M | {info['training_time'].split(' (')[0]}, "
                     f"{info['steps']:,} steps | {s['fd']:.2f} | {s['accuracy']:.0%} |")
    lines.append(f"| {n} real held-out images | | | | | {real:.2f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["cost", "shipped", "both"], default="both")
    parser.add_argument("--n", type=int, default=256, help="samples per model (default 256)")
    parser.add_argument("--w", type=float, default=1.5, help="guidance scale (default 1.5)")
    parser.add_argument("--steps", type=int, default=25, help="flow Euler steps (default 25)")
    parser.add_argument("--batch", type=int, default=64, help="batch of the timed forward passes (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per network (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    if args.part in ("cost", "both"):
        print(cost_table(args.batch, args.repeats), "\n")
    if args.part in ("shipped", "both"):
        print(f"flow Euler, {args.steps} steps, guidance {args.w}, {args.n} samples\n")
        print(shipped_table(args.n, args.w, args.steps))


if __name__ == "__main__":
    main()
