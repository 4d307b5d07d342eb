"""Datasets: 2-D toys and Gaussian mixtures (exact denoisers)."""

from minidiff.data.mixture import GaussianMixture
from minidiff.data.toy2d import TOY_DATASETS, eight_gaussians, make_toy

__all__ = ["GaussianMixture", "TOY_DATASETS", "eight_gaussians", "make_toy"]
