"""Consistency distillation: the parametrisation's boundary condition, the teacher's ODE step
against the exact flow of Gaussian data, and the checks on what is distilled into what."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from minidiff.checkpoint import Checkpoint
from minidiff.distill import ConsistencyDistillation, pseudo_huber
from minidiff.forward import SIGMA_DATA, as_eps_model, consistency_coefficients, consistency_function
from minidiff.nn import UNet, UNetConfig
from minidiff.samplers import denoise
from minidiff.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule.cosine(1000)
TINY = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)


def unet(config: UNetConfig = TINY, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(config).eval()


def teacher_of(model: nn.Module, prediction: str = "v", schedule: NoiseSchedule = SCHEDULE) -> Checkpoint:
    return Checkpoint(model, schedule, prediction, (1, 8, 8), step=0, meta={}, extra={})


class GaussianEps(nn.Module):
    """The exact ε̂ for data x0 ~ N(μ, s²·I): E[ε | x_t] = √(1-ᾱ)·(x_t - √ᾱ·μ)/(ᾱ·s² + 1 - ᾱ)."""

    def __init__(self, mu: float, s: float, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.mu, self.s, self.schedule = mu, s, schedule

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.schedule.alpha_bar_at(t).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)


def test_coefficients_meet_the_boundary_condition_exactly_and_hand_over_by_the_first_timestep():
    c_skip, c_out = consistency_coefficients(torch.tensor([0.0, 1.0, 40.0, 999.0], dtype=torch.float64))
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0
    assert c_skip[1].item() < 0.003 and c_out[1].item() > 0.998
    assert c_out[3].item() == pytest.approx(1.0, abs=1e-6)
    u = 10 * 40.0  # the definition, at one timestep in between
    assert c_skip[2].item() == pytest.approx(SIGMA_DATA**2 / (u**2 + SIGMA_DATA**2), rel=1e-12)
    assert c_out[2].item() == pytest.approx(u / math.sqrt(u**2 + SIGMA_DATA**2), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_consistency_function_is_the_identity_at_the_boundary_whatever_the_network(dtype):
    net = unet().to(dtype)
    x_t = torch.randn(4, 1, 8, 8, dtype=dtype)
    t0 = torch.zeros(4, dtype=dtype)
    f = consistency_function(net, SCHEDULE)(x_t, t0, y=torch.tensor([0, 1, 2, 0]))
    x_tilde = x_t / (1 / (1 + SCHEDULE.sigmas[0] ** 2)).to(dtype).sqrt()  # x̃ = x_t/√ᾱ_0
    assert torch.equal(f, x_tilde)
    assert not torch.allclose(consistency_function(net, SCHEDULE)(x_t, t0 + 500, y=torch.tensor([0, 1, 2, 0])),
                              x_tilde * (1 + SCHEDULE.sigmas[500] ** 2).sqrt().item())


def test_as_eps_model_makes_the_samplers_denoiser_the_consistency_function():
    net = unet()
    y = torch.tensor([2, 1])
    x_t = torch.randn(2, 1, 8, 8)
    sigma = SCHEDULE.sigmas[300].item()
    f = consistency_function(net, SCHEDULE)(x_t, torch.full((2,), 300.0), y=y)
    eps_model = as_eps_model(net, SCHEDULE, "consistency")
    D = denoise(lambda x, t: eps_model(x, t, y=y), x_t * (1 + sigma**2) ** 0.5, SCHEDULE, sigma)  # D(x̃; σ)
    torch.testing.assert_close(D, f, atol=1e-5, rtol=1e-5)


def exact_flow(x_tilde: torch.Tensor, sigma_from: float, sigma_to: float, mu: float, s: float) -> torch.Tensor:
    """The probability-flow ODE of N(μ, s²) data in x̃ = x0 + σ·ε: x̃ - μ scales with √(s² + σ²)."""
    return mu + (x_tilde - mu) * math.sqrt((s**2 + sigma_to**2) / (s**2 + sigma_from**2))


def test_the_teacher_step_is_second_order_on_the_exact_flow_of_gaussian_data():
    mu, s = 0.3, 0.5
    objective = ConsistencyDistillation(teacher_of(GaussianEps(mu, s, SCHEDULE), "eps"), "exact")
    x_tilde = torch.randn(16, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    sigma_s, errors = 3.0, []
    for h in (0.4, 0.2, 0.1):
        sigma_t = sigma_s * math.exp(-h)
        s_t, t_t = (SCHEDULE.t_at_sigma(torch.tensor([v] * 16, dtype=torch.float64)) for v in (sigma_s, sigma_t))
        sigma_s_exact, sigma_t_exact = SCHEDULE.sigma_at(s_t)[0].item(), SCHEDULE.sigma_at(t_t)[0].item()
        x_s = x_tilde / math.sqrt(1 + sigma_s_exact**2)  # the VP state
        x_t = objective.teacher_step(x_s, s_t, t_t) * math.sqrt(1 + sigma_t_exact**2)
        errors.append((x_t - exact_flow(x_tilde, sigma_s_exact, sigma_t_exact, mu, s)).abs().max().item())
    ratios = [a / b for a, b in pairwise(errors)]
    assert all(r > 6 for r in ratios), (errors, ratios)  # local error O(h³): ×8 per halving


def test_the_guided_teacher_step_uses_the_guided_prediction():
    net = unet()
    with torch.no_grad():  # the zero-initialised output layer would make every label alike
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    y = torch.tensor([0, 1])
    x_s = torch.randn(2, 1, 8, 8)
    s, t = torch.full((2,), 600.0), torch.full((2,), 560.0)
    plain = ConsistencyDistillation(teacher_of(net), "tiny", guidance=1.0).teacher_step(x_s, s, t, y)
    guided = ConsistencyDistillation(teacher_of(net), "tiny", guidance=3.0).teacher_step(x_s, s, t, y)
    assert not torch.allclose(plain, guided)


def test_pseudo_huber_is_the_norm_for_large_errors_and_zero_for_none():
    delta = torch.zeros(3, 1, 10, 10, dtype=torch.float64)
    delta[1] += 1.0
    delta[2] += 1e-6
    d = pseudo_huber(delta)
    c = 0.00054 * 10
    assert d[0].item() == 0.0
    assert d[1].item() == pytest.approx(math.sqrt(100 + c**2) - c)
    assert d[2].item() == pytest.approx(100e-12 / (2 * c), rel=1e-6)  # quadratic near 0: ‖δ‖²/2c


def test_the_student_must_have_the_teachers_architecture_and_labels_for_guidance():
    objective = ConsistencyDistillation(teacher_of(unet()), "tiny", guidance=2.0)
    x = torch.randn(8, 1, 8, 8)
    with pytest.raises(ValueError, match="the teacher's architecture"):
        objective.check(unet(UNetConfig(**{**vars(TINY), "channels": 16})), (x, torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match="teacher is conditional"):
        objective.check(unet(), (x,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intervals": 0}, "intervals must be an integer in"),
        ({"intervals": 1000}, "intervals must be an integer in"),
        ({"target_decay": 1.0}, "target_decay must be in"),
        ({"guidance": math.nan}, "guidance must be a finite number"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConsistencyDistillation(teacher_of(unet()), "tiny", **kwargs)


def test_a_flow_model_is_not_a_teacher():
    with pytest.raises(ValueError, match="teacher must be a diffusion model"):
        ConsistencyDistillation(teacher_of(unet(), "flow"), "tiny")


def test_the_boundaries_are_where_a_trailing_sampler_stops():
    """t_0 = 0, then the timesteps of a 20-step trailing sampler: a 1-, 2-, 4- or 5-step sampler with
    trailing spacing visits only timesteps the student was trained at."""
    from minidiff.samplers import timesteps

    objective = ConsistencyDistillation(teacher_of(unet()), "tiny", intervals=20)
    boundaries = objective.boundaries.tolist()
    assert boundaries[0] == 0 and boundaries[-1] == 999 and boundaries == sorted(set(boundaries))
    assert len(boundaries) == 21
    for k in (1, 2, 4, 5, 10):
        assert set(timesteps(1000, k, "trailing")) <= set(boundaries), k
