"""Attention blocks for image feature maps: self-attention over the H·W positions, and
cross-attention from those positions to a context sequence (e.g. text tokens).

Both are residual, x + proj(Attention(Q, K, V)), with Attention(Q, K, V) = softmax(Q Kᵀ / √d) V
(Vaswani et al. 2017, eq. 1), split over `heads` heads of size d = C / heads and computed by
`F.scaled_dot_product_attention`. The output projection starts at zero, so a new block is
the identity and the network around it trains as if the block were not there yet.

Notation: B batch, C channels, H×W the feature map (N = H·W queries), L context length,
D context_dim.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def zero_init(module: nn.Module) -> nn.Module:
    """Set a layer's weights and bias to zero and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _check_heads(channels: int, heads: int) -> None:
    if heads < 1 or channels % heads:
        raise ValueError(f"heads must be a positive divisor of channels={channels}, got heads={heads}")


def _split_heads(x: Tensor, heads: int) -> Tensor:
    B, N, C = x.shape
    return x.view(B, N, heads, C // heads).transpose(1, 2)  # (B, heads, N, d)


def _merge_heads(x: Tensor) -> Tensor:
    B, heads, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, heads * d)  # (B, N, C)


def _tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) → (B, H·W, C)


class SelfAttention(nn.Module):
    """x + proj(Attention(norm(x))), every position of the feature map attending to every other."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        _check_heads(channels, heads)
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(_tokens(self.norm(x))).chunk(3, dim=-1)  # 3 × (B, N, C)
        out = F.scaled_dot_product_attention(*(_split_heads(z, self.heads) for z in (q, k, v)))  # (B, heads, N, d)
        out = self.proj(_merge_heads(out))  # (B, N, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class CrossAttention(nn.Module):
    """x + proj(Attention(Q = norm(x), K = V = context)): each position reads from the context.

    `context_mask` (B, L) bool marks real tokens (True) and padding (False); padding gets
    exactly zero attention weight, so its content cannot change the output. A sample
    with no real token at all (an empty prompt) attends to nothing and the block adds
    zero, the same as passing no context: that is the "null" condition of
    classifier-free guidance, and cond and uncond samples can share one batch.
    """

    def __init__(self, channels: int, context_dim: int, heads: int = 4, groups: int = 8):
        super().__init__()
        _check_heads(channels, heads)
        self.heads, self.context_dim = heads, context_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def _attend_inputs(
        self, x: Tensor, context: Tensor, context_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Queries, keys, values split into heads, the (B, 1, 1, L) mask of keys each query may
        see, and the (B, 1, 1) factor that zeroes the output of samples with no real token."""
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != self.context_dim:
            raise ValueError(
                f"context must have shape ({x.shape[0]}, L, {self.context_dim}), got {tuple(context.shape)}"
            )
        B, L, _ = context.shape
        if context_mask is None:
            context_mask = torch.ones(B, L, dtype=torch.bool, device=context.device)
        if context_mask.dtype != torch.bool or context_mask.shape != (B, L):
            raise ValueError(
                f"context_mask must be a bool tensor of shape ({B}, {L}), True for real tokens, "
                f"got {context_mask.dtype} of shape {tuple(context_mask.shape)}"
            )
        has_token = context_mask.any(dim=1, keepdim=True)  # (B, 1)
        visible = context_mask | ~has_token  # (B, L) an empty row sees everything, to avoid 0/0
        q = _split_heads(self.q(_tokens(self.norm(x))), self.heads)  # (B, heads, N, d)
        k, v = (_split_heads(z, self.heads) for z in self.kv(context).chunk(2, dim=-1))  # 2 × (B, heads, L, d)
        return q, k, v, visible[:, None, None, :], has_token[:, :, None].to(q.dtype)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        q, k, v, visible, has_token = self._attend_inputs(x, context, context_mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (B, heads, N, d)
        out = self.proj(_merge_heads(out)) * has_token  # (B, N, C)
        return x + out.transpose(1, 2).reshape(B, C, H, W)

    @torch.no_grad()
    def attention_map(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """softmax(Q Kᵀ / √d) averaged over heads, as one map per context token: (B, L, H, W).

        For each position the weights over the L tokens sum to 1 (0 for a sample with no
        real token); padding tokens get 0. Call it with the inputs of `forward`, or let
        `record_attention_maps` do so during a forward pass.
        """
        B, C, H, W = x.shape
        q, k, _, visible, has_token = self._attend_inputs(x, context, context_mask)
        logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, heads, N, L)
        weights = logits.float().masked_fill(~visible, float("-inf")).softmax(dim=-1)  # (B, heads, N, L)
        weights = weights.mean(dim=1) * has_token.float()  # (B, N, L)
        return weights.transpose(1, 2).reshape(B, -1, H, W)


class TokenAttention(nn.Module):
    """Multi-head self-attention over a token sequence, (B, N, C) → (B, N, C): proj(Attention(Q, K, V))
    with Q, K, V linear maps of the tokens. No norm and no residual: the transformer block
    around it (`minidiff.nn.dit.DiTBlock`) adds both."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        _check_heads(channels, heads)
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(_split_heads(z, self.heads) for z in self.qkv(x).chunk(3, dim=-1))  # 3 × (B, heads, N, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(_merge_heads(F.scaled_dot_product_attention(*self._qkv(x))))  # (B, N, C)

    @torch.no_grad()
    def attention_map(self, x: Tensor) -> Tensor:
        """softmax(Q Kᵀ / √d) averaged over heads, (B, N, N): row i is where token i looks; rows sum to 1."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).float().softmax(dim=-1).mean(dim=1)


@contextlib.contextmanager
def record_attention_maps(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Collect the attention map of every `CrossAttention` and `TokenAttention` in `model` while
    the block runs.

        with record_attention_maps(unet) as maps:
            unet(x_t, t, context=tokens, context_mask=mask)
        maps["mid.0.cross"]  # (B, L, H, W): where each token was looked at
        with record_attention_maps(dit) as maps:
            dit(x_t, t, y)
        maps["blocks.0.attn"]  # (B, N, N): where each patch looked

    A block that runs more than once keeps its last call. Hooks are removed on exit.
    """
    maps: dict[str, Tensor] = {}

    def hook(name: str):
        def record(module: CrossAttention | TokenAttention, args: tuple, kwargs: dict, output: Tensor) -> None:
            maps[name] = module.attention_map(*args, **kwargs)

        return record

    handles = [
        m.register_forward_hook(hook(name), with_kwargs=True)
        for name, m in model.named_modules()
        if isinstance(m, CrossAttention | TokenAttention)
    ]
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()
