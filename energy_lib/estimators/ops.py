"""Operation-count model (method "ops-model"): count each layer's multiplications, additions,
memory reads and writes, and price them with a per-operation energy table (Horowitz, ISSCC 2014,
45 nm, by default).

Counting rules (an idealised accelerator, stated so a reader can disagree with them):
- Arithmetic: Conv2d/Linear: one multiply per MAC, (fan-in - 1) additions per output plus the
  bias. Comparisons (ReLU, max-pooling) are priced as additions. exp() and tanh() count as
  4 multiplies + 4 additions (a short polynomial). BatchNorm in training mode computes the batch
  statistics (3 mul + 4 add per element forward, 4 + 4 backward); in eval mode scale and shift.
- Memory: compulsory traffic only (every tensor a layer touches is read once and every tensor
  it produces is written once: perfect on-chip reuse, so a lower bound). Each access is priced at
  the level that holds the whole tensor it touches: < 8 KB, < 32 KB, < 1 MB, else DRAM.
- Training step = forward + gradient w.r.t. the input (skipped for the layer that reads the
  model's input) + gradient w.r.t. the weights + the optimiser update. The update is the
  project's SGD with momentum and weight decay: per parameter 3 mul + 3 add, reads of weight,
  gradient and momentum, writes of weight and momentum.
- Bit width: `bits` applies to Conv2d and Linear (the ops fp16/bf16 autocast lowers) and the
  tensors they read and write; every other layer and the optimiser update stay at 32 bits
  (fp32 master weights).
Counted layer types are those in COUNTED_TYPES; any other leaf module is left out, named in
`uncovered_layers`, and its MACs (from torch's flop counter) go into `uncovered_macs_fraction`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from torch import nn

from ..errors import ConfigError
from .ops_table import OpsTable, load_ops_table
from .result import Estimate
from .trace import LayerCall, trace_model

EXP_MUL, EXP_ADD = 4, 4  # one exp/tanh as a short polynomial
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.SiLU, nn.GELU)
VIEWS = (nn.Flatten, nn.Identity)
COUNTED_TYPES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, *ACTIVATIONS,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, *VIEWS)
PHASES = ("forward", "grad_input", "grad_weight", "update")


@dataclass(frozen=True)
class Op:
    """`count` operations of one kind in one phase; memory ops carry the size of the tensor."""

    phase: str
    op: str  # add | mul | read | write
    count: float
    bits: int
    tensor_bytes: float = 0.0


def _tensor_ops(phase, op, numel, bits) -> Op:
    return Op(phase, op, numel, bits, numel * bits / 8)


def count_layer(call: LayerCall, *, bits: int = 32, training: bool = True) -> list[Op] | None:
    """The operations of one layer call, or None when its type is not counted."""
    m, nx, ny = call.module, call.input_numel, call.output_numel
    ops: list[Op] = []

    def arith(phase, mul, add, b=32):
        ops.extend([Op(phase, "mul", mul, b), Op(phase, "add", add, b)])

    def mem(phase, reads, writes, b=32):
        ops.extend(_tensor_ops(phase, "read", n, b) for n in reads)
        ops.extend(_tensor_ops(phase, "write", n, b) for n in writes)

    backward_input = training and not call.takes_model_input
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        fan_in = call.macs // ny
        weights = m.weight.numel()
        bias = m.bias.numel() if m.bias is not None else 0
        arith("forward", call.macs, ny * (fan_in - 1) + (ny if bias else 0), bits)
        mem("forward", [nx, weights] + ([bias] if bias else []), [ny], bits)
        if backward_input:
            arith("grad_input", call.macs, max(0, call.macs - nx), bits)
            mem("grad_input", [ny, weights], [nx], bits)
        if training:
            arith("grad_weight", call.macs, max(0, call.macs - weights) + (ny if bias else 0), bits)
            mem("grad_weight", [nx, ny], [weights] + ([bias] if bias else []), bits)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        channels = m.num_features
        if training:
            arith("forward", 3 * nx, 4 * nx)
            mem("forward", [nx, nx, channels, channels], [ny])
            arith("grad_weight", 2 * nx, 2 * nx)
            if backward_input:
                arith("grad_input", 2 * nx, 2 * nx)
            mem("grad_input" if backward_input else "grad_weight", [ny, nx], [nx, channels, channels])
        else:
            arith("forward", nx, nx)
            mem("forward", [nx] + [channels] * 4, [ny])
    elif isinstance(m, ACTIVATIONS):
        # (multiplies, additions) per element, forward and backward
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.LeakyReLU)):
            forward, backward = (0, 1), (0, 1)  # one compare (and select) per element
        elif isinstance(m, (nn.Sigmoid, nn.Tanh)):
            forward, backward = (EXP_MUL + 1, EXP_ADD + 1), (2, 1)
        elif isinstance(m, nn.Softmax):
            forward, backward = (EXP_MUL + 1, EXP_ADD + 3), (2, 2)  # max, subtract, exp, sum, divide
        else:  # SiLU, GELU: one exp-like function and a product
            forward, backward = (EXP_MUL + 2, EXP_ADD + 1), (EXP_MUL + 3, EXP_ADD + 2)
        arith("forward", forward[0] * nx, forward[1] * nx)
        mem("forward", [nx], [ny])
        if backward_input:
            arith("grad_input", backward[0] * nx, backward[1] * nx)
            mem("grad_input", [ny, ny], [nx])  # upstream gradient and saved output
    elif isinstance(m, nn.MaxPool2d):
        window = math.prod(_pair(m.kernel_size))
        arith("forward", 0, ny * (window - 1))
        mem("forward", [nx], [ny] + ([ny] if training else []))  # + argmax indices when training
        if backward_input:
            mem("grad_input", [ny, ny], [nx])
    elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        arith("forward", ny, max(0, nx - ny))
        mem("forward", [nx], [ny])
        if backward_input:
            arith("grad_input", nx, 0)
            mem("grad_input", [ny], [nx])
    elif isinstance(m, nn.Dropout):
        if training:
            arith("forward", nx, 0)
            mem("forward", [nx], [ny, ny])  # output and mask
            if backward_input:
                arith("grad_input", nx, 0)
                mem("grad_input", [ny, ny], [nx])
    elif isinstance(m, VIEWS):
        pass  # a view: no arithmetic, no traffic
    else:
        return None
    return ops


def update_ops(module: nn.Module) -> list[Op]:
    """SGD with momentum and weight decay on the module's own parameters, fp32."""
    ops: list[Op] = []
    for p in module.parameters(recurse=False):
        if p.requires_grad:
            n = p.numel()
            ops += [Op("update", "mul", 3 * n, 32), Op("update", "add", 3 * n, 32)]
            ops += [_tensor_ops("update", "read", n, 32) for _ in range(3)]
            ops += [_tensor_ops("update", "write", n, 32) for _ in range(2)]
    return ops


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def price_pj(ops: list[Op], table: OpsTable) -> dict[str, float]:
    """pJ per phase."""
    by_phase = {phase: 0.0 for phase in PHASES}
    for op in ops:
        if op.op in ("add", "mul"):
            by_phase[op.phase] += op.count * table.arithmetic(op.op, op.bits)
        else:
            by_phase[op.phase] += op.count * table.memory(op.op, op.bits, op.tensor_bytes)
    return by_phase


