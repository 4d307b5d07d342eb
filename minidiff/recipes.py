"""Named training recipes: the data, the network, the noise schedule and how to train, in one place.

    python -m minidiff train --recipe digits --out runs/digits          # the command line
    train_recipe("toy", steps=budget(fast=200, full=3000))              # a notebook

`RECIPES` holds them by name; the shipped pretrained weights are trained with these. A recipe
names what to train and on what; `Recipe.objective()` is the loss the engine (`minidiff.train`)
minimises: the diffusion objective for a denoiser, the VAE's for a VAE.

Every recipe trains its network to predict v (Salimans & Ho 2022) on the cosine schedule.
With ε-prediction, the cosine schedule's last step (ᾱ ≈ 2·10⁻⁹) turns the tiniest error in ε̂
into a huge one in x̂0 = (x_t - √(1-ᾱ)·ε̂)/√ᾱ, and samplers that start there (every
"trailing" spacing) give garbage; from v, ε̂ = √(1-ᾱ)·x_t + √ᾱ·v̂ is exact in that limit.
Sample through `Checkpoint.eps_model` (or `as_eps_model`), which converts v to ε.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from minidiff._checks import check_choice
from minidiff.checkpoint import model_from_config
from minidiff.course import default_device
from minidiff.data import TOY_DATASETS, DigitsDataset, ShapesDataset, make_toy, shape_mask
from minidiff.data.clips import FRAMES, ShapeClips
from minidiff.data.sounds import SoundsDataset
from minidiff.distill import ConsistencyDistillation
from minidiff.flow import FlowObjective
from minidiff.forward import DiffusionObjective
from minidiff.latent import encode
from minidiff.nn import DiTConfig, MLPConfig, UNetConfig
from minidiff.nn.controlnet import ControlledUNet, ControlNetConfig
from minidiff.nn.lora import DEFAULT_TARGETS, add_lora
from minidiff.nn.text import TextUNetConfig, Tokenizer
from minidiff.nn.vae import VAEConfig, VAEObjective, reconstruction_mse
from minidiff.nn.video import VideoUNetConfig
from minidiff.objective import Objective
from minidiff.pretrained import load_pretrained, load_vae, vae_info
from minidiff.schedules import NoiseSchedule
from minidiff.train import Callback, TrainConfig, TrainResult, process_rank, train

DATASETS = ("digits", "shapes", "sounds", "clips", "clip_frames", *TOY_DATASETS)
CONDITIONS = (None, "label", "caption")
CONTROLS = ("mask",)  # what a ControlNet recipe's control image is
OBJECTIVE_KINDS = ("diffusion", "flow", "consistency")


@dataclass(frozen=True)
class Recipe:
    """A complete training run, by name."""

    name: str
    description: str  # one line for `--help`
    dataset: str  # "digits", "shapes", "sounds" (spectrograms, `minidiff.data.sounds`), "clips"
    # (`minidiff.data.clips`), "clip_frames" (the clips' frames as single images) or a 2-D toy (TOY_DATASETS)
    model: UNetConfig | DiTConfig | MLPConfig | TextUNetConfig | VAEConfig | ControlNetConfig | VideoUNetConfig
    training: TrainConfig  # steps, batch size, learning rate, EMA, seed, …
    schedule: str = "cosine"  # noise schedule name, see `NoiseSchedule.from_name`
    T: int = 1000  # training timesteps
    prediction: str = "v"  # what a denoiser learns to predict: "eps", "x0" or "v" (see the module docstring)
    p_uncond: float = 0.0  # conditional models: probability of training a sample with the null condition
    weighting: str = "uniform"  # the loss's weight per timestep: "uniform" or "min_snr" (`forward.loss_weight`)
    timesteps: str = "uniform"  # how training draws t: "uniform" or "log_normal" (`forward.sample_timesteps`);
    # for flow matching "uniform" or "logit_normal" (`flow.sample_t`)
    sample_every: int = 0  # the command line saves a grid of EMA samples every this many steps (0: never)
    n_samples: int = 64  # samples in that grid
    image_size: int = 16  # side of the images (digits, shapes)
    n: int = 10_000  # samples generated (shapes, toys); digits has the 1,438 of its train split
    condition: str | None = None  # None: unconditional; "label": class labels; "caption": token ids
    holdout: tuple[str, ...] = ()  # shapes classes left out of the training data, e.g. ("green star",)
    latent: str | None = None  # a shipped VAE (`minidiff.pretrained.load_vae`): train on its scaled latents
    objective_kind: str = "diffusion"  # "diffusion" (`DiffusionObjective`), "flow" (`FlowObjective`, minidiff.flow)
    # or "consistency" (`ConsistencyDistillation` of `teacher`, minidiff.distill)
    teacher: str | None = None  # a shipped model: the student starts from its weights and distils its guided ODE
    teacher_guidance: float = 1.0  # the guidance scale w folded into a consistency student
    # adapting a trained model (lesson 13)
    base: str | None = None  # a shipped model the run starts from (fine-tuning, LoRA, ControlNet)
    lora_rank: int | None = None  # train LoRA adapters of this rank on `base` (`minidiff.nn.lora`), nothing else
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS  # the layers adapted, by name pattern (`add_lora`)
    classes: tuple[str, ...] = ()  # train on these shapes classes only, e.g. ("green star",): a new concept
    limit: int | None = None  # keep only the first this many training images (a fine-tune's few dozen)
    control: str | None = None  # "mask": a ControlNet (model ControlNetConfig) steered by the shape's mask

    def load_data(self) -> tuple[Tensor, Tensor | None]:
        """The training data, (N, C, H, W) images in [-1, 1] or (N, 2) points, and the
        condition y the model trains with: None, class labels (N,) or caption token ids
        (N, L). Generated data always uses seed 0: it is the dataset. With `latent`, the
        images are encoded by that VAE: (N, c, H/f, W/f) scaled latents (`minidiff.latent.encode`)."""
        if self.latent is not None:
            images, y = dataclasses.replace(self, latent=None).load_data()
            return encode(load_vae(self.latent), images), y
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("condition", self.condition, CONDITIONS)
        if self.dataset in TOY_DATASETS:
            return make_toy(self.dataset, self.n, seed=0), None
        if self.dataset == "digits":
            d = DigitsDataset(self.image_size, split="train")
        elif self.dataset == "sounds":
            d = SoundsDataset(self.n, seed=0)
        elif self.dataset in ("clips", "clip_frames"):
            return self._clips()
        else:
            d = ShapesDataset(self.n, self.image_size, seed=0)
        keep = ~torch.isin(d.labels, _class_ids(d, self.holdout))
        if self.classes:
            keep &= torch.isin(d.labels, _class_ids(d, self.classes))
        if self.limit is not None:
            keep &= keep.cumsum(0) <= self.limit  # the first `limit` images kept
        if self.condition == "caption":
            captions = [c for c, k in zip(d.captions, keep.tolist(), strict=True) if k]
            return d.images[keep], Tokenizer(self.model.text.vocab, self.model.text.max_len).encode(captions)
        return d.images[keep], d.labels[keep] if self.condition == "label" else None

    def _clips(self) -> tuple[Tensor, Tensor | None]:
        """n clips (n, FRAMES, 3, 16, 16) with their labels, or for "clip_frames" their frames as
        images (n·FRAMES, 3, 16, 16), each with its clip's label."""
        d = ShapeClips(self.n, seed=0)
        x, y = d.clips, d.labels
        if self.dataset == "clip_frames":
            x, y = x.flatten(0, 1), y.repeat_interleave(FRAMES)
        return x, y if self.condition == "label" else None

    def training_data(self) -> tuple[Tensor, ...]:
        """What the engine trains on: (x,), (x, y) with a condition, and for a ControlNet recipe its
        control images last: the shape's mask (`shape_mask`) of each image, +1 on it, -1 elsewhere."""
        x, y = self.load_data()
        data = (x,) if y is None else (x, y)
        if self.control is not None:
            check_choice("control", self.control, CONTROLS)
            data += (shape_mask(x).float() * 2 - 1,)  # (N, 1, H, W)
        return data

    def load_heldout(self, n: int = 1000) -> Tensor:
        """Up to n images of the recipe's dataset it never trains on, (n, C, H, W) in [-1, 1]:
        shapes of another seed (1), or the digits' test split."""
        check_choice("dataset with held-out images", self.dataset, ("digits", "shapes"))
        if self.dataset == "digits":
            return DigitsDataset(self.image_size, split="test").images[:n]
        return ShapesDataset(n, self.image_size, seed=1).images

    def objective(self) -> Objective:
        """What the engine minimises: the VAE's loss for a VAE, flow matching for a flow recipe,
        else the diffusion objective on the recipe's schedule, with its prediction type,
        condition dropout and VAE."""
        check_choice("objective_kind", self.objective_kind, OBJECTIVE_KINDS)
        if isinstance(self.model, VAEConfig):
            return VAEObjective()
        if self.objective_kind == "flow":
            return FlowObjective(self.p_uncond, self.timesteps)
        if self.objective_kind == "consistency":
            return ConsistencyDistillation(load_pretrained(self.teacher), self.teacher, self.teacher_guidance)
        schedule = NoiseSchedule.from_name(self.schedule, self.T)
        return DiffusionObjective(schedule, self.prediction, self.p_uncond, self.latent, self.weighting, self.timesteps)

    def initial_model(self, objective: Objective, device: str | torch.device) -> nn.Module:
        """The network a run starts from: freshly initialised (seeded), or a student as its teacher,
        or `base`'s weights (all trainable: full fine-tuning; inside a ControlNet: frozen beside its
        trainable copy; with lora_rank: frozen, adapters added)."""
        torch.manual_seed(self.training.seed)  # the same initial weights every time
        model = model_from_config(dataclasses.replace(self.model)).to(device)
        if isinstance(objective, ConsistencyDistillation):  # a student starts as its teacher
            model.load_state_dict(objective.teacher.model.state_dict())
        if self.base is not None:
            base = load_pretrained(self.base, device).model
            if isinstance(model, ControlledUNet):
                model.load_base(base)
            else:
                model.load_state_dict(base.state_dict())
        if self.lora_rank is not None:
            add_lora(model, self.lora_rank, targets=self.lora_targets)
        return model

    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one training sample: (2,) points, (C, H, W) images, or (c, h, w) latents."""
        if self.latent is not None:
            return tuple(vae_info(self.latent)["latent_shape"])
        if self.dataset in TOY_DATASETS:
            return (2,)
        if isinstance(self.model, VideoUNetConfig):
            return (self.model.frames, self.model.unet.in_channels, self.image_size, self.image_size)
        net = self.model.unet if isinstance(self.model, (TextUNetConfig, ControlNetConfig)) else self.model
        return (net.in_channels, self.image_size, self.image_size)


# What benchmarks/bench_recipes.py found to learn fastest per CPU minute on shapes (curves in
# benchmarks/README.md): Min-SNR-5 weighting (the recipe's `weighting`), then batches of 32
# (more, noisier steps beat fewer exact ones at this size), and a cosine decay of the learning
# rate to 0 at the end of the run. EMA length (0.99–0.9995) and width (24–48) made no measurable
# difference at equal CPU minutes; a second block per level was worse (dearer steps). bf16
# autocast was ahead per CPU minute but came after these models were trained (see the README there).
FAST_TRAINING = TrainConfig(steps=5000, batch_size=32, warmup=200, lr_schedule="cosine", ema_decay=0.999,
                            checkpoint_every=250)

CLASS_UNET = UNetConfig(in_channels=3, blocks_per_level=1, num_classes=16, channels_last=True)  # shapes_class's (0.83M)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="digits",
            description="U-Net (1.4M parameters) on scikit-learn's handwritten digits at 16×16; "
            "3,000 steps, tens of minutes on a CPU",
            dataset="digits",
            model=UNetConfig(channels_last=True),
            training=TrainConfig(steps=3000, warmup=200, checkpoint_every=250),
            sample_every=500,
        ),
        Recipe(
            name="shapes",
            description="U-Net (0.83M parameters) on 10,000 procedural RGB shapes at 32×32; 5,000 steps of batch "
            "32, about 25 minutes on one idle CPU thread, a minute or two on a GPU",
            dataset="shapes",
            model=UNetConfig(in_channels=3, blocks_per_level=1, channels_last=True),
            training=FAST_TRAINING,
            weighting="min_snr",
            sample_every=1000,
            image_size=32,
        ),
        Recipe(
            name="shapes_class",
            description="class-conditional U-Net (0.83M parameters) on the 16 shape × colour classes at 32×32, "
            "labels dropped 10% of the time for classifier-free guidance; 5,000 steps of batch 32, about 25 "
            "minutes on one idle CPU thread",
            dataset="shapes",
            model=CLASS_UNET,
            condition="label",
            training=FAST_TRAINING,
            weighting="min_snr",
            p_uncond=0.1,
            sample_every=1000,
            image_size=32,
        ),
        Recipe(
            name="shapes_text",
            description="text-conditional U-Net (0.98M parameters with its 2-layer text encoder) on the shapes "
            "captions at 32×32, green stars held out, prompts dropped 10% of the time; 5,000 steps of batch 32, "
            "about 30 minutes on one idle CPU thread",
            dataset="shapes",
            model=TextUNetConfig(UNetConfig(in_channels=3, blocks_per_level=1, context_dim=64, channels_last=True)),
            condition="caption",
            holdout=("green star",),
            training=FAST_TRAINING,
            weighting="min_snr",
            p_uncond=0.1,
            sample_every=1000,
            image_size=32,
        ),
        Recipe(
            name="vae_shapes",
            description="VAE (0.58M parameters) for latent diffusion: 3×32×32 shapes ↔ 4×8×8 latents; "
            "1,000 steps, about 12 minutes on one idle CPU thread",
            dataset="shapes",
            model=VAEConfig(channels_last=True),
            training=TrainConfig(steps=1000, lr=2e-3, warmup=100, ema_decay=0.999, checkpoint_every=250),
            image_size=32,
        ),
        Recipe(
            name="vae_shapes_f8",
            description="VAE (1.7M parameters) at Stable Diffusion's compression: 3×32×32 shapes ↔ 4×4×4 latents "
            "(f = 8, 48× fewer values); 2,000 steps, about 16 minutes on one idle CPU thread",
            dataset="shapes",
            model=VAEConfig(channel_mults=(1, 2, 2, 4), channels_last=True),  # one more halving than vae_shapes
            training=TrainConfig(steps=2000, lr=2e-3, warmup=100, lr_schedule="cosine", ema_decay=0.999,
                                 checkpoint_every=250),
            image_size=32,
        ),
        Recipe(
            name="shapes_latent",
            description="class-conditional latent diffusion: a U-Net (2.2M parameters) on the 4×8×8 latents of "
            "the shipped VAE vae_shapes, labels dropped 10% of the time; 10,000 steps of batch 32, about 17 CPU "
            "minutes",
            dataset="shapes",
            model=UNetConfig(in_channels=4, channels=64, channel_mults=(1, 2), blocks_per_level=1, num_classes=16),
            condition="label",
            latent="vae_shapes",
            training=dataclasses.replace(FAST_TRAINING, steps=10_000),  # 5,000: FD 1.20, 94% at w = 3
            weighting="min_snr",
            p_uncond=0.1,
            image_size=32,
        ),
        Recipe(
            name="shapes_latent_f8",
            description="class-conditional latent diffusion at Stable Diffusion's compression: a U-Net (0.91M "
            "parameters, one level with attention) on the 4×4×4 latents of vae_shapes_f8, labels dropped 10% of "
            "the time; 20,000 steps of batch 32, about 15 CPU minutes",
            dataset="shapes",
            # on a 4×4 grid one level suffices: attention over its 16 cells sees the whole latent
            model=UNetConfig(in_channels=4, channels=64, channel_mults=(1,), blocks_per_level=2, num_classes=16),
            condition="label",
            latent="vae_shapes_f8",
            training=dataclasses.replace(FAST_TRAINING, steps=20_000, checkpoint_every=1000),
            weighting="min_snr",
            p_uncond=0.1,
            image_size=32,
        ),
        Recipe(
            name="toy",
            description="MLP (170k parameters) on the 2-D two-moons toy; 3,000 steps, about a minute on a CPU",
            dataset="two_moons",
            model=MLPConfig(),
            training=TrainConfig(steps=3000, batch_size=256, ema_decay=0.995, checkpoint_every=500),
            sample_every=1000,
            n_samples=1000,
        ),
        Recipe(
            name="tiny_digits",
            description="a tiny U-Net on the digits at 8×8, for tests and quick demonstrations; seconds",
            dataset="digits",
            model=UNetConfig(channels=16, channel_mults=(1, 2), blocks_per_level=1, heads=2),
            training=TrainConfig(steps=300, batch_size=32, warmup=20, ema_decay=0.99, checkpoint_every=100),
            n_samples=16,
            image_size=8,
        ),
    )
}


def _flow_twin(name: str, diffusion: str, description: str) -> Recipe:
    """A diffusion recipe's data, network and training budget, trained by flow matching instead, with
    SD3's logit-normal times (Esser et al. 2024's best, their Table 1); Min-SNR weighting is
    diffusion's and does not apply."""
    return dataclasses.replace(RECIPES[diffusion], name=name, description=description, objective_kind="flow",
                               timesteps="logit_normal", weighting="uniform")


