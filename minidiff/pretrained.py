"""Pretrained models shipped inside the package, trained here by the repository's own recipes.

    minidiff.list_pretrained()              → {"digits": "U-Net on … (FD 1.9 vs data 0.97)", …}
    ckpt = minidiff.load_pretrained("digits")
    ckpt.model, ckpt.schedule, ckpt.sample_shape

Each model is a checkpoint file (safetensors + JSON, see `minidiff.checkpoint`) in
`minidiff/weights/`, listed in the manifest `pretrained.json` with its sha256, the recipe
and command that trained it, the steps, the training time and machine, and its measured
quality. Loading checks the sha256 first and never runs code from the file.

`python -m minidiff publish --run runs/digits --name digits` turns a finished training run
into a shipped model (it measures the quality and writes the manifest entry).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from minidiff._checks import check_choice
from minidiff.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    write_atomic,
)
from minidiff.nn.vae import VAE

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = "pretrained.json"


class WeightsError(ValueError):
    """Shipped weights that are missing from their manifest, corrupt or modified."""


def sha256_of(data: bytes) -> str:
    """The SHA-256 digest of data as 64 hex digits, as `sha256sum` prints it."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(weights_dir: str | Path, manifest: str) -> dict[str, dict[str, Any]]:
    """A weights folder's manifest: file name → entry (sha256, recipe, metrics…)."""
    path = Path(weights_dir) / manifest
    if not path.is_file():
        raise FileNotFoundError(f"no weights manifest at {path}")
    return json.loads(path.read_text())


def record_in_manifest(weights_dir: str | Path, manifest: str, file_name: str, entry: dict[str, Any]) -> None:
    """Add or replace the manifest entry of one weights file (written atomically)."""
    path = Path(weights_dir) / manifest
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[file_name] = entry
    write_atomic(path, (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode())


def verified_bytes(path: Path, manifest: str, how_to_fix: str) -> bytes:
    """The content of a weights file after checking its sha256 against the manifest of its folder."""
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}; {how_to_fix}")
    entry = read_manifest(path.parent, manifest).get(path.name)
    if entry is None:
        raise WeightsError(f"{path.parent / manifest} lists no {path.name}; {how_to_fix}")
    data = path.read_bytes()
    if sha256_of(data) != entry["sha256"]:
        raise WeightsError(f"{path}: sha256 does not match the manifest, the file is corrupt or modified; {how_to_fix}")
    return data


def machine_description() -> str:
    """The CPU (or GPU) and torch build, for a manifest's record of where training ran."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}"


def list_pretrained(weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, str]:
    """The shipped models: name → one line saying what it is and how good it is."""
    return {Path(f).stem: e["description"] for f, e in sorted(read_manifest(weights_dir, MANIFEST).items())}


def load_pretrained(name: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR) -> Checkpoint:
    """A shipped model by name, checked against its sha256: `.model` (eval mode, on `device`),
    `.schedule`, `.prediction`, `.sample_shape`, and `.meta` (how it was trained)."""
    check_choice("pretrained model", name, tuple(list_pretrained(weights_dir)))
    path = Path(weights_dir) / f"{name}.safetensors"
    entry = read_manifest(weights_dir, MANIFEST)[path.name]
    verified_bytes(path, MANIFEST, f"re-create it with `{entry['command']}`")
    return load_checkpoint(path, device=device)


def pretrained_info(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The manifest entry of a shipped model: recipe, steps, training time, machine, metrics."""
    check_choice("pretrained model", name, tuple(list_pretrained(weights_dir)))
    return read_manifest(weights_dir, MANIFEST)[f"{name}.safetensors"]


