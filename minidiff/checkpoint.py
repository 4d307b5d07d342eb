"""Checkpoints: one safetensors file format, one writer and one reader, for every model kind.

A checkpoint holds a model's weights and what is needed to use it again; a run's checkpoint
also holds the state needed to go on training it:

    tensors   "model.<name>"      the weights (the EMA weights, from `train`)
              "schedule.betas"    β_0 … β_{T-1} (float64), for a denoiser only
              any other tensors   `extra`, e.g. the training state `train` saves for resume
    metadata  one JSON document in the safetensors header:
              model          the model's class and config (it is rebuilt without pickle)
              denoiser       for a diffusion model: the schedule's name and T, and the
                             prediction type ("eps", "x0", "v", or "consistency" for a distilled
                             consistency model, `minidiff.forward.consistency_function`); for a flow-matching model
                             "flow" (the straight path's velocity, `minidiff.flow`) and the
                             schedule the diffusion samplers drive it on; null for a VAE or a classifier
              sample_shape   the shape of one sample (C, H, W) or (D,) it works on
              vae            for a latent diffusion model: the shipped VAE its samples decode with
              lora           for a model with LoRA adapters (`minidiff.nn.lora`): their rank, α and
                             layers, so that loading wraps the same layers before the weights go in
              step, meta     the training step, and free-form JSON (training config, losses…)
              tensors_sha256 a checksum of every tensor's name, dtype, shape and bytes

Loading never executes code: safetensors holds plain tensors, the rest is JSON. The file's
bytes are read once; the checksum is verified on them, so a flipped bit is caught. Writing is
atomic (`minidiff.files.write_atomic`) and refuses non-finite tensors, so a checkpoint on disk
is always a whole, finite state.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from minidiff._checks import check_choice
from minidiff.files import safetensors_metadata, tensors_sha256, write_atomic
from minidiff.flow import VelocityModel, as_velocity_model, eps_model_from_velocity, velocity_model_from_eps
from minidiff.forward import OUTPUTS, Denoiser, as_eps_model
from minidiff.nn import DiT, DiTConfig, MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.nn.classifier import Classifier, ClassifierConfig
from minidiff.nn.controlnet import ControlledUNet, ControlNetConfig
from minidiff.nn.lora import adapter_spec, add_lora
from minidiff.nn.text import TextUNet, TextUNetConfig
from minidiff.nn.vae import VAE, VAEConfig
from minidiff.nn.video import VideoUNet, VideoUNetConfig
from minidiff.schedules import NoiseSchedule

FORMAT = "minidiff-checkpoint"
VERSION = 2
DENOISER_PREDICTIONS = (*OUTPUTS, "flow")  # "flow": a velocity on the straight path (minidiff.flow)

# The model classes a checkpoint can rebuild: class name → (class, its config dataclass).
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "UNet": (UNet, UNetConfig),
    "MLPDenoiser": (MLPDenoiser, MLPConfig),
    "TextUNet": (TextUNet, TextUNetConfig),
    "VAE": (VAE, VAEConfig),
    "Classifier": (Classifier, ClassifierConfig),
    "DiT": (DiT, DiTConfig),
    "ControlledUNet": (ControlledUNet, ControlNetConfig),
    "VideoUNet": (VideoUNet, VideoUNetConfig),
}


class CheckpointError(ValueError):
    """A file that is not a readable minidiff checkpoint, or one that does not fit the model."""


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns.

    model:        the rebuilt model with its weights, in eval mode
    schedule:     the noise schedule a denoiser was trained with (None for a VAE, a classifier);
                  for a flow model, the one the diffusion samplers drive it on
    prediction:   what a denoiser predicts: "eps", "x0", "v", "consistency" or "flow" (samplers want `eps_model`,
                  flow solvers `velocity_model`)
    sample_shape: the shape of one sample, (C, H, W) for images or (D,) for points
    step:         the training step it was saved at
    meta:         free-form JSON metadata (training config, loss history, …)
    extra:        any other tensors saved with it (training state), on the CPU
    vae:          the shipped VAE a latent diffusion model's samples are decoded with, or None
    """

    model: nn.Module
    schedule: NoiseSchedule | None
    prediction: str | None
    sample_shape: tuple[int, ...]
    step: int
    meta: dict[str, Any]
    extra: dict[str, Tensor]
    vae: str | None = None

    @property
    def is_denoiser(self) -> bool:
        return self.schedule is not None

    @property
    def eps_model(self) -> Denoiser:
        """The model as the ε-predictor that every sampler takes (`as_eps_model` applied):
        `sample(ckpt.eps_model, x_T, ckpt.schedule)` is right whatever the model predicts."""
        self._check_denoiser()
        if self.prediction == "flow":  # a flow model, seen on the schedule through the bridge
            return eps_model_from_velocity(as_velocity_model(self.model), self.schedule)
        return as_eps_model(self.model, self.schedule, self.prediction)

    @property
    def velocity_model(self) -> VelocityModel:
        """The model as a velocity field v(x_t, t) on the straight path, t in [0, 1], that the flow
        solvers take (`minidiff.flow.sample`): a flow model's own, or a diffusion model's ε seen
        through the bridge (`minidiff.flow.velocity_model_from_eps`)."""
        self._check_denoiser()
        if self.prediction == "flow":
            return as_velocity_model(self.model)
        return velocity_model_from_eps(self.eps_model, self.schedule)

    def _check_denoiser(self) -> None:
        if not self.is_denoiser:
            raise CheckpointError(f"this checkpoint holds a {type(self.model).__name__}, not a diffusion model")


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
    schedule: NoiseSchedule | None = None,
    sample_shape: tuple[int, ...] | None = None,
    prediction: str = "eps",
    step: int = 0,
    meta: dict[str, Any] | None = None,
    extra: dict[str, Tensor] | None = None,
    vae: str | None = None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` and what it needs to be used again to `path` (a .safetensors file), atomically.

    Args:
        path:         the file to write; its folder is created if needed
        model:        a model of a class in MODELS (it must have a `.config` dataclass)
        schedule:     for a denoiser, the noise schedule it is trained with; None for other models
        sample_shape: the shape of one sample, (C, H, W) or (D,); required with a schedule
        prediction:   what a denoiser predicts: "eps", "x0", "v", "consistency" or "flow"
        step:         the training step
        meta:         JSON-serialisable metadata to keep alongside
        extra:        more tensors to store (names must not start with "model." or "schedule.")
        vae:          for latent diffusion, the name of the shipped VAE its samples decode with
        weights_dtype: store the model's parameters in this dtype (torch.float16 halves
                      a shipped file); None keeps theirs. `load_checkpoint` casts them back to the
                      dtype of the model it loads into
    Returns the path written. Raises FloatingPointError, writing nothing, if a tensor holds
    NaN or infinite values.
    """
    name = type(model).__name__
    if MODELS.get(name, (None,))[0] is not type(model):
        raise TypeError(f"model must be one of {', '.join(MODELS)} to be saved, got {name}")
    if schedule is not None:
        check_choice("prediction", prediction, DENOISER_PREDICTIONS)
        if sample_shape is None:
            raise ValueError("sample_shape is required for a denoiser (a checkpoint with a schedule)")
    extra = extra or {}
    clashing = [k for k in extra if k.startswith(("model.", "schedule."))]
    if clashing:
        raise ValueError(f"extra tensor names must not start with 'model.' or 'schedule.', got {clashing}")
    weights = model.state_dict()
    if weights_dtype is not None:
        parameters = dict(model.named_parameters())  # buffers (a VAE's scale factor, …) keep their dtype
        weights = {k: v.to(weights_dtype) if k in parameters else v for k, v in weights.items()}
    tensors = {f"model.{k}": v for k, v in weights.items()} | extra
    if schedule is not None:
        tensors["schedule.betas"] = schedule.betas
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"not writing {path}: tensor {key!r} holds NaN or infinite values")
    denoiser = {"schedule": {"name": schedule.name, "T": schedule.T}, "prediction": prediction} if schedule else None
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"class": name, "config": config_dict(model.config)},
        "denoiser": denoiser,
        "sample_shape": list(sample_shape) if sample_shape is not None else None,
        "vae": vae,
        "lora": adapter_spec(model),
        "step": step,
        "meta": meta or {},
        "tensors_sha256": tensors_sha256(tensors),
    }
    return write_atomic(Path(path), safetensors.torch.save(tensors, metadata={FORMAT: json.dumps(header)}))


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    data: bytes | None = None,
) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (no pickle: safetensors + JSON).

    Args:
        path:   the .safetensors file (named in every error)
        model:  load the weights into this model (its class and config must match the
                checkpoint's) instead of building a new one; it keeps its device
        device: where a newly built model goes
        data:   the file's bytes, if already read (e.g. after checking their sha256): they
                are what is loaded, the file is not read again
    Raises FileNotFoundError if there is no such file, and CheckpointError if it is not a
    readable minidiff checkpoint, its tensors fail their checksum or are not finite, or it
    does not match `model`.
    """
    path = Path(path)
    header, tensors = _read(path, data)
    model = _model_with_weights(path, header, tensors, model, device)
    denoiser = header["denoiser"]
    schedule = None
    if denoiser is not None:
        schedule = NoiseSchedule(tensors["schedule.betas"], denoiser["schedule"]["name"])
    shape = header["sample_shape"]
    return Checkpoint(
        model=model.eval(),
        schedule=schedule,
        prediction=denoiser["prediction"] if denoiser else None,
        sample_shape=tuple(shape) if shape is not None else (),
        step=header["step"],
        meta=header["meta"],
        extra={k: v for k, v in tensors.items() if not k.startswith(("model.", "schedule."))},
        vae=header["vae"],
    )


def _read(path: Path, data: bytes | None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The checked JSON header and all tensors of a checkpoint file, with clear errors."""
    if data is None:
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        data = path.read_bytes()
    try:
        metadata = safetensors_metadata(data, path)
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    text = metadata.get(FORMAT)
    if text is None:
        raise CheckpointError(f"{path} is a safetensors file but not a minidiff checkpoint (no {FORMAT!r} metadata)")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the checkpoint's metadata is not valid JSON: {error}") from None
    if not isinstance(header, dict) or header.get("version") != VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this minidiff reads {VERSION}")
    _check_header(path, header, tensors)
    if tensors_sha256(tensors) != header["tensors_sha256"]:
        raise CheckpointError(f"{path}: the tensors do not match their checksum; the file is corrupt or was modified")
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
    return header, tensors


# field → (JSON types allowed, what is expected), for the errors
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((dict,), "an object with 'class' and 'config'"),
    "denoiser": ((dict, type(None)), "an object with 'schedule' and 'prediction', or null"),
    "sample_shape": ((list, type(None)), "a list of integers or null"),
    "vae": ((str, type(None)), "a VAE name or null"),
    "step": ((int,), "an integer"),
    "meta": ((dict,), "an object"),
    "tensors_sha256": ((str,), "a hex digest"),
}


def _check_header(path: Path, header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Raise CheckpointError naming the file and the first field that is missing or malformed."""
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: header field 'format' must be {FORMAT!r}, got {header.get('format')!r:.80}")
    for name, (types, expected) in _FIELDS.items():
        if name not in header or not isinstance(header[name], types) or isinstance(header[name], bool):
            raise CheckpointError(f"{path}: header field {name!r} must be {expected}, got {header.get(name)!r:.80}")
    if header["step"] < 0:
        raise CheckpointError(f"{path}: header field 'step' must be a non-negative integer, got {header['step']}")
    shape = header["sample_shape"]
    if shape is not None and not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        expected = "a list of positive integers"
        raise CheckpointError(f"{path}: header field 'sample_shape' must be {expected}, got {shape!r:.80}")
    model = header["model"]
    if not isinstance(model.get("class"), str) or not isinstance(model.get("config"), dict):
        raise CheckpointError(f"{path}: header field 'model' must be {_FIELDS['model'][1]}, got {model!r:.80}")
    denoiser = header["denoiser"]
    if denoiser is not None:
        if denoiser.get("prediction") not in DENOISER_PREDICTIONS or not isinstance(denoiser.get("schedule"), dict):
            expected = _FIELDS["denoiser"][1]
            raise CheckpointError(f"{path}: header field 'denoiser' must be {expected}, got {denoiser!r:.80}")
        if "schedule.betas" not in tensors:
            raise CheckpointError(f"{path}: a denoiser's checkpoint needs a 'schedule.betas' tensor, and has none")
        schedule, T = denoiser["schedule"], len(tensors["schedule.betas"])
        if not isinstance(schedule.get("name"), str) or schedule.get("T") != T:
            raise CheckpointError(
                f"{path}: header field 'denoiser' must be an object whose schedule has a name and T = {T} "
                f"(the length of 'schedule.betas'), got {schedule!r:.80}"
            )


def _model_with_weights(
    path: Path, header: dict[str, Any], tensors: dict[str, Tensor], model: nn.Module | None, device
) -> nn.Module:
    """The model a file describes (built on `device`, or `model` after checking that it is the
    same class and config) with the file's "model.*" weights loaded."""
    name, config = header["model"]["class"], header["model"]["config"]
    if name not in MODELS:
        raise CheckpointError(f"{path} holds a {name!r} model; this version knows {', '.join(MODELS)}")
    cls, config_cls = MODELS[name]
    if model is None:
        try:
            model = cls(config_cls(**config)).to(device)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: the {name} config in its header is not valid: {error}") from None
        if header.get("lora") is not None:  # wrap the same layers as the saved model had
            lora = header["lora"]
            try:
                add_lora(model, lora["rank"], lora["alpha"], tuple(lora["layers"]))
            except (TypeError, ValueError, KeyError) as error:
                raise CheckpointError(f"{path}: header field 'lora' must name the rank, alpha and layers of "
                                      f"this {name}'s adapters, got {lora!r:.80} ({error})") from None
    else:
        _check_same_model(path, name, config, model)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit the model: {error}") from None
    return model


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (tuples become lists), comparable after a round trip."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_same_model(path: Path, name: str, config: dict[str, Any], model: nn.Module) -> None:
    """Raise CheckpointError naming what differs between the checkpoint's model and `model`."""
    if type(model).__name__ != name:
        raise CheckpointError(f"{path} holds a {name} model, but the model given is a {type(model).__name__}")
    ours = config_dict(model.config)
    differences = [
        f"{k}: checkpoint {config.get(k)!r}, model {ours.get(k)!r}"
        for k in ours | config
        if config.get(k) != ours.get(k)
    ]
    if differences:
        raise CheckpointError(f"{path} was saved from a {name} with another config; " + "; ".join(differences))
