"""From minidiff to diffusers: the same pieces under diffusers' names, driving a minidiff model.

diffusers (Hugging Face) is where a learner goes next: Stable Diffusion and most open models
ship as its pipelines. Every piece of this course has a counterpart there (`NAMES`); this
module connects the two so that they can be compared number for number:

    make_scheduler(schedule, "dpmpp_2m")    a diffusers scheduler on the model's own β's (`trained_betas`)
    scheduler_sample(scheduler, model, x_T, steps)   diffusers' loop (set_timesteps, scale_model_input,
                                            step) over a minidiff ε-model, as its pipelines run it
    MinidiffDenoiser.from_checkpoint(ckpt)  a minidiff network as a diffusers model (ModelMixin,
                                            ConfigMixin): save_pretrained / from_pretrained, safetensors
    MinidiffPipeline(unet, scheduler)       a DiffusionPipeline with diffusers' argument names:
                                            num_inference_steps, guidance_scale, negative_class_labels,
                                            image + strength (img2img), generator, latents
    load_pipeline(folder)                   from_pretrained from a local folder, refusing anything but
                                            this module's classes and diffusers' schedulers

diffusers is an optional extra (`pip install 'minidiff[diffusers]'`): `import minidiff` works
without it, and importing this module without it raises a ModuleNotFoundError saying so.

Two things must agree for a diffusers scheduler to drive a minidiff model: the noise schedule
(diffusers keeps β in float32, so `trained_betas` reproduces ours to float32 rounding; its
"squaredcos_cap_v2" is the cosine schedule computed another way) and the prediction type
(`PREDICTION_TYPES`). `check_scheduler` compares the first and names what differs.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import torch
from torch import Tensor

try:
    import diffusers
    from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin
    from diffusers.configuration_utils import register_to_config
except ModuleNotFoundError as error:  # the optional extra is missing
    if error.name != "diffusers":
        raise
    raise ModuleNotFoundError(
        "minidiff.diffusers_bridge needs the diffusers package: pip install 'minidiff[diffusers]'", name="diffusers"
    ) from error

from minidiff.checkpoint import MODELS, Checkpoint, config_dict, model_from_config
from minidiff.guidance import classifier_free_guidance
from minidiff.nn import UNetConfig
from minidiff.schedules import NoiseSchedule

# minidiff's name → diffusers' name, and what to know when moving from one to the other
NAMES: tuple[tuple[str, str, str], ...] = (
    ("UNet(UNetConfig(…))", "UNet2DModel(block_out_channels, layers_per_block, …)",
     "the same blocks; the layers are named differently, so weights are wrapped (MinidiffDenoiser), not renamed"),
    ("model(x_t, t, y=…)", "unet(sample, timestep, class_labels=…).sample", "one call of the network"),
    ("NoiseSchedule.betas", "trained_betas (or beta_schedule)",
     'cosine is "squaredcos_cap_v2"; diffusers keeps β in float32'),
    ('ckpt.prediction "eps" / "v" / "x0"', 'prediction_type "epsilon" / "v_prediction" / "sample"', ""),
    ("steps", "num_inference_steps", "training steps (T = 1000) stay num_train_timesteps"),
    ('spacing="trailing"', 'timestep_spacing="trailing"', "diffusers' default is often \"linspace\" or \"leading\""),
    ('spacing="karras"', "use_karras_sigmas=True",
     "Euler calls the model at fractional timesteps, as minidiff; DPM-Solver and UniPC at integer ones"),
    ("ddpm", "DDPMScheduler", "clip_sample=False: diffusers clips x̂0 to [-1, 1] by default"),
    ("ddim (eta)", "DDIMScheduler (step(…, eta=…))", "clip_sample=False, as for DDPM"),
    ("euler", "EulerDiscreteScheduler", "works on x̃ = x_t/√ᾱ: init_noise_sigma, scale_model_input"),
    ("euler_ancestral", 'EulerAncestralDiscreteScheduler ("Euler a")',
     "a = ancestral: fresh noise at every step; on x̃"),
    ("heun", "HeunDiscreteScheduler",
     "two calls a step, on x̃; in both, the cosine schedule's first trailing step (σ ≈ 2·10⁴ → 6) breaks it"),
    ("dpmpp_2m", 'DPMSolverMultistepScheduler ("DPM++ 2M")',
     '2M = second order, multistep; on x_t; + use_karras_sigmas=True: "DPM++ 2M Karras"'),
    ("dpmpp_2m_sde", 'DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")', ""),
    ("unipc (order)", "UniPCMultistepScheduler (solver_order)", "on x_t"),
    ("guidance (w)", "guidance_scale",
     "ε̂ = ε(∅) + w·(ε(y) − ε(∅)) in both; diffusers guides only when w > 1, minidiff's generate for any w"),
    ("label / prompt", "class_labels / prompt", ""),
    ("negative", "negative_prompt", "replaces ∅ in guidance, in both (ignored by diffusers when w ≤ 1)"),
    ("img2img(…, strength)", "strength (img2img pipelines)",
     "k = round(strength·N) steps here (half to even), int(strength·N) there, of the float product"),
    ("seed", "generator=torch.Generator().manual_seed(seed)", ""),
    ("x_T", "latents", "the starting noise"),
    ("VAE.scale_factor", "AutoencoderKL.config.scaling_factor",
     "0.18215 for Stable Diffusion 1.x/2.x, 0.13025 for SDXL; SD3 and FLUX add a shift_factor"),
    ("generate(model, n, …)", "pipe(…)", ""),
    ("load_pretrained(name)", "Pipeline.from_pretrained(folder)", "here from a local folder only"),
)

# minidiff sampler → (diffusers scheduler class, the settings that make it the same algorithm)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"final_sigmas_type": "zero"}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "final_sigmas_type": "zero"}),
    "unipc": ("UniPCMultistepScheduler", {"final_sigmas_type": "zero"}),
}
PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}  # minidiff → diffusers
ALPHA_BAR_RTOL = 1e-4  # how far a scheduler's ᾱ may be from the model's: float32 rounding of a cumulative
# product over T = 1000 steps (up to ~T·2⁻²⁴ ≈ 6e-5), no more


# ----- schedulers -------------------------------------------------------------------------------
def make_scheduler(schedule: NoiseSchedule, sampler: str = "ddim", prediction: str = "eps", **settings):
    """The diffusers scheduler that runs `sampler` (a key of SCHEDULERS) for a model trained on
    `schedule`: its β's as `trained_betas`, trailing timesteps (minidiff's default spacing), and
    the prediction type of the model it will be handed ("eps": an ε-model such as `ckpt.eps_model`;
    "v"/"x0": the raw network of a v- or x0-predicting checkpoint). `settings` add or override
    scheduler arguments, e.g. use_karras_sigmas=True."""
    if sampler not in SCHEDULERS:
        raise ValueError(f"sampler must be one of {', '.join(SCHEDULERS)} (those with a diffusers scheduler), "
                         f"got {sampler!r}")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTION_TYPES)}, got {prediction!r}")
    class_name, fixed = SCHEDULERS[sampler]
    arguments = {"num_train_timesteps": schedule.T, "trained_betas": schedule.betas.numpy(),
                 "prediction_type": PREDICTION_TYPES[prediction], "timestep_spacing": "trailing"}
    return getattr(diffusers, class_name)(**(arguments | fixed | settings))


def check_scheduler(scheduler, schedule: NoiseSchedule) -> None:
    """Raise ValueError, naming the argument, if `scheduler`'s noise schedule is not `schedule`'s
    (its ᾱ further than float32 rounding, ALPHA_BAR_RTOL, from ours, or another T)."""
    alpha_bar = scheduler.alphas_cumprod.double()
    if len(alpha_bar) != schedule.T:
        raise ValueError(f"scheduler has num_train_timesteps={len(alpha_bar)}, but the model was trained with "
                         f"T = {schedule.T}: build it with make_scheduler(schedule, …)")
    gap = ((alpha_bar - schedule.alpha_bar) / schedule.alpha_bar).abs().max().item()
    if gap > ALPHA_BAR_RTOL:
        raise ValueError(f"scheduler's noise schedule is not the model's ({schedule.name}): its ᾱ differ by up to "
                         f"{gap:.2g} (relative). Pass the model's betas as trained_betas=schedule.betas.numpy(), "
                         "or build it with make_scheduler(schedule, …)")


@torch.no_grad()
def scheduler_sample(scheduler, model, x_T: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """A diffusers scheduler's sampling loop over a minidiff denoiser model(x_t, t), as diffusers'
    pipelines run it: set_timesteps, start from x_T·init_noise_sigma, then at each timestep call the
    model on scale_model_input(x) and step. Only the Euler schedulers (Euler, Euler a) keep the state
    x̃ = x_t/√ᾱ, so that init_noise_sigma and scale_model_input do something; the others work on x_t.
    The model is called with t as a float tensor (B,) (diffusers' own timesteps, fractional for
    Karras σ's in the Euler schedulers)."""
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "set_begin_index"):  # as the pipelines do (DDPM and DDIM keep no step index)
        scheduler.set_begin_index(0)
    random = _random(scheduler, generator)
    x = x_T * scheduler.init_noise_sigma  # Euler, Euler a: x̃ = x_T·σ_max (√(1 + σ_max²) with "leading"); else x_T
    for t in scheduler.timesteps:
        model_output = model(scheduler.scale_model_input(x, t), t.to(x).expand(len(x)))  # t: (B,)
        x = scheduler.step(model_output, t, x, **random).prev_sample
    return x


