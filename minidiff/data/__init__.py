"""Datasets: 2-D toys and Gaussian mixtures (exact denoisers); images: scikit-learn digits,
procedural shapes with captions, MNIST-format (IDX) files."""

from minidiff.data.idx import MNIST_KINDS, MNIST_MD5, MNIST_URLS, load_mnist, read_idx
from minidiff.data.images import (
    COLOUR_RGB,
    COLOURS,
    SHAPE_CLASSES,
    SHAPES,
    SIZES,
    DigitsDataset,
    LabelledImages,
    ShapesDataset,
    shape_mask,
)
from minidiff.data.mixture import GaussianMixture
from minidiff.data.toy2d import TOY_DATASETS, eight_gaussians, make_toy, three_gaussians

__all__ = [
    "COLOURS",
    "COLOUR_RGB",
    "DigitsDataset",
    "GaussianMixture",
    "LabelledImages",
    "MNIST_KINDS",
    "MNIST_MD5",
    "MNIST_URLS",
    "SHAPES",
    "SHAPE_CLASSES",
    "SIZES",
    "ShapesDataset",
    "TOY_DATASETS",
    "eight_gaussians",
    "load_mnist",
    "make_toy",
    "shape_mask",
    "read_idx",
    "three_gaussians",
]
