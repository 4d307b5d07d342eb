"""Samplers: the reverse process, run over any ε-predicting denoiser `model(x_t, t)`.

A sampler never knows which network it drives. It takes the model, the starting noise
x_T ~ N(0, I), the schedule the model was trained with, and the decreasing list of
timesteps to visit. Training steps (the schedule's T) and sampling steps (how many
timesteps the sampler visits) are separate choices.

Every sampler can report each step to a `callback(Step)`; `Trajectory` is a ready-made
callback that records them all for plotting.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from minidiff._checks import check_choice, check_finite
from minidiff.forward import Denoiser, x0_from_eps
from minidiff.schedules import NoiseSchedule

SPACINGS = ("linspace", "leading", "trailing")


class Step(NamedTuple):
    """One step of a sampler: it was at x_t (timestep t), predicted x̂0, moved to x_next."""

    i: int
    t: int
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
        self.steps.append(Step(step.i, step.t, step.x_t.detach().cpu(), step.x0_hat.detach().cpu(), step.x_next.detach().cpu()))

    @property
    def ts(self) -> list[int]:
        return [s.t for s in self.steps]

    @property
    def xs(self) -> Tensor:
        return torch.stack([self.steps[0].x_t] + [s.x_next for s in self.steps])

    @property
    def x0_hats(self) -> Tensor:
        return torch.stack([s.x0_hat for s in self.steps])


def timesteps(T: int, steps: int, spacing: str = "trailing") -> list[int]:
    """Which of the T training timesteps a `steps`-step sampler visits, in decreasing order.

    Spacings as tabulated by Lin et al. 2024 (arXiv:2305.08891, Table 2):
        linspace  round(linspace(0, T-1, steps))               — ends exactly at T-1 and 0
        leading   0, T/steps, 2T/steps, …  (integer stride)     — never visits t = T-1
        trailing  round(T, T - T/steps, …) - 1                  — always starts at T-1
    """
    check_choice("spacing", spacing, SPACINGS)
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}] (T = {T} training timesteps), got {steps!r}")
    if spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps).round().long()
    elif spacing == "leading":
        ts = torch.arange(steps) * (T // steps)
    else:
        ts = (torch.arange(T, 0, -T / steps).round().long() - 1).flip(0)
    return ts.flip(0).tolist()


@torch.no_grad()
def ddpm(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int | None = None,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling: Ho et al. 2020, Algorithm 2.

    With fewer steps than T, it jumps between the visited timesteps t → s using the
    respaced schedule of Nichol & Dhariwal 2021 (arXiv:2102.09672, §4):
    α = ᾱ_t/ᾱ_s, β = 1 - α. The added noise has the posterior variance β̃ (eq. 7 of Ho et
    al.), which is 0 on the last step, so the final sample is noise-free.

    Args:
        model:     ε-predictor, model(x_t, t) with t a float tensor of shape (B,)
        x_T:       starting noise, shape (B, …)
        schedule:  the schedule the model was trained with
        steps:     how many timesteps to visit (default: all T)
        spacing:   how to choose them, see `timesteps`
        generator: random source for the noise added at each step (reproducibility)
        callback:  called with a `Step` after every step
    """
    check_finite("x_T", x_T)
    ts = timesteps(schedule.T, steps or schedule.T, spacing)
    alpha_bar = schedule.alpha_bar
    x = x_T
    for i, (t, s) in enumerate(zip(ts, ts[1:] + [-1])):
        ab_t = alpha_bar[t].item()
        ab_s = alpha_bar[s].item() if s >= 0 else 1.0  # ᾱ before the first step is 1
        alpha, beta = ab_t / ab_s, 1 - ab_t / ab_s
        eps = model(x, torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype))
        x0_hat = x0_from_eps(x, eps, torch.tensor(ab_t, dtype=x.dtype, device=x.device))
        mean = (x - beta / (1 - ab_t) ** 0.5 * eps) / alpha**0.5  # Algorithm 2, line 4
        var = beta * (1 - ab_s) / (1 - ab_t)  # β̃ = (1-ᾱ_s)/(1-ᾱ_t)·β, eq. 7
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_next = mean + var**0.5 * z
        if callback:
            callback(Step(i, t, x, x0_hat, x_next))
        x = x_next
    return x
