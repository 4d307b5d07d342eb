"""A U-Net denoiser for images: model(x_t, t) → ε̂ with x_t's shape.

The architecture of DDPM (Ho et al. 2020, App. B) with the refinements of Dhariwal & Nichol
2021 ("ADM"): residual blocks with GroupNorm and SiLU that read the time embedding through
a scale and a shift, self-attention at low resolution only, and zero-initialised output
layers. Conditioning plugs in without changing the rest: a class-label embedding added
to the time embedding (with a null label for classifier-free guidance, Ho & Salimans
2022) and cross-attention to a context sequence (Rombach et al. 2022).

    x_t ─ inp ─► down level 0 ────────── skips ─────────► up level 0 ─ out ─► ε̂
                      ↓ halve H, W                          ↑ double H, W
                      down level 1 ───── skips ─────► up level 1
                           ↓                             ↑
                           down level 2 ─ mid ─► up level 2

Each level is `blocks_per_level` blocks (a residual block, plus attention at attention
levels). The output of every block on the way down is kept as a skip and concatenated to
the input of its mirror block on the way up, which therefore takes 2·C_i channels.

Notation: B batch, C base width, C_i = C · channel_mults[i] the width of level i, which works
at resolution H/2^i × W/2^i; E the width of the time embedding (4C).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_fields, check_finite
from minidiff.course import bf16_autocast
from minidiff.nn.attention import CrossAttention, SelfAttention, zero_init
from minidiff.nn.layers import LabelConditioned, TimeEmbedding, print_summary


@dataclass
class UNetConfig:
    """The architecture of a `UNet`. The defaults (1.38M parameters, attention at 4×4) suit
    1×16×16 digits; `UNetConfig(in_channels=3)` takes 3×32×32 RGB (attention at 8×8)."""

    in_channels: int = 1  # image channels: 1 for digits, 3 for RGB
    out_channels: int | None = None  # channels of the prediction; None → in_channels
    channels: int = 32  # base width C
    channel_mults: tuple[int, ...] = (1, 2, 2)  # level i has width C·mults[i] at resolution H/2^i
    blocks_per_level: int = 2  # residual blocks per level, on the way down and on the way up
    attention_levels: tuple[int, ...] = (-1,)  # levels (indices into channel_mults) with attention; -1 = lowest
    heads: int = 4  # attention heads
    dropout: float = 0.0  # dropout inside the residual blocks
    groups: int = 8  # GroupNorm groups
    num_classes: int | None = None  # labels 0…num_classes-1; label num_classes is the null label
    context_dim: int | None = None  # adds cross-attention to a (B, L, context_dim) context at attention levels
    # execution options: they change speed, not the weights
    channels_last: bool = False  # NHWC memory format (often faster for convolutions on CPU and GPU)
    bf16: bool = False  # run under bfloat16 autocast (fast on GPUs and CPUs with native bf16, slow otherwise)

    def __post_init__(self) -> None:
        check_fields(self)
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        levels = len(self.channel_mults)
        for name in ("in_channels", "out_channels", "channels", "blocks_per_level", "heads", "groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not levels or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be a non-empty tuple of positive integers, got {self.channel_mults}")
        if any(self.channels * m % self.groups for m in self.channel_mults):
            raise ValueError(
                f"every width channels·mult must be divisible by groups={self.groups}, got "
                f"{[self.channels * m for m in self.channel_mults]}"
            )
        if any(not -levels <= i < levels for i in self.attention_levels):
            raise ValueError(
                f"attention_levels must index channel_mults (-{levels} … {levels - 1}), got {self.attention_levels}"
            )
        if any(self.channels * self.channel_mults[i] % self.heads for i in self.attention_levels):
            raise ValueError(
                f"heads={self.heads} must divide the width of every attention level, got widths "
                f"{[self.channels * self.channel_mults[i] for i in self.attention_levels]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {self.num_classes}")
        if self.context_dim is not None and (self.context_dim < 1 or not self.attention_levels):
            raise ValueError(
                f"context_dim must be a positive integer and needs attention_levels, got "
                f"context_dim={self.context_dim}, attention_levels={self.attention_levels}"
            )


class ResBlock(nn.Module):
    """x → skip(x) + conv₂(SiLU(GN(conv₁(SiLU(GN(x)))) · (1 + scale) + shift)), with
    (scale, shift) = Linear(emb): the time (and label) embedding modulates every channel
    ("adaptive group normalisation", Dhariwal & Nichol 2021, §3)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, affine=False)  # the scale-shift takes the affine's place
        self.dropout = nn.Dropout(dropout)
        # zero-init: the block starts as the identity, so a deep stack trains stably from step one
        self.conv2 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # 2 × (B, C_out, 1, 1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)  # (B, C_out, H, W)
        return self.skip(x) + self.conv2(self.dropout(h))  # (B, C_out, H, W)


