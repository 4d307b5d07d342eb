"""Throughput and peak memory of `minidiff.UNet`, against diffusers' `UNet2DModel` of the same shape.

    python benchmarks/bench_unet.py [--quick] [--device cpu|cuda] [--batch 64] [--size 16] [--channels 1]

For each model: parameters, GFLOP per image, training steps (forward + backward +
AdamW step) and sampling evaluations (one no-grad forward: one denoiser call per image per
sampler step) in images/s, and peak memory. The two models run interleaved in one process
(A, B, B, A, …) and every number is a median over rounds, so a machine shared with other
work slows both alike; the ratio minidiff/diffusers is the median of the per-round ratios.

Peak memory is measured in a fresh subprocess per model and mode: the growth above the
memory held once the model, optimizer and inputs exist (so it counts gradients, AdamW's
moments, activations and workspace). On CUDA that is `torch.cuda.max_memory_allocated`; on
CPU it is the peak resident set size (VmHWM, reset through /proc/self/clear_refs just before
the steps) minus the resident size then: what the OS had to give the process, allocator
caches included. Without /proc (not Linux) it falls back to the growth of `ru_maxrss`.

diffusers is optional: `pip install -e ".[bench]"`. Without it only minidiff is measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minidiff import UNet, UNetConfig

SAMPLER_STEPS = 50
CLEAR_REFS = "/proc/self/clear_refs"


def build(name: str, channels: int, size: int) -> tuple[nn.Module, Callable]:
    """The model and its denoiser function (x_t, t) → ε̂, freshly initialised from seed 0."""
    torch.manual_seed(0)
    if name == "minidiff":
        model = UNet(UNetConfig(in_channels=channels))  # widths 32/64/64, 2 blocks per level, attention at the lowest
        return model, model
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,  # its up path has layers_per_block + 1 residual blocks per level
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=16,  # minidiff: 4 heads of 64 / 4 = 16
        norm_num_groups=8,
        attn_norm_num_groups=8,  # GroupNorm before the middle attention too, as in minidiff
        resnet_time_scale_shift="scale_shift",  # the time embedding scales and shifts, as in minidiff
    )
    return model, lambda x_t, t: model(x_t, t).sample


def make_step(name: str, mode: str, args: argparse.Namespace) -> Callable[[], None]:
    """One training step or one sampling evaluation of a batch, on fixed random inputs."""
    model, denoise = build(name, args.channels, args.size)
    model.to(args.device)
    x_t = torch.randn(args.batch, args.channels, args.size, args.size, device=args.device)
    t = torch.randint(0, 1000, (args.batch,), device=args.device)
    eps = torch.randn_like(x_t)
    if mode == "sample":
        model.eval()
        return torch.no_grad()(lambda: denoise(x_t, t))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.mse_loss(denoise(x_t, t), eps).backward()
        optimizer.step()

    return train_step


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(steps: dict[str, Callable], warmup: int, rounds: int, device: str) -> dict[str, list[float]]:
    """Seconds per call of each step, one list entry per round; the order alternates each round."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def count_gflop(name: str, mode: str, args: argparse.Namespace) -> float:
    """GFLOP per image of one step as counted by torch: the forward, plus the backward when
    training (convolutions and matmuls; attention's own two matmuls are not counted on CPU,
    a small share at 4×4 or 8×8 tokens)."""
    _, denoise = build(name, args.channels, args.size)
    x_t = torch.randn(1, args.channels, args.size, args.size)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(mode == "train"):
        eps_hat = denoise(x_t, torch.zeros(1, dtype=torch.long))
        if mode == "train":
            eps_hat.square().mean().backward()
    return counter.get_total_flops() / 1e9


