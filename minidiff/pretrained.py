"""Pretrained models shipped inside the package, trained here by the repository's own recipes.

    minidiff.list_pretrained()              → {"digits": "U-Net on … (FD 1.9 vs data 0.97)", …}
    ckpt = minidiff.load_pretrained("digits")
    ckpt.model, ckpt.schedule, ckpt.sample_shape

Each model is a checkpoint file (safetensors + JSON, see `minidiff.checkpoint`) in
`minidiff/weights/`, listed in the manifest `pretrained.json` (VAEs: `vaes.json`) with its
sha256, the recipe and command that trained it, the steps, the training time and machine, and
its measured quality. Loading reads the file once, checks the sha256 of those bytes and loads
them; no code from the file is ever run. `minidiff.publish` turns a finished run into a shipped
model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from minidiff._checks import check_choice
from minidiff.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from minidiff.files import WEIGHTS_DIR, read_manifest, verified_bytes
from minidiff.nn.lora import load_adapter
from minidiff.nn.vae import VAE

MANIFEST = "pretrained.json"
VAE_MANIFEST = "vaes.json"  # VAEs are no denoisers: their own manifest
ADAPTER_MANIFEST = "adapters.json"  # LoRA adapters (`minidiff.nn.lora`), each naming the shipped base it adapts


def list_pretrained(weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, str]:
    """The shipped models, adapters included: name → one line saying what it is and how good it is."""
    return {Path(f).stem: e.get("description", "") for f, e in sorted(_entries(weights_dir).items())}


def _entries(weights_dir: str | Path) -> dict[str, dict[str, Any]]:
    adapters = read_manifest(weights_dir, ADAPTER_MANIFEST) if (Path(weights_dir) / ADAPTER_MANIFEST).is_file() else {}
    return read_manifest(weights_dir, MANIFEST) | adapters


def pretrained_info(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The manifest entry of a shipped model: recipe, steps, training time, machine, metrics (an
    adapter's: also "base", the shipped model it adapts)."""
    check_choice("pretrained model", name, tuple(list_pretrained(weights_dir)))
    return _entries(weights_dir)[f"{name}.safetensors"]


def load_pretrained(name: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR) -> Checkpoint:
    """A shipped model by name, checked against its sha256: `.model` (eval mode, on `device`),
    `.schedule`, `.prediction`, `.sample_shape`, `.vae` and `.meta` (how it was trained). An
    adapter's name gives its base with the adapters added (not merged: `minidiff.nn.lora.merge`)."""
    entry = pretrained_info(name, weights_dir)
    path = Path(weights_dir) / f"{name}.safetensors"
    how_to_fix = f"re-create it with `{entry.get('command', 'its recipe')}`"
    if "base" in entry:  # an adapter: its base, then the adapters (refused if the base is not theirs)
        ckpt = load_pretrained(entry["base"], device, weights_dir)
        load_adapter(ckpt.model, path, data=verified_bytes(path, ADAPTER_MANIFEST, how_to_fix))
        return ckpt
    return load_checkpoint(path, device=device, data=verified_bytes(path, MANIFEST, how_to_fix))


def list_vaes(weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, str]:
    """The shipped VAEs: name → one line saying what it is and how well it reconstructs."""
    if not (Path(weights_dir) / VAE_MANIFEST).is_file():
        return {}
    entries = read_manifest(weights_dir, VAE_MANIFEST)
    return {Path(f).stem: e.get("description", "") for f, e in sorted(entries.items())}


def vae_info(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The manifest entry of a shipped VAE: recipe, steps, training time, machine, held-out MSE."""
    shipped = list_vaes(weights_dir)
    if name not in shipped:
        raise ValueError(
            f"unknown VAE {name!r}; shipped: {', '.join(map(repr, shipped)) or 'none'}. A VAE recipe's run is "
            f"shipped with minidiff.publish.publish_vae, e.g. after `python -m minidiff train --recipe "
            f"vae_shapes --out runs/vae_shapes`"
        )
    return read_manifest(weights_dir, VAE_MANIFEST)[f"{name}.safetensors"]


def load_vae(name: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR) -> VAE:
    """A shipped VAE by name (e.g. "vae_shapes"), checked against its sha256, in eval mode on
    `device`, with its `scale_factor` set: use it with `minidiff.latent.encode` / `.decode`."""
    entry = vae_info(name, weights_dir)
    path = Path(weights_dir) / f"{name}.safetensors"
    data = verified_bytes(path, VAE_MANIFEST, f"re-create it with `{entry.get('command', 'its recipe')}`")
    vae = load_checkpoint(path, device=device, data=data).model
    if not isinstance(vae, VAE):
        raise CheckpointError(f"{path} holds a {type(vae).__name__}, not a VAE")
    return vae