def publish(
    run_checkpoint: str | Path,
    name: str,
    dataset: str,
    recipe: str,
    training_time: str,
    n_samples: int,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 3.0,
    weights_dir: str | Path = WEIGHTS_DIR,
) -> dict[str, Any]:
    """Ship a trained model: copy its EMA weights from a run's checkpoint into weights_dir as
    `<name>.safetensors` and record it in the manifest with its measured quality.

    Quality is the dataset metric (`minidiff.metrics.ImageMetric`) of `n_samples` samples
    drawn with `sampler`/`steps` from a fixed seed, next to the same metric for real
    training images (the baseline a perfect model would reach). A conditional model is asked
    for every class in turn, with classifier-free guidance scale `guidance`, and its entry
    also records the accuracy: the share of samples the classifier sees as the class asked for.
    """
    from minidiff.metrics import ImageMetric
    from minidiff.recipes import get_recipe

    ckpt = load_checkpoint(run_checkpoint)
    metric = ImageMetric(dataset)
    r = get_recipe(recipe)
    real = dataclasses.replace(r, latent=None).load_data()[0][:n_samples]  # images, also for a latent model
    conditional = getattr(ckpt.model, "conditional", False)
    labels = torch.arange(n_samples) % len(metric.class_names) if conditional else None
    images = draw_images(ckpt, recipe, n_samples, sampler, steps, labels, guidance)
    quality = metric.evaluate(images, labels)
    baseline = metric.evaluate(real)
    path = Path(weights_dir) / f"{name}.safetensors"
    save_checkpoint(path, ckpt.model, ckpt.schedule, ckpt.sample_shape, ckpt.prediction, ckpt.step, ckpt.meta)
    parameters = sum(p.numel() for p in ckpt.model.parameters())
    asked = f", accuracy {quality['accuracy']:.0%} at guidance {guidance}" if conditional else ""
    entry = {
        "sha256": sha256_of(path.read_bytes()),
        "description": f"{type(ckpt.model).__name__} ({parameters / 1e6:.2f}M parameters) on {dataset}"
        f"{f' latents ({r.latent})' if r.latent else ''}, "
        f"{ckpt.step} steps; FD {quality['fd']:.2f} (real data: {baseline['fd']:.2f}){asked}",
        "recipe": recipe,
        "command": f"python -m minidiff train --recipe {recipe} --out runs/{recipe} --steps {ckpt.step}",
        "steps": ckpt.step,
        "parameters": parameters,
        "training_time": training_time,
        "machine": machine_description(),
        "metric": {"samples": n_samples, "sampler": f"{sampler}-{steps}", **quality}
        | ({"guidance": guidance} if conditional else {}),
        "baseline": {"data": f"{len(real)} real training images", **baseline},
    }
    record_in_manifest(weights_dir, MANIFEST, path.name, entry)
    return entry


@torch.no_grad()
def draw_images(
    ckpt: Checkpoint,
    recipe: str,
    n: int,
    sampler: str = "ddim",
    steps: int = 50,
    labels: torch.Tensor | None = None,
    guidance: float = 3.0,
    seed: int = 0,
) -> torch.Tensor:
    """n images from a trained model, from noise of a fixed seed, in batches of 256. A
    conditional model is asked for the shapes classes `labels` (N,) with classifier-free
    guidance `guidance`; a latent model's samples (its recipe names a VAE) are decoded."""
    from minidiff.guidance import class_condition, classifier_free_guidance
    from minidiff.latent import decode
    from minidiff.recipes import get_recipe
    from minidiff.samplers import sample

    x_T = torch.randn((n, *ckpt.sample_shape), generator=torch.Generator().manual_seed(seed))
    batches = []
    for i in range(0, n, 256):
        model = ckpt.eps_model
        if labels is not None:
            y = class_condition(ckpt.model, labels[i : i + 256])
            model = classifier_free_guidance(model, y, ckpt.model.null_condition(y), guidance)
        batches.append(sample(model, x_T[i : i + 256], ckpt.schedule, sampler, steps))
    latent = get_recipe(recipe).latent
    return decode(load_vae(latent), torch.cat(batches)) if latent else torch.cat(batches)


# ----- VAEs for latent diffusion ---------------------------------------------------------------
VAE_MANIFEST = "vaes.json"  # VAEs have no noise schedule: their own manifest and file format (`save_model`)


def list_vaes(weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, str]:
    """The shipped VAEs: name → one line saying what it is and how well it reconstructs."""
    if not (Path(weights_dir) / VAE_MANIFEST).is_file():
        return {}
    return {Path(f).stem: e["description"] for f, e in sorted(read_manifest(weights_dir, VAE_MANIFEST).items())}


