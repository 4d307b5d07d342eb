"""Optimised noise levels (`minidiff.optimise_steps`), fitted on the exact ε-predictor of the 2-D
three-Gaussian mixture under the cosine schedule (no training): a few sweeps at 4–5 steps take a
fraction of a second, the converged references a second."""

import math
import re
from functools import cache

import pytest
import torch

from minidiff import NoiseSchedule
from minidiff.data import three_gaussians
from minidiff.optimise_steps import is_deterministic, optimise_sigmas, reference_solution, sampling_error
from minidiff.samplers import SAMPLERS, check_sigmas, dpmpp_2m, noise_levels

SCHEDULE = NoiseSchedule.cosine()  # T = 1000, σ from 0.0064 to 20 291
MODEL = three_gaussians().eps_model(SCHEDULE)
SIGMA_MIN, SIGMA_MAX = SCHEDULE.sigmas[0].item(), SCHEDULE.sigmas[-1].item()
FAST = {"sweeps": 2, "evaluations": 8}


def noises(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


@cache
def problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noises x_T and their converged answers (UniPC-2 over 500 log-SNR steps: 3e-5 RMS from 1,000
    steps, far below the few-step errors measured here, which are 0.3 and more)."""
    x_T = noises(n, seed)
    return x_T, reference_solution(MODEL, x_T, SCHEDULE, steps=500)


def fit() -> tuple[torch.Tensor, torch.Tensor]:
    return problem(128, 0)


@cache
def optimised(sampler: str, steps: int, start: str) -> tuple[float, ...]:
    x_T, reference = fit()
    return tuple(optimise_sigmas(MODEL, x_T, SCHEDULE, sampler, steps, start, reference=reference, **FAST))


def rms(x_T, reference, sampler, sigmas) -> float:
    return sampling_error(MODEL, x_T, SCHEDULE, sampler, list(sigmas), reference) ** 0.5


CASES = [("dpmpp_2m", 4, "trailing"), ("dpmpp_2m", 5, "karras"), ("euler", 4, "linspace"), ("heun", 3, "trailing")]


@pytest.mark.parametrize("sampler, steps, start", CASES)
def test_output_is_a_valid_list_of_noise_levels(sampler, steps, start):
    sigmas = list(optimised(sampler, steps, start))
    assert check_sigmas(sigmas) == sigmas and all(type(s) is float for s in sigmas)
    assert len(sigmas) == steps + 1
    assert sigmas[0] == SIGMA_MAX and sigmas[-1] == 0.0
    assert all(SIGMA_MIN <= s < SIGMA_MAX for s in sigmas[1:-1]), sigmas


@pytest.mark.parametrize("sampler, steps, start", CASES)
def test_never_worse_than_its_start_on_the_noises_it_was_fitted_to(sampler, steps, start):
    x_T, reference = fit()
    before = rms(x_T, reference, sampler, noise_levels(SCHEDULE, steps, start))
    after = rms(x_T, reference, sampler, optimised(sampler, steps, start))
    assert after < before, (before, after)


def test_refining_its_own_result_never_makes_it_worse():
    """Started from levels it already settled on, with a search too short to find anything better,
    every move it tries is worse: it must hand the start back (keeps the best seen)."""
    x_T, reference = fit()
    start = list(optimised("dpmpp_2m", 4, "trailing"))
    again = optimise_sigmas(MODEL, x_T, SCHEDULE, "dpmpp_2m", 4, start, reference=reference, sweeps=1, evaluations=3)
    assert rms(x_T, reference, "dpmpp_2m", again) <= rms(x_T, reference, "dpmpp_2m", start)


def test_neighbouring_steps_keep_within_max_ratio():
    """From even log-SNR steps (ratio 1), no step between interior levels grows past twice its neighbour."""
    x_T, reference = fit()
    sigmas = optimise_sigmas(MODEL, x_T, SCHEDULE, "dpmpp_2m", 6, "logsnr", reference=reference, max_ratio=2.0, **FAST)
    h = [math.log(a / b) for a, b in zip(sigmas[1:-2], sigmas[2:-1], strict=True)]  # steps between σ_1 … σ_5
    assert all(1 / 2 - 1e-9 <= a / b <= 2 + 1e-9 for a, b in zip(h, h[1:], strict=False)), h
    assert sigmas != noise_levels(SCHEDULE, 6, "logsnr")  # it did move


def test_reproducible():
    x_T, reference = fit()
    runs = [optimise_sigmas(MODEL, x_T.clone(), SCHEDULE, "dpmpp_2m", 4, "trailing", reference=reference.clone(),
                            **FAST) for _ in range(2)]
    assert runs[0] == runs[1] == list(optimised("dpmpp_2m", 4, "trailing"))


@pytest.mark.parametrize(("sampler", "steps", "start", "at_most"), [
    ("dpmpp_2m", 4, "trailing", 0.85), ("dpmpp_2m", 5, "karras", 0.4), ("euler", 4, "linspace", 0.85),
])
def test_improves_on_held_out_noises(sampler, steps, start, at_most):
    """Fitted to 128 noises, judged on 1,000 others: measured 0.76×, 0.30× and 0.76× the start's RMS error."""
    x_T, reference = problem(1000, 1)
    before = rms(x_T, reference, sampler, noise_levels(SCHEDULE, steps, start))
    after = rms(x_T, reference, sampler, optimised(sampler, steps, start))
    assert after < at_most * before, (before, after)


def test_reference_has_converged():
    """Twice the steps moves the answer by far less than the errors the optimiser works on."""
    x_T = noises(64, 2)
    coarse, fine = (reference_solution(MODEL, x_T, SCHEDULE, steps=n) for n in (500, 1000))
    assert (coarse - fine).norm(dim=1).pow(2).mean().sqrt() < 1e-4  # measured 3e-5


def test_sampling_error_is_the_mean_squared_distance():
    x_T = noises(8, 3)
    sigmas = noise_levels(SCHEDULE, 3, "trailing")
    reference = torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
    x0 = dpmpp_2m(MODEL, x_T, SCHEDULE, sigmas)
    expected = (x0 - reference).pow(2).sum(1).mean().item()
    assert math.isclose(sampling_error(MODEL, x_T, SCHEDULE, "dpmpp_2m", sigmas, reference), expected)


def test_tells_deterministic_samplers_from_stochastic_ones():
    x_T, sigmas = noises(2, 4), noise_levels(SCHEDULE, 3)
    assert is_deterministic(MODEL, x_T, SCHEDULE, "dpmpp_2m", sigmas)
    assert is_deterministic(MODEL, x_T, SCHEDULE, "ddim", sigmas)
    assert not is_deterministic(MODEL, x_T, SCHEDULE, "ddpm", sigmas)
    assert not is_deterministic(MODEL, x_T, SCHEDULE, "ddim", sigmas, eta=1.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"sampler": "dpm"}, "unknown sampler 'dpm'"),
    ({"sampler": "ddpm"}, "draws fresh noise"),
    ({"steps": 1}, "steps must be an integer >= 2"),
    ({"steps": 2.5}, "steps must be an integer >= 2"),
    ({"steps": 1001}, "steps must be an integer in"),
    ({"start": "even"}, "unknown start 'even'"),
    ({"start": "leading"}, "not at the schedule's σ_max"),
    ({"start": [10.0, 1.0, 0.5, 0.1, 0.0]}, "not at the schedule's σ_max"),
    ({"start": [SIGMA_MAX, 1.0, 0.0]}, "start must hold steps + 1 = 5 noise levels"),
    ({"start": [SIGMA_MAX, 1.0, 0.1, 1e-3, 0.0]}, "below the schedule's σ_min"),
    ({"start": [SIGMA_MAX, 1.0, 2.0, 0.1, 0.0]}, "sigmas must decrease strictly"),
    ({"sweeps": 0}, "sweeps must be an integer >= 1"),
    ({"evaluations": 2}, "evaluations must be an integer >= 3"),
    ({"max_ratio": 1.0}, "max_ratio must be a number > 1"),
    ({"reference": torch.zeros(3, 2)}, "reference must have the shape of x_T (4, 2)"),
    ({"reference": torch.full((4, 2), math.nan)}, "reference contains NaN"),
    ({"x_T": torch.full((4, 2), math.inf)}, "x_T contains NaN or infinite"),
])
def test_clear_errors_for_bad_arguments(change, message):
    args = {"x_T": noises(4, 5), "sampler": "dpmpp_2m", "steps": 4, "start": "trailing",
            "reference": torch.zeros(4, 2), **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        optimise_sigmas(MODEL, args.pop("x_T"), SCHEDULE, **args)


def test_reference_checks_its_arguments():
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        reference_solution(MODEL, noises(2, 6), SCHEDULE, steps=1)
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        reference_solution(MODEL, noises(2, 6), SCHEDULE, sampler="rk4")


def test_fitted_levels_are_stored_with_a_shipped_model_and_used_by_generate(tmp_path):
    """publish.fit_steps fits levels to a shipped model, writes them into its file (whose new sha256
    the manifest records) and its manifest entry; generate(spacing="optimised") then samples with them."""
    import shutil

    from minidiff import generate, load_pretrained, pretrained_info
    from minidiff.files import WEIGHTS_DIR
    from minidiff.pretrained import MANIFEST
    from minidiff.publish import fit_steps

    for name in ("digits.safetensors", MANIFEST):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    entry = fit_steps("digits", "dpmpp_2m", steps=(3,), n=4, reference_steps=20, sweeps=1, weights_dir=tmp_path)
    rms = entry["optimised_sigmas"]["dpmpp_2m"]["rms_error"]["3"]["fitted_noises"]
    assert rms["optimised"] <= rms["trailing"]
    ckpt = load_pretrained("digits", weights_dir=tmp_path)  # the sha256 check passes on the rewritten file
    levels = ckpt.meta["optimised_sigmas"]["dpmpp_2m"]["levels"]["3"]
    assert len(levels) == 4 and levels[-1] == 0.0
    assert pretrained_info("digits", tmp_path)["sha256"] != pretrained_info("digits")["sha256"]
    by_hand = SAMPLERS["dpmpp_2m"](ckpt.eps_model, torch.randn((2, 1, 16, 16), generator=torch.Generator()
                                   .manual_seed(0)), ckpt.schedule, levels).clamp(-1, 1)
    torch.testing.assert_close(generate(ckpt, 2, sampler="dpmpp_2m", steps=3, spacing="optimised"), by_hand)
    for key, value in load_pretrained("digits").model.state_dict().items():  # the weights are unchanged
        assert torch.equal(ckpt.model.state_dict()[key], value), key
