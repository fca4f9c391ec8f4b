"""The paper CNN, the model registry, and issue #11's models: ResNets with and without
shortcuts, the MLP, timm models, per-model knobs and init schemes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from energy_lib.errors import ConfigError
from energy_lib.training.models import (
    MLP, MODELS, PaperCNN, ResidualBlock, Resized, create_model, initialise, register_model, scaled,
)
from energy_lib.training.settings import (
    UnknownModel, check_model_knobs, check_model_name, model_knobs, model_names,
)


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
    from energy_lib.training import models, settings

    monkeypatch.setattr(models, "MODELS", dict(MODELS))
    monkeypatch.setattr(settings, "MODEL_KNOBS", dict(settings.MODEL_KNOBS))

    @register_model("tiny_test_model")
    def tiny(width, in_channels, image_size, num_classes):
        return nn.Linear(in_channels, num_classes)

    assert models.MODELS["tiny_test_model"] is tiny
    assert create_model("tiny_test_model", in_channels=4, num_classes=3).out_features == 3
    assert settings.model_knobs("tiny_test_model") == ("width",)  # the config checks know it

    @register_model("fixed_test_model", knobs=())  # a model with no knobs, not even width
    def fixed(width, in_channels, image_size, num_classes):
        return nn.Linear(in_channels, num_classes)

    assert settings.model_knobs("fixed_test_model") == ()


def test_every_declared_model_has_a_constructor():
    """settings.MODEL_KNOBS (read without torch) and models.MODELS name the same models."""
    from energy_lib.training import settings

    assert set(settings.MODEL_KNOBS) == set(MODELS)


def test_a_run_configuration_is_checked_without_importing_torch():
    """Validation runs in every cell's kernel and Dask worker before anything is built: a
    fresh process checks a full configuration (model, knobs, init, pruning) without torch."""
    code = ("import sys\n"
            "from energy_lib.config import RunConfig\n"
            "RunConfig(dataset='fashion_mnist', model='resnet18', shortcut=False, width=0.5,\n"
            "          init='xavier', prune='structured', prune_every_epochs=1, epochs=3)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


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


# ---------------------------------------------------------------------------------------------
# Issue #11: ResNets with and without shortcuts, the MLP, timm models, knobs and init schemes

OUR_MODELS = ["paper_cnn", "resnet18", "resnet34", "resnet50", "mlp"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


def one_sgd_step(model: nn.Module, shape, num_classes: int = 10, batch: int = 3) -> float:
    """Train one step; return how far the parameters moved (0 would mean no gradient flowed)."""
    torch.manual_seed(1)
    x, y = torch.randn(batch, *shape), torch.randint(0, num_classes, (batch,))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    logits = model(x)
    assert logits.shape == (batch, num_classes)
    loss = nn.functional.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    return sum(float((p.detach() - b).abs().sum()) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("name", OUR_MODELS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("width", [0.5, 1])
def test_each_model_trains_one_step(name, shape, width):
    model = create_model(name, width=width, in_channels=shape[0], image_size=shape[1],
                         num_classes=10)
    assert one_sgd_step(model, shape) > 0


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_without_shortcuts_trains_one_step(name):
    model = create_model(name, width=0.5, in_channels=1, image_size=28, shortcut=False)
    assert one_sgd_step(model, (1, 28, 28)) > 0


def blocks(model: nn.Module) -> list[ResidualBlock]:
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


@pytest.mark.parametrize("name,count,final_channels", [
    ("resnet18", 8, 512), ("resnet34", 16, 512), ("resnet50", 16, 2048)])
def test_resnet_depths_and_widths(name, count, final_channels):
    model = create_model(name, width=1)
    assert len(blocks(model)) == count
    assert model.fc.in_features == final_channels
    half = create_model(name, width=0.5)
    assert half.fc.in_features == final_channels // 2
    assert convs(half)[0].out_channels == 32  # stem: 64 x width


@pytest.mark.parametrize("size", [28, 32])
def test_resnet_small_image_stem(size):
    """3x3 stride-1 stem and no max-pool, so the last stage still sees 4x4 (not 1x1)."""
    model = create_model("resnet18", width=0.5, in_channels=1, image_size=size)
    stem = convs(model)[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    with torch.no_grad():
        features = model.blocks(model.stem(torch.zeros(1, 1, size, size)))
    assert features.shape[-1] == 4


def test_resnet_large_image_stem():
    model = create_model("resnet18", width=0.25, image_size=96)
    assert convs(model)[0].kernel_size == (7, 7)
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model(torch.randn(2, 3, 96, 96)).shape == (2, 10)


def test_plain_resnet_has_no_shortcut_modules():
    plain = create_model("resnet18", width=0.5, shortcut=False)
    residual = create_model("resnet18", width=0.5)
    assert all(b.shortcut is None for b in blocks(plain))
    assert sum(isinstance(b.shortcut, nn.Sequential) for b in blocks(residual)) == 3  # projections
    one_by_one = [c for c in convs(plain) if c.kernel_size == (1, 1)]
    assert not one_by_one
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in residual.parameters())


def zero_residual_branches(model: nn.Module) -> None:
    """Make every block's residual branch output exactly zero: its last BN's weight and bias."""
    for block in blocks(model):
        last_bn = block.residual[-1]
        assert isinstance(last_bn, nn.BatchNorm2d)
        with torch.no_grad():
            last_bn.weight.zero_()
            last_bn.bias.zero_()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_shortcut_is_the_only_path_when_the_residual_branch_is_zeroed(name):
    """With shortcuts, a block whose residual branch is zero passes relu(shortcut(x)) on, and
    the network still depends on its input; without, the block outputs zero and the logits
    collapse to the classifier's bias whatever the input."""
    torch.manual_seed(0)
    x1, x2 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with_sc = create_model(name, width=0.25).eval()
    without = create_model(name, width=0.25, shortcut=False).eval()
    zero_residual_branches(with_sc)
    zero_residual_branches(without)
    with torch.no_grad():
        stem_out = with_sc.stem(x1)
        block = blocks(with_sc)[0]
        out = block(stem_out)
        assert torch.equal(out, torch.relu(block.shortcut(stem_out)))
        assert out.abs().sum() > 0
        assert not torch.allclose(with_sc(x1), with_sc(x2))

        plain_block = blocks(without)[0]
        assert torch.count_nonzero(plain_block(without.stem(x1))) == 0
        logits1, logits2 = without(x1), without(x2)
        assert torch.equal(logits1, logits2)
        assert torch.equal(logits1, without.fc.bias.expand_as(logits1))


