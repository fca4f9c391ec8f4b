"""What a shared machine did to a study's figures, said per cell.

- `shared_cpu`: the cell's host ran other cells of the study at the same time (Dask workers).
- `contended`: another process computed on the cell's GPU, or other processes took more of the
  machine's CPU during the cell's training than
  its `contention_threshold` allows (the record's summary says so, with the numbers). Such a
  cell's time, and any machine-level energy, are not its own: verdicts, paired comparisons,
  summaries and the Pareto front leave it out unless the study says `include_contended = true`.
- Consistency: timings that cannot both be right on a quiet machine -- a repeat far off its
  setting's speed, or more compute done faster within one model family.
"""

from __future__ import annotations

import pandas as pd

from ..training.datasets import DATASETS
from ..records import finished_rows, is_finished

SHARED_CPU_FLAG = "shared_cpu"
CONTENDED_FLAG = "contended"
#: A repeat whose training seconds per MAC differ from its setting's median by more than this
#: factor (either way) is flagged: the same work at the same settings takes the same time.
REPEAT_SPREAD_FACTOR = 1.5
#: Within one model family at equal other settings, a setting with more MACs per image that
#: trained faster per epoch than one with fewer, by more than this factor, is flagged.
INVERSION_FACTOR = 1.1
#: The axes that change how much compute a cell does; the others must be equal to compare.
COMPUTE_AXES = ("model", "width", "depth")


def add_flag(table: pd.DataFrame, mask: pd.Series, flag: str) -> None:
    """Append `flag` to the `flags` of the rows in `mask` (in place)."""
    if "flags" not in table:
        table["flags"] = ""
    table["flags"] = ["; ".join(x for x in (flags if isinstance(flags, str) else "", flag) if x)
                      if marked else flags for flags, marked in zip(table["flags"], mask)]


def flag_shared_cpu(table: pd.DataFrame) -> str:
    """Flag `shared_cpu` the cells whose host ran other cells at the same time (the runner's
    `shared_cpu` and `cells_at_once_on_host` columns of `records.read_runs`; in place), and
    return the sentence the analysis prints."""
    if table.empty or "shared_cpu" not in table:
        return "no records"
    shared = table["shared_cpu"].eq(True)
    add_flag(table, shared, SHARED_CPU_FLAG)
    if not shared.any():
        return ("Each cell ran alone on its host (serial, or one cell per host): its energy "
                "figures are its own.")
    cells = ", ".join(str(c) for c in table.loc[shared, "cell"])
    at_once = table.get("cells_at_once_on_host", pd.Series(1, index=table.index))
    most = int(pd.to_numeric(at_once, errors="coerce").fillna(1).max())
    return (f"shared_cpu: {int(shared.sum())} cell(s) ran on a host where up to {most} cells ran "
            f"at once ({cells}). Their host CPU and RAM figures are not attributable to one "
            "cell: a model or counter of the whole machine (TDP x utilisation, RAPL) counts the "
            "other cells' work too, so summing those cells counts shared time more than once. "
            "GPU figures of cells pinned one per GPU (pinned_device) remain their own. For "
            "per-cell CPU energy, run the study serially.")


def contended(table: pd.DataFrame) -> pd.Series:
    """The finished cells whose record says other load contended with their training."""
    if table.empty or "contended" not in table:
        return pd.Series(False, index=table.index)
    return table["contended"].eq(True) & is_finished(table)


def flag_contended(table: pd.DataFrame, include: bool) -> tuple[pd.DataFrame, str]:
    """Flag `contended` cells (in place) and return (the table the verdicts use, the sentence
    that says what was left out and why). With `include`, nothing is left out."""
    mask = contended(table)
    add_flag(table, mask, CONTENDED_FLAG)
    if not mask.any():
        return table, ("No cell was contended: other processes stayed below each cell's "
                       "contention threshold while it trained.")
    rows = table[mask]
    detail = ", ".join(f"{row['cell']} ({_why_contended(row)})" for _, row in rows.iterrows())
    if include:
        return table, (f"{int(mask.sum())} contended cell(s) are included, as the study asks "
                       f"(include_contended): {detail}. Their times and machine-level energy "
                       "are not theirs alone.")
    return table[~mask], (f"{int(mask.sum())} contended cell(s) left out of the summary, the "
                          f"paired comparisons, the claims and the Pareto front: {detail}. "
                          "`energy-study run STUDY --rerun contended` runs them again; "
                          "include_contended = true in [study] keeps them.")


