"""Samplers, checked without a trained model: each is driven by the *exact* ε-predictor of
a distribution known in closed form.

- A Gaussian mixture: every sampler must give back its weights, means and covariances,
  and get closer to it (in sliced Wasserstein distance) as it takes more steps.
- A single Gaussian N(μ, s²I): the probability-flow ODE has a closed-form solution, so
  the global error of each deterministic solver, and hence its order, can be measured.
"""

import math
from functools import cache
from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff import (
    SAMPLERS,
    GaussianMixture,
    NoiseSchedule,
    Trajectory,
    as_eps_model,
    ddim,
    ddim_invert,
    ddim_step,
    ddpm,
    denoise,
    euler,
    karras_sigmas,
    noise_levels,
    sample,
    sliced_wasserstein,
    timesteps,
    x0_from_eps,
)
from minidiff.samplers import SIGMA_SPACINGS, SPACINGS, check_sigmas, dpmpp_2m, dpmpp_2m_sde, unipc

SCHEDULE = NoiseSchedule.linear()  # T = 1000, σ from 0.01 to 157
STOCHASTIC = ("ddpm", "euler_ancestral", "dpmpp_2m_sde", "consistency")
DETERMINISTIC = ("ddim", "euler", "heun", "dpmpp_2m", "unipc")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ellipse(angle: float, std_major: float, std_minor: float) -> torch.Tensor:
    """Covariance R·diag(std²)·Rᵀ of an ellipse rotated by `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return R @ torch.diag(torch.tensor([std_major**2, std_minor**2], dtype=torch.float64)) @ R.T


# Three separated, elongated, unequal components in 2-D.
MIXTURE = GaussianMixture(
    means=torch.tensor([[-1.5, 0.0], [1.0, 1.2], [1.2, -1.2]]),
    covs=torch.stack([ellipse(0.3, 0.5, 0.15), ellipse(-0.8, 0.4, 0.1), ellipse(1.2, 0.3, 0.2)]),
    weights=torch.tensor([0.5, 0.3, 0.2]),
)
N_SAMPLES = 2000


class GaussianEps:
    """The exact ε-predictor for x0 ~ N(μ, s²I), for data of any shape:

        ε̂ = E[ε | x_t] = √(1-ᾱ)·(x_t - √ᾱ·μ) / (ᾱ·s² + 1 - ᾱ)

    It records the timesteps it is asked at."""

    def __init__(self, schedule: NoiseSchedule, mu: float | list[float] = 0.0, s: float = 0.5):
        self.schedule, self.mu, self.s, self.ts = schedule, torch.tensor(mu, dtype=torch.float64), s, []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.ts.append(t)
        alpha_bar = self.schedule.alpha_bar_at(t).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        mu = self.mu.to(x_t)
        return (1 - alpha_bar).sqrt() * (x_t - alpha_bar.sqrt() * mu) / (alpha_bar * self.s**2 + 1 - alpha_bar)


def mixture_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights (K,), means (K, d), covariances (K, d, d) of samples, each point shared among
    components by its responsibilities r_k(x). For exact samples these are unbiased, since
    E[r_k] = w_k, E[r_k·x] = w_k·μ_k and E[r_k·xxᵀ] = w_k·(Σ_k + μ_k μ_kᵀ), overlap or not."""
    r = MIXTURE.responsibilities(x)  # (n, K)
    x = x.double()
    mass = r.sum(0)  # (K,)
    means = (r.T @ x) / mass[:, None]
    second = torch.einsum("nk,ni,nj->kij", r, x, x) / mass[:, None, None]
    return mass / len(x), means, second - means[:, :, None] * means[:, None, :]


@cache
def mixture_samples(sampler: str, steps: int, spacing: str = "trailing") -> torch.Tensor:
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(N_SAMPLES, 2, generator=seeded(0))
    return sample(model, x_T, SCHEDULE, sampler, steps, spacing=spacing, generator=seeded(1))


@cache
def data_reference() -> tuple[torch.Tensor, float]:
    """A reference sample of the data, and the sliced Wasserstein distance from another
    data sample of the same size to it: the floor no sampler can beat at this size."""
    reference = MIXTURE.sample(N_SAMPLES, seeded(100))
    return reference, sliced_wasserstein(MIXTURE.sample(N_SAMPLES, seeded(101)), reference)


# A sensible step budget for each sampler (the lessons' defaults are of this order).
BUDGETS = [
    ("ddpm", 100, "trailing"),
    ("ddim", 50, "trailing"),
    ("euler", 50, "trailing"),
    ("euler_ancestral", 50, "trailing"),
    ("heun", 20, "trailing"),  # 39 model calls
    ("heun", 20, "karras"),
    ("dpmpp_2m", 20, "trailing"),
    ("dpmpp_2m", 20, "karras"),
    ("dpmpp_2m_sde", 50, "trailing"),
    ("unipc", 20, "trailing"),
    ("unipc", 15, "logsnr"),
]


