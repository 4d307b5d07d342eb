"""Lesson 04, training (notebooks/04_training.ipynb): the EMA of the weights and the
learning-rate warm-up, written for one tensor and one step (the engine, `minidiff.train`,
applies the same two rules to a whole model and a config)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.exercises._common import Verdict, _verdict, _verdict_on_cases


def check_ema_update(fn: Callable[[Tensor, Tensor, float], Tensor]) -> Verdict:
    """fn(theta_ema, theta, decay) should return the new EMA weights decay·θ_ema + (1 - decay)·θ."""
    g = torch.Generator().manual_seed(4)
    theta_ema, theta = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    decay = 0.9
    mistakes = {
        "decay and 1 - decay are swapped: the *old* average keeps the large weight decay.": (
            (1 - decay) * theta_ema + decay * theta
        ),
        "this is the new weights θ alone: the EMA must keep decay·θ_ema of its past.": theta,
        "this returns θ_ema unchanged: add (1 - decay)·θ.": theta_ema,
        "the weights must sum to 1: decay·θ_ema + (1 - decay)·θ, not decay·θ_ema + θ.": decay * theta_ema + theta,
    }
    return _verdict("ema_update", fn, (theta_ema, theta, decay), solution_ema_update(theta_ema, theta, decay), mistakes)


def solution_ema_update(theta_ema: Tensor, theta: Tensor, decay: float) -> Tensor:
    return decay * theta_ema + (1 - decay) * theta  # θ_ema ← decay·θ_ema + (1-decay)·θ


def check_warmup_lr(fn: Callable[[int, float, int], float]) -> Verdict:
    """fn(step, lr, warmup) should return the learning rate of optimizer step `step` (1, 2, …):
    lr·step/warmup while step < warmup, then lr."""
    cases = [(step, 1e-3, 100) for step in [1, 2, 50, 99, 100, 101, 5000]]
    mistakes = {
        "after the warm-up the rate must stay at lr, not keep growing: use min(1, step/warmup).": (
            lambda step, lr, w: lr * step / w
        ),
        "the warm-up starts at lr and goes down; it should rise from ~0 to lr.": lambda step, lr, w: (
            lr * max(0.0, 1 - step / w) if step < w else lr
        ),
        "off by one: step 1 should already get lr/warmup, and step = warmup the full lr.": lambda step, lr, w: (
            lr * min(1.0, (step - 1) / w)
        ),
    }
    return _verdict_on_cases("warmup_lr", fn, cases, solution_warmup_lr, mistakes)


def solution_warmup_lr(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, step / warmup)
