"""Lesson 12, fewer steps (notebooks/12_few_steps.ipynb): one step of UniPC's corrector, and the
coefficients that give a consistency model its boundary condition."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, uses
from minidiff.forward import CM_TIME_SCALE, SIGMA_DATA, consistency_coefficients


def check_unic_step(fn: Callable[[Tensor, Tensor, Tensor, float, float], Tensor]) -> Verdict:
    """fn(x, D_s, D_t, sigma_s, sigma_t) should redo the step from x̃ = x at σ_s to σ_t with UniC-1,
    the corrector of UniPC-2 in its first order: the exponential integrator with the data prediction
    taken as the mean of D_s (at the start) and D_t (the new prediction at the step's end)."""
    g = torch.Generator().manual_seed(12)
    x, D_s, D_t = (torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    sigma_s, sigma_t = 2.5, 0.9

    def step(h: float, weight_s: float, weight_t: float) -> Tensor:
        return math.exp(-h) * x - math.expm1(-h) * (weight_s * D_s + weight_t * D_t)

    h = math.log(sigma_s / sigma_t)  # the step in λ = -log σ
    mistakes = {
        "that is the step without correction (DPM-Solver++'s first order, DDIM): the corrector also uses D_t, "
        "the prediction at the step's end.": step(h, 1, 0),
        "that uses D_t alone; UniC-1 takes the mean of D_s and D_t (a₁ = ½), like the trapezoid rule.": step(h, 0, 1),
        "the step h is taken in σ; the exponential integrator steps in λ = -log σ: h = log(σ_s/σ_t).":
            step(sigma_s - sigma_t, 0.5, 0.5),
        "the signs of the exponent are swapped: x̃ shrinks by e^{-h} = σ_t/σ_s towards the data.":
            math.exp(h) * x - math.expm1(h) * (D_s + D_t) / 2,
    }
    off = " x̃_t = e^{-h}·x̃ + (1 - e^{-h})·(D_s + D_t)/2 with h = log(σ_s/σ_t)."
    return _verdict("unic_step", fn, (x, D_s, D_t, sigma_s, sigma_t), step(h, 0.5, 0.5), mistakes, off_hint=off)


def solution_unic_step(x: Tensor, D_s: Tensor, D_t: Tensor, sigma_s: float, sigma_t: float) -> Tensor:
    h = math.log(sigma_s / sigma_t)  # h = λ_t - λ_s
    return math.exp(-h) * x + -math.expm1(-h) * (D_s + D_t) / 2  # e^{-h}·x̃ + (1 - e^{-h})·(D_s + D_t)/2


def check_consistency_coefficients(fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Verdict:
    """fn(t) should return (c_skip, c_out) at timesteps t, as `minidiff.forward.consistency_coefficients`:
    u = 10·t, c_skip = σ_d²/(u² + σ_d²), c_out = u/√(u² + σ_d²), σ_d = 0.5."""
    t = torch.tensor([0.0, 0.02, 0.05, 0.1, 1.0, 500.0], dtype=torch.float64)

    def pair(c_skip: Tensor, c_out: Tensor) -> Tensor:
        return torch.stack([c_skip, c_out])

    def coefficients(u: Tensor, out_scale: float = 1.0) -> Tensor:
        return pair(SIGMA_DATA**2 / (u**2 + SIGMA_DATA**2), out_scale * u / (u**2 + SIGMA_DATA**2).sqrt())

    u = CM_TIME_SCALE * t
    mistakes = {
        "c_out has Song et al.'s factor σ_d, made for a network whose output has unit variance; ours gives x̂0 "
        "itself, so c_out must reach 1 (the network's answer, unscaled) away from the boundary.":
            coefficients(u, SIGMA_DATA),
        "the time is not scaled: u = 10·t, so that the hand-over from x̃ to the network is over by t = 1.":
            coefficients(t),
        "c_skip and c_out are swapped: at t = 0, c_skip = 1 (f = x̃) and c_out = 0.": coefficients(u).flip(0),
    }

    def answer(t: Tensor) -> Tensor:
        return pair(*fn(t))

    shape = " Return a pair (c_skip, c_out), each of t's shape."
    return _verdict("consistency_coefficients", answer, (t,), coefficients(u), mistakes, shape_hint=shape)


@uses(consistency_coefficients)
def solution_consistency_coefficients(t: Tensor) -> tuple[Tensor, Tensor]:
    return consistency_coefficients(t)  # the package's
