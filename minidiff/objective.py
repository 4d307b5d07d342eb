"""What a training objective is: the one thing that differs between kinds of training.

The engine (`minidiff.train.train`) draws batches, steps the optimizer, keeps the EMA and
writes checkpoints; an *objective* turns a model, a batch and a random generator into the
loss to minimise. The diffusion objective (`minidiff.forward.DiffusionObjective`), the VAE's
(`minidiff.nn.vae.VAEObjective`) and the classifier's (`minidiff.classifier.ClassifierObjective`)
are three; a new kind of training is a new subclass, never a new loop.

    loss = objective(model, batch, generator)        batch: (x,) or (x, y), a random draw of the data
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Objective:
    """Base class of training objectives. Subclasses implement `__call__` and `describe`;
    the other hooks have do-nothing defaults."""

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], generator: torch.Generator) -> Tensor:
        """The loss (a scalar tensor) of `model` on one batch; all randomness from `generator`."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The objective's settings as JSON: stored in checkpoints, so that a resumed run can
        check that it continues with the same objective."""
        raise NotImplementedError

    def check(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        """Raise ValueError, naming the argument, if `data` cannot train `model` (called once, before step 1)."""

    def terms(self) -> dict[str, float]:
        """Parts of the last loss worth logging beside it (e.g. the VAE's KL term)."""
        return {}

    def checkpoint_fields(self) -> dict[str, Any]:
        """What `save_checkpoint` records besides the weights (a denoiser's noise schedule, …)."""
        return {}

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step with the updated model (e.g. to move a target network)."""

    def state(self) -> dict[str, Tensor]:
        """Tensors the objective changes as training goes (a target network's weights): saved in the
        run's checkpoint and handed back to `load_state` on resume, so a resumed run is the same run."""
        return {}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore what `state` returned."""

    def finish(self, ema: nn.Module, data: tuple[Tensor, ...]) -> dict[str, Any]:
        """Called once when the run ends, before the final model is written; returns metadata
        to record with it (e.g. the VAE's scale factor, set here from the data)."""
        return {}
