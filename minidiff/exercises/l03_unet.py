"""Lesson 03, the U-Net (notebooks/03_unet.ipynb): the sinusoidal timestep embedding, the
per-channel scale-shift that feeds it in, and a ResBlock's parameter count."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, _verdict_on_cases
from minidiff.nn.layers import timestep_embedding
from minidiff.nn.unet import ResBlock


def check_timestep_embedding(fn: Callable[[Tensor, int], Tensor]) -> Verdict:
    """fn(t, dim) should return the (B, dim) sinusoidal embedding [sin(t·ω_0) … sin(t·ω_{h-1}),
    cos(t·ω_0) … cos(t·ω_{h-1})] with h = dim/2 and ω_i = 10000^(-i/h)."""
    t = torch.tensor([0.0, 1.0, 3.0, 10.0, 49.5])  # moderate t: float32 and float64 answers agree
    dim = 16
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    t64 = t.double()[:, None]

    def sincos(freqs: Tensor) -> Tensor:
        return torch.cat([(t64 * freqs).sin(), (t64 * freqs).cos()], dim=-1)

    freqs = torch.exp(-math.log(10_000) * i / half)
    angles = t64 * freqs
    mistakes = {
        "the sines and cosines are interleaved (sin, cos, sin, cos, …); put all the sines first, then all the "
        "cosines: torch.cat([sin, cos], dim=-1).": torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1),
        "the cosines come first; the order is [sin …, cos …].": torch.cat([angles.cos(), angles.sin()], dim=-1),
        "the exponent is i/dim; it should be i/(dim/2), so the frequencies run from 1 down to nearly 1/10000.": sincos(
            torch.exp(-math.log(10_000) * i / dim)
        ),
        "the exponent is i/(dim/2 - 1), another convention found in some code; this course uses i/(dim/2).": sincos(
            torch.exp(-math.log(10_000) * i / (half - 1))
        ),
    }
    return _verdict("timestep_embedding", fn, (t, dim), timestep_embedding(t, dim), mistakes)


solution_timestep_embedding = timestep_embedding  # the exercise is the package's own function


def check_scale_shift(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """fn(h, scale, shift) with h (B, C, H, W) and scale, shift (B, C) should return
    h·(1 + scale) + shift, one scale and one shift per sample and channel."""
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, 4, 5, 6, generator=g)  # every size different, so a wrong broadcast raises
    scale, shift = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    s, b = scale[:, :, None, None], shift[:, :, None, None]
    mistakes = {
        "you multiplied by scale; multiply by (1 + scale), so that scale = 0 leaves h unchanged.": h * s + b,
        "scale and shift are swapped: h·(1 + scale) + shift.": h * (1 + b) + s,
        "you shifted before scaling; scale first, then add the shift: h·(1 + scale) + shift.": (h + b) * (1 + s),
        "the shift is missing: h·(1 + scale) + shift.": h * (1 + s),
        "the scale is missing: h·(1 + scale) + shift.": h + b,
    }
    hint = " scale and shift have shape (B, C); reshape them to (B, C, 1, 1) to broadcast over H and W."
    return _verdict("scale_shift", fn, (h, scale, shift), h * (1 + s) + b, mistakes, broadcast_hint=hint)


def solution_scale_shift(h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]  # (B, C, H, W)


def check_resblock_params(fn: Callable[[int, int, int], int]) -> Verdict:
    """fn(c_in, c_out, emb_dim) should return the number of parameters of
    ResBlock(c_in, c_out, emb_dim, groups=8, dropout=0)."""
    cases = [(32, 32, 128), (32, 64, 128), (128, 64, 128), (64, 32, 256)]

    def count(c_in: int, c_out: int, e: int) -> int:
        return sum(p.numel() for p in ResBlock(c_in, c_out, e, groups=8, dropout=0.0).parameters())

    def skip(c_in: int, c_out: int) -> int:
        return c_in * c_out + c_out if c_in != c_out else 0

    mistakes = {
        "the biases are missing: every Conv2d and Linear has one bias per output channel.": lambda i, o, e: (
            2 * i + 9 * i * o + 2 * e * o + 9 * o * o + (i * o if i != o else 0)
        ),
        "the 1×1 skip convolution is missing: when c_in ≠ c_out the shortcut needs it to change the width.": (
            lambda i, o, e: count(i, o, e) - skip(i, o)
        ),
        "norm2 has no parameters (affine=False): the scale-shift takes the place of GroupNorm's own scale and shift.": (
            lambda i, o, e: count(i, o, e) + 2 * o
        ),
        "norm1's learned scale and shift (2·c_in numbers) are missing.": lambda i, o, e: count(i, o, e) - 2 * i,
        "the embedding layer outputs 2·c_out numbers (a scale and a shift per channel), not c_out.": lambda i, o, e: (
            count(i, o, e) - e * o - o
        ),
        "a 3×3 convolution has 9 weights per (input, output) channel pair: c_in·c_out·3·3, not c_in·c_out·3.": (
            lambda i, o, e: count(i, o, e) - 6 * i * o - 6 * o * o
        ),
    }
    return _verdict_on_cases("resblock_params", fn, cases, count, mistakes)


def solution_resblock_params(c_in: int, c_out: int, emb_dim: int) -> int:
    norm1 = 2 * c_in  # GroupNorm's scale and shift per channel
    conv1 = 9 * c_in * c_out + c_out  # 3×3 weights + bias
    emb = emb_dim * 2 * c_out + 2 * c_out  # Linear(emb_dim → scale and shift)
    conv2 = 9 * c_out * c_out + c_out  # norm2 has no parameters (affine=False)
    skip = c_in * c_out + c_out if c_in != c_out else 0  # 1×1 convolution, only to change the width
    return norm1 + conv1 + emb + conv2 + skip
