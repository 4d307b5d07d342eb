"""A real photograph that ships with matplotlib (Grace Hopper, in its sample data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from matplotlib import cbook
from matplotlib import image as mpimg
from torch import Tensor


def sample_photo(size: int = 128) -> Tensor:
    """matplotlib's grace_hopper.jpg, centre-cropped to a square and resized to size×size,
    as a (1, 3, size, size) float32 tensor in [-1, 1]."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        pixels = torch.from_numpy(mpimg.imread(f, format="jpg").copy())  # (H, W, 3) uint8
    img = pixels.permute(2, 0, 1).float()[None] / 127.5 - 1  # (1, 3, H, W) in [-1, 1]
    side = min(img.shape[-2:])
    top, left = (img.shape[-2] - side) // 2, (img.shape[-1] - side) // 2
    img = img[..., top : top + side, left : left + side]
    return F.interpolate(img, size=(size, size), mode="area")


def to_display(x: Tensor) -> Tensor:
    """[-1, 1] images (B, C, H, W) → [0, 1] images (B, H, W, C) for matplotlib."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
