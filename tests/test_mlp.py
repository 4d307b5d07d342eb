"""The MLP denoiser and the sinusoidal timestep embedding."""

import math

import pytest
import torch

from minidiff import MLPConfig, MLPDenoiser, NoiseSchedule, diffusion_loss
from minidiff.nn import timestep_embedding


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 1.0, 37.5])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8)
    for b, tb in enumerate(t.tolist()):
        for i in range(4):
            freq = 10_000 ** (-i / 4)
            assert emb[b, i].item() == pytest.approx(math.sin(tb * freq), abs=1e-5)
            assert emb[b, 4 + i].item() == pytest.approx(math.cos(tb * freq), abs=1e-5)


def test_timestep_embedding_odd_dim():
    with pytest.raises(ValueError, match="dim must be even"):
        timestep_embedding(torch.zeros(2), 7)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_mlp_shapes_and_fractional_t(batch):
    model = MLPDenoiser(MLPConfig(data_dim=3, hidden=32, layers=2))
    x = torch.randn(batch, 3)
    assert model(x, torch.randint(0, 1000, (batch,))).shape == (batch, 3)
    assert model(x, torch.rand(batch) * 999).shape == (batch, 3)


def test_mlp_bad_inputs():
    model = MLPDenoiser()
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 2\)"):
        model(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(4,\)"):
        model(torch.randn(4, 2), torch.zeros(5))


def test_mlp_learns_gaussian_denoiser():
    """For x0 ~ N(0, s²I) the ideal ε-predictor is linear: ε̂ = √(1-ᾱ)·x_t/(ᾱs² + 1-ᾱ).
    A briefly trained MLP should get much closer to it than the untrained one."""
    torch.manual_seed(0)
    s2 = 0.25
    sched = NoiseSchedule.linear(T=100)
    model = MLPDenoiser(MLPConfig(hidden=64, layers=2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def error() -> float:
        t = torch.arange(5, 100, 10).repeat_interleave(100)
        x_t = torch.randn(len(t), 2)
        ab = sched.at(sched.alpha_bar, t, x_t)
        ideal = (1 - ab).sqrt() * x_t / (ab * s2 + 1 - ab)
        with torch.no_grad():
            return ((model(x_t, t) - ideal) ** 2).mean().item()

    before = error()
    for _ in range(400):
        loss = diffusion_loss(model, torch.randn(256, 2) * s2**0.5, sched)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    assert after < 0.05 * before, (before, after)
