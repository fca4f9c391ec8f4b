"""Whole-model check: does the sum over layers hold up on our own models?

For the quick study's cells (paper_cnn at widths 0.5 and 1 on Fashion-MNIST, 1x28x28), the
layer-regression fitted on this machine's calibration predicts the energy of a forward pass of
the whole model; the project's meters (calibrate._metered -- the same meters the calibration
used: measured where the hardware allows, modelled where not) meter the same forward passes.
The relative error (predicted / metered - 1) is the whole-model error the README reports.

Why it is worth doing even where the meters are models (a VM without RAPL: TDP x utilisation):
the regression sees only single layers; whether per-layer costs add up to the model's cost --
no double-counted per-call overheads, nothing missing between layers -- is a property of the
sum, and it shows on modelled joules as on measured ones. The metered side's kind is reported.

    python -m energy_lib.estimators.whole_model [--calibration calibration/<machine>.csv]
(without --calibration: this machine's file, made with the quick calibration when missing)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

#: The quick study's cells, as the model sees them.
QUICK_CELLS = ({"width": 0.5}, {"width": 1.0})
QUICK_INPUT = (1, 28, 28)
BATCH_SIZES = (16, 128)  # 16 inside the quick calibration's batch range (1-32), 128 beyond it
MIN_WINDOW_S = 1.0


def _forward(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def whole_model_check(calibration: str | Path, *, cells=QUICK_CELLS, input_size=QUICK_INPUT,
                      batch_sizes=BATCH_SIZES, min_window_s: float = MIN_WINDOW_S,
                      device: str | torch.device = "cpu", seed: int = 0) -> pd.DataFrame:
    """One row per (cell, batch size): the sum-over-layers prediction from `calibration`, the
    Getzner fit's prediction (other hardware, for contrast), the metered energy of one forward
    pass of the whole model, its method and kind, and the relative errors."""
    from ..models import create_model
    from .calibrate import _metered
    from .regression import layerwise_estimate

    device = torch.device(device)
    torch.manual_seed(seed)
    rows = []
    for cell in cells:
        model = create_model("paper_cnn", in_channels=input_size[0], image_size=input_size[1],
                             num_classes=10, seed=seed, **cell).to(device).eval()
        for batch in batch_sizes:
            predicted = layerwise_estimate(model, input_size, batch, fit=calibration)
            getzner = layerwise_estimate(model, input_size, batch, fit="getzner2023")
            run = _forward(model, torch.randn(batch, *input_size, device=device))
            run()  # warm-up: allocation and kernel selection outside the window
            start = time.perf_counter()
            run()
            once_s = max(time.perf_counter() - start, 1e-6)
            repeats = max(1, math.ceil(min_window_s / once_s))
            energy_j, seconds, method, kind = _metered(run, repeats, device)
            metered_j = energy_j / repeats
            rows.append({**{f"cell_{k}": v for k, v in cell.items()}, "batch_size": batch,
                         "predicted_j": predicted.energy_j, "metered_j": metered_j,
                         "error_pct": 100 * (predicted.energy_j / metered_j - 1),
                         "getzner_j": getzner.energy_j,
                         "getzner_error_pct": 100 * (getzner.energy_j / metered_j - 1),
                         "seconds_per_pass": seconds / repeats, "repeats": repeats,
                         "metered_method": method, "metered_kind": kind,
                         "uncovered_layers": ", ".join(predicted.uncovered_layers)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """Calibrate (quick) when this machine has no calibration file, then check; prints the table,
    the calibration time and the mean absolute error. A user mistake prints one line and
    returns 2."""
    from .calibrate import OneLineParser, run_main

    parser = OneLineParser(prog="python -m energy_lib.estimators.whole_model",
                           description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", help="calibration CSV (default: this machine's, made if missing)")
    parser.add_argument("--min-window-s", type=float, default=MIN_WINDOW_S)
    return run_main(parser.prog, lambda: _check_command(parser.parse_args(argv)))


def _check_command(args: argparse.Namespace) -> int:
    from .calibrate import DEFAULT_DIR, QUICK_PLAN, calibrate, check_window_s, machine_name

    check_window_s(args.min_window_s, "--min-window-s")
    path = Path(args.calibration) if args.calibration else \
        DEFAULT_DIR / f"{machine_name(torch.device('cpu'))}.csv"
    if args.calibration is None and not path.is_file():
        started = time.perf_counter()
        path, written, _ = calibrate(QUICK_PLAN, out_dir=DEFAULT_DIR)
        print(f"quick calibration: {written} rows in {time.perf_counter() - started:.0f} s -> {path}")
    table = whole_model_check(path, min_window_s=args.min_window_s)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["uncovered_layers"]).round(4).to_string(index=False))
    print(f"mean |error| of the sum over layers: {table['error_pct'].abs().mean():.1f} % "
          f"(metered: {', '.join(sorted(set(table['metered_kind'])))}, "
          f"{', '.join(sorted(set(table['metered_method'])))}; torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
