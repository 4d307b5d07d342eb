"""The DDPM ancestral sampler (Ho et al. 2020, Algorithm 2), driven by the exact
ε-predictor of a Gaussian mixture: no training, so any error is the sampler's."""

import pytest
import torch

from minidiff import (
    NoiseSchedule,
    Trajectory,
    ddpm,
    noise_levels,
    sample,
    sliced_wasserstein,
    timesteps,
)
from minidiff.data import three_gaussians

MIXTURE = three_gaussians()


def mixture_fit(x: torch.Tensor):
    """Weights, means and covariances of samples, assigning each to its likeliest component."""
    k = MIXTURE.responsibilities(x).argmax(1)
    weights = torch.bincount(k, minlength=3).double() / len(x)
    means = torch.stack([x[k == j].double().mean(0) for j in range(3)])
    covs = torch.stack([torch.cov(x[k == j].double().T) for j in range(3)])
    return weights, means, covs


@pytest.mark.parametrize("steps", [1000, 100])
def test_ddpm_recovers_mixture(steps):
    """n = 6000 samples: weight error < 0.025, mean error < 0.05, covariance error < 0.05
    (each about 4 standard errors of the estimate from this many samples)."""
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x = ddpm(MIXTURE.eps_model(s), torch.randn(6000, 2, generator=g), s, noise_levels(s, steps), generator=g)
    weights, means, covs = mixture_fit(x)
    assert (weights - MIXTURE.weights).abs().max() < 0.025
    assert (means - MIXTURE.means).abs().max() < 0.05
    assert (covs - MIXTURE.covs).abs().max() < 0.05


def test_ddpm_error_falls_with_steps():
    """Too few steps leave the samples too spread out; more steps close the gap to the
    floor set by comparing two independent samples of the data."""
    s = NoiseSchedule.linear()
    data = MIXTURE.sample(4000, torch.Generator().manual_seed(1))
    floor = sliced_wasserstein(MIXTURE.sample(4000, torch.Generator().manual_seed(2)), data)
    errors = {}
    for steps in (2, 10, 100):
        g = torch.Generator().manual_seed(0)
        x = ddpm(MIXTURE.eps_model(s), torch.randn(4000, 2, generator=g), s, noise_levels(s, steps), generator=g)
        errors[steps] = sliced_wasserstein(x, data)
    assert errors[2] > errors[10] > errors[100]
    assert errors[2] > 5 * floor and errors[100] < 2 * floor


def test_ddpm_trajectory_and_predictions():
    s = NoiseSchedule.cosine(T=200)
    traj = Trajectory()
    x_T = torch.randn(50, 2)
    g = torch.Generator().manual_seed(0)
    x = ddpm(MIXTURE.eps_model(s), x_T, s, noise_levels(s, 20), callback=traj, generator=g)
    assert traj.xs.shape == (21, 50, 2) and traj.x0_hats.shape == (20, 50, 2)
    assert torch.equal(traj.xs[0], x_T) and torch.equal(traj.xs[-1], x)
    assert traj.ts == timesteps(200, 20, "trailing") and traj.ts[0] == 199
    # the last step adds no noise: the sample is the final prediction of x0
    torch.testing.assert_close(traj.x0_hats[-1], x)
    # predictions sharpen: the spread of x̂0 grows from ~0 (the mean) towards the data's
    spread = traj.x0_hats.var(dim=1).sum(-1)
    assert spread[0] < 0.3 * spread[-1]


def test_ddpm_is_reproducible_with_a_generator():
    s = NoiseSchedule.linear(T=100)
    x_T = torch.randn(10, 2)
    all_steps = noise_levels(s, s.T)
    run = lambda seed: ddpm(MIXTURE.eps_model(s), x_T, s, all_steps, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ddpm_keeps_dtype(dtype):
    s = NoiseSchedule.linear(T=50)
    assert ddpm(MIXTURE.eps_model(s), torch.randn(4, 2, dtype=dtype), s, noise_levels(s, s.T)).dtype == dtype


def test_timestep_spacings():
    assert timesteps(1000, 4, "linspace") == [999, 666, 333, 0]
    assert timesteps(1000, 4, "leading") == [750, 500, 250, 0]
    assert timesteps(1000, 4, "trailing") == [999, 749, 499, 249]
    assert timesteps(10, 10, "trailing") == list(range(9, -1, -1))


def test_ddpm_bad_arguments():
    s = NoiseSchedule.linear(T=100)
    model = MIXTURE.eps_model(s)
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\]"):
        ddpm(model, torch.randn(2, 2), s, noise_levels(s, 101))
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\]"):
        ddpm(model, torch.randn(2, 2), s, noise_levels(s, 0))
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\]"):
        sample(model, torch.randn(2, 2), s, "ddpm", 101)
    with pytest.raises(ValueError, match="unknown spacing 'log'"):
        ddpm(model, torch.randn(2, 2), s, noise_levels(s, 10, spacing="log"))
    with pytest.raises(ValueError, match="unknown spacing 'log'"):
        sample(model, torch.randn(2, 2), s, "ddpm", 10, spacing="log")
    with pytest.raises(ValueError, match="x_T contains NaN"):
        ddpm(model, torch.full((2, 2), float("nan")), s, noise_levels(s, s.T))
    with pytest.raises(ValueError, match="sigmas must decrease strictly and end at 0"):
        ddpm(model, torch.randn(2, 2), s, noise_levels(s, 10)[:-1])  # a list of levels that stops short of 0
