"""minidiff: diffusion models built step by step, the package behind the course.

The path of data, one direction:

    data ─► objective (forward: q_sample, targets, loss) ─► model (predicts ε / x0 / v)
         ─► train (one engine) ─► samplers (over the noise levels they visit) ─► guidance
         ─► latent (VAE around it all) ─► generate (one path to pictures) ─► viz
"""

from minidiff.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from minidiff.course import budget, claim, default_device, fast_mode, use_device
from minidiff.data import TOY_DATASETS, GaussianMixture, eight_gaussians, make_toy
from minidiff.edit import img2img, inpaint
from minidiff.forward import DiffusionObjective, as_eps_model, diffusion_loss, training_target, x0_from_eps
from minidiff.generate import generate
from minidiff.metrics import ks_to_normal, sliced_wasserstein
from minidiff.nn import MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.pretrained import list_pretrained, list_vaes, load_pretrained, load_vae, pretrained_info
from minidiff.recipes import RECIPES, Recipe, train_recipe
from minidiff.samplers import (
    SAMPLERS,
    consistency,
    ddim,
    ddim_invert,
    ddim_step,
    ddpm,
    denoise,
    dpmpp_2m,
    dpmpp_2m_sde,
    euler,
    euler_ancestral,
    heun,
    karras_sigmas,
    noise_levels,
    sample,
    timesteps,
    unipc,
)
from minidiff.schedules import NoiseSchedule
from minidiff.train import TrainConfig, TrainResult
from minidiff.trajectory import Step, Trajectory

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DiffusionObjective",
    "GaussianMixture",
    "MLPConfig",
    "MLPDenoiser",
    "NoiseSchedule",
    "RECIPES",
    "Recipe",
    "SAMPLERS",
    "Step",
    "TOY_DATASETS",
    "TrainConfig",
    "TrainResult",
    "Trajectory",
    "UNet",
    "UNetConfig",
    "as_eps_model",
    "budget",
    "claim",
    "consistency",
    "ddim",
    "ddim_invert",
    "ddim_step",
    "denoise",
    "ddpm",
    "default_device",
    "use_device",
    "diffusion_loss",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "eight_gaussians",
    "euler",
    "euler_ancestral",
    "fast_mode",
    "generate",
    "heun",
    "img2img",
    "inpaint",
    "karras_sigmas",
    "list_pretrained",
    "list_vaes",
    "load_pretrained",
    "load_vae",
    "pretrained_info",
    "ks_to_normal",
    "load_checkpoint",
    "make_toy",
    "noise_levels",
    "sample",
    "save_checkpoint",
    "sliced_wasserstein",
    "timesteps",
    "train_recipe",
    "training_target",
    "unipc",
    "x0_from_eps",
]
