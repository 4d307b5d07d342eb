"""Editing images with a trained denoiser: img2img (SDEdit) and inpainting (RePaint).

Both only see tensors and an ε-predicting denoiser `model(x_t, t)`, so they work alike on
pixels and on the latents of a VAE (`minidiff.latent`), with any model, conditional ones
included (wrap the condition into the denoiser, e.g. with `minidiff.guidance`).

    img2img   noise the input x0 part of the way, to the level `strength` picks, then run an
              ordinary sampler from there (Meng et al. 2022, "SDEdit", arXiv:2108.01073)
    inpaint   generate the unknown region while, at every step, the known region is replaced
              by the known image noised to that step's level (Lugmayr et al. 2022, "RePaint",
              arXiv:2201.09865), optionally going back and forth a few times per step

Notation as in `minidiff.samplers`: x_t = √ᾱ·x0 + √(1-ᾱ)·ε is the VP state the model sees,
σ = √((1-ᾱ)/ᾱ) the noise level, ᾱ = 1/(1 + σ²); mask = 1 (True) where the pixel is known.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor

from minidiff._checks import check_choice, check_finite
from minidiff.forward import Denoiser
from minidiff.samplers import SAMPLERS, check_sigmas, ddim_step, noise_levels, timestep_at
from minidiff.schedules import NoiseSchedule
from minidiff.trajectory import Callback, Step


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def img2img(
    model: Denoiser,
    x0: Tensor,
    schedule: NoiseSchedule,
    strength: float,
    sampler: str = "ddim",
    steps: int = 50,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    **kwargs,
) -> Tensor:
    """SDEdit (Meng et al. 2022, arXiv:2108.01073, Algorithm 1): noise x0 to a level on the
    sampler's path, then denoise from there with the usual sampler.

    Of the `steps` noise levels σ_0 > … > σ_{steps-1} the sampler would visit, it keeps the
    last k = round(strength·steps) (`sdedit_levels`), starts from

        x_t = √ᾱ·x0 + √(1-ᾱ)·ε,   ᾱ = 1/(1 + σ²) at the first level kept   (Ho et al. 2020, eq. 4)

    and takes those k steps. Little strength keeps the layout and colours of x0 and changes
    details; strength near 1 keeps almost nothing. strength 0 returns x0 itself (no step);
    strength 1 starts from pure noise ε and is plain sampling (`sample(model, ε, …)`).

    Args:
        model:     ε-predictor model(x_t, t), as for every sampler
        x0:        the images (or latents, or points) to edit, (B, …)
        schedule:  the schedule the model was trained with
        strength:  in [0, 1]: how far towards pure noise the edit starts
        sampler:   a name in `minidiff.samplers.SAMPLERS`
        steps:     the sampler's steps for strength 1 (fewer are taken: k of them)
        spacing:   how the sampler's noise levels are chosen
        generator: random source of ε (drawn first) and of the sampler's own noise
        kwargs:    more arguments of the sampler: callback, eta…
    """
    check_finite("x0", x0)
    check_choice("sampler", sampler, tuple(SAMPLERS))
    sigmas = sdedit_levels(noise_levels(schedule, steps, spacing), strength)  # the last k + 1 levels
    if len(sigmas) == 1:
        return x0.clone()  # no step to take: the input, unchanged
    eps = _noise_like(x0, generator)  # ε ~ N(0, I)
    if len(sigmas) == steps + 1:
        x_t = eps  # every level kept: start from pure noise, as plain sampling does
    else:
        alpha_bar = 1 / (1 + sigmas[0] ** 2)  # ᾱ at the first level kept
        x_t = alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps  # eq. 4
    return SAMPLERS[sampler](model, x_t, schedule, sigmas, generator=generator, **kwargs)


def sdedit_levels(sigmas: list[float], strength: float) -> list[float]:
    """The levels an SDEdit of `strength` visits: of a sampler's σ_0 > … > σ_N = 0 (N steps),
    the last k = round(strength·N) steps, from σ_{N-k} down to 0. strength 1 keeps them all;
    strength 0 keeps none: [0.0]."""
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1] (1: start from pure noise), got {strength!r}")
    sigmas = check_sigmas(sigmas)
    steps = len(sigmas) - 1
    return sigmas[steps - round(strength * steps) :]


@torch.no_grad()
def inpaint(
    model: Denoiser,
    x_known: Tensor,
    mask: Tensor,
    schedule: NoiseSchedule,
    steps: int = 50,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    resample: int = 1,
    eta: float = 1.0,
    x_T: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Inpainting by replacement: RePaint (Lugmayr et al. 2022, arXiv:2201.09865, Algorithm 1)
    with jumps of one step.

    From x_T ~ N(0, I), for each step σ → σ_next, `resample` times:

        x_unknown = one reverse step of x from σ to σ_next     (DDPM for eta = 1, DDIM for eta = 0)
        x_known'  = √ᾱ_next·x_known + √(1-ᾱ_next)·ε             (the known image noised to σ_next)
        x_next    = mask·x_known' + (1 - mask)·x_unknown
        unless it was the last time: x ← √(ᾱ/ᾱ_next)·x_next + √(1 - ᾱ/ᾱ_next)·ε   (back to σ: "resampling")

    The last step ends at σ = 0, where x_known' = x_known: the known pixels of the result
    equal x_known exactly. resample = 1 is the plain replacement method; it is only an
    approximation of sampling the unknown region given the known one (the unknown part is
    steered by freshly noised known pixels that it never agreed with), biased towards the
    unconditional distribution when known and unknown values are strongly correlated.
    RePaint's resampling (resample = 5 to 20) lets both parts harmonise and reduces the
    bias, at resample times the cost. (For a 2-D Gaussian with correlation 0.8, the mean of
    the generated coordinate goes from about 70% to over 90% of the way from the unconditional
    to the conditional mean with resample = 5, while its variance goes from 15% too large to
    30% too small: see tests/test_edit.py.)

    Args:
        model:     ε-predictor model(x_t, t)
        x_known:   the image with its known values, (B, …); the unknown ones are ignored
        mask:      1 (True) where known, 0 where to generate; x_known's shape, with size 1
                   allowed in any dimension (e.g. (B, 1, H, W) for all channels of a pixel)
        schedule:  the schedule the model was trained with
        steps, spacing, generator: as for `minidiff.samplers.ddpm`
        resample:  RePaint's U: how many times each step is taken (≥ 1)
        eta:       noise of the reverse step, as DDIM's η (1: DDPM, RePaint's choice)
        x_T:       the starting noise (default: drawn from `generator`)
        callback:  called with a `Step` after every step (x_next after the replacement)
    """
    check_finite("x_known", x_known)
    known = check_mask(mask, x_known)  # bool, broadcasts against x_known
    if not isinstance(resample, int) or resample < 1:
        raise ValueError(f"resample must be a positive integer (1: no resampling), got {resample!r}")
    if not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1] (1: DDPM steps, as RePaint), got {eta!r}")
    sigmas = noise_levels(schedule, steps, spacing)
    if x_T is None:
        x_T = _noise_like(x_known, generator)
    elif x_T.shape != x_known.shape:
        raise ValueError(f"x_T must have x_known's shape {tuple(x_known.shape)}, got {tuple(x_T.shape)}")
    x = x_T
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        alpha_bar, alpha_bar_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        for u in range(resample):
            x_unknown, x0_hat = ddim_step(model, x, schedule, sigma, sigma_next, eta, generator)
            if sigma_next > 0:
                x_known_next = alpha_bar_next**0.5 * x_known + (1 - alpha_bar_next) ** 0.5 * _noise_like(x, generator)
            else:
                x_known_next = x_known  # σ = 0: the known values themselves
            x_next = torch.where(known, x_known_next, x_unknown)  # keep the known region, generate the rest
            if u < resample - 1 and sigma_next > 0:  # resampling: noise x_next back to σ (forward process)
                alpha = alpha_bar / alpha_bar_next
                x = alpha**0.5 * x_next + (1 - alpha) ** 0.5 * _noise_like(x, generator)
            else:
                break
        if callback:
            callback(Step(i, timestep_at(schedule, sigma), x, x0_hat, x_next))
        x = x_next
    return x


