"""Everything derived from the energy table, in one place: per-epoch and per-run totals, the
headline figure and its kind, kWh, mean power, above-idle energy, efficiency and carbon.

The headline of a window is, per component, its best available figure: measured where a meter
read the hardware, else modelled; and of that method, the cell's own share (`scope` process)
where the table has one, else the machine's figure. `machine_energy_j` beside it is the same sum
taking the machine-level figure wherever one exists (GPU rows are per device already), so the
two can be compared; `energy_scope` says which the headline is (process, machine or mixed). The constant-power estimate (an assumed whole-board power) is
never part of the headline; it is reported beside it as `constant_power_*`. Whole-run rows
(`run`, and CodeCarbon's) are not summed with the per-epoch windows: the headline covers the
train and eval windows, as the original study's Table 1 did.

Functions take a DataFrame of energy rows (`records.read_runs(...).energy`, or one run's
`result.energy`); a `cell` column, when present, keeps runs apart. They are pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from .carbon import emissions_kg
from .table import (ASSUMED_BOARD, COLUMNS, JOULES_PER_KWH, JOULES_PER_WH, MACHINE_COMPONENTS,
                    Kind, Method, Phase, Scope, default_scope)

_KIND_RANK = {Kind.MEASURED.value: 0, Kind.MODELLED.value: 1, Kind.ESTIMATED.value: 2}
_WORK_PHASES = (Phase.TRAIN.value, Phase.EVAL.value)
#: "soc": an Apple silicon or Jetson chip's CPU, GPU and memory, measured together by its counters
COMPONENTS = ("gpu", "cpu", "ram", "soc")
#: Per component, the method, kind and scope of its headline figure (per_run's and per_epoch's
#: columns that `energy_label` reads).
LABEL_COLUMNS = [f"{c}_{what}" for c in COMPONENTS for what in ("method", "kind", "scope")]


def as_frame(energy) -> pd.DataFrame:
    """A DataFrame of energy rows with a `cell` column ("" for a single run)."""
    frame = pd.DataFrame(energy) if not isinstance(energy, pd.DataFrame) else energy.copy()
    for column in COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    if "cell" not in frame:
        frame["cell"] = ""
    missing = frame["scope"].isna() | (frame["scope"] == "")
    if missing.any():  # a table without scopes: what its meters saw (CPU/RAM: the machine)
        frame.loc[missing, "scope"] = [str(default_scope(c, str(m))) for c, m in
                                       zip(frame.loc[missing, "component"], frame.loc[missing, "method"])]
    frame["epoch"] = pd.to_numeric(frame["epoch"], errors="coerce").astype("Int64")
    return frame


def combined_scope(scopes: Iterable[str]) -> str:
    """The scope of a sum: `process` or `machine` when all parts are; `mixed` otherwise; `none`
    when nothing was summed."""
    return combined_kind(scopes)


def combined_kind(kinds: Iterable[str]) -> str:
    """The kind of a sum: `measured` or `modelled` when all parts are; `mixed` otherwise; `none`
    when nothing was summed."""
    found = {k for k in kinds if isinstance(k, str) and k}
    if not found:
        return "none"
    return found.pop() if len(found) == 1 else "mixed"


@dataclass(frozen=True)
class EnergyLabel:
    """What a set of energy figures is: each component's headline method, kind and scope, as the
    rows behind a figure, table or sentence have them. The one source of every such label text."""

    parts: tuple[tuple[str, str, str, str], ...]  # (component, method, kind, scope), sorted
    kinds: tuple[str, ...]  # distinct kinds, sorted
    scopes: tuple[str, ...] = ()  # distinct scopes, sorted ("process", "machine")

    @property
    def kind(self) -> str:
        """'modelled', or 'mixed: measured, modelled' -- said outright when kinds differ."""
        if not self.kinds:
            return "no metered figure"
        return self.kinds[0] if len(self.kinds) == 1 else "mixed: " + ", ".join(self.kinds)

    @property
    def scope(self) -> str:
        """'process' (the cell's share), 'machine', or 'mixed: machine, process'."""
        if not self.scopes:
            return "scope unknown"
        return self.scopes[0] if len(self.scopes) == 1 else "mixed: " + ", ".join(self.scopes)

    @property
    def methods(self) -> str:
        """'cpu: tdp-model (modelled, process); ram: ram-model (modelled, process)'."""
        return "; ".join(f"{c}: {m} ({k}, {s})" if s else f"{c}: {m} ({k})"
                         for c, m, k, s in self.parts) or "no meters recorded"

    def __str__(self) -> str:
        """'modelled, process scope -- cpu: ...' (a table without scopes: 'modelled -- ...')."""
        scope = f", {self.scope} scope" if self.scopes else ""
        return f"{self.kind}{scope} -- {self.methods}"


def _known(value) -> bool:
    return isinstance(value, str) and value not in ("", "none")


def energy_label(rows) -> EnergyLabel:
    """The label of the energy figures of `rows` (a DataFrame or a list of dicts: rows of
    per_run / per_epoch, or of the runs and epochs tables of `records.read_runs`), from their
    per-component `<component>_method`, `_kind` and `_scope` columns. Rows without them (a
    record without energy, a hand-made table) contribute their `energy_kind` and
    `energy_scope` alone."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    parts = set()
    for component in COMPONENTS:
        method, kind, scope = f"{component}_method", f"{component}_kind", f"{component}_scope"
        if method in frame and kind in frame:
            scopes = frame[scope] if scope in frame else [""] * len(frame)
            parts |= {(component, m, k, s if _known(s) else "")
                      for m, k, s in zip(frame[method], frame[kind], scopes)
                      if _known(m) and _known(k)}
    kinds = {k for _, _, k, _ in parts}
    if not kinds and "energy_kind" in frame:
        kinds = {k for k in frame["energy_kind"] if _known(k)}
    scopes = {s for *_, s in parts if s}
    if not scopes and "energy_scope" in frame:
        scopes = {s for s in frame["energy_scope"] if _known(s) and s != "mixed"}
    return EnergyLabel(tuple(sorted(parts)), tuple(sorted(kinds)), tuple(sorted(scopes)))


def headline_rows(energy, prefer: str = Scope.PROCESS, phases=_WORK_PHASES) -> pd.DataFrame:
    """Per train/eval window and component, the best available row: measured over modelled,
    then the `prefer` scope over the other (process: the cell's share where the table has one,
    else the machine's figure; machine: the whole machine's figure wherever one exists). A
    window where a meter failed has only its stand-in rows, so the choice is per window.
    `phases`: the windows to choose from (train and eval: what a headline sums)."""
    frame = as_frame(energy)
    work = frame[frame["phase"].isin([str(p) for p in phases]) & (frame["component"] != ASSUMED_BOARD)
                 & (frame["method"] != Method.CODECARBON.value)].copy()
    if work.empty:
        return work
    work["_rank"] = work["kind"].map(_KIND_RANK).fillna(9)
    work["_scope"] = (work["scope"] != str(prefer)).astype(int)
    work["_epoch"] = work["epoch"].fillna(-1)
    work = work.sort_values(["cell", "_epoch", "phase", "component", "_rank", "_scope"],
                            kind="stable")
    best = work.drop_duplicates(["cell", "_epoch", "phase", "component"], keep="first")
    return best.drop(columns=["_rank", "_scope", "_epoch"])


def _constant_power_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["phase"].isin(_WORK_PHASES) & (frame["component"] == ASSUMED_BOARD)]


def _sum_or_nan(values: pd.Series) -> float:
    """A sum that is NaN when any part is unknown (never a partial figure posing as whole)."""
    values = pd.to_numeric(values, errors="coerce")
    return float(values.sum()) if len(values) and values.notna().all() else float("nan")


def _totals(head: pd.DataFrame, constant: pd.DataFrame, keys: list[str],
            machine: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sums of the headline rows, the constant-power rows and the machine-level rows (the
    headline's windows and components with the machine's figures), grouped by `keys`."""
    rows = {}
    for key, group in head.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        seconds = group.drop_duplicates(["epoch", "phase"])["duration_s"].sum()
        row = {
            "energy_j": float(group["energy_j"].sum()),
            "energy_kind": combined_kind(group["kind"]),
            "energy_scope": combined_scope(group["scope"]),
            "above_idle_j": _sum_or_nan(group["above_idle_j"]),
            "mean_power_w": float(group["energy_j"].sum() / seconds) if seconds else float("nan"),
            "flags": "; ".join(sorted({f for f in group["flag"].dropna() if f})),
        }
        for component in COMPONENTS:
            part = group[group["component"] == component]
            if not part.empty:
                row[f"{component}_energy_j"] = float(part["energy_j"].sum())
                row[f"{component}_method"] = " + ".join(sorted(set(part["method"])))
                row[f"{component}_kind"] = combined_kind(part["kind"])
                row[f"{component}_scope"] = combined_scope(part["scope"])
        row["energy_methods"] = energy_label([row]).methods
        rows[key] = row
    if machine is not None:
        for key, group in machine.groupby(keys, sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            if key in rows:
                rows[key]["machine_energy_j"] = float(group["energy_j"].sum())
    for key, group in constant.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.setdefault(key, {"energy_kind": "none"})
        rows[key]["constant_power_energy_j"] = float(group["energy_j"].sum())
    if not rows:
        return pd.DataFrame(columns=[*keys, "energy_j", "energy_kind", "constant_power_energy_j"])
    table = pd.DataFrame([{**dict(zip(keys, key)), **row} for key, row in rows.items()])
    for column in ("energy_j", "constant_power_energy_j", "machine_energy_j"):
        if column not in table:
            table[column] = float("nan")
        table[column.replace("_j", "_kwh")] = table[column] / JOULES_PER_KWH
    table["energy_kind"] = table["energy_kind"].fillna("none")
    return table


def per_epoch(energy) -> pd.DataFrame:
    """One row per (cell, epoch): headline energy of train + eval, its kind, the components'
    parts, and the constant-power estimate of the same windows."""
    frame = as_frame(energy)
    return _totals(headline_rows(frame), _constant_power_rows(frame), ["cell", "epoch"],
                   headline_rows(frame, prefer=Scope.MACHINE))


def per_run(energy) -> pd.DataFrame:
    """One row per cell: the headline energy over every train and eval window (`energy_j`,
    `energy_kwh`, `energy_kind`, `energy_scope`, `energy_methods`, `mean_power_w`,
    `above_idle_j`, per component `<c>_energy_j`, `<c>_method`, `<c>_kind`, `<c>_scope`), the
    machine-level sum of the same windows (`machine_energy_j`) and the constant-power estimate
    (`constant_power_energy_*`)."""
    frame = as_frame(energy)
    return _totals(headline_rows(frame), _constant_power_rows(frame), ["cell"],
                   headline_rows(frame, prefer=Scope.MACHINE))


def _as_metered(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the meters read them: without the cell's shares of machine-level figures."""
    derived = (frame["scope"] == Scope.PROCESS.value) & frame["component"].isin(MACHINE_COMPONENTS)
    return frame[~derived]


def idle_power_w(energy) -> dict[str, dict[str, float]]:
    """cell -> {"component/method": W} over the idle window, as the meters (and the power
    timeline) read it: the machine's figure for CPU and RAM (constant power has no idle)."""
    frame = _as_metered(as_frame(energy))
    idle = frame[(frame["phase"] == Phase.IDLE.value) & (frame["component"] != ASSUMED_BOARD)]
    out: dict[str, dict[str, float]] = {}
    for _, row in idle.iterrows():
        if row["duration_s"]:
            out.setdefault(row["cell"], {})[f"{row['component']}/{row['method']}"] = (
                row["energy_j"] / row["duration_s"])
    return out


@dataclass(frozen=True)
class IdleDrift:
    """Idle power before and after training; drift_pct = (after - before) / before * 100."""

    before_w: float | None
    after_w: float | None
    drift_pct: float | None
    flagged: bool
    threshold_pct: float
    note: str


def _signed_pct(x: float) -> str:
    return ("+" if x >= 0 else "−") + f"{abs(x):.1f}"


def idle_drift_between(before_w: float | None, after_w: float | None,
                       threshold_pct: float = 10) -> IdleDrift:
    """Flag a run whose idle power moved by more than `threshold_pct` % between the baselines
    taken before and after training: a warmer device idles higher, so subtracting one baseline
    from the whole run would mis-state its energy. Missing or non-positive baselines give no
    drift and no flag, with a note saying why."""
    def clean(v):
        return None if v is None or not math.isfinite(float(v)) else float(v)

    before, after = clean(before_w), clean(after_w)
    if before is None or after is None:
        return IdleDrift(before, after, None, False, threshold_pct,
                         "idle baseline missing before or after training")
    if before <= 0:
        return IdleDrift(before, after, None, False, threshold_pct,
                         f"idle power before training is {before} W; no relative drift")
    drift = (after - before) / before * 100
    flagged = abs(drift) > threshold_pct
    note = (f"idle power drifted {_signed_pct(drift)} % (threshold {threshold_pct:g} %)" if flagged
            else f"idle power stable: {_signed_pct(drift)} % (threshold {threshold_pct:g} %)")
    return IdleDrift(before, after, drift, flagged, threshold_pct, note)


def idle_drift(energy, threshold_pct: float = 10.0) -> dict[str, dict]:
    """cell -> idle power before and after training (sum over components, the headline's
    methods, the machine's figures: a warm device idles higher whoever runs on it) and its
    drift, flagged beyond `threshold_pct` %."""
    frame = _as_metered(as_frame(energy))
    out = {}
    for cell, rows in frame.groupby("cell", sort=True):
        watts = {}
        for phase in (Phase.IDLE.value, Phase.IDLE_AFTER.value):
            idle = rows[(rows["phase"] == phase) & (rows["component"] != ASSUMED_BOARD)].copy()
            if idle.empty:
                continue
            idle["_rank"] = idle["kind"].map(_KIND_RANK).fillna(9)
            best = idle.sort_values("_rank", kind="stable").drop_duplicates("component")
            watts[phase] = float((best["energy_j"] / best["duration_s"]).sum())
        drift = idle_drift_between(watts.get(Phase.IDLE.value), watts.get(Phase.IDLE_AFTER.value),
                                   threshold_pct)
        out[cell] = {"idle_before_w": drift.before_w, "idle_after_w": drift.after_w,
                     "idle_drift_pct": drift.drift_pct, "idle_drift_flagged": drift.flagged,
                     "idle_drift_note": drift.note}
    return out


def per_wh(accuracy_pct: float, energy_j: float) -> float:
    """The original study's efficiency figure: accuracy (%) per Wh."""
    if energy_j is None or not energy_j > 0 or accuracy_pct is None:
        return float("nan")
    return accuracy_pct / (energy_j / JOULES_PER_WH)


def emissions_from_j(energy_j: float, intensity_g_per_kwh: float, pue: float = 1.0) -> float:
    """kgCO2eq of `energy_j` drawn by the IT equipment in a facility of `pue` (NaN stays NaN)."""
    if energy_j is None or pd.isna(energy_j):
        return float("nan")
    return emissions_kg(energy_j / JOULES_PER_KWH, intensity_g_per_kwh, pue)


def codecarbon_beside(energy) -> dict:
    """Where CodeCarbon ran alongside: its energy for the whole run (`codecarbon_run_energy_j`)
    and ours for the same window, components and scopes (`run_energy_j_as_codecarbon`: its CPU
    and RAM rows are the process's share in its process mode, the machine's in older records),
    so a reader sees how far two models disagree. Empty where it did not run."""
    frame = as_frame(energy)
    theirs = frame[frame["method"] == Method.CODECARBON.value]
    if theirs.empty:
        return {}
    same = frame[["component", "scope"]].apply(tuple, axis=1).isin(
        set(theirs[["component", "scope"]].apply(tuple, axis=1)))
    ours = frame[(frame["phase"] == Phase.RUN.value) & (frame["method"] != Method.CODECARBON.value)
                 & same]
    return {"codecarbon_run_energy_j": float(theirs["energy_j"].sum()),
            "run_energy_j_as_codecarbon": _sum_or_nan(ours["energy_j"]) if len(ours) else float("nan")}


def run_figures(energy, best_val_acc_pct: float, carbon: dict | None = None) -> dict:
    """The derived figures of one run, as one flat dict (the lab record's summary view and
    each row of results.csv): per_run's columns, efficiency, and emissions."""
    totals = per_run(energy)
    row = totals.iloc[0].to_dict() if len(totals) else {"energy_kind": "none"}
    row.pop("cell", None)
    energy_j = row.get("energy_j", float("nan"))
    constant_j = row.get("constant_power_energy_j", float("nan"))
    row["acc_pct_per_wh"] = per_wh(best_val_acc_pct, energy_j)
    row["constant_power_acc_pct_per_wh"] = per_wh(best_val_acc_pct, constant_j)
    row |= next(iter(idle_drift(energy).values()), {})
    row |= codecarbon_beside(energy)
    if carbon:
        intensity, pue = carbon["intensity_g_per_kwh"], carbon.get("pue", 1.0)
        row["emissions_kg"] = emissions_from_j(energy_j, intensity, pue)
        row["constant_power_emissions_kg"] = emissions_from_j(constant_j, intensity, pue)
    return row
