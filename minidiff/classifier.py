"""The classifiers behind `minidiff.metrics.ImageMetric`: recipes, training, shipped weights.

The network is `minidiff.nn.classifier.Classifier` (a small CNN; `features(x)` is its
penultimate layer). The metrics compare the distribution of those features over generated
samples with their distribution over real test images (a Fréchet distance), and count which
classes the logits assign the samples to.

Shipped weights (minidiff checkpoints: safetensors, no pickle) live in `minidiff/weights/`,
listed in `classifiers.json` with their sha256, recipe, training time and test accuracy. They
are trained on the training engine (`minidiff.train`, objective `ClassifierObjective`) with
the recipes below:

    python -m minidiff classifier digits      # or shapes; writes into minidiff/weights/
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_choice
from minidiff.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidiff.data.clips import FRAMES, ShapeClips
from minidiff.data.images import SHAPE_CLASSES, DigitsDataset, LabelledImages, ShapesDataset
from minidiff.data.sounds import SoundsDataset
from minidiff.files import (
    WEIGHTS_DIR,
    WeightsError,
    machine_description,
    read_manifest,
    record_in_manifest,
    sha256_of,
    verified_bytes,
)
from minidiff.nn.classifier import Classifier, ClassifierConfig
from minidiff.objective import Objective
from minidiff.train import TrainConfig, train

MANIFEST = "classifiers.json"


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the shipped classifier of one dataset is trained."""

    dataset: str  # "digits", "shapes", "sounds" or "clip_frames"
    image_size: int  # the side of the images it classifies (that of the diffusion recipes)
    config: ClassifierConfig
    steps: int
    batch_size: int = 128
    lr: float = 3e-3  # the peak of a one-cycle schedule (AdamW)
    max_shift: int = 1  # augmentation: random shifts of up to this many pixels
    seed: int = 0


CLASSIFIER_RECIPES: dict[str, ClassifierRecipe] = {
    "digits": ClassifierRecipe("digits", 16, ClassifierConfig(in_channels=1, num_classes=10), steps=400),
    "shapes": ClassifierRecipe("shapes", 32, ClassifierConfig(in_channels=3, num_classes=16), steps=300, max_shift=2),
    # spectrograms: no shifts (a shift in frequency is another pitch)
    "sounds": ClassifierRecipe("sounds", 32, ClassifierConfig(in_channels=1, num_classes=18), steps=300, max_shift=0),
    # the frames of `minidiff.data.clips` (16×16): per-frame quality of a video model
    "clip_frames": ClassifierRecipe("clip_frames", 16, ClassifierConfig(in_channels=3, num_classes=16), steps=300),
}
GENERATED_SPLITS = {"train": (20_000, 0), "test": (2_000, 1)}  # split → (n, seed) of a generated dataset


