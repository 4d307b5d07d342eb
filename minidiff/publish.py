"""Shipping a trained model: copy a finished run into `minidiff/weights/` and record, in its
manifest, how it was made and how good it is (measured here, at publish time).

    from minidiff.publish import publish, publish_vae
    publish("runs/digits/model.safetensors", "digits", "digits", "digits", "14 min", n_samples=1000)
    publish_vae("runs/vae_shapes/model.safetensors", "vae_shapes", "vae_shapes", "12 min")
    halve("digits")          # a model shipped in float32: store it in float16, measuring the change
    fit_steps("shapes_class", "unipc", steps=(5, 10))   # fitted noise levels, stored with the model

Samples are drawn with `minidiff.generate`, the same path the command line and the lessons use.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from minidiff.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from minidiff.data.images import SHAPE_CLASSES
from minidiff.files import WEIGHTS_DIR, machine_description, record_in_manifest, sha256_of, verified_bytes
from minidiff.forward import is_conditional, is_controlled
from minidiff.generate import generate
from minidiff.guidance import classifier_free_guidance
from minidiff.metrics import class_accuracy, control_adherence, dataset_metric
from minidiff.nn.lora import adapters, load_adapter, save_adapter
from minidiff.nn.vae import VAE, reconstruction_mse
from minidiff.optimise_steps import optimise_sigmas, reference_solution, sampling_error
from minidiff.pretrained import ADAPTER_MANIFEST, MANIFEST, VAE_MANIFEST, load_pretrained, pretrained_info, vae_info
from minidiff.recipes import get_recipe
from minidiff.samplers import noise_levels

_SHORT = {"fd": "FD", "sliced_wasserstein": "SW"}  # a metric's name in a one-line description


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
    sweep: Sequence[float] = (),
    steps_sweep: Sequence[int] = (),
    weights_dir: str | Path = WEIGHTS_DIR,
) -> dict[str, Any]:
    """Ship a trained model: copy its EMA weights from a run's checkpoint into weights_dir as
    `<name>.safetensors`, in half precision, and record it in the manifest with its measured quality.

    Quality is the dataset metric (`minidiff.metrics.dataset_metric`: FD for images, sliced
    Wasserstein distance for 2-D points) of `n_samples` samples
    drawn with `sampler`/`steps` from seed 0 by the file as shipped, next to the same metric
    for real training images (the baseline a perfect model would reach) and for the run's
    float32 weights (what storing float16 changed). A conditional model is asked for every
    class in turn, with classifier-free guidance scale `guidance` (and each scale of `sweep`,
    recorded under "by_guidance"), and its entry also records the accuracy: the share of
    samples the classifier sees as the class asked for. Each number of steps in `steps_sweep` is
    measured the same way at `guidance` and recorded under "by_steps" (e.g. a consistency model
    at 1, 2 and 4 steps).
    """
    run = load_checkpoint(run_checkpoint)
    path = Path(weights_dir) / f"{name}.safetensors"
    save_checkpoint(path, run.model, run.schedule, run.sample_shape, run.prediction, run.step, run.meta,
                    vae=run.vae, weights_dtype=torch.float16)
    shipped = load_checkpoint(path)
    r = get_recipe(recipe)
    measure = functools.partial(_quality, dataset=dataset, n_samples=n_samples, sampler=sampler, steps=steps,
                                holdout=r.holdout)
    quality, float32 = measure(shipped, guidance), measure(run, guidance)
    real = dataclasses.replace(r, latent=None).load_data()[0]  # images, also for a latent model
    real = real[:: max(1, len(real) // n_samples)][:n_samples]  # spread over the data (a clip's frames come together)
    baseline = dataset_metric(dataset).evaluate(real)
    headline = "fd" if "fd" in baseline else "sliced_wasserstein"  # images: FD; 2-D points: sliced Wasserstein
    conditional = is_conditional(shipped.model)
    parameters = sum(p.numel() for p in shipped.model.parameters())
    asked = f", accuracy {quality['accuracy']:.0%} at guidance {guidance}" if conditional else ""
    entry = {
        "sha256": sha256_of(path.read_bytes()),
        "description": f"{type(shipped.model).__name__} ({parameters / 1e6:.2f}M parameters) on {dataset}"
        f"{f' latents ({shipped.vae})' if shipped.vae else ''}, "
        f"{shipped.step} steps; {_SHORT[headline]} {quality[headline]:.2f} "
        f"(real data: {baseline[headline]:.2f}){asked}",
        "recipe": recipe,
        "command": f"python -m minidiff train --recipe {recipe} --out runs/{recipe} --steps {shipped.step}",
        "steps": shipped.step,
        "parameters": parameters,
        "weights": "float16",
        "training_time": training_time,
        "machine": machine_description(),
        "metric": {"samples": n_samples, "sampler": f"{sampler}-{steps}", **quality}
        | ({"guidance": guidance} if conditional else {}),
        "float32_metric": float32,
        "baseline": {"data": f"{len(real)} real training {'points' if real.ndim == 2 else 'samples'}", **baseline},
    }
    if conditional and sweep:
        entry["by_guidance"] = {str(w): measure(shipped, w) for w in sweep}
    if is_controlled(shipped.model):  # a ControlNet: how well it obeys its control, and the base alone
        adherence = functools.partial(control_adherence, shipped, n_samples, steps=steps)
        entry["control"] = {str(w): adherence(w) for w in sorted({guidance, *sweep})}
        entry["control"]["without_control"] = adherence(guidance, control=False)
        entry["description"] += (f"; mask IoU {entry['control'][str(guidance)]['iou']:.2f} with the control, "
                                 f"{entry['control']['without_control']['iou']:.2f} without (the metric above: "
                                 "without)")
    if steps_sweep:
        entry["by_steps"] = {str(k): _quality(shipped, guidance, dataset, n_samples, sampler, k, r.holdout)
                             for k in steps_sweep}
    record_in_manifest(weights_dir, MANIFEST, path.name, entry)
    return entry


def publish_adapter(
    run_checkpoint: str | Path,
    name: str,
    recipe: str,
    training_time: str,
    concept: Sequence[str],
    guidances: Sequence[float] = (1.0, 1.5, 3.0),
    n_per_class: int = 64,
    weights_dir: str | Path = WEIGHTS_DIR,
) -> dict[str, Any]:
    """Ship the LoRA adapters of a finished run (`Recipe.lora_rank`) as `<name>.safetensors`: the
    A and B matrices alone with their base's identity (`minidiff.nn.lora.save_adapter`), listed in
    the adapters' manifest with the shipped model they adapt. Measured at each guidance scale, for
    the adapted model and its base: the accuracy on the `concept` classes it was taught
    (n_per_class samples each) and on every other class (n_per_class // 8 each: what it forgot)."""
    r = get_recipe(recipe)
    run = load_checkpoint(run_checkpoint)
    path = save_adapter(run.model, Path(weights_dir) / f"{name}.safetensors")
    entry = {"sha256": sha256_of(path.read_bytes()), "base": r.base, "recipe": recipe,
             "command": f"python -m minidiff train --recipe {recipe} --out runs/{recipe} --steps {run.step}",
             "steps": run.step, "rank": r.lora_rank, "bytes": path.stat().st_size,
             "parameters": sum(m.A.weight.numel() + m.B.weight.numel() for m in adapters(run.model).values()),
             "training_time": training_time, "machine": machine_description()}
    others = [c for c in SHAPE_CLASSES if c not in concept]
    base = load_pretrained(r.base, weights_dir=weights_dir)
    adapted = load_pretrained(r.base, weights_dir=weights_dir)
    load_adapter(adapted.model, path)  # the file as shipped, on the shipped base
    scores = {model_name: {str(w): {"concept": class_accuracy(ckpt, concept, n_per_class, w, seed=1),
                                    "others": class_accuracy(ckpt, others, n_per_class // 8, w, seed=1)}
                           for w in guidances}
              for model_name, ckpt in ((name, adapted), (r.base, base))}
    best = scores[name][str(max(guidances))]
    entry |= {"description": f"LoRA rank {r.lora_rank} on {r.base} ({entry['parameters']:,} parameters, "
              f"{entry['bytes'] / 1e3:.0f} kB) taught {', '.join(concept)}: {best['concept']:.0%} of them right "
              f"at guidance {max(guidances)} ({scores[r.base][str(max(guidances))]['concept']:.0%} before)",
              "metric": {"concept": list(concept), "samples_per_class": n_per_class, "sampler": "ddim-25",
                         "adapted": scores[name], "base": scores[r.base]}}
    record_in_manifest(weights_dir, ADAPTER_MANIFEST, path.name, entry)
    return entry


def _quality(
    ckpt: Checkpoint, guidance: float, dataset: str, n_samples: int, sampler: str, steps: int,
    holdout: tuple[str, ...] = (),
) -> dict:
    """The dataset metric of n_samples samples of ckpt (seed 0; every class in turn at `guidance` if
    conditional). With `holdout` (classes the model never saw), the accuracy is also given apart
    for the classes it trained on ("accuracy_seen") and for the held-out ones ("accuracy_heldout")."""
    metric = dataset_metric(dataset)
    labels = torch.arange(n_samples) % len(metric.class_names) if is_conditional(ckpt.model) else None
    images = generate(ckpt, n_samples, sampler=sampler, steps=steps, label=labels,
                      guidance=guidance if labels is not None else None)
    scores = metric.evaluate(images, labels)
    if labels is not None and holdout:
        right = metric.predict(images) == labels
        unseen = torch.isin(labels, torch.tensor([metric.class_names.index(c) for c in holdout]))
        scores |= {"accuracy_seen": right[~unseen].double().mean().item(),
                   "accuracy_heldout": right[unseen].double().mean().item()}
    return scores


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
    images the run never saw), for the half-precision file shipped and for the run's float32 weights."""
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
    mse_float32 = reconstruction_mse(vae, heldout)
    path = Path(weights_dir) / f"{name}.safetensors"
    save_checkpoint(path, vae, sample_shape=saved.sample_shape, step=saved.step, meta=saved.meta,
                    weights_dtype=torch.float16)
    mse = reconstruction_mse(load_checkpoint(path).model, heldout)  # of the file as shipped
    psnr = 10 * math.log10(4 / mse)  # peak-to-peak 2 on the [-1, 1] scale
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
        "weights": "float16",
        "metric": {
            "heldout_mse": mse,
            "float32_heldout_mse": mse_float32,
            "psnr_db": psnr,
            "heldout": f"{len(heldout)} {r.dataset} images never trained on",
        },
    }
    record_in_manifest(weights_dir, VAE_MANIFEST, path.name, entry)
    return entry


def halve(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """Store a shipped float32 denoiser in half precision, measuring what that changes: its
    manifest's metric (same samples, sampler and guidance) before and after. The entry keeps
    the float32 figures as "float32_metric"; the file is replaced only after both are measured."""
    entry = pretrained_info(name, weights_dir)
    metric = entry["metric"]
    sampler, steps = metric["sampler"].rsplit("-", 1)
    dataset = get_recipe(entry["recipe"]).dataset
    measure = functools.partial(_quality, guidance=metric.get("guidance", 1.0), dataset=dataset,
                                n_samples=metric["samples"], sampler=sampler, steps=int(steps))
    float32 = load_pretrained(name, weights_dir=weights_dir)
    before = measure(float32)
    path = Path(weights_dir) / f"{name}.safetensors"
    staged = path.with_suffix(".float16")  # written and measured beside the original first
    save_checkpoint(staged, float32.model, float32.schedule, float32.sample_shape, float32.prediction, float32.step,
                    float32.meta, vae=float32.vae, weights_dtype=torch.float16)
    after = measure(load_checkpoint(staged))
    staged.replace(path)
    entry |= {"sha256": sha256_of(path.read_bytes()), "weights": "float16", "float32_metric": before,
              "metric": metric | after}
    record_in_manifest(weights_dir, MANIFEST, path.name, entry)
    return entry


def halve_vae(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """`halve` for a shipped VAE: its held-out reconstruction MSE (the manifest's images) before and after."""
    entry = vae_info(name, weights_dir)
    path = Path(weights_dir) / f"{name}.safetensors"
    heldout = get_recipe(entry["recipe"]).load_heldout(int(entry["metric"]["heldout"].split()[0]))
    float32 = load_checkpoint(path, data=verified_bytes(path, VAE_MANIFEST, "restore it from git"))
    staged = path.with_suffix(".float16")
    save_checkpoint(staged, float32.model, sample_shape=float32.sample_shape, step=float32.step, meta=float32.meta,
                    weights_dtype=torch.float16)
    mse, mse_float32 = (reconstruction_mse(m, heldout) for m in (load_checkpoint(staged).model, float32.model))
    staged.replace(path)
    entry |= {"sha256": sha256_of(path.read_bytes()), "weights": "float16"}
    entry["metric"] |= {"heldout_mse": mse, "float32_heldout_mse": mse_float32, "psnr_db": 10 * math.log10(4 / mse)}
    record_in_manifest(weights_dir, VAE_MANIFEST, path.name, entry)
    return entry


def fit_steps(
    name: str,
    sampler: str,
    steps: Sequence[int],
    guidance: float = 1.5,
    n: int = 32,
    reference_steps: int = 200,
    sweeps: int = 2,
    start: str = "trailing",
    weights_dir: str | Path = WEIGHTS_DIR,
    **sampler_kwargs,
) -> dict[str, Any]:
    """Fit noise levels for `sampler` at each number of `steps` to a shipped denoiser
    (`minidiff.optimise_steps.optimise_sigmas`, starting from the spacing `start`) and store them
    with the model: in its file's metadata, where `generate(..., spacing="optimised")` finds them,
    and in its manifest entry with the errors before and after. Computed once, here.

    The levels are fitted on n starting noises (seed 0), a conditional model asked for every class
    in turn at guidance `guidance`, against `reference_steps` log-SNR steps of the same sampler.
    The error is judged again on n other noises (seed 1), which the manifest records too."""
    path = Path(weights_dir) / f"{name}.safetensors"
    ckpt = load_pretrained(name, weights_dir=weights_dir)
    model = ckpt.eps_model
    labels = torch.arange(n) % ckpt.model.num_classes if is_conditional(ckpt.model) else None
    if labels is not None:
        model = classifier_free_guidance(model, labels, ckpt.model.null_condition(labels), guidance)
    noises = [torch.randn((n, *ckpt.sample_shape), generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    references = [reference_solution(model, x, ckpt.schedule, reference_steps, sampler, **sampler_kwargs)
                  for x in noises]
    fitted, errors = {}, {}
    for n_steps in steps:
        levels = optimise_sigmas(model, noises[0], ckpt.schedule, sampler, n_steps, start, reference=references[0],
                                 sweeps=sweeps, **sampler_kwargs)
        rms = {which: {spacing: sampling_error(model, noises[i], ckpt.schedule, sampler, sigmas, references[i],
                                               **sampler_kwargs) ** 0.5
                       for spacing, sigmas in ((start, noise_levels(ckpt.schedule, n_steps, start)),
                                               ("optimised", levels))}
               for i, which in enumerate(("fitted_noises", "heldout_noises"))}
        fitted[str(n_steps)], errors[str(n_steps)] = levels, rms
    stored = {sampler: {"levels": fitted, "guidance": guidance, "sampler_kwargs": sampler_kwargs}}
    meta = ckpt.meta | {"optimised_sigmas": ckpt.meta.get("optimised_sigmas", {}) | stored}
    save_checkpoint(path, ckpt.model, ckpt.schedule, ckpt.sample_shape, ckpt.prediction, ckpt.step, meta,
                    vae=ckpt.vae, weights_dtype=torch.float16)
    entry = pretrained_info(name, weights_dir)
    entry |= {"sha256": sha256_of(path.read_bytes()),
              "optimised_sigmas": entry.get("optimised_sigmas", {}) | {
                  sampler: {"steps": list(steps), "guidance": guidance, "noises": n, "reference_steps": reference_steps,
                            "start": start, "rms_error": errors}}}
    record_in_manifest(weights_dir, MANIFEST, path.name, entry)
    return entry
