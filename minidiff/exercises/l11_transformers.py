"""Lesson 11, transformers as denoisers (notebooks/11_transformers.ipynb): cutting an image into
patch tokens, and what one adaLN-Zero block costs in parameters."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, _verdict_on_cases, uses
from minidiff.nn.dit import DiTBlock, patchify


def check_patchify(fn: Callable[[Tensor, int], Tensor]) -> Verdict:
    """fn(x, p) should cut images x (B, C, H, W) into (B, N, C·p²) tokens, patches row by row and
    each token listing its patch channel by channel, as `minidiff.nn.dit.patchify` does."""
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(11))
    p, B, C, H, W = 4, 2, 3, 8, 12
    mistakes = {
        "that cuts the image into rows of pixels, not patches: a plain reshape keeps each row of the image "
        "together. Split H and W into (H/p, p) and (W/p, p), then bring the two grid axes to the front.":
            x.reshape(B, (H // p) * (W // p), C * p * p),
        "the patches are in column order: tokens go row by row (the grid's row index first).":
            x.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p),
        "each token lists its values pixel by pixel (channels last); here a token lists its patch channel by "
        "channel, (C, p, p) flattened.":
            x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p),
    }
    shape = " Tokens have shape (B, N, C·p²): reshape to (B, C, H/p, p, W/p, p), permute, reshape."
    return _verdict("patchify", fn, (x, p), patchify(x, p), mistakes, shape_hint=shape)


@uses(patchify)
def solution_patchify(x: Tensor, p: int) -> Tensor:
    return patchify(x, p)  # the package's patchify


def check_dit_block_params(fn: Callable[[int, int], int]) -> Verdict:
    """fn(D, r) should return the number of parameters of DiTBlock(D, heads, r): attention
    (qkv and proj), the MLP (D → r·D → D) and the adaLN modulation (D → 6·D), all with biases."""
    cases = [(128, 4), (64, 4), (96, 2), (256, 4)]

    def count(D: int, r: int) -> int:
        return sum(q.numel() for q in DiTBlock(D, 4, r).parameters())

    mistakes = {
        "the biases are missing: every Linear layer has one bias per output.": lambda D, r: (10 + 2 * r) * D * D,
        "the adaLN modulation (a Linear from D to 6·D: shift, scale and gate for both sublayers) is missing.": (
            lambda D, r: count(D, r) - 6 * D * D - 6 * D
        ),
        "the LayerNorms here learn nothing (elementwise_affine=False): adaLN's shift and scale replace them.": (
            lambda D, r: count(D, r) + 4 * D
        ),
        "the modulation outputs six vectors (β₁, γ₁, α₁, β₂, γ₂, α₂), not four: the gates α count too.": (
            lambda D, r: count(D, r) - 2 * D * D - 2 * D
        ),
        "the MLP has two layers, D → r·D and r·D → D.": lambda D, r: count(D, r) - r * D * D - D,
    }
    off = " Count every Linear of DiTBlock.__init__ (a·b weights and b biases each) and nothing else."
    return _verdict_on_cases("dit_block_params", fn, cases, count, mistakes, off_hint=off)


def solution_dit_block_params(D: int, r: int) -> int:
    attention = (D * 3 * D + 3 * D) + (D * D + D)  # qkv: D → 3D, proj: D → D
    mlp = (D * r * D + r * D) + (r * D * D + D)  # D → rD → D
    modulation = D * 6 * D + 6 * D  # c → β₁, γ₁, α₁, β₂, γ₂, α₂
    return attention + mlp + modulation  # the LayerNorms have no parameters
