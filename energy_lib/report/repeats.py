"""The study-level conclusions of a report: repeats grouped into settings with 95 % intervals,
the paired comparison of a two-valued axis (amp vs fp32 by default), energy to a target
accuracy, the Pareto front, and the original study's claims put to the test.

Everything here reads the records' tables (`read_study`) and the study file; the statistics
are `report.stats` and `report.claims`, the figures `report.stat_figures`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..energy.derive import energy_label
from ..records import finished_rows
from . import stat_figures, stats
from .claim_registries import claims_for
from .claims import RESULT_COLUMNS, evaluate_claims
from .output import save_csv, save_figure

#: The summary's headline columns and the scale each one's interval lives on (stats.SCALES).
HEADLINE = {"best_val_acc_pct": "percent", "final_val_acc_pct": "percent", "energy_j": "log",
            "constant_power_energy_j": "log", "total_s": "log", "acc_pct_per_wh": "log",
            "energy_to_target_j": "log", "time_to_target_s": "log"}
QUANTITIES = {"energy_j": ("energy", True), "total_s": ("time", True)}


def unpaired_reason(table: pd.DataFrame, study, axis: str | None) -> str:
    """Why the paired comparison cannot be computed (yet), in words; "" when it can: the study
    names no two-valued axis, or one of its values has no finished run so far."""
    if not axis:
        return "no paired comparison: the study has no two-valued compare axis"
    done = finished_rows(table)
    missing = [value for value in study.axes[axis]
               if axis not in done or not (done[axis] == value).any()]
    if missing:
        return (f"no paired comparison yet: no finished run of {axis} = "
                f"{' or '.join(map(repr, missing))} ({len(done)} of {len(table)} cells finished)")
    return ""


#: A target accuracy this close to chance (in percentage points) says little about training:
#: an untrained net's first epoch can reach it.
NEAR_CHANCE_PP = 10.0


def repeats_text(study, summary: pd.DataFrame) -> str:
    """What the records hold per setting against what the study asks (`repeats`): the header
    comes from the data, and two repeats are said to give wide intervals (t = 12.7 at N = 2)."""
    counts = (pd.to_numeric(summary.get("best_val_acc_pct_n"), errors="coerce").dropna()
              if "best_val_acc_pct_n" in summary else pd.Series(dtype=float))
    if counts.empty:
        return f"the study asks for {study.repeats} repeats per setting; none is compared yet"
    low, high = int(counts.min()), int(counts.max())
    ran = f"{low}" if low == high else f"{low} to {high}"
    text = (f"repeats per setting: {study.repeats}" if low == high == study.repeats else
            f"the study asks for {study.repeats} repeats per setting; {ran} per setting are "
            "compared (finished, uncontended)")
    if low == 2:
        text += " (2 repeats: intervals are wide)"
    return text


def target_note(target_acc_pct: float | None, runs_table: pd.DataFrame) -> str:
    """'' or a warning that the target sits within NEAR_CHANCE_PP of chance (100 / classes)
    for a dataset of the study."""
    from ..training.datasets import DATASETS

    if target_acc_pct is None or "dataset" not in runs_table:
        return ""
    classes = [DATASETS[name].num_classes for name in runs_table["dataset"].dropna().unique()
               if name in DATASETS]
    if not classes:
        return ""
    chance = 100.0 / min(classes)
    if target_acc_pct - chance >= NEAR_CHANCE_PP:
        return ""
    return (f"the target accuracy {target_acc_pct:g} % is within {NEAR_CHANCE_PP:g} points of "
            f"chance ({chance:g} % for {min(classes)} classes): reaching it says little about "
            "training, so energy to target is not a fair comparison here; set target_acc_pct in "
            "[study] (the default is the lowest best accuracy of any finished run)")


def targets(runs_table: pd.DataFrame, epochs: pd.DataFrame, target_acc_pct: float | None):
    """(energy-to-target table per run, the target used). The default target is the lowest
    best accuracy across finished runs, so every run has a value."""
    done = finished_rows(runs_table)
    if target_acc_pct is None:
        best = pd.to_numeric(done.get("best_val_acc_pct", pd.Series(dtype=float)), errors="coerce")
        if best.notna().sum() == 0:
            return pd.DataFrame(), None
        target_acc_pct = stats.default_target(best)
    if epochs.empty or "energy_j" not in epochs:
        return pd.DataFrame(), target_acc_pct
    frame = epochs[epochs["cell"].isin(done["cell"])].copy()
    frame["seconds"] = frame["train_s"] + frame["eval_s"]
    frame = frame.dropna(subset=["energy_j"])
    if frame.empty:
        return pd.DataFrame(), target_acc_pct
    return stats.energy_to_target(frame, target_acc_pct), target_acc_pct


def with_energy_labels(summary: pd.DataFrame, table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The summary (`stats.summarise_groups` of `table` by `by`: one row per group, in group
    order) with, per setting, `energy_kind` and `energy_methods` of its finished runs
    (`energy.derive.energy_label`), so a table or figure of settings says what it averages."""
    labels = [energy_label(finished_rows(rows))
              for _, rows in table.groupby(by, sort=True, dropna=False)]
    return summary.assign(energy_kind=[label.kind for label in labels],
                          energy_methods=[label.methods for label in labels])


