"""Lesson 02, the reverse process on 2-D data (notebooks/02_reverse_process_2d.ipynb): x̂0
from a predicted ε, and the mean of one DDPM step."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from minidiff.exercises._common import Verdict, _test_batch, _verdict
from minidiff.forward import x0_from_eps


def check_x0_from_eps(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """fn(x_t, eps, alpha_bar_t) should return x̂0 = (x_t - √(1-ᾱ_t)·ε)/√ᾱ_t, where
    alpha_bar_t already broadcasts over x_t."""
    schedule, x0, eps, t = _test_batch(1)
    ab = schedule.alpha_bar.float()[t].reshape(-1, 1, 1, 1)
    x_t = schedule.q_sample(x0, t, eps)
    mistakes = {
        "you subtracted ε without scaling it by √(1-ᾱ_t).": (x_t - eps) / ab.sqrt(),
        "you forgot to divide by √ᾱ_t at the end.": x_t - (1 - ab).sqrt() * eps,
        "you divided by ᾱ_t; divide by its square root.": (x_t - (1 - ab).sqrt() * eps) / ab,
        "the sign of the noise term is wrong: remove the noise, x_t - √(1-ᾱ_t)·ε.": (x_t + (1 - ab).sqrt() * eps)
        / ab.sqrt(),
    }
    return _verdict("x0_from_eps", fn, (x_t, eps, ab), x0_from_eps(x_t, eps, ab), mistakes)


solution_x0_from_eps = x0_from_eps  # the exercise is the package's own function


def check_ddpm_mean(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> Verdict:
    """fn(x_t, eps, alpha_t, alpha_bar_t) should return the mean of p(x_{t-1} | x_t),
    Ho et al. 2020 Algorithm 2: (x_t - (1-α_t)/√(1-ᾱ_t)·ε) / √α_t."""
    schedule, x0, eps, t = _test_batch(2)
    a = schedule.alphas.float()[t].reshape(-1, 1, 1, 1)
    ab = schedule.alpha_bar.float()[t].reshape(-1, 1, 1, 1)
    x_t = schedule.q_sample(x0, t, eps)
    mistakes = {
        "the noise coefficient should be β_t/√(1-ᾱ_t) = (1-α_t)/√(1-ᾱ_t); you used √(1-ᾱ_t).": (
            x_t - (1 - ab).sqrt() * eps
        )
        / a.sqrt(),
        "divide by √α_t (one step), not √ᾱ_t (all steps).": (x_t - (1 - a) / (1 - ab).sqrt() * eps) / ab.sqrt(),
        "you forgot to divide by √α_t.": x_t - (1 - a) / (1 - ab).sqrt() * eps,
        "the coefficient is (1-α_t)/√(1-ᾱ_t), with a square root in the denominator.": (x_t - (1 - a) / (1 - ab) * eps)
        / a.sqrt(),
    }
    return _verdict("ddpm_mean", fn, (x_t, eps, a, ab), (x_t - (1 - a) / (1 - ab).sqrt() * eps) / a.sqrt(), mistakes)


def solution_ddpm_mean(x_t: Tensor, eps: Tensor, alpha_t: Tensor, alpha_bar_t: Tensor) -> Tensor:
    return (x_t - (1 - alpha_t) / (1 - alpha_bar_t).sqrt() * eps) / alpha_t.sqrt()