def _proc_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        return 1024 * int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_peak_memory(device: str) -> int:
    """Restart the peak-memory counter; return the bytes in use now."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    if os.path.exists(CLEAR_REFS):
        with open(CLEAR_REFS, "w") as f:
            f.write("5")  # Linux: the peak resident size becomes the current one
        return _proc_bytes("VmRSS")
    return _max_rss_bytes()  # elsewhere the peak cannot be reset: count the growth of the lifetime peak


def peak_memory(device: str) -> int:
    """Peak bytes since `reset_peak_memory`."""
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _proc_bytes("VmHWM") if os.path.exists(CLEAR_REFS) else _max_rss_bytes()


def measure_memory(name: str, mode: str, args: argparse.Namespace) -> float:
    """Peak memory growth in MB over two steps (the first one allocates AdamW's moments)."""
    step = make_step(name, mode, args)
    before = reset_peak_memory(args.device)
    for _ in range(2):
        step()
    return (peak_memory(args.device) - before) / 2**20


def memory_in_subprocess(name: str, mode: str, args: argparse.Namespace) -> float:
    flags = ["--device", args.device, "--batch", str(args.batch), "--size", str(args.size)]
    flags += ["--channels", str(args.channels), "--threads", str(args.threads), "--memory-of", name, mode]
    out = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])["mb"]


def table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about a minute)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=16, help="image height and width")
    parser.add_argument("--channels", type=int, default=1, help="image channels")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--memory-of", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU")
    torch.set_num_threads(args.threads)
    if args.memory_of:  # the child process of memory_in_subprocess
        print(json.dumps({"mb": measure_memory(*args.memory_of, args)}))
        return

    names = ["minidiff"]
    if importlib.util.find_spec("diffusers"):
        import diffusers

        names.append("diffusers")
        versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}"
    else:
        versions = f"torch {torch.__version__}"
        print('diffusers is not installed: measuring minidiff alone. For the comparison: pip install -e ".[bench]"')
    warmup, rounds = (2, 5) if args.quick else (3, 20)
    shape = f"{args.channels}×{args.size}×{args.size}"
    print(f"batch {args.batch} of {shape}, {args.device}, threads: {torch.get_num_threads()}, {versions}")
    print(f"{warmup} warm-up calls, then {rounds} interleaved rounds per mode; medians\n")

    results = {
        "parameters": [sum(p.numel() for p in build(n, args.channels, args.size)[0].parameters()) for n in names]
    }
    paired_ratios = {}  # from the median over rounds of (diffusers seconds / minidiff seconds)
    for mode, what in (("train", "training step"), ("sample", "sampling (1 forward)")):
        gflop = [count_gflop(n, mode, args) for n in names]
        seconds = time_interleaved({n: make_step(n, mode, args) for n in names}, warmup, rounds, args.device)
        per_image = [statistics.median(seconds[n]) / args.batch for n in names]
        results[f"{what}, GFLOP / image"] = gflop
        results[f"{what}, images/s"] = [1 / s for s in per_image]
        results[f"{what}, achieved GFLOP/s"] = [g / s for g, s in zip(gflop, per_image, strict=True)]
        speedup = statistics.median(b / a for a, b in zip(seconds[names[0]], seconds[names[-1]], strict=True))
        paired_ratios[f"{what}, images/s"] = speedup
        paired_ratios[f"{what}, achieved GFLOP/s"] = speedup * gflop[0] / gflop[-1]
    sampler = f"{SAMPLER_STEPS}-step sampler, s per {args.batch} images"
    results[sampler] = [SAMPLER_STEPS * args.batch / ips for ips in results["sampling (1 forward), images/s"]]
    paired_ratios[sampler] = 1 / paired_ratios["sampling (1 forward), images/s"]
    for mode, what in (("train", "training"), ("sample", "sampling")):
        results[f"peak memory, {what}, MB"] = [memory_in_subprocess(n, mode, args) for n in names]

    rows = [("", *names, *(["minidiff / diffusers"] if len(names) == 2 else []))]
    for label, values in results.items():
        ratio = [f"{paired_ratios.get(label, values[0] / values[-1]):.2f}"] if len(names) == 2 else []
        rows.append((label, *(f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in values), *ratio))
    print(table(rows))
    if len(names) == 2:
        print("\nratio > 1 on images/s and GFLOP/s: minidiff faster; < 1 on GFLOP, s and MB: minidiff cheaper")


if __name__ == "__main__":
    main()
