"""Size and compute of a model: parameters, sparsity, bytes, and MACs per image.

Two MAC figures, because pruning changes them differently: `dense_macs` is what the hardware
executes (a masked weight is still multiplied), `sparse_macs` is what an engine that skips zero
weights would need. Masking weights (unstructured pruning) lowers only the second; removing
channels (structured pruning) lowers both. Both are counted once per model state with
`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2), forward pass only; a training step
costs about three forward passes.

Pruned weights under `torch.nn.utils.prune` live as `<name>_orig` (dense) plus a mask; every
function here reads the effective (masked) weight, and ignores the masks when sizing a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers: the weights pruning acts on and the ones sparse MACs skip."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def _effective_parameters(model: nn.Module):
    """(module, name, tensor) for every parameter, with a pruned `weight_orig` replaced by the
    masked `weight` the forward pass uses."""
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if name.endswith("_orig") and hasattr(module, name[:-len("_orig")]):
                base = name[:-len("_orig")]
                yield module, base, getattr(module, base)
            else:
                yield module, name, param


def parameter_count(model: nn.Module) -> int:
    return sum(t.numel() for _, _, t in _effective_parameters(model))


def nonzero_parameter_count(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(t)) for _, _, t in _effective_parameters(model))


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero conv/linear weights (biases and norm layers excluded): the quantity
    unstructured pruning targets."""
    total = zeros = 0
    for _, layer in prunable_layers(model):
        weight = layer.weight
        total += weight.numel()
        zeros += weight.numel() - int(torch.count_nonzero(weight))
    return zeros / total if total else 0.0


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the dense parameters and buffers a checkpoint would hold (pruning masks, which
    `finalise` removes, are not counted)."""
    params = sum(t.numel() * t.element_size() for _, _, t in _effective_parameters(model))
    buffers = sum(b.numel() * b.element_size() for name, b in model.named_buffers()
                  if not name.endswith("_mask"))
    return params + buffers


@dataclass(frozen=True)
class MacCount:
    """Forward multiply-accumulates for one image."""
    dense_macs: int
    sparse_macs: int
    layer_macs: dict[str, int] = field(default_factory=dict)  # dense MACs of each conv/linear


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> MacCount:
    """MACs per image for input of shape (C, H, W), counted on one zero image on the model's
    device in eval mode (so BatchNorm statistics are untouched) without gradients.

    FlopCounterMode counts matmuls and convolutions (not norms, activations or pooling, which
    are a small share of a CNN's arithmetic). Sparse MACs scale each conv/linear layer's dense
    MACs by its weight density; other matmuls (e.g. attention) count as dense.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    example = torch.zeros(1, *input_shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    by_module = counter.get_flop_counts()
    root = type(model).__name__
    dense = counter.get_total_flops() // 2
    layer_macs: dict[str, int] = {}
    skipped = 0.0
    for name, layer in prunable_layers(model):
        key = f"{root}.{name}" if name else root
        macs = sum(by_module.get(key, {}).values()) // 2
        layer_macs[name] = macs
        weight = layer.weight
        density = int(torch.count_nonzero(weight)) / weight.numel() if weight.numel() else 1.0
        skipped += macs * (1.0 - density)
    return MacCount(dense_macs=int(dense), sparse_macs=int(round(dense - skipped)),
                    layer_macs=layer_macs)


def model_stats(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float | int]:
    """The per-epoch record of issue #11: names carry their units."""
    macs = count_macs(model, input_shape)
    parameters = parameter_count(model)
    nonzero = nonzero_parameter_count(model)
    return {
        "parameters": parameters,
        "nonzero_parameters": nonzero,
        "parameter_sparsity": 1.0 - nonzero / parameters if parameters else 0.0,
        "weight_sparsity": weight_sparsity(model),
        "model_size_bytes": model_size_bytes(model),
        "dense_macs_per_image": macs.dense_macs,
        "sparse_macs_per_image": macs.sparse_macs,
    }