def _why_contended(row: pd.Series) -> str:
    cpu = f"{_share(row.get('others_cpu_share'))} of the CPU taken by others"
    gpu_shared = row.get("gpu_shared") == True  # noqa: E712 - NaN (older records) is not shared
    return f"another process computed on its GPU; {cpu}" if gpu_shared else cpu


def _share(value) -> str:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "an unknown share" if pd.isna(number) else f"{number:.0%}"


def _seconds_per_mac(table: pd.DataFrame) -> pd.Series:
    """Training seconds per MAC processed (per image per epoch): the same for the same work."""
    images = pd.to_numeric(table.get("train_subset"), errors="coerce")
    full = table.get("dataset", pd.Series(index=table.index, dtype=object)).map(
        lambda name: DATASETS[name].train_size if name in DATASETS else float("nan"))
    images = images.fillna(full)
    work = (pd.to_numeric(table.get("epochs_completed"), errors="coerce") * images
            * pd.to_numeric(table.get("dense_macs_per_image"), errors="coerce"))
    return pd.to_numeric(table.get("train_s_total"), errors="coerce") / work


def _family(model: str) -> str:
    return str(model).rstrip("0123456789") if str(model).startswith("resnet") else str(model)


def consistency(table: pd.DataFrame, setting_axes: list[str]) -> pd.DataFrame:
    """Timings that cannot both be right on a quiet machine, one row per finding (`check`,
    `cells`, `detail`): repeats off their setting's median speed by more than
    REPEAT_SPREAD_FACTOR, and compute inversions beyond INVERSION_FACTOR."""
    columns = ["check", "cells", "detail"]
    needed = {"train_s_total", "dense_macs_per_image", "epochs_completed", "cell"}
    if table.empty or not needed <= set(table):
        return pd.DataFrame(columns=columns)
    done = finished_rows(table).copy()
    done["_s_per_mac"] = _seconds_per_mac(done)
    done = done[done["_s_per_mac"] > 0]
    axes = [a for a in setting_axes if a in done]
    found = []
    for _, rows in (done.groupby(axes, dropna=False) if axes else [((), done)]):
        median = rows["_s_per_mac"].median()
        for _, row in rows.iterrows():
            factor = row["_s_per_mac"] / median
            if len(rows) > 1 and not 1 / REPEAT_SPREAD_FACTOR <= factor <= REPEAT_SPREAD_FACTOR:
                found.append({"check": "repeat off its setting's speed", "cells": row["cell"],
                              "detail": f"{factor:.2f}x its setting's median seconds per MAC "
                                        f"(allowed: within {REPEAT_SPREAD_FACTOR:g}x)"})
    found += _inversions(done, axes)
    return pd.DataFrame(found, columns=columns)


def _inversions(done: pd.DataFrame, axes: list[str]) -> list[dict]:
    if "s_per_epoch" not in done or "model" not in done:
        return []
    done = done.assign(_family=done["model"].map(_family),
                       _s=pd.to_numeric(done["s_per_epoch"], errors="coerce"),
                       _macs=pd.to_numeric(done["dense_macs_per_image"], errors="coerce"))
    fixed = [a for a in axes if a not in COMPUTE_AXES and a != "seed"]
    settings = done.groupby([*fixed, "_family", *[a for a in axes if a in COMPUTE_AXES]],
                            dropna=False).agg(_s=("_s", "mean"), _macs=("_macs", "mean"),
                                              cells=("cell", lambda c: ", ".join(sorted(c))))
    settings = settings.reset_index()
    found = []
    for _, group in settings.groupby([*fixed, "_family"], dropna=False):
        for _, more in group.iterrows():
            for _, fewer in group.iterrows():
                if more["_macs"] > fewer["_macs"] and more["_s"] * INVERSION_FACTOR < fewer["_s"]:
                    found.append({
                        "check": "more compute, less time",
                        "cells": f"{more['cells']} vs {fewer['cells']}",
                        "detail": f"{more['_macs'] / fewer['_macs']:.2f}x the MACs per image in "
                                  f"{more['_s'] / fewer['_s']:.2f}x the seconds per epoch"})
    return found


def consistency_sentence(findings: pd.DataFrame) -> str:
    if findings.empty:
        return ("Timings are consistent: every repeat is within "
                f"{REPEAT_SPREAD_FACTOR:g}x of its setting's speed, and no setting did more "
                "compute in less time than another of its model family.")
    return (f"{len(findings)} timing(s) cannot both be right on a quiet machine (below): other "
            "load, or a changed machine state, slowed some cells down; their time and energy "
            "are doubtful.")
