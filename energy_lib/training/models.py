"""Model registry: name -> constructor, in the style of timm's `create_model`.

Every constructor takes (width, in_channels, image_size, num_classes) so a study can sweep width
over any registered architecture; each model also declares the extra knobs it has (`shortcut`,
`depth`, ...) so a run that sets a knob on a model without it is refused with one line before
any data is loaded. Models are plain nn.Modules.

`timm:<name>` builds any timm model (optional extra `energy-lib[timm]`), never pretrained: this
study trains from scratch and runs offline. A timm model that cannot take the dataset's image
size is refused with a ConfigError that names the model's native size and the `resize` knob;
with `resize = N` the model is wrapped in `Resized`, which interpolates each batch to N x N on
the device (the extra compute is part of the model, so it is metered and counted in MACs).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError
from . import settings
from .settings import TIMM_PREFIX, check_init_scheme, check_model_knobs, check_model_name

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, knobs: tuple[str, ...] | None = None):
    """Add a constructor under `name`. The package's own models declare their knobs in
    settings.MODEL_KNOBS; a new name takes `knobs` (default: `width`, which every model of ours
    scales), the keyword arguments beyond the four every constructor takes that a run may set."""
    def add(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = constructor
        if knobs is not None or name not in settings.MODEL_KNOBS:
            settings.MODEL_KNOBS[name] = ("width",) if knobs is None else tuple(knobs)
        return constructor
    return add


def create_model(name: str, *, width: float = 1.0, in_channels: int = 3, image_size: int = 32,
                 num_classes: int = 10, init: str = "default", seed: int | None = None,
                 **knobs: Any) -> nn.Module:
    """Build `name` for the dataset's channels, image size and classes, then apply `init`.

    Raises UnknownModel (a ConfigError and KeyError) for an unknown name and ConfigError for a
    knob the model does not have or an image size it cannot take.
    """
    check_model_knobs(name, width=width, **knobs)
    check_init_scheme(init)
    if name.startswith(TIMM_PREFIX):
        model = _create_timm(name[len(TIMM_PREFIX):], in_channels=in_channels,
                             image_size=image_size, num_classes=num_classes, **knobs)
    else:
        model = MODELS[name](width=width, in_channels=in_channels, image_size=image_size,
                             num_classes=num_classes, **knobs)
    return initialise(model, init, seed=seed)


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier; fractional widths round, never below one channel."""
    return max(1, round(channels * width))


# --------------------------------------------------------------------------------------------
# Initialisation

def initialise(model: nn.Module, scheme: str = "default", seed: int | None = None) -> nn.Module:
    """Re-initialise every conv and linear weight in place (biases to zero) and return the model.

    "default" keeps PyTorch's (or timm's) own initialisation. "xavier" is Glorot-uniform,
    variance 2/(fan_in+fan_out), as seed 002 used; "kaiming" is He-normal for ReLU nets,
    variance 2/fan_in. Norm layers keep weight 1, bias 0. With `seed`, a private generator makes
    the weights independent of the global RNG state.
    """
    check_init_scheme(scheme)
    if scheme == "default":
        return model
    generator = None
    if seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(seed)
    for module in model.modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        weight = module.weight
        with torch.no_grad():
            # Draw on the CPU (a CPU generator) and copy, so any device gives the same weights.
            fresh = torch.empty(weight.shape, dtype=weight.dtype)
            if scheme == "xavier":
                nn.init.xavier_uniform_(fresh, generator=generator)
            else:
                nn.init.kaiming_normal_(fresh, mode="fan_in", nonlinearity="relu",
                                        generator=generator)
            weight.copy_(fresh)
            if module.bias is not None:
                module.bias.zero_()
    return model


# --------------------------------------------------------------------------------------------
# The original study's CNN

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


# --------------------------------------------------------------------------------------------
# ResNets for small images, with and without shortcuts (seed 002's plain-net comparison)

def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out)]


class ResidualBlock(nn.Module):
    """out = relu(residual(x) + shortcut(x)); with `shortcut=False`, out = relu(residual(x)).

    `residual` ends in a BatchNorm (no ReLU) so zeroing its last BN isolates the shortcut path;
    `shortcut` is None when off, so a plain net has neither identity nor projection.
    """

    def __init__(self, residual: nn.Sequential, c_in: int, c_out: int, stride: int,
                 shortcut: bool) -> None:
        super().__init__()
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if shortcut:
            projection = stride != 1 or c_in != c_out
            self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride)) if projection \
                else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def basic_block(c_in: int, planes: int, stride: int, shortcut: bool) -> ResidualBlock:
    residual = nn.Sequential(*_conv_bn(c_in, planes, 3, stride), nn.ReLU(inplace=True),
                             *_conv_bn(planes, planes, 3))
    return ResidualBlock(residual, c_in, planes, stride, shortcut)


