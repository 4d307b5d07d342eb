"""A small image classifier: the feature extractor behind `minidiff.metrics.ImageMetric`.

A few conv layers and a global average pool turn an image into a feature vector; a linear
layer turns that into class logits:

    x (B, C, H, W) ─► [conv-BN-ReLU ×2, max-pool] ×2 ─► conv-BN-ReLU ×2 ─► mean over H, W ─► f (B, D) ─► logits (B, K)

`features(x)` returns f, the penultimate layer. Its training recipes, shipped weights and
loader are in `minidiff.classifier`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from minidiff._checks import check_fields


@dataclass(frozen=True)
class ClassifierConfig:
    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64)  # channels per resolution; the last is the feature size D

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "widths", tuple(self.widths))  # a list when read back from JSON


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