def classifier_data(dataset: str, split: str) -> LabelledImages:
    """The images a classifier trains ("train") or is scored on ("test"), at its recipe's size.

    digits: DigitsDataset's fixed train / test split. shapes, sounds' spectrograms and the clips' frames
    (`GENERATED_SPLITS`): 20,000 of seed 0 / 2,000 of seed 1 (the diffusion recipes train on seed 0, so seed 1
    is held out from both).
    """
    check_choice("dataset", dataset, tuple(CLASSIFIER_RECIPES))
    check_choice("split", split, ("train", "test"))
    size = CLASSIFIER_RECIPES[dataset].image_size
    if dataset == "digits":
        return DigitsDataset(size, split=split)
    n, seed = GENERATED_SPLITS[split]
    if dataset == "clip_frames":  # every frame of n / FRAMES clips, with its clip's label
        clips = ShapeClips(n // FRAMES, seed=seed)
        return LabelledImages(clips.clips.flatten(0, 1), clips.labels.repeat_interleave(FRAMES), SHAPE_CLASSES)
    return SoundsDataset(n, seed=seed) if dataset == "sounds" else ShapesDataset(n, size, seed=seed)


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Move each image of x (B, C, H, W) by its own random offset of up to max_shift pixels in
    each direction, repeating the border pixels into the space uncovered."""
    B, C, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B, 1), generator=generator).to(x.device)
    rows = (dy + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(W, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(B, device=x.device)[:, None, None, None]
    channel = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]  # (B, C, H, W)


class ClassifierObjective(Objective):
    """Cross-entropy of the logits against the labels, on data (images, labels), each batch
    randomly shifted by up to `max_shift` pixels (augmentation)."""

    def __init__(self, max_shift: int):
        self.max_shift = max_shift

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], generator: torch.Generator) -> Tensor:
        x, y = batch  # (B, C, H, W), (B,)
        x = random_shift(x, self.max_shift, generator).contiguous(memory_format=torch.channels_last)  # faster convs
        return F.cross_entropy(model(x), y)

    def describe(self) -> dict[str, Any]:
        return {"objective": "classifier", "max_shift": self.max_shift}

    def check(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        if len(data) != 2 or data[1].dtype != torch.long:
            raise ValueError("data must be (images, labels), the labels an int64 tensor (N,)")


def training_config(recipe: ClassifierRecipe) -> TrainConfig:
    """The engine's settings for a classifier recipe: AdamW with weight decay 1e-4 and the
    one-cycle learning rate, no clipping, no averaging (the trained weights themselves)."""
    return TrainConfig(
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        warmup=0,
        lr_schedule="one_cycle",
        weight_decay=1e-4,
        grad_clip=None,
        ema_decay=0.0,
        seed=recipe.seed,
        checkpoint_every=recipe.steps,
    )


def train_classifier(recipe: str | ClassifierRecipe, device: str | torch.device = "cpu") -> Classifier:
    """Train a classifier from scratch on its dataset's train split; returns it in eval mode.

    Cross-entropy, AdamW with a one-cycle learning rate, random shifts as augmentation.
    """
    if isinstance(recipe, str):
        check_choice("recipe", recipe, tuple(CLASSIFIER_RECIPES))
        recipe = CLASSIFIER_RECIPES[recipe]
    data = classifier_data(recipe.dataset, "train")
    torch.manual_seed(recipe.seed)  # the same initial weights every time
    model = Classifier(recipe.config).to(device, memory_format=torch.channels_last)  # faster convs on CPU
    objective = ClassifierObjective(recipe.max_shift)
    return train(model, (data.images, data.labels), objective, training_config(recipe)).ema


@torch.no_grad()
def accuracy(model: Classifier, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of images (N, C, H, W) whose most likely class is their label (N,)."""
    device = next(model.parameters()).device
    predicted = torch.cat([model(x.to(device)).argmax(dim=1).cpu() for x in images.split(batch_size)])
    return (predicted == labels.cpu()).float().mean().item()


def weights_file(dataset: str) -> str:
    """The name of a dataset's classifier weights inside a weights folder."""
    return f"classifier_{dataset}.safetensors"


def save_classifier(
    model: Classifier, dataset: str, info: dict[str, Any], weights_dir: str | Path = WEIGHTS_DIR
) -> Path:
    """Write the classifier as a checkpoint into weights_dir and record it in its manifest,
    with its sha256 and `info` (recipe, steps, time, accuracy…). Returns the weights path."""
    path = save_checkpoint(Path(weights_dir) / weights_file(dataset), model, meta={"dataset": dataset})
    record_in_manifest(weights_dir, MANIFEST, path.name, {"sha256": sha256_of(path.read_bytes()), **info})
    return path


def load_classifier(dataset: str, weights_dir: str | Path = WEIGHTS_DIR) -> Classifier:
    """The trained classifier of `dataset` ("digits" or "shapes"), on the CPU, in eval mode.

    Reads `classifier_<dataset>.safetensors` from weights_dir once, checks its sha256 against
    the folder's manifest and loads those bytes (safetensors: plain tensors, no code is run).
    Raises WeightsError if the file is not in the manifest, is corrupt, was modified or does
    not fit the dataset's recipe.
    """
    check_choice("dataset", dataset, tuple(CLASSIFIER_RECIPES))
    path = Path(weights_dir) / weights_file(dataset)
    data = verified_bytes(path, MANIFEST, f"retrain it with `python -m minidiff classifier {dataset}`")
    try:
        model = load_checkpoint(path, model=Classifier(CLASSIFIER_RECIPES[dataset].config), data=data).model
    except CheckpointError as error:
        raise WeightsError(f"{error} (it does not fit the {dataset} classifier's recipe)") from None
    return model.eval()


def manifest_entry(dataset: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """What the manifest of weights_dir records about a dataset's classifier weights."""
    entry = read_manifest(weights_dir, MANIFEST).get(weights_file(dataset))
    if entry is None:
        raise WeightsError(f"{Path(weights_dir) / MANIFEST} lists no {weights_file(dataset)}")
    return entry


def train_and_save(dataset: str, weights_dir: str | Path = WEIGHTS_DIR) -> dict[str, Any]:
    """Train a dataset's recipe on the CPU, score it on the test split, save it; returns the manifest entry."""
    recipe = CLASSIFIER_RECIPES[dataset]
    start = time.perf_counter()
    model = train_classifier(recipe)
    seconds = time.perf_counter() - start
    test = classifier_data(dataset, "test")
    info = {
        "recipe": json.loads(json.dumps(dataclasses.asdict(recipe))),
        "steps": recipe.steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "training_seconds": round(seconds, 1),
        "machine": f"{machine_description()}, {torch.get_num_threads()} torch threads",
        "load_average": round(os.getloadavg()[0], 1),  # other jobs on the machine slow training down
        "test_accuracy": round(accuracy(model, test.images, test.labels), 4),
        "command": f"python -m minidiff classifier {dataset}",
    }
    save_classifier(model, dataset, info, weights_dir)
    return manifest_entry(dataset, weights_dir)
