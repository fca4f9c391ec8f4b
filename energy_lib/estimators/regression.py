"""Learned per-layer model (method "layer-regression"): per layer type, a regression from the
layer's parameters to the energy of one pass, fitted on measured single layers; a whole model's
estimate is the sum over its layers.

Why this shape (the sum over dozens of layers must hold up, from batch 1 to 256):
- No additive per-layer constant. An ordinary least-squares fit of energy on MACs gets an
  intercept set by the noise of the largest layers (on the Getzner data: ~200 J for Conv2d),
  and a sum over 20 layers adds twenty of them to a batch-1 AlexNet pass that costs a few
  joules: that is how whole-model errors of hundreds of per cent arise. Here the target is the
  energy per unit of work (J per MAC for Conv2d/Linear, per window comparison for MaxPool2d,
  per element for activations), fitted in log space, so every layer's prediction is
  work x efficiency(shape) and scales to zero with the work. Fixed per-call costs are still
  learned where they are real: small layers get a higher energy per MAC, learned from the
  small layers measured (the features include log work and log batch).
- Log space makes the fit minimise relative error, so a batch-1 layer weighs as much as a
  batch-256 one; a sum is right when each of its terms is right in proportion. The
  back-transform multiplies by Duan's smearing factor (the mean of exp(residual) on the
  training rows), so predictions are means, not medians, and sums are not biased low.
- Memory traffic per unit of work (bytes of input, output and weights per MAC) is a feature:
  it separates compute-bound layers (large convolutions) from memory-bound ones (Linear at
  batch 1 reads every weight for one MAC each), which MACs alone cannot.
- The efficiency surface is fitted with gradient-boosted trees when a layer type has >= 200
  training rows (the Getzner data). Trees do not extrapolate: outside the measured ranges they
  hold the efficiency of the nearest measured layers, and such layers are flagged
  `extrapolated` in the per-layer table. Left out in turn, each Conv2d kernel size (3, 5, 7, 11)
  was predicted from the others within 3-7 % energy-weighted error and 2 % in sum; a smooth
  quadratic in the logs did worse (6-15 %).
- With fewer rows (a quick calibration) a free-form fit in log space extrapolates wildly (a
  slope fitted on six small layers, exponentiated); there the model is E = a x work +
  b x bytes + c with non-negative a, b, c fitted on relative error: linear in the work, and c
  is the per-call cost the smallest layers show, not a noise term.
- Fitted models (`layer_fit.TypeModel` per type, `layer_fit.LayerFit` for all) are exported to
  numpy arrays (fit_cache) and cached on disk, keyed by the data,
  this code and the scikit-learn version: a new process (every papermill kernel) reads the fit
  in milliseconds and predicts without importing scikit-learn, instead of refitting for ~2-3 s.
- Each type is evaluated on a held-out 20 % split (R² on energy, MAPE); the model used for
  predictions is the one fitted on the other 80 %, so the reported metrics describe it.

training=True with a forward-only fit (getzner2023) applies TRAINING_STEP_FACTOR = 3: a training
step is one forward pass plus a backward pass of about twice its MACs (gradient w.r.t. inputs
and w.r.t. weights), the 2:4 split behind the "6 x parameters x tokens" rule (Kaplan et al.
2020). It is a rule of thumb, said so in `source`; a calibration with train_step rows replaces it
with measurements.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from torch import nn

from ..errors import ConfigError
from . import fit_cache
from .fit_cache import ScaledLinear, TreeEnsemble
from .layer_data import (DTYPES, FP32, GETZNER_FILES, LAYER_TYPES, available_fits_text,
                         describe_call, features, getzner2023, read_calibration_with_reference)
from .layer_fit import LayerFit, TypeModel, linear_terms
from .result import Estimate
from .trace import trace_model

TRAINING_STEP_FACTOR = 3.0
TREES_FROM_ROWS = 200
TEST_FRACTION = 0.2
SPLIT_SEED = 0
FITS = {"getzner2023": "Getzner et al. 2023 per-layer data"}
ZERO_COST = (nn.Flatten, nn.Identity)  # views: no arithmetic, no traffic


class _ScaledNonNegative:
    """E = a x work + b x bytes + c with a, b, c >= 0, fitted on relative error (weights 1/E²):
    few rows cannot support a flexible surface, but this form extrapolates linearly in the work,
    never explodes, and its constant c is the per-call cost seen on the smallest layers."""

    def fit(self, terms: np.ndarray, energy: np.ndarray) -> ScaledLinear:
        from sklearn.linear_model import LinearRegression

        scale = terms.max(axis=0)
        model = LinearRegression(positive=True, fit_intercept=False)
        model.fit(terms / scale, energy, sample_weight=1 / energy ** 2)
        return ScaledLinear(scale, model.coef_)


def fit_type(table: pd.DataFrame, layer_type: str, phase: str, dtype: str = FP32) -> TypeModel:
    """Fit one type's model with scikit-learn (imported here only: a prediction from a cached
    fit never needs it), then keep it as numpy arrays (fit_cache) for prediction."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    named, work = features(table, layer_type)
    columns = list(named.columns)
    energy = table["energy_j"].to_numpy(float)
    target = np.log(energy / work)
    keep = np.isfinite(target) & np.isfinite(named.to_numpy()).all(axis=1)
    table, named, work, energy, target = table[keep], named[keep], work[keep], energy[keep], target[keep]
    n = len(target)
    if n >= 10:
        train, test = train_test_split(np.arange(n), test_size=TEST_FRACTION, random_state=SPLIT_SEED)
    else:
        train, test = np.arange(n), np.arange(0)
    if len(train) >= TREES_FROM_ROWS:
        family, kind = "trees", "gradient-boosted trees on log(J/work)"
        regressor = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05,
                                                  random_state=SPLIT_SEED)
        regressor.fit(named.to_numpy()[train], target[train])
        regressor = TreeEnsemble.from_sklearn(regressor)
        smear = float(np.mean(np.exp(target[train] - regressor.predict(named.to_numpy()[train]))))
    else:
        family, kind, smear = "nnls", "non-negative work + bytes + per-call, relative error", 1.0
        regressor = _ScaledNonNegative().fit(linear_terms(named, work)[train], energy[train])
    report = {"layer_type": layer_type, "phase": phase, "dtype": dtype, "model": kind,
              "n_train": len(train), "n_test": len(test), "r2": np.nan, "mape_pct": np.nan}
    model = TypeModel(layer_type, phase, dtype, family, regressor, columns, smear,
                      named.iloc[train].min(), named.iloc[train].max(), report)
    if len(test) >= 2:
        predicted, _ = model.predict(table.iloc[test])
        actual = energy[test]
        report["r2"] = float(r2_score(actual, predicted))
        report["mape_pct"] = float(np.mean(np.abs(predicted - actual) / actual) * 100)
    return model


