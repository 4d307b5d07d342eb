"""Fault classes 3 and 4: the command line answers the environment's faults and silent no-ops
with one line naming the flag or the path, exit status 2, and no traceback — before any
training or sampling starts."""

from __future__ import annotations

import errno
import os

import pytest

from minidiff import files
from minidiff.__main__ import main
from minidiff.files import WEIGHTS_DIR

DIGITS = str(WEIGHTS_DIR / "digits.safetensors")
SHAPES_CLASS = str(WEIGHTS_DIR / "shapes_class.safetensors")


def run(args, capsys) -> tuple[int, str]:
    try:
        status = main(args)
    except SystemExit as exit:  # argparse's own usage errors
        status = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1, err  # one line saying what is wrong
    return status, err


def test_an_unknown_picture_format_is_named_before_sampling(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("minidiff.__main__.load_checkpoint", lambda *a, **k: pytest.fail("sampled before checking"))
    status, err = run(["sample", "--checkpoint", DIGITS, "--out", str(tmp_path / "samples.txt")], capsys)
    assert status == 2 and "--out" in err and "unknown picture format '.txt'" in err


def test_out_that_is_a_folder_or_in_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    status, err = run(["sample", "--checkpoint", DIGITS, "--n", "1", "--steps", "1", "--out", str(tmp_path)], capsys)
    assert status == 2 and "is a folder" in err
    out = tmp_path / "file" / "samples.png"
    status, err = run(["sample", "--checkpoint", DIGITS, "--n", "1", "--steps", "1", "--out", str(out)], capsys)
    assert status == 2 and str(tmp_path / "file") in err


def test_train_checks_out_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("minidiff.__main__.train_recipe", lambda *a, **k: pytest.fail("trained before checking --out"))
    (tmp_path / "taken").write_text("x")
    status, err = run(["train", "--recipe", "toy", "--out", str(tmp_path / "taken")], capsys)
    assert status == 2 and "is a file" in err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        status, err = run(["train", "--recipe", "toy", "--out", str(locked)], capsys)
        assert status == 2 and "not writable" in err


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "grid.png"))

    monkeypatch.setattr(files, "open", full, raising=False)
    args = ["sample", "--checkpoint", DIGITS, "--n", "1", "--steps", "1", "--out", str(tmp_path / "grid.png")]
    status, err = run(args, capsys)
    assert status == 2 and "No space left on device" in err and "grid.png" in err and "disk is full" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cuda"], "sees no CUDA GPU; use --device cpu"),
        (["--device", "cuda:3"], "CUDA"),
        (["--seed", str(2**64)], "expected an integer in [0, 2**63)"),
        (["--seed", "-1"], "expected an integer in [0, 2**63)"),
    ],
)
def test_devices_and_seeds_that_cannot_work(args, message, capsys):
    import torch

    if args[0] == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status, err = run(["sample", "--checkpoint", DIGITS, *args], capsys)
    assert status == 2 and message in err


@pytest.mark.parametrize(
    "args, message",
    [
        ([DIGITS, "--guidance", "3"], "need a label or a prompt"),  # guidance on an unconditional model
        ([SHAPES_CLASS, "--label", "16"], "null label"),  # the null label would be the unguided picture
        ([SHAPES_CLASS, "--guidance", "7.5"], "need a label or a prompt"),
    ],
)
def test_silent_no_ops_are_refused(tmp_path, args, message, capsys):
    status, err = run(["sample", "--n", "1", "--steps", "1", "--out", str(tmp_path / "x.png"), "--checkpoint", *args],
                      capsys)
    assert status == 2 and message in err
    assert not (tmp_path / "x.png").exists()


def test_the_default_output_goes_under_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--checkpoint", DIGITS, "--n", "1", "--steps", "1", "--device", "cpu"]) == 0
    assert (tmp_path / "runs" / "samples.png").is_file() and [p.name for p in tmp_path.iterdir()] == ["runs"]


def test_an_unfinished_run_says_how_to_finish_or_use_it(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["train", "--recipe", "toy", "--steps", "2", "--out", str(folder), "--device", "cpu"]) == 0
    (folder / "model.safetensors").unlink()  # as if interrupted before the end
    status, err = run(["sample", "--checkpoint", str(folder / "model.safetensors")], capsys)
    assert status == 2 and "has not finished" in err and "--resume" in err and str(folder / "last.safetensors") in err
