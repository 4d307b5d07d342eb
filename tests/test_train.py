"""Tests for minidiff.train and minidiff.recipes: the loop learns, resume is exact, a NaN
stops the run without harming its last checkpoint."""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import torch

from minidiff.checkpoint import CheckpointError, load_checkpoint, model_from_config
from minidiff.data import make_toy
from minidiff.nn import MLPConfig, UNetConfig
from minidiff.recipes import RECIPES, get_recipe
from minidiff.schedules import NoiseSchedule
from minidiff.train import (
    CHECKPOINT,
    MODEL,
    TrainConfig,
    ema_decay_at,
    ema_update,
    image_grid,
    lr_at,
    save_samples,
    train,
)

TINY_MLP = MLPConfig(hidden=32, layers=2, time_dim=8)
TINY_UNET = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)
SCHEDULE = NoiseSchedule.linear(100)
train_module = importlib.import_module("minidiff.train")  # the module, even if minidiff exports a `train` function


def model(config, seed: int = 0):
    torch.manual_seed(seed)
    return model_from_config(config)


def images(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g)


class Crash(Exception):
    pass


def test_training_learns_and_reports_every_step():
    data = make_toy("two_moons", 2000)
    seen = []
    net = model(TINY_MLP)
    config = TrainConfig(steps=150, batch_size=128, lr=3e-3, warmup=10, ema_decay=0.9)
    ema, losses = train(net, data, SCHEDULE, config, callback=lambda *a: seen.append(a))
    assert [s for s, _ in losses] == list(range(1, 151))
    assert [(s, l) for s, l, _ in seen] == losses and all(m is ema for *_, m in seen)
    first, last = (sum(l for _, l in part) / 20 for part in (losses[:20], losses[-20:]))
    assert last < 0.8 * first
    assert ema is not net and not ema.training and not any(p.requires_grad for p in ema.parameters())


