"""Tests for minidiff.checkpoint: round trips, clear errors, atomic writes, no pickle."""

from __future__ import annotations

import os
import pickle

import pytest
import safetensors.torch
import torch

from minidiff import checkpoint
from minidiff.checkpoint import CheckpointError, load_checkpoint, model_from_config, save_checkpoint
from minidiff.forward import as_eps_model
from minidiff.nn import MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.schedules import NoiseSchedule

TINY_UNET = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)
TINY_MLP = MLPConfig(hidden=16, layers=1, time_dim=8)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Move every weight off its initial value (zero-initialised layers would hide mistakes)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("config, shape", [(TINY_UNET, (3, 1, 8, 8)), (TINY_MLP, (3, 2))], ids=["unet", "mlp"])
def test_save_load_gives_identical_outputs(tmp_path, config, shape):
    model = perturbed(model_from_config(config)).eval()
    schedule = NoiseSchedule.cosine(100)
    path = save_checkpoint(tmp_path / "m.safetensors", model, schedule, shape[1:], "v", step=42, meta={"note": "hi"})
    ckpt = load_checkpoint(path)
    assert type(ckpt.model) is type(model) and ckpt.model.config == config
    x, t = torch.randn(shape), torch.tensor([0, 50, 99])
    with torch.no_grad():
        assert torch.equal(ckpt.model(x, t), model(x, t))
        assert torch.equal(ckpt.eps_model(x, t), as_eps_model(model, schedule, "v")(x, t))  # what samplers take
    assert torch.equal(ckpt.schedule.betas, schedule.betas) and ckpt.schedule.name == "cosine"
    assert (ckpt.prediction, ckpt.sample_shape, ckpt.step, ckpt.meta) == ("v", shape[1:], 42, {"note": "hi"})
    assert ckpt.extra == {}


def test_load_into_an_existing_model_and_extra_tensors(tmp_path):
    model = perturbed(MLPDenoiser(TINY_MLP))
    extra = {"state.a": torch.arange(5), "state.b": torch.tensor(2.5)}
    path = save_checkpoint(tmp_path / "m.safetensors", model, NoiseSchedule.linear(10), (2,), extra=extra)
    target = MLPDenoiser(TINY_MLP)
    ckpt = load_checkpoint(path, model=target)
    assert ckpt.model is target
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), model.parameters(), strict=True))
    assert ckpt.extra.keys() == extra.keys() and all(torch.equal(ckpt.extra[k], v) for k, v in extra.items())


def test_another_config_is_named_in_the_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", UNet(TINY_UNET), NoiseSchedule.linear(10), (1, 8, 8))
    other = UNet(UNetConfig(**{**vars(TINY_UNET), "channels": 16}))
    with pytest.raises(CheckpointError, match=r"channels: checkpoint 8, model 16"):
        load_checkpoint(path, model=other)
    with pytest.raises(CheckpointError, match="holds a UNet model, but the model given is a MLPDenoiser"):
        load_checkpoint(path, model=MLPDenoiser(TINY_MLP))


@pytest.mark.parametrize(
    "damage", [lambda b: b[: len(b) // 2], lambda b: b[:5], lambda b: b"not a checkpoint at all" * 3, lambda b: b""]
)
def test_truncated_or_corrupt_file_raises_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=r"m\.safetensors is not a readable safetensors file"):
        load_checkpoint(path)


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nowhere.safetensors"):
        load_checkpoint(tmp_path / "nowhere.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a minidiff checkpoint"):
        load_checkpoint(foreign)


def test_weights_that_do_not_fit_and_unknown_classes(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(path, "pt") as f:
        metadata = f.metadata()
    del tensors["model.inp.weight"]
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError, match=r"(?s)do not fit the model.*inp\.weight"):
        load_checkpoint(path)
    with pytest.raises(TypeError, match="model must be one of UNet, MLPDenoiser"):
        save_checkpoint(path, torch.nn.Linear(2, 2), NoiseSchedule.linear(10), (2,))


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,), step=1)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", crash)  # fails after the data went to the temporary file
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, perturbed(MLPDenoiser(TINY_MLP)), NoiseSchedule.linear(10), (2,), step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary file left behind
    assert load_checkpoint(path).step == 1


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    load_checkpoint(path)
