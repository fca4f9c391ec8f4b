"""What a study will cost here, before it runs: each cell's predicted time and energy and the
study's total (`energy-study run STUDY --plan`, and one line before a normal run's first cell).

Each distinct setting (cells that differ only in their seed share one) is probed once
(training.probe: a few metered training steps, never part of a record); a cell's time is its
training and evaluation at the probed rates, plus its idle windows and the start of a fresh
interpreter (timed once here) and the setup and predictions the first probe timed (every
cell's kernel is fresh, so the cold figure stands for each). Where this machine has a matching
calibration, the layer regression's model-compute energy is shown beside the probe's. Nothing
is written.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
import time
from dataclasses import dataclass

from .spec import Cell

#: What a cell's kernel imports before it trains (the run notebook's first cells).
KERNEL_IMPORTS = "import torch, energy_lib.lab, energy_lib.report, energy_lib.training.train"


@dataclass(frozen=True)
class CellPlan:
    name: str
    train_eval_s: float  # the cell's training and evaluation at the probed rates
    seconds: float  # the whole cell: train_eval_s + a kernel's start + the cell's setup and
    #                 predictions (as probed) + its idle windows
    energy_j: float  # headline energy of training and evaluation, the cell's meters
    energy_label: str  # how that energy is obtained (kind, methods, scope)
    regression_j: float | None  # layer regression (model compute), where a calibration matches


@dataclass(frozen=True)
class Plan:
    cells: tuple[CellPlan, ...]
    settings: int
    start_s: float  # a fresh interpreter's imports, timed once
    probe_s: float  # what probing took

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.cells)

    @property
    def energy_j(self) -> float:
        return sum(c.energy_j for c in self.cells)

    def line(self) -> str:
        """One line: the total, and where it comes from."""
        return (f"plan: {len(self.cells)} cell{'s' * (len(self.cells) != 1)} here, about "
                f"{duration_text(self.seconds)} and {energy_text(self.energy_j)} (probed "
                f"{self.settings} setting{'s' * (self.settings != 1)} in "
                f"{self.probe_s:.0f} s; --plan shows each cell)")

    def table(self) -> str:
        """Every cell's prediction, the total, and how each figure was obtained."""
        width = max([len(c.name) for c in self.cells] + [4])
        lines = [f"{'cell':<{width}}  {'time':>9}  {'energy':>9}  layer regression"]
        for c in self.cells:
            regression = energy_text(c.regression_j) if c.regression_j is not None else "-"
            lines.append(f"{c.name:<{width}}  {duration_text(c.seconds):>9}  "
                         f"{energy_text(c.energy_j):>9}  {regression}")
        lines.append(f"{'total':<{width}}  {duration_text(self.seconds):>9}  "
                     f"{energy_text(self.energy_j):>9}")
        labels = sorted({c.energy_label for c in self.cells})
        lines += [
            f"time: training and evaluation at the rates of {self.settings} probed "
            f"setting{'s' * (self.settings != 1)} (a few training steps each, never recorded), "
            f"plus a kernel's start ({self.start_s:.1f} s here), the cell's data, model and "
            "predictions (as the first, cold probe built them) and its idle windows; the "
            "analysis comes after",
            f"energy: the headline of training and evaluation, {'; '.join(labels)}",
            "layer regression: model compute from this machine's calibration (- where none "
            "matches: `energy-study calibrate --quick`)"]
        return "\n".join(lines)


def setting_key(cell: Cell) -> tuple:
    """Cells that differ only in their seed (and name) run at the same speed."""
    return tuple(sorted(cell.config.replace(seed=0, cell="").to_dict().items()))


def make_plan(cells: list[Cell] | tuple[Cell, ...]) -> Plan:
    """Probe each distinct setting of `cells` once and predict every cell from it."""
    from ..training.probe import probe

    started = time.perf_counter()
    start_s = kernel_start_s()
    probes, machine_states = {}, {}  # the machine's present state: metered once, seconds apart
    for cell in cells:
        if setting_key(cell) not in probes:
            probes[setting_key(cell)] = probe(cell.config, machine_states)
    # every cell starts in a fresh kernel: its setup (with its own machine-state probe) costs
    # what the first (cold) probe's did
    setup_s = next(iter(probes.values())).setup_s
    plans = []
    for cell in cells:
        config, rate = cell.config, probes[setting_key(cell)]
        train_steps = config.train_size / config.batch_size
        eval_batches = math.ceil(config.test_size / (config.eval_batch_size or config.batch_size))
        train_eval_s = config.epochs * (train_steps * rate.train_step_s
                                        + eval_batches * rate.eval_batch_s)
        energy_j = config.epochs * (train_steps * rate.train_step_j
                                    + eval_batches * rate.eval_batch_j)
        fixed_s = start_s + setup_s + config.idle_s + config.idle_after_s
        plans.append(CellPlan(cell.name, train_eval_s, train_eval_s + fixed_s, energy_j,
                              f"{rate.energy_kind} ({rate.energy_methods})", rate.regression_j))
    return Plan(tuple(plans), len(probes), start_s, time.perf_counter() - started)


@functools.cache
def kernel_start_s() -> float:
    """Seconds a fresh interpreter takes to import what a cell's kernel imports (timed once per
    process: a notebook or a test that plans several times pays for it once)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", KERNEL_IMPORTS], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"


def energy_text(joules: float) -> str:
    if joules < 1e3:
        return f"{joules:.0f} J"
    if joules < 3.6e6:
        return f"{joules / 1e3:.1f} kJ"
    return f"{joules / 3.6e6:.2f} kWh"

