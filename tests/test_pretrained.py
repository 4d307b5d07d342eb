"""Shipped models: listed, verified by sha256 before loading, and good enough to be worth shipping."""

import shutil

import pytest
import torch

from minidiff import list_pretrained, load_pretrained, pretrained_info, sample
from minidiff.metrics import ImageMetric
from minidiff.pretrained import MANIFEST, WEIGHTS_DIR, WeightsError
from minidiff.recipes import RECIPES


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
