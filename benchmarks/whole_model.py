"""Whole-model check: does the sum over layers hold up on our own models?

For the quick studies' models (the paper CNN at widths 0.5 and 1, a width-0.25 ResNet-18 and the
3-layer FFNN on Fashion-MNIST, 1x28x28), in forward passes and training steps, in fp32 and the
device's amp dtype, the layer-regression fitted on this machine's calibration predicts the
energy of the whole model; the project's meters (energy_lib.estimators.calibrate.metered -- the
same meters the calibration used: measured where the hardware allows, modelled where not)
meter the same passes, several windows each. Each prediction is the fit's figure as calibrated,
as a run's is; the machine-state factor (energy_lib/estimators/reference.py), metered just
before, is kept beside it (`state_factor`) with the error it would have given
(`rescaled_error_pct`). The relative error (predicted / metered - 1), its median and spread per
model, phase and dtype, is the whole-model error the README reports. (The committed
benchmarks/results/amd-epyc-2cpu-whole-model.csv was made when runs applied the factor: its
`predicted_j` and `error_pct` include it; divide by `state_factor` for the figure as calibrated.)

Why it is worth doing even where the meters are models (a VM without RAPL: TDP x utilisation):
the regression sees only single layers; whether per-layer costs add up to the model's cost --
no double-counted per-call overheads, nothing missing between layers -- is a property of the
sum, and it shows on modelled joules as on measured ones. The metered side's kind is reported.

    python -m benchmarks.whole_model [--calibration calibration/<machine>.csv]
(from the repository root; without --calibration: this machine's file in calibration/, made
with the quick calibration when missing)
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from energy_lib.cli import OneLineParser, run_tool
from energy_lib.errors import ConfigError
from energy_lib.estimators.calibrate import ZOO, ZOO_INPUT
from energy_lib.training.allocator import steady_allocator

PROG = "python -m benchmarks.whole_model"

#: The models checked, as the quick studies build them for Fashion-MNIST (1x28x28): the paper
#: CNN at the quick study's widths, a ResNet as efficient_dl_quick builds it, and the 3-layer
#: FFNN of efficient_dl_baselines_quick.
CASES = ZOO  # the models the quick calibration also measures layer by layer
QUICK_INPUT = ZOO_INPUT
BATCH_SIZES = (16, 128)  # 16 inside the quick calibration's batch range (1-32), 128 beyond it
MIN_WINDOW_S = 1.0
REPEATS = 3  # metered windows per configuration: the error's spread, not one draw


def whole_model_check(calibration: str | Path, *, cases=CASES, input_size=QUICK_INPUT,
                      batch_sizes=BATCH_SIZES, training=(False, True), dtypes=None,
                      repeats: int = REPEATS, min_window_s: float = MIN_WINDOW_S,
                      device: str | torch.device = "cpu", seed: int = 0) -> pd.DataFrame:
    """One row per (model, phase, dtype, batch size, repeat): the sum-over-layers prediction
    from `calibration` in that dtype, the Getzner fit's (other hardware, fp32 only, for
    contrast), the metered energy of one forward pass or training step of the whole model, its
    method and kind, and the relative errors. `dtypes`: default float32 and the device's amp
    dtype (what the quick studies compute in)."""
    # looked up when called (not bound at import): a test's stand-in for `metered` is used
    from energy_lib.estimators import layerwise_estimate
    from energy_lib.estimators.calibrate import forward_fn, in_dtype, metered, train_step_fn
    from energy_lib.estimators.predict import machine_state
    from energy_lib.training.device import amp_dtype
    from energy_lib.training.models import create_model

    device = torch.device(device)
    steady_allocator()  # as the calibration and the runs (allocator.py)
    dtypes = dtypes or ("float32", str(amp_dtype(device)).removeprefix("torch."))
    torch.manual_seed(seed)
    rows = []
    for case in cases:
        knobs = {k: v for k, v in case.items() if k != "model"}
        model = create_model(case["model"], in_channels=input_size[0], image_size=input_size[1],
                             num_classes=10, seed=seed, **knobs).to(device)
        for step, dtype, batch in itertools.product(training, dtypes, batch_sizes):
            model.train(step)
            state = machine_state(calibration, device)  # metered as before a run's prediction
            factor = state["factor"] if state and state["factor"] is not None else math.nan
            predicted = layerwise_estimate(model, input_size, batch, fit=calibration,
                                           training=step, compute_dtype=dtype)
            getzner = layerwise_estimate(model, input_size, batch, training=step)
            x = torch.randn(batch, *input_size, device=device)
            run = in_dtype((train_step_fn if step else forward_fn)(model, x), dtype, device)
            run()  # warm-up: allocation and kernel selection outside the window
            start = time.perf_counter()
            run()
            once_s = max(time.perf_counter() - start, 1e-6)
            calls = max(1, math.ceil(min_window_s / once_s))
            for repeat in range(repeats):
                energy_j, seconds, method, kind = metered(run, calls, device)
                metered_j = energy_j / calls
                rows.append({**case, "phase": "train_step" if step else "forward",
                             "dtype": dtype, "batch_size": batch, "repeat": repeat,
                             "predicted_j": predicted.energy_j, "metered_j": metered_j,
                             "error_pct": 100 * (predicted.energy_j / metered_j - 1),
                             "state_factor": factor,
                             "rescaled_error_pct": 100 * (factor * predicted.energy_j / metered_j - 1),
                             "getzner_j": getzner.energy_j,
                             "getzner_error_pct": 100 * (getzner.energy_j / metered_j - 1),
                             "seconds_per_pass": seconds / calls, "calls": calls,
                             "metered_method": method, "metered_kind": kind,
                             "uncovered_macs_fraction": predicted.uncovered_macs_fraction,
                             "uncovered_layers": ", ".join(predicted.uncovered_layers),
                             "flags": ", ".join(predicted.flags)})
    return pd.DataFrame(rows)


def error_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, phase and dtype: the median absolute error of the sum over layers and the
    spread (min-max of the error) over batch sizes and repeats."""
    keys = [c for c in ("model", "width", "phase", "dtype") if c in table]
    grouped = table.assign(abs_error_pct=table["error_pct"].abs()).groupby(keys, sort=False)
    return grouped.agg(median_abs_error_pct=("abs_error_pct", "median"),
                       min_error_pct=("error_pct", "min"), max_error_pct=("error_pct", "max"),
                       n=("error_pct", "size")).reset_index()