# ----- recovering a Gaussian mixture -------------------------------------------------------------
@pytest.mark.parametrize("sampler, steps, spacing", BUDGETS)
def test_recovers_the_gaussian_mixture(sampler, steps, spacing):
    """Tolerances (data spread ~0.1–0.5; an exact sample of 2000 points already misses by
    about 0.02, 0.02 and 0.01): weights ±0.04, means ±0.08, covariance entries ±0.06."""
    weights, means, covs = mixture_statistics(mixture_samples(sampler, steps, spacing))
    assert (weights - MIXTURE.weights).abs().max() < 0.04, f"weights {weights} vs {MIXTURE.weights}"
    assert (means - MIXTURE.means).abs().max() < 0.08, f"means {means} vs {MIXTURE.means}"
    assert (covs - MIXTURE.covs).abs().max() < 0.06, f"covariances {covs} vs {MIXTURE.covs}"


@pytest.mark.parametrize("sampler, steps, spacing", [b for b in BUDGETS if b[2] == "trailing"])
def test_more_steps_get_closer_to_the_data(sampler, steps, spacing):
    """Sliced Wasserstein distance to the data falls from 2 to 5 steps to the budget, and at
    the budget it is within 0.05 of the floor set by two samples of the data."""
    reference, floor = data_reference()
    distances = [sliced_wasserstein(mixture_samples(sampler, n, spacing), reference) for n in (2, 5, steps)]
    assert distances[0] > distances[1] > distances[2], distances
    assert distances[2] < floor + 0.05, (distances, floor)


# ----- the probability-flow ODE for Gaussian data, solved in closed form --------------------------
MU, S = [1.0, -0.5], 0.5
ORDER_STEPS = (16, 32, 64, 128)


def exact_ode_solution(x_T: torch.Tensor, sigma_max: float, sigma: float) -> torch.Tensor:
    """For x0 ~ N(μ, s²I), D(x̃; σ) = μ + s²/(s² + σ²)·(x̃ - μ), and dx̃/dσ = (x̃ - D)/σ solves to
    x̃(σ) - μ = (x̃(σ_max) - μ)·√((s² + σ²)/(s² + σ_max²)), here from x̃(σ_max) = x_T·√(1 + σ_max²)."""
    mu = torch.tensor(MU, dtype=x_T.dtype)
    x_tilde = x_T * (1 + sigma_max**2) ** 0.5
    return mu + (x_tilde - mu) * ((S**2 + sigma**2) / (S**2 + sigma_max**2)) ** 0.5


def exact_solver_output(x_T: torch.Tensor) -> torch.Tensor:
    """What a solver whose steps from σ_max down to σ_min are exact returns: every sampler's last
    step, σ_min → 0, is the same first-order one, x0 = D(x̃; σ_min). That step misses the ODE's
    own x̃(0) by O(σ_min²) (~2e-4 here), the same for every solver and steps, so orders are
    measured against this, not against x̃(0)."""
    sigma_min, sigma_max = SCHEDULE.sigmas[0].item(), SCHEDULE.sigmas[-1].item()  # where "karras", "logsnr" start, end
    mu = torch.tensor(MU, dtype=x_T.dtype)
    return mu + S**2 / (S**2 + sigma_min**2) * (exact_ode_solution(x_T, sigma_max, sigma_min) - mu)


def global_errors(sampler: str, steps=ORDER_STEPS, spacing: str = "karras", **kwargs) -> list[float]:
    model = GaussianEps(SCHEDULE, MU, S)
    x_T = torch.randn(16, 2, generator=seeded(0), dtype=torch.float64)
    exact = exact_solver_output(x_T)
    return [(sample(model, x_T, SCHEDULE, sampler, n, spacing, **kwargs) - exact).abs().max().item() for n in steps]


def fitted_order(steps: tuple[int, ...], errors: list[float]) -> float:
    """Least-squares slope of -log(error) against log(steps): error ∝ steps^(-order)."""
    xs, ys = [math.log(n) for n in steps], [-math.log(e) for e in errors]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sum((x - x_mean) ** 2 for x in xs)


