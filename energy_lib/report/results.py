"""The results table, the per-cell figures (curves, energy, power, accuracy vs energy), the
shared-CPU flag and the comparison with the original study; plus the run notebook's figures.

Every energy axis says how its numbers were obtained: `energy.derive.energy_label` of the rows
it shows (method and kind per component). Cells that failed, diverged or never ran stay in the
results table with their status; they are never silently dropped.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..energy.derive import LABEL_COLUMNS, energy_label
from ..energy.table import JOULES_PER_KWH
from ..records import Runs, Status, finished_rows
from . import stats
from .output import legend_name, plain_figure, save_csv, save_figure, say_empty

FIGURES = {
    "train_loss": ("train_loss", "training loss"),
    "train_accuracy": ("train_acc_pct", "training accuracy (%)"),
    "val_loss": ("val_loss", "validation loss"),
    "val_accuracy": ("val_acc_pct", "validation accuracy (%)"),
}
TABLE_COLUMNS = ["cell", "status", "width", "precision", "compute_dtype", "epochs_completed",
                 "model", "optimizer", "parameters", "dense_macs_per_image", "best_val_top5_acc_pct",
                 "best_val_acc_pct", "final_val_acc_pct", "s_per_epoch", "total_s",
                 "energy_kwh", "energy_kind", "energy_methods", *LABEL_COLUMNS, "acc_pct_per_wh",
                 "constant_power_energy_kwh", "constant_power_acc_pct_per_wh", "assumed_power_w",
                 "mean_power_w", "above_idle_j", "emissions_kg", "carbon_intensity_g_per_kwh",
                 "flags", "error"]


#: With this many repeats or fewer, each repeat is drawn as a thin line under its setting's mean.
THIN_LINES_UP_TO = 5
#: The fewest repeats whose 95 % band is drawn: at N = 2 the t factor is 12.7, a band that
#: says nothing and hides every line (the thin repeats show the spread instead).
BAND_FROM_N = 3


def setting_names(runs_table: pd.DataFrame, setting_axes: list[str]) -> dict[str, str]:
    """cell -> the name of its setting (the setting axes' values, seed left out): repeats of
    one setting share a name, so a figure draws them as one setting."""
    axes = [a for a in setting_axes if a in runs_table]
    if not axes or runs_table.empty:
        return {cell: cell for cell in runs_table.get("cell", [])}
    return {row["cell"]: " ".join(f"{a}={_value(row[a])}" for a in axes)
            for _, row in runs_table.iterrows()}


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


#: More settings than this in one figure and the curves become small multiples: one panel per
#: value of the first setting axis (10 colours cannot tell 12 lines apart).
SETTINGS_PER_PANEL = 6


def panel_names(runs_table: pd.DataFrame, setting_axes: list[str]) -> dict[str, str] | None:
    """cell -> its panel (the first setting axis's value) when the settings are too many for
    one axes (SETTINGS_PER_PANEL) and that axis splits them; None for one panel."""
    axes = [a for a in setting_axes if a in runs_table]
    if len(axes) < 2 or runs_table.empty:
        return None
    settings = runs_table[axes].astype(str).drop_duplicates()
    if len(settings) <= SETTINGS_PER_PANEL or settings[axes[0]].nunique() < 2:
        return None
    return {row["cell"]: f"{axes[0]}={_value(row[axes[0]])}" for _, row in runs_table.iterrows()}


def _panels(epochs: pd.DataFrame, panels: dict[str, str] | None, width: float, height: float):
    """(figure, [(axes, that panel's epochs)]): one axes, or one per panel stacked, sharing
    the epoch axis and the y scale."""
    if not panels or epochs.empty:
        fig, ax = plt.subplots(figsize=(width, height))
        return fig, [(ax, epochs, "")]
    names = sorted(set(panels.values()))
    fig, axes = plt.subplots(len(names), 1, figsize=(width, 0.75 * height * len(names)),
                             sharex=True, sharey=True, squeeze=False)
    key = epochs["cell"].map(panels)
    return fig, [(ax[0], epochs[key == name], name) for ax, name in zip(axes, names)]


def _setting_lines(ax, epochs: pd.DataFrame, settings: dict[str, str], column: str, *,
                   scale: float = 1.0, cumulative: bool = False, style: str = "-",
                   suffix: str = "", band: bool = True) -> bool:
    """Per setting: the mean over its repeats per epoch (one colour per setting), its 95 %
    interval as a band where N >= BAND_FROM_N, and the repeats as thin lines where they are
    few. Returns whether anything was drawn."""
    if epochs.empty or column not in epochs:
        return False
    data = epochs.assign(_value=pd.to_numeric(epochs[column], errors="coerce") * scale,
                         _setting=epochs["cell"].map(lambda cell: settings.get(cell, cell)))
    data = data.sort_values(["cell", "epoch"])
    if cumulative:
        data["_value"] = data.groupby("cell")["_value"].cumsum()
    drawn = False
    for index, (name, rows) in enumerate(data.groupby("_setting", sort=True)):
        color = f"C{index % 10}"
        per_epoch = rows.groupby("epoch")["_value"]
        ivs = {epoch: stats.interval(values) for epoch, values in per_epoch}
        epochs_x = sorted(e for e, iv in ivs.items() if iv.mean is not None)
        if not epochs_x:
            continue
        n = rows["cell"].nunique()
        if n <= THIN_LINES_UP_TO and n > 1:
            for _, repeat in rows.groupby("cell"):
                ax.plot(repeat["epoch"].astype(float), repeat["_value"], style, color=color,
                        linewidth=0.6, alpha=0.45)
        ax.plot(epochs_x, [ivs[e].mean for e in epochs_x], style, marker="o", markersize=3,
                color=color, linewidth=1.8, label=legend_name(f"{name}{suffix} (N={n})"))
        banded = [e for e in epochs_x if ivs[e].low is not None and ivs[e].n >= BAND_FROM_N]
        if band and banded:
            ax.fill_between(banded, [ivs[e].low for e in banded], [ivs[e].high for e in banded],
                            color=color, alpha=0.15, linewidth=0)
        drawn = True
    return drawn


def _finish_axes(ax, ylabel: str, title: str, drawn: bool, empty_reason: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if drawn:  # outside the data, right of the axes
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        say_empty(ax, empty_reason)


@plain_figure
def figure_metric(epochs: pd.DataFrame, name: str, settings: dict[str, str] | None = None,
                  panels: dict[str, str] | None = None):
    """One metric per epoch, per setting: mean line, 95 % band over repeats, thin repeats;
    small multiples by `panels` (cell -> panel) where settings are many."""
    column, label = FIGURES[name]
    fig, parts = _panels(epochs, panels, 8.4, 4.0)
    for index, (ax, part, panel) in enumerate(parts):
        drawn = _setting_lines(ax, part, settings or {}, column)
        title = (f"{label} per epoch: mean per setting; band: 95 % interval over repeats "
                 f"(N >= {BAND_FROM_N}); thin: each repeat") if index == 0 else ""
        _finish_axes(ax, label, "\n".join(t for t in (title, panel) if t), drawn,
                     "no finished epochs")
    fig.tight_layout()
    return fig


def _energy_lines(epochs: pd.DataFrame, settings: dict[str, str], cumulative: bool, unit: str,
                  title: str, panels: dict[str, str] | None = None):
    """Per setting: the headline energy (solid, mean and 95 % band over repeats) beside the
    constant-power estimate (dashed, mean); small multiples by `panels`."""
    scale = 1 / JOULES_PER_KWH if unit == "kWh" else 1.0
    fig, parts = _panels(epochs, panels, 8.8, 4.4)
    prefix = "cumulative energy" if cumulative else "energy per epoch"
    for index, (ax, part, panel) in enumerate(parts):
        drawn = _setting_lines(ax, part, settings, "energy_j", scale=scale, cumulative=cumulative)
        _setting_lines(ax, part, settings, "constant_power_energy_j", scale=scale,
                       cumulative=cumulative, style="--", suffix=", constant power", band=False)
        head = (f"{title}: mean per setting; band: 95 % interval over repeats (N >= "
                f"{BAND_FROM_N}); thin: each repeat\nsolid: {energy_label(epochs)}\ndashed: "
                "constant power (assumed board power x time; modelled)") if index == 0 else ""
        _finish_axes(ax, f"{prefix} ({unit})", "\n".join(t for t in (head, panel) if t), drawn,
                     "no finished epochs with energy figures")
    fig.tight_layout()
    return fig


@plain_figure
def figure_cumulative_energy(epochs: pd.DataFrame, settings: dict[str, str] | None = None,
                             panels: dict[str, str] | None = None):
    return _energy_lines(epochs, settings or {}, True, "kWh", "cumulative energy", panels)


@plain_figure
def figure_energy_per_epoch(epochs: pd.DataFrame, settings: dict[str, str] | None = None,
                            panels: dict[str, str] | None = None):
    return _energy_lines(epochs, settings or {}, False, "J", "energy per epoch", panels)


@plain_figure
def figure_power(table: pd.DataFrame):
    """Assumed board power vs the headline's mean power (train + eval) per cell."""
    done = finished_rows(table)
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    assumed = pd.to_numeric(done["assumed_power_w"], errors="coerce")
    metered = pd.to_numeric(done["mean_power_w"], errors="coerce")
    if done.empty or (assumed.isna().all() and metered.isna().all()):
        say_empty(ax, "no finished cells with power figures")
        return fig
    positions = list(range(len(done)))
    ax.bar([p - 0.2 for p in positions], assumed, width=0.4,
           label="assumed (constant-power, modelled)", color="0.6")
    label = energy_label(done)
    ax.bar([p + 0.2 for p in positions], metered, width=0.4, label=f"{label.kind}: {label.methods}")
    ax.set_xticks(positions, done["cell"], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("mean power over train + eval (W)")
    ax.set_title("assumed vs metered average power")
    tallest = pd.concat([assumed, metered]).max()
    if pd.notna(tallest) and tallest > 0:
        ax.set_ylim(0, tallest * 1.35)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper center")
    ax.grid(alpha=0.3, axis="y")
    return fig


@plain_figure
def figure_tradeoff(table: pd.DataFrame):
    """Best validation accuracy vs headline energy, one point per finished cell."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    done = finished_rows(table).copy()
    done["_wh"] = pd.to_numeric(done["energy_kwh"], errors="coerce") * 1000
    done["_acc"] = pd.to_numeric(done["best_val_acc_pct"], errors="coerce")
    usable = done.dropna(subset=["_wh", "_acc"])
    for index, (_, row) in enumerate(usable.iterrows()):
        ax.scatter(row["_wh"], row["_acc"], s=40, color=f"C{index % 10}",
                   label=legend_name(row["cell"]))
    ax.set_xlabel(f"total energy (Wh) -- {energy_label(usable).kind}")
    ax.set_ylabel("best validation accuracy (%)")
    ax.set_title("accuracy vs energy")
    ax.grid(alpha=0.3)
    if usable.empty:
        why = ("no cell has both an accuracy and an energy figure"
               + (f" ({len(done)} finished: all diverged or without meters)" if len(done) else
                  " (no finished cells)"))
        say_empty(ax, why)
    else:
        ax.legend(fontsize=7)
    return fig


def results_table(runs: Runs) -> pd.DataFrame:
    """The original Table 1's columns (best val acc, s/epoch, total s, kWh, %/Wh) per cell, with
    status (a study's cells without a record are rows of `runs` already: `read_study`)."""
    table = runs.runs.copy()
    if table.empty:
        table = pd.DataFrame(columns=["cell", "status"])
    for column in TABLE_COLUMNS:
        if column not in table:
            table[column] = pd.NA
    return table[TABLE_COLUMNS].sort_values("cell", ignore_index=True)


#: The results table as the report shows it: what a reader compares across cells, readable at
#: 1280 px with nothing cut; every column is in results.csv.
SHOWN_COLUMNS = {"cell": "cell", "status": "status", "best_val_acc_pct": "best acc (%)",
                 "s_per_epoch": "s / epoch", "total_s": "total (s)", "energy_wh": "energy (Wh)",
                 "energy_kind": "energy kind", "flags": "flags", "error": "error"}


def shown_results(table: pd.DataFrame) -> pd.DataFrame:
    """`results_table` cut to SHOWN_COLUMNS (energy in Wh, figures rounded for reading)."""
    shown = table.assign(energy_wh=pd.to_numeric(table["energy_kwh"], errors="coerce") * 1000)
    for column, digits in (("best_val_acc_pct", 1), ("s_per_epoch", 2), ("total_s", 1),
                           ("energy_wh", 3)):
        shown[column] = pd.to_numeric(shown[column], errors="coerce").round(digits)
    shown = shown[list(SHOWN_COLUMNS)].rename(columns=SHOWN_COLUMNS)
    shown = shown.astype(object).where(shown.notna(), "")
    return shown[[c for c in shown if (shown[c].astype(str) != "").any()]]


def reference_table() -> pd.DataFrame:
    """The original study's published Table 1 (CIFAR-10, Colab T4, energy = 70 W x time)."""
    with resources.files("energy_lib").joinpath("data/original_t4_study_table1.csv").open() as f:
        return pd.read_csv(f)


def compare_with_reference(table: pd.DataFrame) -> pd.DataFrame:
    """Our results beside the original Table 1, matched on width and precision, like beside
    like: their assumed-70 W energy beside our constant-power figure (same method), and our
    headline energy -- measured or modelled, as `energy_kind (ours)` says -- as a further
    column."""
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
        "constant_power_energy_kwh (T4)": merged["energy_kwh_t4"],
        "constant_power_energy_kwh (ours)": merged["constant_power_energy_kwh"],
        "constant_power_acc_pct_per_wh (T4)": merged["acc_pct_per_wh_t4"],
        "constant_power_acc_pct_per_wh (ours)": merged["constant_power_acc_pct_per_wh"],
        "energy_kwh (ours)": merged["energy_kwh"],
        "energy_kind (ours)": merged["energy_kind"],
        "acc_pct_per_wh (ours)": merged["acc_pct_per_wh"],
        "status (ours)": merged["status"].fillna(str(Status.MISSING)),  # a paper row we did not run
    })


def write_report(runs: Runs, report_dir: str | Path, setting_axes: list[str] | None = None) -> dict:
    """Write the seven figures and the results CSV; returns {name: path} and the figures. The
    curves draw settings (`setting_axes`: repeats of one setting are one line with a band)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    epochs = runs.epochs
    if epochs.empty:
        epochs = pd.DataFrame(columns=["cell", "epoch", "energy_j", "energy_kind",
                                       "constant_power_energy_j",
                                       *[c for c, _ in FIGURES.values()]])
    table = results_table(runs)
    settings = setting_names(runs.runs, setting_axes or [])
    panels = panel_names(runs.runs, setting_axes or [])
    figures = {name: figure_metric(epochs, name, settings, panels) for name in FIGURES}
    figures["cumulative_energy"] = figure_cumulative_energy(epochs, settings, panels)
    figures["energy_per_epoch"] = figure_energy_per_epoch(epochs, settings, panels)
    figures["accuracy_vs_energy"] = figure_tradeoff(table)
    figures["power_assumed_vs_metered"] = figure_power(table)
    paths = {name: save_figure(fig, report_dir / f"{name}.png") for name, fig in figures.items()}
    paths["results"] = save_csv(table, report_dir / "results.csv")
    return {"paths": paths, "figures": figures, "table": table}


@plain_figure
def plot_run(epochs: pd.DataFrame):
    """The inline curves of one lab record: loss, accuracy and energy per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs["epoch"], epochs["train_loss"], marker="o", label="train")
    axes[0].plot(epochs["epoch"], epochs["val_loss"], marker="o", label="validation")
    axes[0].set_ylabel("loss")
    axes[1].plot(epochs["epoch"], epochs["train_acc_pct"], marker="o", label="train")
    axes[1].plot(epochs["epoch"], epochs["val_acc_pct"], marker="o", label="validation")
    axes[1].set_ylabel("accuracy (%)")
    x = epochs["epoch"].astype(float)
    if "constant_power_energy_j" in epochs:
        axes[2].bar(x - 0.2, pd.to_numeric(epochs["constant_power_energy_j"], errors="coerce"),
                    width=0.4, color="0.6", label="constant power (modelled)")
    if "energy_j" in epochs and pd.to_numeric(epochs["energy_j"], errors="coerce").notna().any():
        label = energy_label(epochs)
        axes[2].bar(x + 0.2, pd.to_numeric(epochs["energy_j"], errors="coerce"), width=0.4,
                    label=f"{label.kind}: {label.methods}")
    axes[2].set_ylabel("energy per epoch (J)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig


@plain_figure
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
