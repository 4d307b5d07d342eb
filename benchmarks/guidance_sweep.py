"""Classifier-free guidance, measured: accuracy, Fréchet distance and saturation of a shipped
conditional shapes model's samples across guidance scales.

    python benchmarks/guidance_sweep.py [--model shapes_class] [--n 256] [--steps 25] [--w 0 1 3 7.5 20]

Every scale samples from the same starting noise with the same labels (each of the 16
classes equally often), with DDIM. The shapes classifier (`minidiff.metrics.ImageMetric`)
scores them: accuracy = share seen as the class asked for (chance 1/16), FD against the
held-out test images (lower is closer to the data), saturation = share of pixel values at
0 or 255 in 8-bit. Real training images give the baseline row. Prints a Markdown table.
A latent model's samples are decoded with its VAE first; for the text model the classes
are asked as captions ("a small red circle", sizes alternating).
"""

from __future__ import annotations

import argparse

import torch

from minidiff import generate, load_pretrained
from minidiff.data.images import ShapesDataset
from minidiff.metrics import ImageMetric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes_class", help="a shipped conditional shapes model")
    parser.add_argument("--n", type=int, default=256, help="samples per scale (default 256)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    parser.add_argument("--w", type=float, nargs="+", default=[0, 1, 2, 3, 5, 7.5, 10, 15, 20, 30])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metric = ImageMetric("shapes")
    labels = torch.arange(args.n) % 16
    ckpt = load_pretrained(args.model)
    print(f"{args.model}: {args.n} samples per scale, DDIM-{args.steps}, {args.threads} thread(s)\n")
    print("| w | accuracy | FD | saturation |\n|---|---|---|---|")
    for w in args.w:
        images = generate(ckpt, args.n, steps=args.steps, label=labels, guidance=w)
        s = metric.evaluate(images, labels)
        print(f"| {w:g} | {s['accuracy']:.1%} | {s['fd']:.2f} | {s['saturation']:.1%} |", flush=True)
    real = metric.evaluate(ShapesDataset(args.n, 32, seed=0).images)
    print(f"| real training images | — | {real['fd']:.2f} | {real['saturation']:.1%} |")


if __name__ == "__main__":
    main()
