"""A run's energy predicted before training (operation counts, per-layer regression) and during
it (early-epoch extrapolation), as rows of the energy table with phase `predicted` and kind
`estimated` -- so a lab record holds its predictions beside its measurement, and the report
can say how far each estimator was from it.

Before training, a prediction covers the whole run: a training step per batch of every epoch,
plus a forward pass per evaluation batch. The two structural estimators stand for hardware that
is not the run's (the ops model: an idealised 45 nm chip; the regression: the machine its fit
was measured on) -- the flag says which, so nobody reads them as this machine's joules.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from ..energy.table import EnergyRow, Kind, Method, Phase
from .extrapolate import SteadyPart, extrapolate_epochs
from .ops import ops_estimate
from .regression import layerwise_estimate

#: The component of a prediction: the model's compute (structural estimators), or the whole
#: headline figure (early-epoch extrapolation of the measured/modelled total).
MODEL, TOTAL = "model", "total"


def calibration_for(device: torch.device) -> Path | None:
    """This machine's calibration file (energy-study calibrate), if one was made."""
    from ..provenance import PROJECT_ROOT
    from .calibrate import DEFAULT_DIR, machine_name

    name = f"{machine_name(device)}.csv"
    for folder in (DEFAULT_DIR, PROJECT_ROOT / DEFAULT_DIR):
        if (folder / name).is_file():
            return folder / name
    return None


def predict_run(model: nn.Module, *, input_size: tuple[int, int, int], batch_size: int,
                eval_batch_size: int, train_size: int, test_size: int, epochs: int,
                compute_dtype: str, device: torch.device) -> tuple[list[dict], dict]:
    """(energy rows, facts) predicted for a whole run before training, for a run computing in
    `compute_dtype` (float32, or amp's bfloat16 / float16). `facts` holds what each estimate
    covers (layers left out, flags, seconds taken) for the record."""
    started = time.perf_counter()
    train_steps = math.ceil(train_size / batch_size)
    eval_steps = math.ceil(test_size / eval_batch_size)
    rows, facts = [], {}
    bits = 32 if compute_dtype == "float32" else 16
    estimators = {
        Method.OPS_MODEL: lambda training, batch: ops_estimate(
            model, input_size, batch, bits=bits, training=training),
    }
    calibration = calibration_for(device)
    fit = str(calibration) if calibration is not None else "getzner2023"
    estimators[Method.LAYER_REGRESSION] = lambda training, batch: layerwise_estimate(
        model, input_size, batch, fit=fit, training=training, compute_dtype=compute_dtype)
    for method, estimate in estimators.items():
        try:
            step = estimate(True, batch_size)
            forward = estimate(False, eval_batch_size)
        except Exception as error:  # noqa: BLE001 - an estimator never stops a run
            facts[str(method)] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
            continue
        energy_j = epochs * (train_steps * step.energy_j + eval_steps * forward.energy_j)
        left_out = (f"; left out {', '.join(step.uncovered_layers)} ({step.uncovered_macs_fraction:.1%}"
                    " of MACs)") if step.uncovered_layers else ""
        flag = f"{step.source}{left_out}" + "".join(f"; {f}" for f in step.flags)
        rows.append(EnergyRow(None, Phase.PREDICTED, MODEL, method, Kind.ESTIMATED, energy_j,
                              math.nan, flag).to_dict())
        facts[str(method)] = {"train_step_j": step.energy_j, "eval_forward_j": forward.energy_j,
                              "train_steps_per_epoch": train_steps,
                              "eval_steps_per_epoch": eval_steps, "source": step.source,
                              "uncovered_layers": step.uncovered_layers,
                              "uncovered_macs_fraction": step.uncovered_macs_fraction,
                              "compute_dtype": compute_dtype, "flags": list(step.flags),
                              "notes": list(step.notes)}
    facts["seconds"] = time.perf_counter() - started
    return rows, facts


def early_epochs_row(epoch_energy_j: list[float], epoch_seconds: list[float],
                     total_epochs: int, headline_kind: str, steady: SteadyPart | None = None) -> dict:
    """The run's headline energy and time predicted from its first epochs (a row of the
    energy table: phase predicted, component total, after epoch k)."""
    prediction = extrapolate_epochs(epoch_energy_j, epoch_seconds, total_epochs, steady)
    return EnergyRow(prediction.measured_epochs, Phase.PREDICTED, TOTAL, Method.EARLY_EPOCHS,
                     Kind.ESTIMATED, prediction.energy_j, prediction.seconds,
                     f"{prediction.basis}; extrapolates the {headline_kind} headline").to_dict()