def bottleneck_block(c_in: int, planes: int, stride: int, shortcut: bool) -> ResidualBlock:
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand to 4 x planes."""
    c_out = 4 * planes
    residual = nn.Sequential(*_conv_bn(c_in, planes, 1), nn.ReLU(inplace=True),
                             *_conv_bn(planes, planes, 3, stride), nn.ReLU(inplace=True),
                             *_conv_bn(planes, c_out, 1))
    return ResidualBlock(residual, c_in, c_out, stride, shortcut)


class ResNet(nn.Module):
    """ResNet with stage widths (64, 128, 256, 512) x width.

    Small images (<= 64 px, e.g. 28 and 32) get a 3x3 stride-1 stem and no max-pool, as the
    CIFAR ResNets do, so a 32 px image reaches the last stage at 4x4 rather than 1x1. Larger
    images get ImageNet's 7x7 stride-2 stem and max-pool. Global average pooling makes any size
    >= 1 px after the stem work.
    """

    SMALL_IMAGE_MAX = 64

    def __init__(self, block: Callable[..., ResidualBlock], expansion: int,
                 blocks_per_stage: tuple[int, ...], width: float = 1.0, in_channels: int = 3,
                 image_size: int = 32, num_classes: int = 10, shortcut: bool = True) -> None:
        super().__init__()
        stem_c = scaled(64, width)
        if image_size <= self.SMALL_IMAGE_MAX:
            self.stem = nn.Sequential(*_conv_bn(in_channels, stem_c, 3), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(*_conv_bn(in_channels, stem_c, 7, 2), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        stages, c_in = [], stem_c
        for i, count in enumerate(blocks_per_stage):
            planes = scaled(64 * 2 ** i, width)
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(block(c_in, planes, stride, shortcut))
                c_in = planes * expansion
        self.blocks = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))


@register_model("resnet18")
def resnet18(width: float = 1.0, in_channels: int = 3, image_size: int = 32,
             num_classes: int = 10, shortcut: bool = True) -> ResNet:
    return ResNet(basic_block, 1, (2, 2, 2, 2), width, in_channels, image_size, num_classes,
                  shortcut)


@register_model("resnet34")
def resnet34(width: float = 1.0, in_channels: int = 3, image_size: int = 32,
             num_classes: int = 10, shortcut: bool = True) -> ResNet:
    return ResNet(basic_block, 1, (3, 4, 6, 3), width, in_channels, image_size, num_classes,
                  shortcut)


@register_model("resnet50")
def resnet50(width: float = 1.0, in_channels: int = 3, image_size: int = 32,
             num_classes: int = 10, shortcut: bool = True) -> ResNet:
    return ResNet(bottleneck_block, 4, (3, 4, 6, 3), width, in_channels, image_size,
                  num_classes, shortcut)


# --------------------------------------------------------------------------------------------
# Feed-forward baseline

@register_model("mlp")
class MLP(nn.Module):
    """Seed 002's feed-forward baseline: flatten -> `depth` hidden layers of 512 x width units
    with ReLU -> classes. depth=3 is the "3-layer FFNN"."""

    HIDDEN = 512

    def __init__(self, width: float = 1.0, in_channels: int = 3, image_size: int = 32,
                 num_classes: int = 10, depth: int = 3) -> None:
        super().__init__()
        hidden = scaled(self.HIDDEN, width)
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_channels * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(size, hidden), nn.ReLU(inplace=True)]
            size = hidden
        layers.append(nn.Linear(size, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# --------------------------------------------------------------------------------------------
# timm models

class Resized(nn.Module):
    """Interpolate each batch to `size` x `size` before `model`: lets a fixed-size timm model
    (e.g. a ViT at 224 px) train on 28 or 32 px data, on the device, inside the metered model."""

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return self.model(x)


def _accepts(model: nn.Module, in_channels: int, image_size: int) -> str | None:
    """Run one zero image through the model in eval mode; the error text, or None if it works."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as error:  # any shape/size complaint from the model's forward
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        model.train(was_training)
    return None


def _create_timm(timm_name: str, *, in_channels: int, image_size: int, num_classes: int,
                 resize: int | None = None) -> nn.Module:
    """timm.create_model(pretrained=False) for the dataset; see the module docstring for sizes.

    A model whose constructor takes `img_size` (ViT, DeiT, Swin, ...) is first built at the
    dataset's size; a model that still cannot run one image at that size is refused.
    """
    check_model_name(TIMM_PREFIX + timm_name)
    timm = settings.import_timm()
    size = resize or image_size

    def build(**extra: Any) -> nn.Module:
        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels, **extra)

    model = build()
    problem = _accepts(model, in_channels, size)
    if problem is not None:
        try:
            sized = build(img_size=size)
        except TypeError:  # the constructor has no img_size argument
            sized = None
        if sized is not None and _accepts(sized, in_channels, size) is None:
            model, problem = sized, None
    if problem is not None:
        native = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
        native_px = f"; its native input is {native[-1]} px" if native else ""
        raise ConfigError(
            f"model='timm:{timm_name}' cannot take {size} px images{native_px} ({problem}); "
            f"set resize = <pixels> to interpolate each batch on the device")
    return Resized(model, resize) if resize else model
