"""The training engine: one loop for every kind of training, the loss left to an *objective*.

    repeat
        batch ~ data                                  a random batch: (x,) or (x, y)
        loss = objective(model, batch, generator)     e.g. Ho et al. 2020's ‖ε - ε_θ(x_t, t)‖²
        gradient step on loss
    until config.steps

What an objective is: `minidiff.objective.Objective`. The diffusion objective is
`minidiff.forward.DiffusionObjective`, the VAE's `minidiff.nn.vae.VAEObjective`, the
classifier's `minidiff.classifier.ClassifierObjective`. Around the loop, written once here:

    AdamW with a warm-up             the learning rate rises from 0 over the first steps (or
                                     follows a one-cycle schedule, `TrainConfig.lr_schedule`)
    gradient clipping                one unlucky batch cannot throw the weights far
    EMA weights                      θ_ema ← decay·θ_ema + (1-decay)·θ; samples use θ_ema
    checkpoints                      written atomically; `resume=True` continues the same run,
                                     with the same batches and noise, to the same weights bit for bit
    the same-run check               a resume refuses another config, objective or data
    a non-finite stop                a loss, gradient or weight that stops being finite ends the
                                     run with an error naming the last good checkpoint
    callbacks                        called after every step with (step, loss, ema): live plots,
                                     sample grids (`minidiff.generate.SampleGrids`)
    several processes                under `torchrun`, each process takes its shards of every batch and
                                     `DistributedDataParallel` averages the gradients (see `shard_batch`)

A run in `out_dir` leaves there: `last.safetensors` (every `checkpoint_every` steps: the EMA
model plus the full training state) and `model.safetensors` (at the end: the EMA model alone,
what `python -m minidiff sample` and shipped weights use).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from minidiff._checks import check_choice, check_fields
from minidiff.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidiff.course import progress
from minidiff.objective import Objective

CHECKPOINT = "last.safetensors"  # the full state of a run, for resume
MODEL = "model.safetensors"  # the EMA model alone, written when the run ends
LR_SCHEDULES = ("constant", "cosine", "one_cycle")

Callback = Callable[[int, float, nn.Module], None]  # callback(step, loss, ema_model)


@dataclass
class TrainConfig:
    """How to train. The defaults suit a ~1M-parameter U-Net on small images."""

    steps: int = 2000  # optimizer steps in the whole run
    batch_size: int = 64
    lr: float = 1e-3  # AdamW's learning rate after the warm-up (the peak, for one_cycle)
    warmup: int = 100  # steps over which the learning rate rises linearly from 0 to lr
    lr_schedule: str = "constant"  # "constant" or "cosine" after the warm-up, or "one_cycle" (see `lr_at`)
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    grad_clip: float | None = 1.0  # the gradient's norm is clipped to this (None: not clipped)
    ema_decay: float = 0.999  # decay of the EMA weights (with a warm-up, see `ema_decay_at`); 0: no averaging
    seed: int = 0  # seeds the batches, the objective's noise and torch's global RNG (dropout)
    checkpoint_every: int = 500  # with out_dir: write last.safetensors every this many steps and at the end
    shards: int = 1  # pieces each batch is split into, each with its own noise (`shard_batch`); raised to the
    # number of processes under torchrun; on one process, more than 1 accumulates gradients over the pieces

    def __post_init__(self) -> None:
        check_fields(self)  # the types; below, the ranges
        for name in ("steps", "batch_size", "checkpoint_every", "warmup", "seed", "shards"):
            value, least = getattr(self, name), 0 if name in ("warmup", "seed") else 1
            if value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for name in ("lr", "weight_decay", "grad_clip", "ema_decay"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):  # (only grad_clip may be None)
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.lr > 0 or (self.grad_clip is not None and not self.grad_clip > 0):
            raise ValueError(f"lr and grad_clip must be positive, got lr={self.lr!r}, grad_clip={self.grad_clip!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.batch_size % self.shards:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of shards ({self.shards})")


# Settings a resumed run may change: they do not change the weights it ends with.
RESUMABLE_CHANGES = ("steps", "checkpoint_every")


class TrainResult(NamedTuple):
    """What `train` returns. The model passed to `train` holds the raw (non-EMA) weights."""

    ema: nn.Module  # the EMA model, in eval mode: sample with this one
    losses: list[tuple[int, float]]  # (step, loss) for every step of the run, from step 1


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of step `step` (1, 2, …).

    "constant": lr·step/warmup during the warm-up, then lr.
    "cosine":   the same warm-up, then a cosine decay to 0 at the last step (Loshchilov & Hutter
                2017, without restarts): lr·(1 + cos(π·(step - warmup)/(steps - warmup)))/2.
    "one_cycle": the one-cycle policy (Smith & Topin 2019) as `torch.optim.lr_scheduler.OneCycleLR`
    computes it with its defaults: over the first 30% of the steps, a cosine rise from lr/25
    to lr; then a cosine fall to lr/25/10⁴ (warmup is not used)."""
    if config.lr_schedule == "one_cycle":
        return _one_cycle(step, config.steps, config.lr / 25, config.lr, config.lr / 25 / 1e4)
    if step < config.warmup:
        return config.lr * step / config.warmup
    if config.lr_schedule == "cosine" and config.steps > config.warmup:
        return _cosine(config.lr, 0.0, (step - config.warmup) / (config.steps - config.warmup))
    return config.lr


