"""Optimised noise levels: choose where a few-step sampler stops by measuring its error.

With N steps a deterministic sampler visits σ_0 > σ_1 > … > σ_{N-1} > σ_N = 0, and which levels
those are matters as much as which sampler takes the steps. The usual spacings ("trailing",
"karras", even steps in log-SNR) are rules of thumb that do well on average. Sabour et al. 2024
("Align Your Steps", arXiv:2404.14507) instead *fit* the levels to a given model, schedule and
sampler. They minimise an upper bound on the divergence between the discretised and the exact
process; here the error itself is measured, which any problem allows once its converged answer
can be computed (the exact Gaussian-mixture denoisers of `minidiff.data` do; so does a trained model).

Notation:

    x_T        starting noises, one per sample: a fixed set, so the error is a deterministic function
    σ_i        the noise levels; σ_0 = the schedule's σ_max and σ_N = 0 stay fixed, the N - 1 interior
               ones are the unknowns, searched as u_i = log σ_i
    x̂0*        the converged answer from x_T: the probability-flow ODE solved with a thousand steps
               evenly spaced in log σ (= in log-SNR, since SNR = 1/σ²), `reference_solution`
    E(σ)       mean_j ‖sampler(x_T^j; σ_0 … σ_N) - x̂0*^j‖², the squared error averaged over the
               samples (`sampling_error`); its square root is the RMS error the benchmarks report

`optimise_sigmas` minimises E by coordinate descent: one u_i at a time, between its neighbours
u_{i+1} < u_i < u_{i-1} (so the levels stay strictly decreasing), by Brent's bounded method
(golden-section search sped up by parabolic steps); a move is kept only if it lowers E, so the
result is never worse than the spacing it started from. Nothing is random: the same inputs give
the same levels.

The levels are fitted to these x_T, so judge them on other, held-out noises: levels that help the
noises they see can throw a few unseen ones into the wrong mode (those near a boundary between two
modes, where the answer changes fastest with x_T). Abrupt changes of step size make that likelier: a
multistep solver (dpmpp_2m, unipc) extrapolates from its last steps and is only stable when
neighbouring steps do not differ too much in size. So no step h_i = u_{i-1} - u_i between two interior
levels may exceed `max_ratio` times the step next to it (the first step, from σ_max, and the last, to
0, are free). That lowers the risk; the held-out noises remain the judge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from minidiff._checks import check_choice, check_finite
from minidiff.forward import Denoiser
from minidiff.samplers import SAMPLERS, SIGMA_SPACINGS, check_sigmas, noise_levels
from minidiff.schedules import NoiseSchedule


def reference_solution(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    steps: int | None = None,
    sampler: str = "unipc",
    **kwargs,
) -> Tensor:
    """The converged answer x̂0* from each noise in x_T: `sampler` over `steps` noise levels evenly
    spaced in log-SNR (`noise_levels(schedule, steps, "logsnr")`; default steps = T, all the
    schedule allows), then σ = 0.

    A deterministic sampler converges to one answer as its steps shrink; UniPC-2 (`unipc`, of
    order 3) is within about 1e-5 of it after 1,000 such steps on the cosine schedule's Gaussian
    mixture. Check that it has converged by comparing it with half the steps. `kwargs` go to the
    sampler (e.g. order=3).
    """
    check_choice("sampler", sampler, tuple(SAMPLERS))
    check_finite("x_T", x_T)
    steps = schedule.T if steps is None else steps
    _check_count("steps", steps, 2, f"(the reference's steps, at most T = {schedule.T})")
    return SAMPLERS[sampler](model, x_T, schedule, noise_levels(schedule, steps, "logsnr"), **kwargs)


def sampling_error(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sampler: str,
    sigmas: Sequence[float],
    reference: Tensor,
    **kwargs,
) -> float:
    """E = mean_j ‖sampler(x_T^j; sigmas) - reference^j‖²: the squared distance between the
    sampler's output and the converged answer from the same noise, averaged over the samples
    (squared norm over every dimension but the first). `kwargs` go to the sampler."""
    check_choice("sampler", sampler, tuple(SAMPLERS))
    _check_reference(reference, x_T)
    x0 = SAMPLERS[sampler](model, x_T, schedule, sigmas, **kwargs)
    return (x0 - reference).pow(2).flatten(1).sum(1).mean().item()


def is_deterministic(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sampler: str,
    sigmas: Sequence[float],
    **kwargs,
) -> bool:
    """Whether `sampler` maps x_T to one answer: run it from x_T with two random
    generators and compare. An ancestral or SDE sampler adds fresh noise at each step; its
    output is a random draw, with no single solution for its steps to converge to."""
    check_choice("sampler", sampler, tuple(SAMPLERS))
    check_finite("x_T", x_T)
    runs = [SAMPLERS[sampler](model, x_T, schedule, sigmas, generator=torch.Generator(x_T.device).manual_seed(seed),
                              **kwargs) for seed in (0, 1)]  # (all of x_T: a guided model's conditions fit its batch)
    return torch.equal(*runs)


def optimise_sigmas(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sampler: str = "dpmpp_2m",
    steps: int = 5,
    start: str | Sequence[float] = "trailing",
    *,
    reference: Tensor | None = None,
    sweeps: int = 3,
    evaluations: int = 10,
    max_ratio: float = 30.0,
    **kwargs,
) -> list[float]:
    """Noise levels σ_0 = σ_max > σ_1 > … > σ_{steps-1} > σ_steps = 0 for `sampler` with `steps`
    steps, fitted to lower its error E on the noises x_T (see the module docstring).

    Starting from `noise_levels(schedule, steps, start)` (or from the levels `start` itself, e.g. an
    earlier result to refine), each sweep searches every interior log σ_i in turn between its
    neighbours (the last one above the schedule's σ_min), within the step-ratio bound `max_ratio`,
    with at most `evaluations` runs of the sampler, and keeps a move only if E falls. Costs about
    sweeps·(steps - 1)·evaluations sampler runs on x_T. For example

        sigmas = optimise_sigmas(model, torch.randn(256, 2), schedule, "dpmpp_2m", steps=5)
        x0 = dpmpp_2m(model, torch.randn(1000, 2), schedule, sigmas)  # judge it on other noises

    Args:
        model:       ε-predictor model(x_t, t)
        x_T:         the starting noises the levels are fitted to, shape (B, …)
        schedule:    the schedule the model was trained with
        sampler:     a deterministic sampler, a key of `minidiff.samplers.SAMPLERS`
        steps:       number of steps, at least 2 (one step has no level to choose)
        start:       the spacing to start from (a key of SIGMA_SPACINGS that begins at σ_max), or
                     steps + 1 noise levels beginning at σ_max
        reference:   the converged answer from x_T (`reference_solution` by default)
        sweeps:      passes over all interior levels
        evaluations: most sampler runs per level and sweep (Brent's `maxiter`)
        max_ratio:   how many times longer (in log σ) a step between interior levels may be than
                     the step next to it (> 1)
        kwargs:      passed to the sampler (e.g. `order` of a multistep solver)
    Returns:
        the levels as a list of floats, which `check_sigmas` accepts
    """
    check_choice("sampler", sampler, tuple(SAMPLERS))
    check_finite("x_T", x_T)
    _check_count("steps", steps, 2, f"(the number of sampler steps, at most T = {schedule.T})")
    _check_count("sweeps", sweeps, 1, "(passes over the interior noise levels)")
    _check_count("evaluations", evaluations, 3, "(sampler runs per level and sweep)")
    if not isinstance(max_ratio, (int, float)) or isinstance(max_ratio, bool) or not max_ratio > 1:
        raise ValueError(f"max_ratio must be a number > 1 (the most one step may exceed the next), got {max_ratio!r}")
    sigmas = _start_levels(schedule, steps, start)
    if not is_deterministic(model, x_T, schedule, sampler, sigmas, **kwargs):
        raise ValueError(f"sampler {sampler!r} draws fresh noise, so its output from x_T is a random draw with no "
                         "converged answer to fit to; choose a deterministic sampler (e.g. 'dpmpp_2m', 'euler')")
    reference = reference_solution(model, x_T, schedule) if reference is None else reference
    _check_reference(reference, x_T)

    def error(u: list[float]) -> float:  # E as a function of the interior u_i = log σ_i
        return sampling_error(model, x_T, schedule, sampler, _levels(sigmas[0], u), reference, **kwargs)

    u = [math.log(s) for s in sigmas[1:-1]]
    best = error(u)
    log_sigma_min = schedule.sigmas[0].log().item()
    for _ in range(sweeps):
        for i in range(len(u)):
            bounds = _bounds([math.log(sigmas[0]), *u], i + 1, log_sigma_min, max_ratio)
            u[i], best = _line_search(error, u, i, bounds, best, evaluations)
    return check_sigmas(_levels(sigmas[0], u))


def _bounds(w: list[float], k: int, log_sigma_min: float, max_ratio: float) -> tuple[float, float]:
    """Where w_k = log σ_k may move, the others fixed: between its neighbours (above log σ_min for
    the last), and such that no step h_j = w_{j-1} - w_j between two interior levels is more than
    `max_ratio` times the step next to it. The first step (from σ_max) and the last (to 0) are free."""
    kappa, last = max_ratio, len(w) - 1
    lo, hi = (w[k + 1] if k < last else log_sigma_min), w[k - 1]
    if k >= 3:  # h_{k-1} fixed, h_k = w_{k-1} - w_k within [h_{k-1}/κ, κ·h_{k-1}]
        h = w[k - 2] - w[k - 1]
        lo, hi = max(lo, w[k - 1] - kappa * h), min(hi, w[k - 1] - h / kappa)
    if 2 <= k < last:  # h_k/h_{k+1} within [1/κ, κ], both moving with w_k
        a, b = w[k - 1], w[k + 1]
        lo, hi = max(lo, (a + kappa * b) / (1 + kappa)), min(hi, (kappa * a + b) / (1 + kappa))
    if k + 2 <= last:  # h_{k+2} fixed, h_{k+1} = w_k - w_{k+1} within [h_{k+2}/κ, κ·h_{k+2}]
        h = w[k + 1] - w[k + 2]
        lo, hi = max(lo, w[k + 1] + h / kappa), min(hi, w[k + 1] + kappa * h)
    return lo, hi


def _levels(sigma_max: float, u: list[float]) -> list[float]:
    """σ_0 = σ_max, σ_i = exp(u_i) for the interior, σ_N = 0."""
    return [sigma_max, *(math.exp(v) for v in u), 0.0]


def _line_search(
    error: Callable[[list[float]], float],
    u: list[float],
    i: int,
    bounds: tuple[float, float],
    best: float,
    evaluations: int,
) -> tuple[float, float]:
    """Brent's bounded search for u_i in the open interval `bounds`, the others fixed. Returns the
    best value seen and its error, or (u_i, best) unchanged if nothing beat `best`."""
    lo, hi = bounds
    if not hi - lo > 1e-9:  # neighbours (almost) touching: no room to move
        return u[i], best
    found = minimize_scalar(lambda v: error([*u[:i], v, *u[i + 1:]]), bounds=bounds, method="bounded",
                            options={"maxiter": evaluations, "xatol": 1e-6})
    return (float(found.x), float(found.fun)) if found.fun < best else (u[i], best)


def _start_levels(schedule: NoiseSchedule, steps: int, start: str | Sequence[float]) -> list[float]:
    """The start's noise levels, checked to be `steps` steps from the schedule's σ_max (which stays
    fixed) to 0, with the interior ones within the schedule's [σ_min, σ_max]."""
    sigma_min, sigma_max = schedule.sigmas[0].item(), schedule.sigmas[-1].item()
    if isinstance(start, str):
        check_choice("start", start, SIGMA_SPACINGS)
        sigmas = noise_levels(schedule, steps, start)
    else:
        sigmas = check_sigmas(start)
        if len(sigmas) != steps + 1:
            raise ValueError(f"start must hold steps + 1 = {steps + 1} noise levels, got {len(sigmas)}")
    if not math.isclose(sigmas[0], sigma_max, rel_tol=1e-9):
        ok = [s for s in SIGMA_SPACINGS if math.isclose(noise_levels(schedule, steps, s)[0], sigma_max, rel_tol=1e-9)]
        raise ValueError(f"start begins at σ = {sigmas[0]:.6g}, not at the schedule's σ_max = {sigma_max:.6g}, "
                         f"which the optimised levels keep; start from one of {', '.join(map(repr, ok))} "
                         "or from levels that begin at σ_max")
    if sigmas[-2] < sigma_min * (1 - 1e-9):  # (karras_sigmas may round just below σ_min)
        raise ValueError(f"start goes below the schedule's σ_min = {sigma_min:.4g} (to {sigmas[-2]:.4g}) before σ = 0")
    return [sigma_max, *sigmas[1:]]


def _check_reference(reference: Tensor, x_T: Tensor) -> None:
    check_finite("reference", reference)
    if reference.shape != x_T.shape:
        raise ValueError(f"reference must have the shape of x_T {tuple(x_T.shape)} (one answer per noise), "
                         f"got {tuple(reference.shape)}")


def _check_count(name: str, value: int, least: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an integer >= {least} {what}, got {value!r}")
