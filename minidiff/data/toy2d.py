"""2-D toy datasets, generated from a seed. Each is scaled to roughly unit spread,
the range diffusion models expect (the noise they add has unit variance)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff._checks import check_choice
from minidiff.data.mixture import GaussianMixture

TOY_DATASETS = ("swiss_roll", "two_moons", "eight_gaussians", "checkerboard")


def eight_gaussians(std: float = 0.1, radius: float = 2.0) -> GaussianMixture:
    """8 equal Gaussians on a circle: a mixture, so its exact denoiser is known."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (8, 2)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    return GaussianMixture(means, covs, torch.full((8,), 1 / 8))


def three_gaussians() -> GaussianMixture:
    """3 unequal, correlated Gaussians (weights 0.5, 0.3, 0.2): the mixture whose exact ε and exact
    flow velocity the sampler tests, lesson 10 and benchmarks/bench_flow.py use as their yardstick."""
    return GaussianMixture(
        means=torch.tensor([[-2.0, -1.0], [1.5, 1.5], [2.0, -2.0]]),
        covs=torch.tensor([[[0.30, 0.15], [0.15, 0.20]], [[0.10, 0.0], [0.0, 0.40]], [[0.05, -0.02], [-0.02, 0.05]]]),
        weights=torch.tensor([0.5, 0.3, 0.2]),
    )


def _swiss_roll(n: int, g: torch.Generator) -> Tensor:
    angle = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))  # 1.5π … 4.5π
    points = torch.stack([angle * angle.cos(), angle * angle.sin()], dim=1) / 5
    return points + 0.05 * torch.randn(n, 2, generator=g)


def _two_moons(n: int, g: torch.Generator) -> Tensor:
    upper = torch.rand(n, generator=g) < 0.5
    angle = math.pi * torch.rand(n, generator=g)
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    points = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
    return points + 0.05 * torch.randn(n, 2, generator=g)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    """Uniform on the black squares of a 4×4 board spanning [-2, 2]²."""
    x = 4 * torch.rand(n, generator=g) - 2
    row = torch.randint(0, 2, (n,), generator=g) * 2  # 0 or 2: which pair of rows
    y = torch.rand(n, generator=g) + row - 2 + (x.floor() % 2)  # shift rows so squares alternate
    return torch.stack([x, y], dim=1)


def make_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """n points of the 2-D dataset `name` (one of TOY_DATASETS), shape (n, 2), float32."""
    check_choice("toy dataset", name, TOY_DATASETS)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    g = torch.Generator().manual_seed(seed)
    if name == "eight_gaussians":
        return eight_gaussians().sample(n, g)
    return {"swiss_roll": _swiss_roll, "two_moons": _two_moons, "checkerboard": _checkerboard}[name](n, g).float()
