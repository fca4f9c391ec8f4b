"""Figures and tables from the lab records (used by the run and analysis notebooks).

Every energy axis says how its numbers were obtained (method, measured or modelled). Cells that
failed, diverged or never ran stay in the results table with their status; they are never
silently dropped.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .files import atomic_write
from .records import Runs

FIGURES = {
    "train_loss": ("train_loss", "training loss"),
    "train_accuracy": ("train_acc_pct", "training accuracy (%)"),
    "val_loss": ("val_loss", "validation loss"),
    "val_accuracy": ("val_acc_pct", "validation accuracy (%)"),
}
TABLE_COLUMNS = ["cell", "status", "width", "precision", "compute_dtype", "epochs_completed",
                 "best_val_acc_pct", "final_val_acc_pct", "s_per_epoch", "total_s",
                 "energy_kwh_total", "acc_pct_per_wh", "energy_method", "energy_kind",
                 "component_energy_kwh_total", "component_energy_kind", "components",
                 "component_mean_power_w", "assumed_power_w", "emissions_kg",
                 "carbon_intensity_g_per_kwh", "error"]
COMPONENTS = ("gpu", "cpu", "ram")


def energy_label(epochs: pd.DataFrame, unit: str) -> str:
    """Axis label naming the energy figures' method(s) and kind(s), e.g.
    'energy (kWh) -- modelled, constant-power'."""
    if epochs.empty or "energy_method" not in epochs:
        return f"energy ({unit})"
    methods = ", ".join(sorted(epochs["energy_method"].dropna().unique()))
    kinds = ", ".join(sorted(epochs["energy_kind"].dropna().unique()))
    return f"energy ({unit}) -- {kinds}, {methods}"


def _save(fig, path: Path) -> Path:
    """Write via a temporary name so a killed process never leaves a half-written PNG."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip("."))
    os.replace(tmp, path)
    return path


def _per_cell_lines(epochs: pd.DataFrame, column: str, ylabel: str, title: str):
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for cell, rows in epochs.groupby("cell", sort=True):
        ax.plot(rows["epoch"], rows[column], marker="o", markersize=3, label=cell)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if not epochs.empty:
        ax.legend(fontsize=7)
    return fig


def figure_metric(epochs: pd.DataFrame, name: str):
    column, label = FIGURES[name]
    return _per_cell_lines(epochs, column, label, label + " per epoch")


def with_component_energy(epochs: pd.DataFrame) -> pd.DataFrame:
    """Add `component_energy_j`: the meters' gpu + cpu + ram figure of each epoch (absent for
    records made before meters existed)."""
    data = epochs.copy()
    present = [f"{c}_energy_j" for c in COMPONENTS if f"{c}_energy_j" in data]
    data["component_energy_j"] = data[present].sum(axis=1, min_count=1) if present else float("nan")
    return data


def components_label(runs_table: pd.DataFrame) -> str:
    """'cpu: tdp-model (modelled), ram: ram-model (modelled)' over a study's cells."""
    labels = set()
    for value in runs_table.get("components", pd.Series(dtype=object)).dropna():
        if isinstance(value, dict):
            labels.update(f"{c}: {m}" for c, m in value.items())
    return ", ".join(sorted(labels)) or "no meters recorded"


