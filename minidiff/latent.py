"""Latent diffusion: encode, diffuse, decode (Rombach et al. 2022, arXiv:2112.10752).

A VAE (`minidiff.nn.vae`) is trained once; the diffusion model then never sees a pixel:

    images (B, 3, 32, 32) ─ encode ─► z (B, 4, 8, 8) ─ train / sample / guide / edit ─► z ─ decode ─► images
                                      (B, 4, 4, 4) with "vae_shapes_f8": Stable Diffusion's f = 8

The training loop, the samplers, guidance and `minidiff.edit` are the pixel-space ones,
unchanged: they only see tensors of another shape. A recipe with `latent="vae_shapes"`
trains on latents (`Recipe.load_data` encodes its images with that shipped VAE).

    z = scale_factor · μ(x)            `encode`: the posterior mean, scaled to unit variance
    x̂ = decoder(z / scale_factor)     `decode`: unscale first

A mask that says which pixels are known must be brought to the latent grid too: one
latent value stands for an f×f block of pixels (f = 4 for "vae_shapes", 8 for "vae_shapes_f8" and
Stable Diffusion), so `latent_mask` keeps a latent cell only if all its pixels are known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minidiff._checks import check_finite
from minidiff.edit import check_mask, inpaint
from minidiff.forward import Denoiser
from minidiff.nn.vae import VAE
from minidiff.schedules import NoiseSchedule


@torch.no_grad()
def encode(vae: VAE, images: Tensor, batch_size: int = 256) -> Tensor:
    """Scaled latents z = scale_factor·μ(x) of images (B, C, H, W) in [-1, 1]: (B, c, H/f, W/f),
    on the images' device and in their dtype (the VAE runs on its own device)."""
    check_finite("images", images)
    p = next(vae.parameters())
    z = [vae.encode(x.to(p)).mean * vae.scale_factor for x in images.split(batch_size)]  # (b, c, h, w) each
    return torch.cat(z).to(images)  # (B, c, H/f, W/f)


@torch.no_grad()
def decode(vae: VAE, z: Tensor, batch_size: int = 256) -> Tensor:
    """Images x̂ = decoder(z / scale_factor) (B, C, H·f, W·f) from scaled latents z (B, c, H, W),
    on z's device and in its dtype."""
    check_finite("z", z)
    p = next(vae.parameters())
    x = [vae.decode(z_i.to(p) / vae.scale_factor) for z_i in z.split(batch_size)]  # (b, C, H·f, W·f) each
    return torch.cat(x).to(z)  # (B, C, H·f, W·f)


def latent_mask(mask: Tensor, vae: VAE | int) -> Tensor:
    """A pixel-space mask (B, 1, H, W), 1 (True) = known, resized to the latent grid
    (B, 1, H/f, W/f): a latent cell is known only if all f×f pixels it covers are known
    (a minimum over each block), so nothing unknown leaks into the known latent.

    Args:
        mask: (B, 1, H, W) of 0s and 1s, or bool; H and W divisible by f
        vae:  the VAE (its downsampling factor f) or f itself
    Returns a mask of mask's dtype.
    """
    f = vae if isinstance(vae, int) else vae.factor
    if not torch.is_tensor(mask) or mask.ndim != 4 or mask.shape[1] != 1:
        got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise ValueError(f"mask must have shape (B, 1, H, W), one value per pixel, got {got}")
    if mask.shape[2] % f or mask.shape[3] % f:
        raise ValueError(
            f"mask's height and width must be divisible by the VAE's factor {f}, got {mask.shape[2]}×{mask.shape[3]}"
        )
    known = check_mask(mask, mask).float()  # 0s and 1s, checked
    small = -F.max_pool2d(-known, f)  # (B, 1, H/f, W/f): the minimum over each f×f block
    return small.bool() if mask.dtype == torch.bool else small.to(mask.dtype)


def inpaint_latent(
    model: Denoiser,
    vae: VAE,
    images: Tensor,
    mask: Tensor,
    schedule: NoiseSchedule,
    **kwargs,
) -> Tensor:
    """Inpainting with a latent diffusion model: encode the images, inpaint their latents
    with the mask resized by `latent_mask` (`minidiff.edit.inpaint`, kwargs go there), decode,
    and paste the known pixels back, so that they equal `images` exactly.

    Args:
        model:  ε-predictor on scaled latents
        vae:    the VAE the model's latents come from
        images: (B, C, H, W) in [-1, 1]; only the known pixels matter
        mask:   (B or 1, 1, H, W), 1 (True) where the pixel is known
    """
    known = check_mask(mask, images)  # bool (B or 1, 1, H, W)
    z = inpaint(model, encode(vae, images), latent_mask(known, vae), schedule, **kwargs)  # (B, c, H/f, W/f)
    return torch.where(known, images, decode(vae, z))  # (B, C, H, W)
