"""Lesson 10, flow matching (notebooks/10_flow_matching.ipynb): the straight path and an Euler step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, uses
from minidiff.flow import interpolate


def _path_batch() -> tuple[Tensor, Tensor, Tensor]:
    """x0 and ε of shape (4, 3, 5, 5), and one time t in (0, 1) per sample."""
    g = torch.Generator().manual_seed(10)
    return torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g), torch.rand(4, generator=g)


def check_path(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """fn(x0, eps, t) should return x_t = (1 - t)·x0 + t·ε, t of shape (B,) against images (B, C, H, W)."""
    x0, eps, t = _path_batch()
    tb = t.view(-1, 1, 1, 1)
    mistakes = {
        "the ends are swapped: here t = 0 is the data and t = 1 the noise (SD3's convention), "
        "so x_t = (1 - t)·x0 + t·ε.": tb * x0 + (1 - tb) * eps,
        "that is the diffusion path with square roots (√(1-t)·x0 + √t·ε); the straight path mixes "
        "x0 and ε linearly.": (1 - tb).sqrt() * x0 + tb.sqrt() * eps,
        "x_t must start at x0: (1 - t)·x0 + t·ε, not x0 + t·ε.": x0 + tb * eps,
    }
    return _verdict("path", fn, (x0, eps, t), (1 - tb) * x0 + tb * eps, mistakes)


@uses(interpolate)
def solution_path(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    return interpolate(x0, eps, t)  # the package's straight path


def check_flow_euler_step(fn: Callable[[Tensor, Tensor, float, float], Tensor]) -> Verdict:
    """fn(x, v, t, t_next) should return the Euler step x + (t_next - t)·v from time t down to t_next."""
    x, v, _ = _path_batch()
    t, t_next = 0.75, 0.5
    mistakes = {
        "the step goes the wrong way: sampling runs from t = 1 down to 0, so the step is "
        "(t_next - t)·v, a negative multiple of v.": x + (t - t_next) * v,
        "move by the step's length times v, (t_next - t)·v, not by t·v.": x - t * v,
        "x_next = x + (t_next - t)·v: you dropped x.": (t_next - t) * v,
    }
    return _verdict("flow_euler_step", fn, (x, v, t, t_next), x + (t_next - t) * v, mistakes)


def solution_flow_euler_step(x: Tensor, v: Tensor, t: float, t_next: float) -> Tensor:
    return x + (t_next - t) * v  # dx/dt = v, so over a step of length t_next - t (< 0) x moves by (t_next - t)·v
