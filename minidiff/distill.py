"""Consistency distillation: a student that jumps from any noise level to clean data in one call.

A trained diffusion model (the *teacher*) defines, through its probability-flow ODE, a map from
every noisy x_t to the clean x0 at the end of its trajectory. A consistency model (Song et al.
2023, arXiv:2303.01469) learns that map directly: f_θ(x_t, t) ≈ x0 for every point of a
trajectory, so one call samples, and a few calls with fresh noise in between sample better
(`minidiff.samplers.consistency`). Consistency distillation (their Algorithm 2) teaches it
from the teacher:

    n ~ Uniform{0, …, N-1},  x_{t_{n+1}} = √ᾱ·x0 + √(1-ᾱ)·ε            a point on a trajectory
    x̂_{t_n} = one teacher ODE step from t_{n+1} down to t_n              (the teacher's solver)
    L = d( f_θ(x_{t_{n+1}}, t_{n+1}),  f_θ⁻(x̂_{t_n}, t_n) )            the two ends must agree
    θ⁻ ← μ·θ⁻ + (1-μ)·θ after each step                                 the target network (EMA)

Because f_θ(x, t_0) = x exactly (the boundary condition, built into `consistency_function`),
agreement between neighbours propagates from t_0 up to every t: f_θ learns the whole ODE.

As Latent Consistency Models do (Luo et al. 2023, arXiv:2310.04378), the teacher's step uses
classifier-free guidance at a scale w: the student learns the *guided* ODE and needs no
guidance (one call, not two, per step) when it samples. The student starts from the teacher's
weights; its network keeps predicting v, read through c_skip/c_out (`consistency_function`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from minidiff.checkpoint import Checkpoint
from minidiff.files import tensors_sha256
from minidiff.forward import PREDICTIONS, check_denoiser_data, consistency_function, is_conditional
from minidiff.guidance import classifier_free_guidance
from minidiff.objective import Objective
from minidiff.samplers import timesteps
from minidiff.train import ema_update


@dataclass
class ConsistencyDistillation(Objective):
    """Consistency distillation of `teacher` (Song et al. 2023, Algorithm 2) with its guided ODE.

    teacher:      the trained diffusion model (a loaded checkpoint), frozen; the student must
                  have its architecture (start it from the teacher's weights)
    name:         what to call the teacher in the run's records (its shipped name)
    guidance:     classifier-free guidance scale w of the teacher's ODE (1: unguided)
    intervals:    N: the boundaries are t_0 = 0 and the N timesteps a "trailing" N-step sampler visits
                  (t_N = T-1). The student is trained at these timesteps only; a k-step `consistency`
                  sampler with trailing spacing visits only them when k divides N (in between, the
                  student relies on how its time embedding interpolates: measure before trusting it)
    target_decay: μ of the target network θ⁻ (0.95 in Song et al. and Luo et al.)
    """

    teacher: Checkpoint
    name: str
    guidance: float = 1.0
    intervals: int = 20
    target_decay: float = 0.95
    target: nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.teacher.prediction not in PREDICTIONS:
            got = self.teacher.prediction
            raise ValueError(f"teacher must be a diffusion model (prediction eps, x0 or v), got {got!r}")
        T = self.teacher.schedule.T
        if not isinstance(self.intervals, int) or not 1 <= self.intervals < T:
            raise ValueError(f"intervals must be an integer in [1, {T - 1}], got {self.intervals!r}")
        if not 0 <= self.target_decay < 1:
            raise ValueError(f"target_decay must be in [0, 1), got {self.target_decay!r}")
        if not math.isfinite(self.guidance):
            raise ValueError(f"guidance must be a finite number, got {self.guidance!r}")
        self.teacher.model.requires_grad_(False).eval()
        self.boundaries = torch.tensor([0, *timesteps(T, self.intervals, "trailing")[::-1]])  # t_0 = 0 < t_1 < … < t_N

    # ----- the loss -------------------------------------------------------------------------
    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], generator: torch.Generator) -> Tensor:
        x0, *y = batch
        condition = {"y": y[0]} if y else {}
        schedule = self.teacher.schedule
        n = torch.randint(0, self.intervals, (len(x0),), generator=generator, device=x0.device)  # (B,)
        t_next = self.boundaries.to(x0.device)[n + 1]  # t_{n+1}
        t_n = self.boundaries.to(x0.device)[n]
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_next = schedule.q_sample(x0, t_next, eps)  # a point of the data's noised marginal at t_{n+1}
        with torch.no_grad():
            x_n = self.teacher_step(x_next, t_next.to(x0.dtype), t_n.to(x0.dtype), *y)  # x̂_{t_n}
            target = consistency_function(self.target, schedule)(x_n, t_n.to(x0.dtype), **condition)
        f = consistency_function(model, schedule)(x_next, t_next.to(x0.dtype), **condition)
        return pseudo_huber(f - target).mean()

    def teacher_step(self, x_s: Tensor, s: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """One second-order step of the teacher's (guided) probability-flow ODE from timesteps s
        down to t, per sample (s, t: (B,)), on the VP state x_s; returns x_t.

        In x̃ = x/√ᾱ and λ = -log σ the ODE is dx̃/dλ = D(x̃; σ) - x̃, whose exact solution over a
        step h = λ_t - λ_s is x̃_t = e^{-h}·x̃_s + ∫ e^{-(λ_t - λ)} D dλ (Lu et al. 2022,
        arXiv:2211.01095, eq. 9). With D taken linear between its values D_s at the start and D_t
        at an Euler guess of the end (Heun's idea, in the exponential integrator):

            x̃_t = e^{-h}·x̃_s + φ1·D_s + φ2·(D_t - D_s),   φ1 = 1 - e^{-h},  φ2 = 1 - φ1/h
        """
        schedule = self.teacher.schedule
        shape = (-1, *([1] * (x_s.ndim - 1)))
        sigma_s = schedule.sigma_at(s).to(x_s).reshape(shape)  # (B, 1, …)
        sigma_t = schedule.sigma_at(t).to(x_s).reshape(shape)
        D = self._guided_denoiser(y)
        x = x_s * (1 + sigma_s**2).sqrt()  # x̃_s
        h = (sigma_s / sigma_t).log()
        phi1 = -torch.expm1(-h)
        D_s = D(x, s, sigma_s)
        x_guess = (-h).exp() * x + phi1 * D_s  # the first-order (DDIM) step
        D_t = D(x_guess, t, sigma_t)
        x = (-h).exp() * x + phi1 * D_s + (1 - phi1 / h) * (D_t - D_s)
        return x / (1 + sigma_t**2).sqrt()  # back to the VP scale

    def _guided_denoiser(self, y: Tensor | None):
        """D(x̃; σ) = x̃ - σ·ε̂ with ε̂ the teacher's, guided at scale w when there is a condition."""
        eps_model = self.teacher.eps_model
        if y is not None:
            eps_model = classifier_free_guidance(eps_model, y, self.teacher.model.null_condition(y), self.guidance)

        def D(x: Tensor, t: Tensor, sigma: Tensor) -> Tensor:
            return x - sigma * eps_model(x / (1 + sigma**2).sqrt(), t)

        return D

    # ----- the target network and the engine's hooks ----------------------------------------------
    def check(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        check_denoiser_data(model, data)
        teacher = self.teacher.model
        if type(model) is not type(teacher) or model.config != teacher.config:
            raise ValueError(f"the student must have the teacher's architecture ({type(teacher).__name__} "
                             f"{teacher.config}), got {type(model).__name__} {getattr(model, 'config', None)}")
        if is_conditional(teacher) and len(data) != 2:
            raise ValueError("the teacher is conditional: data must be (x0, y), the condition guidance steers towards")
        p = next(model.parameters())
        self.teacher.model.to(p.device)
        self.target = copy.deepcopy(model).requires_grad_(False).eval()  # θ⁻ ← θ

    def after_step(self, model: nn.Module) -> None:
        ema_update(self.target, model, self.target_decay)  # θ⁻ ← μ·θ⁻ + (1-μ)·θ

    def state(self) -> dict[str, Tensor]:
        return dict(self.target.state_dict())

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.target.load_state_dict(state)

    def describe(self) -> dict[str, Any]:
        teacher_sha256 = tensors_sha256(self.teacher.model.state_dict())[:16]
        return {"objective": "consistency_distillation", "teacher": self.name, "teacher_sha256": teacher_sha256,
                "guidance": self.guidance, "intervals": self.intervals, "target_decay": self.target_decay}

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"schedule": self.teacher.schedule, "prediction": "consistency", "vae": self.teacher.vae}


def pseudo_huber(delta: Tensor) -> Tensor:
    """The pseudo-Huber distance per sample (Song & Dhariwal 2023, arXiv:2310.14189, §3.3):
    √(‖δ‖² + c²) - c with c = 0.00054·√d over d = δ's numbers per sample: like ‖δ‖ for large
    errors, like ‖δ‖²/2c for small ones, so a few outlying samples do not dominate the gradient."""
    d = delta[0].numel()
    c = 0.00054 * math.sqrt(d)
    return (delta.flatten(1).pow(2).sum(1) + c**2).sqrt() - c  # (B,)
