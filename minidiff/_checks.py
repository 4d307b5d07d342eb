"""Argument checks shared by the package: each names the argument and what was expected."""

from __future__ import annotations

import torch
from torch import Tensor


def check_finite(name: str, x: Tensor) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have a batch dimension first, shape (B, ...), got a scalar")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_timesteps(t: Tensor | int, batch: int, T: int, device: torch.device) -> Tensor:
    """Integer timesteps of shape (batch,) in [0, T-1], as a long tensor on `device`."""
    if isinstance(t, int):
        t = torch.full((batch,), t, dtype=torch.long)
    if not torch.is_tensor(t) or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"t must be an integer tensor of timesteps, got {t!r:.80}")
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},), one timestep per sample, got {tuple(t.shape)}")
    if batch and (int(t.min()) < 0 or int(t.max()) > T - 1):
        raise ValueError(f"t must lie in [0, {T - 1}] (T = {T}), got values from {int(t.min())} to {int(t.max())}")
    return t.to(device=device, dtype=torch.long)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
