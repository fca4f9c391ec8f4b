"""Figures for repeats and comparisons: accuracy vs energy with its Pareto front, paired ratios,
energy to a target accuracy.

Names never sit as free text near points (they would overlap); points are keyed in a legend.
Every energy axis says the kind and methods of the runs it shows (`energy.derive.energy_label`),
'mixed: ...' when kinds differ. Names are plain text (`output.plain_figure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..energy.derive import energy_label
from . import stats
from .output import legend_name, plain_figure, say_empty

ENERGY_SCALE = {"J": 1.0, "Wh": 1 / 3600, "kWh": 1 / 3.6e6}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_SUMMARY_SUFFIXES = ("_mean", "_ci_low", "_ci_high", "_half_width", "_n")
_PAIRED_COLUMNS = {"axis", "a", "b", "value", "ratio", "ratio_ci_low", "ratio_ci_high", "n",
                   "unpaired", "pair_on", "confidence", "method", "verdict"}


def _empty(fig, ax, why: str):
    ax.set_axis_off()
    say_empty(ax, why)
    return fig


def _unit(energy_unit: str) -> float:
    if energy_unit not in ENERGY_SCALE:
        raise ValueError(f"energy_unit = {energy_unit!r} is not allowed; use one of {list(ENERGY_SCALE)}")
    return ENERGY_SCALE[energy_unit]


def _setting_names(frame: pd.DataFrame, label: str | None, exclude: set[str]) -> list[str]:
    if label is not None:
        return [str(v) for v in frame[label]]
    keys = [c for c in frame if c not in exclude and not c.endswith(_SUMMARY_SUFFIXES)]
    return [" ".join(f"{k}={row[k]}" for k in keys) for _, row in frame.iterrows()]


def _errors(frame: pd.DataFrame, column: str, scale: float = 1.0):
    """Asymmetric error-bar lengths; NaN where there is no interval (one run)."""
    mean = frame[f"{column}_mean"].astype(float) * scale
    low = frame[f"{column}_ci_low"].astype(float) * scale
    high = frame[f"{column}_ci_high"].astype(float) * scale
    return np.vstack([(mean - low).to_numpy(), (high - mean).to_numpy()])


@plain_figure
def figure_pareto(summary: pd.DataFrame, runs: pd.DataFrame, x: str = "energy_j",
                  y: str = "best_val_acc_pct", label: str | None = None, energy_unit: str = "Wh",
                  y_label: str = "best validation accuracy (%)", confidence: float = 0.95):
    """Accuracy vs energy per setting (a `summarise_groups` table of `runs`, the finished runs
    behind it): means with CI bars, the Pareto-optimal settings (the summary's `pareto` column
    where it has one, else `stats.pareto_beyond_intervals`: none better beyond the intervals on
    one axis and not worse beyond them on the other; never a setting of one run) drawn larger,
    starred and joined by a step line; every setting named in the legend beside the axes."""
    scale = _unit(energy_unit)
    fig, ax = plt.subplots(figsize=(8.0, 4.6))
    need = [f"{x}_mean", f"{y}_mean"]
    if summary is None or summary.empty or any(c not in summary for c in need):
        return _empty(fig, ax, "no settings to plot: the summary is empty or lacks "
                               f"{' and '.join(need)}")
    data = summary.dropna(subset=need).reset_index(drop=True)
    hidden = len(summary) - len(data)
    if data.empty:
        return _empty(fig, ax, "no setting has a finished run with both energy and accuracy")
    names = _setting_names(data, label, {"runs", "failed", "energy_kind", "energy_methods",
                                         "interval_scales", "pareto"})
    front = (data["pareto"] if "pareto" in data and (x, y) == ("energy_j", "best_val_acc_pct")
             else stats.pareto_beyond_intervals(data, x, y)).to_numpy(bool)
    xerr, yerr = _errors(data, x, scale), _errors(data, y)
    for i, name in enumerate(names):
        n = int(data[f"{y}_n"].iloc[i]) if f"{y}_n" in data else None
        single = n is not None and n < 2
        text = f"{'★ ' if front[i] else ''}{name}" + (f" (N={n})" if n is not None else "")
        color = f"C{i % 10}"
        ax.errorbar(data[f"{x}_mean"].iloc[i] * scale, data[f"{y}_mean"].iloc[i],
                    xerr=None if single else xerr[:, i:i + 1],
                    yerr=None if single else yerr[:, i:i + 1],
                    fmt=MARKERS[(i // 10) % len(MARKERS)], color=color, capsize=3,
                    markersize=10 if front[i] else 6,
                    markeredgecolor="black" if front[i] else color,
                    markeredgewidth=1.6 if front[i] else 1.0,
                    markerfacecolor="none" if single else color, label=legend_name(text))
    optimal = data[front].sort_values(f"{x}_mean")
    if len(optimal) > 1:
        ax.step(optimal[f"{x}_mean"] * scale, optimal[f"{y}_mean"], where="post", color="0.4",
                linestyle="--", linewidth=1, zorder=0, label="Pareto front")
    ax.set_xlabel(f"energy per run ({energy_unit}) — {energy_label(runs)}")
    ax.set_ylabel(y_label)
    note = f"; {hidden} setting(s) without finished runs not shown" if hidden else ""
    ax.set_title(f"accuracy vs energy: mean and {confidence:.0%} CI over repeats (hollow: one "
                 f"run, no interval, never starred)\n★: no other setting better beyond the intervals on "
                 f"one axis and not worse beyond them on the other{note}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0,
              title="★ Pareto-optimal", title_fontsize=7)
    fig.tight_layout()
    return fig


@plain_figure
def figure_paired(ratios: pd.DataFrame, x: str | None = None):
    """Paired ratio b/a (e.g. amp/fp32) per setting with its interval, one series per compared
    quantity, and a line at 1 (no difference). Hollow markers: one pair, no interval."""
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    if ratios is None or ratios.empty or "ratio" not in ratios:
        return _empty(fig, ax, "no paired comparison to plot: no setting has runs of both values")
    keys = [c for c in ratios if c not in _PAIRED_COLUMNS]
    x = x or (keys[0] if keys else None)
    data = ratios.copy()
    if x is None:
        data["_setting"] = "all"
        x = "_setting"
    settings = list(dict.fromkeys(data.sort_values(x)[x]))
    values = list(dict.fromkeys(data["value"]))
    width = 0.6 / max(len(values), 1)
    for j, value in enumerate(values):
        rows = data[data["value"] == value].set_index(x).reindex(settings)
        offset = (j - (len(values) - 1) / 2) * width
        positions = np.arange(len(settings)) + offset
        ratio = rows["ratio"].astype(float).to_numpy()
        low = rows["ratio_ci_low"].astype(float).to_numpy()
        high = rows["ratio_ci_high"].astype(float).to_numpy()
        has = np.isfinite(low) & np.isfinite(high)
        color = f"C{j % 10}"
        ax.errorbar(positions[has], ratio[has], yerr=[ratio[has] - low[has], high[has] - ratio[has]],
                    fmt="o", color=color, capsize=4, label=legend_name(value))
        lone = ~has & np.isfinite(ratio)
        if lone.any():
            ax.plot(positions[lone], ratio[lone], "o", markerfacecolor="none", color=color,
                    label=legend_name(f"{value}: one pair, no interval"))
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="no difference")
    first = data.iloc[0]
    ax.set_xticks(range(len(settings)), [f"{x}={s}" if x != "_setting" else str(s)
                                         for s in settings])
    ax.set_xlabel(x if x != "_setting" else "")
    ax.set_ylabel(f"{first['b']} / {first['a']} (geometric mean over paired "
                  f"{first.get('pair_on', 'seed')}s)")
    level = float(first.get("confidence", 0.95))
    ax.set_title(f"paired ratio {first['b']}/{first['a']} per {x} with {level:.0%} CI "
                 f"(below 1: {first['b']} uses less)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


@plain_figure
def figure_energy_to_target(targets: pd.DataFrame, runs: pd.DataFrame,
                            group: str | Sequence[str] = "cell", energy_unit: str = "Wh",
                            confidence: float = 0.95):
    """Energy to the target accuracy per run (an `energy_to_target` table, joined with whatever
    names the groups; `runs` the runs behind it, whose energy it is), one column of dots per
    group with the mean and CI when every run got there; runs that never reached the target are
    counted under their group, not dropped."""
    scale = _unit(energy_unit)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    group = [group] if isinstance(group, str) else list(group)
    if targets is None or targets.empty or any(g not in targets for g in group):
        return _empty(fig, ax, "no energy-to-target figures: no finished runs"
                      if targets is None or targets.empty else f"no column {group} to group by")
    ticks, mean_labelled = [], False
    for i, (key, rows) in enumerate(targets.groupby(group, sort=True, dropna=False)):
        key = key if isinstance(key, tuple) else (key,)
        reached = rows[rows["reached"].astype(bool)]
        energy = reached["energy_to_target_j"].astype(float).to_numpy() * scale
        spread = np.linspace(-0.1, 0.1, len(energy)) if len(energy) > 1 else np.zeros(len(energy))
        ax.plot(i + spread, energy, "o", color="C0", alpha=0.6, markersize=4,
                label="one run" if i == 0 else None)
        missed = len(rows) - len(reached)
        if missed == 0 and len(energy) > 1:
            iv = stats.interval(energy, confidence)
            ax.errorbar(i + 0.25, iv.mean, yerr=[[iv.mean - iv.low], [iv.high - iv.mean]],
                        fmt="s", color="C1", capsize=4,
                        label=None if mean_labelled else f"mean, {confidence:.0%} CI")
            mean_labelled = True
        name = " ".join(str(k) for k in key)
        ticks.append(name + (f"\n{missed} of {len(rows)} not reached" if missed else ""))
    ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(ticks) - 0.5)
    target = targets["target_acc_pct"].dropna().unique() if "target_acc_pct" in targets else []
    what = (f"{target[0]:g} % validation accuracy" if len(target) == 1
            else "the target accuracy (targets differ between runs)" if len(target) > 1
            else "the target accuracy")
    label = energy_label(runs)
    ax.set_ylabel(f"energy to {what} ({energy_unit}) — {label.kind}", fontsize=8)
    ax.set_title("energy until validation accuracy first reaches the target (interpolated "
                 f"inside the epoch)\n{label.kind}: {label.methods}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7)
    if not np.isfinite(targets["energy_to_target_j"].astype(float)).any():
        ax.text(0.5, 0.5, "no run reached the target", ha="center", va="center",
                transform=ax.transAxes)
    fig.tight_layout()
    return fig


__all__ = ["figure_pareto", "figure_paired", "figure_energy_to_target"]


@plain_figure
def figure_energy_by_model(summary: pd.DataFrame, runs: pd.DataFrame, axes: Sequence[str],
                           energy_unit: str = "Wh", confidence: float = 0.95):
    """Energy per run against the model, models in order of their dense MACs per image (for the
    ResNets: depth), one line per setting of the other axes: mean and interval over repeats
    (hollow: one run). Seed 002's 'energy over depth' question, answered from our runs."""
    scale = _unit(energy_unit)
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    need = ["model", "energy_j_mean"]
    if summary is None or summary.empty or any(c not in summary for c in need):
        return _empty(fig, ax, "no model axis or no energy per setting to plot")
    data = summary.dropna(subset=["energy_j_mean"])
    macs = (pd.to_numeric(runs.get("dense_macs_per_image", pd.Series(dtype=float)),
                          errors="coerce").groupby(runs.get("model")).median()
            if "model" in runs else pd.Series(dtype=float))
    models = sorted(data["model"].unique(), key=lambda m: (macs.get(m, np.inf), str(m)))
    if len(models) < 2:
        return _empty(fig, ax, "fewer than two models with a finished run")
    position = {m: i for i, m in enumerate(models)}
    others = [a for a in axes if a not in ("model", "seed") and a in data]
    groups = data.groupby(others, sort=True, dropna=False) if others else [((), data)]
    for i, (key, rows) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        rows = rows.sort_values("model", key=lambda c: c.map(position))
        name = " ".join(f"{a}={v}" for a, v in zip(others, key)) or "all runs"
        n = rows["energy_j_n"].astype(int) if "energy_j_n" in rows else pd.Series(1, rows.index)
        x = rows["model"].map(position).to_numpy(dtype=float) + (i - len(groups) / 2) * 0.03
        y = rows["energy_j_mean"].to_numpy(dtype=float) * scale
        err = _errors(rows, "energy_j", scale)
        err[:, (n < 2).to_numpy()] = np.nan
        color = f"C{i % 10}"
        ax.plot(x, y, "-", color=color, linewidth=1, alpha=0.7)
        ax.errorbar(x, y, yerr=err, fmt=MARKERS[(i // 10) % len(MARKERS)], color=color,
                    capsize=3, markerfacecolor=color if (n >= 2).all() else "none",
                    label=legend_name(f"{name} (N={n.min()}–{n.max()})" if n.min() != n.max()
                                      else f"{name} (N={n.min()})"))
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([f"{m}\n{macs[m] / 1e6:,.1f} MMAC/img" if m in macs and np.isfinite(
        macs[m]) else str(m) for m in models], fontsize=8)
    ax.set_ylabel(f"energy per run ({energy_unit})")
    ax.set_xlabel(f"model, in order of compute per image — energy: {energy_label(runs)}",
                  fontsize=8)
    ax.set_title(f"energy by model depth: mean and {confidence:.0%} CI over repeats "
                 f"(hollow: one run, no interval)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0)
    fig.tight_layout()
    return fig
