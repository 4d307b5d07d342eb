"""Tests for minidiff.classifier and the classifier-based image metrics: the Fréchet distance
against closed forms, the shipped weights (hash, accuracy, recipe), and the metric's baselines."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from minidiff.checkpoint import load_checkpoint
from minidiff.classifier import (
    CLASSIFIER_RECIPES,
    MANIFEST,
    WEIGHTS_DIR,
    ClassifierObjective,
    WeightsError,
    accuracy,
    classifier_data,
    load_classifier,
    manifest_entry,
    random_shift,
    save_classifier,
    train_classifier,
    training_config,
    weights_file,
)
from minidiff.data import ShapesDataset
from minidiff.metrics import ImageMetric, frechet_distance, label_entropy, saturation
from minidiff.nn.classifier import Classifier
from minidiff.train import train

MIN_ACCURACY = {"digits": 0.97, "shapes": 0.98, "sounds": 0.98, "clip_frames": 0.98}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models run faster on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def metrics():
    return {name: ImageMetric(name) for name in CLASSIFIER_RECIPES}


def with_exact_stats(mu: torch.Tensor, A: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n points (n, d) whose sample mean is exactly mu (d,) and sample covariance exactly A Aᵀ."""
    z = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(dim=0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample covariance exactly I
    return z @ A.T + mu


# Fréchet distance


def test_diagonal_gaussians_match_the_closed_form():
    """With diagonal covariances the matrix square root is elementwise:
    FD = ‖μ1 − μ2‖² + Σ_i (σ1_i − σ2_i)², σ the standard deviations."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 2.0, 1.5], dtype=torch.float64)
    expected = (mu1 - mu2).square().sum() + (s1 - s2).square().sum()  # 5 + 4 + 0 + 1 = 10
    x, y = with_exact_stats(mu1, torch.diag(s1), 50), with_exact_stats(mu2, torch.diag(s2), 80, seed=1)
    assert frechet_distance(x, y) == pytest.approx(expected.item(), abs=1e-9)


def test_full_covariances_scaled_copy():
    """Σ2 = c² Σ1: (Σ1 Σ2)^{1/2} = c Σ1, so FD = ‖Δμ‖² + (1 − c)² Tr Σ1, for any full Σ1."""
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mu = torch.zeros(6, dtype=torch.float64)
    x, y = with_exact_stats(mu, A, 40), with_exact_stats(mu + 0.5, 3 * A, 40, seed=1)
    assert frechet_distance(x, y) == pytest.approx(6 * 0.25 + 4 * (A @ A.T).trace().item(), rel=1e-9)


def test_sample_estimate_converges_to_the_population_value():
    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.tensor([1.0, 0.5, 2.0, 1.0]), torch.tensor([2.0, 0.5, 1.0, 1.0])
    x = torch.randn(50_000, 4, generator=g) * s1
    y = torch.randn(50_000, 4, generator=g) * s2 + torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert frechet_distance(x, y) == pytest.approx(1 + 1 + 1, rel=0.03)


def test_identical_sets_are_at_zero_and_order_does_not_matter():
    x, y = torch.randn(300, 8), torch.randn(200, 8) * 2 + 1
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"feats_b must have shape \(N, d\) with N >= 2"):
        frechet_distance(torch.randn(5, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="feats_a contains NaN"):
        frechet_distance(torch.full((5, 2), float("nan")), torch.randn(5, 2))


def test_label_entropy():
    assert label_entropy(torch.tensor([5, 5, 5, 5])) == pytest.approx(2.0)
    assert label_entropy(torch.tensor([0, 9, 0])) == 0.0


# The classifier and its shipped weights


def test_random_shift_moves_whole_images():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)
    y = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    # every image is a copy of itself, moved by at most one pixel: its interior appears in y
    for i in range(2):
        assert any(
            torch.equal(y[i, :, 1 + dy : 4 + dy, 1 + dx : 4 + dx], x[i, :, 1:4, 1:4])
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )


@pytest.mark.parametrize("name", CLASSIFIER_RECIPES)
def test_shipped_classifier_is_small_and_trained_with_the_current_recipe(name):
    model = load_classifier(name)
    assert sum(p.numel() for p in model.parameters()) <= 100_000
    assert (WEIGHTS_DIR / weights_file(name)).stat().st_size <= 1_000_000
    assert manifest_entry(name)["recipe"] == json.loads(json.dumps(dataclasses.asdict(CLASSIFIER_RECIPES[name]))), (
        f"the {name} recipe changed since the weights were trained: `python -m minidiff classifier {name}`"
    )
    assert model.features(torch.zeros(2, *model_input_shape(name))).shape == (2, model.config.widths[-1])


def model_input_shape(name: str) -> tuple[int, int, int]:
    recipe = CLASSIFIER_RECIPES[name]
    return recipe.config.in_channels, recipe.image_size, recipe.image_size


def test_a_modified_weights_file_is_refused(tmp_path):
    for file in (weights_file("digits"), MANIFEST):
        shutil.copy(WEIGHTS_DIR / file, tmp_path / file)
    path = tmp_path / weights_file("digits")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, in the middle of the tensors
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_classifier("digits", tmp_path)
    with pytest.raises(FileNotFoundError, match="no weights at .*classifier_shapes"):
        load_classifier("shapes", tmp_path)
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(WeightsError, match="lists no classifier_digits"):
        load_classifier("digits", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_classifier("mnist")


@pytest.mark.parametrize("name", CLASSIFIER_RECIPES)
def test_shipped_weights_are_minidiff_checkpoints(name):
    ckpt = load_checkpoint(WEIGHTS_DIR / weights_file(name))  # the one checkpoint format, no pickle
    configs = (ckpt.model.config, CLASSIFIER_RECIPES[name].config)
    as_json = [json.loads(json.dumps(dataclasses.asdict(c))) for c in configs]
    assert type(ckpt.model) is Classifier and as_json[0] == as_json[1]  # (the configs' own equality: the next test)
    assert not ckpt.is_denoiser and ckpt.meta["dataset"] == name
    shipped = load_classifier(name)
    for (key, p), q in zip(ckpt.model.state_dict().items(), shipped.state_dict().values(), strict=True):
        assert torch.equal(p, q), key


def test_a_loaded_classifier_has_the_recipes_config():
    config = load_checkpoint(WEIGHTS_DIR / weights_file("digits")).model.config
    assert config == CLASSIFIER_RECIPES["digits"].config and hash(config) == hash(CLASSIFIER_RECIPES["digits"].config)


def test_weights_of_another_recipe_are_refused(tmp_path):
    save_classifier(Classifier(CLASSIFIER_RECIPES["shapes"].config), "digits", {"steps": 0}, tmp_path)
    expected = r"another config.*in_channels: checkpoint 3, model 1.*digits classifier's recipe"
    with pytest.raises(WeightsError, match=expected):
        load_classifier("digits", tmp_path)


def test_the_recipe_trains_on_the_engine_and_labels_are_checked():
    recipe = CLASSIFIER_RECIPES["digits"]
    config = training_config(recipe)
    assert (config.steps, config.batch_size, config.lr, config.seed) == (
        recipe.steps,
        recipe.batch_size,
        recipe.lr,
        recipe.seed,
    )
    assert (config.lr_schedule, config.grad_clip, config.ema_decay, config.weight_decay) == (
        "one_cycle",
        None,
        0.0,
        1e-4,
    )
    data = classifier_data("digits", "train")
    model = Classifier(recipe.config)
    with pytest.raises(ValueError, match="labels an int64 tensor"):
        train(model, (data.images, data.labels.float()), ClassifierObjective(1), config)
    with pytest.raises(ValueError, match=r"data must be \(images, labels\)"):
        train(model, data.images, ClassifierObjective(1), config)


def test_training_recipe_learns_and_saves(tmp_path):
    recipe = dataclasses.replace(CLASSIFIER_RECIPES["digits"], steps=40, batch_size=32)
    model = train_classifier(recipe)
    test = classifier_data("digits", "test")
    assert accuracy(model, test.images, test.labels) > 0.5  # chance is 0.1
    save_classifier(model, "digits", {"steps": 40}, tmp_path)
    assert manifest_entry("digits", tmp_path)["steps"] == 40
    with torch.no_grad():
        torch.testing.assert_close(load_classifier("digits", tmp_path)(test.images[:8]), model(test.images[:8]))


# The image metric


@pytest.mark.parametrize("name", CLASSIFIER_RECIPES)
def test_stated_test_accuracy_and_every_class_covered(metrics, name):
    test = classifier_data(name, "test")
    result = metrics[name].evaluate(test.images, test.labels)
    assert result["accuracy"] >= MIN_ACCURACY[name]
    assert result["accuracy"] == pytest.approx(manifest_entry(name)["test_accuracy"], abs=0.005)
    K = len(test.class_names)
    assert result["classes_covered"] == K
    assert result["label_entropy"] > 0.95 * math.log2(K)


@pytest.mark.parametrize("name", CLASSIFIER_RECIPES)
def test_data_baseline_is_far_below_noise_and_blur(metrics, name):
    """Real training images are close to the held-out test images; noise and blurred images are far."""
    metric = metrics[name]
    images = classifier_data(name, "train").images if name != "shapes" else ShapesDataset(500, 32, seed=0).images
    train = images[:: max(1, len(images) // 500)][:500]  # spread out: the clips' frames come 8 to a clip
    noise = torch.rand(train.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = F.avg_pool2d(train, 5, stride=1, padding=2, count_include_pad=False)  # a 5×5 box blur
    assert metric.fd(train) < 0.1 * min(metric.fd(blurred), metric.fd(noise))


def test_conditional_accuracy_and_bad_inputs(metrics):
    test = classifier_data("digits", "test")
    wrong = (test.labels + 1) % 10
    assert metrics["digits"].evaluate(test.images, wrong)["accuracy"] < 0.03
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 16, 16\) for the digits classifier"):
        metrics["digits"].fd(torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        metrics["digits"].evaluate(test.images, wrong[:5])


def test_predictions_and_saturation(metrics):
    test = classifier_data("shapes", "test")
    pred = metrics["shapes"].predict(test.images[:200])
    assert pred.shape == (200,) and (pred == test.labels[:200]).float().mean() > 0.95
    assert torch.equal(torch.bincount(pred, minlength=16), metrics["shapes"].label_histogram(test.images[:200]))
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0, :2] = torch.tensor([1.0, -1.5])  # at and beyond the limits: 2 of 96 values
    x[1, 1, 1, 1] = 0.999  # rounds to 255: a third
    assert saturation(x) == pytest.approx(3 / 96)
    burned = test.images[:50].mul(3).clamp(-1, 1)  # contrast ×3, the look of over-guided samples
    assert saturation(burned) > saturation(test.images[:50]) + 0.2
