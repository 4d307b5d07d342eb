"""Training a denoiser: Ho et al. 2020's Algorithm 1, plus the engineering that makes it work.

    repeat
        x0 ~ q(x0)                                  a random batch of the data
        t ~ Uniform({0, …, T-1}),  ε ~ N(0, I)
        gradient step on ‖ε - ε_θ(√ᾱ_t·x0 + √(1-ᾱ_t)·ε, t)‖²      (`diffusion_loss`)
    until converged

`train` adds, around that loop:

    AdamW with a linear warm-up      the learning rate rises from 0 over the first steps
    gradient clipping                one unlucky batch cannot throw the weights far
    EMA weights                      θ_ema ← decay·θ_ema + (1-decay)·θ; samples use θ_ema
    checkpoints                      written atomically; `resume=True` continues the same run,
                                     with the same batches and noise, to the same weights
    labels (optional)                for conditional models, the condition y of each sample
                                     (class labels, or a caption's token ids): each is replaced
                                     by the null condition ∅ with probability p_uncond, so that one
                                     network learns both models classifier-free guidance needs

A run in `out_dir` leaves there: `last.safetensors` (every `checkpoint_every` steps: the EMA
model plus the full training state), `model.safetensors` (at the end: the EMA model alone,
what `python -m minidiff sample` and shipped weights use) and, if asked, `samples_<step>.png`.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from minidiff._checks import check_choice, check_finite
from minidiff.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidiff.forward import PREDICTIONS, as_eps_model, diffusion_loss
from minidiff.samplers import sample
from minidiff.schedules import NoiseSchedule

CHECKPOINT = "last.safetensors"  # the full state of a run, for resume
MODEL = "model.safetensors"  # the EMA model alone, written when the run ends
SAMPLE_STEPS = 50  # DDIM steps for the sample grids drawn during training

Callback = Callable[[int, float, nn.Module], None]  # callback(step, loss, ema_model)


@dataclass
class TrainConfig:
    """How to train. The defaults suit a ~1M-parameter U-Net on small images."""

    steps: int = 2000  # optimizer steps in the whole run
    batch_size: int = 64
    lr: float = 1e-3  # AdamW's learning rate after the warm-up
    warmup: int = 100  # steps over which the learning rate rises linearly from 0 to lr
    grad_clip: float = 1.0  # the gradient's norm is clipped to this
    ema_decay: float = 0.999  # decay of the EMA weights (with a warm-up, see `ema_decay_at`)
    prediction: str = "eps"  # what the network learns to predict: "eps", "x0" or "v"
    p_uncond: float = 0.0  # with labels: probability of training a sample with the null label
    seed: int = 0  # seeds the batches, t, ε and torch's global RNG (dropout)
    checkpoint_every: int = 500  # with out_dir: write last.safetensors every this many steps and at the end
    sample_every: int = 0  # with out_dir: save a grid of EMA samples every this many steps (0: never)
    n_samples: int = 64  # samples in that grid

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "n_samples", "warmup", "sample_every"):
            value, least = getattr(self, name), 0 if name in ("warmup", "sample_every") else 1
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond!r}")
        check_choice("prediction", self.prediction, PREDICTIONS)


# Settings a resumed run may change: they do not change the weights it ends with.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "n_samples")


class TrainResult(NamedTuple):
    """What `train` returns. The model passed to `train` holds the raw (non-EMA) weights."""

    ema: nn.Module  # the EMA model, in eval mode: sample with this one
    losses: list[tuple[int, float]]  # (step, loss) for every step of the run, from step 1


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of step `step` (1, 2, …): lr·step/warmup during the warm-up, then lr."""
    return config.lr * min(1.0, step / config.warmup) if config.warmup else config.lr


