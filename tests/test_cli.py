"""Tests for the command line, `python -m minidiff train|sample`."""

from __future__ import annotations

import os
import subprocess
import sys
import wave

import matplotlib.image
import pytest
import torch

from minidiff.__main__ import main
from minidiff.checkpoint import load_checkpoint
from minidiff.data import shape_mask
from minidiff.data.sounds import N_SAMPLES, PITCHES, SAMPLE_RATE, SOUND_CLASSES, dominant_frequency, nearest_pitch
from minidiff.files import WEIGHTS_DIR
from minidiff.generate import generate
from minidiff.metrics import mask_iou
from minidiff.train import CHECKPOINT, MODEL


def test_train_then_sample_as_a_learner_would(tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "minidiff", "train", "--recipe", "toy", "--steps", "20", "--out", str(out)]
    trained = subprocess.run([*command, "--device", "cpu"], capture_output=True, text=True, env=env)
    assert trained.returncode == 0, trained.stderr
    assert "step 20" in trained.stdout and {p.name for p in out.iterdir()} == {CHECKPOINT, MODEL}
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(out / MODEL), "--n", "100", "--steps", "10", "--out", str(grid)]) == 0
    assert grid.read_bytes().startswith(b"\x89PNG") and str(grid) in capsys.readouterr().out


@pytest.mark.parametrize("args", [[], ["train"], ["sample"]])
def test_help(args, capsys):
    assert exit_status([*args, "--help"]) == 0
    assert "usage: python -m minidiff" in capsys.readouterr().out


def test_train_help_lists_the_recipes(capsys):
    exit_status(["train", "--help"])
    assert "tiny_digits  a tiny U-Net" in capsys.readouterr().out


