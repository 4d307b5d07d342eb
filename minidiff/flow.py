"""Flow matching on the straight path (rectified flow): the objective, the solvers, and the
bridge to diffusion.

Flow matching (Lipman et al. 2023, arXiv:2210.02747) and rectified flow (Liu et al. 2022,
arXiv:2209.03003) train a network to predict the *velocity* of a path that carries data to
noise; Stable Diffusion 3 (Esser et al. 2024, arXiv:2403.03206) and Flux generate this way.
minidiff uses SD3's convention, t = 0 data and t = 1 noise:

    x_t = (1 - t)·x0 + t·ε,        t ∈ [0, 1], ε ~ N(0, I)       (Esser et al. 2024, §3, rectified flow)
    v   = dx_t/dt = ε - x0                                        the velocity: the same at every t
    L   = E ‖ v_θ(x_t, t) - (ε - x0) ‖²                           (conditional flow matching, Lipman eq. 9)

Sampling integrates dx/dt = v_θ(x, t) from t = 1 (pure noise) down to t = 0 (data): `sample`,
with the solvers `euler`, `heun` and `midpoint` over a grid of times (`time_grid`).

Notation:

    x0      data;  eps  ε, the noise;  t  the time, (B,) floats in [0, 1]
    x_t     a point on the path;  v  the velocity ε - x0
    v_model v_model(x_t, t) → v̂, a network (or the exact field of a Gaussian mixture,
            `minidiff.data.GaussianMixture.velocity_model`); a condition is passed as a keyword
    x0_hat  x̂0 = x_t - t·v̂, the data the current velocity points back to;  ε̂ = x_t + (1-t)·v̂

Two coordinates of one idea. Dividing x_t by s_t = √((1-t)² + t²) gives √ᾱ·x0 + √(1-ᾱ)·ε with
ᾱ = (1-t)²/s_t²: a point of the variance-preserving diffusion at that ᾱ, whose noise level is
σ = √((1-ᾱ)/ᾱ) = t/(1-t). So a velocity model is an ε-predictor on any diffusion schedule
(`eps_model_from_velocity`: DDIM or DPM-Solver++ can sample a flow model) and an ε-predictor is
a velocity model (`velocity_model_from_eps`: a diffusion model can follow the straight path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from minidiff._checks import check_choice, check_finite
from minidiff.forward import Denoiser, check_denoiser_data, with_condition_dropout
from minidiff.objective import Objective
from minidiff.schedules import NoiseSchedule
from minidiff.trajectory import Callback, Step

VelocityModel = Callable[..., Tensor]  # v_model(x_t, t, **condition) -> v̂, same shape as x_t
TIME_SAMPLING = ("uniform", "logit_normal")  # how training draws t, see `sample_t`
COUPLINGS = ("independent", "ot", "reflow")  # which noise a training x0 is paired with (`FlowObjective`)
TIME_SCALE = 1000.0  # a flow network's time input is 1000·t (`as_velocity_model`)
BRIDGE_SCHEDULE = ("cosine", 1000)  # the schedule a flow model's checkpoint records, for the diffusion samplers


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """t (B,) reshaped to broadcast over like (B, …), in like's dtype and device."""
    return t.to(like).reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t)·x0 + t·ε, the straight path (t of shape (B,))."""
    t = _per_sample(t, x0)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """v = dx_t/dt = ε - x0: what a flow model learns to predict."""
    return eps - x0


def x0_from_velocity(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """x̂0 = x_t - t·v̂   (x_t = x0 + t·v)."""
    return x_t - _per_sample(t, x_t) * v


def eps_from_velocity(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """ε̂ = x_t + (1 - t)·v̂   (x_t = ε - (1 - t)·v)."""
    return x_t + (1 - _per_sample(t, x_t)) * v


def velocity_from_eps(x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """v̂ = (ε̂ - x_t)/(1 - t), the inverse of `eps_from_velocity`; it divides by 1 - t, so near
    t = 1 (pure noise) a small error in ε̂ is a large one in v̂, as for ε-prediction in diffusion."""
    return (eps - x_t) / (1 - _per_sample(t, x_t))


def sample_t(
    n: int, how: str = "uniform", generator: torch.Generator | None = None, device: torch.device | str | None = None,
    m: float = 0.0, s: float = 1.0, shift: float = 1.0,
) -> Tensor:
    """n training times (n,) float32 in [0, 1].

    "uniform":      t ~ U(0, 1)
    "logit_normal": t = sigmoid(u), u ~ N(m, s²): more training at the middle of the path, where
                    the velocity is hardest to predict (Esser et al. 2024, §3.1, eq. 19; their best,
                    m = 0 and s = 1)
    shift:          then t ← shift_t(t, shift), SD3's shift towards noise for larger images
    """
    check_choice("time sampling", how, TIME_SAMPLING)
    if how == "uniform":
        t = torch.rand(n, generator=generator, device=device)
    else:
        t = torch.sigmoid(m + s * torch.randn(n, generator=generator, device=device))
    return shift_t(t, shift)


def shift_t(t: Tensor, shift: float) -> Tensor:
    """t' = shift·t / (1 + (shift - 1)·t)   (Esser et al. 2024, §5.3.2, eq. 23 with √(m/n) = shift).

    Maps [0, 1] onto itself, keeping both ends; shift > 1 moves times towards the noise end. A
    larger image keeps more of its signal at the same t (neighbouring pixels average the noise
    away), so SD3 shifts by √(pixels / 256²): it spends more time where the image still has to form.
    """
    _check_shift(shift)
    return shift * t / (1 + (shift - 1) * t)


def _check_shift(shift: float) -> None:
    if not shift > 0:
        raise ValueError(f"shift must be a positive number, got {shift!r}")


def flow_loss(
    v_model: Denoiser, x0: Tensor, generator: torch.Generator | None = None, timesteps: str = "uniform",
    shift: float = 1.0, eps: Tensor | None = None, coupling: str = "independent",
) -> Tensor:
    """The conditional flow-matching loss on the straight path:

    t ~ `sample_t`,  ε ~ N(0, I),  x_t = (1 - t)·x0 + t·ε,  L = mean ‖ v_model(x_t, t) - (ε - x0) ‖².

    eps: the noise paired with each x0 (reflow's pairs, `reflow_data`); None draws it, independent
    of x0 (coupling "independent") or re-paired across the batch by optimal transport ("ot", `ot_pair`).
    """
    check_finite("x0", x0)
    check_choice("coupling", coupling, ("independent", "ot"))
    t = sample_t(x0.shape[0], timesteps, generator, x0.device, shift=shift)  # (B,)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if coupling == "ot":
            eps = ot_pair(x0, eps)
    return (v_model(interpolate(x0, eps, t), t) - velocity_target(x0, eps)).pow(2).mean()


def ot_pair(x0: Tensor, eps: Tensor) -> Tensor:
    """The noise ε reordered so that the batch's total squared distance Σᵢ ‖x0ᵢ - ε_π(i)‖² is least:
    minibatch optimal-transport coupling (Tong et al. 2023, arXiv:2302.00482; Pooladian et al.
    2023). Each ε is still a N(0, I) sample, but the lines now join nearby ends, so fewer of
    them cross and the learned paths bend less. The assignment is exact (scipy's
    `linear_sum_assignment`, a Jonker–Volgenant solver), O(B³) on the CPU."""
    cost = torch.cdist(x0.flatten(1).double(), eps.flatten(1).double()).pow(2)  # (B, B) ‖x0ᵢ - εⱼ‖²
    _, j = linear_sum_assignment(cost.cpu().numpy())  # row i is paired with column j[i]
    return eps[torch.as_tensor(j, device=eps.device)]


def as_velocity_model(network: Denoiser) -> VelocityModel:
    """A network with a timestep input seen as v_model(x_t, t), t in [0, 1]: it is given
    TIME_SCALE·t. minidiff's networks embed their time input with sinusoids made for diffusion's
    timesteps 0 … 999; scaled by 1000, the path's times use the same range (as SD3 does). A
    condition is passed on as a keyword."""
    return lambda x_t, t, **condition: network(x_t, t * TIME_SCALE, **condition)


@dataclass
class FlowObjective(Objective):
    """Flow matching as a training objective for the engine (`minidiff.train.train`): `flow_loss`,
    and for a conditional model (data (x0, y)) the condition dropped with probability p_uncond,
    so that classifier-free guidance can wrap the velocity model as it wraps an ε-model.

    The network learns v through `as_velocity_model`: it is called as network(x_t, 1000·t) with t
    the path's time in [0, 1]. Checkpoints record it as a denoiser whose prediction is "flow", with
    BRIDGE_SCHEDULE, the schedule on which the diffusion samplers drive it (`eps_model_from_velocity`).
    """

    p_uncond: float = 0.0
    timesteps: str = "uniform"  # "uniform" or "logit_normal" (`sample_t`)
    shift: float = 1.0  # `shift_t` of the training times
    coupling: str = "independent"  # which noise goes with which x0: "independent", "ot" or "reflow" (COUPLINGS)

    def __post_init__(self) -> None:
        check_choice("timesteps", self.timesteps, TIME_SAMPLING)
        check_choice("coupling", self.coupling, COUPLINGS)
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")
        _check_shift(self.shift)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], generator: torch.Generator) -> Tensor:
        x0, *y = batch
        eps = y.pop(0) if self.coupling == "reflow" else None  # reflow's data is (x0, ε[, y])
        network = with_condition_dropout(model, y[0], self.p_uncond, generator) if y else model
        coupling = "independent" if eps is not None else self.coupling
        return flow_loss(as_velocity_model(network), x0, generator, self.timesteps, self.shift, eps, coupling)

    def describe(self) -> dict[str, Any]:
        return {"objective": "flow", "path": "straight", "p_uncond": self.p_uncond, "timesteps": self.timesteps,
                "shift": self.shift, "coupling": self.coupling, "time_scale": TIME_SCALE}

    def check(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        if self.coupling == "reflow":
            if len(data) < 2 or not torch.is_tensor(data[1]) or data[1].shape != data[0].shape:
                raise ValueError(
                    "reflow trains on pairs: data must be (x0, x1[, y]) with the noise x1 of x0's shape "
                    f"(`flow.reflow_data`), got {len(data)} tensor(s)"
                )
            check_finite("x1", data[1])
            data = (data[0], *data[2:])
        check_denoiser_data(model, data)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"schedule": NoiseSchedule.from_name(*BRIDGE_SCHEDULE), "prediction": "flow"}


# ----- sampling: integrate dx/dt = v(x, t) from t = 1 to t = 0 ----------------------------------
def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """steps + 1 decreasing times from 1 to 0, evenly spaced, then `shift_t`-ed (SD3 samples with the
    shift it trained with)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return shift_t(torch.linspace(1, 0, steps + 1, dtype=torch.float64), shift).tolist()


def _check_times(ts: Sequence[float]) -> list[float]:
    ts = [float(t) for t in ts]
    if len(ts) < 2 or any(not 0 <= t <= 1 for t in ts) or any(a <= b for a, b in pairwise(ts)):
        raise ValueError(f"times must be at least two strictly decreasing values in [0, 1], got {ts}")
    return ts


def _v(v_model: VelocityModel, x: Tensor, t: float, condition: dict[str, Tensor]) -> Tensor:
    """v̂ at one time for the whole batch; a non-finite output is named at once."""
    v = v_model(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device), **condition)
    if not torch.isfinite(v).all():
        raise FloatingPointError(f"the velocity model returned NaN or inf at t = {t:.4g}")
    return v


