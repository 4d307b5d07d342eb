"""Training targets, conversions between ε / x0 / v, the prediction wrapper and the loss."""

import pytest
import torch

from minidiff import MLPDenoiser, NoiseSchedule, as_eps_model, diffusion_loss, training_target, x0_from_eps
from minidiff.forward import eps_from_v, eps_from_x0, loss_weight, sample_timesteps


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    s = NoiseSchedule.cosine()
    x0 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    ab = s.at(s.alpha_bar, t, x0)
    return s, x0, eps, t, ab, s.q_sample(x0, t, eps)


def test_conversions_recover_the_truth(batch):
    s, x0, eps, t, ab, x_t = batch
    torch.testing.assert_close(x0_from_eps(x_t, eps, ab), x0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, ab)[:-1], eps[:-1])  # t = T-1: x0 barely visible
    v = training_target("v", x0, eps, ab)
    torch.testing.assert_close(eps_from_v(x_t, v, ab), eps)


def test_v_target_definition(batch):
    s, x0, eps, t, ab, x_t = batch
    v = training_target("v", x0, eps, ab)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    # v is a rotation of (x0, ε): its norm equals that of (x0, ε) combined with weights that sum to 1
    torch.testing.assert_close(v**2 + x_t**2, x0**2 + eps**2)
    assert training_target("eps", x0, eps, ab) is eps
    assert training_target("x0", x0, eps, ab) is x0


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_as_eps_model_turns_any_prediction_into_eps(batch, prediction):
    """An oracle that predicts `prediction` exactly becomes an oracle for ε after wrapping."""
    s, x0, eps, t, ab, x_t = batch
    oracle = lambda x, tt: training_target(prediction, x0, eps, ab)  # noqa: E731
    eps_hat = as_eps_model(oracle, s, prediction)(x_t, t.double())
    torch.testing.assert_close(eps_hat[:-1], eps[:-1], atol=1e-6, rtol=1e-6)


def test_as_eps_model_is_identity_for_eps():
    model = MLPDenoiser()
    assert as_eps_model(model, NoiseSchedule.linear(), "eps") is model


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        as_eps_model(MLPDenoiser(), NoiseSchedule.linear(), "score")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_is_mse_to_the_target(prediction):
    """Re-draw the same t and ε from the same seed and compute the MSE by hand."""
    s = NoiseSchedule.linear()
    model = MLPDenoiser()
    x0 = torch.randn(32, 2)
    loss = diffusion_loss(model, x0, s, prediction, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (32,), generator=g)
    eps = torch.randn(32, 2, generator=g)
    x_t = s.q_sample(x0, t, eps)
    target = training_target(prediction, x0, eps, s.at(s.alpha_bar, t, x0))
    assert loss.item() == pytest.approx(((model(x_t, t) - target) ** 2).mean().item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_perfect_eps_predictor_has_zero_loss():
    s = NoiseSchedule.linear()
    x0 = torch.randn(16, 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (16,), generator=g)  # the loss will draw the same t …
    eps = torch.randn(16, 2, generator=g, dtype=torch.float64)  # … and the same ε
    oracle = lambda x_t, tt: eps  # noqa: E731
    assert diffusion_loss(oracle, x0, s, generator=torch.Generator().manual_seed(0)).item() < 1e-20
    assert torch.equal(t, torch.randint(0, 1000, (16,), generator=torch.Generator().manual_seed(0)))


def test_loss_rejects_non_finite_data():
    with pytest.raises(ValueError, match="x0 contains NaN"):
        diffusion_loss(MLPDenoiser(), torch.full((4, 2), float("inf")), NoiseSchedule.linear())


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_weight_is_min_snr_gamma_on_the_x0_error(batch, prediction):
    """Hang et al. 2023: whatever the network predicts, the weighted loss is min(SNR, γ)·‖x̂0 - x0‖²."""
    s, x0, eps, t, ab, x_t = batch
    target = training_target(prediction, x0, eps, ab)
    guess = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1), dtype=target.dtype)
    eps_hat = {"eps": lambda: guess, "x0": lambda: eps_from_x0(x_t, guess, ab), "v": lambda: eps_from_v(x_t, guess, ab)}
    x0_error = (x0_from_eps(x_t, eps_hat[prediction](), ab) - x0).pow(2).flatten(1).mean(1)
    snr = s.snr.to(torch.float64)[t]
    weighted = loss_weight("min_snr", snr, prediction) * (guess - target).pow(2).flatten(1).mean(1)
    keep = t < 999 if prediction == "eps" else slice(None)  # at t = T-1, x̂0 from ε divides by √ᾱ ≈ 4e-5
    torch.testing.assert_close(weighted[keep], (snr.clamp(max=5.0) * x0_error)[keep])
    assert torch.equal(loss_weight("uniform", snr, prediction), torch.ones_like(snr))


def test_log_normal_timesteps_have_the_edm_moments():
    """ln σ_t of the drawn timesteps: mean P_mean = -1.2 and std P_std = 1.2 (Karras et al. 2022), up to
    the rounding of σ to the nearest of 1000 timesteps; uniform draws cover 0 … T-1 evenly."""
    s = NoiseSchedule.cosine()
    t = sample_timesteps(s, 100_000, "log_normal", torch.Generator().manual_seed(0))
    log_sigma = s.sigmas[t].double().log()
    assert t.dtype == torch.int64 and 0 <= t.min() and t.max() < s.T
    assert abs(log_sigma.mean() + 1.2) < 0.02 and abs(log_sigma.std() - 1.2) < 0.02
    u = sample_timesteps(s, 100_000, "uniform", torch.Generator().manual_seed(0))
    assert abs(u.double().mean() - 499.5) < 3 and u.min() == 0 and u.max() == 999
    with pytest.raises(ValueError, match="unknown timestep sampling 'edm'"):
        sample_timesteps(s, 4, "edm")


def test_weighted_loss_of_a_perfect_model_is_zero_and_uniform_is_the_plain_mse(batch):
    s, x0, *_ = batch
    flat = x0.flatten(1).float()

    def oracle(x_t, t):  # knows x0: predicts it exactly
        return flat

    for timesteps in ("uniform", "log_normal"):
        assert diffusion_loss(oracle, flat, s, "x0", torch.Generator().manual_seed(0), "min_snr", timesteps) == 0
    model = MLPDenoiser()
    plain = diffusion_loss(model, flat[:, :2], s, "v", torch.Generator().manual_seed(2))
    same = diffusion_loss(model, flat[:, :2], s, "v", torch.Generator().manual_seed(2), "uniform", "uniform")
    assert torch.equal(plain, same)
