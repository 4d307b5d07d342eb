"""Lesson 15, from minidiff to diffusers (notebooks/15_from_minidiff_to_diffusers.ipynb): the input
scaling of diffusers' Euler schedulers, and how many steps an img2img `strength` takes there."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, _verdict_on_cases


def check_scale_model_input(fn: Callable[[Tensor, Tensor], Tensor]) -> Verdict:
    """fn(x, sigma) should return what diffusers' Euler schedulers (Euler, Euler a) hand the model: their
    state x̃ = x_t/√ᾱ brought back to the scale the model was trained on, x_t = x̃/√(σ² + 1)
    (σ: one per sample, shape (B,))."""
    g = torch.Generator().manual_seed(15)
    x = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64) * 10
    sigma = torch.tensor([0.1, 1.0, 14.6, 300.0], dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    mistakes = {
        "that is x̃ itself: the model was trained on x_t = √ᾱ·x0 + √(1-ᾱ)·ε, whose variance is about 1, but x̃ = "
        "x_t/√ᾱ has variance about 1 + σ². Divide by √(σ² + 1) (√ᾱ = 1/√(1 + σ²)).": x,
        "that multiplies by √(σ² + 1): x̃ = x_t/√ᾱ is already the larger one; going back to x_t divides by it.":
            x * (s**2 + 1).sqrt(),
        "that divides by σ, not by √(σ² + 1): close at high noise, wrong at low noise (σ → 0 must leave x unchanged).":
            x / s,
        "that divides by σ² + 1, not by its square root.": x / (s**2 + 1),
    }
    shape = " σ has one value per sample, (B,): reshape it to (B, 1, 1, 1) to broadcast over x."
    return _verdict("scale_model_input", fn, (x, sigma), x / (s**2 + 1).sqrt(), mistakes, shape_hint=shape)


def solution_scale_model_input(x: Tensor, sigma: Tensor) -> Tensor:
    return x / (sigma.view(-1, *[1] * (x.ndim - 1)) ** 2 + 1).sqrt()  # x_t = x̃·√ᾱ, ᾱ = 1/(1 + σ²)


def check_img2img_steps(fn: Callable[[int, float], int]) -> Verdict:
    """fn(num_inference_steps, strength) should return how many denoising steps a diffusers img2img
    pipeline takes: min(int(num_inference_steps · strength), num_inference_steps), its `get_timesteps`.
    int truncates the float product: 100 · 0.29 is 28.999999999999996 in floating point, so 28 steps."""
    cases = [(10, 0.55), (10, 0.6), (10, 0.62), (50, 0.75), (30, 0.99), (20, 1.0), (25, 0.3), (8, 0.0), (100, 0.29)]
    mistakes = {
        "that rounds (minidiff's `sdedit_levels` does, round(strength·N)); diffusers truncates: int(N · strength), "
        "of the float product (100 · 0.29 = 28.999999999999996: 28 steps).":
            lambda n, s: round(n * s),
        "that rounds up; diffusers truncates: int(N · strength).": lambda n, s: -int(-n * s // 1),
        "that is the number of steps *skipped*: diffusers starts at t_start = N - int(N · strength) and takes the "
        "rest, int(N · strength) of them.": lambda n, s: n - int(n * s),
        "strength is a fraction of num_inference_steps, not of the 1000 training steps.": lambda n, s: int(1000 * s),
        "that is every step: strength picks a fraction of num_inference_steps (1: all of them, 0.5: half).":
            lambda n, s: n,
    }
    return _verdict_on_cases("img2img_steps", fn, cases, solution_img2img_steps, mistakes)


def solution_img2img_steps(num_inference_steps: int, strength: float) -> int:
    return min(int(num_inference_steps * strength), num_inference_steps)  # diffusers' get_timesteps: truncated
