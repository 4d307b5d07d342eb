"""Training across processes: `torchrun --nproc-per-node 2 -m minidiff train …` (gloo on the CPU)
against one process accumulating the same shards, which is the same run by construction
(`minidiff.train.shard_batch`); and resuming across process counts."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
import torch

from minidiff.checkpoint import load_checkpoint
from minidiff.objective import Objective
from minidiff.train import CHECKPOINT, MODEL, TrainConfig, shard_batch, train

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
TRAIN = ["-m", "minidiff", "train", "--recipe", "tiny_digits", "--device", "cpu"]


def one_process(*args: str) -> subprocess.CompletedProcess:
    return _check(subprocess.run([sys.executable, *TRAIN, *args], capture_output=True, text=True, env=ENV))


def two_processes(*args: str) -> subprocess.CompletedProcess:
    if TORCHRUN is None:
        pytest.skip("torchrun is not installed beside this Python (it comes with PyTorch)")
    command = [TORCHRUN, "--standalone", "--nproc-per-node", "2", *TRAIN, *args]
    return _check(subprocess.run(command, capture_output=True, text=True, env=ENV))


def _check(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_close_runs(a, b, atol: float = 1e-6) -> None:
    """Two checkpoints of the same run: the same steps and losses, weights within atol."""
    assert a.step == b.step and a.meta["train"] == b.meta["train"]
    assert [s for s, _ in a.meta["losses"]] == [s for s, _ in b.meta["losses"]]
    torch.testing.assert_close(torch.tensor(a.meta["losses"]), torch.tensor(b.meta["losses"]), atol=atol, rtol=0)
    for name, p in a.model.state_dict().items():
        torch.testing.assert_close(p, b.model.state_dict()[name], atol=atol, rtol=0, msg=name)
    for name, value in a.extra.items():  # raw weights, AdamW's moments, the batches' generator
        if name == "rng.torch":
            continue  # with shards, each shard seeds dropout itself: the global generator between steps is no state
        if value.is_floating_point():
            torch.testing.assert_close(value, b.extra[name], atol=atol, rtol=0, msg=name)
        else:
            assert torch.equal(value, b.extra[name]), name


def test_two_processes_train_as_one_process_with_the_same_global_batch(tmp_path):
    done = two_processes("--steps", "12", "--out", str(tmp_path / "two"))
    one_process("--steps", "12", "--shards", "2", "--out", str(tmp_path / "one"))
    assert done.stdout.count("trained tiny_digits to step 12") == 1  # process 0 speaks for the run
    assert {p.name for p in (tmp_path / "two").iterdir()} == {CHECKPOINT, MODEL}  # no temporary files left
    two, one = (load_checkpoint(tmp_path / run / CHECKPOINT) for run in ("two", "one"))
    assert two.meta["train"]["shards"] == 2 and two.meta["train"]["batch_size"] == 32  # the global batch
    assert_close_runs(two, one)
    final_two, final_one = (load_checkpoint(tmp_path / run / MODEL) for run in ("two", "one"))
    assert_close_runs(final_two, final_one)


def test_a_run_interrupted_on_two_processes_resumes_on_one_or_two(tmp_path):
    one_process("--steps", "12", "--shards", "2", "--out", str(tmp_path / "straight"))
    two_processes("--steps", "6", "--out", str(tmp_path / "run"))
    shutil.copytree(tmp_path / "run", tmp_path / "run_on_one")
    two_processes("--steps", "12", "--resume", "--out", str(tmp_path / "run"))
    one_process("--steps", "12", "--shards", "2", "--resume", "--out", str(tmp_path / "run_on_one"))
    straight = load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    for resumed in ("run", "run_on_one"):
        assert_close_runs(load_checkpoint(tmp_path / resumed / CHECKPOINT), straight)


def test_resuming_with_other_shards_names_the_setting(tmp_path):
    one_process("--steps", "4", "--shards", "2", "--out", str(tmp_path))
    done = subprocess.run([sys.executable, *TRAIN, "--steps", "8", "--resume", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=ENV)
    assert done.returncode != 0 and "shards: checkpoint 2, now 1" in done.stderr


def test_the_shards_split_the_same_batch_and_draw_their_own_noise():
    config = TrainConfig(batch_size=12, shards=3, seed=5)
    whole = shard_batch(100, dataclasses.replace(config, shards=1), torch.Generator().manual_seed(0))
    shards = shard_batch(100, config, torch.Generator().manual_seed(0))
    assert len(shards) == 3 and torch.equal(torch.cat([rows for rows, _ in shards]), whole[0][0])
    noise = [torch.randn(4, generator=g) for _, g in shards]
    assert not torch.equal(noise[0], noise[1]) and not torch.equal(noise[1], noise[2])
    again = shard_batch(100, config, torch.Generator().manual_seed(0))
    assert torch.equal(torch.randn(4, generator=again[2][1]), noise[2])  # shard 3's noise, wherever it is drawn


class SquaredOutput(Objective):
    """A loss with no randomness, L = mean ‖f(x)‖², so that only the shards' arithmetic can differ."""

    def __call__(self, model, batch, generator):
        return model(batch[0]).pow(2).mean()

    def describe(self):
        return {"objective": "squared_output"}


def test_shards_accumulate_the_gradient_of_the_whole_batch():
    """On one process, K shards of B/K rows take the step their whole batch would: each shard's loss
    is a mean over its rows, scaled by 1/K, and the K gradients add up to the batch's. Whatever K,
    a step draws the same rows, so the runs agree."""
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=5, batch_size=12, warmup=0, ema_decay=0.0, lr=0.05)
    weights = []
    for shards in (2, 3, 4, 12):  # (K = 1 draws no seed, so its later batches are other rows)
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        losses = train(model, x, SquaredOutput(), dataclasses.replace(config, shards=shards)).losses
        weights.append((model.weight.detach().clone(), losses))
    for w, losses in weights[1:]:
        torch.testing.assert_close(w, weights[0][0], atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(weights[0][1]), atol=1e-6, rtol=0)
    assert not torch.allclose(weights[0][0], torch.nn.Linear(3, 2).weight)  # it did train


def test_shards_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"batch_size \(10\) must be a multiple of shards \(4\)"):
        TrainConfig(batch_size=10, shards=4)
    with pytest.raises(ValueError, match="shards must be an integer >= 1"):
        TrainConfig(shards=0)
