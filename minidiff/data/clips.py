"""Procedural video: short clips of one shape of the shapes data gliding across the frame.

A clip is FRAMES frames of a shape (SHAPES × COLOURS, as `ShapesDataset`) on its background,
its centre moving by a constant velocity v per frame along a straight line that stays inside
the frame: centre_f = centre_0 + f·v. Frames are drawn at 32×32 and averaged down to 16×16,
small enough for a CPU to learn clips of them. The label is the shape's class, as for images.

What a video model must learn beyond single frames is exactly what this data fixes: the same
shape, colour and background in every frame, and a centre on a straight line at constant speed
(`track`, `path_residual` measure both on any clip).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from minidiff.data.images import COLOURS, SHAPE_CLASSES, _draw, _sample_scenes, shape_mask

FRAMES = 8
SIZE = 16  # pixels per side of a frame (drawn at 2 × SIZE, then averaged 2×2)
SPEED = (0.5, 1.25)  # pixels per frame, at SIZE


class ShapeClips:
    """n clips (n, FRAMES, 3, SIZE, SIZE) in [-1, 1] (`.clips`), each with its label (`.labels`, the
    shape × colour class of `SHAPE_CLASSES`), the centre of its shape in every frame (`.centres`,
    (n, FRAMES, 2) as x, y in pixels) and its velocity (`.velocities`, (n, 2) pixels per frame).
    The same seed gives identical tensors."""

    class_names = SHAPE_CLASSES

    def __init__(self, n: int = 5000, seed: int = 0):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        g = torch.Generator().manual_seed(seed)
        big = 2 * SIZE
        scenes = _sample_scenes(n, big, g)
        angle = 2 * math.pi * torch.rand(n, generator=g)
        speed = SPEED[0] + (SPEED[1] - SPEED[0]) * torch.rand(n, generator=g)
        v = 2 * speed[:, None] * torch.stack([angle.cos(), angle.sin()], 1)  # (n, 2) at the drawing's scale
        margin = 1.2 * scenes["radius"][:, None] + 1  # (n, 1): the shape stays inside the frame
        lo = margin + (-(FRAMES - 1) * v).clamp(min=0)  # the start that keeps every frame inside
        hi = big - margin - ((FRAMES - 1) * v).clamp(min=0)
        start = lo + (hi - lo).clamp(min=0) * torch.rand(n, 2, generator=g)  # (n, 2)
        frames, centres = [], []
        for f in range(FRAMES):
            centre = start + f * v  # (n, 2)
            image = _draw(scenes | {"centre": centre}, big)  # (n, 3, 2·SIZE, 2·SIZE) in [0, 1]
            frames.append(F.avg_pool2d(image, 2) * 2 - 1)  # (n, 3, SIZE, SIZE) in [-1, 1]
            centres.append(centre / 2)
        self.clips = torch.stack(frames, 1)  # (n, FRAMES, 3, SIZE, SIZE)
        self.centres = torch.stack(centres, 1)  # (n, FRAMES, 2)
        self.velocities = v / 2  # (n, 2)
        self.labels = scenes["shape"] * len(COLOURS) + scenes["colour"]  # (n,)

    def __len__(self) -> int:
        return len(self.labels)


def track(clips: Tensor) -> Tensor:
    """The centre of the shape in every frame of clips (B, F, 3, H, W): the mean position (x, y) of
    the pixels `shape_mask` finds, (B, F, 2); NaN in a frame where it finds none."""
    B, Fr = clips.shape[:2]
    mask = shape_mask(clips.flatten(0, 1)).float()[:, 0]  # (B·F, H, W)
    H, W = mask.shape[1:]
    ys, xs = torch.arange(H, dtype=mask.dtype) + 0.5, torch.arange(W, dtype=mask.dtype) + 0.5
    area = mask.sum((1, 2))  # (B·F,)
    x = (mask.sum(1) * xs).sum(1) / area
    y = (mask.sum(2) * ys).sum(1) / area
    return torch.stack([x, y], -1).reshape(B, Fr, 2)  # (0/0 = NaN where nothing was found)


def path_residual(centres: Tensor) -> Tensor:
    """How far a tracked centre (B, F, 2) is from moving on a straight line at constant speed: the RMS
    distance (pixels) to the least-squares fit centre_f ≈ a + f·b, per clip (B,); NaN if a frame
    has no centre."""
    Fr = centres.shape[1]
    f = torch.arange(Fr, dtype=centres.dtype)
    A = torch.stack([torch.ones_like(f), f], 1)  # (F, 2)
    fit = A @ torch.linalg.pinv(A) @ centres  # (B, F, 2): the projection onto lines a + f·b
    return (centres - fit).square().sum(-1).mean(-1).sqrt()
