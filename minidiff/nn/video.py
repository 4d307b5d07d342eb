"""A space-time denoiser for short clips: the image U-Net on every frame, plus attention across
frames at every position (factorised space-time attention, as video diffusion models do: Ho et al.
2022, "Video Diffusion Models"; Blattmann et al. 2023).

    x_t (B, F, C, H, W) ─ frames as a batch (B·F, C, H, W) ─► the U-Net's blocks, each followed by
        temporal attention: at every pixel of its feature map, the F frames attend to each other

A U-Net block mixes information within a frame; a temporal attention layer mixes it across the
frames at one place. Stacked, they reach every pixel of every frame, at the cost of one image
U-Net per frame plus attention over F positions (cheap: F is 8), not over F·H·W. Each temporal
layer's output projection starts at zero, so an untrained model treats the frames independently:
an image model, to which training adds what ties the frames together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_fields
from minidiff.nn.attention import zero_init
from minidiff.nn.layers import LabelConditioned, timestep_embedding
from minidiff.nn.unet import Block, UNet, UNetConfig


@dataclass
class VideoUNetConfig:
    """A `VideoUNet`: the per-frame U-Net's config and the number of frames of a clip."""

    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=3, channel_mults=(1, 2)))
    frames: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):  # rebuilt from a checkpoint's JSON
            self.unet = UNetConfig(**self.unet)
        check_fields(self)
        if self.frames < 1:
            raise ValueError(f"frames must be a positive integer, got {self.frames}")


def frame_tokens(h: Tensor, frames: int) -> Tensor:
    """Per-frame feature maps (B·F, C, H, W), each clip's F frames consecutive, as the sequences temporal
    attention reads: for every clip and pixel, its F frames, each a token of C features, (B·H·W, F, C)."""
    BF, C, H, W = h.shape
    return h.reshape(BF // frames, frames, C, H, W).permute(0, 3, 4, 1, 2).reshape(-1, frames, C)


def frame_maps(x: Tensor, shape: torch.Size) -> Tensor:
    """The inverse of `frame_tokens`: sequences (B·H·W, F, C) back to feature maps of `shape` (B·F, C, H, W)."""
    BF, C, H, W = shape
    frames = x.shape[1]
    return x.reshape(BF // frames, H, W, frames, C).permute(0, 3, 4, 1, 2).reshape(shape)


class TemporalAttention(nn.Module):
    """h + Attention over frames at each pixel, (B·F, C, H, W) → the same shape. The frames' order
    enters through a sinusoidal embedding of the frame index, added to the features before their
    projection to queries, keys and values; the output projection is zero at the start."""

    def __init__(self, channels: int, heads: int, groups: int, frames: int):
        super().__init__()
        self.heads, self.frames = heads, frames
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))
        self.register_buffer("position", timestep_embedding(torch.arange(frames), channels), persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        x = frame_tokens(self.norm(h), self.frames)  # (BHW, F, C): per clip and pixel, its frames
        x = x + self.position.to(x)  # which frame each token is
        N, Fr, C = x.shape
        q, k, v = (z.reshape(N, Fr, self.heads, C // self.heads).transpose(1, 2)
                   for z in self.qkv(x).chunk(3, dim=-1))  # (BHW, heads, F, C/heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(N, Fr, C)
        return h + frame_maps(self.proj(out), h.shape)  # (B·F, C, H, W)


class SpaceTimeBlock(nn.Module):
    """A U-Net `Block` (within each frame), then `TemporalAttention` (across the frames)."""

    def __init__(self, block: Block, temporal: TemporalAttention):
        super().__init__()
        self.block, self.temporal = block, temporal

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        return self.temporal(self.block(h, emb, context, context_mask))


class VideoUNet(LabelConditioned, nn.Module):
    """model(x_t, t, y=None) → prediction with x_t's shape, for clips x_t (B, F, C, H, W).

    Every `Block` of a `UNet` (down, middle, up) is followed by temporal attention; t and y (one
    per clip) are given to every frame. Conditioning, guidance and every sampler work as for
    images: only the tensors have one more axis.
    """

    def __init__(self, config: VideoUNetConfig | None = None):
        super().__init__()
        self.config = c = config or VideoUNetConfig()
        self.unet = UNet(c.unet)

        def space_time(block: Block) -> SpaceTimeBlock:
            width = block.res.conv1.out_channels
            return SpaceTimeBlock(block, TemporalAttention(width, c.unet.heads, c.unet.groups, c.frames))

        for level in (*self.unet.down, *self.unet.up):
            level["blocks"] = nn.ModuleList(space_time(b) for b in level["blocks"])
        self.unet.mid = nn.ModuleList(space_time(b) for b in self.unet.mid)

    @property
    def label_embedding(self) -> nn.Embedding | None:
        return self.unet.label_embedding

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.config
        if x_t.ndim != 5 or x_t.shape[1] != c.frames or x_t.shape[2] != c.unet.in_channels:
            raise ValueError(f"x_t must have shape (B, {c.frames}, {c.unet.in_channels}, H, W) (clips of "
                             f"{c.frames} frames), got {tuple(x_t.shape)}")
        B = x_t.shape[0]
        frames = x_t.flatten(0, 1)  # (B·F, C, H, W)
        t = t.reshape(-1).expand(B) if t.numel() == 1 else t
        if t.shape != (B,):
            raise ValueError(f"t must hold one timestep per clip, shape ({B},), got {tuple(t.shape)}")
        y_frames = None if y is None else y.repeat_interleave(c.frames, 0)
        out = self.unet(frames, t.repeat_interleave(c.frames), y_frames)  # (B·F, C, H, W)
        return out.reshape(x_t.shape)
