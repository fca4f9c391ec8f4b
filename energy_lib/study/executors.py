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
from .cell import StudyOutcome, run_cell, tally
from .spec import Cell


class Executor(Protocol):
    def run(self, cells: list[Cell], folder: Path, outcome: StudyOutcome, *, force: bool,
            seen: dict, kernel_name: str | None, progress: bool, study_name: str,
            notebook: Path | None = None) -> StudyOutcome: ...


class SerialExecutor:
    """One cell at a time, in this process's order, with one progress bar."""

    def run(self, cells: list[Cell], folder: Path, outcome: StudyOutcome, *, force: bool,
            seen: dict, kernel_name: str | None = None, progress: bool = True,
            study_name: str = "", notebook: Path | None = None) -> StudyOutcome:
        from tqdm.auto import tqdm

        bar = tqdm(cells, desc=f"study {study_name}", unit="cell", disable=not progress,
                   file=sys.stderr)
        runner = {"executor": "serial", "worker": runner_id(), "host": socket.gethostname(),
                  "pinned_device": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "cells_at_once_on_host": 1, "shared_cpu": False}
        for cell in bar:
            bar.set_postfix_str(cell.name)
            done = run_cell(cell, folder, force=force, seen=seen[cell.name],
                            kernel_name=kernel_name, log_stream=sys.stderr if progress else None,
                            runner=runner, notebook=notebook)
            if done.result == "error":  # could not even try (e.g. no file locks): a user error
                raise StudyError(done.message)
            tally(outcome, done, bar.write)
        return outcome


#: The executors `energy-study run --executor` offers.
EXECUTORS = ("serial", "dask")


def check_executor(name: str, *, workers: int | None = None, scheduler: str | None = None) -> None:
    """`--executor` and its options, in one line each, before anything is checked or run."""
    if name not in EXECUTORS:
        raise StudyError(f"--executor {name!r}: unknown; choose one of {', '.join(EXECUTORS)}")
    if name != "dask" and (workers is not None or scheduler is not None):
        raise StudyError("--workers and --scheduler need --executor dask")
    if workers is not None and workers < 1:
        raise StudyError(f"--workers {workers}: must be at least 1")


@contextlib.contextmanager
def open_executor(name: str, *, workers: int | None = None, scheduler: str | None = None,
                  say=print) -> Iterator[Executor]:
    """The executor named on the command line, open for the duration of the block (a Dask
    cluster started here is closed after it, which also stops cells still running there)."""
    check_executor(name, workers=workers, scheduler=scheduler)
    if name == "serial":
        yield SerialExecutor()
        return
    from .dask_executor import DaskExecutor, open_client

    with open_client(workers=workers, scheduler=scheduler, say=say) as client:
        yield DaskExecutor(client)