def study_statistics(runs_table: pd.DataFrame, epochs: pd.DataFrame, study) -> dict:
    """Every table of the study-level analysis (DataFrames), computed from the records."""
    axes = [a for a in study.setting_axes if a in runs_table]
    table = runs_table.copy()
    reached, target = targets(table, epochs, study.target_acc_pct)
    if not reached.empty:
        table = table.merge(reached[["cell", "energy_to_target_j", "time_to_target_s", "reached"]],
                            on="cell", how="left")
    for column in HEADLINE:
        if column not in table:
            table[column] = float("nan")
    if "seed" not in table:
        table["seed"] = 0
    summary = with_energy_labels(stats.summarise_groups(table, axes or ["cell"], list(HEADLINE),
                                                        scales=HEADLINE),
                                 table, axes or ["cell"])
    summary["pareto"] = stats.pareto_beyond_intervals(summary)  # what pareto.png stars
    out = {"table": table, "summary": summary, "targets": reached, "target_acc_pct": target}
    axis = study.compared_axis
    out["compare_axis"] = axis
    out["paired"] = out["paired_accuracy"] = pd.DataFrame()
    out["paired_why_not"] = unpaired_reason(table, study, axis)
    if not out["paired_why_not"]:
        a, b = study.axes[axis]
        others = [x for x in axes if x != axis]
        pieces = [stats.paired_ratio(table, axis, a, b, column, by=others or None,
                                     quantity=name) for column, (name, _) in QUANTITIES.items()]
        pieces = [p for p in pieces if not p.empty]
        out["paired"] = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
        out["paired_accuracy"] = stats.paired_difference(table, axis, a, b, "best_val_acc_pct",
                                                         by=others or None)
    claims = claims_for(study.axes)
    if claims:
        # cells without a usable record (missing, outdated) lack columns: their claims are
        # "not testable", never an error
        usable = table.assign(**{c: None for c in (*RESULT_COLUMNS, *axes) if c not in table})
        if "width" in usable:
            usable = usable.assign(width=pd.to_numeric(usable["width"], errors="coerce"))
        out["claims"] = evaluate_claims(usable, claims=claims, axes=tuple(axes))
    else:
        out["claims"] = pd.DataFrame()
    return out


def write_study_statistics(runs_table: pd.DataFrame, epochs: pd.DataFrame, study,
                           report_dir: str | Path) -> dict:
    """Compute the study-level tables and figures and write them to `report_dir`:
    summary.csv (mean and 95 % interval per setting), paired.csv (ratios b/a of energy and
    time), paired_accuracy.csv (differences b - a in points), energy_to_target.csv, claims.csv,
    pareto.png, paired.png, energy_to_target.png, and energy_by_model.png where models vary."""
    report_dir = Path(report_dir)
    result = study_statistics(runs_table, epochs, study)
    paths = {}
    for name in ("summary", "paired", "paired_accuracy", "targets", "claims"):
        frame = result[name]
        file = "energy_to_target.csv" if name == "targets" else f"{name}.csv"
        paths[name] = save_csv(frame, report_dir / file)
    table = result["table"]
    axes = [a for a in study.setting_axes if a in table]
    finished = finished_rows(table)
    reached = result["targets"]
    figures = {
        "pareto": stat_figures.figure_pareto(result["summary"], finished),
        "paired": stat_figures.figure_paired(result["paired"]),
        "energy_to_target": stat_figures.figure_energy_to_target(
            reached.merge(table[["cell", *axes]], on="cell", how="left") if not reached.empty
            else reached, finished[finished["cell"].isin(reached.get("cell", []))],
            group=axes or "cell"),
    }
    if len(study.axes.get("model", [])) >= 2:
        figures["energy_by_model"] = stat_figures.figure_energy_by_model(
            result["summary"], finished, axes)
    for name, fig in figures.items():
        paths[f"{name}_png"] = save_figure(fig, report_dir / f"{name}.png")
    result["figures"] = figures
    result["paths"] = paths
    return result


def readable_summary(summary: pd.DataFrame, study) -> pd.DataFrame:
    """The summary as `mean ± half-width (N=...)` text per headline column, for the HTML: the
    setting, its energy kind, runs and failed runs, then one column per headline figure."""
    axes = [a for a in study.setting_axes if a in summary]
    columns = [c for c in ("best_val_acc_pct", "energy_j", "total_s", "acc_pct_per_wh",
                           "energy_to_target_j") if f"{c}_mean" in summary]
    text = stats.format_summary(summary, columns)
    keep = axes + [c for c in ("energy_kind", "runs", "failed") if c in text]
    return text[keep + columns].reset_index(drop=True)
