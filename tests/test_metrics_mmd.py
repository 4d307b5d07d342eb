"""mmd_to_gmm against truths computed another way (closed forms for one Gaussian, Monte Carlo,
the known bias of its V-statistic), and CountCalls against the samplers' known costs."""

import math

import pytest
import torch

from minidiff.data.mixture import GaussianMixture
from minidiff.data.toy2d import eight_gaussians
from minidiff.guidance import classifier_free_guidance
from minidiff.metrics import CountCalls, mmd_to_gmm
from minidiff.samplers import SAMPLERS, sample
from minidiff.schedules import NoiseSchedule

ELL = 0.1


def kernel(a, b, ell=ELL):
    """k(a_i, b_j) = exp(-‖a_i - b_j‖²/2ℓ²) for every pair, (n, m), by broadcasting."""
    return torch.exp(-(a.double()[:, None] - b.double()[None]).square().sum(-1) / (2 * ell**2))


def isotropic(mean, s):
    """The mixture of one Gaussian N(mean, s²I)."""
    d = len(mean)
    return GaussianMixture(
        torch.tensor([mean], dtype=torch.float64), s**2 * torch.eye(d, dtype=torch.float64)[None], torch.ones(1)
    )


def test_one_gaussian_matches_its_closed_form():
    # For p = N(μ, s²I) in d dimensions, with a = ℓ²:
    #   E_{y~p} k(x, y) = (a/(a + s²))^(d/2) exp(-‖x - μ‖²/2(a + s²)),  E_{y,y'~p} k = (a/(a + 2s²))^(d/2)
    mu, s, d = torch.tensor([0.3, -0.2], dtype=torch.float64), 0.15, 2
    x = torch.randn(50, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.2
    a = ELL**2
    k_qp = (a / (a + s**2)) ** (d / 2) * torch.exp(-(x - mu).square().sum(1) / (2 * (a + s**2)))
    mmd2 = kernel(x, x).mean() - 2 * k_qp.mean() + (a / (a + 2 * s**2)) ** (d / 2)
    assert mmd_to_gmm(x, isotropic(mu.tolist(), s), ELL) ** 2 == pytest.approx(mmd2.item(), rel=1e-9)


def test_a_mixture_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    gmm = GaussianMixture(
        torch.tensor([[0.0, 0.0], [0.25, 0.1]]),
        torch.tensor([[[0.02, 0.01], [0.01, 0.03]], [[0.01, 0.0], [0.0, 0.005]]]),
        torch.tensor([0.3, 0.7]),
    )
    x = 0.2 * torch.randn(200, 2, generator=g, dtype=torch.float64)
    m = 1_000_000
    y, y2 = gmm.sample(m, g).double(), gmm.sample(m, g).double()
    k_qp = torch.exp(-(x[torch.randint(0, len(x), (m,), generator=g)] - y).square().sum(1) / (2 * ELL**2))
    k_pp = torch.exp(-(y - y2).square().sum(1) / (2 * ELL**2))
    terms = k_pp - 2 * k_qp  # (m,): the two Monte Carlo terms of MMD², pair by pair
    mmd2 = kernel(x, x).mean() + terms.mean()
    assert abs(mmd_to_gmm(x, gmm, ELL) ** 2 - mmd2.item()) < 5 * terms.std().item() / math.sqrt(m)


def test_true_samples_score_the_v_statistics_bias_which_falls_as_1_over_n():
    # V-statistic: n samples of p score E[MMD²] = (1 - E_{y,y'~p} k)/n. For eight Gaussians of std
    # σ = 0.1, 1.5 apart, E k = Σ_j w_j² (ℓ²/(ℓ² + 2σ²)) = 8 · (1/64) · (1/3) = 1/24 (cross terms ~e⁻³⁹).
    gmm = eight_gaussians()
    expected = 1 - 1 / 24
    means = {}
    for n in (100, 400):
        scores = [mmd_to_gmm(gmm.sample(n, torch.Generator().manual_seed(s)), gmm) ** 2 for s in range(40)]
        means[n] = sum(scores) / len(scores)
        assert n * means[n] == pytest.approx(expected, rel=0.15)  # ±4 standard errors of the mean
    assert means[400] < means[100] / 2


def test_noise_against_a_far_mixture_is_large():
    # Nothing of p near the noise: the cross term vanishes and MMD² = E_{q,q} k + E_{p,p} k.
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    far = isotropic([10.0, 10.0], 0.1)
    assert mmd_to_gmm(x, far) ** 2 == pytest.approx(kernel(x, x).mean().item() + 1 / 3, rel=1e-9)
    gmm = eight_gaussians()
    floor = mmd_to_gmm(gmm.sample(500, torch.Generator().manual_seed(3)), gmm)
    assert mmd_to_gmm(x, far) > 10 * floor


def test_dtype_and_device_follow_the_input():
    gmm = eight_gaussians()
    x = gmm.sample(300, torch.Generator().manual_seed(4))
    assert isinstance(mmd_to_gmm(x, gmm), float)
    assert mmd_to_gmm(x, gmm) == pytest.approx(mmd_to_gmm(x.double(), gmm), rel=1e-6)
    if torch.cuda.is_available():
        assert mmd_to_gmm(x.cuda(), gmm) == pytest.approx(mmd_to_gmm(x, gmm), rel=1e-9)


@pytest.mark.parametrize(
    "x, kwargs, error, match",
    [
        (torch.zeros(10, 3), {}, ValueError, r"x must have shape \(n, 2\)"),
        (torch.zeros(10), {}, ValueError, r"x must have shape \(n, 2\)"),
        (torch.full((10, 2), float("nan")), {}, ValueError, "x contains NaN"),
        (torch.zeros(10, 2, dtype=torch.long), {}, TypeError, "x must be a floating-point tensor"),
        ([[0.0, 0.0]], {}, TypeError, "x must be a torch.Tensor"),
        (torch.zeros(10, 2), {"ell": 0.0}, ValueError, "ell"),
        (torch.zeros(10, 2), {"ell": -0.1}, ValueError, "ell"),
        (torch.zeros(10, 2), {"ell": float("nan")}, ValueError, "ell"),
        (torch.zeros(10, 2), {"ell": "0.1"}, ValueError, "ell"),
        (torch.zeros(10, 2), {"ell": True}, ValueError, "ell"),
        (torch.zeros(10, 2), {"gmm": "eight gaussians"}, TypeError, "gmm must be a GaussianMixture"),
    ],
)
def test_bad_arguments_are_named(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd_to_gmm(x, **{"gmm": eight_gaussians(), **kwargs})


def zero_model(x_t, t, y=None):
    return torch.zeros_like(x_t)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_count_calls_counts_every_model_call_of_a_sampler(sampler, steps):
    counted = CountCalls(zero_model)
    sample(counted, torch.randn(3, 2), NoiseSchedule.linear(T=100), sampler, steps, generator=torch.Generator())
    assert counted.calls == (2 * steps - 1 if sampler == "heun" else steps)


@pytest.mark.parametrize("batched, calls_per_step", [(True, 1), (False, 2)])
def test_count_calls_passes_the_condition_on(batched, calls_per_step):
    counted = CountCalls(zero_model)
    y = torch.tensor([1, 2, 3])
    guided = classifier_free_guidance(counted, y, torch.zeros_like(y), w=3.0, batched=batched)  # calls model(…, y=…)
    sample(guided, torch.randn(3, 2), NoiseSchedule.linear(T=100), "ddim", 5)
    assert counted.calls == 5 * calls_per_step


def test_count_calls_returns_the_models_output():
    x, t = torch.randn(2, 2), torch.zeros(2)
    counted = CountCalls(lambda x_t, t, y: x_t + y)
    assert torch.equal(counted(x, t, 1.0), x + 1) and torch.equal(counted(x, t, y=2.0), x + 2)
    assert counted.calls == 2
    with pytest.raises(TypeError, match="model must be callable"):
        CountCalls("model")
