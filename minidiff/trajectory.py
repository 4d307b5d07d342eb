"""What a sampler hands its callback at each step, and a callback that records a whole run.

Every sampler of diffusion (`minidiff.samplers`) and of flow matching (`minidiff.flow`) can
report each step to a `callback(Step)`, so that the lessons can plot what happens in between;
`Trajectory` is the ready-made one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class Step(NamedTuple):
    """One step of a sampler: it was at x_t (timestep t), predicted x̂0, moved to x_next.

    Diffusion samplers report x_t and x_next in the VP scale x_t = √ᾱ·x0 + √(1-ᾱ)·ε, so runs
    of different samplers plot alike, and t is the model's timestep (fractional for "karras");
    flow solvers report the path's own x_t = (1-t)·x0 + t·ε and its time t ∈ [0, 1].
    """

    i: int
    t: float
    x_t: Tensor
    x0_hat: Tensor
    x_next: Tensor


Callback = Callable[[Step], None]


class Trajectory:
    """A callback that records a whole run.

    After sampling: `xs` is (steps + 1, B, …) from x_T to the final sample, `x0_hats` is
    (steps, B, …) the prediction of x0 made at each step, `ts` the timesteps visited.
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __call__(self, step: Step) -> None:
        i, t, *tensors = step
        self.steps.append(Step(i, t, *(x.detach().cpu() for x in tensors)))

    @property
    def ts(self) -> list[float]:
        return [s.t for s in self.steps]

    @property
    def xs(self) -> Tensor:
        return torch.stack([self.steps[0].x_t] + [s.x_next for s in self.steps])

    @property
    def x0_hats(self) -> Tensor:
        return torch.stack([s.x0_hat for s in self.steps])
