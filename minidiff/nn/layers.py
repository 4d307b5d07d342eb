"""Building blocks shared by the networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from minidiff._checks import check_finite, check_model_timesteps


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the Transformer
    (Vaswani et al. 2017, §3.5) and DDPM, all sines first, then all cosines: for i < dim/2,

        emb[:, i] = sin(t·ω_i),   emb[:, dim/2 + i] = cos(t·ω_i),   ω_i = max_period^(-i/(dim/2))

    Args:
        t:   timesteps, shape (B,), integer or float
        dim: embedding size (even)
    Returns:
        (B, dim) float tensor on t's device.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)  # (dim/2,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding followed by a 2-layer MLP, so the network can learn its own
    features of t (DDPM's U-Net does the same)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.dim = dim
        hidden = hidden or 4 * dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.out_dim = hidden

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))  # (B, hidden)


class LabelConditioned:
    """What a network conditioned on class labels through `self.label_embedding` (an
    `nn.Embedding` of num_classes + 1 rows, the last the null label ∅, or None for an
    unconditional network) needs for the `Conditional` protocol of `minidiff.forward`."""

    label_embedding: nn.Embedding | None

    @property
    def conditional(self) -> bool:
        """Whether the model takes a condition y (here: class labels)."""
        return self.label_embedding is not None

    @property
    def num_classes(self) -> int | None:
        return None if self.label_embedding is None else self.label_embedding.num_embeddings - 1

    def check_condition(self, y: Tensor, batch: int | None = None) -> None:
        """Raise ValueError unless y is a valid label tensor (batch,) for this model."""
        K = self.num_classes
        if K is None:
            raise ValueError(
                f"y given, but this {type(self).__name__} has no label embedding (config.num_classes is None)"
            )
        B = len(y) if torch.is_tensor(y) and y.ndim and batch is None else batch
        if not torch.is_tensor(y) or y.dtype.is_floating_point or y.dtype == torch.bool or y.shape != (B,):
            got = f"{y.dtype} of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"y must be an integer tensor of shape ({B},), got {got}")
        if B and (int(y.min()) < 0 or int(y.max()) > K):
            raise ValueError(
                f"labels y must lie in [0, {K}] ({K} = null label), got values from {int(y.min())} to {int(y.max())}"
            )

    def check_image_inputs(self, x_t: Tensor, t: Tensor, y: Tensor | None, in_channels: int) -> None:
        """Raise ValueError unless x_t is a finite (B, in_channels, H, W) batch, t its B timesteps
        and y (if given) its B labels: what every image denoiser checks first."""
        check_finite("x_t", x_t)
        if x_t.ndim != 4 or x_t.shape[1] != in_channels:
            raise ValueError(f"x_t must have shape (B, {in_channels}, H, W), got {tuple(x_t.shape)}")
        check_model_timesteps(t, x_t.shape[0])
        if y is not None:
            self.check_condition(y, x_t.shape[0])

    def null_condition(self, y: Tensor) -> Tensor:
        """The null label ∅ (= num_classes) for every entry of y: "no label"."""
        return torch.full_like(y, self.num_classes)

    def embed_condition(self, emb: Tensor, y: Tensor | None) -> Tensor:
        """emb + the embedding of labels y (None: the null label); emb unchanged if unconditional."""
        if self.label_embedding is None:
            return emb
        if y is None:
            y = torch.full(emb.shape[:1], self.num_classes, dtype=torch.long, device=emb.device)
        return emb + self.label_embedding(y)


def print_summary(model: nn.Module, stages: list[tuple[str, nn.Module]], input_shape: tuple[int, ...]) -> None:
    """Run the model once on zeros of shape (1, *input_shape), t = 0, and print each stage's name,
    output shape and parameter count, then the total number of parameters of the model."""
    p = next(model.parameters())
    x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        return lambda module, args, output: shapes.__setitem__(name, tuple(output.shape))

    handles = [m.register_forward_hook(recorder(n)) for n, m in stages]
    try:
        with torch.no_grad():
            model(x, torch.zeros(1, device=x.device))
    finally:
        for h in handles:
            h.remove()
    lines = [f"{'stage':<22}{'output shape':<20}{'params':>10}"]
    lines += [f"{n:<22}{str(shapes[n]):<20}{sum(q.numel() for q in m.parameters()):>10,}" for n, m in stages]
    lines.append(f"{'total':<42}{sum(q.numel() for q in model.parameters()):>10,}")
    print("\n".join(lines))


def multiply_adds(model: nn.Module, *inputs: Tensor, **kwargs: Tensor) -> float:
    """Multiply-adds per sample of one call model(*inputs, **kwargs), as torch's `FlopCounterMode`
    counts them (2 FLOPs per multiply-add): convolutions, linear layers, and attention's Q·Kᵀ and
    weights·V (2·N·L·C for N queries, L keys of width C). Attention runs on PyTorch's plain
    "math" kernel for the count, whose matrix products the counter sees on every device."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(*inputs, **kwargs)
    return counter.get_total_flops() / 2 / len(inputs[0])
