"""Figures for the model experiments (issue #11): confusion matrices and, for pruned runs,
energy per epoch against the compute the model needs.

Pruning changes two compute figures differently (see `model_stats`): masking weights lowers
only the MACs a sparse engine would need, while removing channels lowers the dense MACs the
hardware really executes. Plotting each epoch's energy against both, side by side, lets a
reader see which of the two the energy follows.

Confusion matrices are normalised per true class (each row sums to 1), so panels of cells
with different test-set sizes compare directly. With more finished cells than `MAX_PANELS`,
the report singles out the best and the worst half of them by final validation accuracy and
says so in the figure's title.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..training.datasets import DATASETS
from ..energy.derive import energy_label
from ..records import Runs, finished_rows
from .output import legend_name, plain_figure, save_csv, save_figure

MAX_PANELS = 16  # confusion matrices drawn side by side before the report singles cells out
FIGURE_NAMES = ("confusion_matrices", "pruning_energy_vs_macs")


def class_names(dataset: str | None, count: int) -> list[str]:
    """Label names for a dataset's classes, or the class indices when none are known."""
    spec = DATASETS.get(dataset or "")
    names = list(spec.class_names) if spec is not None else []
    return names if len(names) == count else [str(i) for i in range(count)]


def normalise_rows(matrix) -> np.ndarray:
    """Each true class's row as shares of its images (a class absent from the test set: NaN)."""
    counts = np.asarray(matrix, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def _draw_matrix(ax, matrix, names: list[str], title: str, annotate: bool, tick_labels: bool):
    shares = normalise_rows(matrix)
    n = shares.shape[0]
    image = ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
    if annotate:
        for i in range(n):
            for j in range(n):
                if not math.isnan(shares[i, j]):
                    ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if shares[i, j] > 0.6 else "black")
    if tick_labels:
        ax.set_xticks(range(n), names, rotation=90, fontsize=6)
        ax.set_yticks(range(n), names, fontsize=6)
    else:
        step = max(1, n // 10)
        ax.set_xticks(range(0, n, step))
        ax.set_yticks(range(0, n, step))
        ax.tick_params(labelsize=5)
    ax.set_title(title, fontsize=7)
    return image


@plain_figure
def plot_confusion(matrix, class_labels: list[str] | None = None, title: str = "final evaluation"):
    """One confusion matrix (the run notebook's): shares per true class, with the counts'
    total in the title, so the normalised figure never hides how many images it covers."""
    counts = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    if counts.size == 0:
        ax.text(0.5, 0.5, "no confusion matrix recorded (no finished evaluation)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return fig
    n = counts.shape[0]
    names = class_labels or [str(i) for i in range(n)]
    image = _draw_matrix(ax, counts, names, f"{title}: {int(counts.sum())} test images, "
                         "shares per true class", annotate=n <= 20, tick_labels=n <= 20)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def singled_out(table: pd.DataFrame, cells: list[str], limit: int = MAX_PANELS
                ) -> tuple[list[str], str]:
    """The cells to draw and the rule used: all of them up to `limit`, else the best and the
    worst half of `limit` by final validation accuracy (ties by name)."""
    if len(cells) <= limit:
        return sorted(cells), f"all {len(cells)} finished cells"
    accuracy = (table.set_index("cell")["final_val_acc_pct"] if "final_val_acc_pct" in table
                else pd.Series(dtype=float))
    ranked = sorted(cells, key=lambda c: (-_number(accuracy.get(c)), c))
    best, worst = limit - limit // 2, limit // 2
    chosen = ranked[:best] + ranked[len(ranked) - worst:]
    rule = (f"{len(chosen)} of {len(cells)} finished cells: the {best} best and the {worst} worst "
            "by final validation accuracy")
    return chosen, rule


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


@plain_figure
def figure_confusions(runs: Runs):
    """Small multiples of the finished cells' final confusion matrices (`runs.confusion`; records
    made before it existed have none); returns (figure, rule)."""
    matrices = runs.confusion
    table = runs.runs
    chosen, rule = singled_out(table, list(matrices))
    if not chosen:
        fig, ax = plt.subplots(figsize=(6.4, 2.0))
        ax.text(0.5, 0.5, "no finished cell recorded a confusion matrix", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return fig, "no finished cell recorded a confusion matrix"
    columns = min(4, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.3 * rows + 0.6),
                             squeeze=False)
    info = table.set_index("cell") if "cell" in table else pd.DataFrame()
    image = None
    for ax, cell in zip(axes.flat, chosen):
        matrix = np.asarray(matrices[cell])
        n = matrix.shape[0]
        dataset = info["dataset"].get(cell) if "dataset" in info else None
        accuracy = (_number(info["final_val_acc_pct"].get(cell)) if "final_val_acc_pct" in info
                    else -math.inf)
        title = cell + (f"\nfinal val acc {accuracy:.1f} %" if math.isfinite(accuracy) else "")
        image = _draw_matrix(ax, matrix, class_names(dataset, n), title, annotate=False,
                             tick_labels=n <= 10)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_axis_off()
    fig.suptitle(f"final confusion matrices, shares per true class (rows: true, columns: "
                 f"predicted) -- {rule}", fontsize=9)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), fraction=0.02, pad=0.02)
    return fig, rule