def test_mlp_depth_and_width():
    model = create_model("mlp", width=0.5, in_channels=1, image_size=28, depth=2)
    sizes = [(m.in_features, m.out_features) for m in linears(model)]
    assert sizes == [(784, 256), (256, 256), (256, 10)]
    assert len(linears(create_model("mlp"))) == 4  # default: 3 hidden layers
    assert linears(create_model("mlp", width=1))[0].out_features == MLP.HIDDEN


# --- knobs and names ---------------------------------------------------------------------------

def test_model_names_and_knobs():
    assert set(OUR_MODELS) <= set(model_names())
    assert model_knobs("paper_cnn") == ("width",)
    assert "shortcut" in model_knobs("resnet34") and "depth" in model_knobs("mlp")
    assert model_knobs("timm:anything") == ("resize",)


def test_shortcut_on_paper_cnn_is_refused_with_one_line():
    with pytest.raises(ConfigError) as caught:
        check_model_knobs("paper_cnn", shortcut=False)
    message = str(caught.value)
    assert "shortcut" in message and "paper_cnn" in message and "width" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="depth"):
        create_model("resnet18", depth=4)


@pytest.mark.parametrize("knob,value", [("shortcut", "yes"), ("width", 0), ("width", True)])
def test_bad_knob_values_are_refused(knob, value):
    with pytest.raises(ConfigError, match=knob):
        check_model_knobs("resnet18", **{knob: value})
    check_model_knobs("resnet18", shortcut=False, width=0.5)  # allowed ones pass
    check_model_knobs("mlp", depth=1)


def test_unknown_model_lists_registered_names_and_timm():
    with pytest.raises(UnknownModel) as caught:
        create_model("resnet19")
    message = str(caught.value)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, KeyError)
    assert "resnet18" in message and "paper_cnn" in message and "mlp" in message
    assert "timm:<name>" in message and "energy-lib[timm]" in message
    assert not message.startswith("'")  # printed as a line, not as KeyError's repr


def test_missing_timm_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "energy-lib\[timm\]"'):
        create_model("timm:resnet18")


