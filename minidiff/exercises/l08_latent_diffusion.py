"""Lesson 08, latent diffusion (notebooks/08_latent_diffusion.ipynb): the VAE's KL term."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, uses
from minidiff.nn.vae import DiagonalGaussian


def check_kl(fn: Callable[[Tensor, Tensor], Tensor]) -> Verdict:
    """fn(mean, logvar) should return KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) per
    image, summed over all latent values: shape (B,) for inputs (B, c, h, w)."""
    g = torch.Generator().manual_seed(8)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    terms = mean**2 + logvar.exp() - 1 - logvar  # (B, c, h, w)
    mistakes = {
        "σ² is exp(logvar), not logvar itself: ½ Σ (μ² + exp(logvar) − 1 − logvar).": 0.5
        * (mean**2 + logvar - 1 - logvar).sum((1, 2, 3)),
        "you forgot the factor ½.": terms.sum((1, 2, 3)),
        "sum over every latent value of an image (channels and positions), not average.": 0.5 * terms.mean((1, 2, 3)),
        "σ = exp(logvar / 2), so σ² = exp(logvar); you used exp(logvar / 2) for σ².": 0.5
        * (mean**2 + (logvar / 2).exp() - 1 - logvar).sum((1, 2, 3)),
    }
    return _verdict("kl", fn, (mean, logvar), 0.5 * terms.sum((1, 2, 3)), mistakes)


@uses(DiagonalGaussian.kl)
def solution_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    return DiagonalGaussian(mean, logvar).kl()  # the VAE's posterior N(μ, σ²) computes its own KL
