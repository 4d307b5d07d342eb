"""Latent against pixel diffusion at the same image size: training and sampling speed, peak memory, quality.

    python benchmarks/bench_latent.py [--quick] [--threads 1] [--batch 64] [--device cpu|cuda] [--quality N]

Three recipes of `minidiff.recipes` make 3×32×32 shapes images, class-conditionally:

    pixel       "shapes_class":     a U-Net on the 3×32×32 pixels
    latent f=4  "shapes_latent":    a U-Net on the 4×8×8 latents of the VAE "vae_shapes" (12× fewer values)
    latent f=8  "shapes_latent_f8": a U-Net on the 4×4×4 latents of "vae_shapes_f8": Stable Diffusion's
                                    compression (f = 8, 4 channels: 48× fewer values)

The networks (and VAEs) are freshly initialised from seed 0: speed and memory do not
depend on the weights. For each:

- training step: forward + backward + AdamW of the diffusion loss (v-prediction, with
  labels) on a batch. The latent model trains on latents that were encoded *once*, before
  training (`Recipe.load_data` does that), so its step never touches the VAE; the VAE's
  encoding cost is reported on its own rows, per image and for the recipe's whole dataset.
- sampling: DDIM with 25 steps and classifier-free guidance (both predictions in one
  forward pass over a doubled batch) for a batch of images, plus the VAE decode for the
  latent model: what it costs to get images out.
- peak memory of training and of sampling, each in a fresh subprocess, measured as in
  bench_unet.py: the growth above what is held once model, optimizer and inputs exist
  (VmHWM reset through /proc/self/clear_refs on Linux; torch.cuda.max_memory_allocated on CUDA).

Timing as in bench_unet.py: warm-up calls first, then the steps alternate in one process
(A, B, B, A, …) and every number is a median over rounds; the latent/pixel ratio of a speed
is the median of the per-round ratios, so load that comes and goes cancels.

`--quality N` (needs the shipped weights of the three models and their VAEs) samples N images
per model and guidance scale (DDIM-25, guidance 1.5, 2 and 3, each class equally often, the same
seed) and reports the shapes classifier's accuracy and Fréchet distance
(`minidiff.metrics.ImageMetric`), and each model's best FD: models are compared at their own
best scale, as the recipes' aims are stated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from bench_unet import peak_memory, reset_peak_memory, table, time_interleaved  # the same method, same folder
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minidiff.checkpoint import model_from_config
from minidiff.files import WEIGHTS_DIR
from minidiff.forward import as_eps_model, diffusion_loss
from minidiff.generate import generate
from minidiff.guidance import classifier_free_guidance
from minidiff.latent import decode, encode
from minidiff.nn.vae import VAE
from minidiff.pretrained import list_pretrained, list_vaes, load_pretrained, load_vae
from minidiff.recipes import get_recipe
from minidiff.samplers import sample
from minidiff.schedules import NoiseSchedule

MODELS = {"pixel": "shapes_class", "latent f=4": "shapes_latent", "latent f=8": "shapes_latent_f8"}  # → recipe
SAMPLER, SAMPLER_STEPS, GUIDANCE = "ddim", 25, 3.0  # the speed runs' sampler
QUALITY_SCALES = (1.5, 2.0, 3.0, 5.0)  # guidance scales the quality table compares (each model's best is among them)
IMAGE_SHAPE = (3, 32, 32)


def build(name: str, device: str) -> tuple[nn.Module, VAE | None, NoiseSchedule, tuple[int, ...]]:
    """The recipe's U-Net (seed 0, on device), the VAE for a latent model (its recipe's, seed 0,
    eval mode; None for pixels), the recipe's schedule and the shape of one sample the U-Net sees."""
    recipe = get_recipe(MODELS[name])
    torch.manual_seed(0)
    model = model_from_config(recipe.model).to(device)
    vae = None
    if recipe.latent is not None:
        torch.manual_seed(0)
        vae = VAE(get_recipe(recipe.latent).model).to(device).eval()
    shape = vae.latent_shape(IMAGE_SHAPE) if vae is not None else IMAGE_SHAPE
    return model, vae, NoiseSchedule.from_name(recipe.schedule, recipe.T), shape


def make_step(
    name: str, mode: str, args: argparse.Namespace, sampler_steps: int = SAMPLER_STEPS
) -> Callable[[], object]:
    """One call of a mode on fixed random inputs of a batch:
    "train"  a training step of the U-Net (on latents for the latent model)
    "sample" DDIM (sampler_steps) with guidance from noise to images (+ the VAE decode for the latent model)
    "encode" / "decode" the VAE alone (latent model only)."""
    model, vae, schedule, shape = build(name, args.device)
    g = torch.Generator().manual_seed(0)
    labels = (torch.arange(args.batch) % 16).to(args.device)  # (B,), every class
    if mode == "train":
        model.train()
        x0 = torch.randn(args.batch, *shape, generator=g).to(args.device)  # (B, C, H, W): pixels or latents
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        prediction = get_recipe(MODELS[name]).prediction  # "v"

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            diffusion_loss(lambda x_t, t: model(x_t, t, y=labels), x0, schedule, prediction).backward()
            optimizer.step()

        return train_step
    model.eval()
    if mode == "encode":
        images = torch.rand(args.batch, *IMAGE_SHAPE, generator=g).to(args.device) * 2 - 1  # (B, 3, 32, 32)
        return lambda: encode(vae, images)
    x_T = torch.randn(args.batch, *shape, generator=g).to(args.device)  # (B, C, H, W)
    if mode == "decode":
        return lambda: decode(vae, x_T)
    guided = classifier_free_guidance(
        as_eps_model(model, schedule, "v"), labels, model.null_condition(labels), GUIDANCE
    )

    @torch.no_grad()
    def sample_images() -> torch.Tensor:
        x = sample(guided, x_T, schedule, SAMPLER, sampler_steps)  # (B, C, H, W)
        return decode(vae, x) if vae is not None else x  # (B, 3, 32, 32)

    return sample_images


def count_gflop(name: str, mode: str, args: argparse.Namespace) -> float:
    """GFLOP per image as counted by torch (convolutions and matmuls): a training step
    (forward + backward), the whole guided sampler (steps × a forward of 2 images, one
    conditional, one not) plus the decode, or one VAE encode."""
    model, vae, schedule, shape = build(name, "cpu")
    y = torch.zeros(1, dtype=torch.long)
    t = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(mode == "train"):
        if mode == "train":
            model(torch.randn(1, *shape), t, y=y).square().mean().backward()
        elif mode == "encode":
            vae.encode(torch.zeros(1, *IMAGE_SHAPE))
        else:
            model(torch.randn(2, *shape), torch.cat([t, t]), y=torch.cat([y, model.null_condition(y)]))
    flops = counter.get_total_flops()
    if mode == "sample":
        flops *= SAMPLER_STEPS
        if vae is not None:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                vae.decode(torch.zeros(1, *shape))
            flops += counter.get_total_flops()
    return flops / 1e9


def measure_memory(name: str, mode: str, args: argparse.Namespace) -> float:
    """Peak memory growth in MB: over two training steps (the first allocates AdamW's
    moments), or over a 2-step guided sampler plus the decode (every further step of the
    sampler frees what the previous one used, so 25 steps peak at the same)."""
    step = make_step(name, mode, args, sampler_steps=2)
    before = reset_peak_memory(args.device)
    for _ in range(2 if mode == "train" else 1):
        step()
    return (peak_memory(args.device) - before) / 2**20


def memory_in_subprocess(name: str, mode: str, args: argparse.Namespace) -> float:
    flags = ["--device", args.device, "--batch", str(args.batch), "--threads", str(args.threads)]
    out = subprocess.run(
        [sys.executable, __file__, *flags, "--memory-of", name, mode], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])["mb"]


def speed(args: argparse.Namespace, warmup: int, rounds: dict[str, int]) -> tuple[dict[str, list], dict[str, list]]:
    """Rows of the table ({label: one value per model}, None where it does not apply) and, for
    the speed rows, each model's paired ratio to the pixel model (latent/pixel images/s)."""
    names = list(MODELS)
    latents = [n for n in names if get_recipe(MODELS[n]).latent is not None]
    param = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else None  # noqa: E731
    built = {n: build(n, "cpu") for n in names}
    rows: dict[str, list] = {
        "what the U-Net sees": ["×".join(map(str, built[n][3])) for n in names],
        "values per sample": [torch.Size(built[n][3]).numel() for n in names],
        "U-Net parameters": [param(built[n][0]) for n in names],
        "VAE parameters": [param(built[n][1]) for n in names],
    }
    ratios: dict[str, list] = {}
    what = f"{SAMPLER.upper()}-{SAMPLER_STEPS} + guidance"
    for mode, label, extra in (("train", "training step", "encode"), ("sample", f"sampling ({what})", "decode")):
        steps = {n: make_step(n, mode, args) for n in names} | {(extra, n): make_step(n, extra, args) for n in latents}
        seconds = time_interleaved(steps, warmup if mode == "train" else 1, rounds[mode], args.device)
        per_batch = {n: statistics.median(s) for n, s in seconds.items()}
        vae_s = {key: [per_batch.get((key, n)) for n in names] for key in (extra,)}  # the VAE alone, per latent model
        rows[f"{label}, GFLOP / image"] = [count_gflop(n, mode, args) for n in names]
        rows[f"{label}, images/s"] = [args.batch / per_batch[n] for n in names]
        ratios[f"{label}, images/s"] = [
            statistics.median(p / q for p, q in zip(seconds["pixel"], seconds[n], strict=True)) for n in names
        ]
        if mode == "train":
            n_data = get_recipe(MODELS[latents[0]]).n
            rows["VAE encode, GFLOP / image"] = [count_gflop(n, "encode", args) if n in latents else None
                                                 for n in names]
            rows["VAE encode, images/s"] = [args.batch / s if s else None for s in vae_s["encode"]]
            rows[f"encoding the {n_data:,} training images once, s"] = [
                n_data * s / args.batch if s else None for s in vae_s["encode"]
            ]
        else:
            rows[f"sampling, s per {args.batch} images"] = [per_batch[n] for n in names]
            ratios[f"sampling, s per {args.batch} images"] = [1 / r for r in ratios[f"{label}, images/s"]]
            rows[f"… of which the VAE decode, s per {args.batch} images"] = vae_s["decode"]
    for mode, label in (("train", "training"), ("sample", "sampling")):
        rows[f"peak memory, {label}, MB"] = [memory_in_subprocess(n, mode, args) for n in names]
    return rows, ratios


def quality(n: int, args: argparse.Namespace) -> list[tuple[str, ...]]:
    """Accuracy and FD of n samples of each shipped model at each of QUALITY_SCALES, next to n
    real images; the last row is each model's best FD over the scales."""
    from minidiff.data import ShapesDataset
    from minidiff.metrics import ImageMetric

    metric = ImageMetric("shapes")
    labels = torch.arange(n) % 16  # (n,), each class equally often
    scores: dict[str, dict[float, dict]] = {}
    for name, recipe in MODELS.items():
        ckpt = load_pretrained(recipe, device=args.device, weights_dir=args.weights_dir)
        scores[name] = {}
        for w in QUALITY_SCALES:  # the same seed for every model and scale; latent samples decoded by their VAE
            start = time.perf_counter()
            images = generate(ckpt, n, sampler=SAMPLER, steps=SAMPLER_STEPS, label=labels, guidance=w,
                              batch_size=args.batch).cpu()
            scores[name][w] = metric.evaluate(images, labels) | {"seconds": time.perf_counter() - start}
        scores[name]["steps"] = ckpt.step
    real_set = ShapesDataset(n, 32, seed=0)
    real = metric.evaluate(real_set.images)
    reconstructed = {}  # a yardstick for a latent model: the real images, encoded and decoded by its VAE
    for name, recipe in MODELS.items():
        if (vae_name := get_recipe(recipe).latent) is not None:
            vae = load_vae(vae_name, device=args.device, weights_dir=args.weights_dir)
            x_hat = decode(vae, encode(vae, real_set.images.to(args.device))).clamp(-1, 1).cpu()
            reconstructed[name] = metric.evaluate(x_hat, real_set.labels)
    rows = [("", *MODELS, "real images"),
            ("training steps of the shipped model", *(f"{scores[m]['steps']:,}" for m in MODELS), "—")]
    for w in QUALITY_SCALES:
        rows.append((f"guidance {w:g}: accuracy / FD", *(f"{scores[m][w]['accuracy']:.1%} / {scores[m][w]['fd']:.2f}"
                                                         for m in MODELS), f"— / {real['fd']:.2f}"))
    rows.append(("the VAE's reconstructions of the real images: accuracy / FD",
                 *(f"{reconstructed[m]['accuracy']:.1%} / {reconstructed[m]['fd']:.2f}" if m in reconstructed else "—"
                   for m in MODELS), "—"))
    best = {m: min(QUALITY_SCALES, key=lambda w, m=m: scores[m][w]["fd"]) for m in MODELS}
    rows.append(("best FD (at guidance)", *(f"{scores[m][best[m]]['fd']:.2f} ({best[m]:g})" for m in MODELS),
                 f"{real['fd']:.2f}"))
    rows.append((f"sampling time for {n} images at guidance 3, s",
                 *(f"{scores[m][3.0]['seconds']:.1f}" for m in MODELS), "—"))
    return rows


def fmt(v: object) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a few minutes on one busy core)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=64, help="images per training step and per sampling run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: see the README)")
    parser.add_argument("--quality", type=int, default=0, metavar="N", help="also score N samples per shipped model")
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR), help="where the shipped weights are, for --quality")
    parser.add_argument("--memory-of", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU")
    torch.set_num_threads(args.threads)
    if args.memory_of:  # the child process of memory_in_subprocess
        print(json.dumps({"mb": measure_memory(*args.memory_of, args)}))
        return
    if args.quality:
        shipped, vaes = list_pretrained(args.weights_dir), list_vaes(args.weights_dir)
        needed = [(m, m in shipped) for m in MODELS.values()]
        needed += [(r.latent, r.latent in vaes) for r in map(get_recipe, MODELS.values()) if r.latent]
        missing = [m for m, there in needed if not there]
        if missing:
            parser.error(f"--quality needs the shipped weights of {', '.join(missing)} in {args.weights_dir}")

    warmup, rounds = (2, {"train": 5, "sample": 2}) if args.quick else (3, {"train": 20, "sample": 5})
    print(
        f"batch {args.batch} of {'×'.join(map(str, IMAGE_SHAPE))} images, {args.device}, "
        f"threads: {torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(
        f"training: {warmup} warm-up calls, {rounds['train']} interleaved rounds; sampling: 1 warm-up call, "
        f"{rounds['sample']} rounds; medians\n"
    )
    rows, ratios = speed(args, warmup, rounds)
    latents = [n for n in MODELS if n != "pixel"]
    out = [("", *(f"{n} ({r})" for n, r in MODELS.items()), *(f"{n} / pixel" for n in latents))]
    for label, values in rows.items():
        if label in ratios:
            relative = [f"{r:.2f}" for r in ratios[label][1:]]
        else:
            relative = [f"{v / values[0]:.2f}" if isinstance(v, (int, float)) and isinstance(values[0], (int, float))
                        else "—" for v in values[1:]]
        out.append((label, *map(fmt, values), *relative))
    print(table(out))
    print("\nratio > 1 on images/s: latent faster; < 1 on GFLOP, s and MB: latent cheaper")
    if args.quality:
        print(
            f"\nquality of {args.quality} samples per model and scale ({SAMPLER.upper()}-{SAMPLER_STEPS}, each class "
            "equally often), shapes classifier:\n"
        )
        print(table(quality(args.quality, args)))


if __name__ == "__main__":
    main()