def ema_decay_at(step: int, decay: float) -> float:
    """min(decay, (1+step)/(10+step)) at step 1, 2, …: the EMA follows the weights closely at first, when they
    change fast and the early average would be mostly the random initialisation."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1-decay)·θ for every parameter; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1 - decay)  # p_ema + (1-decay)·(p - p_ema)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


@dataclass
class _Run:
    """A training run: what it trains on and everything that changes as it goes. Saving the
    second part (weights, EMA, optimizer, random generator, losses) makes it resumable."""

    schedule: NoiseSchedule
    config: TrainConfig
    sample_shape: tuple[int, ...]  # one sample: (C, H, W) or (D,)
    data_id: dict  # size and hash of the data, so a resume can check it trains on the same
    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # draws the batches, the labels dropped, t and ε
    losses: list[tuple[int, float]]

    @property
    def step(self) -> int:
        return len(self.losses)  # steps done


def train(
    model: nn.Module,
    data: Tensor,
    schedule: NoiseSchedule,
    config: TrainConfig | None = None,
    *,
    labels: Tensor | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
) -> TrainResult:
    """Train `model` (in place) to denoise `data`; return its EMA copy and the loss history.

    Args:
        model:    a denoiser model(x_t, t), e.g. `UNet` or `MLPDenoiser`; it sets the device
        data:     the whole training set in memory, (N, C, H, W) images or (N, D) points
        schedule: the noise schedule to train with
        config:   steps, batch size, learning rate, EMA, … (`TrainConfig()` if None)
        labels:   the condition y of each sample for a conditional model: class labels (N,)
                  for a `UNet` with num_classes, token ids (N, L) for a `TextUNet`
        out_dir:  folder for checkpoints and sample grids; None keeps everything in memory
        resume:   continue the run saved in out_dir (up to config.steps) instead of starting
        callback: called after every step as callback(step, loss, ema_model), e.g. to plot
    Raises FloatingPointError if the loss or the gradient stops being finite; the last
    checkpoint written stays as it was.
    """
    config = config or TrainConfig()
    _check_inputs(model, data, labels)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir, the folder of the run to continue")
    out_dir = Path(out_dir) if out_dir is not None else None
    p = next(model.parameters())
    data = data.to(p)  # (N, …) on the model's device, in its dtype
    labels = labels.to(p.device) if labels is not None else None
    run = _Run(
        schedule,
        config,
        tuple(data.shape[1:]),
        _data_id(data, labels),
        model,
        ema=copy.deepcopy(model).requires_grad_(False).eval(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=config.lr),
        generator=torch.Generator(p.device).manual_seed(config.seed),
        losses=[],
    )
    saved = _start(run, out_dir, resume)
    model.train()
    bar = tqdm(range(run.step + 1, config.steps + 1), initial=run.step, total=config.steps, desc="train")
    for step in bar:  # step = 1, 2, …: the number of the optimizer update
        try:
            loss = _train_step(run, data, labels, step)
        except FloatingPointError as error:
            raise FloatingPointError(f"{error}; {_last_good(out_dir, saved)}") from None
        run.losses.append((step, loss))
        recent = [l for _, l in run.losses[-100:]]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)  # running mean
        if callback is not None:
            callback(step, loss, run.ema)
        if out_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            _save(run, out_dir / CHECKPOINT)
            saved = step
        if out_dir is not None and config.sample_every and step % config.sample_every == 0:
            save_samples(_draw_samples(run), out_dir / f"samples_{step:06d}.png")
    if out_dir is not None:
        save_checkpoint(out_dir / MODEL, run.ema, schedule, run.sample_shape, config.prediction, run.step, _meta(run))
    return TrainResult(run.ema, run.losses)


def _train_step(run: _Run, data: Tensor, labels: Tensor | None, step: int) -> float:
    """One step of Algorithm 1 with AdamW, warm-up, clipping and EMA. Returns the loss."""
    config, g = run.config, run.generator
    i = torch.randint(len(data), (config.batch_size,), generator=g, device=g.device)  # (B,)
    x0 = data[i]  # x0 ~ q(x0), (B, …)
    model = run.model if labels is None else _with_labels(run.model, labels[i], config.p_uncond, g)
    loss = diffusion_loss(model, x0, schedule=run.schedule, prediction=config.prediction, generator=g)
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"loss became {loss.item()} at step {step}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    if not math.isfinite(grad_norm.item()):
        raise FloatingPointError(f"the gradient's norm became {grad_norm.item()} at step {step}")
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(step, config)
    run.optimizer.step()
    ema_update(run.ema, run.model, ema_decay_at(step, config.ema_decay))
    return loss.item()


def _with_labels(model: nn.Module, y: Tensor, p_uncond: float, g: torch.Generator) -> Callable:
    """The denoiser (x_t, t) ↦ model(x_t, t, y), each sample's condition replaced by the null
    condition ∅ with probability p_uncond (Ho & Salimans 2022, Algorithm 1)."""
    if p_uncond > 0:
        drop = torch.rand(len(y), generator=g, device=y.device) < p_uncond  # (B,)
        drop = drop.reshape(-1, *([1] * (y.ndim - 1)))  # (B, 1, …) against y's (B, …)
        y = torch.where(drop, model.null_condition(y), y)
    return lambda x_t, t: model(x_t, t, y)


def _start(run: _Run, out_dir: Path | None, resume: bool) -> int | None:
    """Restore the run from out_dir, or start afresh; returns the step of the last checkpoint."""
    if resume:
        _restore(run, out_dir / CHECKPOINT)
        return run.step
    if out_dir is not None and (out_dir / CHECKPOINT).exists():
        raise FileExistsError(
            f"{out_dir} already holds a run (its {CHECKPOINT}); resume it (resume=True, or --resume on the "
            "command line) or choose another folder"
        )
    torch.manual_seed(run.config.seed)  # torch's global RNG drives dropout
    return None


def _last_good(out_dir: Path | None, saved: int | None) -> str:
    if out_dir is None:
        return "no checkpoints are written without out_dir"
    if saved is None:
        return "no checkpoint had been written yet"
    return f"the last good checkpoint is {out_dir / CHECKPOINT} (step {saved})"


def _meta(run: _Run) -> dict:
    return {"train": asdict(run.config), "data": run.data_id, "losses": run.losses}


def _save(run: _Run, path: Path) -> None:
    """Write the EMA model and everything a resume needs to `path`."""
    extra = {f"raw.{k}": v for k, v in run.model.state_dict().items()}
    for i, state in run.optimizer.state_dict()["state"].items():
        extra |= {f"optimizer.{i}.{k}": v for k, v in state.items()}  # AdamW's step, exp_avg, exp_avg_sq
    extra |= {"rng.batches": run.generator.get_state(), "rng.torch": torch.get_rng_state()}
    c = run.config
    save_checkpoint(path, run.ema, run.schedule, run.sample_shape, c.prediction, run.step, _meta(run), extra)


def _restore(run: _Run, path: Path) -> None:
    """Load a run saved by `_save`, after checking that it is the same run."""
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: no checkpoint at {path}")
    ckpt = load_checkpoint(path, model=run.ema)  # checks the model's class and config
    if "rng.batches" not in ckpt.extra:
        raise CheckpointError(f"{path} holds a model but no training state, so a run cannot resume from it")
    _check_same_run(path, ckpt.meta, ckpt.schedule, run)
    if ckpt.step > run.config.steps:
        raise ValueError(f"steps={run.config.steps}, but the run in {path} is already at step {ckpt.step}")
    run.model.load_state_dict({k.removeprefix("raw."): v for k, v in ckpt.extra.items() if k.startswith("raw.")})
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in ckpt.extra.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".")
            state.setdefault(int(i), {})[name] = value
    run.optimizer.load_state_dict({"state": state, "param_groups": run.optimizer.state_dict()["param_groups"]})
    run.generator.set_state(ckpt.extra["rng.batches"])
    torch.set_rng_state(ckpt.extra["rng.torch"])
    run.losses[:] = [(step, loss) for step, loss in ckpt.meta["losses"]]


def _check_same_run(path: Path, meta: dict, schedule: NoiseSchedule, run: _Run) -> None:
    """Raise CheckpointError naming every setting in which the saved run differs from `run`."""
    saved, ours = meta["train"], asdict(run.config)
    differences = [
        f"{k}: checkpoint {saved.get(k)!r}, now {v!r}"
        for k, v in ours.items()
        if k not in RESUMABLE_CHANGES and saved.get(k) != v
    ]
    if not torch.equal(schedule.betas, run.schedule.betas):
        differences.append(f"schedule: checkpoint {schedule!r}, now {run.schedule!r}")
    if meta["data"] != run.data_id:
        differences.append(f"data: checkpoint {meta['data']}, now {run.data_id}")
    if differences:
        raise CheckpointError(f"cannot resume from {path}, it was another run: " + "; ".join(differences))


def _data_id(data: Tensor, labels: Tensor | None) -> dict:
    """The number of samples and a short hash of the data (and labels)."""
    h = hashlib.sha256()
    for x in (data, labels) if labels is not None else (data,):
        h.update(x.detach().cpu().contiguous().view(torch.uint8).numpy())
    return {"n": len(data), "sha256": h.hexdigest()[:16]}


def _check_inputs(model: nn.Module, data: Tensor, labels: Tensor | None) -> None:
    check_finite("data", data)
    if data.ndim < 2 or len(data) == 0:
        raise ValueError(f"data must have shape (N, …) with N >= 1 samples, got {tuple(data.shape)}")
    if labels is None:
        return
    if not hasattr(model, "check_condition"):
        raise ValueError(f"labels given, but a {type(model).__name__} takes no condition")
    model.check_condition(labels, len(data))  # one condition per sample, each valid for the model


# ----- sample grids ----------------------------------------------------------------------------
def _draw_samples(run: _Run) -> Tensor:
    """Samples from the EMA model (DDIM), from the same noise every time, so grids compare."""
    p = next(run.ema.parameters())
    g = torch.Generator(p.device).manual_seed(run.config.seed)
    x_T = torch.randn((run.config.n_samples, *run.sample_shape), generator=g, device=p.device, dtype=p.dtype)
    model = as_eps_model(run.ema, run.schedule, run.config.prediction)
    return sample(model, x_T, run.schedule, "ddim", steps=min(SAMPLE_STEPS, run.schedule.T))


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1) -> Tensor:
    """Tile images (B, C, H, W) in [-1, 1] into one (H', W', C) image in [0, 1], nrow per row
    (default: a square), on a white background."""
    B, C, H, W = images.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    rows = math.ceil(B / nrow)
    grid = images.new_ones(C, pad + rows * (H + pad), pad + nrow * (W + pad))  # (C, H', W')
    for i, image in enumerate((images.clamp(-1, 1) + 1) / 2):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (H + pad) : (r + 1) * (H + pad), pad + c * (W + pad) : (c + 1) * (W + pad)] = image
    return grid.permute(1, 2, 0)  # (H', W', C)


def save_samples(x: Tensor, path: str | Path) -> Path:
    """Save samples as a PNG: images (B, 1 or 3, H, W) in [-1, 1] as a grid (enlarged to about
    512 pixels wide), 2-D points (B, 2) as a scatter plot. Returns the path written."""
    import matplotlib.image
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().float().cpu()
    if x.ndim == 2 and x.shape[1] == 2:
        fig = Figure(figsize=(4, 4))
        ax = fig.subplots()
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6)
        ax.set_aspect("equal")
        fig.savefig(path, dpi=100)
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        grid = image_grid(x)  # (H', W', C)
        scale = max(1, 512 // grid.shape[1])
        grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # nearest-neighbour enlargement
        matplotlib.image.imsave(path, grid.squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        raise ValueError(f"x must be images (B, 1 or 3, H, W) or 2-D points (B, 2), got shape {tuple(x.shape)}")
    return path