def fit_table(table: pd.DataFrame, source: str, machine: str,
              reference_j: float | None = None) -> LayerFit:
    """One model per (layer type, phase, compute dtype). One OpenMP thread: on a shared 2-core
    machine the default threading made the same fit 10-20x slower."""
    with threadpool_limits(1):
        return _fit_table(table, source, machine, reference_j)


def _fit_table(table: pd.DataFrame, source: str, machine: str,
               reference_j: float | None) -> LayerFit:
    models = {}
    table = table.assign(dtype=table["dtype"] if "dtype" in table else FP32)
    for (layer_type, phase, dtype), rows in table.groupby(["layer_type", "phase", "dtype"],
                                                          sort=False):
        if layer_type in LAYER_TYPES and len(rows) >= 1:
            models[(layer_type, phase, dtype)] = fit_type(rows.reset_index(drop=True), layer_type,
                                                          phase, dtype)
    return LayerFit(models, source, machine, reference_j)


def load_fit(fit: str | os.PathLike = "getzner2023") -> LayerFit:
    """A fitted per-layer model by name ("getzner2023") or from a calibration CSV; fitted once
    per process (a calibration file is refitted when it changes)."""
    if str(fit) in FITS:
        return _fit_getzner()
    path = Path(fit)
    looks_like_path = path.suffix == ".csv" or os.sep in str(fit) or path.exists()
    if not looks_like_path:
        raise ConfigError(f"fit={str(fit)!r} is unknown; {available_fits_text()}")
    if not path.is_file():
        raise ConfigError(f"calibration file {str(path)!r} does not exist; {available_fits_text()}")
    stat = path.stat()
    return _fit_calibration(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1)
def _fit_getzner() -> LayerFit:
    """Fitted once per process; across processes the fit comes from the disk cache
    (fit_cache), keyed by the bundled files' bytes."""
    from importlib import resources

    from .layer_data import GETZNER_MACHINE

    folder = resources.files("energy_lib").joinpath("data/getzner2023")
    data = [folder.joinpath(name).read_bytes() for name in GETZNER_FILES.values()]
    return fit_cache.cached("getzner2023", data, lambda: fit_table(
        getzner2023(), "fit on Getzner et al. 2023 per-layer data", GETZNER_MACHINE))[0]


@lru_cache(maxsize=8)
def _fit_calibration(path: str, mtime_ns: int, size: int) -> LayerFit:
    def fit() -> LayerFit:
        table, reference_j = read_calibration_with_reference(path)
        machines = sorted(table["machine"].dropna().astype(str).unique()) if "machine" in table else []
        methods = sorted(table["method"].dropna().astype(str).unique()) if "method" in table else []
        machine = ", ".join(machines) or Path(path).stem
        return fit_table(table, f"fit on calibration {path} (meters: {', '.join(methods) or 'unknown'})",
                         machine, reference_j)

    label = "calibration-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(path).stem)
    return fit_cache.cached(label, [path.encode(), Path(path).read_bytes()], fit)[0]


