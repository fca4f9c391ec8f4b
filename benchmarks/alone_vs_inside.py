"""What does a layer measured alone pay that the same layer inside a model does not?

Per-layer energy data (Getzner et al. 2023, and `energy-study calibrate`) measure each layer
alone: one input batch, reused for every pass of a window, in eval mode without gradients. A
model's estimate is the sum of such figures over its layers. This module times both sides under
that protocol on this machine: every leaf layer of a model alone (on an input of the shape it
sees inside the model), and the whole model; the sum over layers divided by the whole says how
far "the cost of a model is the sum of its layers" holds, per layer type.

Time, not energy: on a CPU under full load, power is close to constant, so energy is close to
proportional to time (and on a machine without RAPL the project's CPU meter is a model of
time x load anyway); the timing is the part of the question this machine can answer.

Getzner's activation data were measured with `nn.ReLU()` (a new output tensor per call), while
torchvision's AlexNet and VGG apply `nn.ReLU(inplace=True)`; both are timed here, so the share of
the difference that in-place activations explain is a figure, not a guess.

    python -m benchmarks.alone_vs_inside [--models alexnet,vgg11] [--batch-size 4]
(from the repository root)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import pandas as pd
import torch
from torch import nn

from energy_lib.cli import OneLineParser, run_tool
from energy_lib.errors import ConfigError
from energy_lib.estimators.calibrate import check_window_s
from energy_lib.estimators.trace import trace_model
from energy_lib.training.allocator import steady_allocator

PROG = "python -m benchmarks.alone_vs_inside"

MODELS = ("alexnet", "vgg11", "vgg13", "vgg16")  # the architectures Getzner et al. summed
INPUT = (3, 224, 224)
MIN_WINDOW_S = 1.0


def _seconds_per_call(fn, min_window_s: float) -> float:
    """Seconds per call of fn, over a window of at least min_window_s after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_window_s:
            return elapsed / calls


def alone_vs_inside(model: nn.Module, name: str, batch_size: int, *, input_size=INPUT,
                    min_window_s: float = MIN_WINDOW_S, seed: int = 0) -> pd.DataFrame:
    """One row per leaf-layer call of `model` (eval, no_grad, one random input reused, as the
    per-layer data were measured): its seconds per call alone, and for activations applied in
    place also alone out of place (as the per-layer data measured them); plus one row for the
    whole model."""
    steady_allocator()  # as the calibration and the runs (allocator.py)
    torch.manual_seed(seed)
    model = model.eval()
    x = torch.rand(batch_size, *input_size)
    rows = []
    for call in trace_model(model, input_size, batch_size).calls:
        module, data = call.module, torch.rand(call.input_shape)
        row = {"model": name, "batch_size": batch_size, "layer": call.name,
               "layer_type": type(module).__name__, "inplace": bool(getattr(module, "inplace", False))}
        with torch.no_grad():
            row["alone_s"] = _seconds_per_call(lambda: module(data), min_window_s)
            if row["inplace"]:  # as measured for the per-layer data: a new output per call
                fresh = copy.copy(module)
                fresh.inplace = False
                row["alone_out_of_place_s"] = _seconds_per_call(lambda: fresh(data), min_window_s)
            else:
                row["alone_out_of_place_s"] = row["alone_s"]
        rows.append(row)
    with torch.no_grad():
        whole_s = _seconds_per_call(lambda: model(x), min_window_s)
    rows.append({"model": name, "batch_size": batch_size, "layer": "", "layer_type": "(whole model)",
                 "inplace": False, "alone_s": whole_s, "alone_out_of_place_s": whole_s})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and batch size: the whole model's time, the sum over its layers alone (as the
    model applies them, and with activations out of place as the per-layer data measured them),
    each sum over the whole, and the share of the out-of-place sum that activations take."""
    out = []
    for (name, batch), group in table.groupby(["model", "batch_size"], sort=False):
        whole = group.loc[group["layer_type"] == "(whole model)", "alone_s"].iloc[0]
        layers = group[group["layer_type"] != "(whole model)"]
        as_model = layers["alone_s"].sum()
        as_measured = layers["alone_out_of_place_s"].sum()
        relu = layers.loc[layers["layer_type"] == "ReLU", "alone_out_of_place_s"].sum()
        out.append({"model": name, "batch_size": batch, "whole_s": whole,
                    "sum_alone_s": as_model, "sum_alone_out_of_place_s": as_measured,
                    "sum_over_whole": as_model / whole,
                    "sum_out_of_place_over_whole": as_measured / whole,
                    "relu_share_of_sum_pct": 100 * relu / as_measured})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    """Time the models' layers alone and whole; print the summary. A user mistake prints one
    line and returns 2; Ctrl-C 130, SIGTERM 143."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="alexnet,vgg11,vgg16",
                        help=f"comma-separated torchvision models (of {', '.join(MODELS)})")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--min-window-s", type=float, default=MIN_WINDOW_S)
    parser.add_argument("--out", help="CSV of every layer's times (never replaces a file)")
    return run_tool(PROG, lambda: _command(parser.parse_args(argv)))


def _command(args: argparse.Namespace) -> int:
    import torchvision

    check_window_s(args.min_window_s, "--min-window-s")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise ConfigError(f"--models {args.models!r}: choose from {', '.join(MODELS)}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} is not allowed; must be >= 1")
    started = time.perf_counter()
    table = pd.concat([alone_vs_inside(getattr(torchvision.models, m)(weights=None), m,
                                       args.batch_size, min_window_s=args.min_window_s)
                       for m in names], ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary(table).round(3).to_string(index=False))
    print(f"({time.perf_counter() - started:.0f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    if args.out:
        from pathlib import Path

        from energy_lib.files import check_output_file
        from energy_lib.report.output import save_csv

        check_output_file(Path(args.out), "--out")
        save_csv(table, Path(args.out))
        print(f"every layer: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
