"""minidiff.diffusers_bridge, checked against diffusers as the independent reference: its schedulers,
driven by a minidiff model from the same noise, give minidiff's samples; a minidiff model saved as a
local diffusers pipeline loads back bit for bit; bad inputs get errors naming the argument.
Skipped without diffusers (`pip install 'minidiff[diffusers]'`)."""

import json

import pytest
import torch

pytest.importorskip("diffusers")

import diffusers  # noqa: E402

from minidiff import generate, img2img, load_pretrained, noise_levels, sample  # noqa: E402
from minidiff.data import three_gaussians  # noqa: E402
from minidiff.diffusers_bridge import (  # noqa: E402
    NAMES,
    SCHEDULERS,
    MinidiffDenoiser,
    MinidiffPipeline,
    check_scheduler,
    load_pipeline,
    make_scheduler,
    scheduler_sample,
    unet2d_settings,
)
from minidiff.guidance import classifier_free_guidance  # noqa: E402
from minidiff.schedules import NoiseSchedule  # noqa: E402

SCHEDULE = NoiseSchedule.cosine(1000)  # the shipped models'
MIXTURE = three_gaussians()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# How close each scheduler comes to minidiff's sampler on the exact mixture model, in float32 (diffusers'
# working precision: it keeps σ and ᾱ in float32 and draws its SDE noise in float32). On the linear schedule
# (σ_max = 157) measured over 10, 20, 25 steps: 1e-6 … 4e-6 for DDIM, DPM++ 2M (ODE and SDE) and UniPC,
# up to 1.3e-4 for DDPM and Euler a, 6.4e-4 for Euler. On the cosine schedule σ_max ≈ 2·10⁴: the first
# x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ divides by √ᾱ ≈ 5e-5 and loses its last digits, in every sampler of both
# libraries (as x̃ − σ·ε̂ on x̃ = x_t/√ᾱ in minidiff and diffusers' Euler ones, on x_t in diffusers' DDIM,
# DDPM, DPM-Solver and UniPC); only DDIM computes it the same way in both (2e-5), the others then agree
# only to float32 rounding of that: up to 9e-3 measured.
TOLERANCE = {"linear": {"ddpm": 5e-4, "ddim": 1e-5, "euler": 2e-3, "euler_ancestral": 5e-4, "heun": 2e-4,
                        "dpmpp_2m": 1e-5, "dpmpp_2m_sde": 1e-5, "unipc": 1e-5},
             "cosine": dict.fromkeys(SCHEDULERS, 2e-2) | {"ddim": 1e-4}}
CASES = [(name, s) for name in TOLERANCE for s in SCHEDULERS if (name, s) != ("cosine", "heun")]  # see below


@pytest.mark.parametrize("name, sampler", CASES)
def test_each_scheduler_gives_the_minidiff_samplers_samples(name, sampler):
    """From the same x_T, with the same generator for the ancestral ones: diffusers' scheduler from
    `make_scheduler` and minidiff's sampler, trailing spacing, land on the same points."""
    schedule = NoiseSchedule.from_name(name)
    model = MIXTURE.eps_model(schedule)
    x_T = torch.randn(64, 2, generator=seeded(0))
    for steps in (10, 20, 25):
        theirs = scheduler_sample(make_scheduler(schedule, sampler), model, x_T, steps, generator=seeded(1))
        ours = sample(model, x_T, schedule, sampler, steps, generator=seeded(1))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE[name][sampler])


def test_heun_agrees_on_karras_levels_and_fails_alike_on_the_cosine_schedules_first_trailing_step():
    """Heun's trapezoid is taken in σ: on the cosine schedule, trailing spacing's first step goes from
    σ ≈ 2·10⁴ to σ ≈ 6, and both libraries land far from the ODE's solution there (differently:
    measured 0.39 apart at 10 steps). On Karras levels, which shrink σ gradually, they agree."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0))
    exact = sample(model, x_T, SCHEDULE, "ddim", 1000)  # the probability-flow ODE, converged
    karras = {"use_karras_sigmas": True, "timestep_spacing": "linspace"}
    for steps in (10, 20):
        theirs = scheduler_sample(make_scheduler(SCHEDULE, "heun", **karras), model, x_T, steps)
        ours = sample(model, x_T, SCHEDULE, "heun", steps, spacing="karras")
        torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-3)
        trailing = [sample(model, x_T, SCHEDULE, "heun", steps),
                    scheduler_sample(make_scheduler(SCHEDULE, "heun"), model, x_T, steps)]
        assert all((x - exact).abs().max() > 10 * (ours - exact).abs().max() for x in trailing)


def test_karras_sigmas_with_linspace_spacing_are_minidiffs_karras_levels():
    """use_karras_sigmas=True with timestep_spacing "linspace" spans the σ's of t = 0 … T-1, as
    minidiff's "karras" spacing does; Euler (fractional timesteps) then gives minidiff's samples."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0))
    scheduler = make_scheduler(SCHEDULE, "euler", use_karras_sigmas=True, timestep_spacing="linspace")
    scheduler.set_timesteps(12)
    levels = torch.tensor(noise_levels(SCHEDULE, 12, "karras"), dtype=torch.float64)
    torch.testing.assert_close(scheduler.sigmas.double(), levels, rtol=1e-3, atol=0)  # measured 2.6e-4: float32 ᾱ
    theirs = scheduler_sample(scheduler, model, x_T, 12)
    torch.testing.assert_close(sample(model, x_T, SCHEDULE, "euler", 12, "karras"), theirs, rtol=0, atol=2e-2)


