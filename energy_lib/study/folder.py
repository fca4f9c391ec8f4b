"""A study folder (runs/<study>/): each cell's status, and how records are moved aside.

A record is never deleted and never overwritten: a record that is replaced (a failed cell rerun,
--force, a copy left in `.running/` by a killed runner) is moved to `superseded/` under a name
with its time; a finished in-progress copy is renamed into place without replacing anything.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..config import RunConfig
from ..errors import StudyError
from ..files import move_no_replace
from ..folders import RUNNING, RUNS, SUPERSEDED
from ..locks import is_running
from ..records import FINISHED, LabRecord, Runs, Status, read_record, read_runs
from .spec import Cell, Study

def _same_settings(recorded: dict | None, config: RunConfig) -> bool:
    """Whether a record was made with this cell's settings (data_dir aside: same data)."""
    if not recorded:
        return False
    wanted = {k: v for k, v in config.to_dict().items() if k != "data_dir"}
    return all(recorded.get(k) == v for k, v in wanted.items())


def leftovers(folder: Path, cell: str) -> list[Path]:
    """In-progress copies of `cell` in `.running/<runner>/` (runners that were killed, or one
    running now)."""
    running = folder / RUNNING
    if not running.is_dir():
        return []
    return sorted(p for p in running.glob(f"*/{glob.escape(cell)}.ipynb") if p.is_file())


def status_of(cell: Cell, folder: Path, *, locked: bool = False) -> Status:
    """One cell's status; `locked`: this process holds the cell's lock (so not `running`)."""
    return _classify(cell, folder, locked=locked)[0]


def _classify(cell: Cell, folder: Path, *, locked: bool = False
              ) -> tuple[Status, LabRecord | None]:
    """The cell's status -- decided here alone -- and its record, read once (None without one)."""
    path = folder / f"{cell.name}.ipynb"
    if not locked and is_running(folder, cell.name):
        return Status.RUNNING, None
    if not path.exists():  # a copy in .running/ is a run that was killed
        return (Status.INCOMPLETE if leftovers(folder, cell.name) else Status.MISSING), None
    record = read_record(path)
    if record.finished and not _same_settings(record.config, cell.config):
        return Status.STALE, record
    return record.status, record


@dataclass
class FolderState:
    """A study folder as `list` sees it: each cell's status, the finished cells that ran while
    other load contended with them (their energy and time are not the cell's alone), and the
    notebooks there that are not cells of this study (never read into its report)."""

    cells: dict[str, Status]
    foreign: list[Path]
    contended: set[str] = field(default_factory=set)
    #: cell -> its record, as read to decide its status (cells without a record are absent)
    records: dict[str, LabRecord] = field(default_factory=dict, repr=False)

    def describe(self, cell: str) -> str:
        """`ok`, or `ok, contended`: how `list` shows a cell."""
        status = str(self.cells[cell])
        return f"{status}, contended" if cell in self.contended else status


def study_state(study: Study, folder: str | Path) -> FolderState:
    """Classify the study folder `folder` (e.g. runs/<study>): every cell's status -- ok,
    diverged, failed, incomplete, stale (finished with other settings), missing, unreadable,
    running (its lock is held now) -- and the notebooks that are not part of the study."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StudyError(f"runs folder {folder} is not a folder; give --runs-dir the folder "
                         "that holds the lab records")
    names = {c.name for c in study.cells}
    foreign = sorted(p for p in folder.glob("*.ipynb") if p.stem not in names) if folder.is_dir() else []
    found = {c.name: _classify(c, folder) for c in study.cells}
    records = {name: record for name, (_, record) in found.items() if record is not None}
    contended = {name for name, (status, record) in found.items()
                 if status in FINISHED and bool(record.summary.get("contended"))}
    return FolderState({name: status for name, (status, _) in found.items()}, foreign, contended,
                       records)


def cell_status(study: Study, runs_root: str | Path = RUNS) -> dict[str, Status]:
    """Status of every cell (see `study_state`)."""
    return study_state(study, study.runs_dir(runs_root)).cells


def read_study(study: Study, folder: str | Path) -> tuple[Runs, FolderState]:
    """The study's own records in `folder`, for the report and the export: exactly its cells,
    each with its `list` status. A stale record keeps its row (status `stale`) but its epochs,
    energy and timeline are left out: they were measured with other settings."""
    state = study_state(study, folder)
    runs = read_runs(folder, cells=state.cells, records=state.records)  # each record read once
    # every row names its setting, also a cell without a record yet: the study file knows it
    for axis in study.axes:
        known = runs.runs["cell"].map({c.name: getattr(c.config, axis) for c in study.cells})
        runs.runs[axis] = runs.runs[axis].fillna(known) if axis in runs.runs else known
    stale = [c for c, status in state.cells.items() if status == Status.STALE]
    for name in ("epochs", "energy", "timeline"):
        table = getattr(runs, name)
        if stale and "cell" in table:
            setattr(runs, name, table[~table["cell"].isin(stale)].reset_index(drop=True))
    return runs, state


def supersede(path: Path, stem: str | None = None, into: Path | None = None) -> Path:
    """Move an old record aside (kept, never deleted, never overwriting a kept one) before its
    cell runs again: into `into` (default: superseded/ beside it) as `<stem>.<time>.ipynb`."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%dT%H%M%S")
    folder = into or path.parent / SUPERSEDED
    folder.mkdir(exist_ok=True)
    stem = stem or path.stem
    attempt = 1
    while True:  # two replacements within one second: never overwrite a kept record
        suffix = "" if attempt == 1 else f"-{attempt}"
        target = folder / f"{stem}.{stamp}{suffix}{path.suffix}"
        try:
            move_no_replace(path, target)
            return target
        except FileExistsError:
            attempt += 1


def put_in_place(running: Path, target: Path) -> None:
    """Rename a finished in-progress copy to its record name; a record found there (made by a
    runner without locks, e.g. NFS mounted with nolock) is moved to superseded/ first."""
    while True:
        try:
            move_no_replace(running, target)
            return
        except FileExistsError:
            supersede(target)


def identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns
