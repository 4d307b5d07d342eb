"""Latent against pixel diffusion at the same image size: training and sampling speed, peak memory, quality.

    python benchmarks/bench_latent.py [--quick] [--threads 1] [--batch 64] [--device cpu|cuda] [--quality N]

Two recipes of `minidiff.recipes` make 3×32×32 shapes images, class-conditionally:

    pixel   "shapes_class":  a U-Net on the 3×32×32 pixels
    latent  "shapes_latent": a U-Net on the 4×8×8 latents of the VAE "vae_shapes" (encode, diffuse, decode)

Both networks (and the VAE) are freshly initialised from seed 0: speed and memory do not
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

`--quality N` (needs the shipped weights shapes_class, shapes_latent and vae_shapes) samples
N images per model (DDIM-25, guidance 3, each class equally often, the same seed) and
reports the shapes classifier's accuracy and Fréchet distance (`minidiff.metrics.ImageMetric`).
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
from minidiff.pretrained import list_pretrained, list_vaes, load_pretrained
from minidiff.recipes import get_recipe
from minidiff.samplers import sample
from minidiff.schedules import NoiseSchedule

MODELS = {"pixel": "shapes_class", "latent": "shapes_latent"}  # name → recipe
VAE_RECIPE = "vae_shapes"
SAMPLER, SAMPLER_STEPS, GUIDANCE = "ddim", 25, 3.0
IMAGE_SHAPE = (3, 32, 32)


def build(name: str, device: str) -> tuple[nn.Module, VAE | None, NoiseSchedule, tuple[int, ...]]:
    """The recipe's U-Net (seed 0, on device), the VAE for the latent model (seed 0, eval
    mode; None for pixels), the recipe's schedule and the shape of one sample the U-Net sees."""
    recipe = get_recipe(MODELS[name])
    torch.manual_seed(0)
    model = model_from_config(recipe.model).to(device)
    vae = None
    if recipe.latent is not None:
        torch.manual_seed(0)
        vae = VAE(get_recipe(VAE_RECIPE).model).to(device).eval()
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


def speed(args: argparse.Namespace, warmup: int, rounds: int) -> tuple[dict[str, list], dict[str, float]]:
    """Rows of the table ({label: [pixel, latent]}, None where it does not apply) and the
    paired latent/pixel ratios of the speed rows."""
    names = list(MODELS)
    n_data = get_recipe(MODELS["latent"]).n
    param = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    built = {n: build(n, "cpu") for n in names}
    rows: dict[str, list] = {
        "what the U-Net sees": ["×".join(map(str, built[n][3])) for n in names],
        "values per sample": [torch.Size(built[n][3]).numel() for n in names],
        "U-Net parameters": [param(built[n][0]) for n in names],
        "VAE parameters": [None, param(built["latent"][1])],
    }
    ratios: dict[str, float] = {}
    what = f"{SAMPLER.upper()}-{SAMPLER_STEPS} + guidance"
    for mode, label, extra in (("train", "training step", "encode"), ("sample", f"sampling ({what})", "decode")):
        steps = {n: make_step(n, mode, args) for n in names} | {extra: make_step("latent", extra, args)}
        seconds = time_interleaved(steps, warmup if mode == "train" else 1, rounds[mode], args.device)
        per_batch = {n: statistics.median(s) for n, s in seconds.items()}
        rows[f"{label}, GFLOP / image"] = [count_gflop(n, mode, args) for n in names]
        rows[f"{label}, images/s"] = [args.batch / per_batch[n] for n in names]
        ratios[f"{label}, images/s"] = statistics.median(
            p / l for p, l in zip(seconds["pixel"], seconds["latent"], strict=True)
        )
        if mode == "train":
            rows["VAE encode, GFLOP / image"] = [None, count_gflop("latent", "encode", args)]
            rows["VAE encode, images/s"] = [None, args.batch / per_batch["encode"]]
            rows[f"encoding the {n_data:,} training images once, s"] = [None, n_data * per_batch["encode"] / args.batch]
        else:
            rows[f"sampling, s per {args.batch} images"] = [per_batch[n] for n in names]
            ratios[f"sampling, s per {args.batch} images"] = 1 / ratios[f"{label}, images/s"]
            rows[f"… of which the VAE decode, s per {args.batch} images"] = [None, per_batch["decode"]]
    for mode, label in (("train", "training"), ("sample", "sampling")):
        rows[f"peak memory, {label}, MB"] = [memory_in_subprocess(n, mode, args) for n in names]
    return rows, ratios


def quality(n: int, args: argparse.Namespace) -> list[tuple[str, ...]]:
    """Accuracy and FD of n samples of each shipped model, next to n real images."""
    from minidiff.data import ShapesDataset
    from minidiff.metrics import ImageMetric

    metric = ImageMetric("shapes")
    labels = torch.arange(n) % 16  # (n,), each class equally often
    results = {}
    for name, recipe in MODELS.items():
        ckpt = load_pretrained(recipe, device=args.device, weights_dir=args.weights_dir)
        start = time.perf_counter()  # the same seed for both; the latent model's samples decoded by its VAE
        images = generate(ckpt, n, sampler=SAMPLER, steps=SAMPLER_STEPS, label=labels, guidance=GUIDANCE,
                          batch_size=args.batch).cpu()
        seconds = time.perf_counter() - start
        results[name] = metric.evaluate(images, labels) | {"seconds": seconds, "steps": ckpt.step}
    real = metric.evaluate(ShapesDataset(n, 32, seed=0).images)
    p, lat = results["pixel"], results["latent"]
    return [
        ("", "pixel", "latent", "real images"),
        ("training steps of the shipped model", f"{p['steps']:,}", f"{lat['steps']:,}", "—"),
        ("accuracy (class asked for)", f"{p['accuracy']:.1%}", f"{lat['accuracy']:.1%}", "—"),
        ("FD (lower: closer to the data)", f"{p['fd']:.2f}", f"{lat['fd']:.2f}", f"{real['fd']:.2f}"),
        (
            "classes covered (of 16)",
            str(p["classes_covered"]),
            str(lat["classes_covered"]),
            str(real["classes_covered"]),
        ),
        (f"sampling time for {n} images, s", f"{p['seconds']:.1f}", f"{lat['seconds']:.1f}", "—"),
    ]


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
        missing = [m for m in MODELS.values() if m not in list_pretrained(args.weights_dir)]
        missing += [VAE_RECIPE] if VAE_RECIPE not in list_vaes(args.weights_dir) else []
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
    out = [("", "pixel (shapes_class)", "latent (shapes_latent)", "latent / pixel")]
    for label, (p, lat) in rows.items():
        if label in ratios:
            ratio = f"{ratios[label]:.2f}"
        elif isinstance(p, (int, float)) and isinstance(lat, (int, float)):
            ratio = f"{lat / p:.2f}"
        else:
            ratio = "—"
        out.append((label, fmt(p), fmt(lat), ratio))
    print(table(out))
    print("\nratio > 1 on images/s: latent faster; < 1 on GFLOP, s and MB: latent cheaper")
    if args.quality:
        print(
            f"\nquality of {args.quality} samples per model ({SAMPLER.upper()}-{SAMPLER_STEPS}, guidance {GUIDANCE}, "
            "each class equally often), shapes classifier:\n"
        )
        print(table(quality(args.quality, args)))


if __name__ == "__main__":
    main()
