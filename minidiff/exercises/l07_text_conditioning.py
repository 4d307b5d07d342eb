"""Lesson 07, text conditioning (notebooks/07_text_conditioning.ipynb): cross-attention
weights from pixels to the tokens of a prompt, padding masked out."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict


def check_attention_weights(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """fn(q, k, mask) should return cross-attention weights softmax(q kᵀ/√d) of shape (B, N, L),
    each row over the L tokens, with padding tokens (mask False) getting exactly 0."""
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(2, 6, 8, generator=g), torch.randn(2, 4, 8, generator=g)  # (B, N, d), (B, L, d)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])  # (B, L)
    logits = q @ k.transpose(1, 2)  # (B, N, L)

    def weights(scores: Tensor, dim: int = -1, masked: bool = True) -> Tensor:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf")) if masked else scores
        return scores.softmax(dim)

    mistakes = {
        "divide the scores by √d (here √8) before the softmax, as in Attention(Q, K, V) = softmax(QKᵀ/√d)V.": weights(
            logits
        ),
        "the softmax runs over the tokens (the last dimension, L): each pixel's weights over the words sum to 1.": (
            weights(logits / 8**0.5, dim=1).nan_to_num()
        ),
        "padding tokens must get zero weight: set their scores to -inf before the softmax.": weights(
            logits / 8**0.5, masked=False
        ),
    }
    return _verdict("attention_weights", fn, (q, k, mask), weights(logits / 8**0.5), mistakes)


def solution_attention_weights(q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
    scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5  # (B, N, L): QKᵀ/√d
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # padding: weight exactly 0
    return scores.softmax(dim=-1)  # over the L tokens
