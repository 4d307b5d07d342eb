"""Noise schedules against their published definitions, and q_sample against its closed form."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff import NoiseSchedule


def published_alpha_bar(name: str, T: int) -> list[float]:
    """Each schedule's ᾱ computed directly from its paper's formula, in plain Python."""
    if name == "linear":  # Ho et al. 2020: β linear from 1e-4 to 0.02
        betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    elif name == "scaled_linear":  # Stable Diffusion: √β linear from √0.00085 to √0.012
        betas = [(0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / (T - 1)) ** 2 for i in range(T)]
    else:  # Nichol & Dhariwal 2021, eq. 17, with β clipped at 0.999
        f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
        betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(T)]
    out, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        out.append(prod)
    return out


@pytest.mark.parametrize("name", ["linear", "cosine", "scaled_linear"])
@pytest.mark.parametrize("T", [1000, 50])
def test_alpha_bar_matches_published_definition(name, T):
    schedule = NoiseSchedule.from_name(name, T)
    expected = torch.tensor(published_alpha_bar(name, T), dtype=torch.float64)
    assert schedule.T == T
    assert schedule.alpha_bar.shape == (T,)
    torch.testing.assert_close(schedule.alpha_bar, expected, atol=1e-6, rtol=0)


def test_cosine_alpha_bar_follows_the_cosine_before_clipping():
    s = NoiseSchedule.cosine()
    t = torch.arange(1, 101, dtype=torch.float64)  # early steps: no clipping yet
    f = torch.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(s.alpha_bar[:100], f, atol=1e-9, rtol=0)
    assert s.betas.max() == pytest.approx(0.999)


def test_derived_quantities_are_consistent():
    s = NoiseSchedule.linear()
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.sigmas**2, (1 - s.alpha_bar) / s.alpha_bar)
    torch.testing.assert_close(s.snr, 1 / s.sigmas**2)
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all()), "ᾱ must decrease"
    # DDPM's ᾱ_T is about 4e-5: x_T keeps almost nothing of x0
    assert s.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.01)


def test_fractional_timesteps_interpolate_and_invert():
    s = NoiseSchedule.cosine()
    t_int = torch.arange(0, 1000, 37)
    torch.testing.assert_close(s.sigma_at(t_int.double()), s.sigmas[t_int])
    torch.testing.assert_close(s.alpha_bar_at(t_int.double()), s.alpha_bar[t_int])
    t = torch.tensor([0.0, 0.5, 10.25, 500.7, 998.9, 999.0], dtype=torch.float64)
    torch.testing.assert_close(s.t_at_sigma(s.sigma_at(t)), t)
    assert bool((s.sigma_at(t)[1:] > s.sigma_at(t)[:-1]).all())


@pytest.mark.parametrize("T", [1, 0, -5, 2.5])
def test_too_few_timesteps_rejected(T):
    with pytest.raises(ValueError, match="T .* integer >= 2"):
        NoiseSchedule.linear(T)


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match="unknown schedule name 'sigmoid'.*linear.*cosine"):
        NoiseSchedule.from_name("sigmoid")


def test_invalid_betas():
    with pytest.raises(ValueError, match="open interval"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="1-D tensor"):
        NoiseSchedule(torch.ones(2, 2) * 0.1)


# ----- q_sample ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 2), (3, 1, 8, 8), (2, 4, 4, 4, 4)])
def test_q_sample_closed_form_any_shape(shape):
    s = NoiseSchedule.linear()
    x0, eps = torch.randn(shape), torch.randn(shape)
    t = torch.randint(0, 1000, (shape[0],))
    x_t = s.q_sample(x0, t, eps)
    for b in range(shape[0]):
        ab = s.alpha_bar[t[b]].item()
        torch.testing.assert_close(x_t[b], math.sqrt(ab) * x0[b] + math.sqrt(1 - ab) * eps[b])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_q_sample_keeps_dtype_and_device(dtype):
    s = NoiseSchedule.cosine()
    x0 = torch.randn(4, 3, dtype=dtype)
    x_t = s.q_sample(x0, torch.tensor([0, 1, 2, 999]), torch.randn_like(x0))
    assert x_t.dtype == dtype and x_t.device == x0.device


@settings(max_examples=25, deadline=None)
@given(t=st.integers(0, 999), name=st.sampled_from(["linear", "cosine", "scaled_linear"]), x=st.floats(-3, 3))
def test_q_sample_moments_match_closed_form(t, name, x):
    """E[x_t] = √ᾱ_t·x0 and Var[x_t] = 1-ᾱ_t, estimated from 20,000 draws."""
    s = NoiseSchedule.from_name(name)
    n = 20_000
    x0 = torch.full((n, 1), x, dtype=torch.float64)
    g = torch.Generator().manual_seed(t)
    x_t = s.q_sample(x0, t, torch.randn(n, 1, generator=g, dtype=torch.float64))
    ab = s.alpha_bar[t].item()
    sd = math.sqrt(1 - ab)
    assert abs(x_t.mean().item() - math.sqrt(ab) * x) < 5 * sd / math.sqrt(n) + 1e-12
    assert abs(x_t.var().item() - (1 - ab)) < 5 * (1 - ab) * math.sqrt(2 / n) + 1e-12


def test_q_sample_bad_inputs():
    s = NoiseSchedule.linear()
    x0 = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        s.q_sample(x0, torch.tensor([0, 1, 1000]), torch.randn_like(x0))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 999\]"):
        s.q_sample(x0, torch.tensor([-1, 1, 2]), torch.randn_like(x0))
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        s.q_sample(x0, torch.tensor([0, 1]), torch.randn_like(x0))
    with pytest.raises(TypeError, match="t must be an integer tensor"):
        s.q_sample(x0, torch.tensor([0.5, 1.0, 2.0]), torch.randn_like(x0))
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        s.q_sample(x0, torch.tensor([0, 1, 2]), torch.randn(3, 3))
    with pytest.raises(ValueError, match="x0 contains NaN"):
        s.q_sample(torch.tensor([[0.0, float("nan")]] * 3), torch.tensor([0, 1, 2]), torch.randn_like(x0))
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        s.q_sample(torch.ones(3, 2, dtype=torch.long), torch.tensor([0, 1, 2]), torch.randn_like(x0))


def test_q_sample_int_timestep_broadcasts():
    s = NoiseSchedule.linear()
    x0, eps = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(s.q_sample(x0, 7, eps), s.q_sample(x0, torch.full((4,), 7), eps))
