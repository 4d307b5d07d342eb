"""Self-checks for the notebooks' exercises.

Each `check_*` calls the learner's function on test inputs, compares it with the
package's own implementation, and when it is wrong says *how*, by recognising the usual
mistakes. It returns True or False and prints its verdict; it never raises, so a
notebook with an unfinished exercise still runs to the end. `show_solution(name)` prints
a reference solution, for when you are stuck.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.forward import x0_from_eps
from minidiff.schedules import NoiseSchedule


def _verdict(name: str, fn: Callable, args: tuple, expected: Tensor, mistakes: dict[str, Tensor]) -> bool:
    """Call the learner's fn(*args) and compare with `expected`; if wrong, name the first
    known mistake it matches. An exception in the learner's code becomes feedback."""
    try:
        got = fn(*args)
    except Exception as e:  # noqa: BLE001 — any error in learner code becomes feedback
        hint = (
            " A per-sample value of shape (B,) must be reshaped to (B, 1, 1, 1) to broadcast."
            if "size of tensor" in str(e)
            else ""
        )
        print(f"✗ {name}: your function raised {type(e).__name__}: {e}.{hint}")
        return False
    if got is None:
        print(f"✗ {name}: your function returned None. Did you forget `return`?")
        return False
    if not torch.is_tensor(got):
        print(f"✗ {name}: expected a torch.Tensor, got {type(got).__name__}.")
        return False
    if got.shape != expected.shape:
        print(f"✗ {name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. Check how you broadcast.")
        return False
    if torch.allclose(got.double(), expected.double(), rtol=1e-4, atol=1e-5):
        print(f"✓ {name}: correct.")
        return True
    for hint, wrong in mistakes.items():
        if torch.allclose(got.double(), wrong.double(), rtol=1e-4, atol=1e-5):
            print(f"✗ {name}: {hint}")
            return False
    err = (got.double() - expected.double()).abs().max().item()
    print(f"✗ {name}: the values are off (largest error {err:.3g}). Re-read the equation above the exercise.")
    return False


def _test_batch(seed: int = 0) -> tuple[NoiseSchedule, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    schedule = NoiseSchedule.linear()
    x0 = torch.randn(4, 3, 5, 5, generator=g)
    eps = torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    return schedule, x0, eps, t


def check_alpha_bar(fn: Callable[[Tensor], Tensor]) -> bool:
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


def check_q_sample(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
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


def check_x0_from_eps(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
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


def check_ddpm_mean(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
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


# ----- reference solutions ---------------------------------------------------------------


def solution_alpha_bar(betas: Tensor) -> Tensor:
    return torch.cumprod(1 - betas, dim=0)


def solution_q_sample(x0: Tensor, t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    ab = alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def solution_x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def solution_ddpm_mean(x_t: Tensor, eps: Tensor, alpha_t: Tensor, alpha_bar_t: Tensor) -> Tensor:
    return (x_t - (1 - alpha_t) / (1 - alpha_bar_t).sqrt() * eps) / alpha_t.sqrt()


def show_solution(name: str) -> None:
    """Print the reference solution of exercise `name` ("alpha_bar", "q_sample", …)."""
    fn = globals().get(f"solution_{name}")
    if fn is None:
        names = sorted(k.removeprefix("solution_") for k in globals() if k.startswith("solution_"))
        raise ValueError(f"unknown exercise {name!r}; expected one of {', '.join(names)}")
    print(inspect.getsource(fn))
