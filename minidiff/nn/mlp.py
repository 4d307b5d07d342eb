"""A small MLP denoiser for 2-D toy data."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from minidiff._checks import check_fields, check_finite, check_model_timesteps
from minidiff.nn.layers import TimeEmbedding


@dataclass
class MLPConfig:
    data_dim: int = 2  # dimension of one sample
    hidden: int = 128  # width of the hidden layers
    layers: int = 3  # residual blocks
    time_dim: int = 32  # size of the sinusoidal timestep embedding

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("data_dim", "hidden", "layers", "time_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")


class MLPBlock(nn.Module):
    """h ← h + W₂·SiLU(W₁·LayerNorm(h) + time features): a residual MLP block that sees t."""

    def __init__(self, hidden: int, time_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(time_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + self.time(temb)))


class MLPDenoiser(nn.Module):
    """model(x_t, t) → prediction (ε by default) for data of shape (B, data_dim)."""

    def __init__(self, config: MLPConfig | None = None):
        super().__init__()
        self.config = c = config or MLPConfig()
        self.time_embedding = TimeEmbedding(c.time_dim)
        self.inp = nn.Linear(c.data_dim, c.hidden)
        self.blocks = nn.ModuleList(MLPBlock(c.hidden, self.time_embedding.out_dim) for _ in range(c.layers))
        self.out = nn.Sequential(nn.LayerNorm(c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.data_dim))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        check_finite("x_t", x_t)
        if x_t.ndim != 2 or x_t.shape[1] != self.config.data_dim:
            raise ValueError(f"x_t must have shape (B, {self.config.data_dim}), got {tuple(x_t.shape)}")
        check_model_timesteps(t, x_t.shape[0])
        temb = self.time_embedding(t)  # (B, 4·time_dim)
        h = self.inp(x_t)  # (B, hidden)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)  # (B, data_dim)
