"""The report of a folder of runs `energy_lib.Tracker` measured (`energy-study report DIR`):
what a study's report says about its cells, for runs that no study file describes.

Runs that share a Tracker name are repeats of one setting: each name gets its mean energy,
time and accuracy with 95 % intervals over its finished, uncontended runs on one machine (the
same rules as a study's report: `shared_machine.contended`, `findings.one_machine`). Every
record also keeps its own row in results.csv, its early-epoch prediction beside what it then
measured, and its energy per epoch in a figure that names the machine it was measured on.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd

from ..records import FINISHED, Status, read_runs
from .estimates import estimates_table
from .findings import machines_line, one_machine
from .output import legend_name, plain_figure, save_csv, save_figure, say_empty
from .shared_machine import CONTENDED_FLAG, add_flag, contended
from .stats import format_summary, summarise_groups

#: results.csv: one row per record, these columns first (the rest follow as recorded)
RESULT_COLUMNS = ("cell", "name", "status", "stop_reason", "error", "epochs_completed",
                  "epochs_planned", "total_s", "energy_j", "energy_kind", "energy_scope",
                  "energy_methods", "machine_energy_j", "contended", "others_cpu_share", "flags",
                  "best_val_acc_pct", "emissions_kg", "provenance_machine", "path")
#: the columns summarised per name, with intervals, and how findings.md names them
SUMMARISED = ("energy_j", "total_s", "best_val_acc_pct")
LABELS = {"energy_j": "energy (J)", "total_s": "time (s)",
          "best_val_acc_pct": "best accuracy (%)"}


def build_tracked(folder: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write findings.md, results.csv, summary.csv, predictions.csv and energy_per_epoch.png
    for the records in `folder` into `out_dir`; return the paths by file name."""
    folder, out_dir = Path(folder), Path(out_dir)
    runs = read_runs(folder)
    table = runs.runs
    if table.empty:
        table = pd.DataFrame(columns=["cell", "status"])
    if "provenance_started" in table:  # in the order the runs started
        table = table.sort_values(["provenance_started", "cell"], kind="stable", na_position="last")
    table = table.reset_index(drop=True)
    table["name"] = table["name"] if "name" in table else table["cell"]
    table["name"] = table["name"].fillna(table["cell"])
    mask = contended(table)
    add_flag(table, mask, CONTENDED_FLAG)
    compared, machine_note = one_machine(table[~mask & table["status"].isin(FINISHED)])
    # no run to summarise: the table keeps its columns (an empty CSV would have none)
    summary = summarise_groups(compared, "name", [c for c in SUMMARISED if c in compared])
    predictions = estimates_table(runs)
    predictions = predictions[predictions["estimator"] == "early-epochs"] \
        if not predictions.empty else predictions
    results = table[[c for c in RESULT_COLUMNS if c in table]
                    + [c for c in table if c not in RESULT_COLUMNS]]
    paths = {"results.csv": save_csv(results, out_dir / "results.csv"),
             "summary.csv": save_csv(summary, out_dir / "summary.csv"),
             "predictions.csv": save_csv(predictions, out_dir / "predictions.csv")}
    figure = energy_per_epoch(runs.epochs, machines_line(table))
    paths["energy_per_epoch.png"] = save_figure(figure, out_dir / "energy_per_epoch.png")
    plt.close(figure)
    text = findings(folder, table, mask, machine_note, summary, predictions, runs.problems)
    paths["findings.md"] = out_dir / "findings.md"
    paths["findings.md"].write_text(text + "\n", encoding="utf-8")
    return paths


def findings(folder: Path, table: pd.DataFrame, contended_mask: pd.Series, machine_note: str,
             summary: pd.DataFrame, predictions: pd.DataFrame, problems: list[str]) -> str:
    """The report in sentences: what the folder holds, what was left out and why, each name's
    energy, time and accuracy with intervals, and how far each prediction was from the run."""
    counts = table["status"].astype(str).value_counts() if len(table) else pd.Series(dtype=int)
    lines = [f"# Tracked runs in {folder.name}", "",
             f"{len(table)} record(s) in {folder}: "
             + (", ".join(f"{n} {status}" for status, n in counts.items()) or "none") + "."]
    machines = machines_line(table)
    if machines:
        lines += ["", machines]
    stopped = table[table["status"] == Status.STOPPED] if len(table) else table
    if len(stopped):
        lines += ["", "Stopped by their budget (fewer epochs than planned; not summarised): "
                  + ", ".join(f"{r['cell']} ({r.get('stop_reason', '')})"
                              for _, r in stopped.iterrows()) + "."]
    failed = table[table["status"] == Status.FAILED] if len(table) else table
    if len(failed):
        lines += ["", "Failed (the loop raised): " + ", ".join(
            f"{r['cell']} ({r.get('error', '')})" for _, r in failed.iterrows()) + "."]
    if contended_mask.any():
        lines += ["", f"{int(contended_mask.sum())} contended run(s) left out of the summary "
                  "(other processes took more of the CPU than each run's contention threshold "
                  "while it trained; its time and machine-level energy are not its own): "
                  + ", ".join(table.loc[contended_mask, "cell"]) + "."]
    elif len(table) and table["status"].isin(FINISHED).any():
        lines += ["", "No run was contended: other processes stayed below each run's "
                  "contention threshold while it trained."]
    if machine_note:
        lines += ["", machine_note]
    if problems:
        lines += ["", "Skipped (not a usable record): " + "; ".join(problems)]
    lines += ["", "## Per name (finished, uncontended runs; mean with 95 % interval)", ""]
    if summary.empty:
        lines.append("No finished, uncontended run to summarise.")
    else:
        shown = format_summary(summary, [c for c in SUMMARISED if f"{c}_mean" in summary])
        for _, row in shown.iterrows():
            parts = [f"{LABELS[c]} {row[c]}" for c in SUMMARISED if c in shown]
            lines.append(f"- {row['name']}: " + "; ".join(parts))
        kinds = sorted(set(table.get("energy_kind", pd.Series(dtype=str)).dropna().astype(str)))
        scopes = sorted(set(table.get("energy_scope", pd.Series(dtype=str)).dropna().astype(str)))
        lines += ["", f"energy_j is each run's headline over its training and evaluation "
                  f"windows: {', '.join(kinds) or 'none'} ({', '.join(scopes) or 'no'} scope); "
                  "results.csv gives each run's methods and the whole machine's figure beside it."]
    if not predictions.empty:
        lines += ["", "## Predicted after epoch 1, against the run", ""]
        for _, row in predictions.iterrows():
            ratio = (f"predicted / measured {row['ratio']:.2f}" if pd.notna(row["ratio"])
                     else "not compared: the run did not finish as planned")
            lines.append(f"- {row['cell']}: {row['predicted_j']:.3g} J predicted, "
                         f"{row['energy_j']:.3g} J measured ({ratio})")
    return "\n".join(lines)


@plain_figure
def energy_per_epoch(epochs: pd.DataFrame, machine: str):
    """Each record's headline energy per epoch; the figure names the machine it was made on."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if epochs.empty or "energy_j" not in epochs:
        say_empty(ax, "no epoch finished in these records")
    else:
        for cell, rows in epochs.groupby("cell", sort=True):
            ax.plot(rows["epoch"].astype(float), rows["energy_j"], marker="o",
                    label=legend_name(cell))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("energy per epoch (J, headline)")
        ax.legend(fontsize=8)
    ax.set_title("Tracked runs: energy per epoch")
    fig.text(0.01, -0.02, machine or "machine not recorded", fontsize=7, ha="left", va="top",
             wrap=True)
    return fig