@pytest.mark.parametrize("sampler, order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order_on_the_exact_ode(sampler, order):
    """Karras spacing (a smooth family of grids), float64, steps 16 … 128: the error falls at
    every doubling and its fitted order is within ±0.3 of the method's order."""
    errors = global_errors(sampler)
    assert all(a > b for a, b in pairwise(errors)), errors
    assert fitted_order(ORDER_STEPS, errors) == pytest.approx(order, abs=0.3), errors


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_converges_at_order_p_plus_1(order):
    """UniPC-p (UniP-p, then UniC-p) is of order p + 1 (Zhao et al. 2023, Theorem 3.1 and
    Corollary 3.2; diffusers: "effective order solver_order + 1"). "logsnr" spacing makes every
    step the same h in λ. Measured over 64 … 256 steps, float64: p = 2 gives 3.0, p = 3 gives 3.9
    (its local slopes rise 3.7 → 4.1 over the range; below ~50 steps it is not yet asymptotic)."""
    steps = (64, 96, 128, 192, 256)
    errors = global_errors("unipc", steps, "logsnr", order=order)
    assert all(a > b for a, b in pairwise(errors)), errors
    assert fitted_order(steps, errors) == pytest.approx(order + 1, abs=0.3), errors


def test_unipc_is_dpmpp_2m_plus_a_corrector():
    """With B(h) = e^h - 1, UniPC-2's predictor is DPM-Solver++(2M). On the mixture's exact
    denoiser (an ODE with no closed form) both converge to the same solution: their gap falls
    at every doubling of the steps, ~30× from 64 to 512 (not yet the 64× of order 2: the narrow
    components make the ODE stiff at small σ), to < 5e-4. UniPC-2, of order 3, is the closer of
    the two to that solution (measured against UniPC-3 at 1000 steps): 5× at 256 steps, 10× at 512."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(256, 2, generator=seeded(0), dtype=torch.float64)
    run = lambda sampler, n, **kw: sample(model, x_T, SCHEDULE, sampler, n, spacing="logsnr", **kw)  # noqa: E731
    steps = (64, 128, 256, 512)
    gaps = [(run("unipc", n) - run("dpmpp_2m", n)).abs().max().item() for n in steps]
    assert all(a > b for a, b in pairwise(gaps)) and gaps[0] / gaps[-1] > 16 and gaps[-1] < 5e-4, gaps
    reference = run("unipc", 1000, order=3)
    for n in (256, 512):
        assert (run("unipc", n) - reference).abs().max() < (run("dpmpp_2m", n) - reference).abs().max() / 3, n


def test_unipc_reports_the_states_the_model_saw():
    """Each `Step` of unipc is one model call: x0_hat is the model's x̂0 from that step's x_t (the
    predicted state, before UniC corrects it), and x_next is the next step's x_t."""
    model, trajectory = MIXTURE.eps_model(SCHEDULE), Trajectory()
    x_T = torch.randn(16, 2, generator=seeded(0), dtype=torch.float64)
    unipc(model, x_T, SCHEDULE, noise_levels(SCHEDULE, 8, "karras"), callback=trajectory, order=3)
    for step in trajectory.steps:
        t = torch.full((16,), step.t, dtype=torch.float64)
        x0_hat = x0_from_eps(step.x_t, model(step.x_t, t), SCHEDULE.alpha_bar_at(t)[:, None])
        torch.testing.assert_close(step.x0_hat, x0_hat)


@pytest.mark.parametrize("order", [1, 4, 2.0, "2", True, None])
def test_unipc_order_is_2_or_3(args, order):
    with pytest.raises(ValueError, match=r"order must be 2 or 3 \(UniPC-2 or UniPC-3\), got"):
        sample(*args, SCHEDULE, "unipc", order=order)


def test_dpmpp_2m_sde_without_noise_is_dpmpp_2m():
    """η = 0 removes the noise and the Langevin part: the update is DPM-Solver++(2M)'s, term for term."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    for spacing in ("trailing", "karras"):
        sigmas = noise_levels(SCHEDULE, 12, spacing)
        torch.testing.assert_close(
            dpmpp_2m_sde(model, x_T, SCHEDULE, sigmas, eta=0.0), dpmpp_2m(model, x_T, SCHEDULE, sigmas)
        )


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_dpmpp_2m_sde_matches_the_mixtures_moments(eta):
    """Mean and covariance of 20 000 samples (100 trailing steps) against the exact mixture's,
    Σ_k w_k·μ_k and Σ_k w_k·(Σ_k + μ_k μ_kᵀ) - μμᵀ, each within 4 standard errors, estimated
    from the samples: Var(x_i)/n for the means and Var((x_i - x̄_i)(x_j - x̄_j))/n for the
    covariance entries. An exact sampler passes each of the 5 with probability 1 - 6e-5; the
    solver's own bias is below 2 standard errors here (at 10 steps it is up to 75)."""
    n = 20_000
    model = MIXTURE.eps_model(SCHEDULE)
    x = sample(
        model, torch.randn(n, 2, generator=seeded(0)), SCHEDULE, "dpmpp_2m_sde", 100, generator=seeded(1), eta=eta
    )
    w, means, covs = MIXTURE.weights.double(), MIXTURE.means.double(), MIXTURE.covs.double()
    mean = w @ means
    cov = (w[:, None, None] * (covs + means[:, :, None] * means[:, None, :])).sum(0) - mean[:, None] * mean[None, :]
    x = x.double()
    centred = x - x.mean(0)
    products = centred[:, :, None] * centred[:, None, :]  # (n, 2, 2)
    z_mean = (x.mean(0) - mean) / (x.var(0) / n).sqrt()
    z_cov = (products.mean(0) - cov) / (products.var(0) / n).sqrt()
    assert z_mean.abs().max() < 4 and z_cov.abs().max() < 4, (z_mean, z_cov)


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_matches_diffusers(order):
    """diffusers' UniPCMultistepScheduler (bh2, data prediction, trailing, final σ = 0), driven by
    the same exact ε-model from the same x_T, on the same levels: the same samples, up to its
    float32 σ's (~1e-6). Skipped without diffusers (the `bench` extra)."""
    schedulers = pytest.importorskip("diffusers.schedulers")
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    for steps in (5, 10, 25):
        scheduler = schedulers.UniPCMultistepScheduler(
            trained_betas=SCHEDULE.betas.numpy(),
            solver_order=order,
            solver_type="bh2",
            predict_x0=True,
            timestep_spacing="trailing",
            final_sigmas_type="zero",
        )
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == timesteps(SCHEDULE.T, steps, "trailing")
        x = x_T
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, torch.full((64,), float(t), dtype=torch.float64)), t, x).prev_sample
        ours = unipc(model, x_T, SCHEDULE, noise_levels(SCHEDULE, steps, "trailing"), order=order)
        torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_dpmpp_2m_sde_matches_diffusers():
    """diffusers' DPMSolverMultistepScheduler("sde-dpmsolver++", midpoint), handed the noise our
    generator draws, in float32 (its working precision), at 20 steps (below 15 it also lowers the
    order of the last-but-one step): the same samples. Skipped without diffusers."""
    schedulers = pytest.importorskip("diffusers.schedulers")
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0))
    scheduler = schedulers.DPMSolverMultistepScheduler(
        trained_betas=SCHEDULE.betas.numpy(),
        algorithm_type="sde-dpmsolver++",
        solver_type="midpoint",
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(20)
    x, g = x_T, seeded(3)
    for t in scheduler.timesteps:  # one draw a step, as ours (its last, at σ = 0, is unused)
        eps = model(x, torch.full((64,), float(t)))
        x = scheduler.step(eps, t, x, variance_noise=torch.randn(64, 2, generator=g)).prev_sample
    ours = dpmpp_2m_sde(model, x_T, SCHEDULE, noise_levels(SCHEDULE, 20), generator=seeded(3))
    torch.testing.assert_close(ours, x, rtol=0, atol=2e-5)


def test_ddim_is_euler_in_sigma_space():
    """DDIM at η = 0 is Euler's method on the same ODE (Song et al. 2021, §4.3): with ε taken
    at the start of each step, x̃_next = x̃ + (σ_next - σ)·ε̂, whatever the coordinates it is
    written in. So the two samplers agree to rounding, and both are first order."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    for spacing in ("trailing", "karras"):
        sigmas = noise_levels(SCHEDULE, 12, spacing)
        torch.testing.assert_close(ddim(model, x_T, SCHEDULE, sigmas), euler(model, x_T, SCHEDULE, sigmas))


def test_ancestral_samplers_are_one_process():
    """DDPM's posterior step (Ho et al. eq. 7) is DDIM's update with η = 1 (Song et al. §4.1)
    and, written in x̃ = x_t/√ᾱ, Euler ancestral's; for other η DDIM and Euler ancestral
    still agree. With the same noise they give the same samples."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    run = lambda sampler, **kw: sample(model, x_T, SCHEDULE, sampler, 12, generator=seeded(5), **kw)  # noqa: E731
    reference = run("ddpm")
    torch.testing.assert_close(run("ddim", eta=1.0), reference)
    torch.testing.assert_close(run("euler_ancestral"), reference)
    torch.testing.assert_close(run("euler_ancestral", eta=0.5), run("ddim", eta=0.5))


def test_ddpm_with_all_steps_is_algorithm_2():
    """ddpm over all T timesteps against Ho et al. 2020, Algorithm 2 written out directly
    (σ_t² = β̃_t; drawing z on the last step too, where its factor is 0, as ddpm does)."""
    schedule = NoiseSchedule.cosine(T=50)
    model = MIXTURE.eps_model(schedule)
    x = x_T = torch.randn(32, 2, generator=seeded(0), dtype=torch.float64)
    g = seeded(1)
    betas, alphas, alpha_bar = schedule.betas, schedule.alphas, schedule.alpha_bar
    for t in reversed(range(schedule.T)):
        eps = model(x, torch.full((32,), float(t), dtype=torch.float64))
        ab_prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        sigma = (betas[t] * (1 - ab_prev) / (1 - alpha_bar[t])).sqrt()
        z = torch.randn(32, 2, generator=g, dtype=torch.float64)
        x = (x - betas[t] / (1 - alpha_bar[t]).sqrt() * eps) / alphas[t].sqrt() + sigma * z
    torch.testing.assert_close(ddpm(model, x_T, schedule, noise_levels(schedule, schedule.T), generator=seeded(1)), x)


def test_prediction_types_go_through_the_wrapper():
    """An x0-predicting network, wrapped by as_eps_model, samples exactly like the ε-predictor
    it was made from, at fractional timesteps too (Karras spacing)."""
    eps_model = MIXTURE.eps_model(SCHEDULE)

    def x0_model(x_t, t):
        return x0_from_eps(x_t, eps_model(x_t, t), SCHEDULE.alpha_bar_at(t).to(x_t)[:, None])

    x_T = torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    wrapped = as_eps_model(x0_model, SCHEDULE, "x0")
    for sampler in ("dpmpp_2m", "ddim"):
        expected = sample(eps_model, x_T, SCHEDULE, sampler, 15, spacing="karras")
        torch.testing.assert_close(sample(wrapped, x_T, SCHEDULE, sampler, 15, spacing="karras"), expected)


# ----- consistency sampling, with the exact consistency function of Gaussian data -------------------
def gaussian_consistency_eps(schedule: NoiseSchedule, mu: float, s: float):
    """The ε-model whose denoiser is the exact consistency function of N(μ, s²) data: the
    probability-flow ODE scales x̃ - μ with √(s² + σ²), so its end from (x̃, σ) is
    f(x̃, σ) = μ + (x̃ - μ)·s/√(s² + σ²); ε is the one with x̂0 = f."""

    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = schedule.alpha_bar_at(t).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        sigma2 = (1 - alpha_bar) / alpha_bar
        m = torch.tensor(mu).to(x_t)
        f = m + (x_t / alpha_bar.sqrt() - m) * s / (s**2 + sigma2).sqrt()
        return (x_t - alpha_bar.sqrt() * f) / (1 - alpha_bar).sqrt()

    return eps


def test_one_consistency_step_with_the_exact_function_is_the_ode_solution():
    x_T = torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    one = sample(gaussian_consistency_eps(SCHEDULE, MU, S), x_T, SCHEDULE, "consistency", 1)
    ode = sample(GaussianEps(SCHEDULE, MU, S), x_T, SCHEDULE, "unipc", 200, "logsnr")  # converged
    # (every ODE sampler's last step returns D(x̃; σ_min), the posterior mean at σ_min = 0.01, which
    # misses the ODE's end by about (x̃ - μ)·σ_min²/2s² = 2e-4·(x̃ - μ): the tolerance)
    torch.testing.assert_close(one, ode, atol=2e-3, rtol=0)
    assert (one - ode).abs().max() < 0.05 * (x_T - ode).abs().max()


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_consistency_sampling_with_the_exact_function_draws_the_data(steps):
    x_T = torch.randn(20_000, 2, generator=seeded(1), dtype=torch.float64)
    x0 = sample(gaussian_consistency_eps(SCHEDULE, MU, S), x_T, SCHEDULE, "consistency", steps, generator=seeded(2))
    se_mean, se_std = S / 20_000**0.5, S / (2 * 20_000) ** 0.5  # standard errors of a mean and a std
    assert (x0.mean(0) - torch.tensor(MU, dtype=torch.float64)).abs().max() < 4 * se_mean
    assert (x0.std(0) - S).abs().max() < 4 * se_std


# ----- reproducibility and inversion ---------------------------------------------------------------
@pytest.mark.parametrize(
    "sampler, kwargs",
    [
        ("ddpm", {}),
        ("euler_ancestral", {}),
        ("ddim", {"eta": 0.5}),
        ("dpmpp_2m_sde", {}),
        ("dpmpp_2m_sde", {"eta": 0.3}),
        ("consistency", {}),
    ],
)
def test_stochastic_samplers_are_reproducible_with_a_generator(sampler, kwargs):
    model = GaussianEps(SCHEDULE, MU, S)
    x_T = torch.randn(32, 2, generator=seeded(0))
    run = lambda seed: sample(model, x_T, SCHEDULE, sampler, 10, generator=seeded(seed), **kwargs)  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_ignore_the_generator(sampler):
    model = GaussianEps(SCHEDULE, MU, S)
    x_T = torch.randn(32, 2, generator=seeded(0))
    first = sample(model, x_T, SCHEDULE, sampler, 10, generator=seeded(1))
    assert torch.equal(first, sample(model, x_T, SCHEDULE, sampler, 10, generator=seeded(2)))
    assert torch.equal(first, sample(model, x_T, SCHEDULE, sampler, 10))


def test_ddim_inversion_round_trips():
    """ddim_invert runs the same ODE forward (x0 → x_T): its result matches the closed-form
    x_T of Gaussian data, and ddim brings it back to x0. Both are first order, so the errors
    fall ~4× from 100 to 400 steps; at 400 steps the round trip misses x0 by < 0.03
    (data std 0.5), and the inversion misses the exact x_T by < 0.03 (x_T std 1)."""
    model = GaussianEps(SCHEDULE, MU, S)
    mu = torch.tensor(MU, dtype=torch.float64)
    x0 = mu + S * torch.randn(64, 2, generator=seeded(0), dtype=torch.float64)
    sigma_max = SCHEDULE.sigmas[-1].item()  # "trailing" starts at t = T-1
    exact_x_T = (mu + (x0 - mu) * (S**2 + sigma_max**2) ** 0.5 / S) / (1 + sigma_max**2) ** 0.5
    round_trip, inversion = [], []
    for steps in (100, 400):
        sigmas = noise_levels(SCHEDULE, steps)
        x_T = ddim_invert(model, x0, SCHEDULE, sigmas)
        inversion.append((x_T - exact_x_T).abs().max().item())
        round_trip.append((ddim(model, x_T, SCHEDULE, sigmas) - x0).abs().max().item())
    assert round_trip[1] < 0.03 and inversion[1] < 0.03, (round_trip, inversion)
    assert 3 < round_trip[0] / round_trip[1] < 5 and 3 < inversion[0] / inversion[1] < 5, (round_trip, inversion)


# ----- callbacks, trajectories, shapes, dtypes -------------------------------------------------------
ALL_RUNS = [*SAMPLERS, "ddim_invert"]


def run_with_trajectory(name: str, x: torch.Tensor, steps: int, spacing: str) -> tuple[torch.Tensor, Trajectory, list]:
    model, trajectory = GaussianEps(SCHEDULE, 0.3), Trajectory()
    if name == "ddim_invert":
        out = ddim_invert(model, x, SCHEDULE, noise_levels(SCHEDULE, steps, spacing), callback=trajectory)
    else:
        out = sample(model, x, SCHEDULE, name, steps, spacing=spacing, generator=seeded(0), callback=trajectory)
    return out, trajectory, model.ts


@pytest.mark.parametrize("name", ALL_RUNS)
@pytest.mark.parametrize("spacing", ["leading", "karras"])
def test_trajectory_records_every_step_in_the_vp_scale(name, spacing):
    x = torch.randn(5, 2, generator=seeded(0))
    out, trajectory, _ = run_with_trajectory(name, x, 7, spacing)
    assert trajectory.xs.shape == (8, 5, 2)
    assert trajectory.x0_hats.shape == (7, 5, 2)
    assert [s.i for s in trajectory.steps] == list(range(7))
    ts = trajectory.ts  # decreasing; increasing for the inversion, which starts at σ = 0 (asked at t = 0)
    assert sorted(ts, reverse=name != "ddim_invert") == ts and len(set(ts)) >= 6
    torch.testing.assert_close(trajectory.xs[0], x)
    torch.testing.assert_close(trajectory.xs[-1], out)
    for step, following in pairwise(trajectory.steps):  # one scale throughout
        torch.testing.assert_close(step.x_next, following.x_t)


@pytest.mark.parametrize("name", ALL_RUNS)
def test_model_is_called_with_float_timesteps_in_range(name):
    x = torch.randn(3, 2, generator=seeded(0))
    _, trajectory, calls = run_with_trajectory(name, x, 6, "karras")
    for t in calls:
        assert t.shape == (3,) and t.dtype == x.dtype
        assert 0 <= t.min() and t.max() <= SCHEDULE.T - 1
    assert any(t % 1 != 0 for t in trajectory.ts)  # Karras σ's fall between integer timesteps
    _, trajectory, _ = run_with_trajectory(name, x, 6, "trailing")
    assert all(t % 1 == 0 for t in trajectory.ts)


@pytest.mark.parametrize("name", ALL_RUNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_images_keep_their_shape_and_dtype(name, dtype):
    x = torch.randn(2, 3, 4, 4, generator=seeded(0), dtype=dtype)
    out, trajectory, _ = run_with_trajectory(name, x, 4, "trailing")
    assert out.shape == x.shape and out.dtype == dtype and bool(torch.isfinite(out).all())
    assert trajectory.xs.shape == (5, 2, 3, 4, 4)


def test_sample_dispatches_by_name():
    model = GaussianEps(SCHEDULE, MU, S)
    x_T = torch.randn(8, 2, generator=seeded(0))
    for name, sampler in SAMPLERS.items():
        expected = sampler(model, x_T, SCHEDULE, noise_levels(SCHEDULE, 5), generator=seeded(3))
        assert torch.equal(sample(model, x_T, SCHEDULE, name, 5, generator=seeded(3)), expected), name
    default = ddim(model, x_T, SCHEDULE, noise_levels(SCHEDULE, 50, "trailing"))
    assert torch.equal(sample(model, x_T, SCHEDULE), default)  # default: DDIM, 50 steps, trailing


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("steps, spacing", [(1, "trailing"), (7, "leading"), (10, "linspace"), (9, "karras")])
def test_a_sampler_on_noise_levels_is_sample_with_those_steps(name, steps, spacing):
    """Every sampler called directly on `noise_levels(schedule, steps, spacing)` gives what
    `sample` gives with the same steps and spacing, bit for bit, the sampler's own noise included."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(16, 2, generator=seeded(0))
    kwargs = {"eta": 0.5} if name in ("ddim", "euler_ancestral", "dpmpp_2m_sde") else {}
    direct = SAMPLERS[name](model, x_T, SCHEDULE, noise_levels(SCHEDULE, steps, spacing), generator=seeded(4), **kwargs)
    by_name = sample(model, x_T, SCHEDULE, name, steps, spacing=spacing, generator=seeded(4), **kwargs)
    assert torch.equal(direct, by_name)


# ----- timesteps and σ spacings ----------------------------------------------------------------------
def test_spacings_match_their_definitions():
    assert timesteps(1000, 4, "trailing") == [999, 749, 499, 249]
    assert timesteps(1000, 4, "leading") == [750, 500, 250, 0]
    assert timesteps(1000, 4, "linspace") == [999, 666, 333, 0]
    assert timesteps(10, 10, "trailing") == list(range(9, -1, -1))


@settings(max_examples=60, deadline=None)
@given(T=st.integers(2, 2000), data=st.data())
def test_timesteps_are_distinct_decreasing_and_in_range(T, data):
    steps = data.draw(st.integers(1, T))
    for spacing in ("linspace", "leading", "trailing"):
        ts = timesteps(T, steps, spacing)
        assert len(ts) == steps and all(a > b for a, b in pairwise(ts)), (spacing, ts)
        assert 0 <= ts[-1] and ts[0] <= T - 1
    assert timesteps(T, steps, "trailing")[0] == T - 1


def test_karras_sigmas_follow_eq_5():
    sigmas = karras_sigmas(0.01, 80.0, 10, rho=7.0)
    assert sigmas.shape == (11,) and sigmas.dtype == torch.float64
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[9].item() == pytest.approx(0.01) and sigmas[10] == 0
    root = sigmas[:10] ** (1 / 7)  # evenly spaced in σ^(1/ρ)
    torch.testing.assert_close(
        root.diff(), torch.full((9,), (0.01 ** (1 / 7) - 80 ** (1 / 7)) / 9, dtype=torch.float64)
    )
    assert karras_sigmas(0.01, 80.0, 1).tolist() == [80.0, 0.0]


def test_logsnr_levels_are_evenly_spaced_in_log_sigma():
    """The "logsnr" levels: σ_max, …, σ_min evenly spaced in log σ (so in λ = -log σ and in log-SNR = 2λ), then 0."""
    sigmas = noise_levels(SCHEDULE, 10, "logsnr")
    sigma_min, sigma_max = SCHEDULE.sigmas[0].item(), SCHEDULE.sigmas[-1].item()
    assert len(sigmas) == 11 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(sigma_max, rel=1e-12) and sigmas[9] == pytest.approx(sigma_min, rel=1e-12)
    log_sigmas = torch.tensor(sigmas[:10], dtype=torch.float64).log()
    step = (math.log(sigma_min) - math.log(sigma_max)) / 9
    torch.testing.assert_close(log_sigmas.diff(), torch.full((9,), step, dtype=torch.float64))
    assert noise_levels(SCHEDULE, 1, "logsnr") == pytest.approx([sigma_max, 0.0])


# ----- the noise levels a sampler is handed -----------------------------------------------------------
@pytest.mark.parametrize("spacing", SIGMA_SPACINGS)
def test_noise_levels_decrease_to_zero_and_pass_check_sigmas(spacing):
    sigmas = noise_levels(SCHEDULE, 10, spacing)
    assert len(sigmas) == 11 and sigmas[-1] == 0.0 and all(a > b for a, b in pairwise(sigmas))
    assert check_sigmas(sigmas) == sigmas
    if spacing in SPACINGS:  # the σ of the integer timesteps `timesteps` picks
        assert sigmas[:-1] == SCHEDULE.sigmas[timesteps(SCHEDULE.T, 10, spacing)].tolist()


@pytest.mark.parametrize(
    "sigmas",
    [
        [1.0, 2.0, 0.0],  # increasing
        [2.0, 1.0, 1.0, 0.0],  # not strictly decreasing
        [2.0, 1.0],  # does not end at 0
        [2.0, 1.0, 0.5],
        [float("nan"), 0.0],
        [2.0, float("nan"), 0.0],
        [float("inf"), 0.0],
        [],
        torch.tensor([2.0, 1.0]),
        ["2", "0"],
    ],
    ids=repr,
)
def test_check_sigmas_refuses_bad_levels(sigmas):
    with pytest.raises(ValueError, match="sigmas must"):
        check_sigmas(sigmas)


@pytest.mark.parametrize("name", ALL_RUNS)
@pytest.mark.parametrize("sigmas", [[1.0, 2.0, 0.0], [2.0, 1.0], [float("nan"), 0.0], []], ids=repr)
def test_every_sampler_checks_its_sigmas(name, sigmas):
    model, x = GaussianEps(SCHEDULE, MU, S), torch.randn(4, 2, generator=seeded(0))
    run = ddim_invert if name == "ddim_invert" else SAMPLERS[name]
    with pytest.raises(ValueError, match="sigmas must"):
        run(model, x, SCHEDULE, sigmas)


def test_check_sigmas_takes_a_tensor_and_so_do_the_samplers():
    assert check_sigmas(torch.tensor([2.0, 0.5, 0.0])) == [2.0, 0.5, 0.0]
    assert check_sigmas((3, 1, 0)) == [3.0, 1.0, 0.0] and check_sigmas([0.0]) == [0.0]
    model = GaussianEps(SCHEDULE, MU, S)
    x_T = torch.randn(8, 2, generator=seeded(0))
    sigmas = noise_levels(SCHEDULE, 6, "karras")
    for name, sampler in SAMPLERS.items():
        from_list = sampler(model, x_T, SCHEDULE, sigmas, generator=seeded(1))
        from_tensor = sampler(model, x_T, SCHEDULE, torch.tensor(sigmas, dtype=torch.float64), generator=seeded(1))
        assert torch.equal(from_tensor, from_list), name
        assert torch.equal(sampler(model, x_T, SCHEDULE, [0.0]), x_T), name  # no level to step from: no step


# ----- the one-step pieces: denoise and ddim_step ------------------------------------------------------
def test_denoise_is_x_minus_sigma_times_eps():
    """D(x̃; σ) = x̃ - σ·ε̂(x̃·√ᾱ, t(σ)) for an ε-model written down here, and, for Gaussian data
    N(μ, s²I), the closed form D(x̃; σ) = μ + s²/(s² + σ²)·(x̃ - μ)."""
    calls = []

    def eps_model(x_t, t):
        calls.append(t)
        return 0.3 * x_t + t[:, None] / 1000

    x = torch.randn(6, 2, generator=seeded(0), dtype=torch.float64)
    for t in (0, 250, 999):
        sigma = SCHEDULE.sigmas[t].item()
        expected = x - sigma * (0.3 * x / (1 + sigma**2) ** 0.5 + t / 1000)
        torch.testing.assert_close(denoise(eps_model, x, SCHEDULE, sigma), expected)
        assert calls[-1].shape == (6,) and calls[-1].dtype == x.dtype
        torch.testing.assert_close(calls[-1], torch.full((6,), float(t), dtype=torch.float64))
    mu = torch.tensor(MU, dtype=torch.float64)
    for sigma in (0.05, 1.0, 30.0):
        exact = mu + S**2 / (S**2 + sigma**2) * (x - mu)
        torch.testing.assert_close(denoise(GaussianEps(SCHEDULE, MU, S), x, SCHEDULE, sigma), exact)


def test_ddim_step_there_and_back_recovers_x_t():
    """η = 0, from σ to the next of all T levels and back again: x_t comes back up to an error
    of second order in the step (halving the step quarters it), on the exact mixture denoiser."""
    model = MIXTURE.eps_model(SCHEDULE)
    sigmas = noise_levels(SCHEDULE, SCHEDULE.T)
    x0, eps = MIXTURE.sample(256, seeded(0)).double(), torch.randn(256, 2, generator=seeded(1), dtype=torch.float64)
    for i in (100, 500, 900):  # high, middle and low noise
        sigma = sigmas[i]
        alpha_bar = 1 / (1 + sigma**2)
        x_t = alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
        errors = []
        for gap in (2, 1):
            x_next, x0_hat = ddim_step(model, x_t, SCHEDULE, sigma, sigmas[i + gap])
            back, _ = ddim_step(model, x_next, SCHEDULE, sigmas[i + gap], sigma)
            errors.append((back - x_t).abs().max().item())
            assert (x_next - x_t).abs().max().item() > 10 * errors[-1]  # it did move
        assert errors[1] < 1e-3, (i, errors)
        assert 3 < errors[0] / errors[1] < 5, (i, errors)


def test_ddim_step_is_one_step_of_ddim():
    """ddim_step returns (x_next, x̂0): one DDIM step (any η, same noise) and the model's x̂0."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_t = torch.randn(16, 2, generator=seeded(0), dtype=torch.float64)
    sigma = SCHEDULE.sigmas[400].item()
    for eta in (0.0, 0.5, 1.0):
        x_next, x0_hat = ddim_step(model, x_t, SCHEDULE, sigma, 0.0, eta, generator=seeded(2))
        assert torch.equal(x_next, ddim(model, x_t, SCHEDULE, [sigma, 0.0], generator=seeded(2), eta=eta))
        alpha_bar = torch.tensor(1 / (1 + sigma**2), dtype=torch.float64)
        expected_x0 = x0_from_eps(x_t, model(x_t, torch.full((16,), 400.0, dtype=torch.float64)), alpha_bar)
        torch.testing.assert_close(x0_hat, expected_x0)
    with pytest.raises(ValueError, match="eta > 0 adds noise, which needs a step down"):
        ddim_step(model, x_t, SCHEDULE, 0.5, sigma, eta=0.5)
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
        ddim_step(model, x_t, SCHEDULE, sigma, 0.5, eta=2.0)


# ----- bad arguments ------------------------------------------------------------------------------
@pytest.fixture
def args():
    return MIXTURE.eps_model(SCHEDULE), torch.randn(4, 2)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5])