def test_euler_karras_sigmas_follow_the_timestep_spacing_dpm_solvers_do_not():
    """diffusers' Euler takes Karras σ's between the σ's of the timesteps its spacing picks (trailing,
    20 steps: down to σ at t = 49); DPM-Solver between σ at t = 0 and t = T-1 whatever the spacing."""
    smallest = {}
    for name in ("euler", "dpmpp_2m"):
        scheduler = make_scheduler(SCHEDULE, name, use_karras_sigmas=True)  # trailing
        scheduler.set_timesteps(20)
        smallest[name] = scheduler.sigmas[-2].item()
    assert smallest["euler"] == pytest.approx(SCHEDULE.sigmas[49].item(), rel=1e-4)
    assert smallest["dpmpp_2m"] == pytest.approx(SCHEDULE.sigmas[0].item(), rel=1e-3)


def test_dpm_solver_karras_is_minidiffs_with_the_model_at_rounded_timesteps():
    """DPMSolverMultistepScheduler makes its Karras timesteps integers (rounded, then cast to int64):
    minidiff's dpmpp_2m with the model called at round(t) gives its samples, at fractional t it does not."""
    model = MIXTURE.eps_model(SCHEDULE)
    x_T = torch.randn(64, 2, generator=seeded(0))
    settings = {"use_karras_sigmas": True, "timestep_spacing": "linspace"}
    theirs = scheduler_sample(make_scheduler(SCHEDULE, "dpmpp_2m", **settings), model, x_T, 20)
    rounded = sample(lambda x, t: model(x, t.round()), x_T, SCHEDULE, "dpmpp_2m", 20, "karras")
    fractional = sample(model, x_T, SCHEDULE, "dpmpp_2m", 20, "karras")
    torch.testing.assert_close(rounded, theirs, rtol=0, atol=2e-2)
    assert (fractional - theirs).abs().max() > 10 * (rounded - theirs).abs().max()


def test_a_scheduler_on_other_betas_is_refused_naming_the_argument():
    check_scheduler(make_scheduler(SCHEDULE, "ddim"), SCHEDULE)
    with pytest.raises(ValueError, match=r"scheduler's noise schedule is not the model's \(cosine\).*trained_betas"):
        check_scheduler(diffusers.DDIMScheduler(), SCHEDULE)  # diffusers' default: linear β's
    with pytest.raises(ValueError, match="num_train_timesteps=500.*T = 1000"):
        check_scheduler(make_scheduler(NoiseSchedule.cosine(500), "ddim"), SCHEDULE)
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_scheduler(SCHEDULE, "consistency")
    with pytest.raises(ValueError, match="prediction must be one of"):
        make_scheduler(SCHEDULE, "ddim", prediction="flow")


@pytest.fixture(scope="module")
def shapes():
    ckpt = load_pretrained("shapes_class")
    scheduler = make_scheduler(ckpt.schedule, "ddim", ckpt.prediction)
    pipe = MinidiffPipeline(MinidiffDenoiser.from_checkpoint(ckpt), scheduler)
    return ckpt, pipe


def test_the_pipeline_is_generate_under_diffusers_names(shapes):
    """guidance_scale is generate's guidance, negative_class_labels its negative, num_inference_steps its
    steps; the pipeline drives the raw v-prediction (prediction_type "v_prediction"), generate the ε it
    converts to: the same samples to float32 rounding (measured 1.5e-3 and 2.5e-3 at 20 steps; generate's
    ε detour divides by √ᾱ ≈ 5e-5 at t = T-1, the pipeline's x̂0 = √ᾱ·x_t − √(1−ᾱ)·v does not)."""
    ckpt, pipe = shapes
    y = torch.arange(3)
    for negative in (None, y + 1):
        ours = generate(ckpt, 3, label=y, guidance=3.0, negative=negative, steps=10, seed=0)
        theirs = pipe(3, class_labels=y, guidance_scale=3.0, negative_class_labels=negative, num_inference_steps=10,
                      generator=seeded(0))
        torch.testing.assert_close(theirs, ours, rtol=0, atol=5e-3)


