"""Small image datasets that need no download: scikit-learn's handwritten digits and
procedural coloured shapes with captions.

Every dataset here holds all its images in memory, in [-1, 1] (the range the noise of a
diffusion model lives in), so a lesson can take random batches straight from `.images`
without a DataLoader. `to_display` is the inverse transform, back to [0, 1] for matplotlib.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from minidiff._checks import check_choice
from minidiff.data.photo import to_display

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
COLOUR_RGB = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.10, 0.72, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.82, 0.08),
}  # saturated, so they stand out from the greyish backgrounds
CAPTION_WORDS = ("a", *SIZES, *COLOURS, *SHAPES)  # every word of the captions
SHAPE_CLASSES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)  # label = shape × colour

DIGITS_TEST_FRACTION = 0.2  # share of scikit-learn's digits held out as the test split


def class_captions(labels: Tensor) -> list[str]:
    """A shapes caption for each class label (N,), sizes alternating: "a small red circle",
    "a large green circle", … — prompts whose wanted class is known, to score text models."""
    return [f"a {SIZES[i % 2]} {SHAPE_CLASSES[k]}" for i, k in enumerate(labels.tolist())]


MASK_SATURATION = 0.4  # the shapes' colours have saturation > 0.5, the greyish backgrounds < 0.3


def shape_mask(images: Tensor) -> Tensor:
    """Where the shape is in shapes images (B, 3, H, W) in [-1, 1]: (B, 1, H, W) bool, the pixels whose
    saturation max(r, g, b) - min(r, g, b) (in [0, 1]) exceeds MASK_SATURATION. The shapes are drawn in
    saturated colours on greyish backgrounds, so this finds a shape in a real image or a sample alike:
    the control image of a ControlNet (`minidiff.nn.controlnet`) and the measure of how well a sample obeys one."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    rgb = (images + 1) / 2  # (B, 3, H, W) in [0, 1]
    return (rgb.amax(1, keepdim=True) - rgb.amin(1, keepdim=True)) > MASK_SATURATION


class LabelledImages(Dataset):
    """Images held in memory with an integer class label each.

    images: (N, C, H, W) float32 in [-1, 1]; labels: (N,) int64; class_names[label] names a class.
    Items are (image (C, H, W), label int). `to_display` is the inverse transform for display:
    [-1, 1] (B, C, H, W) → [0, 1] (B, H, W, C).
    """

    to_display = staticmethod(to_display)

    def __init__(self, images: Tensor, labels: Tensor, class_names: tuple[str, ...]):
        self.images = images  # (N, C, H, W)
        self.labels = labels  # (N,)
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


class DigitsDataset(LabelledImages):
    """scikit-learn's 1,797 real handwritten digits (8×8, grey levels 0–16, labels 0–9),
    upsampled bilinearly to size×size, one channel, in [-1, 1].

    split=None keeps all of them; "train" / "test" give a fixed random split (the same on
    every machine, DIGITS_TEST_FRACTION held out), so a classifier can be scored on digits
    it never saw.
    """

    def __init__(self, size: int = 16, split: str | None = None):
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer >= 8 (the digits are 8×8), got {size!r}")
        check_choice("split", split, (None, "train", "test"))
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images).float()[:, None] / 16  # (1797, 1, 8, 8) in [0, 1]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (1797, 1, size, size)
        labels = torch.from_numpy(digits.target).long()  # (1797,)
        keep = _split_indices(len(labels), split)
        super().__init__(x[keep] * 2 - 1, labels[keep], tuple("0123456789"))


def _split_indices(n: int, split: str | None) -> Tensor:
    """Sorted indices of `split` in a fixed random permutation of range(n) (seed 0)."""
    if split is None:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = round(n * DIGITS_TEST_FRACTION)
    return (order[:n_test] if split == "test" else order[n_test:]).sort().values


class ShapesDataset(LabelledImages):
    """n procedural RGB images: one shape (SHAPES) in one colour (COLOURS), small or large,
    at a random position and slight rotation, on a random greyish plain or gradient
    background, anti-aliased. The same seed gives identical tensors.

    Label: the shape × colour combination, 16 classes named in `class_names` (SHAPE_CLASSES),
    label = SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour). Both parts are visible
    at a glance, so class-conditional samples (and guidance) are easy to judge; the size is
    left free. Captions ("a small red circle") also name the size: text can say more than a label.
    Items are (image (3, size, size), label int, caption str).
    """

    def __init__(self, n: int = 10_000, size: int = 32, seed: int = 0):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not isinstance(size, int) or size < 32:
            raise ValueError(f"size must be an integer >= 32 (smaller shapes are unrecognisable), got {size!r}")
        g = torch.Generator().manual_seed(seed)
        scenes = _sample_scenes(n, size, g)
        images = torch.empty(n, 3, size, size)
        for i in range(0, n, 2048):  # in chunks, to bound memory
            images[i : i + 2048] = _draw({k: v[i : i + 2048] for k, v in scenes.items()}, size) * 2 - 1
        shape, colour, large = scenes["shape"], scenes["colour"], scenes["large"]
        super().__init__(images, shape * len(COLOURS) + colour, SHAPE_CLASSES)
        self.captions = [
            f"a {SIZES[l]} {COLOURS[c]} {SHAPES[s]}"
            for s, c, l in zip(shape.tolist(), colour.tolist(), large.tolist(), strict=True)
        ]

    def __getitem__(self, i: int) -> tuple[Tensor, int, str]:
        return self.images[i], int(self.labels[i]), self.captions[i]


