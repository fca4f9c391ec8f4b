"""What a measured GPU total is made of: how much of it is epoch 1 (warm-up: cuDNN autotuning,
allocation, clocks ramping up), how much is above the idle baseline, what an epoch costs in the
steady state after it, and which windows were too short for the energy counter to see. A short
GPU run's total can be mostly warm-up and idle; these lines say so beside it.
"""

from __future__ import annotations

import pandas as pd

from ..energy.derive import as_frame
from ..energy.table import MIN_RELIABLE_WINDOW_S, Kind, Phase

_WORK = (Phase.TRAIN.value, Phase.EVAL.value)


def gpu_lines(energy, runs: pd.DataFrame | None = None) -> list[str]:
    """Sentences on the measured GPU rows of `energy` (a study's energy table): epoch 1's share,
    the share above idle, the steady-state energy per epoch, and the windows shorter than the
    counter's update period: per cell as measured when its run started (the `runs` table's
    meter_gpu_update_period_s), else MIN_RELIABLE_WINDOW_S.
    [] where no GPU was measured."""
    frame = as_frame(energy)
    gpu = frame[(frame["component"] == "gpu") & (frame["kind"] == Kind.MEASURED.value)
                & frame["phase"].isin(_WORK)]
    if gpu.empty:
        return []
    lines = []
    per_cell = gpu.groupby("cell")
    total = per_cell["energy_j"].sum()
    first = gpu[gpu["epoch"] == 1].groupby("cell")["energy_j"].sum().reindex(total.index).fillna(0)
    above = pd.to_numeric(gpu["above_idle_j"], errors="coerce").groupby(gpu["cell"]).sum(min_count=1)
    later = gpu[gpu["epoch"] > 1]
    steady = (later.groupby(["cell", "epoch"])["energy_j"].sum().groupby("cell").mean()
              if not later.empty else pd.Series(dtype=float))
    share_first = (first / total).median() * 100
    line = (f"GPU energy (measured): epoch 1 holds a median {share_first:.0f} % of a cell's GPU "
            f"total (warm-up: autotuning, allocation, clocks)")
    if not steady.empty:
        line += (f"; after it, an epoch costs a median {steady.median():.0f} J (the steady state, "
                 "which a longer run is made of)")
    if above.notna().any():
        line += (f"; energy above the idle baseline is a median "
                 f"{(above / total).median() * 100:.0f} % of the total")
    lines.append(line + ".")
    column = "meter_gpu_update_period_s"
    measured = (pd.to_numeric(runs.set_index("cell")[column], errors="coerce")
                if runs is not None and column in runs else pd.Series(dtype=float))
    period = gpu["cell"].map(measured).fillna(MIN_RELIABLE_WINDOW_S)
    short = gpu[pd.to_numeric(gpu["duration_s"], errors="coerce") < period]
    if not short.empty:
        examples = ", ".join(f"{r['cell']} {r['phase']}-{int(r['epoch'])} "
                             f"({r['duration_s'] * 1000:.0f} ms, {r['energy_j']:.0f} J)"
                             for _, r in short.head(3).iterrows())
        timed = gpu["cell"].isin(measured.dropna().index)
        lines.append(f"{len(short)} GPU windows were shorter than the energy counter's update "
                     f"period ({_period_words(period[timed], assumed=not timed.all())}), e.g. "
                     f"{examples}: their per-window figures are not measurements, only their "
                     "sums over longer spans are.")
    return lines


def _period_words(timed_s: pd.Series, assumed: bool) -> str:
    """The update periods a short-window line used: the measured ones' range, and the assumed
    one where some records predate its measurement."""
    words = []
    if len(timed_s):
        low, high = round(timed_s.min() * 1000), round(timed_s.max() * 1000)
        words.append(f"{low if low == high else f'{low}-{high}'} ms as measured on the GPU")
    if assumed:
        words.append(f"~{MIN_RELIABLE_WINDOW_S * 1000:.0f} ms assumed"
                     + (" for the records that predate its measurement" if words else
                        ": these records predate its measurement"))
    return "; ".join(words)
