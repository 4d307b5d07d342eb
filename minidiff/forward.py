"""The forward process in training: noisy inputs, what the network predicts, and the loss.

A network can be trained to predict one of three targets from x_t; each determines the
others because x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε:

    "eps"  ε, the noise that was added            (Ho et al. 2020, eq. 14)
    "x0"   the clean data x0
    "v"    v = √ᾱ_t·ε - √(1-ᾱ_t)·x0               (Salimans & Ho 2022, arXiv:2202.00512, §4)

Samplers only ever ask for ε; `as_eps_model` turns an x0- or v-predicting network into
an ε-predictor, so no sampler needs a prediction-type flag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_choice, check_finite
from minidiff.objective import Objective
from minidiff.schedules import NoiseSchedule

PREDICTIONS = ("eps", "x0", "v")  # what a network can be trained to predict (`training_target`)
OUTPUTS = (*PREDICTIONS, "consistency")  # what `as_eps_model` turns into ε

Denoiser = Callable[[Tensor, Tensor], Tensor]  # model(x_t, t) -> prediction, same shape as x_t


@runtime_checkable
class Conditional(Protocol):
    """A network model(x_t, t, y) that can take a condition y (class labels, token ids…).

    `conditional` says whether this instance does (a `UNet` without a label embedding has the
    methods but takes no y); `null_condition(y)` is the condition ∅ meaning "nothing"."""

    conditional: bool

    def check_condition(self, y: Tensor, batch: int | None = None) -> None: ...

    def null_condition(self, y: Tensor) -> Tensor: ...


def is_conditional(model: object) -> bool:
    """Whether `model` takes a condition y: it is `Conditional` and this instance uses it."""
    return isinstance(model, Conditional) and model.conditional


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """x̂0 = (x_t - √(1-ᾱ)·ε) / √ᾱ   (eq. 4 solved for x0); alpha_bar broadcasts over x_t."""
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor) -> Tensor:
    """ε̂ = (x_t - √ᾱ·x0) / √(1-ᾱ)   (eq. 4 solved for ε)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """ε̂ = √(1-ᾱ)·x_t + √ᾱ·v   (substitute x_t into the definition of v)."""
    return (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * v


def training_target(prediction: str, x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """What a network trained with `prediction` ("eps", "x0" or "v") should output."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0  # v


def as_eps_model(model: Denoiser, schedule: NoiseSchedule, prediction: str = "eps") -> Denoiser:
    """Wrap a network that predicts `prediction` so that it predicts ε instead.

    `prediction` is "eps", "x0", "v", or "consistency": a v-network inside the consistency
    function f_θ of `consistency_function`, whose ε is the one that makes x̂0 = f_θ.
    Works with integer or fractional timesteps t of shape (B,). Keyword arguments (a
    condition such as `y=labels`) are passed through to the network.
    """
    check_choice("prediction", prediction, OUTPUTS)
    if prediction == "eps":
        return model
    if prediction == "consistency":
        return as_eps_model(consistency_function(model, schedule), schedule, "x0")

    def eps_model(x_t: Tensor, t: Tensor, **condition: Tensor) -> Tensor:
        alpha_bar = schedule.alpha_bar_at(t).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        out = model(x_t, t, **condition)
        return eps_from_x0(x_t, out, alpha_bar) if prediction == "x0" else eps_from_v(x_t, out, alpha_bar)

    return eps_model


# ----- the consistency function (Song et al. 2023) -------------------------------------------------
SIGMA_DATA = 0.5  # σ_data, the data's standard deviation assumed by c_skip and c_out (Karras et al. 2022)
CM_TIME_SCALE = 10.0  # s: c_skip and c_out are taken at u = s·t, t the timestep, as Latent Consistency Models do


def consistency_coefficients(t: Tensor) -> tuple[Tensor, Tensor]:
    """c_skip and c_out of a consistency model at timesteps t (Song et al. 2023, arXiv:2303.01469,
    Appendix C), in the form Luo et al. 2023 (arXiv:2310.04378) use for a network read as x̂0:

        c_skip = σ_d² / (u² + σ_d²),    c_out = u / √(u² + σ_d²),    u = s·t

    with σ_d = SIGMA_DATA and s = CM_TIME_SCALE. At the boundary t = 0, c_skip = 1 and c_out = 0
    exactly, so f(x̃, 0) = x̃ whatever the network. Already at t = 1, c_out > 0.998: the hand-over
    from x̃ to the network happens between the boundary and the first timestep, so f is the
    network's x̂0 wherever the model is trained or sampled. (Song et al. take u = σ - σ_min; on
    this course's schedules that spreads the hand-over over t < ~200, where c_skip + c_out rises
    to about 1.2: an over-bright f near the boundary, which distillation would copy upwards.)"""
    u = CM_TIME_SCALE * t
    return SIGMA_DATA**2 / (u**2 + SIGMA_DATA**2), u / (u**2 + SIGMA_DATA**2).sqrt()


def consistency_function(model: Denoiser, schedule: NoiseSchedule) -> Denoiser:
    """The consistency function f_θ(x_t, t) of a v-predicting network: a clean-data estimate,

        f_θ = c_skip(t)·x̃ + c_out(t)·x̂0(v̂),    x̃ = x_t/√ᾱ_t,  x̂0 = √ᾱ·x_t - √(1-ᾱ)·v̂

    (`consistency_coefficients`; t = 0, the schedule's first timestep, is the boundary). A
    student initialised from a v-teacher starts as f_θ = the teacher's x̂0. Keyword arguments
    (a condition) go to the network."""

    def f(x_t: Tensor, t: Tensor, **condition: Tensor) -> Tensor:
        shape = (-1, *([1] * (x_t.ndim - 1)))
        c_skip, c_out = (c.to(x_t).reshape(shape) for c in consistency_coefficients(t.to(torch.float64)))
        alpha_bar = schedule.alpha_bar_at(t).to(x_t).reshape(shape)  # (B, 1, …)
        x0_hat = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * model(x_t, t, **condition)  # from v
        return c_skip * x_t / alpha_bar.sqrt() + c_out * x0_hat

    return f


WEIGHTINGS = ("uniform", "min_snr")  # how the loss weighs the timesteps (see `loss_weight`)
TIMESTEP_SAMPLING = ("uniform", "log_normal")  # how training draws t (see `sample_timesteps`)


def sample_timesteps(
    schedule: NoiseSchedule, n: int, how: str = "uniform", generator: torch.Generator | None = None,
    device: torch.device | str | None = None, p_mean: float = -1.2, p_std: float = 1.2,
) -> Tensor:
    """n training timesteps (n,) int64.

    "uniform":    t ~ Uniform{0, …, T-1}  (Ho et al. 2020, Algorithm 1)
    "log_normal": ln σ ~ N(p_mean, p_std²) and t the timestep whose σ_t is nearest (Karras et al.
                  2022, §5 and Table 1: P_mean = -1.2, P_std = 1.2): training time goes to the middle
                  noise levels, where the loss can still fall, not to the ends, where it cannot.
    """
    check_choice("timestep sampling", how, TIMESTEP_SAMPLING)
    if how == "uniform":
        return torch.randint(0, schedule.T, (n,), generator=generator, device=device)
    log_sigma = p_mean + p_std * torch.randn(n, generator=generator, device=device, dtype=torch.float64)
    return schedule.t_at_sigma(log_sigma.exp()).round().long()


def loss_weight(weighting: str, snr: Tensor, prediction: str, gamma: float = 5.0) -> Tensor:
    """The weight of each sample's MSE on its prediction target, from SNR_t = ᾱ_t/(1-ᾱ_t).

    "uniform": 1, the simple loss of Ho et al. 2020.
    "min_snr": Min-SNR-γ (Hang et al. 2023, eq. 9): weigh the x0-error by min(SNR_t, γ), so
               that the nearly clean timesteps (huge SNR) stop dominating. The error on ε is
               the x0-error times 1/SNR, on v times 1/(SNR + 1), so the weight on the
               prediction's MSE is min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v,
               min(SNR, γ) for x0; γ = 5 is the paper's choice.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    if weighting == "uniform":
        return torch.ones_like(snr)
    clipped = snr.clamp(max=gamma)
    return {"eps": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[prediction]


def diffusion_loss(
    model: Denoiser,
    x0: Tensor,
    schedule: NoiseSchedule,
    prediction: str = "eps",
    generator: torch.Generator | None = None,
    weighting: str = "uniform",
    timesteps: str = "uniform",
) -> Tensor:
    """The DDPM training loss (Ho et al. 2020, Algorithm 1 / eq. 14), optionally reweighted:

    t ~ Uniform{0, …, T-1} (or `sample_timesteps`),  ε ~ N(0, I),  x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε
    L = mean over samples of w_t·‖ target - model(x_t, t) ‖²   with target ε, x0 or v
    (see `training_target`) and w_t = 1 or `loss_weight`'s Min-SNR weight.
    """
    check_finite("x0", x0)
    t = sample_timesteps(schedule, x0.shape[0], timesteps, generator, x0.device)  # (B,)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, eps)
    target = training_target(prediction, x0, eps, schedule.at(schedule.alpha_bar, t, x0))
    if weighting == "uniform" and timesteps == "uniform":
        return F.mse_loss(model(x_t, t), target)
    w = loss_weight(weighting, schedule.snr.to(x0.device)[t], prediction).to(x0.dtype)  # (B,)
    per_sample = (model(x_t, t) - target).pow(2).flatten(1).mean(1)  # (B,)
    return (w * per_sample).mean()


def with_condition_dropout(
    model: Conditional, y: Tensor, p_uncond: float, generator: torch.Generator | None = None, **kwargs: Tensor
) -> Denoiser:
    """The denoiser (x_t, t) ↦ model(x_t, t, y, **kwargs), each sample's condition replaced by the
    null condition ∅ with probability p_uncond (Ho & Salimans 2022, Algorithm 1), so that one
    network learns both predictions classifier-free guidance needs. (kwargs: e.g. a ControlNet's
    control images, never dropped.)"""
    if p_uncond > 0:
        drop = torch.rand(len(y), generator=generator, device=y.device) < p_uncond  # (B,)
        drop = drop.reshape(-1, *([1] * (y.ndim - 1)))  # (B, 1, …) against y's (B, …)
        y = torch.where(drop, model.null_condition(y), y)
    return lambda x_t, t: model(x_t, t, y, **kwargs)


def is_controlled(model: object) -> bool:
    """Whether `model` takes a control image (a `minidiff.nn.controlnet.ControlledUNet`)."""
    return callable(getattr(model, "check_control", None))


def check_denoiser_data(model: nn.Module, data: tuple[Tensor, ...], control: bool = False) -> None:
    """A denoiser's training data is (x0,) or (x0, y), y one valid condition per sample of a
    conditional model; with `control` (an objective that can train a controlled model), a controlled
    model's ends with its control images: (x0, control) or (x0, y, control). Raise ValueError naming
    what is wrong."""
    x0, *rest = data
    if is_controlled(model):
        if not control:
            raise ValueError(f"this objective cannot train a controlled model ({type(model).__name__}); the "
                             "diffusion objective can")
        if not rest:
            raise ValueError("a controlled model trains on (x0, control) or (x0, y, control): no control images given")
        model.check_control(rest.pop(), x0)  # one control image per sample
    if len(rest) > 1:
        raise ValueError(f"data must be (x0,) or (x0, y), got {len(data)} tensors")
    if rest:
        if not is_conditional(model):
            raise ValueError(f"a condition y was given with the data, but a {type(model).__name__} takes none")
        model.check_condition(rest[0], len(x0))  # one valid condition per sample


@dataclass
class DiffusionObjective(Objective):
    """The diffusion training objective: `diffusion_loss` with the target `prediction`, and for
    a conditional model (data (x0, y)) the condition dropped with probability p_uncond.

    schedule:   the noise schedule to train on
    prediction: what the network predicts: "eps", "x0" or "v"
    p_uncond:   probability of training a sample with the null condition ∅ (for guidance)
    weighting:  "uniform" or "min_snr" (`loss_weight`)
    timesteps:  how t is drawn: "uniform" or "log_normal" (`sample_timesteps`)
    vae:        the shipped VAE whose latents x0 are, for latent diffusion (recorded in the
                checkpoints, so that `minidiff.generate` decodes the samples with it)
    """

    schedule: NoiseSchedule
    prediction: str = "eps"
    p_uncond: float = 0.0
    vae: str | None = None
    weighting: str = "uniform"
    timesteps: str = "uniform"

    def __post_init__(self) -> None:
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_choice("timesteps", self.timesteps, TIMESTEP_SAMPLING)
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], generator: torch.Generator) -> Tensor:
        x0, *y = batch
        control = {"control": y.pop()} if is_controlled(model) else {}  # (B, C, H, W) control images
        denoiser = with_condition_dropout(model, y[0], self.p_uncond, generator, **control) if y else (
            lambda x_t, t: model(x_t, t, **control))
        return diffusion_loss(denoiser, x0, self.schedule, self.prediction, generator, self.weighting, self.timesteps)

    def describe(self) -> dict[str, Any]:
        betas = hashlib.sha256(self.schedule.betas.double().numpy().tobytes()).hexdigest()[:16]
        schedule = {"name": self.schedule.name, "T": self.schedule.T, "betas_sha256": betas}
        described = {"objective": "diffusion", "prediction": self.prediction, "p_uncond": self.p_uncond,
                     "schedule": schedule, "vae": self.vae}
        # (only where they differ from the plain loss, so that runs saved before these options still resume)
        return described | {k: v for k in ("weighting", "timesteps") if (v := getattr(self, k)) != "uniform"}

    def check(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        check_denoiser_data(model, data, control=True)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "prediction": self.prediction, "vae": self.vae}
