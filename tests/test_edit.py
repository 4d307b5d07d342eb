"""Tests for minidiff.edit: img2img (SDEdit) through every sampler, and RePaint-style inpainting,
driven by exact denoisers of Gaussian data (no training) or a tiny untrained U-Net."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from minidiff import SAMPLERS, GaussianMixture, NoiseSchedule, Trajectory, img2img, inpaint, noise_levels, sample
from minidiff.edit import sdedit_levels
from minidiff.nn import UNet, UNetConfig
from minidiff.samplers import karras_sigmas, timesteps

SCHEDULE = NoiseSchedule.cosine(1000)
STOCHASTIC = {"ddpm": {}, "euler_ancestral": {}, "ddim": {"eta": 0.5}}  # samplers that draw from the generator


def gaussian(rho: float, mean=(0.5, -0.3), std=(1.0, 0.8)) -> GaussianMixture:
    """N(μ, Σ) in 2-D with correlation rho: one mixture component, whose exact ε̂ is known."""
    cov = torch.tensor([[std[0] ** 2, rho * std[0] * std[1]], [rho * std[0] * std[1], std[1] ** 2]])
    return GaussianMixture(torch.tensor([mean]), cov[None], torch.ones(1))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))  # untrained, but not the zero-initialised output
    return net.eval()


# ----- noise levels with a strength ------------------------------------------------------------
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing", "karras"])
def test_strength_keeps_the_last_levels_and_strength_1_all_of_them(spacing):
    if spacing == "karras":
        full = karras_sigmas(SCHEDULE.sigmas[0].item(), SCHEDULE.sigmas[-1].item(), 10).tolist()
    else:
        full = SCHEDULE.sigmas[timesteps(1000, 10, spacing)].tolist() + [0.0]
    assert noise_levels(SCHEDULE, 10, spacing) == full  # the levels every sampler visits
    assert sdedit_levels(full, 1.0) == full
    assert sdedit_levels(full, 0.3) == full[-4:]  # 3 steps: 3 levels, then 0
    assert sdedit_levels(full, 0.0) == [0.0]


@pytest.mark.parametrize("steps", [1, 4, 7, 10])
@pytest.mark.parametrize("strength", [0.0, 0.04, 0.1, 0.25, 0.5, 0.66, 0.9, 1.0])
def test_sdedit_levels_keep_the_last_round_strength_n_steps(steps, strength):
    """Of any decreasing σ_0 > … > σ_N = 0, the last k = round(strength·N) steps: k + 1 levels
    ending at 0, the tail of the list."""
    sigmas = [float(steps - i) for i in range(steps + 1)]  # N, N-1, …, 1, 0
    k = round(strength * steps)
    kept = sdedit_levels(sigmas, strength)
    assert len(kept) == k + 1 and kept == sigmas[steps - k :] and kept[-1] == 0.0
    assert sdedit_levels(sigmas, 0) == [0.0] and sdedit_levels(sigmas, 1) == sigmas


@pytest.mark.parametrize("strength", [-0.1, 1.5, math.nan, "half", None])
def test_strength_outside_0_1_is_refused(strength):
    with pytest.raises(ValueError, match="strength must be a number in"):
        sdedit_levels(noise_levels(SCHEDULE, 10), strength)
    with pytest.raises(ValueError, match="strength must be a number in"):
        img2img(lambda x, t: x, torch.zeros(2, 2), SCHEDULE, strength)


# ----- img2img -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_img2img_at_strength_0_returns_the_input_exactly(sampler):
    x0 = torch.randn(5, 2, generator=seeded(0))
    out = img2img(gaussian(0.5).eps_model(SCHEDULE), x0, SCHEDULE, 0.0, sampler, steps=10, generator=seeded(1))
    assert torch.equal(out, x0) and out is not x0
    assert torch.equal(img2img(gaussian(0.5).eps_model(SCHEDULE), x0, SCHEDULE, 0.04, sampler, steps=10), x0)  # 0 steps


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_img2img_at_strength_1_is_plain_sampling_from_the_same_noise(sampler):
    model, kwargs = gaussian(0.5).eps_model(SCHEDULE), STOCHASTIC.get(sampler, {})
    x0 = torch.randn(6, 2, generator=seeded(0)) + 3
    g = seeded(1)
    x_T = torch.randn(6, 2, generator=g)
    plain = sample(model, x_T, SCHEDULE, sampler, 8, generator=g, **kwargs)  # noise, then the sampler's own draws
    edited = img2img(model, x0, SCHEDULE, 1.0, sampler, steps=8, generator=seeded(1), **kwargs)
    assert torch.equal(edited, plain)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m"])
def test_img2img_starts_from_the_input_noised_to_the_first_level_kept(sampler):
    model, x0 = gaussian(0.5).eps_model(SCHEDULE), torch.randn(4, 2, generator=seeded(0))
    trajectory = Trajectory()
    img2img(model, x0, SCHEDULE, 0.4, sampler, steps=10, generator=seeded(1), callback=trajectory)
    sigmas = sdedit_levels(noise_levels(SCHEDULE, 10, "trailing"), 0.4)
    assert len(trajectory.steps) == 4 and trajectory.ts[0] == pytest.approx(timesteps(1000, 10)[6], abs=1e-3)
    alpha_bar = 1 / (1 + sigmas[0] ** 2)
    eps = torch.randn(4, 2, generator=seeded(1))
    assert torch.allclose(trajectory.xs[0], alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps, atol=1e-6)


def test_img2img_moves_further_from_the_input_as_strength_grows():
    """Points far from the data: the stronger the edit, the more they are pulled onto it (DDIM,
    the same noise for every strength)."""
    model = gaussian(0.5).eps_model(SCHEDULE)
    x0 = torch.randn(400, 2, generator=seeded(0)) * 0.3 + torch.tensor([4.0, 3.0])
    strengths = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    distances = [
        (img2img(model, x0, SCHEDULE, s, "ddim", steps=20, generator=seeded(1)) - x0).norm(dim=1).mean().item()
        for s in strengths
    ]
    assert distances[0] == 0.0
    assert all(a < b for a, b in pairwise(distances)), distances


def test_img2img_works_on_images_with_any_denoiser():
    net, x0 = tiny_unet(), torch.rand(2, 1, 8, 8, generator=seeded(0)) * 2 - 1
    out = img2img(net, x0, SCHEDULE, 0.5, "euler", steps=6)
    assert out.shape == x0.shape and out.dtype == x0.dtype and not torch.equal(out, x0)


# ----- inpainting --------------------------------------------------------------------------------
@pytest.mark.parametrize("resample, eta", [(1, 1.0), (3, 1.0), (1, 0.0)])
def test_inpainting_keeps_the_known_pixels_exactly(resample, eta):
    net = tiny_unet()
    x_known = torch.rand(2, 1, 8, 8, generator=seeded(0)) * 2 - 1
    mask = (torch.rand(2, 1, 8, 8, generator=seeded(1)) < 0.5).float()
    trajectory = Trajectory()
    out = inpaint(
        net, x_known, mask, SCHEDULE, steps=8, generator=seeded(2), resample=resample, eta=eta, callback=trajectory
    )
    known = mask.bool()
    assert torch.equal(out[known], x_known[known])
    assert not torch.equal(out[~known], x_known[~known]) and torch.isfinite(out).all()
    assert len(trajectory.steps) == 8 and torch.equal(trajectory.xs[-1], out)
    again = inpaint(net, x_known, mask.bool(), SCHEDULE, steps=8, generator=seeded(2), resample=resample, eta=eta)
    assert torch.equal(again, out)  # reproducible with a generator; a bool mask works alike


def test_a_mask_of_ones_returns_the_known_image_and_of_zeros_plain_sampling():
    model = gaussian(0.5).eps_model(SCHEDULE)
    x_known, x_T = torch.randn(8, 2, generator=seeded(0)), torch.randn(8, 2, generator=seeded(1))
    assert torch.equal(inpaint(model, x_known, torch.ones(1, 2), SCHEDULE, steps=5, generator=seeded(1)), x_known)
    free = inpaint(model, x_known, torch.zeros(1, 2), SCHEDULE, steps=5, eta=0.0, x_T=x_T, generator=seeded(2))
    assert torch.equal(free, sample(model, x_T, SCHEDULE, "ddim", 5))  # nothing known: DDIM from the same x_T


N = 20_000


def _replacement_moments(data: GaussianMixture, a_known: float, steps: int) -> tuple[float, float]:
    """Mean and variance of the generated coordinate b under replacement inpainting with DDPM
    steps and the exact denoiser of Gaussian data, in closed form: every step is linear,
    b_next = A_ba·a + A_bb·b + c_b + σ_η·ξ, with the known coordinate a drawn afresh at each
    level, a ~ N(√ᾱ·a*, 1 - ᾱ) (pure noise N(0, 1) at the start)."""
    mu, cov = data.means[0], data.covs[0]
    sigmas = noise_levels(SCHEDULE, steps, "trailing")
    m, v = 0.0, 1.0  # b_T ~ N(0, 1)
    a_mean, a_var = 0.0, 1.0  # a_T ~ N(0, 1)
    for sigma, sigma_next in pairwise(sigmas):
        ab, ab_s = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        P = torch.linalg.inv(ab * cov + (1 - ab) * torch.eye(2, dtype=torch.float64))  # ε̂ = √(1-ᾱ)·P·(x - √ᾱ·μ)
        noise = ((1 - ab_s) / (1 - ab) * (1 - ab / ab_s)) ** 0.5  # DDIM's σ_t(η = 1), eq. 16
        gamma = ((1 - ab_s - noise**2) ** 0.5 - (ab_s * (1 - ab) / ab) ** 0.5) * (1 - ab) ** 0.5
        A = (ab_s / ab) ** 0.5 * torch.eye(2, dtype=torch.float64) + gamma * P  # x_next = A·x + c + noise·ξ
        c = -gamma * ab**0.5 * P @ mu
        m = (A[1, 0] * a_mean + A[1, 1] * m + c[1]).item()
        v = (A[1, 0] ** 2 * a_var + A[1, 1] ** 2 * v + noise**2).item()
        a_mean, a_var = ab_s**0.5 * a_known, 1 - ab_s
    return m, v


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_inpainting_gaussian_data_against_closed_forms(rho):
    """x = (a, b) ~ N(μ, Σ), a known (= a*), b generated, with the exact denoiser of N(μ, Σ).

    The samples must follow the closed-form distribution of the algorithm (`_replacement_moments`).
    The conditional b | a* is N(μ_b + ρ·s_b/s_a·(a* - μ_a), s_b²·(1 - ρ²)). For independent
    coordinates (ρ = 0) replacement inpainting gives it as steps grow. For correlated ones it does not:
    the unknown part is steered by freshly noised known values it never agreed with, and its
    distribution is that of the linear process of `_replacement_moments`, biased towards the
    unconditional N(μ_b, s_b²). Resampling (RePaint) moves the mean most of the way to the
    conditional one (here it also makes the variance too small, 0.17 instead of 0.23).
    """
    data, a_star, steps = gaussian(rho), 1.5, 50
    (mu_a, mu_b), (s_a, s_b) = data.means[0].tolist(), data.covs[0].diagonal().sqrt().tolist()
    cond_mean, cond_var = mu_b + rho * s_b / s_a * (a_star - mu_a), s_b**2 * (1 - rho**2)
    x_known = torch.tensor([[a_star, 123.0]]).expand(N, 2)  # the unknown value must not matter
    mask = torch.tensor([[1.0, 0.0]])
    out = inpaint(data.eps_model(SCHEDULE), x_known, mask, SCHEDULE, steps=steps, generator=seeded(0))
    assert torch.equal(out[:, 0], x_known[:, 0])
    b = out[:, 1].double()
    mean, var = b.mean().item(), b.var().item()
    m, v = _replacement_moments(data, a_star, steps)
    se_mean, se_var = (v / N) ** 0.5, v * (2 / N) ** 0.5  # standard errors of the estimates
    assert abs(mean - m) < 5 * se_mean and abs(var - v) < 5 * se_var, (mean, var, m, v)
    m_limit, v_limit = _replacement_moments(data, a_star, 1000)  # as many steps as the schedule has
    if rho == 0:  # the conditional, up to DDPM's discretisation error (its variance is ~10% short at 50 steps)
        assert abs(m - cond_mean) < 1e-6 and abs(v - cond_var) < 0.15 * cond_var
        assert abs(m_limit - cond_mean) < 1e-6 and abs(v_limit - cond_var) < 0.01 * cond_var
    else:  # replacement's own bias, which more steps do not remove: pulled towards μ_b
        assert abs(m_limit - cond_mean) > 0.15 and abs(mean - cond_mean) > 0.15
        resampled = inpaint(
            data.eps_model(SCHEDULE), x_known[:2000], mask, SCHEDULE, steps=20, generator=seeded(1), resample=5
        )[:, 1]
        assert abs(resampled.mean().item() - cond_mean) < 0.3 * abs(mean - cond_mean)  # (its variance is too small)


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(2, 1, 8), r"mask must have shape \(B or 1, 1 or 1, 8, 8\).*got \(2, 1, 8\)"),
        (torch.ones(2, 1, 4, 4), r"got \(2, 1, 4, 4\)$"),
        (torch.ones(3, 1, 8, 8), r"got \(3, 1, 8, 8\)"),
        (torch.full((2, 1, 8, 8), 0.5), r"mask must hold only 0 and 1.*from 0\.5 to 0\.5"),
        (torch.full((1, 1, 8, 8), 2.0), "mask must hold only 0 and 1"),
        ([[1.0]], "mask must be a torch.Tensor"),
    ],
)
def test_bad_masks_are_named(mask, message):
    with pytest.raises((ValueError, TypeError), match=message):
        inpaint(tiny_unet(), torch.zeros(2, 1, 8, 8), mask, SCHEDULE, steps=2)


def test_a_pixel_mask_on_latents_points_to_latent_mask():
    with pytest.raises(ValueError, match=r"got \(1, 1, 32, 32\) \(a pixel-space mask on latents\?.*latent_mask"):
        inpaint(lambda x, t: x, torch.zeros(1, 4, 8, 8), torch.ones(1, 1, 32, 32), SCHEDULE, steps=2)


def test_bad_inpainting_arguments():
    args = (tiny_unet(), torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), SCHEDULE)
    with pytest.raises(ValueError, match="resample must be a positive integer"):
        inpaint(*args, resample=0)
    with pytest.raises(ValueError, match="eta must be a number in"):
        inpaint(*args, eta=2.0)
    with pytest.raises(ValueError, match=r"x_T must have x_known's shape \(1, 1, 8, 8\)"):
        inpaint(*args, x_T=torch.zeros(1, 1, 4, 4))
