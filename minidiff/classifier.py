"""A small image classifier per dataset, the feature extractor behind `minidiff.metrics.ImageMetric`.

A few conv layers and a global average pool turn an image into a feature vector; a linear
layer turns that into class logits:

    x (B, C, H, W) ─► [conv-BN-ReLU ×2, max-pool] ×2 ─► conv-BN-ReLU ×2 ─► mean over H, W ─► f (B, D) ─► logits (B, K)

`features(x)` returns f, the penultimate layer. The metrics compare the distribution of f over
generated samples with its distribution over real test images (a Fréchet distance), and
count which classes the logits assign the samples to.

Shipped weights (safetensors, no pickle) live in `minidiff/weights/`, listed in
`classifiers.json` with their sha256, recipe, training time and test accuracy. They are
trained with the recipes below:

    python -m minidiff.classifier train digits      # or shapes; writes into minidiff/weights/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_choice
from minidiff.checkpoint import write_atomic
from minidiff.data.images import DigitsDataset, LabelledImages, ShapesDataset
from minidiff.pretrained import (
    WEIGHTS_DIR,
    WeightsError,
    machine_description,
    read_manifest,
    record_in_manifest,
    sha256_of,
    verified_bytes,
)

MANIFEST = "classifiers.json"


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64)  # channels per resolution; the last is the feature size D


class Classifier(nn.Module):
    """A small CNN: two 3×3 conv-BatchNorm-ReLU per resolution, halving the resolution between
    them, then a global average pool (features) and a linear layer (logits)."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for i, c in enumerate(config.widths):
            layers += [_conv_bn_relu(c_in, c), _conv_bn_relu(c, c)]
            if i < len(config.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer: (B, C, H, W) images in [-1, 1] → (B, D) features."""
        return self.body(x).mean(dim=(2, 3))  # (B, D) global average pool

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [-1, 1] → (B, K) class logits."""
        return self.head(self.features(x))


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


@dataclass(frozen=True)
class ClassifierRecipe:
    """How the shipped classifier of one dataset is trained."""

    dataset: str  # "digits" or "shapes"
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
}
SHAPES_SPLITS = {"train": (20_000, 0), "test": (2_000, 1)}  # split → (n, seed) of ShapesDataset


def classifier_data(dataset: str, split: str) -> LabelledImages:
    """The images a classifier trains ("train") or is scored on ("test"), at its recipe's size.

    digits: DigitsDataset's fixed train / test split. shapes: 20,000 images of seed 0 / 2,000
    of seed 1 (the diffusion recipe trains on seed 0, so seed 1 is held out from both).
    """
    check_choice("dataset", dataset, tuple(CLASSIFIER_RECIPES))
    check_choice("split", split, ("train", "test"))
    size = CLASSIFIER_RECIPES[dataset].image_size
    if dataset == "digits":
        return DigitsDataset(size, split=split)
    n, seed = SHAPES_SPLITS[split]
    return ShapesDataset(n, size, seed=seed)


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


def train_classifier(recipe: str | ClassifierRecipe, device: str | torch.device = "cpu") -> Classifier:
    """Train a classifier from scratch on its dataset's train split; returns it in eval mode.

    Cross-entropy, AdamW with a one-cycle learning rate, random shifts as augmentation.
    """
    if isinstance(recipe, str):
        check_choice("recipe", recipe, tuple(CLASSIFIER_RECIPES))
        recipe = CLASSIFIER_RECIPES[recipe]
    data = classifier_data(recipe.dataset, "train")
    images, labels = data.images.to(device), data.labels.to(device)
    torch.manual_seed(recipe.seed)  # the same initial weights every time
    model = Classifier(recipe.config).to(device, memory_format=torch.channels_last).train()  # faster convs on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps)
    g = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.steps):
        i = torch.randint(0, len(labels), (recipe.batch_size,), generator=g).to(device)
        x = random_shift(images[i], recipe.max_shift, g).contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
        loss = F.cross_entropy(model(x), labels[i])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


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
    """Write the weights as safetensors into weights_dir and record them in its manifest,
    with their sha256 and `info` (recipe, steps, time, accuracy…). Returns the weights path."""
    data = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    path = Path(weights_dir) / weights_file(dataset)
    write_atomic(path, data)
    record_in_manifest(weights_dir, MANIFEST, path.name, {"sha256": sha256_of(data), **info})
    return path


def load_classifier(dataset: str, weights_dir: str | Path = WEIGHTS_DIR) -> Classifier:
    """The trained classifier of `dataset` ("digits" or "shapes"), on the CPU, in eval mode.

    Reads `classifier_<dataset>.safetensors` from weights_dir and checks its sha256 against
    the folder's manifest before loading it (safetensors: plain tensors, no code is run).
    Raises WeightsError if the file is not in the manifest, is corrupt or was modified.
    """
    check_choice("dataset", dataset, tuple(CLASSIFIER_RECIPES))
    path = Path(weights_dir) / weights_file(dataset)
    data = verified_bytes(path, MANIFEST, f"retrain it with `python -m minidiff.classifier train {dataset}`")
    model = Classifier(CLASSIFIER_RECIPES[dataset].config)
    try:
        model.load_state_dict(safetensors.torch.load(data))
    except (safetensors.SafetensorError, RuntimeError) as error:
        raise WeightsError(f"{path} does not fit the {dataset} classifier's recipe ({error})") from None
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
        "command": f"python -m minidiff.classifier train {dataset}",
    }
    save_classifier(model, dataset, info, weights_dir)
    return manifest_entry(dataset, weights_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.classifier", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a dataset's classifier on the CPU and ship it")
    train.add_argument("dataset", choices=CLASSIFIER_RECIPES)
    train.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (default: the package's)")
    args = parser.parse_args(argv)
    entry = train_and_save(args.dataset, args.out)
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
