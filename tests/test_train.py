"""Tests for minidiff.train (the engine) and minidiff.recipes: the loop learns, a run is neither
overwritten nor resumed by mistake, a non-finite loss or weight stops the run without harming its
last checkpoint, absurd settings are refused, the one-cycle schedule is OneCycleLR's.
Resume equivalence for every objective: tests/test_resume.py."""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import pytest
import safetensors.torch
import torch

from minidiff.checkpoint import CheckpointError, load_checkpoint, model_from_config
from minidiff.data import make_toy
from minidiff.forward import DiffusionObjective
from minidiff.generate import SampleGrids
from minidiff.nn import MLPConfig, UNetConfig
from minidiff.nn.vae import VAEConfig
from minidiff.objective import Objective
from minidiff.recipes import RECIPES, get_recipe
from minidiff.schedules import NoiseSchedule
from minidiff.train import (
    CHECKPOINT,
    MODEL,
    TrainConfig,
    beta1_at,
    ema_decay_at,
    ema_update,
    lr_at,
    train,
)
from minidiff.viz import image_grid, save_samples

TINY_MLP = MLPConfig(hidden=32, layers=2, time_dim=8)
TINY_UNET = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)
SCHEDULE = NoiseSchedule.linear(100)
DIFFUSION = DiffusionObjective(SCHEDULE)


def model(config, seed: int = 0):
    torch.manual_seed(seed)
    return model_from_config(config)


def images(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g)


def test_training_learns_and_reports_every_step():
    data = make_toy("two_moons", 2000)
    seen = []
    net = model(TINY_MLP)
    config = TrainConfig(steps=150, batch_size=128, lr=3e-3, warmup=10, ema_decay=0.9)
    ema, losses = train(net, data, DIFFUSION, config, callbacks=[lambda *a: seen.append(a)])
    assert [s for s, _ in losses] == list(range(1, 151))
    assert [(s, l) for s, l, _ in seen] == losses and all(m is ema for *_, m in seen)
    first, last = (sum(l for _, l in part) / 20 for part in (losses[:20], losses[-20:]))
    assert last < 0.8 * first
    assert ema is not net and not ema.training and not any(p.requires_grad for p in ema.parameters())


class BreaksAt(Objective):
    """The diffusion objective, except at its `at`-th call: then `how` breaks it."""

    def __init__(self, at: int, how: str):
        self.at, self.how, self.calls = at, how, 0

    def __call__(self, model, batch, generator):
        self.calls += 1
        loss = DIFFUSION(model, batch, generator)
        if self.calls == self.at:
            if self.how == "nan loss":
                return loss * math.nan
            # A weight the backward pass does not use (the output layer's bias): the loss and the
            # gradient stay finite, but the weights after this step's update are not.
            with torch.no_grad():
                model.out[-1].bias[0] = math.inf
        return loss

    def describe(self):
        return DIFFUSION.describe()


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TrainConfig(steps=20, batch_size=16, checkpoint_every=5)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 7; the last good checkpoint is .*step 5"):
        train(model(TINY_MLP), make_toy("two_moons", 100), BreaksAt(7, "nan loss"), config, out_dir=tmp_path)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt.step == 5 and all(torch.isfinite(p).all() for p in ckpt.model.parameters())
    assert not (tmp_path / MODEL).exists()
    with pytest.raises(FloatingPointError, match="at step 7; no checkpoints are written without out_dir"):
        train(model(TINY_MLP), make_toy("two_moons", 100), BreaksAt(7, "nan loss"), config)


def assert_stopped_at_a_finite_checkpoint(error: pytest.ExceptionInfo, out_dir, saved: int) -> int:
    """The error names the step that failed and the last good checkpoint; that file is whole,
    finite and at the step named. Returns the step that failed."""
    message = str(error.value)
    found = re.search(r"at step (\d+)\b.*; the last good checkpoint is (.+) \(step (\d+)\)$", message)
    assert found, message
    failed, path, step = int(found[1]), found[2], int(found[3])
    assert path == str(out_dir / CHECKPOINT) and step == saved < failed
    tensors = safetensors.torch.load_file(path)  # every tensor, read directly
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert load_checkpoint(path).step == saved
    assert not (out_dir / MODEL).exists()
    return failed


