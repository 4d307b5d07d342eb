"""Fault class 5: a NaN or an infinity is caught where it enters, with a message naming it:
a timestep given to a denoiser, the noise given to q_sample, a denoiser's output inside a
sampler, the guidance scale, a tensor in a checkpoint."""

from __future__ import annotations

import json

import pytest
import safetensors
import safetensors.torch
import torch

from minidiff import SAMPLERS, NoiseSchedule, sample
from minidiff.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from minidiff.files import tensors_sha256
from minidiff.guidance import classifier_free_guidance
from minidiff.nn import MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.nn.text import TextConfig, TextUNet, TextUNetConfig

SCHEDULE = NoiseSchedule.linear(100)
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [NAN, INF, -1.0], ids=["nan", "inf", "negative"])
@pytest.mark.parametrize("kind", ["mlp", "unet", "text"])
def test_a_bad_timestep_is_named_by_every_denoiser(kind, bad):
    if kind == "mlp":
        model, x = MLPDenoiser(MLPConfig(hidden=8, layers=1, time_dim=4)), torch.randn(2, 2)
    elif kind == "unet":
        model, x = UNet(UNetConfig(channels=8, channel_mults=(1,), groups=4, heads=2)), torch.randn(2, 1, 4, 4)
    else:
        unet = UNetConfig(in_channels=3, channels=8, channel_mults=(1,), groups=4, heads=2, context_dim=16)
        model, x = TextUNet(TextUNetConfig(unet, TextConfig(dim=16, layers=1, heads=2))), torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"t \(the timesteps\)"):
        model(x, torch.tensor([10.0, bad]))


def test_nan_noise_is_named_by_q_sample():
    x0 = torch.randn(3, 2)
    with pytest.raises(ValueError, match="noise contains NaN"):
        SCHEDULE.q_sample(x0, torch.tensor([1, 2, 3]), torch.full_like(x0, NAN))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_denoiser_that_returns_nan_is_named_at_its_step(sampler):
    calls = []

    def breaks_at_third_call(x_t, t):
        calls.append(t[0].item())
        return torch.full_like(x_t, NAN) if len(calls) == 3 else torch.zeros_like(x_t)

    with pytest.raises(FloatingPointError, match=r"model's output at noise level σ = [\d.e+-]+ \(t = [\d.]+\)"):
        sample(breaks_at_third_call, torch.randn(4, 2), SCHEDULE, sampler, 5, generator=torch.Generator())
    assert len(calls) == 3  # stopped at once, not after more steps on NaN


@pytest.mark.parametrize("w", [INF, -INF, NAN])
def test_an_infinite_guidance_scale_is_refused(w):
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="guidance scale.*finite"):
        classifier_free_guidance(lambda x, t, y: x, y, y, w)


def test_a_checkpoint_with_non_finite_weights_names_the_tensor(tmp_path):
    model = MLPDenoiser(MLPConfig(hidden=8, layers=1, time_dim=4))
    path = save_checkpoint(tmp_path / "ok.safetensors", model, SCHEDULE, (2,))
    with safetensors.safe_open(path, framework="pt") as f:
        header = json.loads(f.metadata()[FORMAT])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["model.inp.weight"][0, 0] = INF  # a huge value that overflowed, signed as if it were fine
    header["tensors_sha256"] = tensors_sha256(tensors)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(safetensors.torch.save(tensors, metadata={FORMAT: json.dumps(header)}))
    with pytest.raises(CheckpointError, match=r"bad.safetensors: tensor 'model.inp.weight' holds NaN or infinite"):
        load_checkpoint(bad)
    with torch.no_grad():
        model.inp.weight[0, 0] = NAN
    with pytest.raises(FloatingPointError, match=r"not writing .*: tensor 'model.inp.weight' holds NaN"):
        save_checkpoint(tmp_path / "never.safetensors", model, SCHEDULE, (2,))
    assert not (tmp_path / "never.safetensors").exists()
