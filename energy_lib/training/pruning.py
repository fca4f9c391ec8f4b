"""Pruning during training (issue #11): `prune = "none" | "unstructured" | "structured"`.

- unstructured: global magnitude pruning of all conv/linear weights with
  `torch.nn.utils.prune` (masks; the layers keep their shapes, so dense MACs do not change).
  Sparsity = fraction of zero conv/linear weights. The parameters stay the same objects, so the
  optimiser keeps working; call `finalise` at the end to bake the masks into the weights.
- structured: channel pruning with Torch-Pruning's dependency graph (a dependency: pure
  Python, needs only torch and numpy), which removes whole channels from every coupled layer
  (convs, BNs, residual adds, the next layer's inputs), so the layers really shrink and dense
  MACs fall. Sparsity = fraction of the
  original parameter count removed. The layers get new, smaller parameters: rebuild the
  optimiser after every structured step (`rebuild_optimizer`).

A step prunes `amount` of what is left (weights, or each layer's channels), never past the
target; `prune_step` returns a PruneStep saying what changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import ConfigError
from .settings import PRUNE_METHODS
from .model_stats import parameter_count, prunable_layers, weight_sparsity

PRUNING_INSTALL = 'pip install "torch-pruning>=1.5,<2"'  # a dependency; missing only in partial installs
_ORIGINAL_PARAMETERS = "energy_original_parameters"  # set on the model by the first structured step


def should_prune(epoch: int, every_epochs: int) -> bool:
    """Prune after completed epoch `epoch` (1-based) every `every_epochs` epochs."""
    return epoch >= 1 and epoch % every_epochs == 0


@dataclass(frozen=True)
class PruneStep:
    """What one pruning step did. `model` is the model to train on (the same object: both
    methods prune in place); when `shapes_changed`, parameters were replaced and the optimiser
    must be rebuilt."""
    model: nn.Module
    method: str
    sparsity_before: float
    sparsity_after: float
    removed: int  # weights newly masked (unstructured) or parameters removed (structured)
    shapes_changed: bool
    reached_target: bool

    @property
    def changed(self) -> bool:
        return self.removed > 0


def current_sparsity(model: nn.Module, method: str) -> float:
    """The sparsity `method` steers: zero conv/linear weights (unstructured), or the share of
    the original parameters removed (structured; 0 before the first structured step)."""
    if method == "structured":
        original = getattr(model, _ORIGINAL_PARAMETERS, None)
        return 1.0 - parameter_count(model) / original if original else 0.0
    return weight_sparsity(model)


def prune_step(model: nn.Module, method: str, amount: float, target_sparsity: float,
               example_input: torch.Tensor) -> PruneStep:
    """One pruning step; `example_input` is a small batch on the model's device (structured
    pruning traces the model with it; unstructured ignores it)."""
    if method == "unstructured":
        return _unstructured_step(model, amount, target_sparsity)
    if method == "structured":
        return _structured_step(model, amount, target_sparsity, example_input)
    if method == "none":
        s = current_sparsity(model, "unstructured")
        return PruneStep(model, method, s, s, 0, False, False)
    raise ConfigError(f"prune={method!r} is not allowed; choose one of {', '.join(PRUNE_METHODS)}")


def _unstructured_step(model: nn.Module, amount: float, target: float) -> PruneStep:
    layers = prunable_layers(model)
    total = sum(layer.weight.numel() for _, layer in layers)
    before = weight_sparsity(model)
    zeros = round(before * total)
    wanted = math.ceil(target * total) - zeros  # never past the target
    count = min(round(amount * (total - zeros)), wanted)
    if count > 0:
        _make_weights_contiguous(layers)
        # An integer amount is applied to the weights not yet masked (PruningContainer), so
        # repeated steps compound: each removes `amount` of what is left.
        prune.global_unstructured([(layer, "weight") for _, layer in layers],
                                  pruning_method=prune.L1Unstructured, amount=count)
    after = weight_sparsity(model)
    return PruneStep(model, "unstructured", before, after, max(count, 0), False,
                     after >= target - 1.0 / total)


def _make_weights_contiguous(layers: list[tuple[str, nn.Module]]) -> None:
    """global_unstructured flattens weights (and new all-ones masks) with `.view(-1)`, which a
    channels_last conv weight refuses; the same values in the default layout prune the same."""
    for _, layer in layers:
        param = getattr(layer, "weight_orig", None)
        param = layer.weight if param is None else param
        if not param.is_contiguous():
            param.data = param.data.contiguous()


def finalise(model: nn.Module) -> nn.Module:
    """Make unstructured pruning permanent: the masked weight becomes the parameter (same
    Parameter object, so an optimiser stays valid) and masks and hooks go away."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def _import_torch_pruning():
    try:
        import torch_pruning
    except ImportError:
        raise ConfigError("prune = \"structured\" needs the torch-pruning package: "
                          f"{PRUNING_INSTALL}") from None
    return torch_pruning


