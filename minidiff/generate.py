"""One path from a trained model to pictures: checkpoint → condition → guidance → sampler → decode.

    images = minidiff.generate("shapes_class", 16, label=3, guidance=3.0, seed=0)
    images = minidiff.generate(ckpt, 64, prompt="a large red star", sampler="dpmpp_2m", steps=20)

Every caller — the command line's `sample`, `minidiff.publish`, the benchmarks and the lessons —
goes through `generate`, so the same model, condition, sampler, steps and seed give the same
images whoever asks. The steps it takes, each a function of its own module:

    noise      x_T ~ N(0, I) from `seed`, on the model's device
    condition  a label or a prompt turned into the model's condition y (`condition`)
    guidance   classifier-free guidance with scale w (`minidiff.guidance`); w = 1: the plain
               conditional model
    sampler    any of `minidiff.samplers.SAMPLERS`, over `steps` noise levels; or a flow solver
               ("flow_euler", "flow_heun", "flow_midpoint": `minidiff.flow.sample` over `steps`
               times) on the model's velocity: a flow model's own, a diffusion model's through
               the bridge (`Checkpoint.velocity_model`)
    decode     a latent model's samples through the VAE its checkpoint names (`minidiff.latent`)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from minidiff import flow
from minidiff._checks import check_choice
from minidiff.checkpoint import Checkpoint, CheckpointError
from minidiff.data.images import SHAPE_CLASSES, class_captions
from minidiff.forward import is_conditional, is_controlled
from minidiff.guidance import classifier_free_guidance
from minidiff.latent import decode
from minidiff.nn.controlnet import with_control
from minidiff.nn.text import TextUNet
from minidiff.objective import Objective
from minidiff.pretrained import load_pretrained, load_vae
from minidiff.samplers import SAMPLERS, noise_levels
from minidiff.viz import save_samples

DEFAULT_GUIDANCE = 3.0  # the shipped models' best scale is around 2–4 (benchmarks/guidance_sweep.py)
FLOW_SOLVERS = {f"flow_{name}": name for name in flow.SOLVERS}  # sampler name → `minidiff.flow` solver

Label = int | Sequence[int] | Tensor
Prompt = str | Sequence[str]


@torch.no_grad()
def generate(
    model: Checkpoint | str,
    n: int,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    spacing: str = "trailing",
    label: Label | None = None,
    prompt: Prompt | None = None,
    guidance: float | None = None,
    negative: Label | Prompt | None = None,
    control: Tensor | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    **sampler_kwargs,
) -> Tensor:
    """n samples from a trained diffusion model: images (n, C, H, W) clamped to [-1, 1] (decoded
    by the model's VAE if it is a latent model), clips (n, F, C, H, W) for a video model, or points
    (n, D) for a 2-D toy model.

    Args:
        model:      a loaded checkpoint (`load_checkpoint`, `load_pretrained`) or a shipped model's name
        n:          how many samples
        sampler:    a name in `minidiff.samplers.SAMPLERS`; steps, spacing: its noise levels (a spacing
                    of `noise_levels`, or "optimised": the levels fitted to this model, `optimised_levels`);
                    or a flow solver in FLOW_SOLVERS over `steps` times (spacing unused)
        label:      for a class-conditional model (or a text model, as the class's caption):
                    one class for all samples, or one per sample (n,)
        prompt:     for a text-conditional model: one caption, or one per sample
        guidance:   classifier-free guidance scale w (default `default_guidance`: DEFAULT_GUIDANCE, or 1
                    for a consistency model; 1 = the conditional model unguided); needs a label or a prompt
        negative:   what to guide away from instead of the null condition: a label or a prompt
        control:    for a ControlNet (`minidiff.nn.controlnet.ControlledUNet`): the control image, one
                    (C, H, W) for all samples or one per sample (n, C, H, W), in [-1, 1]; a bool mask
                    (`minidiff.data.shape_mask`) is read as +1 where True, -1 elsewhere. It steers both
                    halves of classifier-free guidance
        seed:       seeds x_T and the sampler's own noise
        device:     where to sample (default: the model's device)
        batch_size: samples per sampler call (memory); the result does not depend on it for
                    deterministic samplers
        sampler_kwargs: more arguments of the sampler (eta, callback…)
    """
    ckpt = load_pretrained(model, device or "cpu") if isinstance(model, str) else model
    if not ckpt.is_denoiser:
        raise CheckpointError(f"generate needs a diffusion model, got a checkpoint of a {type(ckpt.model).__name__}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    check_choice("sampler", sampler, (*SAMPLERS, *FLOW_SOLVERS))
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    net = ckpt.model
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device)
    y = condition(net, n, label, prompt)
    if y is None and (guidance is not None or negative is not None):
        raise ValueError("guidance and negative need a label or a prompt to guide towards")
    y_neg = None
    if y is not None:
        y_neg = net.null_condition(y) if negative is None else _negative(net, n, negative)
    w = default_guidance(ckpt) if guidance is None else guidance
    g = torch.Generator(device).manual_seed(seed)
    x_T = torch.randn((n, *ckpt.sample_shape), generator=g, device=device)  # (n, …)
    c = _control(net, control, x_T)
    on_path = sampler in FLOW_SOLVERS  # integrate the straight path's ODE with the model's velocity
    if not on_path:  # the noise levels to visit: a spacing's, or those fitted to this model
        sigmas = optimised_levels(ckpt, sampler, steps) if spacing == "optimised" else noise_levels(
            ckpt.schedule, steps, spacing)
    batches = []
    for i in range(0, n, batch_size):
        denoiser = ckpt.velocity_model if on_path else ckpt.eps_model
        if c is not None:  # the control images bound to the denoiser, under guidance
            denoiser = with_control(denoiser, c[i : i + batch_size])
        if y is not None:  # guidance wraps a velocity model exactly as it wraps an ε-model
            denoiser = classifier_free_guidance(denoiser, y[i : i + batch_size], y_neg[i : i + batch_size], w)
        if on_path:
            batches.append(flow.sample(denoiser, x_T[i : i + batch_size], steps, FLOW_SOLVERS[sampler],
                                       **sampler_kwargs))
        else:
            batches.append(SAMPLERS[sampler](denoiser, x_T[i : i + batch_size], ckpt.schedule, sigmas, generator=g,
                                             **sampler_kwargs))
    x0 = torch.cat(batches)
    if ckpt.vae is not None:
        x0 = decode(_vae(ckpt.vae, device), x0)
    # images or clips are clamped; latents without a VAE and points are returned as sampled
    is_image = x0.ndim in (4, 5) and x0.shape[-3] in (1, 3)
    return x0.clamp(-1, 1) if is_image else x0


def optimised_levels(ckpt: Checkpoint, sampler: str, steps: int) -> list[float]:
    """The noise levels fitted to this model for `sampler` with `steps` steps and stored with it
    (`minidiff.publish.fit_steps`); a ValueError names the ones it has if there are none such."""
    stored = ckpt.meta.get("optimised_sigmas", {})
    levels = stored.get(sampler, {}).get("levels", {}).get(str(steps))
    if levels is None:
        have = [f"{name} with {k} steps" for name, fit in stored.items() for k in fit["levels"]]
        raise ValueError(f'spacing="optimised" needs noise levels fitted to this model for sampler {sampler!r} with '
                         f"{steps} steps; it has {', '.join(have) or 'none'} (fitted by minidiff.publish.fit_steps)")
    return levels


def default_guidance(ckpt: Checkpoint) -> float:
    """The guidance scale `generate` uses when none is given: DEFAULT_GUIDANCE, or 1 (none) for a
    consistency model, which was distilled from its teacher's guided ODE (`minidiff.distill`)."""
    return 1.0 if ckpt.prediction == "consistency" else DEFAULT_GUIDANCE


@functools.lru_cache(maxsize=4)
def _vae(name: str, device: torch.device) -> nn.Module:
    """A shipped VAE, loaded (and its sha256 checked) once per process and device."""
    return load_vae(name, device=device)


def condition(net: nn.Module, n: int, label: Label | None = None, prompt: Prompt | None = None) -> Tensor | None:
    """The condition y (on the model's device) that asks `net` for `label` or `prompt`, n times;
    None if neither is given. A text model takes a label as that class's caption
    (`class_captions`: "a small red circle", sizes alternating)."""
    if label is None and prompt is None:
        return None
    if label is not None and prompt is not None:
        raise ValueError("give a label or a prompt, not both")
    kind = type(net).__name__
    if not is_conditional(net):
        raise ValueError(f"a label or prompt was given, but this {kind} is unconditional")
    device = next(net.parameters()).device
    if prompt is not None:
        if not isinstance(net, TextUNet):
            raise ValueError(f"prompt: this {kind} is class-conditional, it takes a label")
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"prompt must be one caption or {n} of them, got {len(prompts)}")
        return net.tokenizer.encode(prompts).to(device)
    labels = _labels(label, n)
    if isinstance(net, TextUNet):
        return net.tokenizer.encode(class_captions(labels)).to(device)
    K = net.num_classes  # a class-conditional network (`LabelConditioned`); label K is its null label
    if bool((labels == K).any()):
        raise ValueError(f"label {K} is the null label (no class); leave label out for unconditional samples")
    if n and (int(labels.min()) < 0 or int(labels.max()) > K):
        raise ValueError(f"label must be a class from 0 to {K - 1} (this {kind} has {K} classes), got {label!r:.80}")
    net.check_condition(labels, n)
    return labels.to(device)


def _control(net: nn.Module, control: Tensor | None, x_T: Tensor) -> Tensor | None:
    """The control images (n, C, H, W) in [-1, 1] on x_T's device, checked against the model."""
    if control is None:
        return None
    if not is_controlled(net):
        raise ValueError(f"control was given, but this {type(net).__name__} takes none (a ControlledUNet does)")
    if not torch.is_tensor(control):
        raise ValueError(f"control must be a tensor (C, H, W) or (n, C, H, W), got {type(control).__name__}")
    c = control.float() * 2 - 1 if control.dtype == torch.bool else control
    c = c.to(x_T).expand(len(x_T), *c.shape) if c.ndim == 3 else c.to(x_T)
    net.check_control(c, x_T)
    return c


def _labels(label: Label, n: int) -> Tensor:
    labels = torch.as_tensor(label)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"label must be an integer class or a sequence of them, got {label!r:.80}")
    labels = labels.long().expand(n) if labels.ndim == 0 else labels.long()
    if labels.shape != (n,):
        raise ValueError(f"label must be one class or {n} of them (one per sample), got shape {tuple(labels.shape)}")
    return labels


def _negative(net: nn.Module, n: int, negative: Label | Prompt) -> Tensor:
    """The condition to guide away from: a prompt for a text model, else a label."""
    prompts = isinstance(negative, Sequence) and all(isinstance(p, str) for p in negative)
    is_prompt = isinstance(negative, str) or prompts
    return condition(net, n, prompt=negative) if is_prompt else condition(net, n, label=negative)


class SampleGrids:
    """A training callback, callback(step, loss, ema), that saves a grid of EMA samples every
    `every` steps as out_dir/samples_<step>.png, from the same noise each time so grids compare.
    A class-conditional model is asked for every class in turn (guidance DEFAULT_GUIDANCE); a
    latent model's samples are decoded by its VAE."""

    def __init__(
        self,
        out_dir: str | Path,
        objective: Objective,
        sample_shape: tuple[int, ...],
        every: int,
        n: int = 64,
        steps: int = 50,
    ):
        self.out_dir, self.objective, self.sample_shape = Path(out_dir), objective, sample_shape
        self.every, self.n, self.steps = every, n, steps

    def __call__(self, step: int, loss: float, ema: nn.Module) -> None:
        if step % self.every:
            return
        fields = {"vae": None} | self.objective.checkpoint_fields()  # schedule, prediction (and VAE)
        ckpt = Checkpoint(ema, sample_shape=self.sample_shape, step=step, meta={}, extra={}, **fields)
        labels = None
        if isinstance(ema, TextUNet):
            labels = torch.arange(self.n) % len(SHAPE_CLASSES)  # as the classes' captions
        elif is_conditional(ema):
            labels = torch.arange(self.n) % ema.num_classes
        images = generate(ckpt, self.n, steps=min(self.steps, ckpt.schedule.T), label=labels)
        save_samples(images, self.out_dir / f"samples_{step:06d}.png")