def _uniform(lo: float, hi: float, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _sample_scenes(n: int, size: int, g: torch.Generator) -> dict[str, Tensor]:
    """Random parameters of n scenes; lengths in pixels, colours in [0, 1]."""
    large = torch.randint(0, 2, (n,), generator=g)
    radius = size * torch.where(large.bool(), _uniform(0.25, 0.31, (n,), g), _uniform(0.13, 0.17, (n,), g))
    margin = 1.2 * radius + 1  # every shape fits in a circle of 1.2 × radius
    base = _uniform(0.1, 0.9, (n, 1), g)  # background brightness at one end of the gradient…
    other = (base + _uniform(-0.3, 0.3, (n, 1), g)).clamp(0.05, 0.95)  # …and at the other
    return {
        "shape": torch.randint(0, len(SHAPES), (n,), generator=g),
        "colour": torch.randint(0, len(COLOURS), (n,), generator=g),
        "large": large,
        "radius": radius,
        "centre": margin[:, None] + (size - 2 * margin[:, None]) * torch.rand(n, 2, generator=g),  # (n, 2) as x, y
        "angle": _uniform(-math.pi / 9, math.pi / 9, (n,), g),
        "brightness": _uniform(0.85, 1.0, (n, 1), g),  # of the shape's colour
        "bg_start": base * _uniform(0.85, 1.15, (n, 3), g),  # a faint tint keeps backgrounds greyish
        "bg_end": other * _uniform(0.85, 1.15, (n, 3), g),
        "bg_angle": _uniform(0, 2 * math.pi, (n,), g),
    }


def _draw(scenes: dict[str, Tensor], size: int) -> Tensor:
    """Render scenes into images (B, 3, size, size) in [0, 1]."""
    pos = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    x = pos[None, None, :] - scenes["centre"][:, 0, None, None]  # (B, 1, W)
    y = pos[None, :, None] - scenes["centre"][:, 1, None, None]  # (B, H, 1); y points down
    cos, sin = scenes["angle"].cos()[:, None, None], scenes["angle"].sin()[:, None, None]
    u, v = cos * x + sin * y, cos * y - sin * x  # (B, H, W) in the shape's rotated frame
    radius = scenes["radius"][:, None, None]
    sdf = torch.empty_like(u)  # signed distance to the shape's edge, in pixels, < 0 inside
    for k, shape_sdf in enumerate((_circle, _square, _triangle, _star)):
        pick = scenes["shape"] == k
        sdf[pick] = shape_sdf(u[pick], v[pick], radius[pick])
    coverage = (0.5 - sdf).clamp(0, 1)[:, None]  # (B, 1, H, W): ~1 pixel of anti-aliasing
    palette = torch.tensor([COLOUR_RGB[c] for c in COLOURS])  # (len(COLOURS), 3)
    fill = (palette[scenes["colour"]] * scenes["brightness"])[:, :, None, None]  # (B, 3, 1, 1)
    return _background(scenes, pos) * (1 - coverage) + fill * coverage


def _background(scenes: dict[str, Tensor], pos: Tensor) -> Tensor:
    """Linear gradients from bg_start to bg_end along bg_angle, (B, 3, H, W)."""
    angle = scenes["bg_angle"][:, None, None]
    c = (pos - pos.mean()) / len(pos)  # (size,) in [-0.5, 0.5]
    t = (c[None, None, :] * angle.cos() + c[None, :, None] * angle.sin() + 0.5).clamp(0, 1)  # (B, H, W)
    start, end = scenes["bg_start"][:, :, None, None], scenes["bg_end"][:, :, None, None]  # (B, 3, 1, 1)
    return (start + (end - start) * t[:, None]).clamp(0, 1)


# Signed distances (pixels, < 0 inside) of shapes centred at the origin, upright, sized by radius r.
# u, v: coordinates (…, H, W); r broadcasts against them.


def _circle(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    return torch.hypot(u, v) - r


def _square(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    half = 0.85 * r  # corners at 1.2 r
    du, dv = u.abs() - half, v.abs() - half
    return torch.hypot(du.clamp(min=0), dv.clamp(min=0)) + torch.maximum(du, dv).clamp(max=0)


def _triangle(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Equilateral, pointing up, circumradius 1.2 r: the furthest of its three edge lines."""
    return torch.maximum(v, math.sqrt(3) / 2 * u.abs() - v / 2) - 0.6 * r


def _star(u: Tensor, v: Tensor, r: Tensor) -> Tensor:
    """Five points, tips at 1.2 r, inner corners at 0.5 r. Folding the angle maps every point
    onto one half-spike, the edge from a tip A to an inner corner B."""
    sector = 2 * math.pi / 5
    phi = torch.atan2(u, -v)  # angle from "up", where the first tip is
    phi = (phi - sector * torch.round(phi / sector)).abs()  # in [0, π/5]
    rho = torch.hypot(u, v)
    qx, qy = rho * phi.cos() - 1.2 * r, rho * phi.sin()  # point relative to the tip A = (1.2 r, 0)
    ex, ey = 0.5 * r * math.cos(sector / 2) - 1.2 * r, 0.5 * r * math.sin(sector / 2)  # edge vector B - A
    t = ((qx * ex + qy * ey) / (ex**2 + ey**2)).clamp(0, 1)
    distance = torch.hypot(qx - t * ex, qy - t * ey)
    inside = ex * qy - ey * qx > 0  # on the origin's side of the edge
    return torch.where(inside, -distance, distance)
