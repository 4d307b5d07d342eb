"""Samplers: the reverse process, run over any ε-predicting denoiser `model(x_t, t)`.

A sampler never knows which network it drives. It takes the model, the starting noise
x_T ~ N(0, I), the schedule the model was trained with, and the noise levels to visit,
σ_0 > σ_1 > … > σ_N = 0 (as k-diffusion's samplers do): one step from each level to the next.
Training steps (the schedule's T) and sampling steps (how many noise levels the sampler
visits) are separate choices; `noise_levels(schedule, steps, spacing)` makes the list.
x0- and v-predicting networks are wrapped into ε-predictors
by `minidiff.forward.as_eps_model`, so no sampler has a prediction-type flag.

Notation (one picture, two coordinates):

    x_t        the variance-preserving (VP) state x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε that the model
               sees; ddpm and ddim work on it, and every `Step` reports it
    σ          √((1-ᾱ)/ᾱ), the noise level (Karras et al. 2022); ᾱ = 1/(1 + σ²)
    x          in the σ-space samplers: x̃ = x_t/√ᾱ = x0 + σ·ε, the variance-exploding
               state of Karras et al., whose noise level is σ itself
    t          the model's (possibly fractional) timestep whose noise level is σ,
               t = schedule.t_at_sigma(σ); integer for the spacings below
    eps        ε̂ = model(x_t, t), the predicted noise
    x0_hat     x̂0, the predicted clean data; in σ-space the denoiser D(x̃; σ) = x̃ - σ·ε̂
    d          (x̃ - D(x̃; σ))/σ = ε̂, the slope dx̃/dσ of the probability-flow ODE
               (Karras et al. 2022, eqs. 1 and 3 with σ(t) = t)

Which noise levels are visited is the `spacing`: "linspace", "leading" or "trailing"
pick integer timesteps (see `timesteps`), "karras" picks σ's evenly spaced in σ^(1/7)
(`karras_sigmas`), "logsnr" evenly spaced in log σ (in log-SNR). Every sampler ends with a
step to σ = 0, so it returns clean data.

Every sampler is `sampler(model, x, schedule, sigmas, *, generator=None, callback=None, …)`
and can report each step to a `callback(Step)`; `minidiff.trajectory.Trajectory` is a
ready-made callback that records them all for plotting. `sample(model, x_T, schedule, "ddim", 50)` picks a sampler by
name and builds its noise levels. The one-step pieces `denoise` and `ddim_step` are public:
editing (`minidiff.edit`) and the lessons build on them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import Tensor

from minidiff._checks import check_choice, check_finite
from minidiff.forward import Denoiser, x0_from_eps
from minidiff.schedules import NoiseSchedule
from minidiff.trajectory import Callback, Step

SPACINGS = ("linspace", "leading", "trailing")  # integer timesteps, see `timesteps`
SIGMA_SPACINGS = (*SPACINGS, "karras", "logsnr")  # what every sampler's `spacing` accepts


# ----- which noise levels to visit ----------------------------------------------------------
def timesteps(T: int, steps: int, spacing: str = "trailing") -> list[int]:
    """Which of the T training timesteps a `steps`-step sampler visits, in decreasing order.

    Spacings as tabulated by Lin et al. 2024 (arXiv:2305.08891, Table 2):
        linspace  round(linspace(0, T-1, steps))               — ends exactly at T-1 and 0
        leading   0, T/steps, 2T/steps, …  (integer stride)     — never visits t = T-1
        trailing  round(T, T - T/steps, …) - 1                  — always starts at T-1

    Computed in float64; exact ties (x.5) round half to even.
    """
    check_choice("spacing", spacing, SPACINGS)
    _check_steps(steps, T)
    i = torch.arange(steps, dtype=torch.float64)
    if spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().flip(0)
    elif spacing == "leading":
        ts = (steps - 1 - i) * (T // steps)
    else:
        ts = (T - i * (T / steps)).round() - 1
    return ts.long().tolist()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """Noise levels evenly spaced in σ^(1/ρ): Karras et al. 2022 (arXiv:2206.00364), eq. 5,

        σ_i = (σ_max^(1/ρ) + i/(N-1)·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ   for i < N,   σ_N = 0

    with N = steps. ρ = 7 crowds the steps at low noise, where the fine detail is decided.
    Returns a float64 tensor of shape (steps + 1,), decreasing from σ_max to σ_min, then 0.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho!r}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)  # i/(N-1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho  # eq. 5
    return torch.cat([sigmas, sigmas.new_zeros(1)])  # σ_N = 0


