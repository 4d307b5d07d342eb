"""Resume is exact for every objective: a run interrupted after step 10 (its last checkpoint is
step 8's) and resumed into a model with other initial weights ends where an uninterrupted run
does: the same losses, the same logged terms, the same raw and EMA weights bit for bit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch

from minidiff.checkpoint import Checkpoint, load_checkpoint, model_from_config
from minidiff.classifier import ClassifierObjective, ClassifierRecipe, training_config
from minidiff.data import make_toy
from minidiff.distill import ConsistencyDistillation
from minidiff.flow import FlowObjective
from minidiff.forward import DiffusionObjective
from minidiff.nn import DiTConfig, MLPConfig, UNetConfig
from minidiff.nn.classifier import ClassifierConfig
from minidiff.nn.controlnet import ControlNetConfig
from minidiff.nn.lora import add_lora
from minidiff.nn.vae import VAEConfig, VAEObjective
from minidiff.objective import Objective
from minidiff.schedules import NoiseSchedule
from minidiff.train import CHECKPOINT, MODEL, TrainConfig, train

SCHEDULE = NoiseSchedule.linear(100)
STEPS, EVERY, CRASH = 12, 4, 10  # the last checkpoint before the crash is step 8's


class Case(NamedTuple):
    config: object  # the model's config (`model_from_config` builds it)
    data: tuple[torch.Tensor, ...]
    objective: Callable[[], Objective]  # a fresh objective for every run (some keep state)
    train: TrainConfig
    lora_rank: int | None = None  # fine-tune LoRA adapters of this rank only (the rest frozen)


def images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


def labels(n: int, k: int = 3) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(1))


TINY_UNET = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)


def tiny_teacher() -> Checkpoint:
    """A random v-predicting conditional U-Net, standing in for a trained teacher."""
    return Checkpoint(model(TINY_UNET, seed=7), SCHEDULE, "v", (1, 8, 8), step=0, meta={}, extra={})


def classifier_config() -> TrainConfig:
    """What `minidiff.classifier.training_config` makes of a (tiny) recipe: one-cycle, no clipping, no EMA."""
    recipe = ClassifierRecipe(
        "digits", 8, ClassifierConfig(in_channels=1, num_classes=3, widths=(4, 8)), steps=STEPS, batch_size=8
    )
    config = dataclasses.replace(training_config(recipe), checkpoint_every=EVERY)
    assert (config.lr_schedule, config.grad_clip, config.ema_decay) == ("one_cycle", None, 0.0)
    return config


CASES = {
    "diffusion-mlp": Case(
        MLPConfig(hidden=32, layers=2, time_dim=8),
        (make_toy("two_moons", 500),),
        lambda: DiffusionObjective(SCHEDULE),
        TrainConfig(steps=STEPS, batch_size=32, warmup=3, checkpoint_every=EVERY),
    ),
    "diffusion-unet-labels-dropout": Case(  # labels dropped to the null label; dropout draws from torch's global RNG
        UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3, dropout=0.1),
        (images(32, 1, 8), labels(32)),
        lambda: DiffusionObjective(SCHEDULE, prediction="v", p_uncond=0.3),
        TrainConfig(steps=STEPS, batch_size=8, warmup=3, checkpoint_every=EVERY),
    ),
    "flow-mlp": Case(
        MLPConfig(hidden=32, layers=2, time_dim=8),
        (make_toy("two_moons", 500),),
        lambda: FlowObjective(timesteps="logit_normal"),
        TrainConfig(steps=STEPS, batch_size=32, warmup=3, checkpoint_every=EVERY),
    ),
    "flow-mlp-ot": Case(  # the noise re-paired across each batch by optimal transport
        MLPConfig(hidden=32, layers=2, time_dim=8),
        (make_toy("two_moons", 500),),
        lambda: FlowObjective(coupling="ot"),
        TrainConfig(steps=STEPS, batch_size=32, warmup=3, checkpoint_every=EVERY),
    ),
    "flow-dit-labels": Case(
        DiTConfig(in_channels=1, patch_size=2, width=16, depth=2, heads=2, num_classes=3),
        (images(32, 1, 8), labels(32)),
        lambda: FlowObjective(p_uncond=0.3, timesteps="logit_normal"),
        TrainConfig(steps=STEPS, batch_size=8, warmup=3, checkpoint_every=EVERY),
    ),
    "consistency-distillation-unet-labels": Case(  # keeps a target network: its state resumes too
        TINY_UNET,
        (images(32, 1, 8), labels(32)),
        lambda: ConsistencyDistillation(tiny_teacher(), "tiny", guidance=2.0, intervals=10),
        TrainConfig(steps=STEPS, batch_size=8, warmup=3, checkpoint_every=EVERY),
    ),
    "lora-fine-tuning-unet-labels": Case(  # a frozen base with trainable adapters
        TINY_UNET,
        (images(32, 1, 8), labels(32)),
        lambda: DiffusionObjective(SCHEDULE, prediction="v"),
        TrainConfig(steps=STEPS, batch_size=8, warmup=3, checkpoint_every=EVERY),
        lora_rank=2,
    ),
    "controlnet-unet-labels": Case(  # a frozen base beside a trainable copy; data (x0, y, control)
        ControlNetConfig(dataclasses.replace(TINY_UNET, in_channels=1)),
        (images(32, 1, 8), labels(32), (images(32, 1, 8, seed=2) > 0).float() * 2 - 1),
        lambda: DiffusionObjective(SCHEDULE, prediction="v", p_uncond=0.3),
        TrainConfig(steps=STEPS, batch_size=8, warmup=3, checkpoint_every=EVERY),
    ),
    "vae": Case(
        VAEConfig(channels=8, channel_mults=(1, 2, 2), groups=4),
        (images(32, 3, 16),),
        VAEObjective,
        TrainConfig(steps=STEPS, batch_size=8, warmup=2, checkpoint_every=EVERY),
    ),
    "classifier": Case(
        ClassifierConfig(in_channels=1, num_classes=3, widths=(4, 8)),
        (images(32, 1, 8), labels(32)),
        lambda: ClassifierObjective(max_shift=1),
        classifier_config(),
    ),
}


def model(config, seed: int = 0, lora_rank: int | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = model_from_config(config)
    if lora_rank is not None:
        add_lora(net, lora_rank)
    return net


class Crash(Exception):
    pass


def crash_after(step_to_crash: int):
    def callback(step, loss, ema):
        if step == step_to_crash:
            raise Crash

    return callback


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, p in a.items():
        assert p.dtype == b[name].dtype and torch.equal(p, b[name]), name


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does(tmp_path, case):
    straight = model(case.config, lora_rank=case.lora_rank)
    ema, losses = train(straight, case.data, case.objective(), case.train, out_dir=tmp_path / "a")
    assert [s for s, _ in losses] == list(range(1, STEPS + 1))

    with pytest.raises(Crash):
        train(
            model(case.config, lora_rank=case.lora_rank),
            case.data,
            case.objective(),
            case.train,
            out_dir=tmp_path / "b",
            callbacks=[crash_after(CRASH)],
        )
    interrupted = load_checkpoint(tmp_path / "b" / CHECKPOINT)
    assert interrupted.step == 8 and interrupted.meta["losses"] == [list(sl) for sl in losses[:8]]
    assert all(len(values) == 8 for values in interrupted.meta["terms"].values())

    resumed = model(case.config, seed=123, lora_rank=case.lora_rank)  # other initial weights: the checkpoint's must win
    seen = []
    ema_b, losses_b = train(
        resumed,
        case.data,
        case.objective(),
        case.train,
        out_dir=tmp_path / "b",
        resume=True,
        callbacks=[lambda step, loss, m: seen.append(step)],
    )
    assert seen == list(range(9, STEPS + 1))  # only the steps it ran
    assert losses_b == losses
    assert_same_tensors(straight.state_dict(), resumed.state_dict())  # raw weights (and buffers)
    assert_same_tensors(ema.state_dict(), ema_b.state_dict())

    final_a, final_b = (load_checkpoint(tmp_path / run / MODEL) for run in ("a", "b"))
    assert final_b.step == STEPS
    assert final_b.meta["terms"] == final_a.meta["terms"]  # the logged terms (the VAE's KL…) resume too
    assert final_b.meta == final_a.meta  # config, objective, data, losses, terms, and what `finish` adds
    assert_same_tensors(final_a.model.state_dict(), final_b.model.state_dict())
    last_a, last_b = (load_checkpoint(tmp_path / run / CHECKPOINT) for run in ("a", "b"))
    assert_same_tensors(last_a.extra, last_b.extra)  # the whole training state: optimizer, RNGs


def test_the_vae_logs_its_terms_every_step(tmp_path):
    case = CASES["vae"]
    train(model(case.config), case.data, case.objective(), dataclasses.replace(case.train, steps=3), out_dir=tmp_path)
    terms = load_checkpoint(tmp_path / MODEL).meta["terms"]
    assert terms.keys() == {"reconstruction", "kl"}
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in terms.values())
