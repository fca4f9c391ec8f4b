"""One cell, run the same way by every executor (the serial loop, a Dask worker).

`run_cell` takes the cell's lock, decides again under it whether the cell still needs to run,
moves older copies aside, executes the run notebook and says what happened as a `CellRun`
(picklable: a Dask worker returns it). `tally` adds a CellRun to the study's `StudyOutcome`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..errors import StudyError
from ..folders import RUNNING, SUPERSEDED
from ..locks import CellBusy, cell_lock, is_dead_runner
from ..records import FINISHED
from . import execute
from .execute import execute_notebook
from .folder import identity, leftovers, status_of, supersede
from .spec import Cell


@dataclass
class StudyOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)  # cell -> runner holding its lock
    seconds: dict[str, float] = field(default_factory=dict)


class Outcome(StrEnum):
    """What one attempt at a cell came to (a cell's *status* is records.Status: what its record
    says; this is what the runner did about it)."""

    RAN = "ran"
    FAILED = "failed"
    SKIPPED = "skipped"  # finished already (here or by another runner meanwhile)
    BUSY = "busy"  # another runner holds its lock
    ERROR = "error"  # could not even try (e.g. a filesystem without file locks)


@dataclass
class CellRun:
    """What happened to one cell, returned by `run_cell` (picklable: Dask workers return it)."""

    cell: str
    result: Outcome
    seconds: float = 0.0
    message: str = ""  # one line for the user, when there is something to say
    owner: str = ""  # the runner holding the lock, when busy
    worker: str = ""  # where it ran (Dask worker address), for the progress line


def tally(outcome: StudyOutcome, done: CellRun, say) -> None:
    """Add one cell's result to the outcome and say its line, if any."""
    where = f" [on {done.worker}]" if done.worker else ""
    if done.result == Outcome.BUSY:
        outcome.busy[done.cell] = done.owner
    elif done.result == Outcome.SKIPPED:
        outcome.skipped.append(done.cell)
    elif done.result == Outcome.RAN:
        outcome.ran.append(done.cell)
    else:
        outcome.failed.append(done.cell)
    if done.result in (Outcome.RAN, Outcome.FAILED, Outcome.ERROR):
        outcome.seconds[done.cell] = done.seconds
    if done.message:
        say(done.message + where)


def run_cell(cell: Cell, folder: Path, *, force: bool, seen, kernel_name: str | None = None,
             log_stream=None, runner: dict | None = None, notebook: Path | None = None) -> CellRun:
    """One cell, the same way for every executor (serial, a Dask worker): take the cell's lock,
    decide again under it (another runner may have finished it meanwhile; `seen` is the record's
    identity when this run started), move killed runners' copies and the old record to
    superseded/, execute into this runner's in-progress copy and rename it into place, with
    `runner` (where it ran) as a record. KeyboardInterrupt passes through."""
    from ..jupyter_imports import without_iri_grammars

    without_iri_grammars()
    import papermill as pm

    target = folder / f"{cell.name}.ipynb"
    try:
        with cell_lock(folder, cell.name):
            now = status_of(cell, folder, locked=True)
            finished_elsewhere = now in FINISHED and identity(target) != seen
            if now in FINISHED and (not force or finished_elsewhere):
                return CellRun(cell.name, Outcome.SKIPPED)
            try:
                _move_older_copies_aside(folder, cell.name, target)
            except OSError as error:  # e.g. no space left for superseded/
                return CellRun(cell.name, Outcome.FAILED, message=(
                    f"cell {cell.name} failed before it ran: its older record could not be moved "
                    f"to superseded/: {_reason(error)} (nothing was removed)"))
            # the run's settings, and this execution's: a text progress bar (the kernel's stderr
            # goes to a terminal) and where the record goes (CodeCarbon's log lands beside it)
            parameters = {"config": cell.config.to_dict(), "progress": "text",
                          "record_path": str(target.resolve())}
            started = time.perf_counter()
            try:
                problem = execute_notebook(notebook or execute.RUN_NOTEBOOK, target, parameters,
                                           kernel_name=kernel_name, log_stream=log_stream,
                                           runner_record=runner)
            except pm.PapermillExecutionError as error:
                return CellRun(cell.name, Outcome.FAILED, time.perf_counter() - started,
                               f"cell {cell.name} failed: {error.ename}: {error.evalue} "
                               f"({_kept(folder, cell.name, target)})")
            except Exception as error:  # the kernel died (out of memory), a write failed: go on
                return CellRun(cell.name, Outcome.FAILED, time.perf_counter() - started,
                               f"cell {cell.name} failed: {type(error).__name__}: "
                               f"{_reason(error)} ({_kept(folder, cell.name, target)})")
            return CellRun(cell.name, Outcome.RAN, time.perf_counter() - started,
                           f"cell {cell.name}: record complete, but {problem}" if problem else "")
    except CellBusy as busy:
        return CellRun(cell.name, Outcome.BUSY, owner=busy.owner,
                       message=f"cell {cell.name}: running elsewhere ({busy.owner}); skipped here")
    except StudyError as error:  # e.g. a filesystem without file locks
        return CellRun(cell.name, Outcome.ERROR, message=str(error))


def _move_older_copies_aside(folder: Path, cell: str, target: Path) -> None:
    """Killed runners' in-progress copies and the old record go to superseded/ (kept)."""
    for leftover in leftovers(folder, cell):
        supersede(leftover, cell, folder / SUPERSEDED)
        if leftover.parent.name != RUNNING and is_dead_runner(leftover.parent.name):
            with contextlib.suppress(OSError):
                leftover.parent.rmdir()  # only if empty
    if target.exists():
        supersede(target)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__


def _kept(folder: Path, cell: str, target: Path) -> str:
    """Where what the failed cell wrote is now, said truly: the record, a partial copy still in
    .running/, or nothing."""
    if target.exists():
        return f"record kept: {target}"
    copies = leftovers(folder, cell)
    if copies:
        return f"partial copy kept: {copies[-1]}"
    return "no record could be written"