def _check_steps(steps: int, T: int) -> None:
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}] (T = {T} training timesteps), got {steps!r}")


def noise_levels(schedule: NoiseSchedule, steps: int, spacing: str = "trailing") -> list[float]:
    """σ_0 > σ_1 > … > σ_{steps-1} > σ_steps = 0: the noise levels a `steps`-step sampler visits.

    "linspace", "leading" and "trailing" take the σ of the integer timesteps `timesteps`
    picks; "karras" spaces them evenly in σ^(1/7) between the schedule's σ_max and σ_min
    (`karras_sigmas`); "logsnr" spaces them evenly in log σ between the same two, i.e. evenly
    in λ = -log σ, half the log-SNR log(ᾱ/(1-ᾱ)) = -2·log σ: the steps h of the λ-space solvers
    (`dpmpp_2m`, `unipc`) are then all equal (DPM-Solver's "logSNR" steps, Lu et al. 2022,
    arXiv:2206.00927).
    """
    check_choice("spacing", spacing, SIGMA_SPACINGS)
    _check_steps(steps, schedule.T)
    sigma_min, sigma_max = schedule.sigmas[0].item(), schedule.sigmas[-1].item()
    if spacing == "karras":
        return karras_sigmas(sigma_min, sigma_max, steps).tolist()
    if spacing == "logsnr":
        log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64)
        return log_sigmas.exp().tolist() + [0.0]
    return schedule.sigmas[timesteps(schedule.T, steps, spacing)].tolist() + [0.0]


def check_sigmas(sigmas: Sequence[float] | Tensor) -> list[float]:
    """The noise levels a sampler is given, as a list of floats: finite, strictly decreasing,
    ending at σ = 0 (a single [0.0] means no step). Raises ValueError naming what is wrong."""
    if torch.is_tensor(sigmas) and sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D list of noise levels, got a tensor of shape {tuple(sigmas.shape)}")
    values = sigmas.tolist() if torch.is_tensor(sigmas) else list(sigmas)
    real = all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in values)
    if not values or not real or not all(math.isfinite(s) for s in values):
        raise ValueError(f"sigmas must be a non-empty list of finite noise levels, got {values!r:.100}")
    if values[-1] != 0 or any(a <= b for a, b in pairwise(values)):
        raise ValueError(f"sigmas must decrease strictly and end at 0 (σ_0 > … > σ_N = 0), got {values!r:.100}")
    return [float(s) for s in values]


def _check_eta(eta: float) -> None:
    if not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic, 1: as much noise as DDPM), got {eta!r}")


# ----- the pieces every sampler is made of ----------------------------------------------------
def timestep_at(schedule: NoiseSchedule, sigma: float) -> float:
    """The model's (fractional) timestep whose noise level is σ (t = 0 for σ = 0, the closest it knows)."""
    return schedule.t_at_sigma(torch.tensor([sigma], dtype=torch.float64)).item()


def _eps(model: Denoiser, x_t: Tensor, schedule: NoiseSchedule, sigma: float) -> Tensor:
    """ε̂ = model(x_t, t) at the timestep t of noise level σ, checked to have x_t's shape."""
    t = torch.full((x_t.shape[0],), timestep_at(schedule, sigma), dtype=x_t.dtype, device=x_t.device)  # (B,)
    eps = model(x_t, t)
    if eps.shape != x_t.shape:
        raise ValueError(f"model output must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps.shape)}")
    if not bool(torch.isfinite(eps).all()):
        raise FloatingPointError(f"the model's output at noise level σ = {sigma:.4g} (t = {t[0].item():.4g}) "
                                 "contains NaN or infinite values")
    return eps