def test_an_absurd_learning_rate_stops_the_run_at_a_finite_checkpoint(tmp_path):
    # lr = 1e30 is finite, so TrainConfig takes it; step 1's weights are huge but finite, step 2's loss is not
    config = TrainConfig(steps=6, batch_size=16, lr=1e30, warmup=0, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match="at step 2") as error:
        train(model(TINY_MLP), make_toy("two_moons", 100), DIFFUSION, config, out_dir=tmp_path)
    assert assert_stopped_at_a_finite_checkpoint(error, tmp_path, saved=1) == 2


def test_weights_made_non_finite_by_an_update_stop_the_run_before_any_checkpoint_of_them(tmp_path):
    config = TrainConfig(steps=20, batch_size=16, checkpoint_every=5)
    with pytest.raises(FloatingPointError, match=r"the weights became non-finite at step 7 \(learning rate") as error:
        train(model(TINY_MLP), make_toy("two_moons", 100), BreaksAt(7, "inf weight"), config, out_dir=tmp_path)
    assert assert_stopped_at_a_finite_checkpoint(error, tmp_path, saved=5) == 7
    # with checkpoint_every=1 the broken step 7 is not written either: the file stays at step 6
    config = dataclasses.replace(config, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match="at step 7") as error:
        train(model(TINY_MLP), make_toy("two_moons", 100), BreaksAt(7, "inf weight"), config, out_dir=tmp_path / "b")
    assert_stopped_at_a_finite_checkpoint(error, tmp_path / "b", saved=6)


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", math.inf),
        ("lr", math.nan),
        ("grad_clip", math.inf),
        ("weight_decay", math.nan),
        ("ema_decay", math.nan),
        ("lr", "1e-3"),
        ("weight_decay", -math.inf),
        ("lr", True),
    ],
)
def test_non_finite_hyperparameters_are_refused(field, value):
    # "lr must be a finite number, got inf", or for a value of the wrong type "TrainConfig.lr must be float, got '1e-3'"
    with pytest.raises(ValueError, match=rf"^(TrainConfig\.)?{field} must be .*, got {re.escape(repr(value))}"):
        TrainConfig(**{field: value})


