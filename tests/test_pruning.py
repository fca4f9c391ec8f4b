"""Pruning steps and model statistics (issue #11): masking weights leaves dense MACs alone,
removing channels lowers them; settings that cannot work are refused with one line."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch import nn

from energy_lib.errors import ConfigError
from energy_lib.training.model_stats import (
    count_macs, model_size_bytes, model_stats, nonzero_parameter_count, parameter_count,
    weight_sparsity,
)
from energy_lib.training.models import create_model
from energy_lib.training.pruning import (
    current_sparsity, finalise, prune_step, rebuild_optimizer, should_prune,
)
from energy_lib.training.settings import check_prune_settings

needs_torch_pruning = pytest.mark.skipif(
    importlib.util.find_spec("torch_pruning") is None,
    reason='torch-pruning is not installed (pip install "torch-pruning>=1.5,<2")')


def tiny_net() -> nn.Module:
    """conv 1->4 (3x3, pad 1) on 8x8 = 4*9*64 = 2304 MACs; linear 256->10 = 2560 MACs."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))


def train_step(model: nn.Module, optimizer, shape=(1, 28, 28)) -> None:
    model.train()
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


# --- statistics ---------------------------------------------------------------------------------

def test_macs_of_a_known_net():
    macs = count_macs(tiny_net(), (1, 8, 8))
    assert macs.dense_macs == 2304 + 2560
    assert macs.sparse_macs == macs.dense_macs
    assert macs.layer_macs == {"0": 2304, "3": 2560}


def test_sparse_macs_skip_zero_weights():
    model = tiny_net()
    with torch.no_grad():
        model[0].weight[:2] = 0  # half of the conv's weights
    macs = count_macs(model, (1, 8, 8))
    assert macs.dense_macs == 2304 + 2560
    assert macs.sparse_macs == 2304 // 2 + 2560


def test_layer_macs_add_up_for_a_resnet():
    """Every conv/linear is found under FlopCounterMode's module names (else sparse MACs would
    silently count a layer as dense)."""
    model = create_model("resnet18", width=0.25)
    macs = count_macs(model, (3, 32, 32))
    assert all(v > 0 for v in macs.layer_macs.values())
    assert sum(macs.layer_macs.values()) == macs.dense_macs


def test_counting_leaves_batchnorm_statistics_and_mode_alone():
    model = create_model("resnet18", width=0.25).train()
    mean = model.stem[1].running_mean.clone()
    count_macs(model, (3, 32, 32))
    assert model.training and torch.equal(model.stem[1].running_mean, mean)


def test_counts_and_size():
    model = create_model("resnet18", width=0.25)
    params = sum(p.numel() for p in model.parameters())
    assert parameter_count(model) == params
    nonzero = nonzero_parameter_count(model)
    with torch.no_grad():
        model.fc.weight[0] = 0  # zero one row of the classifier (128 weights at width 0.25)
    assert nonzero_parameter_count(model) == nonzero - model.fc.in_features
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert model_size_bytes(model) == 4 * params + buffers
    stats = model_stats(model, (3, 32, 32))
    assert stats["parameters"] == params
    assert stats["dense_macs_per_image"] > stats["sparse_macs_per_image"] > 0


# --- settings -----------------------------------------------------------------------------------

GOOD = dict(amount=0.2, every_epochs=5, target_sparsity=0.5)


@pytest.mark.parametrize("field,value", [
    ("amount", 0), ("amount", 1), ("amount", -0.1), ("amount", 1.5), ("amount", True),
    ("every_epochs", 0), ("every_epochs", 1.5), ("every_epochs", -2),
    ("target_sparsity", 0), ("target_sparsity", 1), ("target_sparsity", 1.2),
])
def test_bad_prune_settings_are_refused(field, value):
    name = {"amount": "prune_amount", "every_epochs": "prune_every_epochs",
            "target_sparsity": "prune_target_sparsity"}[field]
    with pytest.raises(ConfigError) as caught:
        check_prune_settings("unstructured", **{**GOOD, field: value})
    assert str(caught.value).startswith(f"{name}={value!r}") and "\n" not in str(caught.value)


def test_prune_settings_that_work_pass():
    check_prune_settings("structured", **GOOD)
    check_prune_settings("unstructured", **GOOD, epochs=10)
    check_prune_settings("none", amount=5, every_epochs=0, target_sparsity=3)  # unused


def test_target_already_reached_and_unknown_method():
    with pytest.raises(ConfigError, match="already reached"):
        check_prune_settings("unstructured", **{**GOOD, "target_sparsity": 0.3},
                             current_sparsity=0.4)
    with pytest.raises(ConfigError, match="prune='magnitude'"):
        check_prune_settings("magnitude", **GOOD)
    with pytest.raises(ConfigError, match="prune_every_epochs=5 with epochs=5"):
        check_prune_settings("unstructured", **GOOD, epochs=5)


def test_should_prune():
    assert [e for e in range(1, 13) if should_prune(e, 5)] == [5, 10]


# --- unstructured -------------------------------------------------------------------------------

