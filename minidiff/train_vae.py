"""Training the VAE of latent diffusion: the same engineering as `minidiff.train`, another loss.

    repeat
        x ~ q(x)                                     a random batch of images
        z = μ(x) + σ(x)·ε,  ε ~ N(0, I)              (the reparameterisation trick)
        gradient step on (‖x - decoder(z)‖² + kl_weight·KL(q(z|x) ‖ N(0, I)))/D    (`vae_loss`)

with the same AdamW warm-up, gradient clipping, EMA weights and `TrainConfig` as the
diffusion training loop (its `prediction` and `p_uncond` do not apply here). When the run
ends, the EMA model's `scale_factor` is set from the training images (scaled latents get
unit variance) and, if held-out images are given, its reconstruction error on them is
measured.

A run in `out_dir` leaves there `last.safetensors` (every `checkpoint_every` steps: the EMA
VAE plus the full training state, so `resume=True` continues the same run to the same
weights) and `model.safetensors` (at the end: the EMA VAE with its scale factor). Both are
in the schedule-free format of `minidiff.checkpoint.save_model`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from minidiff._checks import check_finite
from minidiff.checkpoint import CheckpointError, load_model, save_model
from minidiff.nn.vae import VAE, vae_loss
from minidiff.train import (
    CHECKPOINT,
    MODEL,
    RESUMABLE_CHANGES,
    Callback,
    TrainConfig,
    TrainResult,
    ema_decay_at,
    ema_update,
    lr_at,
)


@torch.no_grad()
def reconstruction_mse(vae: VAE, images: Tensor, batch_size: int = 256) -> float:
    """Mean squared error, per image value, of decoder(μ(x)) against images x (N, C, H, W) in
    [-1, 1]: the deterministic reconstruction through the posterior mean."""
    device = next(vae.parameters()).device
    total = 0.0
    for x in images.split(batch_size):
        x = x.to(device)
        total += float(((vae.decode(vae.encode(x).mean) - x) ** 2).double().sum())
    return total / images.numel()


def train_vae(
    vae: VAE,
    data: Tensor,
    config: TrainConfig | None = None,
    *,
    heldout: Tensor | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
) -> TrainResult:
    """Train `vae` (in place) on images `data`; return its EMA copy and the loss history.

    Args:
        vae:      the VAE to train; it sets the device
        data:     the training images in memory, (N, C, H, W) in [-1, 1]
        config:   steps, batch size, learning rate, EMA, seed, checkpoints (`TrainConfig()` if None)
        heldout:  images not trained on: at the end, the reconstruction MSE on them is
                  measured and stored in model.safetensors' meta ("heldout_mse")
        out_dir:  folder for checkpoints; None keeps everything in memory
        resume:   continue the run saved in out_dir (up to config.steps) instead of starting
        callback: called after every step as callback(step, loss, ema_vae)
    Returns `TrainResult(ema, losses)`: the EMA VAE (eval mode, its scale factor set from
    `data`) and (step, loss) for every step. Raises FloatingPointError if the loss or the
    gradient stops being finite.
    """
    config = config or TrainConfig()
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a minidiff.nn.vae.VAE, got {type(vae).__name__}")
    check_finite("data", data)
    c = vae.config
    if data.ndim != 4 or data.shape[1] != c.in_channels or len(data) == 0:
        raise ValueError(
            f"data must be images of shape (N, {c.in_channels}, H, W) with N >= 1, got {tuple(data.shape)}"
        )
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir, the folder of the run to continue")
    out_dir = Path(out_dir) if out_dir is not None else None
    p = next(vae.parameters())
    data = data.to(p)  # (N, C, H, W) on the VAE's device
    ema = copy.deepcopy(vae).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr)
    g = torch.Generator(p.device).manual_seed(config.seed)  # draws the batches and z's noise
    history: list[tuple[int, float, float]] = []  # (step, loss, KL)
    data_id = {
        "n": len(data),
        "sha256": hashlib.sha256(data.cpu().contiguous().view(torch.uint8).numpy()).hexdigest()[:16],
    }

    def meta() -> dict:
        return {
            "train": asdict(config),
            "data": data_id,
            "losses": [h[:2] for h in history],
            "kl": [h[2] for h in history],
        }

    if resume:
        _restore(out_dir / CHECKPOINT, vae, ema, optimizer, g, history, config, data_id)
    elif out_dir is not None and (out_dir / CHECKPOINT).exists():
        raise FileExistsError(
            f"{out_dir} already holds a run (its {CHECKPOINT}); resume it (resume=True, or --resume on the "
            "command line) or choose another folder"
        )
    vae.train()
    bar = tqdm(range(len(history) + 1, config.steps + 1), initial=len(history), total=config.steps, desc="train vae")
    for step in bar:
        i = torch.randint(len(data), (config.batch_size,), generator=g, device=g.device)  # (B,)
        terms = vae_loss(vae, data[i], generator=g)
        if not math.isfinite(terms.loss.item()):
            raise FloatingPointError(f"loss became {terms.loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(vae.parameters(), config.grad_clip)
        if not math.isfinite(grad_norm.item()):
            raise FloatingPointError(f"the gradient's norm became {grad_norm.item()} at step {step}")
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        optimizer.step()
        ema_update(ema, vae, ema_decay_at(step, config.ema_decay))
        history.append((step, terms.loss.item(), terms.kl.item()))
        bar.set_postfix(mse=f"{terms.reconstruction.item():.4f}", kl=f"{terms.kl.item():.0f}", refresh=False)
        if callback is not None:
            callback(step, terms.loss.item(), ema)
        if out_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            extra = {f"raw.{k}": v for k, v in vae.state_dict().items()}
            for j, state in optimizer.state_dict()["state"].items():
                extra |= {f"optimizer.{j}.{k}": v for k, v in state.items()}  # AdamW's step, exp_avg, exp_avg_sq
            extra |= {"rng.batches": g.get_state()}
            save_model(out_dir / CHECKPOINT, ema, step, meta(), extra)
    scale = ema.set_scale_factor(data)  # scaled latents have unit variance on the training images
    info = {"scale_factor": scale}
    if heldout is not None:
        info |= {"heldout_mse": reconstruction_mse(ema, heldout), "heldout_images": len(heldout)}
        tqdm.write(
            f"reconstruction MSE on {len(heldout)} held-out images: {info['heldout_mse']:.5f}; scale factor {scale:.4f}"
        )
    if out_dir is not None:
        save_model(out_dir / MODEL, ema, len(history), meta() | info)
    return TrainResult(ema, [h[:2] for h in history])


def _restore(
    path: Path,
    vae: VAE,
    ema: VAE,
    optimizer: torch.optim.Optimizer,
    g: torch.Generator,
    history: list[tuple[int, float, float]],
    config: TrainConfig,
    data_id: dict,
) -> None:
    """Load the run saved at `path` into the fresh run's objects, after checking it is the same run."""
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: no checkpoint at {path}")
    saved = load_model(path, model=ema)  # checks the model's class and config
    if "rng.batches" not in saved.extra:
        raise CheckpointError(f"{path} holds a model but no training state, so a run cannot resume from it")
    differences = [
        f"{k}: checkpoint {saved.meta['train'].get(k)!r}, now {v!r}"
        for k, v in asdict(config).items()
        if k not in RESUMABLE_CHANGES and saved.meta["train"].get(k) != v
    ]
    if saved.meta["data"] != data_id:
        differences.append(f"data: checkpoint {saved.meta['data']}, now {data_id}")
    if differences:
        raise CheckpointError(f"cannot resume from {path}, it was another run: " + "; ".join(differences))
    if saved.step > config.steps:
        raise ValueError(f"steps={config.steps}, but the run in {path} is already at step {saved.step}")
    vae.load_state_dict({k.removeprefix("raw."): v for k, v in saved.extra.items() if k.startswith("raw.")})
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in saved.extra.items():
        if key.startswith("optimizer."):
            _, j, name = key.split(".")
            state.setdefault(int(j), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    g.set_state(saved.extra["rng.batches"])
    history[:] = [(s, loss, kl) for (s, loss), kl in zip(saved.meta["losses"], saved.meta["kl"], strict=True)]
