"""Checkpoints: a model, its noise schedule and what it predicts, in one safetensors file.

A checkpoint holds everything needed to sample from a trained model, and optionally the
state needed to go on training it:

    tensors   "model.<name>"      the weights to sample with (the EMA weights, from `train`)
              "schedule.betas"    β_0 … β_{T-1} (float64)
              any other tensors   `extra`, e.g. the training state `train` saves for resume
    metadata  one JSON document in the safetensors header: the model's class and config
              (so the model is rebuilt without pickle), the schedule's name and T, the
              prediction type ("eps", "x0" or "v"), the shape of one sample, the step, and
              free-form `meta` (the training config, the loss history…)

Loading never executes code: safetensors holds plain tensors, the rest is JSON. Writing is
atomic: the file is written to a temporary file next to it and moved into place with
`os.replace`, so a crash mid-write leaves the previous checkpoint untouched.

A model that is not a denoiser (the VAE of latent diffusion) has no noise schedule: it is
saved by `save_model` in a sibling format ("minidiff-model": the same layout without the
schedule, prediction and sample shape) and read back by `load_model`. Each loader refuses
the other's files with an error saying which loader to use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from minidiff._checks import check_choice
from minidiff.forward import PREDICTIONS, Denoiser, as_eps_model
from minidiff.nn import MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.nn.text import TextUNet, TextUNetConfig
from minidiff.nn.vae import VAE, VAEConfig
from minidiff.schedules import NoiseSchedule

FORMAT = "minidiff-checkpoint"
VERSION = 1

# The model classes a checkpoint can rebuild: class name → (class, its config dataclass).
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "UNet": (UNet, UNetConfig),
    "MLPDenoiser": (MLPDenoiser, MLPConfig),
    "TextUNet": (TextUNet, TextUNetConfig),
    "VAE": (VAE, VAEConfig),
}


class CheckpointError(ValueError):
    """A file that is not a readable minidiff checkpoint, or one that does not fit the model."""


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns.

    model:        the rebuilt model with its weights, in eval mode
    schedule:     the noise schedule it was trained with
    prediction:   what it predicts: "eps", "x0" or "v" (samplers want `eps_model`)
    sample_shape: the shape of one sample, (C, H, W) for images or (D,) for points
    step:         the training step it was saved at
    meta:         free-form JSON metadata (training config, loss history, …)
    extra:        any other tensors saved with it (training state), on the CPU
    """

    model: nn.Module
    schedule: NoiseSchedule
    prediction: str
    sample_shape: tuple[int, ...]
    step: int
    meta: dict[str, Any]
    extra: dict[str, Tensor]

    @property
    def eps_model(self) -> Denoiser:
        """The model as the ε-predictor that every sampler takes (`as_eps_model` applied):
        `sample(ckpt.eps_model, x_T, ckpt.schedule)` is right whatever the model predicts."""
        return as_eps_model(self.model, self.schedule, self.prediction)


