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

from ..energy import derive
from ..energy.table import EnergyRow, Kind, Method, Phase
from .extrapolate import SteadyPart, extrapolate_epochs
from .ops import ops_estimate
from .ops_table import DEFAULT_TABLE
from .regression import layerwise_estimate, load_fit

#: The component of a prediction: the model's compute (structural estimators), or the whole
#: headline figure (early-epoch extrapolation of the measured/modelled total).
MODEL, TOTAL = "model", "total"


def fingerprint_of(device: torch.device) -> str:
    from ..provenance import fingerprint

    return fingerprint(device)["digest"]


def calibration_for(device: torch.device) -> tuple[Path | None, str]:
    """(this machine's calibration file, "") where one was made here; else (None, why not).
    A file is found by the machine's name but used only when every row carries this machine's
    fingerprint (provenance.fingerprint): a calibration is never transplanted to another CPU
    sold under the same name, another torch build or another thread count."""
    from ..provenance import PROJECT_ROOT
    from .calibrate import DEFAULT_DIR, file_fingerprints, machine_name

    name = f"{machine_name(device)}.csv"
    for folder in (DEFAULT_DIR, PROJECT_ROOT / DEFAULT_DIR):
        path = folder / name
        if not path.is_file():
            continue
        here = fingerprint_of(device)
        try:
            found = file_fingerprints(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            return None, f"{path} could not be read ({error}); not used"
        if found == {here}:
            return path, ""
        measured = ", ".join(sorted(f or "not recorded" for f in found)) or "no rows"
        return None, (f"{path} was measured on machine fingerprint {measured}, not this one "
                      f"({here}): not used; `energy-study calibrate --quick` calibrates this "
                      "machine (minutes on a 2-core CPU)")
    return None, ""


def machine_state(fit: str | Path, device: torch.device,
                  contention_threshold: float = 0.25) -> dict | None:
    """How the machine runs now against the hours `fit` was calibrated in (reference.py): the
    reference step metered now (about a second), its calibration median, and their ratio
    `factor`. A run records it beside its prediction and does not apply it (`applied`: False;
    reference.py says why); the report shows the error with it too. Others' CPU share is
    watched while the step runs: a probe others contended with (share above
    `contention_threshold`) measures them, not the machine, so its `factor` is None and
    `contended` says so. None for a fit without reference rows (older calibrations, the Getzner
    data)."""
    from ..energy.attribution import LoadWatch
    from .calibrate import probe

    layer_fit = load_fit(fit)
    if layer_fit.reference_j is None:
        return None
    watch = LoadWatch()
    now = probe(device)
    load = watch.stop()
    contended = load.busy(contention_threshold)
    return {"factor": None if contended else now["energy_j"] / layer_fit.reference_j,
            "applied": False,
            "reference_now_j": now["energy_j"], "reference_calibration_j": layer_fit.reference_j,
            "others_cpu_share": load.others_cpu_share, "steal_share": load.steal_share,
            "contended": contended}


def state_text(state: dict | None) -> str:
    """What the machine-state probe found, for an estimate's source: the fit's figures are
    used as calibrated, whatever it found (reference.py)."""
    if state is None:
        return "; as calibrated (the fit has no reference rows: the machine's state not metered)"
    if state.get("contended"):
        return (f"; as calibrated; machine state not known: other processes used "
                f"{100 * state['others_cpu_share']:.0f} % of the CPU (steal "
                f"{100 * state['steal_share']:.0f} %) while the reference step was metered")
    return (f"; as calibrated (the reference step costs x{state['factor']:.2f} its calibration "
            f"figure now, {state['reference_now_j']:.3g} J against "
            f"{state['reference_calibration_j']:.3g} J; not applied: it does not follow a "
            "training run's cost)")


def predict_run(model: nn.Module, *, input_size: tuple[int, int, int], batch_size: int,
                eval_batch_size: int, train_size: int, test_size: int, epochs: int,
                compute_dtype: str, device: torch.device,
                contention_threshold: float = 0.25,
                machine_states: dict | None = None) -> tuple[list[dict], dict]:
    """(energy rows, facts) predicted for a whole run before training, for a run computing in
    `compute_dtype` (float32, or amp's bfloat16 / float16). `facts` holds, per estimator, what
    its estimate covers (layers left out, flags), the `fit` it priced the layers with and the
    machine-state factor (measured, not applied), and the seconds taken, for the record.
    `machine_states`: a dict the caller keeps across calls made within seconds of each other
    (the plan's probes), so the machine's present state is metered once for them."""
    started = time.perf_counter()
    train_steps = math.ceil(train_size / batch_size)
    eval_steps = math.ceil(test_size / eval_batch_size)
    rows, facts = [], {}
    bits = 32 if compute_dtype == "float32" else 16
    estimators = {
        Method.OPS_MODEL: lambda training, batch: ops_estimate(
            model, input_size, batch, bits=bits, training=training),
    }
    calibration, not_used = calibration_for(device)
    if not_used:
        facts["calibration"] = not_used
    fit = str(calibration) if calibration is not None else "getzner2023"
    #: what each estimator priced the model with: the ops model's energy table, this machine's
    #: calibration (by file name and fingerprint) or the Getzner fit (its own hardware)
    fits = {Method.OPS_MODEL: DEFAULT_TABLE,
            Method.LAYER_REGRESSION: (f"calibration {calibration.name} "
                                      f"({fingerprint_of(device)})" if calibration is not None
                                      else "getzner2023")}
    estimators[Method.LAYER_REGRESSION] = lambda training, batch: layerwise_estimate(
        model, input_size, batch, fit=fit, training=training, compute_dtype=compute_dtype)
    for method, estimate in estimators.items():
        # only this machine's calibration has a reference step to meter again
        probed = method == Method.LAYER_REGRESSION and calibration is not None
        try:
            step = estimate(True, batch_size)
            forward = estimate(False, eval_batch_size)
            state = None
            if probed:
                key = (str(calibration), str(device), contention_threshold)
                states = machine_states if machine_states is not None else {}
                if key not in states:
                    states[key] = machine_state(calibration, device, contention_threshold)
                state = states[key]
        except Exception as error:  # noqa: BLE001 - an estimator never stops a run
            facts[str(method)] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
            continue
        step_j, forward_j = step.energy_j, forward.energy_j
        energy_j = epochs * (train_steps * step_j + eval_steps * forward_j)
        left_out = (f"; left out {', '.join(step.uncovered_layers)} ({step.uncovered_macs_fraction:.1%}"
                    " of MACs)") if step.uncovered_layers else ""
        flag = (f"{step.source}{state_text(state) if probed else ''}{left_out}"
                + "".join(f"; {f}" for f in step.flags)
                + (f"; {not_used}" if method == Method.LAYER_REGRESSION and not_used else ""))
        rows.append(EnergyRow(None, Phase.PREDICTED, MODEL, method, Kind.ESTIMATED, energy_j,
                              math.nan, flag).to_dict())
        facts[str(method)] = {"train_step_j": step_j, "eval_forward_j": forward_j,
                              "fit": fits[method], "machine_state": state,
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


def early_epochs_prediction(epochs: list[dict], rows: list[dict], total_epochs: int,
                            steady: range | None, epoch_steps: int | None) -> dict:
    """The early-epoch prediction of the headline energy (an energy-table row) from the epochs
    so far (`epochs`: rows with `epoch`, `train_s`, `eval_s`; `rows`: the energy table) and, after
    epoch 1, its steady window (phase `steady`, over the steps `steady` of `epoch_steps`) when
    it has one. One estimator for the study's loop and the Tracker."""
    # one headline choice over the windows it needs (per_epoch would also total the machine's
    # and the constant-power figures: 3x the work, in the loop's wall time once per run)
    head = derive.headline_rows(rows, phases=(Phase.TRAIN, Phase.EVAL, Phase.STEADY))
    work = head[head["phase"] != Phase.STEADY.value] if len(head) else head
    energy = [float(work.loc[work["epoch"] == e["epoch"], "energy_j"].sum()) if len(work) else 0.0
              for e in epochs]
    seconds = [e["train_s"] + e["eval_s"] for e in epochs]
    kind = derive.combined_kind(work["kind"]) if len(work) else "none"
    part = None
    window = head[head["phase"] == Phase.STEADY.value] if len(head) else head
    if steady is not None and epoch_steps and len(window) and len(epochs) == 1:
        eval_rows = work[work["phase"] == Phase.EVAL.value]
        part = SteadyPart(float(window["energy_j"].sum()), float(window["duration_s"].iloc[0]),
                          len(steady), epoch_steps, float(eval_rows["energy_j"].sum()),
                          epochs[0]["eval_s"])
    return early_epochs_row(energy, seconds, total_epochs, kind, part)
