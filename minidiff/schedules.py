"""Noise schedules: how much noise is added at each of the T training timesteps.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239):

    T           number of training timesteps; index t = 0 … T-1 (t = 0 is the first
                noising step, so the paper's t = 1 is our index 0)
    beta_t      variance added at step t:      q(x_t | x_{t-1}) = N(√(1-β_t)·x_{t-1}, β_t·I)
    alpha_t     1 - beta_t
    alpha_bar_t ∏_{s<=t} alpha_s               q(x_t | x_0) = N(√ᾱ_t·x_0, (1-ᾱ_t)·I)   (eq. 4)
    sigma_t     √((1-ᾱ_t)/ᾱ_t), the noise level of x_t/√ᾱ_t (Karras et al. 2022's σ)
    snr_t       ᾱ_t/(1-ᾱ_t) = 1/σ_t²

The schedule is stored in float64 so that closed-form checks are exact; every method
casts to the dtype and device of the tensor it works on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from minidiff._checks import check_choice, check_finite, check_timesteps

SCHEDULE_NAMES = ("linear", "cosine", "scaled_linear")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete noise schedule β_0 … β_{T-1} and everything derived from it.

    Build one with `NoiseSchedule.linear()`, `.cosine()`, `.scaled_linear()` or
    `.from_name("cosine", T=1000)`.
    """

    betas: Tensor  # (T,) float64
    name: str = "custom"

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D tensor with T >= 2 entries, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in the open interval (0, 1)")
        object.__setattr__(self, "betas", betas)

    # ----- constructors -------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """DDPM's schedule: β rises linearly from 1e-4 to 0.02 (Ho et al. 2020, §4)."""
        _check_T(T)
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), "linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> NoiseSchedule:
        """Nichol & Dhariwal 2021 (arXiv:2102.09672, eq. 17): ᾱ(t) = f(t)/f(0),
        f(t) = cos²(((t/T + s)/(1 + s))·π/2), with β_t = 1 - ᾱ_t/ᾱ_{t-1} clipped at 0.999."""
        _check_T(T)
        steps = torch.arange(T + 1, dtype=torch.float64)  # paper's t = 0 … T
        f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return cls(betas, "cosine")

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> NoiseSchedule:
        """Stable Diffusion's schedule: √β rises linearly, β_t = (linspace(√β_start, √β_end))²."""
        _check_T(T)
        return cls(torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2, "scaled_linear")

    @classmethod
    def from_name(cls, name: str, T: int = 1000) -> NoiseSchedule:
        """The schedule called `name` (one of "linear", "cosine", "scaled_linear")."""
        check_choice("schedule name", name, SCHEDULE_NAMES)
        return getattr(cls, name)(T)

    # ----- derived quantities -------------------------------------------------------
    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def alphas(self) -> Tensor:
        return 1 - self.betas  # α_t = 1 - β_t

    @property
    def alpha_bar(self) -> Tensor:
        return torch.cumprod(self.alphas, dim=0)  # ᾱ_t = ∏_{s<=t} α_s

    @property
    def sigmas(self) -> Tensor:
        return ((1 - self.alpha_bar) / self.alpha_bar).sqrt()  # σ_t = √((1-ᾱ_t)/ᾱ_t)

    @property
    def snr(self) -> Tensor:
        return self.alpha_bar / (1 - self.alpha_bar)  # SNR_t = ᾱ_t/(1-ᾱ_t)

    def __repr__(self) -> str:
        ab = self.alpha_bar
        return f"NoiseSchedule({self.name}, T={self.T}, alpha_bar: {ab[0]:.6f} → {ab[-1]:.3g})"

    # ----- using the schedule on data -------------------------------------------------
    def at(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] reshaped to broadcast over `like` (B, ...), in like's dtype and device."""
        out = values.to(like.device)[t.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))  # (B, 1, 1, …)

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """Sample x_t ~ q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4):

            x_t = √ᾱ_t · x0 + √(1-ᾱ_t) · ε

        Args:
            x0:    clean data, shape (B, ...): 2-D points (B, 2), images (B, C, H, W), latents…
            t:     integer timesteps, shape (B,) (or one int for the whole batch), in [0, T-1]
            noise: ε ~ N(0, I), same shape as x0
        """
        check_finite("x0", x0)
        check_finite("noise", noise)
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        t = check_timesteps(t, x0.shape[0], self.T, device=x0.device)
        alpha_bar_t = self.at(self.alpha_bar, t, x0)
        return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * noise

    # ----- continuous timesteps (for samplers that step between integer t) -----------
    def sigma_at(self, t: Tensor) -> Tensor:
        """σ at fractional timesteps t ∈ [0, T-1], interpolating log σ linearly."""
        log_sigmas = self.sigmas.log().to(t.device)
        t = t.to(torch.float64).clamp(0, self.T - 1)
        lo = t.floor().long().clamp(max=self.T - 2)
        w = t - lo
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[lo + 1]).exp()

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """ᾱ at fractional timesteps t ∈ [0, T-1]: ᾱ = 1/(1 + σ²)."""
        return 1 / (1 + self.sigma_at(t) ** 2)

    def t_at_sigma(self, sigma: Tensor) -> Tensor:
        """The fractional timestep whose σ is `sigma` (inverse of `sigma_at`)."""
        log_sigmas = self.sigmas.log().to(sigma.device)
        log_sigma = sigma.to(torch.float64).log().clamp(log_sigmas[0], log_sigmas[-1])
        hi = torch.searchsorted(log_sigmas, log_sigma).clamp(1, self.T - 1)
        lo = hi - 1
        w = (log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return lo + w


def _check_T(T: int) -> None:
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T (number of timesteps) must be an integer >= 2, got {T!r}")