RECIPES |= {
    r.name: r
    for r in (
        _flow_twin("toy_flow", "toy", "MLP (170k parameters) trained by flow matching on the 2-D two-moons toy (the "
                   "straight path, logit-normal times); the toy recipe's 3,000 steps, about a minute on a CPU"),
        _flow_twin("shapes_flow", "shapes_class", "class-conditional U-Net (0.83M parameters) trained by flow matching "
                   "(rectified flow, logit-normal times as in SD3) on the shapes at 32×32: the network and budget of "
                   "shapes_class; 5,000 steps of batch 32, about 25 minutes on one idle CPU thread"),
        Recipe(
            name="shapes_class_cm",
            description="consistency model distilled from shapes_class with its guidance w = 1.5 folded in "
            "(Song et al. 2023, Luo et al. 2023): samples in 1–4 calls; 2,000 steps of batch 32 from the "
            "teacher's weights",
            dataset="shapes",
            model=CLASS_UNET,
            condition="label",
            training=TrainConfig(steps=2000, batch_size=32, lr=1e-4, warmup=100, lr_schedule="cosine",
                                 ema_decay=0.995, checkpoint_every=100),
            image_size=32,
            objective_kind="consistency",
            teacher="shapes_class",
            teacher_guidance=1.5,
        ),
        dataclasses.replace(  # shapes_flow with a transformer in place of the U-Net
            _flow_twin("shapes_dit", "shapes_class", "class-conditional diffusion transformer (DiT, 1.9M parameters, "
                       "4×4 patches: 64 tokens) trained by flow matching on the shapes at 32×32, labels dropped 10% "
                       "of the time; 6,000 steps of batch 32, the CPU minutes of shapes_flow's 5,000"),
            model=DiTConfig(patch_size=4, width=128, depth=6, heads=4, num_classes=16),
            training=dataclasses.replace(FAST_TRAINING, steps=6000),
        ),
    )
}


