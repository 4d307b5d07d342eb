"""Lesson 05, samplers (notebooks/05_samplers.ipynb): one Euler step of the probability-flow
ODE in σ, and what a sampler costs in model calls (NFE)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, _verdict_on_cases
from minidiff.metrics import CountCalls
from minidiff.samplers import SAMPLERS, sample
from minidiff.schedules import NoiseSchedule


def check_euler_step(fn: Callable[[Tensor, Tensor, float, float], Tensor]) -> Verdict:
    """fn(x, x0_hat, sigma, sigma_next) should return one Euler step of the probability-flow
    ODE in σ: x + (σ_next - σ)·d with the slope d = (x - x̂0)/σ (Karras et al. 2022, Alg. 1)."""
    g = torch.Generator().manual_seed(5)
    x = 3.0 * torch.randn(4, 3, 5, 5, generator=g)  # x̃ = x0 + σ·ε at σ = 3
    x0_hat = torch.randn(4, 3, 5, 5, generator=g)
    sigma, sigma_next = 3.0, 1.2
    d = (x - x0_hat) / sigma
    mistakes = {
        "the step goes the wrong way. σ decreases, so the step is (σ_next - σ)·d with a negative "
        "(σ_next - σ); equivalently the slope is d = (x - x̂0)/σ, not (x̂0 - x)/σ.": x + (sigma - sigma_next) * d,
        "you forgot to divide by σ: the slope is d = (x - x̂0)/σ, the noise ε̂ the model sees.": x
        + (sigma_next - sigma) * (x - x0_hat),
        "divide by σ, the level you step *from* (where x̂0 was predicted), not by σ_next.": x
        + (sigma_next - sigma) * (x - x0_hat) / sigma_next,
        "the step size is σ_next - σ, not σ_next.": x + sigma_next * d,
        "you returned x̂0, a jump straight to σ = 0; put back noise of size σ_next: x̂0 + σ_next·d.": x0_hat,
        "you added the step to x̂0; start from x: x + (σ_next - σ)·d (or x̂0 + σ_next·d).": x0_hat
        + (sigma_next - sigma) * d,
    }
    return _verdict("euler_step", fn, (x, x0_hat, sigma, sigma_next), x + (sigma_next - sigma) * d, mistakes)


def solution_euler_step(x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float) -> Tensor:
    d = (x - x0_hat) / sigma  # dx̃/dσ, the slope of the probability-flow ODE
    return x + (sigma_next - sigma) * d  # same as x0_hat + sigma_next * d


def _calls(sampler: str, steps: int) -> int:
    """How many times `sample` calls the model: counted on a model that predicts zeros."""
    counted = CountCalls(lambda x_t, t: torch.zeros_like(x_t))
    sample(counted, torch.zeros(1, 2), NoiseSchedule.linear(T=100), sampler, steps)
    return counted.calls


def check_nfe(fn: Callable[[str, int], int]) -> Verdict:
    """fn(sampler, steps) should return the number of model calls (NFE) of `sample` with that
    sampler and step count, for every sampler in SAMPLERS."""
    cases = [(sampler, steps) for sampler in SAMPLERS for steps in (10, 2, 50)]
    mistakes = {
        "Heun's last step, to σ = 0, has no slope there to correct with and stays an Euler step: "
        "one call, so 2·steps - 1 in all.": lambda s, n: 2 * n if s == "heun" else n,
        "Heun calls the model twice per step: the slope at the start, and the slope at the end of the "
        "Euler step for the correction (except on the last step).": lambda s, n: n,
        "DPM-Solver++(2M) is second order with one call per step: it reuses the previous step's x̂0 "
        "instead of calling the model again (that is the 'multistep').": lambda s, n: (
            2 * n if s == "dpmpp_2m" else solution_nfe(s, n)
        ),
        "a sampler with N steps calls the model N times (Heun: 2N - 1): the final level σ = 0 is where "
        "the last step lands, not another call.": lambda s, n: solution_nfe(s, n) + 1,
        "only Heun pays two calls per step; the others call the model once per step.": lambda s, n: 2 * n,
    }
    return _verdict_on_cases("nfe", fn, cases, _calls, mistakes)


def solution_nfe(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps  # Heun's last step has no correction