def test_runs_are_not_overwritten_nor_resumed_by_mistake(tmp_path):
    data = make_toy("two_moons", 100)
    config = TrainConfig(steps=3, batch_size=8)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(model(TINY_MLP), data, DIFFUSION, config, out_dir=tmp_path, resume=True)
    train(model(TINY_MLP), data, DIFFUSION, config, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(model(TINY_MLP), data, DIFFUSION, config, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.001, now 0\.002.*data: checkpoint"):
        train(model(TINY_MLP), data + 1, DIFFUSION, dataclasses.replace(config, lr=2e-3), out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="hidden: checkpoint 32, model 64"):
        train(model(MLPConfig(hidden=64)), data, DIFFUSION, config, out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"objective: checkpoint .*'name': 'linear'.*, now .*'name': 'cosine'"):
        train(
            model(TINY_MLP), data, DiffusionObjective(NoiseSchedule.cosine(100)), config, out_dir=tmp_path, resume=True
        )
    with pytest.raises(CheckpointError, match=r"objective: checkpoint .*'prediction': 'eps'.*now .*'prediction': 'v'"):
        train(model(TINY_MLP), data, DiffusionObjective(SCHEDULE, "v"), config, out_dir=tmp_path, resume=True)
    longer = dataclasses.replace(config, steps=5)
    _, losses = train(model(TINY_MLP), data, DIFFUSION, longer, out_dir=tmp_path, resume=True)
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5]  # a finished run extended by two steps


def test_a_one_cycle_run_is_not_extended_on_resume(tmp_path):
    data = make_toy("two_moons", 100)
    config = TrainConfig(steps=4, batch_size=8, warmup=0, lr_schedule="one_cycle", checkpoint_every=2)
    train(model(TINY_MLP), data, DIFFUSION, config, out_dir=tmp_path)
    assert lr_at(5, dataclasses.replace(config, steps=8)) > 100 * lr_at(4, config)  # what extending it would do
    with pytest.raises(CheckpointError, match="steps"):
        train(model(TINY_MLP), data, DIFFUSION, dataclasses.replace(config, steps=8), out_dir=tmp_path, resume=True)


def test_the_data_identity_includes_the_labels(tmp_path):
    x, y = images(16)
    objective = DiffusionObjective(SCHEDULE, p_uncond=0.1)
    config = TrainConfig(steps=2, batch_size=4, checkpoint_every=1)
    train(model(TINY_UNET), (x, y), objective, config, out_dir=tmp_path)
    other = (y + 1) % 3  # the same images, other labels
    with pytest.raises(CheckpointError, match=r"cannot resume from .*it was another run: data: checkpoint"):
        train(
            model(TINY_UNET), (x, other), objective, dataclasses.replace(config, steps=3), out_dir=tmp_path, resume=True
        )
    _, losses = train(
        model(TINY_UNET), (x, y), objective, dataclasses.replace(config, steps=3), out_dir=tmp_path, resume=True
    )
    assert [s for s, _ in losses] == [1, 2, 3]  # the same labels resume


def test_model_file_and_sample_grids(tmp_path):
    data, labels = images(16)
    objective = DiffusionObjective(SCHEDULE)
    config = TrainConfig(steps=4, batch_size=4, checkpoint_every=10)
    grids = SampleGrids(tmp_path, objective, (1, 8, 8), every=2, n=4, steps=5)
    ema, _ = train(model(TINY_UNET), (data, labels), objective, config, out_dir=tmp_path, callbacks=[grids])
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
    assert ckpt.meta["objective"] == objective.describe() and ckpt.meta["terms"] == {}
    assert torch.equal(ckpt.schedule.betas, SCHEDULE.betas) and ckpt.prediction == "eps"


def test_learning_rate_warmup_and_ema():
    config = TrainConfig(lr=1e-3, warmup=4)
    assert [lr_at(s, config) for s in range(1, 7)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert lr_at(1, dataclasses.replace(config, warmup=0)) == 1e-3
    assert beta1_at(1, config) == beta1_at(10**6, config) == 0.9
    assert ema_decay_at(1, 0.999) == pytest.approx(2 / 11) and ema_decay_at(10**6, 0.999) == 0.999
    ema, net = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema.parameters(), net.parameters(), strict=True)]
    ema_update(ema, net, 0.9)
    assert all(torch.allclose(e, x) for e, x in zip(ema.parameters(), expected, strict=True))


def test_one_cycle_matches_torch_one_cycle_lr():
    """lr_at and beta1_at against an independent reference, OneCycleLR with its defaults, at every step."""
    steps, lr = 50, 3e-3
    config = TrainConfig(steps=steps, lr=lr, warmup=0, lr_schedule="one_cycle")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for step in range(1, steps + 1):  # the values the step-th optimizer update uses
        group = optimizer.param_groups[0]
        assert lr_at(step, config) == pytest.approx(group["lr"], rel=1e-12, abs=1e-18), step
        assert beta1_at(step, config) == pytest.approx(group["betas"][0], rel=1e-12), step
        optimizer.step()
        scheduler.step()
    assert lr_at(1, config) == pytest.approx(lr / 25) and lr_at(15, config) == pytest.approx(lr)  # peak at 30%


