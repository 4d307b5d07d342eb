"""Gaussian mixtures: data whose every noised marginal, score and ideal denoiser is known
in closed form, so samplers can be tested without training a network.

If x0 ~ Σ_k w_k N(μ_k, Σ_k) and x_t = √ᾱ·x0 + √(1-ᾱ)·ε, then

    x_t ~ Σ_k w_k N(√ᾱ·μ_k, ᾱ·Σ_k + (1-ᾱ)·I)                        (a Gaussian convolution)
    ∇ log p_t(x) = Σ_k r_k(x) · C_k⁻¹ (m_k - x),   r_k = posterior weight of component k
    ε̂(x_t) = E[ε | x_t] = -√(1-ᾱ) · ∇ log p_t(x_t)                   (Tweedie's formula)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minidiff._checks import check_finite
from minidiff.schedules import NoiseSchedule


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Σ_k w_k N(μ_k, Σ_k) with means (K, d), covariances (K, d, d) and weights (K,)."""

    means: Tensor
    covs: Tensor
    weights: Tensor

    def __post_init__(self) -> None:
        K, d = self.means.shape
        if self.covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(self.covs.shape)}")
        if self.weights.shape != (K,) or bool((self.weights < 0).any()):
            raise ValueError(f"weights must be {K} non-negative numbers, got {self.weights}")
        for name in ("means", "covs", "weights"):
            object.__setattr__(self, name, getattr(self, name).to(torch.float64))
        object.__setattr__(self, "weights", self.weights / self.weights.sum())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples, shape (n, d), float32."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        L = torch.linalg.cholesky(self.covs)  # (K, d, d)
        return (self.means[k] + (L[k] @ z[:, :, None])[..., 0]).float()

    def noised(self, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
        """Means (B, K, d) and covariances (B, K, d, d) of p_t for per-sample ᾱ of shape (B,)."""
        ab = alpha_bar.to(torch.float64)[:, None, None]  # (B, 1, 1), on alpha_bar's device
        means = ab.sqrt() * self.means.to(ab.device)  # (B, K, d)
        eye = torch.eye(self.dim, dtype=torch.float64, device=ab.device)
        covs = ab[..., None] * self.covs.to(ab.device) + (1 - ab[..., None]) * eye  # (B, K, d, d)
        return means, covs

    def _log_components(self, x: Tensor, means: Tensor, covs: Tensor) -> tuple[Tensor, Tensor]:
        """log(w_k N(x; m_k, C_k)) of shape (B, K) and C_k⁻¹(m_k - x) of shape (B, K, d)."""
        diff = means - x.to(torch.float64)[:, None, :]  # (B, K, d)
        solved = torch.linalg.solve(covs, diff[..., None])[..., 0]  # (B, K, d)
        mahalanobis = (diff * solved).sum(-1)  # (B, K)
        logdet = torch.linalg.slogdet(covs).logabsdet  # (B, K)
        log_norm = -0.5 * (self.dim * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64)) + logdet)
        return self.weights.to(x.device).log() + log_norm - 0.5 * mahalanobis, solved

    def log_prob(self, x: Tensor, alpha_bar: Tensor | None = None) -> Tensor:
        """log p(x) of the data (alpha_bar None) or of the noised marginal p_t, shape (B,)."""
        means, covs = self._marginal(x, alpha_bar)
        return torch.logsumexp(self._log_components(x, means, covs)[0], dim=1)

    def responsibilities(self, x: Tensor, alpha_bar: Tensor | None = None) -> Tensor:
        """Posterior probability of each component given x, shape (B, K)."""
        means, covs = self._marginal(x, alpha_bar)
        return torch.softmax(self._log_components(x, means, covs)[0], dim=1)

    def score(self, x: Tensor, alpha_bar: Tensor | None = None) -> Tensor:
        """∇_x log p_t(x) = Σ_k r_k(x)·C_k⁻¹(m_k - x), shape (B, d), float64."""
        means, covs = self._marginal(x, alpha_bar)
        log_comp, solved = self._log_components(x, means, covs)
        return (torch.softmax(log_comp, dim=1)[..., None] * solved).sum(1)

    def _marginal(self, x: Tensor, alpha_bar: Tensor | None) -> tuple[Tensor, Tensor]:
        check_finite("x", x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if alpha_bar is None:
            alpha_bar = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        return self.noised(alpha_bar.to(x.device))

    def eps_model(self, schedule: NoiseSchedule):
        """The exact ε-predictor for this data under `schedule`: model(x_t, t) with t of
        shape (B,), integer or fractional. No training involved."""

        def exact_eps(x_t: Tensor, t: Tensor) -> Tensor:
            alpha_bar = schedule.alpha_bar_at(t)  # (B,) float64
            eps = -(1 - alpha_bar).sqrt()[:, None] * self.score(x_t, alpha_bar)  # Tweedie
            return eps.to(x_t)

        return exact_eps

    def velocity_model(self):
        """The exact velocity field of the straight path x_t = (1-t)·x0 + t·ε (`minidiff.flow`):
        v_model(x_t, t) = E[ε - x0 | x_t] with t of shape (B,) in [0, 1]. No training involved.

        Given component k, (x0, ε, x_t) is jointly Gaussian: x_t ~ N(a·μ_k, C_k) with a = 1-t,
        b = t, C_k = a²Σ_k + b²I, and with d_k = C_k⁻¹(x_t - a·μ_k)
            E[ε | x_t, k] = b·d_k,   E[x0 | x_t, k] = μ_k + a·Σ_k·d_k     (Gaussian conditioning)
        weighted by the posterior r_k(x_t). Both ends are included: at t = 1, v = x_t - E[x0]."""

        def exact_v(x_t: Tensor, t: Tensor) -> Tensor:
            check_finite("x_t", x_t)
            if x_t.ndim != 2 or x_t.shape[1] != self.dim or t.shape != (len(x_t),):
                raise ValueError(f"x_t must be (B, {self.dim}) and t (B,), got {tuple(x_t.shape)} and {tuple(t.shape)}")
            a = (1 - t.to(x_t.device, torch.float64))[:, None, None]  # (B, 1, 1)
            b = 1 - a
            mu, sigma = self.means.to(x_t.device), self.covs.to(x_t.device)
            eye = torch.eye(self.dim, dtype=torch.float64, device=x_t.device)
            covs = a[..., None] ** 2 * sigma + b[..., None] ** 2 * eye  # C_k, (B, K, d, d)
            log_comp, solved = self._log_components(x_t, a * mu, covs)  # solved = C_k⁻¹(a·μ_k - x_t) = -d_k
            d = -solved  # (B, K, d)
            x0_k = mu + a * (sigma @ d[..., None])[..., 0]  # E[x0 | x_t, k], (B, K, d)
            v_k = b * d - x0_k  # E[ε - x0 | x_t, k]
            return (torch.softmax(log_comp, dim=1)[..., None] * v_k).sum(1).to(x_t)

        return exact_v

    def component(self, k: int) -> GaussianMixture:
        """Component k alone, as a one-component mixture: the data of class k."""
        return GaussianMixture(self.means[k : k + 1], self.covs[k : k + 1], torch.ones(1))

    def class_eps_model(self, schedule: NoiseSchedule):
        """The exact class-conditional ε-predictor, each component a class: model(x_t, t, y)
        with labels y (B,) in [0, K]; y = k predicts for component k alone, y = K (the null
        label ∅) for the whole mixture — what a network trained with label dropout learns."""
        K = len(self.weights)
        models = [self.component(k).eps_model(schedule) for k in range(K)] + [self.eps_model(schedule)]

        def exact_eps(x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
            if y.shape != (len(x_t),) or int(y.min()) < 0 or int(y.max()) > K:
                raise ValueError(f"y must hold {len(x_t)} labels in [0, {K}] ({K} = null label), got {y}")
            eps = torch.empty_like(x_t)
            for k in y.unique().tolist():
                rows = y == k
                eps[rows] = models[k](x_t[rows], t[rows])
            return eps

        return exact_eps