def beta1_at(step: int, config: TrainConfig) -> float:
    """AdamW's β1 at step `step`: 0.9, or for "one_cycle" the momentum cycle that goes
    against the learning rate's (0.95 → 0.85 → 0.95), as OneCycleLR does."""
    return _one_cycle(step, config.steps, 0.95, 0.85, 0.95) if config.lr_schedule == "one_cycle" else 0.9


def _one_cycle(step: int, total: int, start: float, peak: float, end: float) -> float:
    """Cosine from start to peak over steps 1 … 0.3·total, then from peak to end (OneCycleLR's phases)."""
    s, rise = step - 1, 0.3 * total - 1  # OneCycleLR counts from 0; its first phase ends at step 0.3·total - 1
    if s <= rise:
        return _cosine(start, peak, s / rise)
    return _cosine(peak, end, (s - rise) / (total - 1 - rise))


def _cosine(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)  # start at pct 0, end at pct 1


def ema_decay_at(step: int, decay: float) -> float:
    """min(decay, (1+step)/(10+step)) at step 1, 2, …: the EMA follows the weights closely at first, when they
    change fast and the early average would be mostly the random initialisation."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1-decay)·θ for every trained parameter; buffers are copied. Frozen
    parameters (a fine-tune's base) are left as they are, bit for bit (the update would turn a -0.0
    into +0.0, and the base's weights would no longer hash to the base's)."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        if p.requires_grad:
            p_ema.lerp_(p, 1 - decay)  # p_ema + (1-decay)·(p - p_ema)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


@dataclass
class _Run:
    """A training run: what it trains on and everything that changes as it goes. Saving the
    second part (weights, EMA, optimizer, random generator, losses) makes it resumable."""

    objective: Objective
    config: TrainConfig
    data: tuple[Tensor, ...]  # (x,) or (x, y), on the model's device
    data_id: dict  # size and hash of every data tensor, so a resume can check it trains on the same
    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # draws the batches and the objective's randomness (the same in every process)
    losses: list[tuple[int, float]]
    terms: dict[str, list[float]]  # the objective's logged terms, one value per step
    net: nn.Module | None = None  # what the objective calls: the model, or under torchrun its DDP wrapper

    @property
    def step(self) -> int:
        return len(self.losses)  # steps done

    def meta(self) -> dict:
        return {
            "train": asdict(self.config),
            "objective": self.objective.describe(),
            "data": self.data_id,
            "losses": self.losses,
            "terms": self.terms,
        }

    def save(self, path: Path, meta: dict | None = None, state: bool = True) -> None:
        """Write the EMA model, and with `state` everything a resume needs, to `path`."""
        extra = {}
        if state:
            extra = {f"raw.{k}": v for k, v in self.model.state_dict().items()}
            for i, s in self.optimizer.state_dict()["state"].items():
                extra |= {f"optimizer.{i}.{k}": v for k, v in s.items()}  # AdamW's step, exp_avg, exp_avg_sq
            extra |= {"rng.batches": self.generator.get_state(), "rng.torch": torch.get_rng_state()}
            if self.generator.device.type == "cuda":  # dropout on a GPU draws from the GPU's own generator
                extra["rng.cuda"] = torch.cuda.get_rng_state(self.generator.device)
            extra |= {f"objective.{k}": v for k, v in self.objective.state().items()}
        shape = tuple(self.data[0].shape[1:])
        fields = self.objective.checkpoint_fields()
        save_checkpoint(path, self.ema, sample_shape=shape, step=self.step, meta=meta or self.meta(), extra=extra,
                        **fields)


def train(
    model: nn.Module,
    data: Tensor | Sequence[Tensor],
    objective: Objective,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train `model` (in place) on `data` with `objective`; return its EMA copy and the loss history.

    Args:
        model:     the network to train, e.g. a `UNet`, a `VAE`; it sets the device
        data:      the whole training set in memory: a tensor x (N, …), or a sequence (x, y) of
                   tensors with N rows each (y: the condition of each sample, e.g. class labels)
        objective: turns (model, batch, generator) into the loss, e.g. `DiffusionObjective(schedule)`
        config:    steps, batch size, learning rate, EMA, … (`TrainConfig()` if None)
        out_dir:   folder for checkpoints; None keeps everything in memory
        resume:    continue the run saved in out_dir (up to config.steps) instead of starting
        callbacks: each called after every step as callback(step, loss, ema_model)
    Raises FloatingPointError if the loss, the gradient or the weights stop being finite; the
    last checkpoint written stays as it was, and the error names it.
    """
    config = _shards_for_processes(config or TrainConfig())
    data = _as_data(data)
    objective.check(model, data)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir, the folder of the run to continue")
    out_dir = Path(out_dir) if out_dir is not None else None
    if not any(q.requires_grad for q in model.parameters()):
        raise ValueError(
            "model has no parameter that requires a gradient (an EMA copy, such as a TrainResult's ema, is "
            "frozen): to train it further, pass a copy with .requires_grad_(True)"
        )
    p = next(model.parameters())
    data = tuple(x.to(p) if x.is_floating_point() else x.to(p.device) for x in data)  # on the model's device
    run = _Run(
        objective,
        config,
        data,
        _data_id(data),
        model,
        ema=copy.deepcopy(model).requires_grad_(False).eval(),
        optimizer=torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay),
        generator=torch.Generator(p.device).manual_seed(config.seed),
        losses=[],
        terms={},
    )
    saved = _start(run, out_dir, resume)
    run.net = _data_parallel(model)
    model.train()
    lead = process_rank() == 0  # under torchrun only process 0 shows progress, calls back and writes checkpoints
    bar = progress(range(run.step + 1, config.steps + 1), initial=run.step, total=config.steps, desc="train",
                   disable=not lead)
    for step in bar:  # step = 1, 2, …: the number of the optimizer update
        try:
            loss, terms = _train_step(run, step)
        except FloatingPointError as error:
            raise FloatingPointError(f"{error}; {_last_good(out_dir, saved)}") from None
        run.losses.append((step, loss))
        for name, value in terms.items():
            run.terms.setdefault(name, []).append(value)
        recent = [l for _, l in run.losses[-100:]]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)  # running mean
        for callback in callbacks if lead else ():
            callback(step, loss, run.ema)
        if out_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            if lead:
                run.save(out_dir / CHECKPOINT)
            saved = step
    info = objective.finish(run.ema, data)
    if out_dir is not None and lead:
        run.save(out_dir / MODEL, run.meta() | info, state=False)
    return TrainResult(run.ema, run.losses)