def _report(callback: Callback | None, i: int, t: float, x: Tensor, v: Tensor, x_next: Tensor) -> None:
    if callback:
        callback(Step(i, t, x, x - t * v, x_next))  # x̂0 = x_t - t·v̂


@torch.no_grad()
def euler(v_model: VelocityModel, x1: Tensor, ts: Sequence[float], *, callback: Callback | None = None,
          **condition: Tensor) -> Tensor:
    """Euler's method: x_{t'} = x_t + (t' - t)·v̂(x_t, t). First order: the error halves with the
    step. One model call per step; with a perfectly straight path one step is exact."""
    check_finite("x1", x1)
    x = x1
    for i, (t, t_next) in enumerate(pairwise(_check_times(ts))):
        v = _v(v_model, x, t, condition)
        x_next = x + (t_next - t) * v  # Euler step from t to t'
        _report(callback, i, t, x, v, x_next)
        x = x_next
    return x


@torch.no_grad()
def heun(v_model: VelocityModel, x1: Tensor, ts: Sequence[float], *, callback: Callback | None = None,
         **condition: Tensor) -> Tensor:
    """Heun's method (the explicit trapezoidal rule): an Euler step predicts x_{t'}, then the
    average of the velocities at both ends makes the step. Second order, two calls per step; the
    last step, into t = 0, stays an Euler step (as in Karras et al. 2022, Algorithm 1): a network
    trained on logit-normal times has hardly ever seen t = 0, and its velocity there cannot be trusted."""
    check_finite("x1", x1)
    x = x1
    for i, (t, t_next) in enumerate(pairwise(_check_times(ts))):
        h = t_next - t
        v = _v(v_model, x, t, condition)
        x_next = x + h * v  # predictor: Euler
        if t_next > 0:
            v_next = _v(v_model, x_next, t_next, condition)
            x_next = x + h * (v + v_next) / 2  # corrector: the trapezoid
        _report(callback, i, t, x, v, x_next)
        x = x_next
    return x