class Block(nn.Module):
    """One stage of a level: a ResBlock, then (at attention levels) self-attention and, if the
    model has a context, cross-attention to it."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, config: UNetConfig, attention: bool):
        super().__init__()
        c = config
        self.res = ResBlock(c_in, c_out, emb_dim, c.groups, c.dropout)
        self.attn = SelfAttention(c_out, c.heads, c.groups) if attention else None
        self.cross = CrossAttention(c_out, c.context_dim, c.heads, c.groups) if attention and c.context_dim else None

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        if self.cross is not None and context is not None:
            h = self.cross(h, context, context_mask)
        return h


class Downsample(nn.Conv2d):
    """Halve H and W with a 3×3 convolution of stride 2 (DDPM)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.ConvTranspose2d):
    """Double H and W and go to the next level's width with a 2×2 transposed convolution of
    stride 2, the "up-convolution" of the original U-Net (Ronneberger et al. 2015). It costs
    a ninth of nearest-neighbour upsampling followed by a 3×3 convolution."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 2, stride=2)


class UNet(LabelConditioned, nn.Module):
    """model(x_t, t, y=None, context=None, context_mask=None) → prediction (ε by default)
    with x_t's shape and dtype.

    Args of forward:
        x_t:          noisy images, (B, in_channels, H, W); H and W divisible by 2^(levels-1)
        t:            timesteps, (B,), integer or float (fractional timesteps are fine)
        y:            class labels, (B,) integers in [0, num_classes]; num_classes (or y=None)
                      means "no label", so conditional and unconditional rows of classifier-
                      free guidance can share one batch. Needs config.num_classes.
        context:      (B, L, context_dim) sequence for cross-attention, e.g. text tokens;
                      None means unconditional (the cross-attention blocks add nothing).
                      Needs config.context_dim.
        context_mask: (B, L) bool, True for real tokens; padding gets no attention.

    Mixed precision: set config.bf16, or call the model inside `torch.autocast(...)`;
    either way the output comes back in x_t's dtype.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = c = config or UNetConfig()
        widths = [c.channels * m for m in c.channel_mults]  # C_i
        levels = len(widths)
        attention = {i % levels for i in c.attention_levels}
        self.time_embedding = TimeEmbedding(c.channels)  # sinusoid(t) → MLP, (B, E)
        E = self.time_embedding.out_dim
        self.label_embedding = nn.Embedding(c.num_classes + 1, E) if c.num_classes else None  # +1: the null label
        self.inp = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)

        self.down = nn.ModuleList()
        w = c.channels
        for i, w_i in enumerate(widths):
            blocks = [Block(w if j == 0 else w_i, w_i, E, c, i in attention) for j in range(c.blocks_per_level)]
            resample = Downsample(w_i) if i < levels - 1 else nn.Identity()
            self.down.append(nn.ModuleDict(dict(blocks=nn.ModuleList(blocks), resample=resample)))
            w = w_i
        self.mid = nn.ModuleList([Block(w, w, E, c, levels - 1 in attention), Block(w, w, E, c, False)])
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            blocks = [Block(2 * widths[i], widths[i], E, c, i in attention) for _ in range(c.blocks_per_level)]
            resample = Upsample(widths[i], widths[i - 1]) if i > 0 else nn.Identity()
            self.up.append(nn.ModuleDict(dict(blocks=nn.ModuleList(blocks), resample=resample)))
        # zero-init: the untrained model predicts 0, so the first loss is E[ε²] = 1 and the first steps are calm
        self.out = nn.Sequential(
            nn.GroupNorm(c.groups, widths[0]), nn.SiLU(), zero_init(nn.Conv2d(widths[0], c.out_channels, 3, padding=1))
        )
        if c.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        y: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        self.check_inputs(x_t, t, y, context, context_mask)
        with self.autocast(x_t):
            emb = self.embed(t, y)  # (B, E)
            h, skips = self.encode(x_t, emb, context, context_mask)
            return self.decode(h, skips, emb, context, context_mask).to(x_t.dtype)  # (B, out_channels, H, W)

    def autocast(self, x_t: Tensor) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on x_t's device if config.bf16 or a lesson's `use_device` chose it, else nothing."""
        return bf16_autocast(x_t, self.config.bf16)

    def embed(self, t: Tensor, y: Tensor | None) -> Tensor:
        """SiLU(time embedding + label embedding), what every block reads: (B, E)."""
        emb = self.time_embedding(t)  # (B, E)
        emb = self.embed_condition(emb, y)  # + the label's embedding (B, E); y = None: the null label
        return F.silu(emb)  # once here rather than in every block

    def encode(
        self, x_t: Tensor, emb: Tensor, context: Tensor | None, context_mask: Tensor | None, hint: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """The way down and the middle: (h at the lowest level, the skips, first level first).
        `hint` (B, C, H, W), if given, is added after the input convolution (how a ControlNet's
        control image enters its copy of the encoder, `minidiff.nn.controlnet`)."""
        if self.config.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        h = self.inp(x_t)  # (B, C, H, W)
        if hint is not None:
            h = h + hint
        skips = []
        for level in self.down:
            for block in level["blocks"]:
                h = block(h, emb, context, context_mask)  # (B, C_i, H/2^i, W/2^i)
                skips.append(h)
            h = level["resample"](h)  # (B, C_i, H/2^(i+1), W/2^(i+1)) except at the lowest level
        for block in self.mid:
            h = block(h, emb, context, context_mask)  # (B, C_lowest, H/2^(levels-1), W/2^(levels-1))
        return h, skips

    def decode(
        self, h: Tensor, skips: list[Tensor], emb: Tensor, context: Tensor | None, context_mask: Tensor | None
    ) -> Tensor:
        """The way up, each block taking its mirror's skip, and the output layer."""
        skips = list(skips)
        for level in self.up:
            for block in level["blocks"]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)  # (B, C_i, …)
            h = level["resample"](h)  # (B, C_(i-1), H/2^(i-1), W/2^(i-1)) except at level 0
        return self.out(h)  # (B, out_channels, H, W)

    def check_inputs(
        self, x_t: Tensor, t: Tensor, y: Tensor | None, context: Tensor | None, context_mask: Tensor | None
    ) -> None:
        c = self.config
        self.check_image_inputs(x_t, t, y, c.in_channels)
        factor = 2 ** (len(c.channel_mults) - 1)
        if x_t.shape[2] % factor or x_t.shape[3] % factor:
            raise ValueError(
                f"x_t's height and width must be divisible by {factor} (the U-Net halves them "
                f"{len(c.channel_mults) - 1} times), got {x_t.shape[2]}×{x_t.shape[3]}"
            )
        if context is None and context_mask is not None:
            raise ValueError("context_mask given without context")
        if context is not None:
            if c.context_dim is None:
                raise ValueError("context given, but this UNet has no cross-attention (config.context_dim is None)")
            check_finite("context", context)

    def summary(self, input_shape: tuple[int, int, int]) -> None:
        """Print each stage's name, output shape and parameter count for one input of shape
        (C, H, W), then the total number of parameters."""
        kinds = (TimeEmbedding, nn.Embedding, Block, Downsample, Upsample)
        stages = [(n, m) for n, m in self.named_modules() if n in ("inp", "out") or isinstance(m, kinds)]
        print_summary(self, stages, input_shape)