def test_resume_and_sample_images(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "tiny_digits", "--steps", "3", "--out", str(out), "--device", "cpu"]) == 0
    assert main(["train", "--recipe", "tiny_digits", "--steps", "5", "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / CHECKPOINT).step == 5
    grid = tmp_path / "digits.png"
    args = ["sample", "--checkpoint", str(out / CHECKPOINT), "--n", "4", "--steps", "3", "--sampler", "dpmpp_2m"]
    assert main([*args, "--out", str(grid), "--device", "cpu"]) == 0
    assert grid.exists() and str(grid) in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--recipe", "nope", "--out", "x"], "invalid choice: 'nope' (choose from 'digits', 'shapes'"),
        (["train", "--recipe", "toy", "--out", "x", "--steps", "0"], "expected a positive integer, got '0'"),
        (["train", "--recipe", "toy", "--out", "x", "--device", "gpu"], "expected a device such as cpu"),
        (["sample", "--checkpoint", "missing.safetensors"], "no checkpoint at missing.safetensors"),
        (["sample", "--checkpoint", "x", "--sampler", "magic"], "invalid choice: 'magic'"),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(args, message, capsys):
    assert exit_status(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def exit_status(args: list[str]) -> int:
    """main's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(args)
    except SystemExit as exit:
        return exit.code


def test_failures_in_a_run_are_reported_cleanly(tmp_path, capsys):
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    assert main(["sample", "--checkpoint", str(corrupt)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--recipe", "toy", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert main(["train", "--recipe", "toy", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_sample_conditional_and_latent_shipped_models(tmp_path, capsys):
    """The shipped conditional models take --label / --prompt with guidance (a text model takes a
    label as its class's caption); a latent model's samples are decoded by the VAE its checkpoint
    names. Misuse is refused with a message naming the flag."""
    grid = str(tmp_path / "grid.png")
    common = ["--n", "2", "--steps", "2", "--out", grid, "--device", "cpu"]
    checkpoint = {
        name: str(WEIGHTS_DIR / f"{name}.safetensors") for name in ("shapes_class", "shapes_text", "shapes_latent")
    }
    assert main(["sample", "--checkpoint", checkpoint["shapes_class"], "--label", "3", *common]) == 0
    assert main(["sample", "--checkpoint", checkpoint["shapes_text"], "--prompt", "a large red star", *common]) == 0
    assert main(["sample", "--checkpoint", checkpoint["shapes_text"], "--label", "3", *common]) == 0
    assert main(["sample", "--checkpoint", checkpoint["shapes_latent"], "--label", "3", *common]) == 0
    assert capsys.readouterr().out.count(grid) == 4
    for args, message in [
        ([checkpoint["shapes_class"], "--prompt", "a red star"], "is class-conditional, it takes a label"),
        ([checkpoint["shapes_class"], "--label", "99"], "label must be a class from 0 to 15 (this UNet has 16"),
        ([checkpoint["shapes_class"], "--label", "16"], "label 16 is the null label"),
        ([checkpoint["shapes_text"], "--prompt", "a purple star"], "purple"),
        ([str(WEIGHTS_DIR / "digits.safetensors"), "--label", "3"], "is unconditional"),
        ([str(WEIGHTS_DIR / "digits.safetensors"), "--guidance", "5"], "need a label or a prompt"),
        ([str(WEIGHTS_DIR / "vae_shapes.safetensors")], "generate needs a diffusion model"),
        ([checkpoint["shapes_class"], "--label", "3", "--out", str(tmp_path / "grid.txt")], "unknown picture format"),
    ]:
        assert main(["sample", *common, "--checkpoint", *args]) == 2  # (args' --out comes last, so it counts)
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_sample_a_sound_model_into_a_wav_file_and_a_video_model_into_a_grid(tmp_path, capsys):
    """`--out notes.wav` writes a sound model's notes one after another (16-bit PCM at the data's rate),
    each turned into sound by Griffin-Lim, at the pitch asked for; a clip model's samples go into a
    grid, one clip per row; a picture model cannot write a WAV."""
    out = tmp_path / "notes.wav"
    label = SOUND_CLASSES.index("organ C4")
    sounds = str(WEIGHTS_DIR / "sounds.safetensors")
    common = ["--n", "2", "--steps", "10", "--device", "cpu"]
    assert main(["sample", "--checkpoint", sounds, "--label", str(label), "--out", str(out), *common]) == 0
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        pcm = torch.frombuffer(bytearray(w.readframes(w.getnframes())), dtype=torch.int16).float() / 32767
    assert len(pcm) == 2 * (N_SAMPLES + round(0.1 * SAMPLE_RATE))
    assert nearest_pitch(dominant_frequency(pcm[None, :N_SAMPLES])).item() == label % len(PITCHES)
    grid = tmp_path / "clips.png"
    clips = str(WEIGHTS_DIR / "clips.safetensors")
    assert main(["sample", "--checkpoint", clips, "--label", "3", "--out", str(grid), *common]) == 0
    assert grid.stat().st_size > 0
    shapes = str(WEIGHTS_DIR / "shapes_class.safetensors")
    assert main(["sample", "--checkpoint", shapes, "--label", "3", "--out", str(tmp_path / "x.wav"), *common]) == 2
    assert "a WAV file needs sound spectrograms" in capsys.readouterr().err


@pytest.mark.parametrize("side", ["left", "right"])
def test_sample_a_controlnet_with_a_mask_drawn_in_a_picture(tmp_path, capsys, monkeypatch, side):
    """`--control mask.png`: a picture of any size, bright where the shape goes, scaled to the model's
    size; the shipped ControlNet puts the shape there (IoU of the samples' shapes with the mask)."""
    picture = torch.zeros(48, 48, 3)
    columns = slice(4, 22) if side == "left" else slice(26, 44)
    picture[14:34, columns] = 1.0
    path = tmp_path / "mask.png"
    matplotlib.image.imsave(path, picture.numpy())
    seen = []

    def recording_generate(*args, **kwargs):
        seen.append((kwargs["control"], images := generate(*args, **kwargs)))
        return images

    monkeypatch.setattr("minidiff.__main__.generate", recording_generate)
    controlnet = str(WEIGHTS_DIR / "shapes_controlnet.safetensors")
    args = ["sample", "--checkpoint", controlnet, "--label", "3", "--n", "4", "--steps", "10", "--device", "cpu"]
    assert main([*args, "--control", str(path), "--out", str(tmp_path / "grid.png")]) == 0
    mask, images = seen[0]
    assert mask.shape == (1, 32, 32) and mask.dtype == torch.bool  # the model's 32×32
    half = mask[0, :, :16] if side == "left" else mask[0, :, 16:]
    assert half.sum() == mask.sum() > 80  # the mask, scaled, on its side
    assert mask_iou(shape_mask(images), mask.expand(4, 1, 32, 32)).mean() > 0.6
    assert main([*args, "--control", str(tmp_path / "grid.png"), "--out", str(tmp_path / "again.png")]) == 0
    bad = tmp_path / "not_a_picture.png"
    bad.write_text("hello")
    assert main([*args, "--control", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "--control: cannot read" in capsys.readouterr().err
    shapes = str(WEIGHTS_DIR / "shapes_class.safetensors")
    other = ["sample", "--checkpoint", shapes, *args[3:], "--control", str(path), "--out", str(tmp_path / "y.png")]
    assert main(other) == 2
    assert "control was given, but this UNet takes none" in capsys.readouterr().err
