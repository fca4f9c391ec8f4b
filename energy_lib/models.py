"""Model registry: name -> constructor, in the style of timm's `create_model`.

Every constructor takes (width, in_channels, image_size, num_classes) so a study can sweep width
over any registered architecture. Models are plain nn.Modules.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def add(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = constructor
        return constructor
    return add


def create_model(name: str, *, width: float = 1.0, in_channels: int = 3, image_size: int = 32,
                 num_classes: int = 10) -> nn.Module:
    return MODELS[name](width=width, in_channels=in_channels, image_size=image_size,
                        num_classes=num_classes)


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier; fractional widths round, never below one channel."""
    return max(1, round(channels * width))


def _conv_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]


@register_model("paper_cnn")
class PaperCNN(nn.Module):
    """The original study's CNN (../shared/reference/README.md): five 3x3 convs in three
    max-pooled stages (32w, 32w | 64w, 64w | 128w), then 256w hidden units. No BN, no dropout.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3, image_size: int = 32,
                 num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3, hidden = (scaled(c, width) for c in (32, 64, 128, 256))
        self.features = nn.Sequential(
            *_conv_relu(in_channels, c1), *_conv_relu(c1, c1), nn.MaxPool2d(2),
            *_conv_relu(c1, c2), *_conv_relu(c2, c2), nn.MaxPool2d(2),
            *_conv_relu(c2, c3), nn.MaxPool2d(2),
        )
        side = image_size // 8  # three 2x2 pools, floor as MaxPool2d does: 32 -> 4, 28 -> 3
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for three 2x2 pools; need >= 8")
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