def _as_data(data: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """data as a tuple (x,) or (x, y, …) of tensors with the same number N >= 1 of rows; x finite."""
    data = (data,) if torch.is_tensor(data) else tuple(data)
    if not data or not all(torch.is_tensor(d) for d in data):
        raise TypeError("data must be a tensor x (N, …) or a sequence (x, y) of tensors")
    x = data[0]
    if not x.is_floating_point() or x.ndim < 2 or len(x) == 0:
        got = f"{x.dtype} {tuple(x.shape)}"
        raise ValueError(f"data must be floating-point of shape (N, …) with N >= 1 samples, got {got}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("data contains NaN or infinite values")
    if any(len(d) != len(x) for d in data[1:]):
        raise ValueError(f"every data tensor must have one row per sample ({len(x)}), got {[len(d) for d in data]}")
    return data


def _train_step(run: _Run, step: int) -> tuple[float, dict[str, float]]:
    """One step: a random batch, the objective's loss, AdamW with warm-up and clipping, EMA.
    Returns the loss and the objective's terms; raises FloatingPointError before the update if anything is not finite.

    The loss of a batch split in K shards is the mean of the shards' losses, L = (1/K)·Σ_k L_k; a
    process holding K/P of them (P processes) backpropagates (P/K)·L_k for each, and DDP's average
    over the P processes makes the gradient ∇L, as one process accumulating all K would."""
    config = run.config
    mine = shard_batch(len(run.data[0]), config, run.generator)[process_rank()::_world_size()]  # this process's shards
    run.optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}  # the loss and the logged terms, summed over this process's shards
    for k, (i, g) in enumerate(mine):
        if config.shards > 1:
            torch.manual_seed(g.initial_seed())  # dropout (torch's global RNG) seeded by the shard, not the process
        last = k == len(mine) - 1
        with contextlib.nullcontext() if last or run.net is run.model else run.net.no_sync():  # sync once
            loss = run.objective(run.net, tuple(x[i] for x in run.data), g)
            (loss * (_world_size() / config.shards)).backward()
        for name, value in ({"loss": loss.item()} | run.objective.terms()).items():
            totals[name] = totals.get(name, 0.0) + value
    terms = {name: total / config.shards for name, total in _sum_over_processes(totals, loss.device).items()}
    value = terms.pop("loss")
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {value} at step {step}")
    params = [p for p in run.model.parameters() if p.requires_grad]
    if config.grad_clip is None:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    else:
        grad_norm = nn.utils.clip_grad_norm_(params, config.grad_clip)
    if not math.isfinite(grad_norm.item()):
        raise FloatingPointError(f"the gradient's norm became {grad_norm.item()} at step {step}")
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(step, config)
        group["betas"] = (beta1_at(step, config), group["betas"][1])
    run.optimizer.step()
    if not math.isfinite(torch.nn.utils.get_total_norm(params, math.inf).item()):  # the largest |weight|: one check
        raise FloatingPointError(f"the weights became non-finite at step {step} (learning rate {lr_at(step, config)})")
    ema_update(run.ema, run.model, ema_decay_at(step, config.ema_decay))
    run.objective.after_step(run.model)
    return value, terms


# ----- shards of a batch, and several processes (torchrun) -----------------------------------------------
def shard_batch(n: int, config: TrainConfig, g: torch.Generator) -> list[tuple[Tensor, torch.Generator]]:
    """The rows of one batch of a data set of n samples, in config.shards shards, each with the
    generator of its randomness (noise, timesteps, dropped conditions), all drawn from the run's g:

        i ~ U{0, …, n-1}^B              the batch's rows (B = config.batch_size)
        s ~ U[0, 2^62)                  when K = config.shards > 1: shard k's seed is s + k

    Shard k is rows i[k·B/K : (k+1)·B/K] with its own generator seeded s + k (and dropout seeded so
    too). So a run is the same whichever process computes which shard: one process accumulating
    the K shards' gradients, or K processes under torchrun with one each. With K = 1 the shard is the
    batch and g draws its randomness directly."""
    i = torch.randint(n, (config.batch_size,), generator=g, device=g.device)  # (B,)
    if config.shards == 1:
        return [(i, g)]
    s = int(torch.randint(2**62, (), generator=g, device=g.device))  # one draw, whatever K is
    return [(rows, torch.Generator(g.device).manual_seed(s + k)) for k, rows in enumerate(i.chunk(config.shards))]


def init_distributed() -> int:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE, RANK,
    MASTER_ADDR, …), if there is one: NCCL between GPUs, each process on GPU number LOCAL_RANK;
    gloo between CPU processes. Returns the number of processes (1 without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" now means this process's GPU
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world


def process_rank() -> int:
    """This process's number under torchrun (0 writes the checkpoints and prints); 0 without it."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _shards_for_processes(config: TrainConfig) -> TrainConfig:
    """config, its shards raised from 1 to the number of processes; an error if they cannot be shared out."""
    world = _world_size()
    if config.shards == 1 and world > 1:
        config = replace(config, shards=world)
    if config.shards % world:
        raise ValueError(f"shards ({config.shards}) must be a multiple of the number of processes ({world}): "
                         "each process takes the same number of shards")
    return config


class _DataParallel(DistributedDataParallel):
    """DDP whose other attributes are the wrapped model's (objectives ask a model for its config, …)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _data_parallel(model: nn.Module) -> nn.Module:
    """model wrapped in DistributedDataParallel when several processes train it, else model itself."""
    if _world_size() == 1:
        return model
    p = next(model.parameters())
    return _DataParallel(model, device_ids=[p.device.index] if p.device.type == "cuda" else None)


def _sum_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value summed over all processes (itself with one process)."""
    if _world_size() == 1:
        return values
    total = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(total)  # a sum, by default
    return dict(zip(values, total.tolist(), strict=True))


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


def _restore(run: _Run, path: Path) -> None:
    """Load a run saved by `_Run.save`, after checking that it is the same run."""
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: no checkpoint at {path}")
    ckpt = load_checkpoint(path, model=run.ema)  # checks the model's class and config
    if "rng.batches" not in ckpt.extra:
        raise CheckpointError(f"{path} holds a model but no training state, so a run cannot resume from it")
    _check_same_run(path, ckpt.meta, run)
    if ckpt.step > run.config.steps:
        raise ValueError(f"steps={run.config.steps}, but the run in {path} is already at step {ckpt.step}")
    run.model.load_state_dict({k.removeprefix("raw."): v for k, v in ckpt.extra.items() if k.startswith("raw.")})
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in ckpt.extra.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".")
            state.setdefault(int(i), {})[name] = value
    run.optimizer.load_state_dict({"state": state, "param_groups": run.optimizer.state_dict()["param_groups"]})
    run.objective.load_state({k.removeprefix("objective."): v for k, v in ckpt.extra.items()
                              if k.startswith("objective.")})
    run.generator.set_state(ckpt.extra["rng.batches"])
    torch.set_rng_state(ckpt.extra["rng.torch"])
    if "rng.cuda" in ckpt.extra and run.generator.device.type == "cuda":
        torch.cuda.set_rng_state(ckpt.extra["rng.cuda"], run.generator.device)
    run.losses[:] = [(step, loss) for step, loss in ckpt.meta["losses"]]
    run.terms.update(ckpt.meta["terms"])


def _check_same_run(path: Path, meta: dict, run: _Run) -> None:
    """Raise CheckpointError naming every setting in which the saved run differs from `run`."""
    saved, ours = meta.get("train", {}), asdict(run.config)
    # a one-cycle or cosine schedule is laid out over the run's total steps: those cannot change on resume
    resumable = RESUMABLE_CHANGES if run.config.lr_schedule == "constant" else ("checkpoint_every",)
    defaults = {f.name: f.default for f in fields(TrainConfig)}  # for settings added since it was saved
    differences = [
        f"{k}: checkpoint {saved.get(k, defaults[k])!r}, now {v!r}"
        for k, v in ours.items()
        if k not in resumable and saved.get(k, defaults[k]) != v
    ]
    if meta.get("objective") != run.objective.describe():
        differences.append(f"objective: checkpoint {meta.get('objective')}, now {run.objective.describe()}")
    if meta.get("data") != run.data_id:
        differences.append(f"data: checkpoint {meta.get('data')}, now {run.data_id}")
    if differences:
        raise CheckpointError(f"cannot resume from {path}, it was another run: " + "; ".join(differences))


def _data_id(data: tuple[Tensor, ...]) -> dict:
    """The number of samples and a short hash of every data tensor (conditions included)."""
    h = hashlib.sha256()
    for x in data:
        h.update(f"{x.dtype}{list(x.shape)}".encode())
        h.update(x.detach().cpu().contiguous().view(torch.uint8).numpy())
    return {"n": len(data[0]), "tensors": len(data), "sha256": h.hexdigest()[:16]}
