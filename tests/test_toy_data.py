"""2-D toy datasets and Gaussian mixtures (the exact denoiser used by the sampler tests)."""

import math

import pytest
import torch

from minidiff import TOY_DATASETS, GaussianMixture, NoiseSchedule, eight_gaussians, make_toy


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_sets_are_seeded_and_unit_scale(name):
    x = make_toy(name, 4000, seed=1)
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.equal(x, make_toy(name, 4000, seed=1))
    assert not torch.equal(x, make_toy(name, 4000, seed=2))
    assert 0.5 < x.std(0).min() and x.std(0).max() < 2 and x.abs().max() < 5


def test_checkerboard_occupies_alternating_squares():
    x = make_toy("checkerboard", 5000)
    parity = (x[:, 0].floor() + x[:, 1].floor()) % 2
    assert bool((parity == parity[0]).all())
    cells = set(map(tuple, torch.stack([x[:, 0].floor(), x[:, 1].floor()], 1).long().tolist()))
    assert len(cells) == 8  # half of the 16 squares


def test_toy_bad_arguments():
    with pytest.raises(ValueError, match="unknown toy dataset 'spiral'"):
        make_toy("spiral", 10)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        make_toy("two_moons", 0)


def test_mixture_sampling_moments():
    gmm = eight_gaussians()
    x = gmm.sample(40_000, torch.Generator().manual_seed(0)).double()
    k = gmm.responsibilities(x).argmax(1)
    counts = torch.bincount(k, minlength=8) / len(x)
    assert (counts - 1 / 8).abs().max() < 0.01
    for j in range(8):
        pts = x[k == j]
        torch.testing.assert_close(pts.mean(0), gmm.means[j], atol=0.01, rtol=0)
        assert pts.std(0).sub(0.1).abs().max() < 0.01


def test_mixture_log_prob_of_single_gaussian():
    gmm = GaussianMixture(torch.zeros(1, 2), torch.eye(2)[None] * 4, torch.ones(1))
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    expected = -math.log(2 * math.pi * 4) - torch.tensor([0.0, 0.5])
    torch.testing.assert_close(gmm.log_prob(x), expected.double())


def test_exact_eps_matches_finite_difference_score_and_monte_carlo():
    """ε̂ = -√(1-ᾱ)·∇log p_t: check the score by finite differences of log p_t, and
    E[ε | x_t] against a Monte-Carlo posterior average for one x_t."""
    gmm = GaussianMixture(
        torch.tensor([[-1.0, 0.0], [1.5, 1.0]]),
        torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]]]),
        torch.tensor([0.3, 0.7]),
    )
    s = NoiseSchedule.linear()
    t = torch.tensor([300.0])
    ab = s.alpha_bar_at(t)
    x_t = torch.tensor([[0.4, 0.2]], dtype=torch.float64)
    h = 1e-5
    fd = torch.stack(
        [(gmm.log_prob(x_t + h * e, ab) - gmm.log_prob(x_t - h * e, ab)) / (2 * h) for e in torch.eye(2)], 1
    )
    torch.testing.assert_close(gmm.score(x_t, ab), fd, atol=1e-6, rtol=1e-6)
    eps_hat = gmm.eps_model(s)(x_t, t)
    # Monte Carlo: E[ε | x_t] with importance weights p(x_t | x0) over prior samples x0
    x0 = gmm.sample(400_000, torch.Generator().manual_seed(0)).double()
    eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    w = torch.softmax(-0.5 * (eps**2).sum(1), 0)
    torch.testing.assert_close(eps_hat[0], (w[:, None] * eps).sum(0), atol=0.02, rtol=0)


def test_mixture_bad_arguments():
    with pytest.raises(ValueError, match=r"covs must have shape \(2, 2, 2\)"):
        GaussianMixture(torch.zeros(2, 2), torch.eye(2)[None], torch.ones(2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        eight_gaussians().log_prob(torch.zeros(3, 3))