def output_layers(model: nn.Module, num_outputs: int) -> list[nn.Module]:
    """Layers whose output channels are the model's outputs (the classifier): structured
    pruning must leave them whole. timm's `get_classifier` where it exists, else the last
    conv/linear producing `num_outputs` channels."""
    getter = getattr(model, "get_classifier", None)
    if getter is None and hasattr(model, "model"):  # a Resized wrapper
        getter = getattr(model.model, "get_classifier", None)
    if callable(getter):
        head = getter()
        found = [m for m in head.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))] \
            if isinstance(head, nn.Module) else []
        if found:
            return found
    for _, layer in reversed(prunable_layers(model)):
        out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        if out == num_outputs:
            return [layer]
    return []


def _structured_step(model: nn.Module, amount: float, target: float,
                     example_input: torch.Tensor) -> PruneStep:
    if any(prune.is_pruned(m) for m in model.modules() if m is not model) or prune.is_pruned(model):
        raise ConfigError("structured pruning of a model with unstructured masks: finalise() it "
                          "or use one method per run")
    tp = _import_torch_pruning()
    if getattr(model, _ORIGINAL_PARAMETERS, None) is None:
        setattr(model, _ORIGINAL_PARAMETERS, parameter_count(model))
    original = getattr(model, _ORIGINAL_PARAMETERS)
    before_params = parameter_count(model)
    before = 1.0 - before_params / original
    keep_fraction = (1.0 - target) * original / before_params
    if keep_fraction >= 1.0:
        return PruneStep(model, "structured", before, before, 0, False, True)
    # Removing a share r of every layer's channels keeps about (1 - r)^2 of a conv's weights:
    # aim at the target, never more than `amount` per step.
    ratio = min(amount, 1.0 - math.sqrt(keep_fraction))
    was_training = model.training
    with torch.no_grad():
        num_outputs = model.eval()(example_input[:1]).shape[1]
    try:
        pruner = tp.pruner.BasePruner(
            model, example_input,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, global_pruning=False,
            ignored_layers=output_layers(model, num_outputs))
        pruner.step()
    finally:
        model.train(was_training)  # the dependency graph trace leaves the model in eval mode
    after_params = parameter_count(model)
    after = 1.0 - after_params / original
    return PruneStep(model, "structured", before, after, before_params - after_params,
                     after_params != before_params, after >= target)


def rebuild_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """A fresh optimiser of the same class and hyper-parameters over the model's current
    parameters. Its state (momentum, Adam moments) starts empty: the removed channels have no
    counterpart, and keeping the survivors' state is not worth the bookkeeping for a step every
    few epochs. A learning-rate scheduler must be re-attached to the new optimiser."""
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    defaults = {k: v for k, v in group.items() if k in optimizer.defaults}
    return type(optimizer)(model.parameters(), **defaults)