FINE_TUNING = TrainConfig(steps=400, batch_size=16, lr=1e-3, warmup=20, lr_schedule="cosine", ema_decay=0.99,
                          checkpoint_every=100)  # a few minutes; LoRA's learning rate (full fine-tuning: lower)


def _green_stars(name: str, description: str, lora_rank: int | None, lr: float,
                 targets: tuple[str, ...] = DEFAULT_TARGETS) -> Recipe:
    """shapes_text taught the concept it never saw, green stars, from 32 of the held-out images (prompts
    never dropped: the unconditional prediction that guidance pushes away from stays the base's)."""
    return dataclasses.replace(
        RECIPES["shapes_text"], name=name, description=description, base="shapes_text", holdout=(),
        classes=("green star",), limit=32, lora_rank=lora_rank, lora_targets=targets, sample_every=0, p_uncond=0.0,
        training=dataclasses.replace(FINE_TUNING, lr=lr),
    )


RECIPES |= {
    r.name: r
    for r in (
        _green_stars("green_stars_full", "shapes_text fully fine-tuned on 32 green stars (never seen in its "
                     "training); 400 steps of batch 16, a few minutes", None, 1e-4),
        *(_green_stars(f"green_stars_lora{rank}", f"LoRA adapters of rank {rank} on shapes_text's attention "
                       "projections, trained on 32 green stars; 400 steps of batch 16, a few minutes", rank, 1e-3)
          for rank in (1, 4, 16)),
        _green_stars("green_stars_lora4_conv", "LoRA adapters of rank 4 on shapes_text's attention projections and "
                     "convolutions, trained on 32 green stars; 400 steps of batch 16, a few minutes", 4, 1e-3,
                     (*DEFAULT_TARGETS, "*conv*")),
    )
}