class _FixedSize(nn.Module):
    """Stands in for a timm model that only takes 224 px images."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 224:
            raise AssertionError(f"Input width ({x.shape[-1]}) doesn't match model (224).")
        return self.head(x.mean(dim=(1, 2, 3))[:, None])


@pytest.fixture
def fake_timm(monkeypatch):
    def create(name, pretrained, num_classes, in_chans, **extra):
        assert pretrained is False
        if extra:
            raise TypeError(f"unexpected {extra}")
        model = _FixedSize(num_classes)
        model.pretrained_cfg = {"input_size": (in_chans, 224, 224)}
        return model
    fake = types.SimpleNamespace(create_model=create, is_model=lambda n: n == "fixed224",
                                 list_models=lambda: ["fixed224", "fixed256"])
    monkeypatch.setattr("energy_lib.training.settings.import_timm", lambda: fake)
    return fake


def test_timm_model_that_cannot_take_the_image_size_is_refused(fake_timm):
    with pytest.raises(ConfigError) as caught:
        create_model("timm:fixed224", in_channels=1, image_size=28)
    message = str(caught.value)
    assert "28 px" in message and "224 px" in message and "resize" in message


def test_timm_resize_wraps_the_model(fake_timm):
    model = create_model("timm:fixed224", in_channels=1, image_size=28, resize=224)
    assert isinstance(model, Resized)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_timm_name_suggests_close_matches(fake_timm):
    with pytest.raises(UnknownModel, match="timm:fixed224"):
        check_model_name("timm:fixed22")


def test_timm_refuses_width(fake_timm):
    with pytest.raises(ConfigError, match="width"):
        create_model("timm:fixed224", width=0.5, image_size=224)
    create_model("timm:fixed224", width=1.0, image_size=224)


needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason='timm is not installed (pip install "energy-lib[timm]")')


@needs_timm
@pytest.mark.parametrize("shape", SHAPES)
def test_real_timm_model_trains_one_step_offline(shape):
    model = create_model("timm:mobilenetv3_small_100", in_channels=shape[0],
                         image_size=shape[1], num_classes=10)
    assert one_sgd_step(model, shape, batch=4) > 0


@needs_timm
def test_real_timm_close_matches():
    with pytest.raises(UnknownModel, match="timm:resnet18"):
        create_model("timm:resnet181")


@needs_timm
def test_real_timm_vit_is_built_at_the_dataset_size():
    """ViT-style models take img_size: built at 32 px rather than refused."""
    model = create_model("timm:vit_tiny_patch16_224", image_size=32, num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


# --- initialisation -------------------------------------------------------------------------

def test_xavier_gives_the_expected_variance():
    torch.manual_seed(0)
    model = initialise(nn.Sequential(nn.Linear(400, 300), nn.Conv2d(64, 128, 3)), "xavier", seed=3)
    linear, conv = model
    assert linear.weight.var().item() == pytest.approx(2 / (400 + 300), rel=0.03)
    fan_in, fan_out = 64 * 9, 128 * 9
    assert conv.weight.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.03)
    assert torch.count_nonzero(linear.bias) == 0
    bound = (6 / (400 + 300)) ** 0.5  # uniform: never beyond the bound
    assert linear.weight.abs().max() <= bound


def test_kaiming_gives_the_expected_variance():
    conv = initialise(nn.Sequential(nn.Conv2d(64, 128, 3)), "kaiming", seed=3)[0]
    assert conv.weight.var().item() == pytest.approx(2 / (64 * 9), rel=0.03)


def test_default_init_keeps_pytorchs_weights_and_xavier_changes_them():
    torch.manual_seed(0)
    model = create_model("resnet18", width=0.25)
    weights = convs(model)[3].weight.detach().clone()
    assert initialise(model, "default") is model
    assert torch.equal(convs(model)[3].weight, weights)
    initialise(model, "xavier", seed=0)
    assert not torch.equal(convs(model)[3].weight, weights)


@pytest.mark.parametrize("name", OUR_MODELS)
def test_init_is_seeded_and_reaches_every_layer(name):
    a = create_model(name, width=0.5, init="xavier", seed=7)
    b = create_model(name, width=0.5, init="xavier", seed=7)
    c = create_model(name, width=0.5, init="xavier", seed=8)
    for (la, lb, lc) in zip(convs(a) + linears(a), convs(b) + linears(b), convs(c) + linears(c)):
        assert torch.equal(la.weight, lb.weight)
        assert not torch.equal(la.weight, lc.weight)
        fan_out = la.weight.shape[0] * la.weight[0, 0].numel()
        fan_in = la.weight[0].numel()
        if la.weight.numel() >= 2000:  # enough samples for a variance check
            assert la.weight.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.15)


def test_unknown_init_scheme_is_refused():
    with pytest.raises(ConfigError, match="init='he'"):
        create_model("mlp", init="he")