def main(argv: list[str] | None = None) -> int:
    """Calibrate (quick) when this machine has no calibration file, then check; prints the table,
    the calibration time and the mean absolute error. A user mistake prints one line and
    returns 2; Ctrl-C 130, SIGTERM 143 (a quick calibration's finished rows are kept)."""
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", help="calibration CSV (default: this machine's, made if missing)")
    parser.add_argument("--min-window-s", type=float, default=MIN_WINDOW_S)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="metered windows each")
    parser.add_argument("--out", help="CSV of every window (never replaces a file)")
    return run_tool(PROG, lambda: _check_command(parser.parse_args(argv)),
                    resume="; run it again to continue (finished calibration rows are kept; "
                           "the check starts over)")


def _check_command(args: argparse.Namespace) -> int:
    from energy_lib.estimators.calibrate import (DEFAULT_DIR, QUICK_PLAN, calibrate,
                                                 check_window_s, machine_name)

    check_window_s(args.min_window_s, "--min-window-s")
    if args.repeats < 1:
        raise ConfigError(f"--repeats={args.repeats} is not allowed; must be >= 1")
    path = Path(args.calibration) if args.calibration else \
        DEFAULT_DIR / f"{machine_name(torch.device('cpu'))}.csv"
    if args.calibration is None and not path.is_file():
        started = time.perf_counter()
        path, written, _ = calibrate(QUICK_PLAN, out_dir=DEFAULT_DIR)
        print(f"quick calibration: {written} rows in {time.perf_counter() - started:.0f} s -> {path}")
    table = whole_model_check(path, min_window_s=args.min_window_s, repeats=args.repeats)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        summary = error_summary(table)
        pct = [c for c in summary if c.endswith("_pct")]
        print(summary.assign(**summary[pct].round(1)).to_string(index=False))
    print(f"median |error| of the sum over layers: {table['error_pct'].abs().median():.1f} % over "
          f"{len(table)} windows (metered: {', '.join(sorted(set(table['metered_kind'])))}, "
          f"{', '.join(sorted(set(table['metered_method'])))}; torch {torch.__version__}); with "
          f"the machine-state factor: {table['rescaled_error_pct'].abs().median():.1f} %")
    if args.out:
        from energy_lib.files import check_output_file
        from energy_lib.report.output import save_csv

        out = Path(args.out)
        check_output_file(out, "--out")
        save_csv(table, out)
        print(f"every window: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