def test_guidance_scale_at_most_1_is_no_guidance_as_in_diffusers(shapes):
    """diffusers' Stable Diffusion pipelines guide only when guidance_scale > 1 and then ignore the negative
    prompt; so does the pipeline: at w ≤ 1 it is generate at guidance 1, the conditional model alone."""
    ckpt, pipe = shapes
    y = torch.arange(3)
    run = lambda w, negative=None: pipe(3, class_labels=y, guidance_scale=w, negative_class_labels=negative,  # noqa: E731
                                        num_inference_steps=10, generator=seeded(0))
    conditional = run(1.0)
    assert torch.equal(run(0.5, y + 1), conditional) and torch.equal(run(1.0, y + 1), conditional)
    ours = generate(ckpt, 3, label=y, guidance=1.0, steps=10, seed=0)
    torch.testing.assert_close(conditional, ours, rtol=0, atol=1e-2)  # generate's ε detour: 7.8e-3 measured
    assert (generate(ckpt, 3, label=y, guidance=0.5, steps=10, seed=0) - conditional).abs().max() > 0.05


def test_img2img_strength_truncates_in_diffusers_and_rounds_in_minidiff(shapes):
    ckpt, pipe = shapes
    y = torch.arange(2)
    x0 = generate(ckpt, 2, label=y, steps=5, seed=3)
    guided = classifier_free_guidance(ckpt.eps_model, y, ckpt.model.null_condition(y), 3.0)
    run = lambda s: (img2img(guided, x0, ckpt.schedule, s, steps=10, generator=seeded(2)).clamp(-1, 1),  # noqa: E731
                     pipe(2, class_labels=y, guidance_scale=3.0, num_inference_steps=10, image=x0, strength=s,
                          generator=seeded(2)))
    torch.testing.assert_close(*run(0.6), rtol=0, atol=1e-4)  # 6 steps in both
    ours, theirs = run(0.55)  # round(5.5) = 6 steps here, int(5.5) = 5 there
    assert (ours - theirs).abs().max() > 0.05


def test_saved_pipeline_loads_back_bit_for_bit(shapes, tmp_path):
    _, pipe = shapes
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == ["minidiff.diffusers_bridge", "MinidiffDenoiser"]
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = load_pipeline(tmp_path)
    call = dict(batch_size=2, class_labels=torch.tensor([1, 7]), guidance_scale=3.0, num_inference_steps=5)
    assert torch.equal(pipe(**call, generator=seeded(0)), reloaded(**call, generator=seeded(0)))
    state, again = pipe.unet.state_dict(), reloaded.unet.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)


def test_load_pipeline_refuses_code_and_foreign_classes(shapes, tmp_path):
    _, pipe = shapes
    pipe.save_pretrained(tmp_path)
    (tmp_path / "unet" / "minidiff.diffusers_bridge.py").write_text("raise SystemExit('ran code from the folder')")
    with pytest.raises(ValueError, match="holds Python files"):
        load_pipeline(tmp_path)
    (tmp_path / "unet" / "minidiff.diffusers_bridge.py").unlink()
    index = json.loads((tmp_path / "model_index.json").read_text())
    index["unet"] = ["diffusers", "UNet2DModel"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="must name a MinidiffPipeline"):
        load_pipeline(tmp_path)
    with pytest.raises(FileNotFoundError, match="model_index.json is missing"):
        load_pipeline(tmp_path / "nowhere")


def test_a_flow_model_is_refused_by_name():
    with pytest.raises(ValueError, match="ckpt must be an ε-, v- or x0-predicting"):
        MinidiffDenoiser.from_checkpoint(load_pretrained("shapes_flow"))


def test_unet2d_settings_build_a_unet2dmodel_of_the_same_shape():
    ckpt = load_pretrained("shapes_class")
    twin = diffusers.UNet2DModel(**unet2d_settings(ckpt.model.config, 32))
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 500]), torch.tensor([0, 16])  # 16: the null label
    assert twin(x, t, class_labels=y).sample.shape == x.shape
    assert twin.config.block_out_channels == (32, 64, 64)


def test_every_name_row_is_filled():
    assert all(ours and theirs for ours, theirs, _ in NAMES)
    assert {"guidance_scale", "num_inference_steps", "negative_prompt", "trained_betas"} <= {
        word for _, theirs, _ in NAMES for word in theirs.replace("(", " ").replace(")", " ").split()}