def test_unstructured_reaches_the_target_while_dense_macs_stay():
    torch.manual_seed(0)
    model = create_model("resnet18", width=0.5, in_channels=1, image_size=28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(2, 1, 28, 28)
    dense = count_macs(model, (1, 28, 28)).dense_macs
    first = prune_step(model, "unstructured", 0.3, 0.6, x)
    assert first.sparsity_before == 0 and first.sparsity_after == pytest.approx(0.3, abs=1e-5)
    assert not first.shapes_changed
    steps = [first]
    while not steps[-1].reached_target:
        train_step(model, optimizer)  # the same optimiser keeps working between steps
        steps.append(prune_step(model, "unstructured", 0.3, 0.6, x))
        assert len(steps) < 10
    assert len(steps) == 3  # 0.3, 0.51, then capped at 0.6 (0.657 uncapped)
    assert weight_sparsity(model) == pytest.approx(0.6, abs=1e-5)
    after = count_macs(model, (1, 28, 28))
    assert after.dense_macs == dense
    assert after.sparse_macs < 0.7 * dense
    assert prune_step(model, "unstructured", 0.3, 0.6, x).removed == 0  # nothing past the target


def test_finalise_bakes_the_masks_in_and_keeps_the_optimizer():
    torch.manual_seed(0)
    model = create_model("mlp", width=0.25, in_channels=1, image_size=28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    prune_step(model, "unstructured", 0.5, 0.5, torch.zeros(1))
    train_step(model, optimizer)
    assert weight_sparsity(model) == pytest.approx(0.5, abs=1e-5)  # masks hold during training
    params_in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    finalise(model)
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())
    assert not any(name.endswith("_mask") for name, _ in model.named_buffers())
    assert weight_sparsity(model) == pytest.approx(0.5, abs=1e-5)
    assert {id(p) for p in model.parameters()} == params_in_optimizer
    assert model_size_bytes(model) == 4 * parameter_count(model)


# --- structured ---------------------------------------------------------------------------------

@needs_torch_pruning
@pytest.mark.parametrize("name,shortcut", [("resnet18", True), ("resnet18", False),
                                           ("paper_cnn", None), ("resnet50", True)])
def test_structured_lowers_dense_macs_and_layer_shapes(name, shortcut):
    torch.manual_seed(0)
    knobs = {} if shortcut is None else {"shortcut": shortcut}
    model = create_model(name, width=0.5, in_channels=1, image_size=28, **knobs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(2, 1, 28, 28)
    before = model_stats(model, (1, 28, 28))
    channels = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    step = prune_step(model, "structured", 0.2, 0.5, x)
    assert step.shapes_changed and step.removed > 0 and step.model is model
    after = model_stats(model, (1, 28, 28))
    assert after["dense_macs_per_image"] < 0.85 * before["dense_macs_per_image"]
    assert after["parameters"] == before["parameters"] - step.removed
    assert step.sparsity_after == pytest.approx(1 - after["parameters"] / before["parameters"])
    shrunk = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(s <= c for s, c in zip(shrunk, channels)) and sum(shrunk) < 0.85 * sum(channels)
    assert model(x).shape == (2, 10)  # the classifier keeps its classes
    optimizer = rebuild_optimizer(optimizer, model)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4
    train_step(model, optimizer)


@needs_torch_pruning
def test_structured_steps_stop_at_the_target():
    torch.manual_seed(0)
    model = create_model("paper_cnn", width=0.5, in_channels=1, image_size=28)
    x = torch.randn(2, 1, 28, 28)
    sparsities = []
    for _ in range(8):
        step = prune_step(model, "structured", 0.3, 0.4, x)
        sparsities.append(step.sparsity_after)
        if step.reached_target:
            break
    assert step.reached_target and 0.4 <= current_sparsity(model, "structured") < 0.5
    assert sparsities == sorted(sparsities)
    again = prune_step(model, "structured", 0.3, 0.4, x)
    assert again.removed == 0 and not again.shapes_changed


@needs_torch_pruning
def test_structured_keeps_train_mode():
    model = create_model("resnet18", width=0.25, in_channels=1, image_size=28).train()
    prune_step(model, "structured", 0.2, 0.5, torch.randn(2, 1, 28, 28))
    assert model.training


def test_structured_without_torch_pruning_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    model = create_model("paper_cnn", width=0.25)
    with pytest.raises(ConfigError, match="torch-pruning"):
        prune_step(model, "structured", 0.2, 0.5, torch.randn(1, 3, 32, 32))


def test_structured_after_unstructured_is_refused():
    model = create_model("paper_cnn", width=0.25)
    prune_step(model, "unstructured", 0.2, 0.5, torch.zeros(1))
    with pytest.raises(ConfigError, match="finalise"):
        prune_step(model, "structured", 0.2, 0.5, torch.randn(1, 3, 32, 32))


def test_unstructured_prunes_a_channels_last_model_like_a_contiguous_one():
    """The training loop moves models to channels_last by default; torch's global pruning
    flattens weights with .view(-1), which a channels_last conv weight refuses."""
    masks = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = create_model("resnet18", width=0.25, in_channels=1, image_size=28)
        model = model.to(memory_format=memory_format)
        optimizer = torch.optim.Adam(model.parameters())
        x = torch.randn(2, 1, 28, 28).to(memory_format=memory_format)
        for _ in range(2):  # a second step meets the masks of the first
            step = prune_step(model, "unstructured", 0.3, 0.6, x)
            train_step(model, optimizer)
        assert step.sparsity_after == pytest.approx(0.51, abs=1e-4)
        masks.append([m.weight_mask.clone() for m in model.modules() if hasattr(m, "weight_mask")])
    assert all(torch.equal(a, b) for a, b in zip(*masks)) and len(masks[0]) > 10
