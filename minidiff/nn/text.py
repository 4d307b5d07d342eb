"""Text conditioning: a word-level tokenizer, a small Transformer text encoder, and a U-Net
that cross-attends to its output.

Stable Diffusion turns a prompt into a sequence of token vectors with a frozen CLIP text
encoder, and its U-Net reads that sequence through cross-attention (Rombach et al. 2022,
arXiv:2112.10752, §3.3): queries come from the pixels, keys and values from the tokens.
Here the vocabulary is the few words of the `shapes` captions ("a small red circle"), so the
encoder is tiny and is trained together with the U-Net from scratch.

Token ids: 0 is padding; a row of ids with no real token (all padding) is the empty, null
prompt ∅, which makes every cross-attention block add nothing — the unconditional branch
of classifier-free guidance (see `TextUNet.null_condition`).

Notation: B batch, L = max_len tokens, D = dim (the context width the U-Net attends to).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_fields
from minidiff.data.images import CAPTION_WORDS
from minidiff.nn.attention import _merge_heads, _split_heads
from minidiff.nn.unet import UNet, UNetConfig

PAD = "<pad>"  # token id 0


class Tokenizer:
    """Prompts → token ids: lower-case, split on spaces, look every word up, pad to max_len.

        tok = Tokenizer(CAPTION_WORDS)
        tok.encode(["a red star", "a large blue circle"])  # (2, max_len) int64, 0 = padding

    An unknown word, an empty prompt or one longer than max_len words raises ValueError
    naming the prompt; the null prompt of guidance is `null(n)`, not "".
    """

    def __init__(self, words: Sequence[str], max_len: int = 8):
        self.vocab = (PAD, *words)  # id i ↦ vocab[i]
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len

    def encode(self, prompts: str | Sequence[str]) -> Tensor:
        """(B, max_len) int64 token ids for B prompts (a single string counts as B = 1)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("prompts is empty; give at least one prompt")
        ids = torch.zeros(len(prompts), self.max_len, dtype=torch.long)  # (B, L), padded with 0
        for i, prompt in enumerate(prompts):
            words = self._words(prompt)
            ids[i, : len(words)] = torch.tensor([self.ids[w] for w in words])
        return ids

    def _words(self, prompt: str) -> list[str]:
        if not isinstance(prompt, str):
            raise ValueError(f"each prompt must be a string, got {type(prompt).__name__}")
        words = prompt.lower().split()
        if not words:
            raise ValueError("prompt is empty; for the unconditional (null) prompt of guidance use tokenizer.null(n)")
        if len(words) > self.max_len:
            raise ValueError(f"prompt {prompt!r} has {len(words)} words, more than max_len={self.max_len}")
        unknown = [w for w in words if w not in self.ids or w == PAD]
        if unknown:
            raise ValueError(
                f"unknown word(s) {unknown} in prompt {prompt!r}; the vocabulary is: {', '.join(self.vocab[1:])}"
            )
        return words

    def null(self, n: int) -> Tensor:
        """(n, max_len) ids of the null prompt ∅: all padding."""
        return torch.zeros(n, self.max_len, dtype=torch.long)

    def decode(self, ids: Tensor) -> list[str]:
        """Token ids (B, L) back to prompts, padding dropped ("" for the null prompt)."""
        return [" ".join(self.vocab[i] for i in row if i != 0) for row in ids.tolist()]