def model_from_config(config: Any) -> nn.Module:
    """A freshly initialised model for a config dataclass, e.g. UNetConfig → UNet."""
    for cls, config_cls in MODELS.values():
        if type(config) is config_cls:
            return cls(config)
    known = ", ".join(c.__name__ for _, c in MODELS.values())
    raise TypeError(f"config must be one of {known}, got {type(config).__name__}")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    schedule: NoiseSchedule,
    sample_shape: tuple[int, ...],
    prediction: str = "eps",
    step: int = 0,
    meta: dict[str, Any] | None = None,
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write `model` and what it needs for sampling to `path` (a .safetensors file), atomically.

    Args:
        path:         the file to write; its folder is created if needed
        model:        a model of a class in MODELS (it must have a `.config` dataclass)
        schedule:     the noise schedule it is trained with
        sample_shape: the shape of one sample, (C, H, W) or (D,)
        prediction:   what the model predicts: "eps", "x0" or "v"
        step:         the training step
        meta:         JSON-serialisable metadata to keep alongside
        extra:        more tensors to store (names must not start with "model." or "schedule.")
    Returns the path written.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    name = type(model).__name__
    if MODELS.get(name, (None,))[0] is not type(model):
        raise TypeError(f"model must be one of {', '.join(MODELS)} to be saved, got {name}")
    extra = extra or {}
    clashing = [k for k in extra if k.startswith(("model.", "schedule."))]
    if clashing:
        raise ValueError(f"extra tensor names must not start with 'model.' or 'schedule.', got {clashing}")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"class": name, "config": _config_dict(model.config)},
        "schedule": {"name": schedule.name, "T": schedule.T},
        "prediction": prediction,
        "sample_shape": list(sample_shape),
        "step": step,
        "meta": meta or {},
    }
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {"schedule.betas": schedule.betas, **extra}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = safetensors.torch.save(tensors, metadata={FORMAT: json.dumps(header)})
    path = Path(path)
    write_atomic(path, data)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`,
    never a part: write a temporary file in the same folder, flush it to disk, then rename
    it over `path` (`os.replace` is atomic on POSIX and Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique: concurrent writers do not clash
    try:
        with open(tmp, "xb") as f:  # (unlike tempfile's, its permissions follow the umask)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (no pickle: safetensors + JSON).

    Args:
        path:   the .safetensors file
        model:  load the weights into this model (its class and config must match the
                checkpoint's) instead of building a new one; it keeps its device
        device: where a newly built model goes
    Raises FileNotFoundError if there is no such file, and CheckpointError if it is not a
    readable minidiff checkpoint or does not match `model`.
    """
    path = Path(path)
    header, tensors = _read(path)
    model = _model_with_weights(path, header, tensors, model, device)
    extra = {k: v for k, v in tensors.items() if not k.startswith(("model.", "schedule."))}
    return Checkpoint(
        model=model.eval(),
        schedule=NoiseSchedule(tensors["schedule.betas"], header["schedule"]["name"]),
        prediction=header["prediction"],
        sample_shape=tuple(header["sample_shape"]),
        step=header["step"],
        meta=header["meta"],
        extra=extra,
    )


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The JSON header and all tensors of a checkpoint file, with clear errors."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except safetensors.SafetensorError as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    if MODEL_FORMAT in metadata:
        raise CheckpointError(f"{path} is a model without a noise schedule (e.g. a VAE); read it with load_model")
    text = metadata.get(FORMAT)
    if text is None:
        raise CheckpointError(f"{path} is a safetensors file but not a minidiff checkpoint (no {FORMAT!r} metadata)")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the checkpoint's metadata is not valid JSON: {error}") from None
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {header.get('version')!r}, expected {VERSION}")
    if "schedule.betas" not in tensors:
        raise CheckpointError(f"{path}: the checkpoint has no 'schedule.betas' tensor")
    return header, tensors


def _model_with_weights(
    path: Path, header: dict[str, Any], tensors: dict[str, Tensor], model: nn.Module | None, device
) -> nn.Module:
    """The model a file describes (built on `device`, or `model` after checking that it is the
    same class and config) with the file's "model.*" weights loaded."""
    cls, config_cls = _model_class(path, header)
    config = header["model"]["config"]
    if model is None:
        model = cls(config_cls(**config)).to(device)
    else:
        _check_same_model(path, header["model"]["class"], config, model)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit the model: {error}") from None
    return model


def _model_class(path: Path, header: dict[str, Any]) -> tuple[type[nn.Module], type]:
    name = header["model"]["class"]
    if name not in MODELS:
        raise CheckpointError(f"{path} holds a {name!r} model; this version knows {', '.join(MODELS)}")
    return MODELS[name]


def _config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (tuples become lists), comparable after a round trip."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_same_model(path: Path, name: str, config: dict[str, Any], model: nn.Module) -> None:
    """Raise CheckpointError naming what differs between the checkpoint's model and `model`."""
    if type(model).__name__ != name:
        raise CheckpointError(f"{path} holds a {name} model, but the model given is a {type(model).__name__}")
    ours = _config_dict(model.config)
    differences = [
        f"{k}: checkpoint {config.get(k)!r}, model {ours.get(k)!r}"
        for k in ours | config
        if config.get(k) != ours.get(k)
    ]
    if differences:
        raise CheckpointError(f"{path} was saved from a {name} with another config; " + "; ".join(differences))


# ----- models without a noise schedule (the VAE) -------------------------------------------------
MODEL_FORMAT = "minidiff-model"


@dataclass
class SavedModel:
    """What `load_model` returns: the model (eval mode), the training step it was saved at,
    free-form JSON metadata, and any other tensors saved with it (training state, on the CPU)."""

    model: nn.Module
    step: int
    meta: dict[str, Any]
    extra: dict[str, Tensor]


def save_model(
    path: str | Path,
    model: nn.Module,
    step: int = 0,
    meta: dict[str, Any] | None = None,
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write a model that has no noise schedule (e.g. a `VAE`) to `path`, atomically: its
    class and config and `meta` as JSON, its weights and buffers as "model.<name>" tensors,
    `extra` tensors under their own names (which must not start with "model.")."""
    name = type(model).__name__
    if MODELS.get(name, (None,))[0] is not type(model):
        raise TypeError(f"model must be one of {', '.join(MODELS)} to be saved, got {name}")
    extra = extra or {}
    clashing = [k for k in extra if k.startswith("model.")]
    if clashing:
        raise ValueError(f"extra tensor names must not start with 'model.', got {clashing}")
    header = {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "model": {"class": name, "config": _config_dict(model.config)},
        "step": step,
        "meta": meta or {},
    }
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | extra
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path = Path(path)
    write_atomic(path, safetensors.torch.save(tensors, metadata={MODEL_FORMAT: json.dumps(header)}))
    return path


def load_model(path: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> SavedModel:
    """Read a file written by `save_model` (no pickle: safetensors + JSON).

    Args:
        path:   the .safetensors file
        model:  load the weights into this model (same class and config) instead of building one
        device: where a newly built model goes
    Raises FileNotFoundError if there is no such file, and CheckpointError if it is not a
    readable minidiff model file (a diffusion checkpoint, a corrupt file…) or does not match `model`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except safetensors.SafetensorError as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    if FORMAT in metadata:
        raise CheckpointError(
            f"{path} is a diffusion model checkpoint (with a noise schedule); read it with load_checkpoint"
        )
    if MODEL_FORMAT not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not a minidiff model file (no {MODEL_FORMAT!r} metadata)"
        )
    try:
        header = json.loads(metadata[MODEL_FORMAT])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the model file's metadata is not valid JSON: {error}") from None
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: model file format version {header.get('version')!r}, expected {VERSION}")
    model = _model_with_weights(path, header, tensors, model, device)
    extra = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    return SavedModel(model.eval(), header["step"], header["meta"], extra)
