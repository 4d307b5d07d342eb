"""Shipped models: listed, verified by sha256 before loading, and good enough to be worth shipping."""

import shutil

import pytest
import torch

from minidiff import list_pretrained, load_pretrained, pretrained_info, sample
from minidiff.data.images import SHAPE_CLASSES, ShapesDataset
from minidiff.files import WEIGHTS_DIR, WeightsError
from minidiff.generate import generate
from minidiff.latent import decode, encode
from minidiff.metrics import ImageMetric, control_adherence, dataset_metric
from minidiff.nn.lora import load_adapter
from minidiff.pretrained import MANIFEST, list_vaes, load_vae, vae_info
from minidiff.recipes import RECIPES

SHAPES_FD = 15.0
# accuracy at guidance 5 on 32 DDIM-20 samples (2 per class), below what each model measured:
# shapes_class 97%, shapes_text 80% (of the 30 trained classes' samples), shapes_latent 91%
CONDITIONAL_THRESHOLDS = {"shapes_class": 0.9, "shapes_text": 0.9, "shapes_latent": 0.9,  # measured: 100% each
                          "shapes_latent_f8": 0.9, "shapes_flow": 0.9,  # (the flow model through the bridge, by DDIM)
                          "shapes_text_seed1": 0.9,  # the same recipe from another seed (lesson 13's second base)
                          "shapes_dit": 0.4}  # the DiT, at the U-Net's CPU minutes, is far behind: 64% at w = 5
# shapes_dit does not meet the aims at the U-Net's training cost (FD 16.5 at best against 0.70 for real
# images, 64% at most; its manifest and lesson 11 say so), so it is not held to them
AIMS_MET = [name for name in CONDITIONAL_THRESHOLDS if name != "shapes_dit"]
# the consistency student is tested on its own (below): sampled in 1–4 calls, not by DDIM-20 with guidance
# (accuracy at least, FD below) for 32 one-call samples; measured 47% and 26.4 (256 at publish: 45%, 25.0), where
# the teacher's one call (DDIM-1, w = 1.5) scores 6% and 1,526, and noise 11,876: one jump does what 1 step cannot
STUDENT_ONE_CALL = (0.3, 60.0)


def test_digits_is_listed_with_its_provenance():
    assert "digits" in list_pretrained()
    info = pretrained_info("digits")
    assert info["recipe"] in RECIPES and info["command"].startswith("python -m minidiff train --recipe digits")
    assert info["steps"] > 0 and info["training_time"] and info["machine"]
    assert info["metric"]["fd"] < 2 * info["baseline"]["fd"] + 1  # what the manifest claims, recorded at publish


def test_digits_loads_and_its_samples_beat_a_threshold():
    """128 DDIM-20 samples: FD below 4 (real digits score about 1.3 at this size, blurred ones 3.4,
    noise 57) and at least 9 of the 10 digits present."""
    ckpt = load_pretrained("digits")
    assert ckpt.sample_shape == (1, 16, 16) and ckpt.prediction == "v"
    x_T = torch.randn(128, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    images = sample(ckpt.eps_model, x_T, ckpt.schedule, "ddim", steps=20)
    scores = ImageMetric("digits").evaluate(images)
    assert scores["fd"] < 4.0, scores
    assert scores["classes_covered"] >= 9, scores


def test_a_modified_model_file_is_refused(tmp_path):
    for name in ("digits.safetensors", MANIFEST):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    path = tmp_path / "digits.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_pretrained("digits", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown pretrained model 'cifar'.*digits"):
        load_pretrained("cifar")


