"""Argument checks shared by the package: each names the argument and what was expected."""

from __future__ import annotations

import dataclasses
import types
import typing

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


def check_model_timesteps(t: Tensor, batch: int) -> None:
    """A denoiser's timesteps: a real tensor of shape (batch,), finite and not negative
    (integers, or fractional ones from the σ-space samplers)."""
    if not torch.is_tensor(t) or t.shape != (batch,) or t.dtype == torch.bool or t.is_complex():
        got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"t must be a tensor of shape ({batch},), one timestep per sample, got {got}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"t (the timesteps) contains NaN or infinite values: {t.tolist()!r:.80}")
    if batch and float(t.min()) < 0:
        raise ValueError(f"t (the timesteps) must not be negative, got a minimum of {float(t.min())}")


def check_fields(config: object) -> None:
    """Raise ValueError naming the field if a config dataclass holds a value of the wrong type
    (e.g. the string "32" for an int read back from hand-edited JSON). Checks the plain types of
    its annotations: int, float, bool, str, tuples of them, and `X | None`."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, hint = getattr(config, field.name), hints[field.name]
        if not _has_type(value, hint):
            raise ValueError(
                f"{type(config).__name__}.{field.name} must be {_type_name(hint)}, got {value!r:.60} "
                f"({type(value).__name__})"
            )


def _has_type(value: object, hint: object) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_has_type(value, a) for a in args)
    if origin is tuple:  # tuple[X, ...] (a list from JSON too)
        return isinstance(value, (tuple, list)) and all(_has_type(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return not isinstance(hint, type) or isinstance(value, hint) or dataclasses.is_dataclass(hint)


def _type_name(hint: object) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