@torch.no_grad()
def midpoint(v_model: VelocityModel, x1: Tensor, ts: Sequence[float], *, callback: Callback | None = None,
             **condition: Tensor) -> Tensor:
    """The explicit midpoint method: half an Euler step, then the whole step with the velocity
    found at the midpoint. Second order, two calls per step."""
    check_finite("x1", x1)
    x = x1
    for i, (t, t_next) in enumerate(pairwise(_check_times(ts))):
        h = t_next - t
        v = _v(v_model, x, t, condition)
        v_mid = _v(v_model, x + h / 2 * v, t + h / 2, condition)  # the velocity half-way
        x_next = x + h * v_mid
        _report(callback, i, t, x, v, x_next)
        x = x_next
    return x


SOLVERS: dict[str, Callable[..., Tensor]] = {"euler": euler, "heun": heun, "midpoint": midpoint}


def sample(v_model: VelocityModel, x1: Tensor, steps: int, solver: str = "euler", *, shift: float = 1.0,
           callback: Callback | None = None, **condition: Tensor) -> Tensor:
    """Samples x0 from noise x1 ~ N(0, I): `solver` ("euler", "heun" or "midpoint") over
    `time_grid(steps, shift)`. Midpoint calls the model twice per step, Heun twice but once in the last. A condition
    (e.g. y=labels) is passed on to v_model; guidance wraps v_model as it wraps an ε-model."""
    check_choice("solver", solver, tuple(SOLVERS))
    return SOLVERS[solver](v_model, x1, time_grid(steps, shift), callback=callback, **condition)