def layerwise_estimate(model: nn.Module, input_size, batch_size: int, *, fit="getzner2023",
                       training: bool = False, compute_dtype: str = FP32) -> Estimate:
    """Energy of one forward pass (or one training step) of one batch on the fit's hardware, as
    the sum of per-layer predictions. Layers of types the fit does not know are left out and
    named; their MACs are in `uncovered_macs_fraction`. `compute_dtype`: what the run computes
    in (float32, or amp's bfloat16 / float16); a layer type the fit has no data for at that
    dtype is answered from its fp32 data and flagged `answered-at-float32`, never silently."""
    if compute_dtype not in DTYPES:
        raise ConfigError(f"compute_dtype={compute_dtype!r} is not allowed; use one of {DTYPES}")
    layer_fit = load_fit(fit)
    phases = ["train_step", "forward"] if training else ["forward"]
    dtypes = [compute_dtype] if compute_dtype == FP32 else [compute_dtype, FP32]
    fallback: set[str] = set()
    trace = trace_model(model, input_size, batch_size)
    rows, described = [], []
    for call in trace.calls:
        row = {"name": call.name, "type": call.type, "macs": call.macs, "energy_j": 0.0,
               "covered": False, "extrapolated": False, "factor": 1.0,
               "input_shape": call.input_shape, "output_shape": call.output_shape}
        rows.append(row)
        if isinstance(call.module, ZERO_COST) or (isinstance(call.module, nn.Dropout) and not training):
            row["covered"] = True  # a view, or dropout at inference: nothing to compute
            continue
        description = describe_call(call)
        if description is None:
            continue
        found = next(((layer_fit.models[key], key[1], key[2]) for key in
                      ((description["layer_type"], p, d) for d in dtypes for p in phases)
                      if key in layer_fit.models), None)
        if found is not None:
            model_for, phase, dtype = found
            described.append((row, description, model_for, phase))
            if dtype != compute_dtype:
                fallback.add(description["layer_type"])
    by_model: dict[int, list] = {}
    for item in described:
        by_model.setdefault(id(item[2]), []).append(item)
    used_factor = False
    for items in by_model.values():
        type_model = items[0][2]
        table = pd.DataFrame([d for _, d, _, _ in items]).reindex(
            columns=["layer_type", "batch_size", "in_channels", "out_channels", "image_size",
                     "kernel_size", "stride", "padding", "in_features", "out_features",
                     "elements", "macs"])
        with threadpool_limits(1):
            energy, outside = type_model.predict(table)
        for (row, _, _, phase), energy_j, out in zip(items, energy, outside):
            factor = TRAINING_STEP_FACTOR if training and phase == "forward" else 1.0
            used_factor |= factor != 1.0
            row.update(energy_j=float(energy_j) * factor, covered=True, extrapolated=bool(out),
                       factor=factor)
    for call, row in zip(trace.calls, rows):
        if isinstance(call.module, nn.Conv2d) and call.module.groups > 1 and row["covered"]:
            row["extrapolated"] = True  # the data holds dense convolutions only
    per_layer = pd.DataFrame(rows)
    uncovered = [r["name"] for r in rows if not r["covered"]]
    uncovered_macs = sum(r["macs"] for r in rows if not r["covered"]) + trace.unattributed_macs
    extrapolated = [r["name"] for r in rows if r["extrapolated"]]
    notes = [f"fitted layer types: {', '.join(sorted({t for t, _, _ in layer_fit.models}))}",
             "operations outside modules (e.g. residual additions in forward()) are not counted"]
    if extrapolated:
        notes.append(f"outside the measured ranges (efficiency held at the nearest measured "
                     f"layers): {', '.join(extrapolated)}")
    in_place = [r["name"] for call, r in zip(trace.calls, rows)
                if r["covered"] and getattr(call.module, "inplace", False)]
    if in_place:  # measured alone as nn.ReLU(): a new output tensor per call
        notes.append(f"{len(in_place)} activation(s) applied in place are priced from "
                     "out-of-place measurements, an over-estimate (README: what a layer alone "
                     "pays)")
    flags = []
    if fallback:
        flags.append(f"answered-at-{FP32}")
        notes.append(f"no {compute_dtype} data for {', '.join(sorted(fallback))}: their energy "
                     f"is the fit's {FP32} figure (the fit has data at "
                     f"{', '.join(layer_fit.dtypes)})")
    what = "one training step" if training else "one forward pass"
    source = f"{layer_fit.source}; hardware: {layer_fit.machine}; {what} in {compute_dtype}"
    if fallback:
        source += f" (answered at {FP32}: no {compute_dtype} data)"
    if used_factor:
        source += (f"; training step = {TRAINING_STEP_FACTOR:g} x forward (backward ~ 2 x forward "
                   "MACs; rule of thumb, not measured)")
    return Estimate(
        energy_j=float(per_layer["energy_j"].sum()) if rows else 0.0, per_layer=per_layer,
        uncovered_macs_fraction=uncovered_macs / trace.total_macs if trace.total_macs else 0.0,
        method="layer-regression", source=source, batch_size=batch_size,
        input_size=tuple(input_size), training=training, uncovered_layers=uncovered, notes=notes,
        compute_dtype=compute_dtype, flags=flags)