RECIPES["sounds"] = dataclasses.replace(  # shapes_class's recipe and U-Net, on one channel and 18 classes
    RECIPES["shapes_class"], name="sounds",
    description="class-conditional U-Net (0.83M parameters) on the spectrograms of 10,000 procedural notes "
    "(3 timbres × 6 pitches, 1×32×32), labels dropped 10% of the time: the image network unchanged; 5,000 steps "
    "of batch 32, about 25 minutes on one idle CPU thread",
    dataset="sounds",
    model=dataclasses.replace(CLASS_UNET, in_channels=1, out_channels=None, num_classes=18),
)
CLIP_UNET = UNetConfig(in_channels=3, blocks_per_level=1, num_classes=16, channels_last=True)  # per frame, 16×16
CLIP_TRAINING = TrainConfig(steps=4000, batch_size=8, warmup=200, lr_schedule="cosine", ema_decay=0.999,
                            checkpoint_every=250)  # 8 clips of 8 frames a step
RECIPES |= {
    r.name: r
    for r in (
        Recipe(
            name="clips",
            description="space-time U-Net (0.94M parameters: the image U-Net per frame plus attention across "
            "frames) on 5,000 clips of 8 frames of a shape gliding across 16×16, labels dropped 10% of the time; "
            "4,000 steps of 8 clips, about 25 minutes on one CPU thread",
            dataset="clips",
            model=VideoUNetConfig(CLIP_UNET, FRAMES),
            condition="label",
            training=CLIP_TRAINING,
            weighting="min_snr",
            p_uncond=0.1,
            image_size=16,
            n=5000,
        ),
        Recipe(
            name="clip_frames",
            description="the image U-Net alone (0.83M parameters) on the frames of the clips recipe's 5,000 clips "
            "as single 16×16 images: the baseline that draws a clip's frames independently; 4,000 steps of 64 "
            "frames",
            dataset="clip_frames",
            model=CLIP_UNET,
            condition="label",
            training=dataclasses.replace(CLIP_TRAINING, batch_size=64),
            weighting="min_snr",
            p_uncond=0.1,
            image_size=16,
            n=5000,
        ),
    )
}
RECIPES["shapes_controlnet"] = dataclasses.replace(  # shapes_class's data and loss, its U-Net frozen inside
    RECIPES["shapes_class"], name="shapes_controlnet",
    description="ControlNet (Zhang et al. 2023) on the frozen shapes_class: a trainable copy of its encoder reads "
    "the shape's mask through zero convolutions; labels dropped 10% of the time; 3,000 steps of batch 32, "
    "about 15 minutes on one CPU thread",
    model=ControlNetConfig(CLASS_UNET),
    control="mask",
    base="shapes_class",
    training=TrainConfig(steps=3000, batch_size=32, lr=5e-4, warmup=100, lr_schedule="cosine", ema_decay=0.995,
                         checkpoint_every=250),
    sample_every=0,  # (sample grids would need control images)
)
RECIPES["shapes_text_seed1"] = dataclasses.replace(  # a second base for lesson 13: an adapter is tied to its base
    RECIPES["shapes_text"], name="shapes_text_seed1",
    description="shapes_text trained again from another seed (other initial weights, other batches): the same "
    "architecture and data, other weights; about 30 minutes on one idle CPU thread",
    training=dataclasses.replace(FAST_TRAINING, seed=1),
)