def _random(scheduler, generator: torch.Generator | None) -> dict:
    """The `generator` argument for `scheduler.step`, if it takes one (the deterministic ones do not)."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


# ----- a minidiff network as a diffusers model --------------------------------------------------
class MinidiffDenoiser(ModelMixin, ConfigMixin):
    """A minidiff network (a class of `minidiff.checkpoint.MODELS`) as a diffusers model: its
    config (the network's class and config, the sample shape, the prediction type) goes to
    config.json, its weights to diffusion_pytorch_model.safetensors, and `from_pretrained` rebuilds
    it from those two files alone. `forward` returns the network's raw prediction (what
    `prediction` names), as a diffusers UNet does; the scheduler's `prediction_type` says which."""

    @register_to_config
    def __init__(self, model_class: str, model_config: dict, sample_shape: list[int], prediction: str = "eps"):
        super().__init__()
        if model_class not in MODELS:
            raise ValueError(f"model_class must be one of {', '.join(MODELS)}, got {model_class!r}")
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTION_TYPES)}, got {prediction!r}")
        self.net = model_from_config(MODELS[model_class][1](**model_config))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> MinidiffDenoiser:
        """The checkpoint's network (the same weights, copied) as a diffusers model."""
        if ckpt.prediction not in PREDICTION_TYPES:
            raise ValueError(f"ckpt must be an ε-, v- or x0-predicting diffusion model, got prediction "
                             f"{ckpt.prediction!r}")
        net = ckpt.model
        model = cls(type(net).__name__, config_dict(net.config), list(ckpt.sample_shape), ckpt.prediction)
        model.net.load_state_dict(net.state_dict())
        return model.to(next(net.parameters()).device).eval()

    def forward(self, sample: Tensor, timestep: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """The network's prediction at `sample` (B, …) and `timestep` (one, or one per sample);
        without class_labels a conditional network sees its null condition ∅."""
        t = torch.as_tensor(timestep, dtype=sample.dtype, device=sample.device).expand(len(sample))  # (B,)
        return self.net(sample, t) if class_labels is None else self.net(sample, t, y=class_labels)


class MinidiffPipeline(DiffusionPipeline):
    """A diffusers pipeline for a class-conditional or unconditional minidiff model, with diffusers'
    argument names; its parts are `unet` (a MinidiffDenoiser) and `scheduler` (any diffusers
    scheduler whose `prediction_type` is the unet's). `save_pretrained(folder)` writes a pipeline
    folder; `load_pipeline(folder)` reads it back."""

    def __init__(self, unet: MinidiffDenoiser, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        negative_class_labels: Tensor | None = None,
        image: Tensor | None = None,
        strength: float = 1.0,
        generator: torch.Generator | None = None,
        latents: Tensor | None = None,
    ) -> Tensor:
        """Samples (batch_size, …), clamped to [-1, 1].

        Args:
            class_labels:          one class per sample (B,), for a class-conditional unet
            num_inference_steps:   the sampler's steps (minidiff: `steps`)
            guidance_scale:        w in ε̂ = ε(∅) + w·(ε(y) − ε(∅)) (minidiff: `guidance`). As in diffusers'
                                   Stable Diffusion pipelines (`do_classifier_free_guidance`), guidance
                                   runs only when w > 1: at w ≤ 1 the unet sees class_labels alone
                                   (one call per step) and negative_class_labels is ignored, where
                                   minidiff's `generate` interpolates for any w (w < 1: towards ∅)
            negative_class_labels: what to guide away from instead of ∅ (minidiff: `negative`)
            image, strength:       img2img: noise `image` to the level of the last int(strength·N)
                                   steps with `scheduler.add_noise`, and take those steps
            generator, latents:    the random source, and the starting noise (drawn from it if None)
        """
        device = self.unet.device
        noise = latents if latents is not None else torch.randn(
            (batch_size, *self.unet.config.sample_shape), generator=generator, device=device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if image is None:
            x = noise * self.scheduler.init_noise_sigma
        else:
            k = min(int(num_inference_steps * strength), num_inference_steps)  # diffusers' img2img get_timesteps
            start = (num_inference_steps - k) * self.scheduler.order
            timesteps = timesteps[start:]
            x = self.scheduler.add_noise(image.to(noise), noise, timesteps[:1])
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(len(self.scheduler.timesteps) - len(timesteps))
        model = self._guided(class_labels, guidance_scale, negative_class_labels)
        random = _random(self.scheduler, generator)
        for t in timesteps:
            model_output = model(self.scheduler.scale_model_input(x, t), t.expand(len(x)))
            x = self.scheduler.step(model_output, t, x, **random).prev_sample
        return x.clamp(-1, 1)

    def _guided(self, y: Tensor | None, w: float, y_neg: Tensor | None):
        """The unet as a denoiser (x, t) ↦ prediction, guided towards y (away from y_neg or ∅) when
        w > 1, diffusers' rule; at w ≤ 1 conditioned on y alone."""
        if y is None:
            return self.unet
        if w <= 1:  # diffusers: do_classifier_free_guidance = guidance_scale > 1
            return lambda x, t: self.unet(x, t, class_labels=y)
        y_uncond = self.unet.net.null_condition(y) if y_neg is None else y_neg
        return classifier_free_guidance(lambda x, t, y: self.unet(x, t, class_labels=y), y, y_uncond, w)


def load_pipeline(folder: str | Path) -> MinidiffPipeline:
    """A MinidiffPipeline saved with `save_pretrained(folder)`, read from that local folder only
    (no hub). Before anything is loaded, model_index.json must name a MinidiffPipeline whose
    unet is a MinidiffDenoiser of this module and whose scheduler is one of diffusers' own, and
    the folder must hold no Python file: loading imports only minidiff and diffusers and reads
    JSON and safetensors, it runs no code from the folder."""
    folder = Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise FileNotFoundError(f"no pipeline at {folder}: model_index.json is missing")
    index = json.loads(index_file.read_text())
    expected = {"_class_name": MinidiffPipeline.__name__, "unet": [__name__, MinidiffDenoiser.__name__]}
    scheduler = index.get("scheduler")
    is_scheduler = (isinstance(scheduler, list) and scheduler[0] == "diffusers"
                    and re.fullmatch(r"\w+Scheduler", str(scheduler[1])) and hasattr(diffusers, scheduler[1]))
    if any(index.get(k) != v for k, v in expected.items()) or not is_scheduler:
        got = {k: index.get(k) for k in ("_class_name", "unet", "scheduler")}
        raise ValueError(f"{index_file} must name a {expected['_class_name']} with unet {expected['unet']} and a "
                         f"diffusers scheduler, got {got}")
    code = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py"))
    if code:
        raise ValueError(f"{folder} holds Python files ({', '.join(code)}); a saved minidiff pipeline has none")
    return MinidiffPipeline.from_pretrained(folder, use_safetensors=True, local_files_only=True)


# ----- what a UNet2DModel of the same shape looks like ------------------------------------------
def unet2d_settings(config: UNetConfig, sample_size: int) -> dict:
    """The arguments of diffusers' UNet2DModel with the shape of a minidiff `UNet(config)`: the same
    widths, residual blocks per level, attention levels, heads, GroupNorm groups and scale-shift
    time conditioning (the layers differ in detail: the parameter counts are close, not equal)."""
    levels = len(config.channel_mults)
    attention = {i % levels for i in config.attention_levels}
    widths = tuple(config.channels * m for m in config.channel_mults)
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(levels))
    settings = {
        "sample_size": sample_size,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "block_out_channels": widths,
        "layers_per_block": config.blocks_per_level,  # its up path has layers_per_block + 1 blocks per level
        "down_block_types": down,
        "up_block_types": tuple(name.replace("Down", "Up") for name in reversed(down)),
        "attention_head_dim": widths[-1] // config.heads,
        "norm_num_groups": config.groups,
        "attn_norm_num_groups": config.groups,  # GroupNorm before the middle attention too, as in minidiff
        "resnet_time_scale_shift": "scale_shift",  # the time embedding scales and shifts, as in minidiff
    }
    if config.num_classes is not None:
        settings["num_class_embeds"] = config.num_classes + 1  # + the null label
    return settings


def diffusers_lines(relative_path: str, *needles: str) -> str:
    """The lines of an installed diffusers source file (e.g. "pipelines/stable_diffusion/
    pipeline_stable_diffusion.py") that contain any of `needles`, numbered: diffusers' own code,
    read (not imported), to set beside minidiff's."""
    path = Path(diffusers.__file__).parent / relative_path
    lines = path.read_text(encoding="utf-8").splitlines()
    found = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(lines, 1) if any(n in line for n in needles)]
    if not found:
        raise ValueError(f"none of {needles} is in {path} (diffusers {diffusers.__version__})")
    return "\n".join(found)
