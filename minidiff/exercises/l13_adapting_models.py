"""Lesson 13, adapting a trained model (notebooks/13_adapting_models.ipynb): LoRA's weight change,
and the IoU that measures how well a ControlNet's sample obeys its mask."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict
from minidiff.metrics import mask_iou


def check_lora_delta(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """fn(A, B, alpha) should return LoRA's weight change ΔW = (α/r)·B·A for A (r, d_in) and
    B (d_out, r): the matrix the adapter adds to W (Hu et al. 2021, eq. 3), of W's shape (d_out, d_in)."""
    g = torch.Generator().manual_seed(13)
    A, B = torch.randn(3, 7, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    alpha, r = 6.0, 3
    mistakes = {
        "the scale is missing: the change is (α/r)·B·A (Hu et al. fix α and divide by r, so that another rank "
        "needs no new learning rate).": B @ A,
        "the scale is α, not α/r: the change is divided by the rank r, the number of rows of A.": alpha * B @ A,
        "the scale is upside down: α/r, not r/α.": r / alpha * B @ A,
    }
    shape = " ΔW has W's shape (d_out, d_in): B (d_out, r) times A (r, d_in)."
    return _verdict("lora_delta", fn, (A, B, alpha), alpha / r * B @ A, mistakes, shape_hint=shape)


def solution_lora_delta(A: Tensor, B: Tensor, alpha: float) -> Tensor:
    r = A.shape[0]  # the rank: A is (r, d_in)
    return alpha / r * B @ A  # ΔW = (α/r)·B·A, (d_out, d_in)


def check_mask_iou(fn: Callable[[Tensor, Tensor], Tensor]) -> Verdict:
    """fn(a, b) should return the intersection over union of two batches of bool masks (B, 1, H, W),
    one number per sample (B,): |a ∧ b| / |a ∨ b|."""
    g = torch.Generator().manual_seed(31)
    a, b = torch.rand(4, 1, 6, 6, generator=g) > 0.5, torch.rand(4, 1, 6, 6, generator=g) > 0.4
    inter, area_a, area_b = ((m.flatten(1).sum(1)).double() for m in (a & b, a, b))
    mistakes = {
        "that divides by the area of the first mask alone (the share of it that is covered), not by the union: "
        "a sample that fills the whole image would score 1.": inter / area_a,
        "that is the Dice coefficient 2|a ∧ b| / (|a| + |b|), a cousin of IoU that counts the overlap twice.":
            2 * inter / (area_a + area_b),
        "the union counts the overlap twice: |a ∨ b| = |a| + |b| - |a ∧ b|.": inter / (area_a + area_b),
    }
    shape = " One IoU per sample: sum over the channel, height and width, keep the batch."
    return _verdict("mask_iou", fn, (a, b), mask_iou(a, b), mistakes, shape_hint=shape)


def solution_mask_iou(a: Tensor, b: Tensor) -> Tensor:
    intersection = (a & b).flatten(1).sum(1)  # (B,) pixels in both
    union = (a | b).flatten(1).sum(1)  # (B,) pixels in either: |a| + |b| - |a ∧ b|
    return intersection / union