def ops_estimate(model: nn.Module, input_size, batch_size: int, *, bits: int = 32,
                 training: bool = True, table: str | None = None) -> Estimate:
    """Energy of one training step (or, training=False, one forward pass) of one batch from
    operation counts priced with `table` (default: Horowitz 2014, 45 nm). It prices an idealised
    45 nm chip, not this machine: use it to rank models, not as a measurement."""
    ops_table = load_ops_table(table)
    if bits not in ops_table.bits():
        raise ConfigError(f"bits={bits!r} is not allowed; the ops table has {ops_table.bits()}")
    if training and bits == 8:
        raise ConfigError("bits=8 (int8) is for inference; use training=False or bits=16/32")
    trace = trace_model(model, input_size, batch_size)
    rows, updated = [], set()
    for call in trace.calls:
        ops = count_layer(call, bits=bits if isinstance(call.module, (nn.Conv2d, nn.Linear)) else 32,
                          training=training)
        covered = ops is not None
        ops = ops or []
        if covered and training and call.module not in updated:
            ops += update_ops(call.module)
            updated.add(call.module)
        pj = price_pj(ops, ops_table)
        counts = {op: sum(o.count for o in ops if o.op == op) for op in ("mul", "add", "read", "write")}
        rows.append({"name": call.name, "type": call.type, "macs": call.macs,
                     "energy_j": sum(pj.values()) * 1e-12, "covered": covered,
                     "mults": counts["mul"], "adds": counts["add"], "reads": counts["read"],
                     "writes": counts["write"],
                     **{f"{phase}_energy_j": pj[phase] * 1e-12 for phase in PHASES},
                     "input_shape": call.input_shape, "output_shape": call.output_shape})
    per_layer = pd.DataFrame(rows)
    uncovered = [r["name"] for r in rows if not r["covered"]]
    uncovered_macs = sum(r["macs"] for r in rows if not r["covered"]) + trace.unattributed_macs
    notes = [f"counted layer types: {', '.join(sorted({t.__name__ for t in COUNTED_TYPES}))}",
             "memory: compulsory traffic only (each tensor read/written once; a lower bound)",
             "operations outside modules (e.g. residual additions in forward()) are not counted"]
    if trace.unattributed_macs:
        notes.append(f"{trace.unattributed_macs} MACs ran outside any leaf module and are not counted")
    phase = "training step (SGD momentum)" if training else "forward pass"
    return Estimate(
        energy_j=float(per_layer["energy_j"].sum()) if rows else 0.0,
        per_layer=per_layer,
        uncovered_macs_fraction=uncovered_macs / trace.total_macs if trace.total_macs else 0.0,
        method="ops-model",
        source=f"{ops_table.source}; {bits}-bit Conv2d/Linear; one {phase}; an idealised chip, "
               "not this machine",
        batch_size=batch_size, input_size=tuple(input_size), training=training,
        uncovered_layers=uncovered, notes=notes,
        compute_dtype="float32" if bits == 32 else "float16")  # Horowitz: fp32 and fp16 figures