def _energy_lines(epochs: pd.DataFrame, runs_table: pd.DataFrame, cumulative: bool, unit: str,
                  title: str):
    """Per cell: the meters' figure (solid) beside the constant-power estimate (dashed)."""
    scale = 1 / 3.6e6 if unit == "kWh" else 1.0
    data = with_component_energy(epochs).sort_values(["cell", "epoch"])
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for index, (cell, rows) in enumerate(data.groupby("cell", sort=True)):
        color = f"C{index % 10}"
        for column, style, suffix in (("component_energy_j", "-", ""), ("energy_j", "--", " (constant power)")):
            values = rows[column] * scale
            if cumulative:
                values = values.cumsum()
            if values.notna().any():
                ax.plot(rows["epoch"], values, style, marker="o", markersize=3, color=color,
                        label=cell + suffix if column == "energy_j" else cell)
    prefix = "cumulative energy" if cumulative else "energy per epoch"
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{prefix} ({unit})")
    ax.set_title(f"{title}\nsolid: meters -- {components_label(runs_table)}\n"
                 f"dashed: {energy_label(epochs, unit).split('-- ')[-1]} (assumed power x time)",
                 fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if not data.empty:
        ax.legend(fontsize=6, ncol=2)
    return fig


def figure_cumulative_energy(epochs: pd.DataFrame, runs_table: pd.DataFrame):
    return _energy_lines(epochs, runs_table, True, "kWh", "cumulative energy")


def figure_energy_per_epoch(epochs: pd.DataFrame, runs_table: pd.DataFrame):
    return _energy_lines(epochs, runs_table, False, "J", "energy per epoch")


def figure_power(table: pd.DataFrame, runs_table: pd.DataFrame):
    """Assumed board power vs the meters' mean power (train + eval) per cell."""
    done = table[table["status"].isin(["ok", "diverged"])]
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    positions = range(len(done))
    ax.bar([p - 0.2 for p in positions], done["assumed_power_w"].astype(float), width=0.4,
           label="assumed (constant-power, modelled)", color="0.6")
    ax.bar([p + 0.2 for p in positions], done["component_mean_power_w"].astype(float), width=0.4,
           label=f"meters: {components_label(runs_table)}")
    ax.set_xticks(list(positions), done["cell"], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean power over train + eval (W)")
    ax.set_title("assumed vs metered average power")
    tallest = pd.concat([done["assumed_power_w"], done["component_mean_power_w"]]).astype(float).max()
    if pd.notna(tallest):
        ax.set_ylim(0, tallest * 1.35)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper center")
    ax.grid(alpha=0.3, axis="y")
    return fig


def figure_tradeoff(table: pd.DataFrame, epochs: pd.DataFrame):
    """Final validation accuracy vs total energy, one point per finished cell."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    done = table[table["status"].isin(["ok", "diverged"])].dropna(subset=["energy_kwh_total"])
    for _, row in done.iterrows():
        ax.scatter(row["energy_kwh_total"] * 1000, row["final_val_acc_pct"], s=40)
        ax.annotate(row["cell"], (row["energy_kwh_total"] * 1000, row["final_val_acc_pct"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("total " + energy_label(epochs, "Wh"))
    ax.set_ylabel("final validation accuracy (%)")
    ax.set_title("accuracy vs energy")
    ax.grid(alpha=0.3)
    return fig


def results_table(runs: Runs, expected_cells: list[str] | None = None) -> pd.DataFrame:
    """The original Table 1's columns (best val acc, s/epoch, total s, kWh, %/Wh) per cell, with
    status; cells of the study with no notebook appear as `missing`."""
    table = runs.runs.copy()
    if table.empty:
        table = pd.DataFrame(columns=["cell", "status"])
    if expected_cells:
        absent = [c for c in expected_cells if c not in set(table["cell"])]
        table = pd.concat([table, pd.DataFrame({"cell": absent, "status": "missing"})],
                          ignore_index=True)
    for column in TABLE_COLUMNS:
        if column not in table:
            table[column] = pd.NA
    return table[TABLE_COLUMNS].sort_values("cell", ignore_index=True)


def reference_table() -> pd.DataFrame:
    """The original study's published Table 1 (CIFAR-10, Colab T4, energy = 70 W x time)."""
    with resources.files("energy_lib").joinpath("data/original_t4_study_table1.csv").open() as f:
        return pd.read_csv(f)


def compare_with_reference(table: pd.DataFrame) -> pd.DataFrame:
    """Our results beside the original Table 1, matched on width and precision."""
    ours = table.dropna(subset=["width"]).copy()
    ours["width"] = ours["width"].astype(float)
    ref = reference_table()
    ref["width"] = ref["width"].astype(float)
    merged = ref.merge(ours, on=["width", "precision"], how="left", suffixes=("_t4", ""))
    return pd.DataFrame({
        "width": merged["width"], "precision": merged["precision"],
        "best_val_acc_pct (T4)": merged["best_val_acc_pct_t4"],
        "best_val_acc_pct (ours)": merged["best_val_acc_pct"],
        "s_per_epoch (T4)": merged["s_per_epoch_t4"], "s_per_epoch (ours)": merged["s_per_epoch"],
        "energy_kwh (T4)": merged["energy_kwh"], "energy_kwh (ours)": merged["energy_kwh_total"],
        "acc_pct_per_wh (T4)": merged["acc_pct_per_wh_t4"],
        "acc_pct_per_wh (ours)": merged["acc_pct_per_wh"],
        "status (ours)": merged["status"].fillna("missing"),
    })


def write_report(runs: Runs, report_dir: str | Path, expected_cells: list[str] | None = None) -> dict:
    """Write the seven figures and the results CSV; returns {name: path} and the figures."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    epochs = runs.epochs
    if epochs.empty:
        epochs = pd.DataFrame(columns=["cell", "epoch", "energy_j", "energy_kwh",
                                       *[c for c, _ in FIGURES.values()]])
    table = results_table(runs, expected_cells)
    figures = {name: figure_metric(epochs, name) for name in FIGURES}
    figures["cumulative_energy"] = figure_cumulative_energy(epochs, runs.runs)
    figures["energy_per_epoch"] = figure_energy_per_epoch(epochs, runs.runs)
    figures["accuracy_vs_energy"] = figure_tradeoff(table, epochs)
    figures["power_assumed_vs_metered"] = figure_power(table, runs.runs)
    paths = {name: _save(fig, report_dir / f"{name}.png") for name, fig in figures.items()}
    csv = report_dir / "results.csv"
    tmp = csv.with_name(".results.csv.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    paths["results"] = csv
    return {"paths": paths, "figures": figures, "table": table}


def plot_run(epochs: pd.DataFrame):
    """The inline curves of one lab record: loss, accuracy and energy per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs["epoch"], epochs["train_loss"], marker="o", label="train")
    axes[0].plot(epochs["epoch"], epochs["val_loss"], marker="o", label="validation")
    axes[0].set_ylabel("loss")
    axes[1].plot(epochs["epoch"], epochs["train_acc_pct"], marker="o", label="train")
    axes[1].plot(epochs["epoch"], epochs["val_acc_pct"], marker="o", label="validation")
    axes[1].set_ylabel("accuracy (%)")
    data = with_component_energy(epochs)
    axes[2].bar(epochs["epoch"] - 0.2, epochs["energy_j"], width=0.4, color="0.6",
                label="constant-power (modelled)")
    if data["component_energy_j"].notna().any():
        axes[2].bar(epochs["epoch"] + 0.2, data["component_energy_j"], width=0.4,
                    label="meters (gpu + cpu + ram)")
    axes[2].set_ylabel("energy per epoch (J)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig


def plot_timeline(samples: list[dict], marks: list[dict], idle_power_w: dict[str, float]):
    """Watts vs time per component, with epoch starts and each component's idle level."""
    data = pd.DataFrame(samples)
    fig, ax = plt.subplots(figsize=(13, 3.6))
    if data.empty:
        ax.text(0.5, 0.5, "no power samples (run shorter than one sample period)",
                ha="center", transform=ax.transAxes)
        return fig
    for index, (component, rows) in enumerate(data.groupby("component", sort=True)):
        color = f"C{index}"
        ax.plot(rows["t_s"], rows["power_w"], color=color,
                label=f"{component}: {rows['method'].iloc[0]}")
        for key, watts in idle_power_w.items():
            if key.split("/")[0] == component:
                ax.axhline(watts, color=color, linestyle=":", linewidth=1)
    span = max(data["t_s"].max(), max((m["t_s"] for m in marks), default=0.0)) or 1.0
    last_label_t = None
    for mark in marks:
        ax.axvline(mark["t_s"], color="0.5", linewidth=0.6, linestyle="--")
        if last_label_t is not None and mark["t_s"] - last_label_t < 0.02 * span:
            continue  # e.g. "idle end" right before "epoch 1": one label is enough
        ax.annotate(mark["label"], (mark["t_s"], 1), xycoords=("data", "axes fraction"),
                    fontsize=6, rotation=90, va="top", ha="right")
        last_label_t = mark["t_s"]
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("power (W)")
    ax.set_title("power timeline (dotted: idle level; dashed: phase starts)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


#: nbconvert's lab template without its scripts from a CDN (require.js, MathJax, Mermaid,
#: widgets): a lab record must read offline, and the report has no math or widgets to render.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def export_html(executed_notebook: str | Path, html_path: str | Path) -> Path:
    """Self-contained HTML of an executed notebook without its code cells (nbconvert): no
    script loaded from the network. Written atomically."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, template_file="energy_study_offline.html.j2",
                            extra_loaders=[jinja2.DictLoader(
                                {"energy_study_offline.html.j2": OFFLINE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed_notebook), as_version=4))
    return atomic_write(html_path, lambda tmp: tmp.write_text(body, encoding="utf-8"))
