"""Tests for minidiff.checkpoint: round trips, clear errors, a checksum and a validated header,
only finite tensors, atomic writes, and no loader that ever unpickles."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct

import pytest
import safetensors.torch
import torch

from minidiff import files
from minidiff.__main__ import main as cli
from minidiff.checkpoint import FORMAT, CheckpointError, load_checkpoint, model_from_config, save_checkpoint
from minidiff.classifier import MANIFEST as CLASSIFIER_MANIFEST
from minidiff.classifier import load_classifier, weights_file
from minidiff.files import WeightsError, sha256_of
from minidiff.forward import DiffusionObjective, as_eps_model
from minidiff.nn import DiTConfig, MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.pretrained import MANIFEST, VAE_MANIFEST, load_pretrained, load_vae
from minidiff.publish import publish, publish_vae
from minidiff.schedules import NoiseSchedule
from minidiff.train import CHECKPOINT, TrainConfig, train

TINY_UNET = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)
TINY_MLP = MLPConfig(hidden=16, layers=1, time_dim=8)
TINY_DIT = DiTConfig(in_channels=1, patch_size=2, width=16, depth=2, heads=2, num_classes=3)


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Move every weight off its initial value (zero-initialised layers would hide mistakes)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "config, shape",
    [(TINY_UNET, (3, 1, 8, 8)), (TINY_MLP, (3, 2)), (TINY_DIT, (3, 1, 8, 8))],
    ids=["unet", "mlp", "dit"],
)
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


def test_half_precision_weights_halve_the_file_and_load_back_as_float32(tmp_path):
    schedule = NoiseSchedule.cosine(100)
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=16, channel_mults=(1, 2), blocks_per_level=1, heads=2))
    for p in model.parameters():  # (zero-initialised outputs would make the comparison vacuous)
        torch.nn.init.normal_(p, std=0.05)
    full = save_checkpoint(tmp_path / "f32.safetensors", model, schedule, (1, 8, 8))
    half = save_checkpoint(tmp_path / "f16.safetensors", model, schedule, (1, 8, 8), weights_dtype=torch.float16)
    stored = safetensors.torch.load_file(half)
    assert all(stored[f"model.{k}"].dtype == torch.float16 for k, _ in model.named_parameters())
    assert stored["schedule.betas"].dtype == schedule.betas.dtype  # only the network's parameters are halved
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    loaded = load_checkpoint(half).model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model.eval()(x, t), rtol=0, atol=5e-3)  # float16: ~3 digits
    with pytest.raises(FloatingPointError, match="NaN or infinite"):  # 1e5 does not fit in float16
        torch.nn.init.constant_(next(model.parameters()), 1e5)
        save_checkpoint(tmp_path / "big.safetensors", model, schedule, (1, 8, 8), weights_dtype=torch.float16)


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


def tensors_and_header(path) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint file's tensors and its JSON header, read with safetensors alone."""
    with safetensors.safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()[FORMAT])


def rewrite(path, tensors: dict[str, torch.Tensor], header: dict, checksum: bool = False) -> None:
    """Write tensors and a header as a checkpoint file, the checksum recomputed if asked."""
    if checksum:
        header = {**header, "tensors_sha256": files.tensors_sha256(tensors)}
    path.write_bytes(safetensors.torch.save(tensors, metadata={FORMAT: json.dumps(header)}))


def test_weights_that_do_not_fit_and_unknown_classes(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    tensors, header = tensors_and_header(path)
    del tensors["model.inp.weight"]
    rewrite(path, tensors, header, checksum=True)  # a consistent file, but a weight short
    with pytest.raises(CheckpointError, match=r"(?s)do not fit the model.*inp\.weight"):
        load_checkpoint(path)
    with pytest.raises(TypeError, match="model must be one of UNet, MLPDenoiser"):
        save_checkpoint(path, torch.nn.Linear(2, 2), NoiseSchedule.linear(10), (2,))


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,), step=1)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", crash)  # fails after the data went to the temporary file
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, perturbed(MLPDenoiser(TINY_MLP)), NoiseSchedule.linear(10), (2,), step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary file left behind
    assert load_checkpoint(path).step == 1