# ----- straighter paths: reflow ------------------------------------------------------------------
@torch.no_grad()
def reflow_data(v_model: VelocityModel, x1: Tensor, steps: int = 50, solver: str = "heun",
                **condition: Tensor) -> tuple[Tensor, ...]:
    """Training data for reflow (Liu et al. 2022): each noise x1 paired with the sample x̂0 the
    model's ODE carries it to, (x̂0, x1[, y]) for `FlowObjective(coupling="reflow")`. Lines between
    such pairs cannot cross where the ODE's paths did not, so a model trained on them (the
    "2-rectified flow") has straighter paths, which fewer Euler steps follow well."""
    x0_hat = sample(v_model, x1, steps, solver, **condition)
    return (x0_hat, x1, *condition.values())


@torch.no_grad()
def straightness(v_model: VelocityModel, x1: Tensor, steps: int = 100, **condition: Tensor) -> float:
    """How much the model's paths bend: S = ∫₀¹ E ‖(x1 - x0) - v̂(x_t, t)‖² dt along its own ODE from
    x1 (the straightness of Liu et al. 2022, here per coordinate: the mean over elements), by Euler's
    method with `steps` steps. S = 0 exactly when every path is a straight line walked at constant
    speed, the case in which one Euler step is exact."""
    vs: list[Tensor] = []
    x0 = euler(v_model, x1, time_grid(steps), callback=lambda s: vs.append((s.x_t - s.x0_hat) / s.t), **condition)
    return torch.stack([((x1 - x0) - v).pow(2).mean() for v in vs]).mean().item()  # v̂ = (x_t - x̂0)/t


# ----- the bridge between the two coordinates ----------------------------------------------------
def eps_model_from_velocity(v_model: VelocityModel, schedule: NoiseSchedule) -> Denoiser:
    """A velocity model seen as an ε-predictor on a diffusion schedule, for the diffusion samplers.

    At diffusion timestep τ (ᾱ = ᾱ(τ)) the VP point x_τ = √ᾱ·x0 + √(1-ᾱ)·ε is the path's point at
    t = √(1-ᾱ)/(√ᾱ + √(1-ᾱ)), divided by s_t = 1/(√ᾱ + √(1-ᾱ)) (module docstring); so
    ε̂ = x_t + (1 - t)·v̂(x_t, t) with x_t = s_t·x_τ.
    """

    def eps_model(x_vp: Tensor, tau: Tensor, **condition: Tensor) -> Tensor:
        alpha_bar = schedule.alpha_bar_at(tau.to(torch.float64))  # (B,)
        a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        t = (b / (a + b)).to(x_vp.dtype)  # the path's time at this noise level
        x_t = x_vp / _per_sample(a + b, x_vp)  # s_t·x_τ
        return eps_from_velocity(x_t, v_model(x_t, t, **condition), t)

    return eps_model


def velocity_model_from_eps(eps_model: Denoiser, schedule: NoiseSchedule) -> VelocityModel:
    """An ε-predictor on a diffusion schedule seen as a velocity model on the straight path.

    The path's point at time t is the VP point at σ = t/(1 - t) scaled by s_t = √((1-t)² + t²);
    the model is asked at the fractional timestep with that σ (`NoiseSchedule.t_at_sigma`), and
    v̂ = (ε̂ - x_t)/(1 - t) (`velocity_from_eps`). Defined for t < 1 and within the schedule's
    range of σ (a solver's first time should be at most σ_max/(1 + σ_max)).
    """

    def v_model(x_t: Tensor, t: Tensor, **condition: Tensor) -> Tensor:
        t64 = t.to(torch.float64)
        s = ((1 - t64) ** 2 + t64**2).sqrt()
        tau = schedule.t_at_sigma(t64 / (1 - t64))  # the diffusion timestep at this noise level
        eps = eps_model(x_t / _per_sample(s, x_t), tau, **condition)
        return velocity_from_eps(x_t, eps, t)

    return v_model
