"""Executors: how a study's cells are spread over devices. The runner is given one.

An executor has one method, `run(cells, folder, outcome, ...)`: it runs every cell through
`cell.run_cell` (the same lock, in-progress copy, rename and superseded/ for all of them) and
tallies each result into `outcome`. `SerialExecutor` runs one cell at a time here (energy
figures must not share a device); `dask_executor.DaskExecutor` runs one cell per Dask worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, Protocol

from ..errors import StudyError
from ..locks import runner_id
from .cell import Outcome, StudyOutcome, run_cell, tally
from .spec import Cell


class Executor(Protocol):
    """`places`: cell -> where it stands in the study's running order (`order`, `position`,
    `cells`), added to the runner's note in its record; `force`: the cells to run even when
    their record is finished (their old records go to superseded/)."""

    def run(self, cells: list[Cell], folder: Path, outcome: StudyOutcome, *, force: frozenset[str],
            seen: dict, kernel_name: str | None, progress: bool, study_name: str,
            notebook: Path | None = None, places: dict | None = None) -> StudyOutcome: ...


class SerialExecutor:
    """One cell at a time, in the study's order, with one progress bar. `wait_quiet_s`: before
    each cell, wait up to that long for other processes to leave the machine quiet (below the
    cell's `contention_threshold`), and say so in one line."""

    def __init__(self, wait_quiet_s: float = 0.0) -> None:
        self.wait_quiet_s = wait_quiet_s

    def run(self, cells: list[Cell], folder: Path, outcome: StudyOutcome, *,
            force: frozenset[str], seen: dict, kernel_name: str | None = None, progress: bool = True,
            study_name: str = "", notebook: Path | None = None,
            places: dict | None = None) -> StudyOutcome:
        from tqdm.auto import tqdm

        bar = tqdm(cells, desc=f"study {study_name}", unit="cell", disable=not progress,
                   file=sys.stderr)
        runner = {"executor": "serial", "worker": runner_id(), "host": socket.gethostname(),
                  "pinned_device": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "cells_at_once_on_host": 1, "shared_cpu": False}
        for cell in bar:
            bar.set_postfix_str(cell.name)
            if self.wait_quiet_s:
                wait_for_quiet(cell, self.wait_quiet_s, bar.write)
            done = run_cell(cell, folder, force=cell.name in force, seen=seen[cell.name],
                            kernel_name=kernel_name,
                            log_stream=sys.stderr if progress is True else None,
                            runner={**runner, **(places or {}).get(cell.name, {})},
                            notebook=notebook)
            if done.result == Outcome.ERROR:  # could not even try (e.g. no file locks): a user error
                raise StudyError(done.message)
            tally(outcome, done, bar.write)
        return outcome


def wait_for_quiet(cell: Cell, wait_s: float, say) -> None:
    """Look at the machine (a second at a time, this runner left out) until other processes
    are below the cell's contention threshold, for at most `wait_s` seconds."""
    import time

    from ..energy.attribution import machine_load

    threshold = cell.config.contention_threshold
    deadline = time.monotonic() + wait_s
    load = machine_load(1.0, exclude_pids={os.getpid()})
    if not load.busy(threshold):
        return
    say(f"cell {cell.name}: waiting up to {wait_s:g} s for a quiet machine: {load.describe()}")
    while time.monotonic() < deadline:
        load = machine_load(min(1.0, max(deadline - time.monotonic(), 0.1)),
                            exclude_pids={os.getpid()})
        if not load.busy(threshold):
            say(f"cell {cell.name}: the machine is quiet now; running it")
            return
    say(f"cell {cell.name}: still busy after {wait_s:g} s ({load.describe()}); running it "
        "anyway: its record says whether it was contended")


#: The executors `energy-study run --executor` offers.
EXECUTORS = ("serial", "dask")


def check_executor(name: str, *, workers: int | None = None, scheduler: str | None = None,
                   wait_quiet_s: float = 0.0) -> None:
    """`--executor` and its options, in one line each, before anything is checked or run."""
    if not 0 <= wait_quiet_s < float("inf"):
        raise StudyError(f"--wait-quiet {wait_quiet_s!r}: use a number of seconds >= 0")
    if wait_quiet_s and name != "serial":
        raise StudyError("--wait-quiet needs --executor serial: with Dask, the other cells "
                         "running at the same time are the load it would wait for")
    if name not in EXECUTORS:
        raise StudyError(f"--executor {name!r}: unknown; choose one of {', '.join(EXECUTORS)}")
    if name != "dask" and (workers is not None or scheduler is not None):
        raise StudyError("--workers and --scheduler need --executor dask")
    if workers is not None and workers < 1:
        raise StudyError(f"--workers {workers}: must be at least 1")


@contextlib.contextmanager
def open_executor(name: str, *, workers: int | None = None, scheduler: str | None = None,
                  wait_quiet_s: float = 0.0, say=print) -> Iterator[Executor]:
    """The executor named on the command line, open for the duration of the block (a Dask
    cluster started here is closed after it, which also stops cells still running there)."""
    check_executor(name, workers=workers, scheduler=scheduler, wait_quiet_s=wait_quiet_s)
    if name == "serial":
        yield SerialExecutor(wait_quiet_s)
        return
    from .dask_executor import DaskExecutor, cuda_gpus, open_client

    with open_client(workers=workers, scheduler=scheduler, say=say) as client:
        local_cpu = scheduler is None and not cuda_gpus()
        yield DaskExecutor(client, pin_cores=local_cpu)
