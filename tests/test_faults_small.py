"""Fault class 10, the smaller ones: a generator that is not one, an empty point cloud, a
config field of the wrong type from hand-edited JSON, and documentation naming commands that
do not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from minidiff import NoiseSchedule, sample
from minidiff.__main__ import _parser
from minidiff.metrics import sliced_wasserstein
from minidiff.nn import MLPConfig, UNetConfig, VAEConfig
from minidiff.nn.classifier import ClassifierConfig
from minidiff.nn.text import TextConfig, TextUNetConfig
from minidiff.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_generator_that_is_not_one_is_named(sampler):
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample(lambda x, t: torch.zeros_like(x), torch.randn(2, 2), NoiseSchedule.linear(10), sampler, 2, generator=123)


def test_an_empty_point_cloud_is_named():
    with pytest.raises(ValueError, match=r"x must have shape \(N, d\) with N >= 1"):
        sliced_wasserstein(torch.zeros(0, 2), torch.randn(5, 2))


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: UNetConfig(channels="32"), "UNetConfig.channels"),
        (lambda: UNetConfig(channel_mults=["1", "2"]), "UNetConfig.channel_mults"),
        (lambda: UNetConfig(dropout="0.1"), "UNetConfig.dropout"),
        (lambda: VAEConfig(kl_weight="1e-3"), "VAEConfig.kl_weight"),
        (lambda: MLPConfig(hidden=12.0), "MLPConfig.hidden"),
        (lambda: TextConfig(dim="64"), "TextConfig.dim"),
        (lambda: TextUNetConfig(unet={"in_channels": "3"}), "UNetConfig.in_channels"),
        (lambda: ClassifierConfig(widths=(16, "32")), "ClassifierConfig.widths"),
        (lambda: TrainConfig(lr="1e-3"), "TrainConfig.lr"),
        (lambda: TrainConfig(steps=10.0), "TrainConfig.steps"),
    ],
)
def test_a_config_field_of_the_wrong_type_is_named(make, field):
    with pytest.raises(ValueError, match=rf"{re.escape(field)} must be "):
        make()


def test_every_documented_command_exists():
    """`python -m minidiff X` in the package's docstrings and the README names a real command."""
    commands = set(_parser()._subparsers._group_actions[0].choices)
    texts = [p.read_text() for p in (ROOT / "minidiff").rglob("*.py")] + [(ROOT / "README.md").read_text()]
    named = {m for text in texts for m in re.findall(r"python -m minidiff (\w[\w-]*)", text)}
    assert named and named <= commands, f"documented but missing: {named - commands}"
    modules = {m for text in texts for m in re.findall(r"python -m (minidiff\.[\w.]+)", text)}
    for module in modules:
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():  # a package runs its __main__.py
            path = ROOT / module.replace(".", "/") / "__main__.py"
        assert path.is_file() and 'if __name__ == "__main__"' in path.read_text(), f"{module} cannot be run"