def _alpha_bar(sigma: float) -> float:
    return 1 / (1 + sigma**2)  # ᾱ = 1/(1 + σ²)


def _vp(x: Tensor, sigma: float) -> Tensor:
    """x_t = x̃·√ᾱ: from the σ-space state back to the VP scale the model sees."""
    return x * _alpha_bar(sigma) ** 0.5


def denoise(model: Denoiser, x: Tensor, schedule: NoiseSchedule, sigma: float) -> Tensor:
    """Karras et al.'s denoiser D(x̃; σ) = x̃ - σ·ε̂(x̃·√ᾱ, t) from an ε-model, on the σ-space
    state x̃ = x_t/√ᾱ: their Table 1, VP column (c_skip = 1, c_out = -σ, c_in = 1/√(σ² + 1))."""
    return x - sigma * _eps(model, _vp(x, sigma), schedule, sigma)


def ddim_step(
    model: Denoiser,
    x_t: Tensor,
    schedule: NoiseSchedule,
    sigma: float,
    sigma_next: float,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM update (Song et al. 2021, arXiv:2010.02502, eq. 12) of the VP state x_t from
    noise level σ to σ_next, either way; returns (x_next, x̂0). η scales the fresh noise σ_t(η)
    of eq. 16 (0: deterministic; 1: DDPM's posterior noise); noise is only added going down."""
    _check_eta(eta)
    if eta and not sigma_next < sigma:
        raise ValueError(f"eta > 0 adds noise, which needs a step down: got σ = {sigma} → σ_next = {sigma_next}")
    ab_t, ab_s = _alpha_bar(sigma), _alpha_bar(sigma_next)
    eps = _eps(model, x_t, schedule, sigma)
    x0_hat = x0_from_eps(x_t, eps, x_t.new_tensor(ab_t))  # eq. 12, "predicted x0"
    sigma_eta = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5 if eta else 0.0  # eq. 16
    direction = max(1 - ab_s - sigma_eta**2, 0.0) ** 0.5 * eps  # eq. 12, "direction pointing to x_t"
    x_next = ab_s**0.5 * x0_hat + direction  # eq. 12
    if eta:
        x_next = x_next + sigma_eta * _noise(x_t, generator)  # eq. 12, "random noise"
    return x_next, x0_hat


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    _check_generator(generator)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        example = "torch.Generator().manual_seed(0)"
        raise TypeError(f"generator must be a torch.Generator such as {example}, got {generator!r:.40}")


def _start(x_T: Tensor, sigmas: list[float]) -> Tensor:
    """x̃_T = x_T/√ᾱ_T = x_T·√(1 + σ_0²): the σ-space state matching the noise x_T."""
    return x_T * (1 + sigmas[0] ** 2) ** 0.5


def _report(
    callback: Callback | None,
    i: int,
    schedule: NoiseSchedule,
    sigmas: tuple[float, float],
    x: Tensor,
    x0_hat: Tensor,
    x_next: Tensor,
) -> None:
    """Hand a σ-space step (σ → σ_next) to the callback, in the VP scale that ddpm reports."""
    if callback:
        sigma, sigma_next = sigmas
        callback(Step(i, timestep_at(schedule, sigma), _vp(x, sigma), x0_hat, _vp(x_next, sigma_next)))


# ----- discrete-time samplers on x_t ---------------------------------------------------------
@torch.no_grad()
def ddpm(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling: Ho et al. 2020, Algorithm 2.

    Between the visited levels t → s it uses the respaced schedule of Nichol & Dhariwal 2021
    (arXiv:2102.09672, §4): α = ᾱ_t/ᾱ_s, β = 1 - α. The added noise has the posterior
    variance β̃ (eq. 7 of Ho et al.), which is 0 on the last step, so the final sample is
    noise-free. With all T levels (`noise_levels(schedule, schedule.T)`) it is Algorithm 2 itself.

    Args:
        model:     ε-predictor, model(x_t, t) with t a float tensor of shape (B,)
        x_T:       starting noise, shape (B, …), at the level sigmas[0]
        schedule:  the schedule the model was trained with
        sigmas:    the noise levels to visit, σ_0 > … > σ_N = 0 (`noise_levels`)
        generator: random source for the noise added at each step (reproducibility)
        callback:  called with a `Step` after every step
    """
    check_finite("x_T", x_T)
    x = x_T
    for i, (sigma, sigma_next) in enumerate(pairwise(check_sigmas(sigmas))):
        ab_t, ab_s = _alpha_bar(sigma), _alpha_bar(sigma_next)  # ᾱ_s = 1 after the last step
        alpha, beta = ab_t / ab_s, 1 - ab_t / ab_s
        eps = _eps(model, x, schedule, sigma)
        x0_hat = x0_from_eps(x, eps, x.new_tensor(ab_t))
        mean = (x - beta / (1 - ab_t) ** 0.5 * eps) / alpha**0.5  # Algorithm 2, line 4
        var = beta * (1 - ab_s) / (1 - ab_t)  # β̃ = (1-ᾱ_s)/(1-ᾱ_t)·β, eq. 7
        x_next = mean + var**0.5 * _noise(x, generator)
        if callback:
            callback(Step(i, timestep_at(schedule, sigma), x, x0_hat, x_next))
        x = x_next
    return x


@torch.no_grad()
def ddim(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM: Song et al. 2021 (arXiv:2010.02502), eq. 12 with the noise σ_t(η) of eq. 16,
    one `ddim_step` from each noise level to the next.

    η = 0 adds no noise: the sampler is deterministic, a map from x_T to x0 (in x̃ = x_t/√ᾱ
    it is Euler's method on the probability-flow ODE, §4.3 — the same steps as `euler`).
    η = 1 adds DDPM's posterior noise and gives the same samples as `ddpm`.

    Args: as `ddpm`, plus
        eta: amount of fresh noise per step, in [0, 1]; `generator` is used only if eta > 0
    """
    check_finite("x_T", x_T)
    _check_eta(eta)
    x = x_T
    for i, (sigma, sigma_next) in enumerate(pairwise(check_sigmas(sigmas))):
        x_next, x0_hat = ddim_step(model, x, schedule, sigma, sigma_next, eta, generator)
        if callback:
            callback(Step(i, timestep_at(schedule, sigma), x, x0_hat, x_next))
        x = x_next
    return x


@torch.no_grad()
def ddim_invert(
    model: Denoiser,
    x0: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM inversion, x0 → x_T: DDIM's η = 0 update (the probability-flow ODE) walking the
    noise levels `sigmas` backwards, from σ = 0 up to σ_0 (Song et al. 2021, §4.3 and §5.4).

    Each step uses ε̂ at the level it starts from, so with the same `sigmas`,
    `ddim(model, ddim_invert(model, x0, schedule, sigmas), schedule, sigmas)` returns x0 up
    to an error that shrinks like 1/steps. The first step starts from clean data (σ = 0);
    the model is asked at t = 0, the least noisy level it knows.
    """
    check_finite("x0", x0)
    x = x0
    for i, (sigma, sigma_next) in enumerate(pairwise(check_sigmas(sigmas)[::-1])):
        x_next, x0_hat = ddim_step(model, x, schedule, sigma, sigma_next)
        if callback:
            callback(Step(i, timestep_at(schedule, sigma), x, x0_hat, x_next))
        x = x_next
    return x


# ----- σ-space samplers on x̃ = x_t/√ᾱ ---------------------------------------------------------
@torch.no_grad()
def euler(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler's method on the probability-flow ODE dx̃/dσ = (x̃ - D(x̃; σ))/σ: Karras et al.
    2022 (arXiv:2206.00364), Algorithm 1 without its second-order correction (lines 6–8).

    First order: halving the step size halves the error. Deterministic; `generator` is
    accepted for a common signature and not used. Args as `ddpm`.
    """
    check_finite("x_T", x_T)
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)
        d = (x - x0_hat) / sigma  # Algorithm 1, line 4: dx̃/dσ
        x_next = x + (sigma_next - sigma) * d  # line 5: Euler step from σ to σ_next
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x = x_next
    return x  # at σ = 0, x̃ = x_t = x0


@torch.no_grad()
def heun(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun's method on the probability-flow ODE: Karras et al. 2022 (arXiv:2206.00364),
    Algorithm 1. An Euler step, then a correction with the slope at its end point.

    Second order, at two model calls per step (2·steps - 1 in all: the last step, to
    σ = 0, has no slope to correct with and stays an Euler step). The trapezoid rule is
    taken in σ, so a step across orders of magnitude of σ goes badly wrong: e.g. the
    first "trailing" step of the cosine schedule, σ ≈ 20 000 → 6 with 10 steps. Use "karras" spacing
    there. Deterministic; `generator` is accepted for a common signature and not used.
    Args as `ddpm`.
    """
    check_finite("x_T", x_T)
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)
        d = (x - x0_hat) / sigma  # Algorithm 1, line 4
        x_next = x + (sigma_next - sigma) * d  # line 5: Euler step
        if sigma_next > 0:  # line 6
            d_next = (x_next - denoise(model, x_next, schedule, sigma_next)) / sigma_next  # line 7
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2  # line 8: apply 2nd order correction
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x = x_next
    return x


@torch.no_grad()
def euler_ancestral(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> Tensor:
    """Ancestral sampling written as an Euler step in σ (the form popularised by
    k-diffusion): step down to σ_down, then add fresh noise of size σ_up, where

        σ_up = η·σ_next·√(σ² - σ_next²)/σ,    σ_down = √(σ_next² - σ_up²)

    so that σ_down² + σ_up² = σ_next². With η = 1 this is DDPM's posterior q(x_s | x_t, x̂0)
    (Ho et al. 2020, eq. 7) in x̃ = x_t/√ᾱ, and the samples equal `ddpm`'s; for any η they
    equal `ddim`'s with the same η (whose σ_t(η), eq. 16, is σ_up·√ᾱ_next).

    Args: as `ddpm`, plus
        eta: fraction of the posterior noise to add, in [0, 1] (0: plain `euler`)
    """
    check_finite("x_T", x_T)
    _check_eta(eta)
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)
        sigma_up = eta * sigma_next * (sigma**2 - sigma_next**2) ** 0.5 / sigma  # fresh noise
        sigma_down = max(sigma_next**2 - sigma_up**2, 0.0) ** 0.5  # where the Euler part lands (max: rounding)
        d = (x - x0_hat) / sigma  # dx̃/dσ
        x_next = x + (sigma_down - sigma) * d + sigma_up * _noise(x, generator)  # Euler step to σ_down, then noise
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x = x_next
    return x


@torch.no_grad()
def dpmpp_2m(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M): Lu et al. 2022 (arXiv:2211.01095), Algorithm 2.

    It integrates the probability-flow ODE exactly for a denoiser that is constant over a
    step, in the log-SNR time λ = -log σ, and makes that denoiser a linear extrapolation of
    the last two predictions x̂0 ("multistep": one model call per step, second order).
    In x̃ = x_t/√ᾱ the paper's α_t is 1 and its σ_t is our σ. The first step has no
    previous prediction and the last step (to σ = 0, λ = ∞) cannot extrapolate: both are
    first order, and the last one returns D(x̃; σ_min) itself. Deterministic; `generator`
    is accepted for a common signature and not used. Args as `ddpm`.
    """
    check_finite("x_T", x_T)
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    x0_prev, h_prev = None, 0.0
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)
        h = math.log(sigma / sigma_next) if sigma_next > 0 else math.inf  # h_i = λ_{t_i} - λ_{t_{i-1}}
        D = x0_hat
        if x0_prev is not None and sigma_next > 0:
            r = h_prev / h  # r_i = h_{i-1}/h_i
            D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * x0_prev  # D_i, 2nd-order multistep estimate
        x_next = (sigma_next / sigma) * x - math.expm1(-h) * D  # x̃_{t_i} = (σ_{t_i}/σ_{t_{i-1}})·x̃ - (e^{-h_i} - 1)·D_i
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x, x0_prev, h_prev = x_next, x0_hat, h
    return x


@torch.no_grad()
def dpmpp_2m_sde(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) SDE: the exponential integrator of DPM-Solver++ (Lu et al. 2022,
    arXiv:2211.01095) applied to the reverse SDE instead of the ODE, with the "midpoint"
    second-order term that k-diffusion and diffusers use.

    In λ = -log σ and x̃ = x_t/√ᾱ (α = 1), the reverse-time processes that keep the data's
    marginals are, for η ∈ [0, 1] (η = 0: the probability-flow ODE, η = 1: the reverse SDE),

        dx̃ = -(1 + η)·(x̃ - D(x̃; σ))·dλ + √(2η)·σ·dw̄

    (the ODE's drift -(x̃ - D) plus η times Langevin dynamics, whose drift is η·σ²·∇log p = η·(D - x̃)).
    Solving its linear part exactly over a step h = λ_next - λ, with D a constant plus
    a linear extrapolation in λ from the previous prediction, gives

        x̃_next = (σ_next/σ)·e^{-ηh}·x̃ + (1 - e^{-(1+η)h})·D_i                      (first order)
                 + ½·(1 - e^{-(1+η)h})·(D_i - D_{i-1})/r,   r = h_{i-1}/h           (second order)
                 + σ_next·√(1 - e^{-2ηh})·z,   z ~ N(0, I)                          (the noise's exact variance)

    The exact weight of the slope term is (1 - (1 - e^{-(1+η)h})/((1+η)h))/r; "midpoint"
    replaces it by ½·(1 - e^{-(1+η)h})/r, equal up to O(h²), so still second order. With η = 0
    this is `dpmpp_2m` step for step; with η = 1 the first-order step is DDPM's posterior step
    (`euler_ancestral`). The first step has no previous prediction, and the last one (to
    σ = 0, λ = ∞) returns D(x̃; σ_min): both first order, as in `dpmpp_2m`.

    Args: as `ddpm`, plus
        eta: η, the share of Langevin noise, in [0, 1] (0: deterministic, the samples of `dpmpp_2m`)
    """
    check_finite("x_T", x_T)
    _check_eta(eta)
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    x0_prev, h_prev = None, 0.0
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)
        h = math.log(sigma / sigma_next) if sigma_next > 0 else math.inf  # h_i = λ_{t_i} - λ_{t_{i-1}}
        decay = math.exp(-(1 + eta) * h)  # e^{-(1+η)h} = (σ_next/σ)·e^{-ηh}; 0 on the last step
        weight = -math.expm1(-(1 + eta) * h)  # 1 - e^{-(1+η)h}
        x_next = decay * x + weight * x0_hat  # first order
        if x0_prev is not None and sigma_next > 0:
            r = h_prev / h  # r_i = h_{i-1}/h_i
            x_next = x_next + weight / (2 * r) * (x0_hat - x0_prev)  # 2nd-order "midpoint" term
        if eta and sigma_next > 0:
            x_next = x_next + sigma_next * (-math.expm1(-2 * eta * h)) ** 0.5 * _noise(x, generator)  # fresh noise
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x, x0_prev, h_prev = x_next, x0_hat, h
    return x


def _unipc_coefficients(r: list[float], h: float) -> list[float]:
    """UniPC's a_1 … a_p for the ratios r_1 … r_p over a step h in λ: the solution of
    R_p·a = g_p/B (Zhao et al. 2023, Theorem 3.1), in the data-prediction form (h → -h):

        R_p[k][m] = r_m^k,   g_p[k] = (k+1)!·(-h)·φ_{k+2}(-h),   k = 0 … p-1
        φ_1(z) = (e^z - 1)/z,   φ_{k+1}(z) = (φ_k(z) - 1/k!)/z,   B(z) = e^z - 1 ("bh2")

    With one unknown (UniP-2, UniC-1), a_1 = ½, as both reference implementations take it:
    the solve gives ½ + O(h), which is within those steps' order, and with ½ UniP-2 is
    DPM-Solver++(2M) exactly.
    """
    if len(r) < 2:
        return [0.5] * len(r)  # no unknown (first order), or one: ½
    z = -h
    phi = math.expm1(z) / z  # φ_1(z)
    g = []
    for k in range(1, len(r) + 1):
        phi = (phi - 1 / math.factorial(k)) / z  # φ_{k+1}(z)
        g.append(math.factorial(k) * z * phi / math.expm1(z))  # k!·z·φ_{k+1}(z)/B(z)
    R = torch.tensor([[r_m**k for r_m in r] for k in range(len(r))], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(g, dtype=torch.float64)).tolist()


def _unipc_update(
    x: Tensor, lambdas: list[float], x0_hats: list[Tensor], lambda_next: float, x0_next: Tensor | None = None
) -> Tensor:
    """One UniPC update from x̃ at λ_s = lambdas[-1] to λ_next, with D_0 = x0_hats[-1]:

        x̃_next = e^{-h}·x̃ - (e^{-h} - 1)·D_0 - B(-h)·Σ_m a_m·(D_m - D_0)/r_m,   r_m = (λ_m - λ_s)/h

    (Zhao et al. 2023, UniC-p with σ and α swapped and h → -h for data prediction; α = 1 in x̃).
    The D_m are the earlier predictions x0_hats[:-1] at lambdas[:-1] (UniP-p, Corollary 3.2)
    and, given x0_next, D(x̃; σ_next) at the predicted x̃_next, with r = 1 (UniC-p, Theorem 3.1).
    """
    h = lambda_next - lambdas[-1]
    points = list(zip(lambdas[:-1], x0_hats[:-1], strict=True))
    if x0_next is not None:
        points.append((lambda_next, x0_next))
    r = [(lambda_m - lambdas[-1]) / h for lambda_m, _ in points]
    x_next = math.exp(-h) * x - math.expm1(-h) * x0_hats[-1]  # DPM-Solver++'s first-order step
    for a_m, r_m, (_, x0_m) in zip(_unipc_coefficients(r, h), r, points, strict=True):
        x_next = x_next - math.expm1(-h) * a_m * (x0_m - x0_hats[-1]) / r_m  # B(-h) = e^{-h} - 1
    return x_next


@torch.no_grad()
def unipc(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    order: int = 2,
) -> Tensor:
    """UniPC-p: Zhao et al. 2023 (arXiv:2302.04867), the multistep unified predictor UniP-p
    followed by the unified corrector UniC-p, in the data-prediction form with B(h) = e^h - 1
    ("bh2", diffusers' default; `_unipc_coefficients`, `_unipc_update`).

    Like `dpmpp_2m`, it integrates the probability-flow ODE exactly for a denoiser that is a
    polynomial in λ = -log σ; α = 1 and σ is our σ in x̃ = x_t/√ᾱ. Each step:
      1. D_i = D(x̃_i; σ_i) at the predicted x̃_i: the step's only model call;
      2. UniC-p: redo the previous update with D_i as one more point, giving a corrected x̃_i
         (no extra call: D_i is not re-evaluated there);
      3. UniP-p: extrapolate D from the last p predictions to step from the corrected x̃_i to σ_{i+1}.
    UniP-p is of order p; with UniC-p the solver's order of accuracy is p + 1 (Theorem 3.1,
    Corollary 3.2). With bh2, UniP-2 is DPM-Solver++(2M): `dpmpp_2m` is this sampler without
    step 2. p is lowered where fewer predictions exist (the first steps: warm-up) and on the
    last steps, p ≤ the steps left, at any number of steps, as the reference implementation and
    diffusers' UniPC do: the last step, to σ = 0 (λ = ∞), is first order and returns
    D(x̃; σ_min) from the uncorrected x̃ (the corrected one is multiplied by e^{-∞} = 0), and
    no corrector follows it.
    The callback sees the states the model was called on (before UniC) and the last one, x0.
    Deterministic; `generator` is accepted for a common signature and not used.

    Args: as `ddpm`, plus
        order: p, 2 or 3 (its order of accuracy is p + 1; 3 is suggested for unguided sampling)
    """
    check_finite("x_T", x_T)
    if not isinstance(order, int) or order not in (2, 3):
        raise ValueError(f"order must be 2 or 3 (UniPC-2 or UniPC-3), got {order!r}")
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    lambdas, x0_hats = [], []  # λ = -log σ of the levels visited so far and D(x̃; σ) there, newest last
    x_prev, p = None, 0  # the previous step's corrected state and order
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)  # 1. the step's one model call
        lambda_i = -math.log(sigma)
        x_c = x if i == 0 else _unipc_update(x_prev, lambdas[-p:], x0_hats[-p:], lambda_i, x0_hat)  # 2. UniC-p
        lambdas.append(lambda_i)
        x0_hats.append(x0_hat)
        p = min(order, i + 1, len(sigmas) - 1 - i)  # warm-up, and lower order on the last steps
        lambda_next = -math.log(sigma_next) if sigma_next > 0 else math.inf
        x_next = _unipc_update(x_c, lambdas[-p:], x0_hats[-p:], lambda_next)  # 3. UniP-p
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x, x_prev = x_next, x_c
    return x


@torch.no_grad()
def consistency(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Multistep consistency sampling: Song et al. 2023 (arXiv:2303.01469), Algorithm 1.

    A consistency model's denoiser is the end of the ODE trajectory through x̃ itself, so one
    call jumps to clean data. With more levels, each step jumps to x̂0 = D(x̃; σ), then noises
    it afresh to the next level, x̃_next = x̂0 + σ_next·z, z ~ N(0, I), and jumps again: every
    step can correct what the last jump got wrong. With one level ([σ_0, 0]) it is one call.
    Works on any denoiser (for a diffusion model x̂0 is the blurry posterior mean, not a sample:
    this sampler is for models distilled by `minidiff.distill`). Args as `ddpm`.
    """
    check_finite("x_T", x_T)
    sigmas = check_sigmas(sigmas)
    x = _start(x_T, sigmas)
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        x0_hat = denoise(model, x, schedule, sigma)  # Algorithm 1, line 1 (and 5): the jump to x̂0
        x_next = x0_hat + sigma_next * _noise(x, generator) if sigma_next > 0 else x0_hat  # line 4: noise afresh
        _report(callback, i, schedule, (sigma, sigma_next), x, x0_hat, x_next)
        x = x_next
    return x


# ----- one entry point -------------------------------------------------------------------------
SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "unipc": unipc,
    "consistency": consistency,
}


def sample(
    model: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    sampler: str = "ddim",
    steps: int = 50,
    spacing: str = "trailing",
    **kwargs,
) -> Tensor:
    """Draw samples x0 from noise x_T with the sampler called `sampler` (a key of SAMPLERS),
    over the `steps` noise levels `noise_levels(schedule, steps, spacing)`.

    Every sampler takes `generator` and `callback`; `ddim`, `euler_ancestral` and `dpmpp_2m_sde`
    also take `eta`, `unipc` takes `order`. For example

        sample(model, torch.randn(64, 2), schedule, "dpmpp_2m", steps=20, spacing="karras")
    """
    check_choice("sampler", sampler, tuple(SAMPLERS))
    _check_generator(kwargs.get("generator"))
    return SAMPLERS[sampler](model, x_T, schedule, noise_levels(schedule, steps, spacing), **kwargs)
