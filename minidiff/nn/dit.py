"""A diffusion transformer, DiT (Peebles & Xie 2023): model(x_t, t, y=None) → prediction with
x_t's shape and dtype, a drop-in for the `UNet` in training, every sampler, guidance and `generate`.

The image is cut into p×p patches and each patch becomes a token; a stack of transformer
blocks lets every token read every other; a linear layer turns each token back into its patch.

    x_t ─ patchify ─► tokens ─ embed + position ─► block × depth ─► final ─ unpatchify ─► prediction
    (B, C, H, W)      (B, N, C·p²)   (B, N, D)        (B, N, D)     (B, N, C_out·p²)  (B, C_out, H, W)
                                                        ↑              ↑
                               c = SiLU(time embedding(t) + label embedding(y)),  (B, D)

There are no convolutions: apart from the patch grid, the only thing that tells the network
where a token sits is the position embedding added to it.

Conditioning is adaLN-Zero (Peebles & Xie 2023, §3.2). A block's LayerNorms learn no scale or
shift of their own; a linear map of c gives, for each of the two sublayers, a shift β, a
scale γ and a gate α (all (B, D)):

    x ← x + α₁ ⊙ Attention(LN(x) ⊙ (1 + γ₁) + β₁)
    x ← x + α₂ ⊙ MLP(LN(x) ⊙ (1 + γ₂) + β₂)

That linear map starts at zero, so α = 0 and every block starts as the identity; the final
layer starts at zero too, so the untrained DiT predicts 0 (the U-Net's zero-init, for the same
reason: the first loss is calm and each block joins in only as it learns to help).

Notation: B batch, C image channels, p patch size, N = (H/p)·(W/p) tokens, D width.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_fields
from minidiff.course import bf16_autocast
from minidiff.nn.attention import TokenAttention, zero_init
from minidiff.nn.layers import LabelConditioned, TimeEmbedding, print_summary, timestep_embedding


@dataclass
class DiTConfig:
    """The architecture of a `DiT`. The defaults (1.9M parameters with 16 classes) take 3×32×32 RGB as an
    8×8 grid of 4×4 patches: 64 tokens."""

    in_channels: int = 3  # image channels
    out_channels: int | None = None  # channels of the prediction; None → in_channels
    patch_size: int = 4  # p: the image is cut into p×p patches, one token each
    width: int = 128  # D, the size of every token vector (divisible by heads and by 4)
    depth: int = 6  # transformer blocks
    heads: int = 4  # attention heads
    mlp_ratio: int = 4  # the MLP's hidden layer is mlp_ratio·D wide
    num_classes: int | None = None  # labels 0…num_classes-1; label num_classes is the null label
    bf16: bool = False  # run under bfloat16 autocast (an execution option: speed, not weights)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        for name in ("in_channels", "out_channels", "patch_size", "width", "depth", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.width % self.heads or self.width % 4:
            raise ValueError(
                f"width must be divisible by heads={self.heads} and by 4 (the 2-D position embedding), "
                f"got {self.width}"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {self.num_classes}")


def patchify(x: Tensor, p: int) -> Tensor:
    """Images (B, C, H, W) → tokens (B, N, C·p²), N = (H/p)·(W/p), patches in reading order
    (row by row); each token lists its patch's values channel by channel."""
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(
            f"the image's height and width must be divisible by the patch size p={p} (it is cut into "
            f"{p}×{p} patches), got {H}×{W}"
        )
    x = x.reshape(B, C, H // p, p, W // p, p)  # (B, C, rows, p, cols, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)  # (B, N, C·p²)


def unpatchify(tokens: Tensor, p: int, H: int, W: int) -> Tensor:
    """Tokens (B, N, C·p²) → images (B, C, H, W): `patchify`'s inverse."""
    B, N, Cpp = tokens.shape
    C = Cpp // (p * p)
    x = tokens.reshape(B, H // p, W // p, C, p, p)  # (B, rows, cols, C, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


@functools.lru_cache(maxsize=8)
def position_embedding_2d(rows: int, cols: int, dim: int) -> Tensor:
    """Fixed sine-cosine embedding of a rows×cols grid, (rows·cols, dim), in `patchify`'s order:
    the first dim/2 entries embed the token's row, the last dim/2 its column, each with the
    sinusoids of `timestep_embedding` (as DiT and MAE do; dim divisible by 4). Computed once per
    grid and kept (it has no parameters): do not modify the tensor it returns."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")  # (rows, cols) each
    return torch.cat([timestep_embedding(r.flatten(), dim // 2), timestep_embedding(c.flatten(), dim // 2)], dim=1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x ⊙ (1 + γ) + β for tokens x (B, N, D) and per-sample shift β, scale γ (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning (the module docstring's two lines)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = TokenAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = mlp_ratio * width
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = zero_init(nn.Linear(width, 6 * width))  # c → β₁, γ₁, α₁, β₂, γ₂, α₂; zero: α = 0

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)  # 6 × (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (B, N, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, N, D)


class FinalLayer(nn.Module):
    """Tokens (B, N, D) → patches (B, N, C_out·p²): adaptive LayerNorm, then a linear map; both zero-init."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = zero_init(nn.Linear(width, 2 * width))  # c → β, γ
        self.linear = zero_init(nn.Linear(width, out_features))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)  # 2 × (B, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, C_out·p²)


class DiT(LabelConditioned, nn.Module):
    """model(x_t, t, y=None) → prediction with x_t's shape and dtype.

    Args of forward:
        x_t: noisy images, (B, in_channels, H, W); H and W divisible by patch_size (any size:
             the position embedding is computed for the grid it is given)
        t:   timesteps, (B,), integer or float, on the scale the U-Net takes (0 … T)
        y:   class labels, (B,) integers in [0, num_classes]; num_classes (or y=None) is the
             null label ∅ of classifier-free guidance. Needs config.num_classes.
    """

    def __init__(self, config: DiTConfig | None = None):
        super().__init__()
        self.config = c = config or DiTConfig()
        D, p = c.width, c.patch_size
        self.embed = nn.Linear(c.in_channels * p * p, D)  # one patch → one token
        self.time_embedding = TimeEmbedding(D, hidden=D)  # sinusoid(t) → MLP, (B, D)
        self.label_embedding = nn.Embedding(c.num_classes + 1, D) if c.num_classes else None  # +1: the null label
        self.blocks = nn.ModuleList(DiTBlock(D, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.final = FinalLayer(D, c.out_channels * p * p)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        c = self.config
        self.check_image_inputs(x_t, t, y, c.in_channels)  # (`patchify` checks that p divides H and W)
        p, (H, W) = c.patch_size, x_t.shape[2:]
        with bf16_autocast(x_t, c.bf16):
            cond = F.silu(self.embed_condition(self.time_embedding(t), y))  # c, (B, D); y = None: the null label
            tokens = patchify(x_t, p)  # (B, N, C·p²); checks that p divides H and W
            h = self.embed(tokens) + position_embedding_2d(H // p, W // p, c.width).to(x_t.device)  # (B, N, D)
            for block in self.blocks:
                h = block(h, cond)  # (B, N, D)
            return unpatchify(self.final(h, cond), p, H, W).to(x_t.dtype)  # (B, C_out, H, W)

    def summary(self, input_shape: tuple[int, int, int]) -> None:
        """Print each stage's name, output shape and parameter count for one input of shape
        (C, H, W), then the total number of parameters."""
        kinds = (TimeEmbedding, nn.Embedding, DiTBlock, FinalLayer)
        stages = [(n, m) for n, m in self.named_modules() if n == "embed" or isinstance(m, kinds)]
        print_summary(self, stages, input_shape)
