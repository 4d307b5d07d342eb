"""Shipping a trained model: copy a finished run into `minidiff/weights/` and record, in its
manifest, how it was made and how good it is (measured here, at publish time).

    from minidiff.publish import publish, publish_vae
    publish("runs/digits/model.safetensors", "digits", "digits", "digits", "14 min", n_samples=1000)
    publish_vae("runs/vae_shapes/model.safetensors", "vae_shapes", "vae_shapes", "12 min")

Samples are drawn with `minidiff.generate`, the same path the command line and the lessons use.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from minidiff.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidiff.files import WEIGHTS_DIR, machine_description, record_in_manifest, sha256_of
from minidiff.forward import is_conditional
from minidiff.generate import generate
from minidiff.metrics import ImageMetric
from minidiff.nn.vae import VAE, reconstruction_mse
from minidiff.pretrained import MANIFEST, VAE_MANIFEST
from minidiff.recipes import get_recipe


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
    drawn with `sampler`/`steps` from seed 0, next to the same metric for real training images
    (the baseline a perfect model would reach). A conditional model is asked for every class in
    turn, with classifier-free guidance scale `guidance`, and its entry also records the
    accuracy: the share of samples the classifier sees as the class asked for.
    """
    ckpt = load_checkpoint(run_checkpoint)
    metric = ImageMetric(dataset)
    r = get_recipe(recipe)
    real = dataclasses.replace(r, latent=None).load_data()[0][:n_samples]  # images, also for a latent model
    conditional = is_conditional(ckpt.model)
    labels = torch.arange(n_samples) % len(metric.class_names) if conditional else None
    images = generate(ckpt, n_samples, sampler=sampler, steps=steps, label=labels,
                      guidance=guidance if conditional else None)
    quality = metric.evaluate(images, labels)
    baseline = metric.evaluate(real)
    path = Path(weights_dir) / f"{name}.safetensors"
    save_checkpoint(path, ckpt.model, ckpt.schedule, ckpt.sample_shape, ckpt.prediction, ckpt.step, ckpt.meta,
                    vae=ckpt.vae)
    parameters = sum(p.numel() for p in ckpt.model.parameters())
    asked = f", accuracy {quality['accuracy']:.0%} at guidance {guidance}" if conditional else ""
    entry = {
        "sha256": sha256_of(path.read_bytes()),
        "description": f"{type(ckpt.model).__name__} ({parameters / 1e6:.2f}M parameters) on {dataset}"
        f"{f' latents ({ckpt.vae})' if ckpt.vae else ''}, "
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
    saved = load_checkpoint(run_checkpoint)
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
    save_checkpoint(path, vae, sample_shape=saved.sample_shape, step=saved.step, meta=saved.meta)
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
