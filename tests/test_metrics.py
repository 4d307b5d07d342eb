"""Sliced Wasserstein distance against cases with a known answer."""

import pytest
import torch

from minidiff import sliced_wasserstein


def test_identical_sets_are_at_zero():
    x = torch.randn(500, 2)
    assert sliced_wasserstein(x, x) == 0.0


def test_translation_gives_the_expected_distance():
    """Shifting by a vector c moves every 1-D projection by θ·c, so SW₂² = E[(θ·c)²] = |c|²/d."""
    x = torch.randn(2000, 2)
    c = torch.tensor([3.0, 4.0])  # |c| = 5, d = 2 → SW₂ = 5/√2
    assert sliced_wasserstein(x, x + c, n_projections=4000) == pytest.approx(5 / 2**0.5, rel=0.02)


def test_gaussians_with_different_scales():
    """For N(0, I) vs N(0, 4I), every projection is N(0,1) vs N(0,4): W₂ = |2 - 1| = 1."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20_000, 2, generator=g), 2 * torch.randn(20_000, 2, generator=g)
    assert sliced_wasserstein(x, y) == pytest.approx(1.0, abs=0.05)


def test_unequal_sizes_and_symmetry():
    x, y = torch.randn(300, 3), torch.randn(700, 3) + 1
    assert sliced_wasserstein(x, y) == pytest.approx(sliced_wasserstein(y, x), rel=0.05)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(N, d\)"):
        sliced_wasserstein(torch.randn(5), torch.randn(5, 3))
    with pytest.raises(ValueError, match="y contains NaN"):
        sliced_wasserstein(torch.randn(5, 2), torch.full((5, 2), float("nan")))


def test_ks_to_normal():
    from minidiff.metrics import ks_to_normal

    g = torch.Generator().manual_seed(0)
    n = 10_000
    assert ks_to_normal(torch.randn(n, generator=g)[:, None]) < 1.63 / n**0.5  # 1% critical value
    assert ks_to_normal(torch.randn(n, 1, generator=g) + 0.5) == pytest.approx(0.1974, abs=0.015)  # Φ(0.25) - Φ(-0.25)
    # a single value at 0: the empirical CDF jumps from 0 to 1 where Φ = 0.5
    assert ks_to_normal(torch.zeros(1, 1)) == pytest.approx(0.5)


def test_point_metric_tells_data_from_a_shifted_copy_and_names_bad_input():
    from minidiff.data import make_toy
    from minidiff.metrics import PointMetric, dataset_metric

    metric = dataset_metric("two_moons")
    assert isinstance(metric, PointMetric)
    data = make_toy("two_moons", 2000, seed=5)
    near, shifted = metric.evaluate(data)["sliced_wasserstein"], metric.evaluate(data + 0.5)["sliced_wasserstein"]
    assert near < 0.1 < shifted  # a shift by 0.5 along both axes moves every 1-D projection by up to 0.7
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\)"):
        metric.evaluate(torch.randn(10, 3))
    with pytest.raises(ValueError, match="unknown toy dataset 'moons'"):
        PointMetric("moons")
