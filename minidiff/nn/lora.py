"""LoRA: low-rank adapters (Hu et al. 2021, arXiv:2106.09685) for a trained network's layers.

A fine-tuned weight is the trained one plus a change, W' = W + ΔW. LoRA trains the change in a
low-rank form and leaves W frozen:

    h = W·x + (α/r)·B·A·x,    A: (r, d_in),  B: (d_out, r),  r ≪ min(d_in, d_out)    (Hu et al., eq. 3)

B starts at zero, so an adapted network is exactly the trained one until training moves B. For a
convolution, A is a convolution with the layer's kernel into r channels and B a 1×1 convolution
back out. `merge` folds (α/r)·B·A into W (no extra cost at inference); `unmerge` takes it out.

An adapter is a change to *one* base network: `save_adapter` writes the A and B matrices with the
identity of that base (a hash of its weights and its config), and `load_adapter` refuses another
base unless told otherwise: the classic mistake of using a LoRA on a model it was not trained for.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from minidiff.files import safetensors_metadata, tensors_sha256, write_atomic

DEFAULT_TARGETS = ("*qkv", "*.q", "*.kv", "*proj")  # the attention projections (SelfAttention, CrossAttention, DiT)
FORMAT = "minidiff-lora"


class LoRA(nn.Module):
    """A frozen `nn.Linear` or `nn.Conv2d` plus a trainable low-rank change (α/r)·B·A."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"LoRA adapts nn.Linear and nn.Conv2d layers, got {type(base).__name__}")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        self.base, self.rank, self.alpha = base.requires_grad_(False), rank, float(alpha)
        self.unmerged_weight: Tensor | None = None  # W itself while W + ΔW is merged in
        if isinstance(base, nn.Linear):
            self.A = nn.Linear(base.in_features, rank, bias=False)  # (r, d_in)
            self.B = nn.Linear(rank, base.out_features, bias=False)  # (d_out, r)
        else:
            self.A = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.B = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=5**0.5)  # as nn.Linear initialises its weight
        nn.init.zeros_(self.B.weight)  # B = 0: the adapted layer starts as the base layer
        self.to(base.weight)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank  # α/r

    @property
    def weight(self) -> Tensor:
        return self.base.weight  # (for code that reads a layer's weight, e.g. its dtype)

    @property
    def merged(self) -> bool:
        return self.unmerged_weight is not None

    def forward(self, x: Tensor) -> Tensor:
        if self.merged:
            return self.base(x)
        return self.base(x) + self.scale * self.B(self.A(x))  # h = W·x + (α/r)·B·A·x

    def delta(self) -> Tensor:
        """ΔW = (α/r)·B·A, in the shape of the base weight."""
        if isinstance(self.base, nn.Linear):
            return self.scale * self.B.weight @ self.A.weight  # (d_out, d_in)
        A = self.A.weight.flatten(1)  # (r, c_in·k·k)
        return self.scale * (self.B.weight.flatten(1) @ A).reshape(self.base.weight.shape)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.unmerged_weight = self.base.weight.detach().clone()
            self.base.weight += self.delta()  # W ← W + (α/r)·B·A

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.copy_(self.unmerged_weight)  # W exactly as it was (W + ΔW - ΔW would round)
            self.unmerged_weight = None


def add_lora(model: nn.Module, rank: int = 4, alpha: float | None = None,
             targets: tuple[str, ...] = DEFAULT_TARGETS) -> list[str]:
    """Freeze `model` and wrap each `nn.Linear` / `nn.Conv2d` whose name matches a pattern of
    `targets` (fnmatch, e.g. "*qkv"; "*conv*" adds convolutions) in a `LoRA` of rank `rank` and
    scale α/r (α = rank by default: scale 1). Returns the names wrapped; raises ValueError if none."""
    alpha = float(rank) if alpha is None else alpha
    model.requires_grad_(False)
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
             and not isinstance(m, LoRA) and "." + name.split(".")[-1] not in (".A", ".B")
             and any(fnmatch.fnmatchcase(name, p) for p in targets)]
    if not names:
        raise ValueError(f"no nn.Linear or nn.Conv2d layer of this {type(model).__name__} matches targets {targets}")
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, LoRA(getattr(holder, child), rank, alpha))
    return names


def adapters(model: nn.Module) -> dict[str, LoRA]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRA)}