def _class_ids(d: ShapesDataset | DigitsDataset, names: tuple[str, ...]) -> Tensor:
    for name in names:
        check_choice("class", name, d.class_names)
    return torch.tensor([d.class_names.index(c) for c in names], dtype=torch.long)


def get_recipe(name: str) -> Recipe:
    """The recipe called `name` (a key of RECIPES)."""
    check_choice("recipe", name, tuple(RECIPES))
    return RECIPES[name]


def train_recipe(
    recipe: str | Recipe,
    out_dir: str | Path | None = None,
    *,
    steps: int | None = None,
    shards: int | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a recipe's model from scratch (or resume its run in out_dir) on the engine.

    Args:
        recipe:    a Recipe or the name of one in RECIPES
        out_dir:   folder for checkpoints (see `train`); None: in memory only
        steps:     train for this many steps instead of the recipe's (e.g. a short fast-mode run,
                   or more steps to extend a finished run with resume=True)
        shards:    split each batch into this many shards (`TrainConfig.shards`; default: the recipe's,
                   raised to the number of processes under torchrun)
        resume:    continue the run saved in out_dir
        device:    where to train (default: `default_device()`)
        callbacks: called after every step as callback(step, loss, ema), e.g. sample grids
    Returns `train`'s result: the EMA model and the loss history. A VAE's run also reports
    the reconstruction MSE on the recipe's held-out images.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    changes = {"steps": steps, "shards": shards}
    config = dataclasses.replace(recipe.training, **{k: v for k, v in changes.items() if v is not None})
    data = recipe.training_data()
    objective = recipe.objective()
    model = recipe.initial_model(objective, device or default_device())
    result = train(model, data, objective, config, out_dir=out_dir, resume=resume, callbacks=callbacks)
    if isinstance(recipe.model, VAEConfig) and process_rank() == 0:  # under torchrun, process 0 speaks
        heldout = recipe.load_heldout()
        mse = reconstruction_mse(result.ema, heldout)
        tqdm.write(f"reconstruction MSE on {len(heldout)} held-out images: {mse:.5f}")
    return result
