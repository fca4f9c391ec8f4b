"""Walk a model once on the meta device: every leaf-module call with its input and output shape,
and the multiply-accumulates (MACs) torch's own flop counter sees.

The meta device gives shapes without allocating or computing anything, so tracing VGG16 at
batch 256 costs the same few milliseconds as at batch 1, and the user's model (its weights, its
train/eval flags) is left untouched: `torch.func.functional_call` swaps in meta copies of the
parameters and buffers for the duration of one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError


@dataclass
class LayerCall:
    """One call of a leaf module (a module called twice, like ResNet's shared ReLU, gives two)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    takes_model_input: bool  # its input is the model's own input: no gradient w.r.t. it
    macs: int = 0

    @property
    def type(self) -> str:
        return type(self.module).__name__

    @property
    def input_numel(self) -> int:
        return math.prod(self.input_shape)

    @property
    def output_numel(self) -> int:
        return math.prod(self.output_shape)


@dataclass
class Trace:
    calls: list[LayerCall]
    total_macs: int  # the larger of torch's flop counter and the sum over leaf calls
    unattributed_macs: int  # MACs of ops outside any leaf module (functional calls in forward)


FORMULA_TYPES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def layer_macs(module: nn.Module, input_shape, output_shape) -> int:
    """MACs of one call, by the usual convention (bias additions not counted): Conv2d: outputs x
    in_channels/groups x kernel area; Linear: outputs x in_features; BatchNorm: one per element
    (scale and shift). Other layers: 0 (comparisons, exponentials and sums are no MACs)."""
    outputs = math.prod(output_shape)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return outputs * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return outputs * module.in_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return outputs
    return 0


def _check_input(input_size, batch_size) -> tuple[tuple[int, ...], int]:
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ConfigError(f"input_size={input_size!r} is not allowed; give (channels, height, "
                          "width), e.g. (3, 224, 224)") from None
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"input_size={input_size!r} is not allowed; give (channels, height, "
                          "width) of positive integers, e.g. (3, 224, 224)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} is not allowed; must be an integer >= 1")
    return size, batch_size


def trace_model(model: nn.Module, input_size, batch_size: int) -> Trace:
    """Shapes and MACs of every leaf-module call for one batch. An input that does not fit the
    model raises ConfigError with one line naming the model, the input and torch's reason."""
    size, batch_size = _check_input(input_size, batch_size)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model={type(model).__name__} is not a torch.nn.Module")
    names = {module: name for name, module in model.named_modules()}
    x = torch.empty((batch_size, *size), device="meta")
    calls: list[LayerCall] = []

    def record(module, inputs, output):
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        out = output[0] if isinstance(output, (tuple, list)) else output
        if first is None or not isinstance(out, torch.Tensor):
            return
        calls.append(LayerCall(names[module] or type(module).__name__, module,
                               tuple(first.shape), tuple(out.shape), first is x,
                               layer_macs(module, tuple(first.shape), tuple(out.shape))))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    state = {k: torch.empty_like(v, device="meta") for k, v in
             [*model.named_parameters(), *model.named_buffers()]}
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with counter, torch.no_grad():
            functional_call(model, state, (x,))
    except (RuntimeError, ValueError, IndexError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"input_size={size} does not fit {type(model).__name__}: {reason}") from None
    finally:
        for hook in hooks:
            hook.remove()

    counted = counter.get_total_flops() // 2  # the counter counts a MAC as two FLOPs
    flops = counter.get_flop_counts()
    root = type(model).__name__
    counter_macs = {m: sum(flops.get(f"{root}.{names[m]}" if names[m] else root, {}).values()) // 2
                    for m in leaves}
    calls_per_module: dict[nn.Module, int] = {}
    for call in calls:
        calls_per_module[call.module] = calls_per_module.get(call.module, 0) + 1
    for call in calls:  # layer types without a formula: torch's count (matmuls, convolutions)
        if not call.macs and not isinstance(call.module, FORMULA_TYPES):
            call.macs = counter_macs[call.module] // calls_per_module[call.module]
    _name_repeats(calls)
    unattributed = max(0, counted - sum(counter_macs.values()))
    total = max(counted, sum(c.macs for c in calls))
    return Trace(calls, total, unattributed)


def _name_repeats(calls: list[LayerCall]) -> None:
    """A module called more than once gets rows 'name', 'name#2', ..."""
    seen: dict[str, int] = {}
    for call in calls:
        seen[call.name] = seen.get(call.name, 0) + 1
        if seen[call.name] > 1:
            call.name = f"{call.name}#{seen[call.name]}"