def test_loading_a_good_checkpoint_calls_no_unpickler(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    load_checkpoint(path)


def test_non_finite_weights_are_never_written(tmp_path):
    model = MLPDenoiser(TINY_MLP)
    with torch.no_grad():
        model.blocks[0].fc1.weight[3, 1] = float("nan")
    path = tmp_path / "m.safetensors"
    with pytest.raises(
        FloatingPointError, match=r"not writing .*m\.safetensors: tensor 'model\.blocks\.0\.fc1\.weight'"
    ):
        save_checkpoint(path, model, NoiseSchedule.linear(10), (2,))
    assert os.listdir(tmp_path) == []  # nothing written, no temporary file
    good = save_checkpoint(path, MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,), step=1)
    before = good.read_bytes()
    with pytest.raises(FloatingPointError, match="tensor 'state.ema' holds NaN or infinite values"):
        save_checkpoint(
            path,
            MLPDenoiser(TINY_MLP),
            NoiseSchedule.linear(10),
            (2,),
            extra={"state.ema": torch.tensor([float("inf")])},
        )
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.safetensors"]  # the old file stays whole


def test_non_finite_tensors_are_refused_on_load(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    tensors, header = tensors_and_header(path)
    tensors["model.inp.bias"][0] = float("-inf")
    rewrite(path, tensors, header, checksum=True)  # the checksum agrees: only the values are wrong
    with pytest.raises(CheckpointError, match=r"m\.safetensors: tensor 'model\.inp\.bias' holds NaN or infinite"):
        load_checkpoint(path)


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0], ids=["first-byte", "middle", "last-byte"])
@pytest.mark.parametrize("bit", [0, 7])
def test_a_flipped_bit_in_the_tensors_is_caught_by_the_checksum(tmp_path, where, bit):
    path = save_checkpoint(tmp_path / "m.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])  # safetensors: the header's length, the header, then the tensors' bytes
    start = 8 + n
    i = start + round(where * (len(data) - 1 - start))
    data[i] ^= 1 << bit
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: the tensors do not match their checksum"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "other-name.safetensors", data=bytes(data))  # the bytes given are checked too


MISSING = object()


@pytest.mark.parametrize(
    "field, value",
    [(name, MISSING) for name in ("model", "denoiser", "sample_shape", "vae", "step", "meta", "tensors_sha256")]
    + [
        ("step", "7"),
        ("step", 7.0),
        ("step", True),
        ("step", None),
        ("meta", []),
        ("sample_shape", "2"),
        ("vae", 3),
        ("tensors_sha256", None),
        ("model", "MLPDenoiser"),
        ("model", {"class": "MLPDenoiser"}),
        ("model", {"class": 3, "config": {}}),
        ("denoiser", "eps"),
        ("denoiser", {"schedule": {"name": "linear", "T": 10}, "prediction": "noise"}),
        ("denoiser", {"prediction": "eps"}),
        ("denoiser", {"schedule": {}, "prediction": "eps"}),
        ("denoiser", {"schedule": {"name": "linear", "T": 11}, "prediction": "eps"}),  # T is not len(betas)
        ("sample_shape", ["a"]),
        ("sample_shape", [-1]),
        ("step", -3),
        ("format", "other"),
    ],
)
def test_a_malformed_header_field_is_named_with_the_file(tmp_path, field, value):
    good = save_checkpoint(tmp_path / "good.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    tensors, header = tensors_and_header(good)
    header = {k: v for k, v in header.items() if k != field} | ({} if value is MISSING else {field: value})
    path = tmp_path / "bad.safetensors"
    rewrite(path, tensors, header)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: header field '{field}' must be "):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [MISSING, 1, 3, "2"])
def test_another_format_version_is_named(tmp_path, version):
    good = save_checkpoint(tmp_path / "good.safetensors", MLPDenoiser(TINY_MLP), NoiseSchedule.linear(10), (2,))
    tensors, header = tensors_and_header(good)
    header = {k: v for k, v in header.items() if k != "version"} | ({} if version is MISSING else {"version": version})
    rewrite(tmp_path / "bad.safetensors", tensors, header)
    shown = re.escape(repr(None if version is MISSING else version))
    with pytest.raises(
        CheckpointError, match=rf"bad\.safetensors: checkpoint format version {shown}, this minidiff reads 2"
    ):
        load_checkpoint(tmp_path / "bad.safetensors")


# Loading never unpickles: real pickle payloads, fed to every loader


def bomb(marker) -> object:
    """An object whose unpickling writes the file `marker`: the proof that code from a file ran."""

    class Bomb:
        def __reduce__(self):
            return exec, (f"import pathlib; pathlib.Path({str(marker)!r}).write_text('unpickled')",)

    return Bomb()


def payloads(marker) -> dict[str, bytes]:
    """Files that run code when unpickled: a raw pickle, and torch.save files (zip and legacy formats)."""
    state = {"model.inp.weight": torch.zeros(2), "bomb": bomb(marker)}
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    return {"pickle": pickle.dumps(bomb(marker)), "torch-zip": zipped.getvalue(), "torch-legacy": legacy.getvalue()}


def test_the_payloads_are_live(tmp_path):
    """The control: unpickling these bytes does run their code (so the next test means something)."""
    for name, data in payloads(tmp_path / "control").items():
        (tmp_path / "control").unlink(missing_ok=True)
        if name == "pickle":
            pickle.loads(data)
        else:
            torch.load(io.BytesIO(data), weights_only=False)
        assert (tmp_path / "control").read_text() == "unpickled", name


def listed(weights, manifest: str, file: str, data: bytes):
    """weights/file holding data, listed in the manifest with the right sha256 (so only the format can stop it)."""
    weights.mkdir(exist_ok=True)
    (weights / file).write_bytes(data)
    files.record_in_manifest(weights, manifest, file, {"sha256": sha256_of(data), "command": "none"})


@pytest.mark.parametrize("kind", ["pickle", "torch-zip", "torch-legacy"])
def test_no_loader_unpickles_a_payload(tmp_path, kind, capsys):
    marker = tmp_path / "marker"
    data = payloads(marker)[kind]
    path = tmp_path / "evil.safetensors"
    path.write_bytes(data)
    weights = tmp_path / "weights"
    listed(weights, CLASSIFIER_MANIFEST, weights_file("digits"), data)
    listed(weights, MANIFEST, "evil.safetensors", data)
    listed(weights, VAE_MANIFEST, "evil.safetensors", data)
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(data)
    not_readable = "not a readable safetensors file"
    loaders = {
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_checkpoint into a model": lambda: load_checkpoint(path, model=MLPDenoiser(TINY_MLP)),
        "load_checkpoint of bytes": lambda: load_checkpoint(tmp_path / "any.safetensors", data=data),
        "load_classifier": lambda: load_classifier("digits", weights),
        "load_pretrained": lambda: load_pretrained("evil", weights_dir=weights),
        "load_vae": lambda: load_vae("evil", weights_dir=weights),
        "train resume": lambda: train(
            MLPDenoiser(TINY_MLP),
            torch.randn(8, 2),
            DiffusionObjective(NoiseSchedule.linear(10)),
            TrainConfig(steps=2, batch_size=4),
            out_dir=run,
            resume=True,
        ),
        "publish": lambda: publish(path, "x", "digits", "digits", "0 s", n_samples=1, weights_dir=tmp_path / "out"),
        "publish_vae": lambda: publish_vae(path, "x", "vae_shapes", "0 s", weights_dir=tmp_path / "out"),
    }
    for name, load in loaders.items():
        error = WeightsError if name == "load_classifier" else CheckpointError
        with pytest.raises(error, match=not_readable):
            load()
        assert not marker.exists(), f"{name} ran code from the file"
    assert cli(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "s.png")]) == 2  # the command line
    assert not_readable in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "s.png").exists() and not (tmp_path / "out").exists()
