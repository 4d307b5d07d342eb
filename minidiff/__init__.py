"""minidiff: diffusion models built step by step, the package behind the course.

The path of data, one direction:

    data ─► forward (q_sample, targets, loss) ─► model (predicts ε / x0 / v)
         ─► train ─► samplers (reverse process over any denoiser) ─► viz
"""

from minidiff.course import budget, fast_mode
from minidiff.data import TOY_DATASETS, GaussianMixture, eight_gaussians, make_toy
from minidiff.forward import as_eps_model, diffusion_loss, training_target, x0_from_eps
from minidiff.metrics import sliced_wasserstein
from minidiff.nn import MLPConfig, MLPDenoiser
from minidiff.samplers import Step, Trajectory, ddpm, timesteps
from minidiff.schedules import NoiseSchedule

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "MLPConfig",
    "MLPDenoiser",
    "NoiseSchedule",
    "Step",
    "TOY_DATASETS",
    "Trajectory",
    "as_eps_model",
    "budget",
    "ddpm",
    "diffusion_loss",
    "eight_gaussians",
    "fast_mode",
    "make_toy",
    "sliced_wasserstein",
    "timesteps",
    "training_target",
    "x0_from_eps",
]
