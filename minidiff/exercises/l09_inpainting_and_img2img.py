"""Lesson 09, inpainting and img2img (notebooks/09_inpainting_and_img2img.ipynb): where
SDEdit starts, the input noised to the first level it keeps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict


def check_sdedit_start(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """fn(x0, eps, alpha_bar) should return where SDEdit starts: the input x0 noised to the
    first level kept, x_t = √ᾱ·x0 + √(1-ᾱ)·ε, with ᾱ a number (Meng et al. 2022, Algorithm 1)."""
    g = torch.Generator().manual_seed(9)
    x0, eps = torch.rand(4, 3, 5, 5, generator=g) * 2 - 1, torch.randn(4, 3, 5, 5, generator=g)
    alpha_bar = 0.3  # a middle strength: neither coefficient is close to 0 or 1
    a, b = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    sigma = ((1 - alpha_bar) / alpha_bar) ** 0.5
    mistakes = {
        "you used ᾱ and 1-ᾱ as the coefficients; they are variances, take their square roots: "
        "√ᾱ·x0 + √(1-ᾱ)·ε.": alpha_bar * x0 + (1 - alpha_bar) * eps,
        "the noise term is missing its square root: √(1-ᾱ)·ε.": a * x0 + (1 - alpha_bar) * eps,
        "the signal term is missing its square root: √ᾱ·x0.": alpha_bar * x0 + b * eps,
        "x0 and ε are swapped: the input is scaled by √ᾱ, the noise by √(1-ᾱ).": a * eps + b * x0,
        "you added noise without shrinking the input: the model expects √ᾱ·x0 + √(1-ᾱ)·ε, whose "
        "variance stays 1 (variance preserving), not x0 + √(1-ᾱ)·ε.": x0 + b * eps,
        "that is x̃ = x0 + σ·ε, the σ-space state of the Euler samplers (lesson 05); the model sees "
        "x_t = √ᾱ·x̃ = √ᾱ·x0 + √(1-ᾱ)·ε.": x0 + sigma * eps,
        "you returned the input unchanged, which is where strength 0 'starts'; noise it to the level ᾱ: "
        "√ᾱ·x0 + √(1-ᾱ)·ε.": x0,
        "you returned pure noise ε, where strength 1 starts; at ᾱ > 0 some of the input remains: "
        "√ᾱ·x0 + √(1-ᾱ)·ε.": eps,
    }
    return _verdict("sdedit_start", fn, (x0, eps, alpha_bar), a * x0 + b * eps, mistakes)


def solution_sdedit_start(x0: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps  # eq. 4 of Ho et al. at the first level kept
