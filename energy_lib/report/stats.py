"""Repeats, intervals and comparisons over the results of a study (pure functions, no I/O).

One run per cell cannot separate a 5 % effect from noise, so everything here reports a mean with
a 95 % interval and the N behind it. Groups with one usable run get no interval (never a fake
+/- 0); failed repeats are left out of the arithmetic but counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..records import is_finished

T_METHOD = "student-t"
SINGLE_RUN = "single run: no interval"
NO_RUNS = "no runs"
#: How a quantity's interval respects what it can be: `log` for positive quantities (energy,
#: time, ratios: the t interval on the logs, mapped back, around the geometric mean: never below
#: zero), `percent` for accuracies (clipped to [0, 100]), `linear` for the rest.
SCALES = ("linear", "log", "percent")


# --------------------------------------------------------------------------------------------
# intervals


@dataclass(frozen=True)
class Interval:
    """Mean of N values with a two-sided confidence interval; low/high/half_width are None when
    N < 2 (one run says nothing about spread)."""

    mean: float | None
    low: float | None
    high: float | None
    half_width: float | None
    n: int
    method: str
    confidence: float = 0.95


def _finite(values: Iterable) -> np.ndarray:
    array = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    return array[np.isfinite(array)]


def interval(values: Iterable, confidence: float = 0.95, scale: str = "linear") -> Interval:
    """Student-t interval of the mean: mean +/- t(1 - a/2, N-1) * s / sqrt(N), on the `scale`
    the quantity lives on (SCALES): `log` gives the geometric mean and exp of the t interval of
    the logs (non-positive values are not measurements of a positive quantity: dropped);
    `percent` clips the interval to [0, 100].

    Why t and not a bootstrap: our groups hold N = 3..10 repeats. A percentile bootstrap
    resamples only the values it was given, so with N = 3 it can never reach beyond the sample's
    min and max and it ignores the uncertainty in the spread itself; its 95 % intervals cover
    the true mean far less than 95 % of the time at such N. The t interval widens for small N
    (t = 4.30 at N = 3) exactly for that reason and is exact for normal data; repeated training
    runs' accuracies and energies are close enough to normal for this to be the honest choice
    (and their logs, for the positive ones).

    NaN and infinite values are dropped (N says how many were used). N = 1 gives the value with
    no interval; N = 0 gives no mean at all.
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence = {confidence!r} is not allowed; use a value in (0, 1)")
    if scale not in SCALES:
        raise ConfigError(f"scale = {scale!r} is not allowed; use one of {', '.join(SCALES)}")
    data = _finite(values)
    if scale == "log":
        data = np.log(data[data > 0])
    n = int(data.size)
    back = np.exp if scale == "log" else (lambda v: v)
    method = {"linear": T_METHOD, "log": f"{T_METHOD} on logs (geometric mean)",
              "percent": f"{T_METHOD}, clipped to [0, 100]"}[scale]
    if n == 0:
        return Interval(None, None, None, None, 0, NO_RUNS, confidence)
    mean = float(back(data.mean()))
    if n == 1:
        return Interval(mean, None, None, None, 1, SINGLE_RUN, confidence)
    # imported here: the run notebook's figures import this package, and SciPy's stats take a
    # second to import in every cell's kernel for intervals that only the report draws
    from scipy import stats as _scipy_stats

    sem = float(_scipy_stats.sem(data))
    if sem == 0.0:
        # All repeats agree exactly (e.g. a modelled figure): the sample shows no spread.
        return Interval(mean, mean, mean, 0.0, n, method + " (all values equal)", confidence)
    low, high = (float(back(v)) for v in _scipy_stats.t.interval(
        confidence, df=n - 1, loc=float(data.mean()), scale=sem))
    if scale == "percent":
        low, high = max(low, 0.0), min(high, 100.0)
    return Interval(mean, low, high, (high - low) / 2, n, method, confidence)


def format_interval(iv: Interval, digits: int = 2, unit: str = "") -> str:
    """'81.23 ± 0.45 (N=3)' ('50.1 ± 1.2 W (N=3)' with a unit); an interval that is not symmetric
    about its mean (log scale, clipped) reads '52.10 [41.30, 65.72] (N=3)'; a single run reads
    '81.23 (N=1, no interval)'."""
    unit = f" {unit}" if unit else ""
    if iv.mean is None:
        return f"—{unit} (N={iv.n})"
    if iv.half_width is None or iv.low is None or iv.high is None:
        return f"{iv.mean:.{digits}f}{unit} (N={iv.n}, no interval)"
    if not math.isclose(iv.high - iv.mean, iv.mean - iv.low, rel_tol=1e-6, abs_tol=1e-12):
        return f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]{unit} (N={iv.n})"
    return f"{iv.mean:.{digits}f} ± {iv.half_width:.{digits}f}{unit} (N={iv.n})"


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)



