"""Lesson 06, classifier-free guidance (notebooks/06_classifier_free_guidance.ipynb): dropping
labels while training, and combining the two predictions while sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict


def check_drop_labels(fn: Callable[[Tensor, Tensor, int], Tensor]) -> Verdict:
    """fn(y, u, null) should return the labels y (B,) with each replaced by the null label
    where the uniform draw u (B,) is below p_uncond = 0.1 (Ho & Salimans 2022, Algorithm 1)."""
    y = torch.tensor([3, 0, 7, 7, 2, 5, 1, 9])
    u = torch.tensor([0.05, 0.5, 0.09, 0.99, 0.1, 0.0, 0.3, 0.95])
    null, p_uncond = 10, 0.1
    mistakes = {
        "you dropped the labels where u >= p_uncond, which keeps only 10%: drop where u < p_uncond.": torch.where(
            u >= p_uncond, null, y
        ),
        "a dropped label becomes the null label (here 10, one past the last class), not 0.": torch.where(
            u < p_uncond, 0, y
        ),
        "a label is dropped when u < p_uncond (strictly): u = 0.1 keeps its label.": torch.where(
            u <= p_uncond, null, y
        ),
    }
    return _verdict("drop_labels", fn, (y, u, null), torch.where(u < p_uncond, null, y), mistakes)


def solution_drop_labels(y: Tensor, u: Tensor, null: int) -> Tensor:
    return torch.where(u < 0.1, null, y)  # p_uncond = 0.1


def check_cfg(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """fn(eps_uncond, eps_cond, w) should return classifier-free guidance's ε̂ in the Stable
    Diffusion convention: ε̂ = ε_uncond + w·(ε_cond − ε_uncond), so w = 1 is no guidance."""
    g = torch.Generator().manual_seed(6)
    eps_uncond, eps_cond = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    w = 7.5
    mistakes = {
        "the branches are swapped: start from the unconditional prediction and move w times the "
        "difference (ε_cond − ε_uncond) towards the conditional one.": eps_cond + w * (eps_uncond - eps_cond),
        "that is Ho & Salimans' own convention, (1 + w)·ε_cond − w·ε_uncond, where w = 0 means no "
        "guidance; here w = 1 means no guidance: ε_uncond + w·(ε_cond − ε_uncond).": (1 + w) * eps_cond
        - w * eps_uncond,
        "you scaled the difference but dropped the starting point: add it to ε_uncond.": w * (eps_cond - eps_uncond),
        "you added the difference to ε_cond; it is added to ε_uncond.": eps_cond + w * (eps_cond - eps_uncond),
    }
    expected = eps_uncond + w * (eps_cond - eps_uncond)
    return _verdict("cfg", fn, (eps_uncond, eps_cond, w), expected, mistakes)


def solution_cfg(eps_uncond: Tensor, eps_cond: Tensor, w: float) -> Tensor:
    return eps_uncond + w * (eps_cond - eps_uncond)  # w = 1: ε_cond; w = 0: ε_uncond
