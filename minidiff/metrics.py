"""Sample-quality metrics used by the lessons."""

from __future__ import annotations

import torch
from torch import Tensor

from minidiff._checks import check_finite


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two point clouds (Rabin et al. 2011).

    Project both clouds on many random directions; along one direction the Wasserstein
    distance between two 1-D samples is the distance between their sorted values
    (quantiles). Average the squared distances over directions, take the square root:

        SW₂(x, y)² = E_θ [ ∫₀¹ (F⁻¹_{θ·x}(q) - F⁻¹_{θ·y}(q))² dq ]

    It is 0 for identical distributions and is in the units of the data, so
    "0.05" means "about 0.05 apart". Two independent samples of the *same*
    distribution are not at 0 (finite-sample noise): compare against that floor.

    Args:
        x, y: samples of shape (N, d) and (M, d); N and M may differ
        n_projections: random directions θ on the unit sphere
        seed: seed for the directions, so repeated calls agree
    """
    for name, z in (("x", x), ("y", y)):
        check_finite(name, z)
        if z.ndim != 2:
            raise ValueError(f"{name} must have shape (N, d), got {tuple(z.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (d, P) unit directions
    q = torch.linspace(0, 1, min(len(x), len(y)), dtype=torch.float64)  # common quantile levels
    qx = torch.quantile(x.double().cpu() @ theta, q, dim=0)  # (Q, P)
    qy = torch.quantile(y.double().cpu() @ theta, q, dim=0)
    return ((qx - qy) ** 2).mean().sqrt().item()