def check_mask(mask: Tensor, x: Tensor, name: str = "mask") -> Tensor:
    """A known/unknown mask checked against the data x it applies to, as a bool tensor.

    It must have x's number of dimensions, each of size 1 or x's (it broadcasts: (B or 1,
    1 or C, H, W) for images), and hold only 0 and 1 (or be bool). Errors name what is
    wrong, and suggest `minidiff.latent.latent_mask` when a pixel mask meets latents.
    """
    if not torch.is_tensor(mask):
        raise TypeError(f"{name} must be a torch.Tensor of 0s and 1s (1 = known), got {type(mask).__name__}")
    shape, x_shape = tuple(mask.shape), tuple(x.shape)
    fits = mask.ndim == x.ndim and all(m in (1, n) for m, n in zip(shape, x_shape, strict=True))
    if not fits:
        expected = f"(B or 1, 1 or {x_shape[1]}, {x_shape[2]}, {x_shape[3]})" if x.ndim == 4 else f"{x_shape}"
        hint = ""
        if x.ndim == 4 and mask.ndim == 4 and mask.shape[-1] > x.shape[-1] and mask.shape[-1] % x.shape[-1] == 0:
            hint = " (a pixel-space mask on latents? resize it to the latent grid with minidiff.latent.latent_mask)"
        raise ValueError(f"{name} must have shape {expected} to go with x's {x_shape}, got {shape}{hint}")
    if mask.dtype == torch.bool:
        return mask.to(x.device)
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        values = (
            f"from {float(mask.min())} to {float(mask.max())}" if mask.numel() and not mask.is_complex() else "complex"
        )
        raise ValueError(f"{name} must hold only 0 and 1 (1 = known, 0 = to generate), got values {values}")
    return mask.to(device=x.device) == 1