def _require(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table]
    if missing:
        raise ConfigError(f"{what}: column(s) {missing} not in the table; it has {list(table)}")


def summarise_groups(table: pd.DataFrame, by: str | Sequence[str], columns: Sequence[str],
                     confidence: float = 0.95, scales: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per group: `<col>_mean`, `<col>_ci_low`, `<col>_ci_high`, `<col>_half_width`,
    `<col>_n` for each headline column, plus `runs` (rows in the group) and `failed` (rows whose
    status is not finished; left out of every interval). `scales`: column -> SCALES entry
    (default linear); a log-scale column's `_mean` is the geometric mean, and `interval_scales`
    names each column's scale.

    Groups where every repeat failed still get a row (N = 0), so nothing vanishes.
    """
    scales = scales or {}
    by = _as_list(by)
    _require(table, [*by, *columns], "summarise_groups")
    done = is_finished(table)
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        ok = group[done.loc[group.index]]
        row["runs"] = len(group)
        row["failed"] = len(group) - len(ok)
        for column in columns:
            iv = interval(ok[column], confidence, scales.get(column, "linear"))
            row[f"{column}_mean"] = iv.mean
            row[f"{column}_ci_low"] = iv.low
            row[f"{column}_ci_high"] = iv.high
            row[f"{column}_half_width"] = iv.half_width
            row[f"{column}_n"] = iv.n
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, "runs", "failed",
                                      *[f"{c}_{s}" for c in columns
                                        for s in ("mean", "ci_low", "ci_high", "half_width", "n")]])
    for column in columns:  # None -> NaN so the CSV and arithmetic see numbers
        for suffix in ("mean", "ci_low", "ci_high", "half_width"):
            out[f"{column}_{suffix}"] = pd.to_numeric(out[f"{column}_{suffix}"], errors="coerce")
    out["interval_scales"] = "; ".join(f"{c}: {scales.get(c, 'linear')}" for c in columns)
    return out


def format_summary(summary: pd.DataFrame, columns: Sequence[str], digits: int = 2) -> pd.DataFrame:
    """The summary with each headline column as 'mean ± half-width (N=k)' text, for tables."""
    out = summary[[c for c in summary if not any(c.startswith(f"{h}_") for h in columns)]].copy()
    for column in columns:
        out[column] = [
            format_interval(Interval(_none(r[f"{column}_mean"]), _none(r[f"{column}_ci_low"]),
                                     _none(r[f"{column}_ci_high"]), _none(r[f"{column}_half_width"]),
                                     int(r[f"{column}_n"]), ""), digits)
            for _, r in summary.iterrows()]
    return out


def _none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


# --------------------------------------------------------------------------------------------
# paired comparisons


def _pairs(table: pd.DataFrame, axis: str, a, b, value: str, pair_on: str,
           by: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(complete, wide): one row per (by..., pair_on) with the finished value under `a` and `b`
    (a_value, b_value); `complete` keeps only rows where both are present."""
    _require(table, [axis, value, pair_on, *by], "paired comparison")
    values = set(table[axis].dropna().unique())
    if a not in values or b not in values:
        raise ConfigError(f"paired comparison: axis {axis!r} has values {sorted(map(str, values))}; "
                          f"both {a!r} and {b!r} must be present")
    data = table[is_finished(table) & table[axis].isin([a, b])]
    data = data.assign(_v=pd.to_numeric(data[value], errors="coerce"))
    data = data[np.isfinite(data["_v"])]
    dupes = data.duplicated([*by, pair_on, axis], keep=False)
    if dupes.any():
        raise ConfigError(f"paired comparison: more than one finished run per {[*by, pair_on, axis]} "
                          f"(e.g. {data.loc[dupes, [*by, pair_on, axis]].iloc[0].to_dict()})")
    wide = data.pivot_table(index=[*by, pair_on], columns=axis, values="_v", aggfunc="first",
                            dropna=False)
    wide = wide.reindex(columns=[a, b]).reset_index()
    wide.columns = [*by, pair_on, "a_value", "b_value"]
    return wide.dropna(subset=["a_value", "b_value"]), wide


def _settings(table: pd.DataFrame, by: list[str]) -> list[tuple]:
    """Every setting of `by` present in the table (settings whose runs all failed included)."""
    if not by:
        return [()]
    return [k if isinstance(k, tuple) else (k,)
            for k, _ in table.groupby(by, sort=True, dropna=False)]


def _unpaired(wide: pd.DataFrame, pairs: pd.DataFrame) -> int:
    """Finished runs whose partner is missing or failed."""
    return int(wide[["a_value", "b_value"]].notna().sum().sum() - 2 * len(pairs))


def _select(frame: pd.DataFrame, by: list[str], key: tuple) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for column, v in zip(by, key):
        mask &= frame[column].isna() if pd.isna(v) else frame[column] == v
    return frame[mask]


def paired_ratio(table: pd.DataFrame, axis: str, a, b, value: str, pair_on: str = "seed",
                 by: str | Sequence[str] | None = None, confidence: float = 0.95,
                 quantity: str | None = None, lower_is_better: bool = True) -> pd.DataFrame:
    """Per setting of `by`, the ratio b/a of `value` between runs that share `pair_on` (seed).

    Ratios are averaged on the log scale: the geometric mean ratio exp(mean(log(b/a))) with a
    t-interval on the log ratios mapped back by exp. Why logs: a ratio of 0.5 and one of 2 are
    equal and opposite effects and average to 1 only in logs; the interval stays positive and is
    symmetric in which side is called `a`. Pairing by seed removes the run-to-run variation the
    two settings share (data order, init). Runs without a finished partner are counted in
    `unpaired`, not used. Needs positive values (energies, times, accuracies).

    Columns: by..., axis, a, b, value, ratio, ratio_ci_low, ratio_ci_high, n (pairs),
    unpaired, confidence, method, verdict.
    """
    by = _as_list(by)
    complete, wide = _pairs(table, axis, a, b, value, pair_on, by)
    positive = (complete["a_value"] > 0) & (complete["b_value"] > 0)
    if not positive.all():
        bad = complete[~positive].iloc[0]
        raise ConfigError(f"paired_ratio: {value!r} must be positive for a ratio; "
                          f"got {bad['a_value']} / {bad['b_value']} at {pair_on} = {bad[pair_on]}")
    rows = []
    for key in _settings(table, by):
        pairs = _select(complete, by, key)
        everything = _select(wide, by, key)
        iv = interval(np.log(pairs["b_value"] / pairs["a_value"]), confidence)
        row = dict(zip(by, key))
        row.update(axis=axis, a=a, b=b, value=value,
                   ratio=math.exp(iv.mean) if iv.mean is not None else math.nan,
                   ratio_ci_low=math.exp(iv.low) if iv.low is not None else math.nan,
                   ratio_ci_high=math.exp(iv.high) if iv.high is not None else math.nan,
                   n=iv.n, unpaired=_unpaired(everything, pairs), pair_on=pair_on,
                   confidence=confidence,
                   method=("geometric mean of paired ratios, " + iv.method + " on log ratios"
                           if iv.n else NO_RUNS))
        row["verdict"] = verdict(row, quantity=quantity or value, lower_is_better=lower_is_better)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(table: pd.DataFrame, axis: str, a, b, value: str, pair_on: str = "seed",
                      by: str | Sequence[str] | None = None,
                      confidence: float = 0.95) -> pd.DataFrame:
    """Per setting of `by`, the mean paired difference b - a of `value` with a t-interval.
    For quantities that add (accuracy in percentage points) rather than scale.

    Columns: by..., axis, a, b, value, difference, diff_ci_low, diff_ci_high, n, unpaired,
    confidence, method.
    """
    by = _as_list(by)
    complete, wide = _pairs(table, axis, a, b, value, pair_on, by)
    rows = []
    for key in _settings(table, by):
        pairs = _select(complete, by, key)
        everything = _select(wide, by, key)
        iv = interval(pairs["b_value"] - pairs["a_value"], confidence)
        row = dict(zip(by, key))
        row.update(axis=axis, a=a, b=b, value=value,
                   difference=iv.mean if iv.mean is not None else math.nan,
                   diff_ci_low=iv.low if iv.low is not None else math.nan,
                   diff_ci_high=iv.high if iv.high is not None else math.nan,
                   n=iv.n, unpaired=_unpaired(everything, pairs), pair_on=pair_on,
                   confidence=confidence, method=iv.method)
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(x: float) -> str:
    return f"{x:.1f}".replace("-", "−")


def _signed_pct(x: float) -> str:
    return ("+" if x >= 0 else "−") + f"{abs(x):.1f}"


def verdict(ratio_interval, quantity: str = "energy", lower_is_better: bool = True) -> str:
    """Plain words for one row of `paired_ratio` (a mapping with b, ratio, ratio_ci_low,
    ratio_ci_high, n, confidence).

    Percentages are relative changes of b against a: 'amp saves 12.3 % energy (95 % CI
    8.1–16.2 %)'. An interval that contains 1 is 'no difference detectable at N = 3' with the
    signed interval, because absence of evidence at small N is not evidence of no effect.
    For a quantity where higher is better (accuracy) the words are 'gains' / 'loses'.
    """
    r = ratio_interval
    name, n = r["b"], int(r["n"])
    level = f"{round(float(r.get('confidence', 0.95)) * 100):g} % CI"
    if n == 0:
        return f"not comparable: no {r.get('pair_on', 'seed')} has finished runs of both {r['a']} and {name}"
    change = (float(r["ratio"]) - 1) * 100
    if n == 1 or pd.isna(r["ratio_ci_low"]):
        return (f"single pair: {name} {_signed_pct(change)} % {quantity} against {r['a']}; "
                f"no interval at N = 1")
    low, high = (float(r["ratio_ci_low"]) - 1) * 100, (float(r["ratio_ci_high"]) - 1) * 100
    if low <= 0 <= high:
        return (f"no difference detectable at N = {n} "
                f"({level} {_signed_pct(low)} to {_signed_pct(high)} %)")
    better = high < 0 if lower_is_better else low > 0
    if lower_is_better:
        word = "saves" if better else "costs"
        size, lo, hi = (-change, -high, -low) if better else (change, low, high)
        extra = "" if better else " more"
    else:
        word = "gains" if better else "loses"
        size, lo, hi = (change, low, high) if better else (-change, -high, -low)
        extra = ""
    return f"{name} {word} {_pct(size)} %{extra} {quantity} ({level} {_pct(lo)}–{_pct(hi)} %)"


# --------------------------------------------------------------------------------------------
# energy to a target accuracy


def _check_target(target_acc_pct: float) -> float:
    target = float(target_acc_pct)
    if not 0 < target <= 100:
        raise ConfigError(f"target_acc_pct = {target_acc_pct!r} is not allowed; use a value in (0, 100]")
    return target


def energy_to_target(epochs: pd.DataFrame, target_acc_pct: float, energy_col: str = "energy_j",
                     time_col: str = "seconds", run_col: str | None = "cell",
                     acc_col: str = "val_acc_pct", start_acc_pct: float = 0.0) -> pd.DataFrame:
    """Per run: the cumulative energy (J) and time (s) at which validation accuracy first reaches
    the target, interpolated linearly inside the epoch where it is crossed.

    Within the crossing epoch k, accuracy is taken to rise linearly from the previous epoch's
    value to epoch k's, while energy and time accrue evenly; the fraction
    f = (target - acc[k-1]) / (acc[k] - acc[k-1]) of epoch k's energy and time is added to the
    total of epochs before it. Before epoch 1 accuracy is `start_acc_pct`, by default 0 — not
    chance — because nothing is measured there and 0 needs no class count; against chance it
    gives a slightly larger (conservative) figure for a target crossed in epoch 1. Pass chance
    (e.g. 10 for CIFAR-10) to change that.

    Runs that never reach the target keep a row with reached=False, NaN energy and time, and
    their total energy, so they are marked rather than dropped.
    """
    target = _check_target(target_acc_pct)
    _require(epochs, ["epoch", acc_col, energy_col, time_col] + ([run_col] if run_col else []),
             "energy_to_target")
    runs = epochs.groupby(run_col, sort=True, dropna=False) if run_col else [(None, epochs)]
    rows = []
    for run, frame in runs:
        frame = frame.sort_values("epoch")
        energy_before_j = time_before_s = 0.0
        previous = float(start_acc_pct)
        row = {run_col: run} if run_col else {}
        row.update(reached=False, epoch=math.nan, energy_to_target_j=math.nan,
                   time_to_target_s=math.nan)
        for epoch, acc, energy_j, seconds in zip(frame["epoch"], frame[acc_col].astype(float),
                                                 frame[energy_col].astype(float),
                                                 frame[time_col].astype(float)):
            if not math.isnan(acc) and acc >= target:
                fraction = 1.0 if acc == previous else (target - previous) / (acc - previous)
                fraction = min(max(fraction, 0.0), 1.0)
                row.update(reached=True, epoch=epoch,
                           energy_to_target_j=energy_before_j + fraction * energy_j,
                           time_to_target_s=time_before_s + fraction * seconds)
                break
            energy_before_j += energy_j
            time_before_s += seconds
            if not math.isnan(acc):
                previous = acc
        row.update(best_val_acc_pct=frame[acc_col].max(),
                   total_energy_j=frame[energy_col].astype(float).sum(min_count=1),
                   total_s=frame[time_col].astype(float).sum(min_count=1),
                   target_acc_pct=target)
        rows.append(row)
    columns = ([run_col] if run_col else []) + ["reached", "epoch", "energy_to_target_j",
                                                "time_to_target_s", "best_val_acc_pct",
                                                "total_energy_j", "total_s", "target_acc_pct"]
    return pd.DataFrame(rows, columns=columns)


def default_target(best_accs: Iterable) -> float:
    """The lowest best validation accuracy (%) among the given runs, so that every run reaches
    it and every cell has an energy-to-target figure. Pass one value per run (not per-cell
    means), otherwise a weak repeat may fall short."""
    data = _finite(best_accs)
    if data.size == 0:
        raise ConfigError("default_target: no finished run has a best validation accuracy")
    return float(data.min())


# --------------------------------------------------------------------------------------------
# Pareto front


def pareto_front(points: pd.DataFrame, x: str = "energy_j", y: str = "best_val_acc_pct") -> pd.Series:
    """Boolean mask (same index as `points`): True for points no other point beats, i.e. none
    has x <= and y >= with at least one strict. Lower x (energy) and higher y (accuracy) win.

    Ties: exact duplicates of an optimal point are all optimal (neither beats the other), so the
    result does not depend on row order; duplicates of a dominated point are all dominated.
    Points with a missing x or y are not on the front and beat nothing.
    """
    _require(points, [x, y], "pareto_front")
    xs = pd.to_numeric(points[x], errors="coerce").to_numpy(float)
    ys = pd.to_numeric(points[y], errors="coerce").to_numpy(float)
    valid = np.isfinite(xs) & np.isfinite(ys)
    xv, yv = xs[valid], ys[valid]
    # beats[j, i]: point j dominates point i
    beats = ((xv[:, None] <= xv[None, :]) & (yv[:, None] >= yv[None, :])
             & ((xv[:, None] < xv[None, :]) | (yv[:, None] > yv[None, :])))
    mask = np.zeros(len(points), dtype=bool)
    mask[np.flatnonzero(valid)] = ~beats.any(axis=0)
    return pd.Series(mask, index=points.index, name="pareto")


def pareto_beyond_intervals(summary: pd.DataFrame, x: str = "energy_j",
                            y: str = "best_val_acc_pct") -> pd.Series:
    """Boolean mask over the settings of a `summarise_groups` table: True for the settings
    starred as Pareto-optimal. Setting j dominates setting i when j is better beyond the
    intervals on one axis (its whole interval below i's on x, or above i's on y) and not worse
    beyond them on the other (its interval not wholly above i's on x, not wholly below on y).
    Lower x (energy) and higher y (accuracy) win. A setting with fewer than two runs has no
    interval: it is never starred and dominates nothing. Requiring "better beyond the intervals
    on both axes" instead would star nearly every setting: rarely does one win on both at once."""
    need = [f"{x}_ci_low", f"{x}_ci_high", f"{y}_ci_low", f"{y}_ci_high", f"{y}_n"]
    _require(summary, need, "pareto_beyond_intervals")
    x_low, x_high = (pd.to_numeric(summary[f"{x}_ci_{s}"], errors="coerce").to_numpy(float)
                     for s in ("low", "high"))
    y_low, y_high = (pd.to_numeric(summary[f"{y}_ci_{s}"], errors="coerce").to_numpy(float)
                     for s in ("low", "high"))
    n = pd.to_numeric(summary[f"{y}_n"], errors="coerce").fillna(0).to_numpy()
    judged = (n >= 2) & np.isfinite(x_low) & np.isfinite(x_high) & np.isfinite(y_low) \
        & np.isfinite(y_high)
    # [j, i]: j's interval wholly better than i's / wholly worse than i's, per axis
    x_better, x_worse = x_high[:, None] < x_low[None, :], x_low[:, None] > x_high[None, :]
    y_better, y_worse = y_low[:, None] > y_high[None, :], y_high[:, None] < y_low[None, :]
    beats = (x_better & ~y_worse) | (y_better & ~x_worse)
    beats &= judged[:, None] & judged[None, :]
    return pd.Series(judged & ~beats.any(axis=0), index=summary.index, name="pareto")