def pruned_epochs(runs: Runs) -> pd.DataFrame:
    """The epoch rows (with derived energy) of finished cells whose config prunes."""
    table, epochs = runs.runs, runs.epochs
    needed = {"cell", "epoch", "energy_j", "dense_macs_per_image", "sparse_macs_per_image"}
    if table.empty or epochs.empty or "prune" not in table or not needed <= set(epochs):
        return pd.DataFrame(columns=sorted(needed | {"prune"}))
    pruned = finished_rows(table)[lambda t: t["prune"].fillna("none").ne("none")]
    rows = epochs.merge(pruned[["cell", "prune"]], on="cell", how="inner")
    return rows.sort_values(["cell", "epoch"], ignore_index=True)


@plain_figure
def figure_pruning(runs: Runs):
    """Energy per epoch against dense MACs per image (left) and sparse MACs per image (right),
    one series per pruned cell, arrows in epoch order: masking moves a run left only on the
    right panel; removing channels moves it left on both."""
    rows = pruned_epochs(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    label = energy_label(rows)
    for ax, column, what in ((axes[0], "dense_macs_per_image", "dense MACs per image "
                              "(what the hardware executes)"),
                             (axes[1], "sparse_macs_per_image", "sparse MACs per image "
                              "(what a zero-skipping engine would need)")):
        for index, (cell, series) in enumerate(rows.groupby("cell", sort=True)):
            x = pd.to_numeric(series[column], errors="coerce") / 1e6
            y = pd.to_numeric(series["energy_j"], errors="coerce")
            style = "-o" if series["prune"].iloc[0] == "structured" else "--s"
            ax.plot(x, y, style, markersize=3, color=f"C{index % 10}",
                    label=legend_name(f"{cell} ({series['prune'].iloc[0]})"))
            ax.annotate("", xy=(x.iloc[-1], y.iloc[-1]), xytext=(x.iloc[0], y.iloc[0]),
                        arrowprops={"arrowstyle": "->", "color": f"C{index % 10}", "alpha": 0.4})
        ax.set_xlabel(f"{what}, millions")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"energy per epoch, train + eval (J) -- {label.kind}")
    if rows.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no finished pruned cells (prune = none everywhere)", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9)
    else:
        axes[1].legend(fontsize=6)
    fig.suptitle("pruning: energy per epoch vs compute (arrow: first to last epoch; solid: "
                 "structured, dashed: unstructured)", fontsize=9)
    fig.tight_layout()
    return fig


def pruning_table(runs: Runs) -> pd.DataFrame:
    """Per pruned cell: dense MACs, sparse MACs and energy per epoch before the first pruning
    step and in the final state, with the change in %. 'Before' leaves out epoch 1 when later
    unpruned epochs exist (its energy includes one-off warm-up)."""
    rows = pruned_epochs(runs)
    out = []
    for cell, series in rows.groupby("cell", sort=True):
        dense = pd.to_numeric(series["dense_macs_per_image"], errors="coerce")
        sparse = pd.to_numeric(series["sparse_macs_per_image"], errors="coerce")
        energy = pd.to_numeric(series["energy_j"], errors="coerce")
        first = (dense == dense.iloc[0]) & (sparse == sparse.iloc[0])
        first = first & first.cummin()  # the leading epochs before any pruning step
        if first.sum() > 1:
            first.iloc[0] = False
        last = (dense == dense.iloc[-1]) & (sparse == sparse.iloc[-1]) & ~first
        last = last[::-1].cummin()[::-1]  # the trailing epochs in the final state
        before, after = energy[first].mean(), energy[last].mean() if last.any() else math.nan
        out.append({
            "cell": cell, "prune": series["prune"].iloc[0],
            "dense_macs_before": dense.iloc[0], "dense_macs_after": dense.iloc[-1],
            "dense_macs_change_pct": _change(dense.iloc[0], dense.iloc[-1]),
            "sparse_macs_before": sparse.iloc[0], "sparse_macs_after": sparse.iloc[-1],
            "sparse_macs_change_pct": _change(sparse.iloc[0], sparse.iloc[-1]),
            "energy_per_epoch_before_j": before, "energy_per_epoch_after_j": after,
            "energy_per_epoch_change_pct": _change(before, after),
        })
    return pd.DataFrame(out, columns=["cell", "prune", "dense_macs_before", "dense_macs_after",
                                      "dense_macs_change_pct", "sparse_macs_before",
                                      "sparse_macs_after", "sparse_macs_change_pct",
                                      "energy_per_epoch_before_j", "energy_per_epoch_after_j",
                                      "energy_per_epoch_change_pct"])


def _change(before, after) -> float:
    before, after = float(before), float(after)
    if not (math.isfinite(before) and math.isfinite(after)) or before == 0:
        return math.nan
    return 100.0 * (after - before) / before


def write_model_report(runs: Runs, report_dir: str | Path) -> dict:
    """Write confusion_matrices.png, pruning_energy_vs_macs.png and pruning.csv; return the
    paths, the figures, the pruning table and the rule that picked the confusion panels."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    confusion_figure, rule = figure_confusions(runs)
    figures = {"confusion_matrices": confusion_figure,
               "pruning_energy_vs_macs": figure_pruning(runs)}
    paths = {name: save_figure(fig, report_dir / f"{name}.png") for name, fig in figures.items()}
    table = pruning_table(runs)
    paths["pruning"] = save_csv(table, report_dir / "pruning.csv")
    return {"paths": paths, "figures": figures, "pruning_table": table, "confusion_rule": rule}
