"""Classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598): steer a conditional
denoiser by how much its prediction changes when the condition is removed.

One network, trained with the condition dropped now and then (`DiffusionObjective.p_uncond`),
predicts both ε(x_t, t, y) and ε(x_t, t, ∅). Guidance extrapolates from the second past
the first:

    ε̂ = ε(x_t, t, ∅) + w·(ε(x_t, t, y) − ε(x_t, t, ∅))

This is the convention of Stable Diffusion and diffusers: w = 1 is the plain conditional
model (no guidance), w = 0 the unconditional one, w > 1 pushes towards what makes y
different from nothing — 7.5 is the familiar default; 20 and more burns images out.
(Ho & Salimans write (1 + w')·ε_cond − w'·ε_uncond, the same thing with w = 1 + w'.)

A negative prompt puts another condition in place of ∅: ε̂ = ε(y_neg) + w·(ε(y) − ε(y_neg))
moves away from y_neg as well as towards y.

`classifier_free_guidance` returns a denoiser (x_t, t) ↦ ε̂ that every sampler takes. It knows
only denoisers: turning a label or a prompt into the condition y is `minidiff.generate`'s job.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.forward import Denoiser


def classifier_free_guidance(
    model: Denoiser, y: Tensor, y_uncond: Tensor, w: float = 7.5, batched: bool = True
) -> Denoiser:
    """The guided ε-predictor (x_t, t) ↦ ε(∅) + w·(ε(y) − ε(∅)) for a conditional model.

    Args:
        model:    a conditional ε-predictor model(x_t, t, y=…), e.g. `ckpt.eps_model` of a
                  class- or text-conditional checkpoint
        y:        the condition of each sample, (B,) labels or (B, L) token ids
        y_uncond: what to guide away from, same shape as y: the null condition
                  (`net.null_condition(y)`) or a negative prompt
        w:        guidance scale; 1 = no guidance (one model call: ε(y) alone), 0 = unconditional
        batched:  run both predictions in one forward pass of 2B samples (faster); False
                  runs two passes of B (less memory). Both give the same ε̂.
    """
    if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
        raise ValueError(f"w (the guidance scale) must be a finite number, got {w!r}")
    if not torch.is_tensor(y) or not torch.is_tensor(y_uncond) or y.shape != y_uncond.shape:
        raise ValueError(f"y and y_uncond must be tensors of the same shape, got {_shape(y)} and {_shape(y_uncond)}")

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        if len(y) != len(x_t):
            raise ValueError(f"y holds {len(y)} conditions, but x_t has a batch of {len(x_t)}")
        if w == 1:  # ε(∅) + 1·(ε(y) − ε(∅)) = ε(y): one call, not two (torch.lerp gives ε(y) bit for bit at 1)
            return model(x_t, t, y=y)
        if batched:
            both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), y=torch.cat([y_uncond, y]))  # (2B, …)
            eps_uncond, eps_cond = both.chunk(2)
        else:
            eps_uncond, eps_cond = model(x_t, t, y=y_uncond), model(x_t, t, y=y)
        return torch.lerp(eps_uncond, eps_cond, w)  # ε̂ = ε(∅) + w·(ε(y) − ε(∅)), exact at w = 0 and 1

    return guided


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__