@pytest.mark.parametrize("conditional", [False, True], ids=["mlp", "unet-labels-dropout"])
def test_an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does(tmp_path, conditional):
    if conditional:  # labels dropped to the null label, and dropout (torch's global RNG)
        config, (data, labels) = dataclasses.replace(TINY_UNET, dropout=0.1), images()
        train_config = TrainConfig(steps=12, batch_size=8, warmup=3, checkpoint_every=4, p_uncond=0.3)
    else:
        config, data, labels = TINY_MLP, make_toy("two_moons", 500), None
        train_config = TrainConfig(steps=12, batch_size=32, warmup=3, checkpoint_every=4)
    straight = model(config)
    ema, losses = train(straight, data, SCHEDULE, train_config, labels=labels, out_dir=tmp_path / "a")

    def crash_at_10(step, loss, ema):
        if step == 10:
            raise Crash  # after step 10; the last checkpoint is step 8's

    with pytest.raises(Crash):
        train(model(config), data, SCHEDULE, train_config, labels=labels, out_dir=tmp_path / "b", callback=crash_at_10)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT).step == 8
    resumed = model(config, seed=123)  # other initial weights: the checkpoint's must win
    ema_b, losses_b = train(resumed, data, SCHEDULE, train_config, labels=labels, out_dir=tmp_path / "b", resume=True)

    assert losses_b == losses
    for a, b in [(straight, resumed), (ema, ema_b)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    assert load_checkpoint(tmp_path / "b" / MODEL).step == 12


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = []

    def loss_that_breaks(*args, **kwargs):
        calls.append(None)
        loss = real_loss(*args, **kwargs)
        return loss * math.nan if len(calls) == 7 else loss

    real_loss = train_module.diffusion_loss
    monkeypatch.setattr(train_module, "diffusion_loss", loss_that_breaks)
    config = TrainConfig(steps=20, batch_size=16, checkpoint_every=5)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 7; the last good checkpoint is .*step 5"):
        train(model(TINY_MLP), make_toy("two_moons", 100), SCHEDULE, config, out_dir=tmp_path)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt.step == 5 and all(torch.isfinite(p).all() for p in ckpt.model.parameters())
    assert not (tmp_path / MODEL).exists()
    calls.clear()
    with pytest.raises(FloatingPointError, match="at step 7; no checkpoints are written without out_dir"):
        train(model(TINY_MLP), make_toy("two_moons", 100), SCHEDULE, config)


def test_runs_are_not_overwritten_nor_resumed_by_mistake(tmp_path):
    data = make_toy("two_moons", 100)
    config = TrainConfig(steps=3, batch_size=8)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(model(TINY_MLP), data, SCHEDULE, config, out_dir=tmp_path, resume=True)
    train(model(TINY_MLP), data, SCHEDULE, config, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(model(TINY_MLP), data, SCHEDULE, config, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.001, now 0\.002.*data: checkpoint"):
        train(model(TINY_MLP), data + 1, SCHEDULE, dataclasses.replace(config, lr=2e-3), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="hidden: checkpoint 32, model 64"):
        train(model(MLPConfig(hidden=64)), data, SCHEDULE, config, out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="schedule: checkpoint"):
        train(model(TINY_MLP), data, NoiseSchedule.cosine(100), config, out_dir=tmp_path, resume=True)
    longer = dataclasses.replace(config, steps=5)
    _, losses = train(model(TINY_MLP), data, SCHEDULE, longer, out_dir=tmp_path, resume=True)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5]  # a finished run extended by two steps


def test_model_file_and_sample_grids(tmp_path):
    data, labels = images(16)
    config = TrainConfig(steps=4, batch_size=4, sample_every=2, n_samples=4, checkpoint_every=10)
    ema, _ = train(model(TINY_UNET), data, SCHEDULE, config, labels=labels, out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        CHECKPOINT,
        MODEL,
        "samples_000002.png",
        "samples_000004.png",
    ]
    ckpt = load_checkpoint(tmp_path / MODEL)
    assert ckpt.extra == {} and ckpt.step == 4 and ckpt.sample_shape == (1, 8, 8)
    assert all(torch.equal(p, q) for p, q in zip(ckpt.model.parameters(), ema.parameters(), strict=True))
    assert [s for s, _ in ckpt.meta["losses"]] == [1, 2, 3, 4] and ckpt.meta["train"]["steps"] == 4


def test_learning_rate_warmup_and_ema():
    config = TrainConfig(lr=1e-3, warmup=4)
    assert [lr_at(s, config) for s in range(1, 7)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert lr_at(1, dataclasses.replace(config, warmup=0)) == 1e-3
    assert ema_decay_at(1, 0.999) == pytest.approx(2 / 11) and ema_decay_at(10**6, 0.999) == 0.999
    ema, net = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema.parameters(), net.parameters(), strict=True)]
    ema_update(ema, net, 0.9)
    assert all(torch.allclose(e, x) for e, x in zip(ema.parameters(), expected, strict=True))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown prediction 'noise'"):
        TrainConfig(prediction="noise")
    data, labels = images(8)
    with pytest.raises(ValueError, match="no label embedding"):
        train(model(dataclasses.replace(TINY_UNET, num_classes=None)), data, SCHEDULE, labels=labels)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\]"):
        train(model(TINY_UNET), data, SCHEDULE, labels=labels + 5)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        train(model(TINY_UNET), data, SCHEDULE, resume=True)


def test_save_samples(tmp_path):
    import matplotlib.image

    grid = image_grid(torch.zeros(5, 3, 4, 4), nrow=3)
    assert grid.shape == (1 + 2 * 5, 1 + 3 * 5, 3) and grid[1, 1].tolist() == [0.5] * 3 and grid[0, 0, 0] == 1
    for name, x in [("grey", torch.rand(4, 1, 8, 8)), ("rgb", torch.rand(3, 3, 8, 8)), ("points", torch.randn(50, 2))]:
        assert matplotlib.image.imread(save_samples(x, tmp_path / f"{name}.png")).ndim == 3
    with pytest.raises(ValueError, match=r"got shape \(4, 5\)"):
        save_samples(torch.zeros(4, 5), tmp_path / "bad.png")


# VAE and latent recipes are checked in tests/test_vae.py and tests/test_latent.py
@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.latent is None and n != "vae_shapes"])
def test_recipes_fit_their_data(name):
    recipe = dataclasses.replace(get_recipe(name), n=4)  # few generated samples: a quick check
    data, labels = recipe.load_data()
    net = model_from_config(recipe.model)
    x = data[:2].to(next(net.parameters()))
    condition = {} if labels is None else {"y": labels[:2]}  # conditional recipes train with labels
    assert net(x, torch.tensor([0, recipe.T - 1]), **condition).shape == x.shape
    NoiseSchedule.from_name(recipe.schedule, recipe.T)
    assert labels is None or len(labels) == len(data)


def test_unknown_recipe_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown recipe 'nope'; expected one of 'digits', 'shapes'") as error:
        get_recipe("nope")
    assert all(repr(name) in str(error.value) for name in RECIPES)
