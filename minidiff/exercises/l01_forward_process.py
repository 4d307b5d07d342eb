"""Lesson 01, the forward process (notebooks/01_forward_process.ipynb): ᾱ_t from the β's,
and sampling x_t ~ q(x_t | x0) in closed form."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _test_batch, _verdict, uses
from minidiff.schedules import NoiseSchedule


def check_alpha_bar(fn: Callable[[Tensor], Tensor]) -> Verdict:
    """fn(betas) should return ᾱ_t = ∏_{s<=t} (1 - β_s) for every t."""
    betas = NoiseSchedule.linear(T=50).betas
    alphas = 1 - betas
    mistakes = {
        "this is α_t = 1 - β_t; ᾱ_t is the running *product* of the α's (torch.cumprod).": alphas,
        "this is the product of the β's; multiply α_s = 1 - β_s instead.": torch.cumprod(betas, 0),
        "this is 1 - Σβ; ᾱ_t is a product, not a sum (close only while β is tiny).": 1 - torch.cumsum(betas, 0),
        "off by one: ᾱ_0 should already include step 0, i.e. ᾱ_0 = 1 - β_0.": torch.cat(
            [torch.ones(1, dtype=betas.dtype), torch.cumprod(alphas, 0)[:-1]]
        ),
    }
    return _verdict("alpha_bar", fn, (betas,), torch.cumprod(alphas, 0), mistakes)


@uses(NoiseSchedule.alphas.fget, NoiseSchedule.alpha_bar.fget)
def solution_alpha_bar(betas: Tensor) -> Tensor:
    return NoiseSchedule(betas).alpha_bar  # ᾱ_t = ∏_{s<=t} (1 - β_s)


def check_q_sample(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """fn(x0, t, eps, alpha_bar) should return x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε for a batch,
    where t has shape (B,) and alpha_bar is the schedule's (T,) tensor."""
    schedule, x0, eps, t = _test_batch()
    alpha_bar = schedule.alpha_bar.float()
    ab = alpha_bar[t].reshape(-1, 1, 1, 1)
    mistakes = {
        "you used ᾱ_t and 1-ᾱ_t as the coefficients; they are variances, take their square roots.": ab * x0
        + (1 - ab) * eps,
        "the noise term is missing its square root: √(1-ᾱ_t)·ε.": ab.sqrt() * x0 + (1 - ab) * eps,
        "the signal term is missing its square root: √ᾱ_t·x0.": ab * x0 + (1 - ab).sqrt() * eps,
        "x0 and ε are swapped: the signal is scaled by √ᾱ_t, the noise by √(1-ᾱ_t).": ab.sqrt() * eps
        + (1 - ab).sqrt() * x0,
        "you used α_t = 1 - β_t of one step; the closed form needs the cumulative ᾱ_t.": solution_q_sample(
            x0, t, eps, schedule.alphas.float()
        ),
    }
    return _verdict("q_sample", fn, (x0, t, eps, alpha_bar), schedule.q_sample(x0, t, eps), mistakes)


def solution_q_sample(x0: Tensor, t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    ab = alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps
