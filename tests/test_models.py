"""The paper CNN and the model registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from energy_lib.models import MODELS, PaperCNN, create_model, register_model, scaled


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("width", [0.5, 1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shape(width, shape, num_classes):
    channels, size, _ = shape
    model = PaperCNN(width=width, in_channels=channels, image_size=size, num_classes=num_classes)
    with torch.no_grad():
        out = model(torch.randn(4, *shape))
    assert out.shape == (4, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("width,expected", [
    (1, (32, 32, 64, 64, 128, 256)),
    (2, (64, 64, 128, 128, 256, 512)),
    (3, (96, 96, 192, 192, 384, 768)),
    (0.5, (16, 16, 32, 32, 64, 128)),
    (0.26, (8, 8, 17, 17, 33, 67)),  # 8.32, 16.64, 33.28, 66.56 round to nearest
    (0.01, (1, 1, 1, 1, 1, 3)),  # never below one channel
])
def test_channel_counts_scale_with_width(width, expected):
    model = PaperCNN(width=width)
    out_channels = tuple(c.out_channels for c in convs(model)) + (linears(model)[0].out_features,)
    assert out_channels == expected
    first, *_ = convs(model)
    assert first.in_channels == 3 and first.kernel_size == (3, 3) and first.padding == (1, 1)


def test_architecture_is_the_papers():
    """Five 3x3 convs in three max-pooled stages, then one hidden layer; no BN, no dropout."""
    model = PaperCNN(width=1, in_channels=1, image_size=28, num_classes=10)
    assert len(convs(model)) == 5
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in model.modules())
    first_linear, last_linear = linears(model)
    assert first_linear.in_features == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3
    assert last_linear.out_features == 10
    assert PaperCNN(width=1).classifier[1].in_features == 128 * 4 * 4  # 32 -> 4


def test_parameter_count_of_width_one_cifar_model():
    model = PaperCNN(width=1)
    expected = (3 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64) \
        + (64 * 128 * 9 + 128) + (128 * 16 * 256 + 256) + (256 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_scaled():
    assert scaled(32, 1.0) == 32 and scaled(32, 0.5) == 16 and scaled(32, 0.001) == 1
    assert scaled(128, 0.26) == 33


def test_registry_create_model():
    assert "paper_cnn" in MODELS
    model = create_model("paper_cnn", width=2, in_channels=1, image_size=28, num_classes=100)
    assert isinstance(model, PaperCNN)
    assert convs(model)[0].in_channels == 1 and convs(model)[0].out_channels == 64
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 100)


def test_registry_unknown_name():
    with pytest.raises(KeyError):
        create_model("no_such_model")


def test_register_model_adds_a_constructor(monkeypatch):
    monkeypatch.setattr("energy_lib.models.MODELS", dict(MODELS))
    from energy_lib import models

    @register_model("tiny_test_model")
    def tiny(width, in_channels, image_size, num_classes):
        return nn.Linear(in_channels, num_classes)

    assert models.MODELS["tiny_test_model"] is tiny
    assert create_model("tiny_test_model", in_channels=4, num_classes=3).out_features == 3


@pytest.mark.parametrize("size", [7, 4, 1])
def test_too_small_image_raises(size):
    with pytest.raises(ValueError, match=f"image_size={size}"):
        PaperCNN(image_size=size)


def test_smallest_allowed_image():
    model = PaperCNN(image_size=8)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_channels_last_forward_matches_contiguous():
    torch.manual_seed(0)
    model = PaperCNN(width=0.5).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-5)