@dataclass
class TextConfig:
    """A `TextEncoder`: its vocabulary (the tokenizer's words) and size."""

    vocab: tuple[str, ...] = CAPTION_WORDS  # the words; id 0 is padding, word i has id i + 1
    max_len: int = 8  # tokens per prompt
    dim: int = 64  # D, the width of the token vectors
    layers: int = 2  # Transformer blocks
    heads: int = 4

    def __post_init__(self) -> None:
        check_fields(self)
        self.vocab = tuple(self.vocab)
        if len(set(self.vocab)) != len(self.vocab) or PAD in self.vocab or not self.vocab:
            raise ValueError(f"vocab must be distinct words without {PAD!r}, got {self.vocab}")
        for name in ("max_len", "dim", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide dim={self.dim}")


class TransformerBlock(nn.Module):
    """Pre-norm Transformer encoder block (Vaswani et al. 2017; pre-norm as in GPT-2):
    x + SelfAttention(LN(x)), then x + MLP(LN(x)). Padding keys get no attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        visible = mask | ~mask.any(dim=1, keepdim=True)  # (B, L); an all-padding row sees itself, to avoid 0/0
        q, k, v = (_split_heads(z, self.heads) for z in self.qkv(self.norm1(x)).chunk(3, dim=-1))  # (B, h, L, d)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, None, :])  # (B, h, L, d)
        x = x + self.proj(_merge_heads(attended))  # (B, L, D)
        return x + self.mlp(self.norm2(x))  # (B, L, D)


class TextEncoder(nn.Module):
    """Token ids (B, L) → (context (B, L, D), mask (B, L)): token + position embeddings,
    `layers` Transformer blocks, a final LayerNorm. mask is True for real tokens."""

    def __init__(self, config: TextConfig):
        super().__init__()
        c = self.config = config
        self.tokenizer = Tokenizer(c.vocab, c.max_len)
        self.token = nn.Embedding(len(c.vocab) + 1, c.dim)  # +1: padding, id 0
        self.position = nn.Parameter(torch.randn(c.max_len, c.dim) * 0.02)  # learned, as in GPT-2
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        self.check_ids(ids)
        mask = ids != 0  # (B, L)
        x = self.token(ids) + self.position  # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask

    def check_ids(self, ids: Tensor, batch: int | None = None) -> None:
        """Raise ValueError unless ids is an integer (batch, max_len) tensor of known token ids."""
        L, V = self.config.max_len, len(self.config.vocab)
        B = ids.shape[0] if torch.is_tensor(ids) and ids.ndim and batch is None else batch
        if not torch.is_tensor(ids) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.shape != (B, L):
            got = f"{ids.dtype} of shape {tuple(ids.shape)}" if torch.is_tensor(ids) else type(ids).__name__
            raise ValueError(f"token ids must be an integer tensor of shape ({B}, {L}) (tokenizer.encode), got {got}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > V):
            raise ValueError(f"token ids must lie in [0, {V}], got {int(ids.min())} … {int(ids.max())}")


@dataclass
class TextUNetConfig:
    """A `TextUNet`: the U-Net (its context_dim must equal text.dim) and the text encoder."""

    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=3, context_dim=64))
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):  # rebuilt from a checkpoint's JSON
            self.unet = UNetConfig(**self.unet)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        check_fields(self)
        if self.unet.context_dim != self.text.dim:
            raise ValueError(
                f"unet.context_dim ({self.unet.context_dim}) must equal text.dim ({self.text.dim}), "
                "the width of the token vectors it attends to"
            )


class TextUNet(nn.Module):
    """model(x_t, t, y) → prediction: a U-Net conditioned on a prompt through cross-attention.

    y is the prompt as token ids (B, max_len) from `model.tokenizer.encode(prompts)`;
    y = None or an all-padding row is the null prompt ∅ (unconditional). As with the
    class-conditional `UNet`, the condition is called y, so the training loop, guidance
    and samplers treat both alike.
    """

    def __init__(self, config: TextUNetConfig | None = None):
        super().__init__()
        self.config = config or TextUNetConfig()
        self.text = TextEncoder(self.config.text)
        self.unet = UNet(self.config.unet)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.text.tokenizer

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            y = self.tokenizer.null(x_t.shape[0]).to(x_t.device)
        self.check_condition(y, x_t.shape[0])
        context, mask = self.text(y)  # (B, L, D), (B, L)
        return self.unet(x_t, t, context=context, context_mask=mask)

    conditional = True  # the model takes a condition y (token ids)

    def check_condition(self, y: Tensor, batch: int | None = None) -> None:
        """Raise ValueError unless y holds valid token ids for `batch` samples."""
        self.text.check_ids(y, batch)

    def null_condition(self, y: Tensor) -> Tensor:
        """The null prompt ∅ for every row of y: all padding."""
        return torch.zeros_like(y)