def vae_info(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The manifest entry of a shipped VAE: recipe, steps, training time, machine, held-out MSE."""
    _check_vae_name(name, weights_dir)
    return read_manifest(weights_dir, VAE_MANIFEST)[f"{name}.safetensors"]


def load_vae(name: str, device: str | torch.device = "cpu", weights_dir: str | Path = WEIGHTS_DIR) -> VAE:
    """A shipped VAE by name (e.g. "vae_shapes"), checked against its sha256, in eval mode on
    `device`, with its `scale_factor` set: use it with `minidiff.latent.encode` / `.decode`."""
    _check_vae_name(name, weights_dir)
    path = Path(weights_dir) / f"{name}.safetensors"
    entry = read_manifest(weights_dir, VAE_MANIFEST)[path.name]
    verified_bytes(path, VAE_MANIFEST, f"re-create it with `{entry['command']}`")
    vae = load_model(path, device=device).model
    if not isinstance(vae, VAE):
        raise CheckpointError(f"{path} holds a {type(vae).__name__}, not a VAE")
    return vae


def _check_vae_name(name: str, weights_dir: str | Path) -> None:
    shipped = list_vaes(weights_dir)
    if name not in shipped:
        raise ValueError(
            f"unknown VAE {name!r}; shipped: {', '.join(map(repr, shipped)) or 'none'}. A VAE recipe's run is "
            f"shipped with minidiff.pretrained.publish_vae, e.g. after `python -m minidiff train --recipe "
            f"vae_shapes --out runs/vae_shapes`"
        )


def publish_vae(
    run_checkpoint: str | Path,
    name: str,
    recipe: str,
    training_time: str,
    n_heldout: int = 1000,
    weights_dir: str | Path = WEIGHTS_DIR,
) -> dict[str, Any]:
    """Ship a trained VAE: copy it (EMA weights and scale factor) from a finished run's
    model.safetensors into weights_dir as `<name>.safetensors`, and record it in the VAE
    manifest with its reconstruction MSE on `n_heldout` held-out images (`Recipe.load_heldout`:
    images the run never saw)."""
    from minidiff.recipes import get_recipe
    from minidiff.train_vae import reconstruction_mse

    saved = load_model(run_checkpoint)
    vae = saved.model
    if not isinstance(vae, VAE):
        raise CheckpointError(f"{run_checkpoint} holds a {type(vae).__name__}, not a VAE")
    if "scale_factor" not in saved.meta:
        raise CheckpointError(
            f"{run_checkpoint} has no scale factor yet: publish the model.safetensors a finished run writes"
        )
    r = get_recipe(recipe)
    heldout = r.load_heldout(n_heldout)
    mse = reconstruction_mse(vae, heldout)
    psnr = 10 * math.log10(4 / mse)  # peak-to-peak 2 on the [-1, 1] scale
    path = Path(weights_dir) / f"{name}.safetensors"
    save_model(path, vae, saved.step, saved.meta)
    parameters = sum(p.numel() for p in vae.parameters())
    latent = vae.latent_shape(tuple(heldout.shape[1:]))
    entry = {
        "sha256": sha256_of(path.read_bytes()),
        "description": f"VAE ({parameters / 1e6:.2f}M parameters) on {r.dataset}, {tuple(heldout.shape[1:])} → "
        f"latents {latent}, {saved.step} steps; held-out reconstruction MSE {mse:.4f} (PSNR {psnr:.1f} dB)",
        "recipe": recipe,
        "command": f"python -m minidiff train --recipe {recipe} --out runs/{recipe} --steps {saved.step}",
        "steps": saved.step,
        "parameters": parameters,
        "training_time": training_time,
        "machine": machine_description(),
        "kl_weight": vae.config.kl_weight,
        "scale_factor": vae.scale_factor.item(),
        "latent_shape": list(latent),
        "metric": {
            "heldout_mse": mse,
            "psnr_db": psnr,
            "heldout": f"{len(heldout)} {r.dataset} images never trained on",
        },
    }
    record_in_manifest(weights_dir, VAE_MANIFEST, path.name, entry)
    return entry