def test_every_shipped_model_came_from_a_committed_recipe():
    for name in list_pretrained():
        info = pretrained_info(name)
        assert info["recipe"] in RECIPES, name
        assert info["command"].startswith(f"python -m minidiff train --recipe {info['recipe']} "), name
        assert info["training_time"] and info["machine"], name
        if "base" in info:  # an adapter: measured on its concept and on every other class, beside its base's
            assert info["base"] == RECIPES[info["recipe"]].base and info["metric"]["samples_per_class"] >= 64, name
        else:
            assert info["metric"]["samples"] >= 256, name
        assert (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size < 10e6, f"{name}: keep shipped files small"


def test_half_precision_changed_no_recorded_metric():
    """Models shipped in float16 were measured both ways at publish time (same samples and seed):
    the Fréchet distance within 3% and the accuracy within 2 points of the float32 weights'."""
    halved = [n for n in list_pretrained() if pretrained_info(n).get("weights") == "float16"]
    assert "digits" in halved
    for name in halved:
        info = pretrained_info(name)
        now, before = info["metric"], info["float32_metric"]
        key = "fd" if "fd" in now else "sliced_wasserstein"  # images; 2-D points
        assert abs(now[key] - before[key]) <= 0.03 * before[key], name
        assert abs(now.get("accuracy", 0) - before.get("accuracy", 0)) <= 0.02, name
    for name in list_vaes():
        metric = vae_info(name)["metric"]
        assert vae_info(name)["weights"] == "float16", name
        assert abs(metric["heldout_mse"] - metric["float32_heldout_mse"]) <= 0.02 * metric["float32_heldout_mse"], name


@pytest.mark.parametrize("name", AIMS_MET)
def test_conditional_models_meet_the_recipe_aims_they_were_published_with(name):
    """What publish measured (256 DDIM-25 samples per scale): at the best guidance scale the FD is
    within 2× of as many real images', and at some scale w <= 3 at least 95% of the samples are
    the class asked for (for the text model: of the prompts it was trained on)."""
    info = pretrained_info(name)
    sweep = {float(w): m for w, m in info["by_guidance"].items()}
    assert min(m["fd"] for m in sweep.values()) <= 2 * info["baseline"]["fd"], sweep
    assert max(m.get("accuracy_seen", m["accuracy"]) for w, m in sweep.items() if w <= 3) >= 0.95, sweep


def test_shapes_loads_and_its_samples_beat_a_threshold():
    """64 DDIM-20 samples of the unconditional shapes model: FD below 15 (measured 8.3; at this
    count real training shapes score 1.4, 5×5-blurred ones 33, uniform noise 8,200) and at
    least 12 of the 16 classes (measured: all 16)."""
    ckpt = load_pretrained("shapes")
    assert ckpt.sample_shape == (3, 32, 32)
    x_T = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = ImageMetric("shapes").evaluate(sample(ckpt.eps_model, x_T, ckpt.schedule, "ddim", steps=20))
    assert scores["fd"] < SHAPES_FD, scores
    assert scores["classes_covered"] >= 12, scores


def conditional_samples(name: str, labels: torch.Tensor, w: float) -> torch.Tensor:
    """DDIM-20 images of a shipped conditional model asked for `labels`, with guidance w."""
    return generate(name, len(labels), steps=20, label=labels, guidance=w)


@pytest.mark.parametrize(("name", "threshold"), CONDITIONAL_THRESHOLDS.items())
def test_conditional_models_draw_the_class_asked_for(name, threshold):
    """Two samples per class at guidance 5: the shapes classifier must see the class asked for
    in at least `threshold` of them (chance: 1/16; the text model's held-out green star is not
    counted); unguided (w = 0) they must not (measured: 6–9%)."""
    labels = torch.arange(32) % 16
    trained = labels != SHAPE_CLASSES.index("green star") if name == "shapes_text" else torch.ones(32, dtype=bool)
    metric = ImageMetric("shapes")
    guided = (metric.predict(conditional_samples(name, labels, w=5.0)) == labels)[trained].float().mean()
    unguided = (metric.predict(conditional_samples(name, labels, w=0.0)) == labels).float().mean()
    assert guided >= threshold, guided
    assert unguided < 0.3, unguided


@pytest.mark.parametrize(("name", "side"), [("vae_shapes", 8), ("vae_shapes_f8", 4)])
def test_shipped_vae_round_trip_and_scale(name, side):
    """Held-out shapes (a seed never trained on) come back within the recorded error, and the
    scale factor brings their latents to unit variance."""
    vae = load_vae(name)
    held = ShapesDataset(256, 32, seed=1).images
    z = encode(vae, held)
    assert z.shape == (256, 4, side, side)
    assert 0.9 < z.std().item() < 1.1
    mse = torch.nn.functional.mse_loss(decode(vae, z), held).item()
    assert mse < 1.2 * vae_info(name)["metric"]["heldout_mse"] + 1e-4, mse
    assert mse < 0.01


def test_toy_flow_loads_and_its_samples_match_the_data():
    """The shipped 2-D flow model: 2,000 samples by flow Euler-25 are within 1.5× of the sliced
    Wasserstein distance that 2,000 training points have to the held-out ones (publish's baseline;
    measured: 0.076 against 0.065)."""
    from minidiff.metrics import PointMetric

    info = pretrained_info("toy_flow")
    assert info["metric"]["sampler"] == "flow_euler-25"
    samples = generate("toy_flow", 2000, sampler="flow_euler", steps=25)
    assert samples.shape == (2000, 2)
    score = PointMetric("two_moons").evaluate(samples)["sliced_wasserstein"]
    assert score < 1.5 * info["baseline"]["sliced_wasserstein"], score


def test_the_consistency_student_jumps_in_one_call_and_keeps_its_boundary():
    """shapes_class_cm, distilled from shapes_class with w = 1.5 folded in: f(x, t = 0) = x̃ exactly;
    one call per step (no guidance by default); 32 one-call samples (2 per class) beat a stated
    accuracy and FD (STUDENT_ONE_CALL, below what publish measured on 256); the same seed gives the
    same samples."""
    from minidiff.forward import consistency_function

    ckpt = load_pretrained("shapes_class_cm")
    assert ckpt.prediction == "consistency" and pretrained_info("shapes_class_cm")["recipe"] == "shapes_class_cm"
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    f = consistency_function(ckpt.model, ckpt.schedule)(x, torch.zeros(4), y=torch.arange(4))
    assert torch.equal(f, x / ckpt.schedule.alpha_bar[0].float().sqrt())
    labels = torch.arange(32) % 16
    calls = []
    hook = ckpt.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    images = generate(ckpt, 32, sampler="consistency", steps=1, label=labels)
    hook.remove()
    assert calls == [32]  # one network evaluation of the batch: no second, unconditional pass
    scores = ImageMetric("shapes").evaluate(images, labels)
    accuracy, fd = STUDENT_ONE_CALL
    assert scores["accuracy"] >= accuracy and scores["fd"] < fd, scores
    again = generate(ckpt, 4, sampler="consistency", steps=2, label=labels[:4], seed=3)
    assert torch.equal(again, generate(ckpt, 4, sampler="consistency", steps=2, label=labels[:4], seed=3))


def test_the_controlnet_follows_its_mask_and_without_it_is_its_base():
    """32 held-out scenes (DDIM-20, guidance 3): the IoU between the mask asked for and the
    sample's own shape is above 0.75 with the control (measured at publish, 256 scenes: 0.91),
    and below 0.4 without it (the frozen base alone, the same labels and seeds: 0.25 at publish)."""
    ckpt = load_pretrained("shapes_controlnet")
    base = load_pretrained("shapes_class")
    assert ckpt.model.base.config == base.model.config
    assert all(torch.equal(p, base.model.state_dict()[k]) for k, p in ckpt.model.base.state_dict().items())
    with_control = control_adherence(ckpt, 32, 3.0, steps=20)
    without = control_adherence(ckpt, 32, 3.0, steps=20, control=False)
    assert with_control["iou"] > 0.75 and with_control["accuracy"] >= 0.9, with_control
    assert without["iou"] < 0.4, without


def test_the_shipped_adapter_loads_on_its_base_only_and_draws_its_concept():
    """green_stars_lora4 on shapes_text: 16 green stars at guidance 3 (DDIM-20), at least 14 right
    (measured at publish, 64 per class: 98%; the base alone 78%); refused on the other seed's base."""
    info = pretrained_info("green_stars_lora4")
    assert info["base"] == "shapes_text" and (WEIGHTS_DIR / "green_stars_lora4.safetensors").stat().st_size < 100_000
    adapted = load_pretrained("green_stars_lora4")
    labels = torch.full((16,), SHAPE_CLASSES.index("green star"))
    right = (ImageMetric("shapes").predict(generate(adapted, 16, steps=20, label=labels, guidance=3.0)) == labels)
    assert right.sum() >= 14, right
    with pytest.raises(ValueError, match="tied to its base's weights"):
        load_adapter(load_pretrained("shapes_text_seed1").model, WEIGHTS_DIR / "green_stars_lora4.safetensors")


def test_the_sound_model_plays_the_pitch_and_timbre_asked_for():
    """36 notes (2 per class, DDIM-20, guidance 3) turned into sound by Griffin-Lim: the FFT hears the
    pitch asked for in at least 90% of them and the classifier the timbre in 90% (measured at publish, 256
    notes at w = 1 and 3: 100% and 100%); pure noise scores about 1/6 and 1/3."""
    labels = torch.arange(36) % 18
    scores = dataset_metric("sounds").evaluate(generate("sounds", 36, steps=20, label=labels, guidance=3.0), labels)
    assert scores["pitch_accuracy"] >= 0.9 and scores["timbre_accuracy"] >= 0.9, scores


def test_the_video_model_keeps_its_clips_together_where_independent_frames_do_not():
    """16 clips (one per class, DDIM-20, guidance 3): the video model's tracked centres stay within
    0.5 px of a straight line (median) and at least half its clips are one class in every frame (measured
    at publish, 256 clips: 0.21 px, 83%; real clips 0.14 px, 95%); the image model's frames drawn
    independently for the same labels jump about (1.75 px measured on 64 clips)."""
    labels = torch.arange(16)
    metric = dataset_metric("clips")
    video = metric.evaluate(generate("clips", 16, steps=20, label=labels, guidance=3.0), labels)
    frames = generate("clip_frames", 16 * 8, steps=20, label=labels.repeat_interleave(8), guidance=3.0)
    independent = metric.evaluate(frames.reshape(16, 8, 3, 16, 16), labels)
    assert video["path_residual"] < 0.5 and video["same_class"] >= 0.5, video
    assert independent["path_residual"] > 2 * video["path_residual"], independent