def test_cosine_schedule_matches_torch_cosine_annealing_after_the_warmup():
    """lr_at's "cosine": the warm-up of "constant", then CosineAnnealingLR (eta_min 0) over the remaining steps."""
    steps, warmup, lr = 40, 8, 2e-3
    config = TrainConfig(steps=steps, lr=lr, warmup=warmup, lr_schedule="cosine")
    constant = dataclasses.replace(config, lr_schedule="constant")
    assert [lr_at(s, config) for s in range(1, warmup)] == [lr_at(s, constant) for s in range(1, warmup)]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - warmup)
    for step in range(warmup, steps + 1):
        assert lr_at(step, config) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15), step
        optimizer.step()
        scheduler.step()
    assert lr_at(warmup, config) == lr and lr_at(steps, config) == 0.0 and lr_at(24, config) == pytest.approx(lr / 2)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown prediction 'noise'"):
        DiffusionObjective(SCHEDULE, prediction="noise")
    with pytest.raises(ValueError, match=r"p_uncond must be in \[0, 1\)"):
        DiffusionObjective(SCHEDULE, p_uncond=1.0)
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="unknown weighting 'snr'"):
        DiffusionObjective(SCHEDULE, weighting="snr")
    for moved in ("prediction", "p_uncond", "sample_every", "n_samples"):  # now on DiffusionObjective / Recipe
        with pytest.raises(TypeError, match=moved):
            TrainConfig(**{moved: 1})
    data, labels = images(8)
    with pytest.raises(ValueError, match="a condition y was given with the data, but a UNet takes none"):
        train(model(dataclasses.replace(TINY_UNET, num_classes=None)), (data, labels), DIFFUSION)
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\]"):
        train(model(TINY_UNET), (data, labels + 5), DIFFUSION)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        train(model(TINY_UNET), data, DIFFUSION, resume=True)
    with pytest.raises(ValueError, match="data contains NaN"):
        train(model(TINY_MLP), torch.full((4, 2), math.nan), DIFFUSION)


def test_save_samples(tmp_path):
    import matplotlib.image

    grid = image_grid(torch.zeros(5, 3, 4, 4), nrow=3)
    assert grid.shape == (1 + 2 * 5, 1 + 3 * 5, 3) and grid[1, 1].tolist() == [0.5] * 3 and grid[0, 0, 0] == 1
    for name, x in [("grey", torch.rand(4, 1, 8, 8)), ("rgb", torch.rand(3, 3, 8, 8)), ("points", torch.randn(50, 2))]:
        assert matplotlib.image.imread(save_samples(x, tmp_path / f"{name}.png")).ndim == 3
    with pytest.raises(ValueError, match=r"got shape \(4, 5\)"):
        save_samples(torch.zeros(4, 5), tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"unknown picture format '\.bmp'"):
        save_samples(torch.rand(4, 1, 8, 8), tmp_path / "grid.bmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "points.png", "rgb.png"]  # nothing else, no temp


# VAE and latent recipes are checked in tests/test_vae.py and tests/test_latent.py
DENOISER_RECIPES = [n for n, r in RECIPES.items() if r.latent is None and not isinstance(r.model, VAEConfig)]


@pytest.mark.parametrize("name", DENOISER_RECIPES)
def test_recipes_fit_their_data(name):
    recipe = get_recipe(name)  # few generated samples: a quick check (more for a fine-tune on a few classes)
    recipe = dataclasses.replace(recipe, n=200 if recipe.classes else 4)
    data, *rest = recipe.training_data()
    assert len(data) > 0
    net = model_from_config(recipe.model)
    x = data[:2].to(next(net.parameters()))
    condition = {"y": rest[0][:2]} if rest else {}  # conditional recipes train with labels
    if len(rest) == 2:
        condition["control"] = rest[1][:2]  # a ControlNet's control images
    assert net(x, torch.tensor([0, recipe.T - 1]), **condition).shape == x.shape
    NoiseSchedule.from_name(recipe.schedule, recipe.T)
    assert all(len(r) == len(data) for r in rest)
    assert tuple(data.shape[1:]) == recipe.sample_shape()
    recipe.objective().check(net, (data, *rest))


def test_unknown_recipe_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown recipe 'nope'; expected one of 'digits', 'shapes'") as error:
        get_recipe("nope")
    assert all(repr(name) in str(error.value) for name in RECIPES)


def test_a_frozen_model_is_named_instead_of_failing_in_backward():
    data = make_toy("two_moons", 100)
    ema = train(model(TINY_MLP), data, DIFFUSION, TrainConfig(steps=2, batch_size=8)).ema
    with pytest.raises(ValueError, match="model has no parameter that requires a gradient"):
        train(ema, data, DIFFUSION, TrainConfig(steps=2, batch_size=8))
    train(copy.deepcopy(ema).requires_grad_(True), data, DIFFUSION, TrainConfig(steps=2, batch_size=8))  # the cure
