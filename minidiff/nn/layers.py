"""Building blocks shared by the networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer
    (Vaswani et al. 2017, §3.5) and DDPM, all sines first, then all cosines: for i < dim/2,

        emb[:, i] = sin(t·ω_i),   emb[:, dim/2 + i] = cos(t·ω_i),   ω_i = max_period^(-i/(dim/2))

    Args:
        t:   timesteps, shape (B,), integer or float
        dim: embedding size (even)
    Returns:
        (B, dim) float tensor on t's device.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (dim/2,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding followed by a 2-layer MLP, so the network can learn its own
    features of t (DDPM's U-Net does the same)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.dim = dim
        hidden = hidden or 4 * dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.out_dim = hidden

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))  # (B, hidden)