def merge(model: nn.Module) -> None:
    """Fold every adapter's (α/r)·B·A into its base weight: the same outputs, no extra cost."""
    for m in adapters(model).values():
        m.merge()


def unmerge(model: nn.Module) -> None:
    """Take every merged adapter's change back out of its base weight."""
    for m in adapters(model).values():
        m.unmerge()


def adapter_spec(model: nn.Module) -> dict | None:
    """The rank, α and layers of `model`'s adapters (None if it has none): what a checkpoint records
    so that `add_lora(model, spec["rank"], spec["alpha"], spec["layers"])` rebuilds them. Merged
    adapters cannot be recorded: their change is already inside the base weights."""
    found = adapters(model)
    if not found:
        return None
    if any(m.merged for m in found.values()):
        raise ValueError("the model's adapters are merged into its weights: unmerge them before saving")
    first = next(iter(found.values()))
    if any((m.rank, m.alpha) != (first.rank, first.alpha) for m in found.values()):
        raise ValueError("the model's adapters have different ranks or alphas; a checkpoint records one of each")
    return {"rank": first.rank, "alpha": first.alpha, "layers": list(found)}


def base_identity(model: nn.Module) -> dict[str, str]:
    """What an adapter is tied to: the base network's class, config and a hash of its own weights
    (the adapters' A and B left out, merged changes taken out)."""
    wrapped = adapters(model)
    weights = {}
    for name, value in model.state_dict().items():
        if not name.endswith((".A.weight", ".B.weight")):
            layer = next((path for path in wrapped if name.startswith(f"{path}.base.")), None)
            if layer is not None:  # "<layer>.base.weight" → "<layer>.weight", without a merged change
                name = f"{layer}.{name.removeprefix(f'{layer}.base.')}"
                if name == f"{layer}.weight" and wrapped[layer].merged:
                    value = wrapped[layer].unmerged_weight
            weights[name] = value
    config = getattr(model, "config", None)
    return {"class": type(model).__name__, "weights_sha256": tensors_sha256(weights)[:16],
            "config": json.dumps(dataclasses.asdict(config), sort_keys=True) if config is not None else "null"}


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapters of `model` alone (their A and B, safetensors) with their rank, scale and
    the identity of the base they belong to (`base_identity`), atomically."""
    found = adapters(model)
    if not found:
        raise ValueError(f"this {type(model).__name__} has no LoRA adapters to save (add them with add_lora)")
    tensors = {f"{name}.{part}": getattr(m, part).weight.detach().cpu().contiguous()
               for name, m in found.items() for part in ("A", "B")}
    first = next(iter(found.values()))
    meta = {"format": FORMAT, "rank": str(first.rank), "alpha": str(first.alpha), **base_identity(model)}
    return write_atomic(Path(path), safetensors.torch.save(tensors, metadata=meta))


def load_adapter(model: nn.Module, path: str | Path, *, allow_other_base: bool = False,
                 data: bytes | None = None) -> list[str]:
    """Add the adapters saved in `path` to `model` (no pickle: safetensors). Refuses, with a
    ValueError naming both, a base other than the one they were trained on (another class, config
    or weights), unless `allow_other_base` (to show what goes wrong). `data`: the file's bytes if
    already read (and checked). Returns the layers adapted."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    meta = safetensors_metadata(data, path)
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a minidiff LoRA adapter (no {FORMAT!r} metadata)")
    ours, theirs = base_identity(model), {k: meta.get(k) for k in ("class", "weights_sha256", "config")}
    if ours["class"] != theirs["class"] or ours["config"] != theirs["config"]:
        raise ValueError(f"{path} adapts a {theirs['class']} with config {theirs['config']}, not this "
                         f"{ours['class']} with config {ours['config']}: an adapter is tied to its base's architecture")
    if ours["weights_sha256"] != theirs["weights_sha256"] and not allow_other_base:
        raise ValueError(f"{path} was trained on a base with weights {theirs['weights_sha256']}, this model's are "
                         f"{ours['weights_sha256']}: an adapter is tied to its base's weights (allow_other_base=True "
                         "to apply it anyway)")
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})  # "<layer>.A", "<layer>.B" → "<layer>"
    rank, alpha = int(meta["rank"]), float(meta["alpha"])
    add_lora(model, rank, alpha, targets=tuple(names))
    for name, m in adapters(model).items():
        m.A.weight.data.copy_(tensors[f"{name}.A"])
        m.B.weight.data.copy_(tensors[f"{name}.B"])
    return names
