"""minidiff: diffusion models built step by step, the package behind the course.

The path of data, one direction:

    data ─► forward (q_sample, targets, loss) ─► model (predicts ε / x0 / v)
         ─► train ─► samplers (reverse process over any denoiser) ─► viz
"""

from minidiff.course import budget, default_device, fast_mode
from minidiff.data import TOY_DATASETS, GaussianMixture, eight_gaussians, make_toy
from minidiff.forward import as_eps_model, diffusion_loss, training_target, x0_from_eps
from minidiff.metrics import ks_to_normal, sliced_wasserstein
from minidiff.nn import MLPConfig, MLPDenoiser, UNet, UNetConfig
from minidiff.samplers import (
    SAMPLERS,
    Step,
    Trajectory,
    ddim,
    ddim_invert,
    ddpm,
    dpmpp_2m,
    euler,
    euler_ancestral,
    heun,
    karras_sigmas,
    sample,
    timesteps,
)
from minidiff.schedules import NoiseSchedule

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "MLPConfig",
    "MLPDenoiser",
    "NoiseSchedule",
    "SAMPLERS",
    "Step",
    "TOY_DATASETS",
    "Trajectory",
    "UNet",
    "UNetConfig",
    "as_eps_model",
    "budget",
    "ddim",
    "ddim_invert",
    "ddpm",
    "default_device",
    "diffusion_loss",
    "dpmpp_2m",
    "eight_gaussians",
    "euler",
    "euler_ancestral",
    "fast_mode",
    "heun",
    "karras_sigmas",
    "ks_to_normal",
    "make_toy",
    "sample",
    "sliced_wasserstein",
    "timesteps",
    "training_target",
    "x0_from_eps",
]