def test_steps_out_of_range(args, sampler, steps):
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000\] \(T = 1000.*got"):
        sample(*args, SCHEDULE, sampler, steps)


def test_unknown_sampler_lists_the_valid_names(args):
    with pytest.raises(ValueError, match="unknown sampler 'plms'; expected one of 'ddpm', 'ddim', 'euler'"):
        sample(*args, SCHEDULE, "plms")


def test_unknown_spacing(args):
    with pytest.raises(ValueError, match="unknown spacing 'cosine'; expected one of .*'karras'"):
        sample(*args, SCHEDULE, "euler", spacing="cosine")
    with pytest.raises(ValueError, match="unknown spacing 'cosine'; expected one of .*'karras'"):
        noise_levels(SCHEDULE, 10, "cosine")
    with pytest.raises(ValueError, match="unknown spacing 'karras'"):  # integer timesteps only
        timesteps(1000, 10, "karras")


@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral", "dpmpp_2m_sde"])
@pytest.mark.parametrize("eta", [-0.1, 1.5, float("nan"), "1"])
def test_eta_outside_0_1(args, sampler, eta):
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
        sample(*args, SCHEDULE, sampler, eta=eta)


def test_argument_a_sampler_does_not_take(args):
    with pytest.raises(TypeError, match="eta"):
        sample(*args, SCHEDULE, "heun", eta=0.5)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_bad_x_T(sampler):
    model = MIXTURE.eps_model(SCHEDULE)
    with pytest.raises(TypeError, match="x_T must be a torch.Tensor, got list"):
        sample(model, [[0.0, 1.0]], SCHEDULE, sampler)
    with pytest.raises(ValueError, match="x_T contains NaN or infinite values"):
        sample(model, torch.tensor([[0.0, float("nan")]]), SCHEDULE, sampler)
    with pytest.raises(TypeError, match="x_T must be a floating-point tensor"):
        sample(model, torch.zeros(3, 2, dtype=torch.long), SCHEDULE, sampler)


def test_bad_x0_for_inversion(args):
    with pytest.raises(ValueError, match="x0 contains NaN"):
        ddim_invert(args[0], torch.full((4, 2), float("inf")), SCHEDULE, noise_levels(SCHEDULE, 10))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_model_output_of_the_wrong_shape(sampler):
    model = lambda x_t, t: torch.zeros(x_t.shape[0], 3)  # noqa: E731
    with pytest.raises(ValueError, match=r"model output must have the shape of x_t \(4, 2\), got \(4, 3\)"):
        sample(model, torch.randn(4, 2), SCHEDULE, sampler, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigma_min": 0.0}, "0 < sigma_min < sigma_max"),
        ({"sigma_min": 100.0}, "0 < sigma_min < sigma_max"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"rho": 0.0}, "rho must be positive"),
    ],
)
def test_bad_karras_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        karras_sigmas(**{"sigma_min": 0.01, "sigma_max": 80.0, "steps": 10, **kwargs})
