"""Study files -> grid cells -> one papermill execution per cell, resumable and atomic.

A study file (TOML) has three tables:

    [study]  name, description              (name defaults to the file's stem)
    [fixed]  RunConfig fields shared by every cell
    [axes]   RunConfig fields -> lists of values; the grid is their product

Every cell's config is validated, and its device, dataset and the output folders checked,
before the first cell runs. A cell runs only while its runner holds the cell's lock
(`locks.cell_lock`); a cell locked by another runner is skipped and named. Each cell executes
`notebooks/run.ipynb` into `runs/<study>/.running/<host>-<pid>/<cell>.ipynb` (a name unique to
the runner) and is renamed to `runs/<study>/<cell>.ipynb` only when papermill is done, so a
killed run never leaves a notebook that reads as complete. A record that is replaced (a failed
cell rerun, --force, a copy left by a killed runner) is moved to `runs/<study>/superseded/`,
never deleted and never overwritten. `run_cell` is that one path for every executor: the serial
loop here, and a Dask worker (`run_study(client=...)`, energy_lib/scaleout.py).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import RunConfig
from .energy.codecarbon_backend import RECORD_ENV
from .errors import ConfigError, StudyError
from .files import check_file_name, check_writable, move_no_replace
from .locks import (RUNNING, CellBusy, cell_lock, is_dead_runner, is_running, report_lock,
                    runner_id)
from .provenance import PROJECT_ROOT
from .records import Runs, read_notebook, read_runs

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
RUN_NOTEBOOK = NOTEBOOKS_DIR / "run.ipynb"
ANALYSIS_NOTEBOOK = NOTEBOOKS_DIR / "analysis.ipynb"
FINISHED = ("ok", "diverged")  # a diverged run is a result, not a crash: rerunning repeats it
#: Largest grid `load_study` builds unless told otherwise (`max_cells=`, CLI `--max-cells`):
#: checked from the axis lengths, before any cell exists.
MAX_CELLS = 10_000
#: Set by the runner for every cell; a study file that sets them would make cells identical.
RESERVED = ("study", "cell")


STUDIES_DIR = PROJECT_ROOT / "studies"


def default_study_file() -> Path:
    """The paper study where a CUDA GPU is visible, the quick study otherwise."""
    import torch

    return STUDIES_DIR / ("paper.toml" if torch.cuda.is_available() else "quick.toml")


@dataclass(frozen=True)
class Cell:
    name: str
    config: RunConfig


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    axes: dict[str, list]
    fixed: dict[str, Any]
    cells: tuple[Cell, ...]
    overrides: dict[str, Any] = field(default_factory=dict)  # --set values, for the analysis
    repeats: int = 1  # runs per setting, with seeds seed, seed+1, ... (a `seed` axis)
    compare: str | None = None  # a two-valued axis compared pairwise by seed (e.g. precision)
    target_acc_pct: float | None = None  # None: the lowest best accuracy across cells

    @property
    def setting_axes(self) -> list[str]:
        """The axes that define a setting: all but `seed` -- runs that differ only in their seed
        (from `repeats`, or a `seed` axis written out) are repeats of one setting."""
        return [a for a in self.axes if a != "seed"]

    def runs_dir(self, runs_root: str | Path = "runs") -> Path:
        return Path(runs_root) / self.name

    def report_dir(self, report_root: str | Path = "report") -> Path:
        return Path(report_root) / self.name


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("/", "-").replace(" ", "")


def cell_name(point: dict[str, Any]) -> str:
    """`width-1_precision-fp32`: axis-value pairs in the study file's axis order."""
    return "_".join(f"{axis}-{_format_value(value)}" for axis, value in point.items()) or "single"


def load_study(path: str | Path, *, max_cells: int = MAX_CELLS, repeats: int | None = None,
               **overrides: Any) -> Study:
    """Parse and validate a study file; `overrides` replace [fixed] values (e.g. epochs=1).
    A grid of more than `max_cells` cells is refused before any cell is built."""
    path = Path(path)
    if not path.is_file():
        found = sorted(p.name for p in Path("studies").glob("*.toml")) if Path("studies").is_dir() else []
        hint = f"; studies here: {', '.join(found)}" if found else ""
        raise StudyError(f"study file {str(path)!r} does not exist{hint}")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"study", "fixed", "axes"})
    if unknown:
        raise StudyError(f"{path}: unknown table(s) {', '.join(map(repr, unknown))}; "
                         "allowed: [study], [fixed], [axes]")
    meta, fixed, axes = (document.get(k, {}) for k in ("study", "fixed", "axes"))
    extra = sorted(set(meta) - set(STUDY_KEYS))
    if extra:
        raise StudyError(f"{path}: unknown key(s) in [study]: {', '.join(extra)}; allowed: "
                         f"{', '.join(STUDY_KEYS)}")
    if repeats is not None:
        meta = {**meta, "repeats": repeats}
    repeats, compare, target = _analysis_settings(path, meta, axes)
    if repeats > 1:
        if "seed" in axes:
            raise StudyError(f"{path}: 'seed' is an axis and repeats = {repeats}; use one of "
                             "them (repeats adds the seeds seed, seed+1, ... itself)")
        first = overrides.get("seed", fixed.get("seed", RunConfig().seed))
        if not isinstance(first, int) or isinstance(first, bool):
            raise ConfigError(f"{path}: seed={first!r} is not allowed; expected a whole number")
        fixed = {k: v for k, v in fixed.items() if k != "seed"}
        overrides = {k: v for k, v in overrides.items() if k != "seed"}
        axes = {**axes, "seed": [first + k for k in range(repeats)]}
    name = str(meta.get("name", path.stem))
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise StudyError(f"{path}: study name {name!r} must be a plain folder name")
    try:
        check_file_name(name, "study name")
    except StudyError as error:
        raise StudyError(f"{path}: {error}") from None
    for place, keys in (("[axes]", axes), ("[fixed]", fixed), ("--set", overrides)):
        reserved = [k for k in RESERVED if k in keys]
        if reserved:
            raise StudyError(f"{path}: {reserved[0]!r} cannot be set in {place}: the runner sets "
                             "'study' (the study's name) and 'cell' (each cell's name) itself")
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{path}: axis {axis!r} must be a non-empty list, got {values!r}")
        if axis in fixed:
            raise StudyError(f"{path}: {axis!r} is both an axis and a fixed setting; keep one")
    for key in overrides:
        if key in axes:
            raise StudyError(f"{path}: {key!r} is an axis of this study; it cannot be set for all cells")
    size = math.prod(len(values) for values in axes.values())
    if size > max_cells:
        lengths = " x ".join(f"{len(v)} {a}" for a, v in axes.items())
        raise StudyError(f"{path}: the grid has {size:,} cells ({lengths}), more than the limit "
                         f"of {max_cells:,}; use fewer axis values, or raise the limit with "
                         "--max-cells N")
    all_fixed = {**fixed, **overrides}
    cells = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        name_of_cell = cell_name(point)
        try:
            check_file_name(name_of_cell, "cell name")
        except StudyError as error:
            raise StudyError(f"{path}: {error}") from None
        try:
            config = RunConfig.from_dict({**all_fixed, **point, "study": name, "cell": name_of_cell})
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        cells.append(Cell(name_of_cell, config))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise StudyError(f"{path}: two cells share a name; make the axis values distinct")
    return Study(name, path, str(meta.get("description", "")), axes, all_fixed, tuple(cells),
                 dict(overrides), repeats, compare, target)


STUDY_KEYS = ("name", "description", "repeats", "compare", "target_acc_pct")


def _analysis_settings(path: Path, meta: dict, axes: dict) -> tuple[int, str | None, float | None]:
    """`repeats`, `compare` and `target_acc_pct` of [study], each checked in one line."""
    repeats = meta.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise StudyError(f"{path}: repeats={repeats!r} is not allowed; use a whole number >= 1")
    compare = meta.get("compare")
    if compare is not None:
        two_valued = [a for a, v in axes.items() if isinstance(v, list) and len(v) == 2]
        if compare not in axes or len(axes[compare]) != 2:
            raise StudyError(f"{path}: compare={compare!r} is not allowed; it must name an axis "
                             f"with exactly two values (here: {', '.join(two_valued) or 'none'})")
    target = meta.get("target_acc_pct")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 100:
            raise StudyError(f"{path}: target_acc_pct={target!r} is not allowed; use a "
                             "percentage in (0, 100]")
        target = float(target)
    return repeats, compare, target


def check_cells_can_run(study: Study) -> None:
    """Fail before the first cell: device/precision support and the dataset's presence."""
    from .data import load_split
    from .device import resolve_runtime

    datasets_seen = set()
    for cell in study.cells:
        resolve_runtime(cell.config)
        key = (cell.config.dataset, cell.config.data_dir)
        if key not in datasets_seen:  # reads the training split, downloading it once if allowed
            load_split(cell.config, train=True)
            datasets_seen.add(key)




@dataclass
class StudyOutcome:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)  # cell -> runner holding its lock
    seconds: dict[str, float] = field(default_factory=dict)


def _same_settings(recorded: dict | None, config: RunConfig) -> bool:
    """Whether a record was made with this cell's settings (data_dir aside: same data)."""
    if not recorded:
        return False
    wanted = {k: v for k, v in config.to_dict().items() if k != "data_dir"}
    return all(recorded.get(k) == v for k, v in wanted.items())


def _leftovers(folder: Path, cell: str) -> list[Path]:
    """In-progress copies of `cell` in `.running/` (runners that were killed, or one running
    now): `.running/<runner>/<cell>.ipynb`, and `.running/<cell>.ipynb` of older versions."""
    running = folder / RUNNING
    if not running.is_dir():
        return []
    found = [p for p in running.glob(f"*/{glob.escape(cell)}.ipynb") if p.is_file()]
    legacy = running / f"{cell}.ipynb"
    return sorted(found + ([legacy] if legacy.is_file() else []))


def _status_of(cell: Cell, folder: Path, *, locked: bool = False) -> str:
    """One cell's status; `locked`: this process holds the cell's lock (so not `running`)."""
    path = folder / f"{cell.name}.ipynb"
    if not locked and is_running(folder, cell.name):
        return "running"
    if not path.exists():  # a copy in .running/ is a run that was killed
        return "incomplete" if _leftovers(folder, cell.name) else "missing"
    record = read_notebook(path)
    stale = record.status in FINISHED and not _same_settings(record.records.get("config"), cell.config)
    return "stale" if stale else record.status


@dataclass
class FolderState:
    """A study folder as `list` sees it: each cell's status, and the notebooks there that are
    not cells of this study (another study's, an old grid's): never read into its report."""

    cells: dict[str, str]
    foreign: list[Path]


def study_state(study: Study, folder: str | Path) -> FolderState:
    """Classify the study folder `folder` (e.g. runs/<study>): every cell's status -- ok,
    diverged, failed, incomplete, stale (finished with other settings), missing, unreadable,
    running (its lock is held now) -- and the notebooks that are not part of the study."""
    folder = Path(folder)
    names = {c.name for c in study.cells}
    foreign = sorted(p for p in folder.glob("*.ipynb") if p.stem not in names) if folder.is_dir() else []
    return FolderState({c.name: _status_of(c, folder) for c in study.cells}, foreign)


def cell_status(study: Study, runs_root: str | Path = "runs") -> dict[str, str]:
    """Status of every cell (see `study_state`)."""
    return study_state(study, study.runs_dir(runs_root)).cells


def read_study(study: Study, folder: str | Path) -> tuple[Runs, FolderState]:
    """The study's own records in `folder`, for the report and the export: exactly its cells,
    each with its `list` status. A stale record keeps its row (status `stale`) but its epochs,
    energy and timeline are left out: they were measured with other settings."""
    state = study_state(study, folder)
    runs = read_runs(folder, cells=state.cells)
    stale = [c for c, status in state.cells.items() if status == "stale"]
    for name in ("epochs", "energy", "timeline"):
        table = getattr(runs, name)
        if stale and "cell" in table:
            setattr(runs, name, table[~table["cell"].isin(stale)].reset_index(drop=True))
    return runs, state


def _supersede(path: Path, stem: str | None = None, into: Path | None = None) -> Path:
    """Move an old record aside (kept, never deleted, never overwriting a kept one) before its
    cell runs again: into `into` (default: superseded/ beside it) as `<stem>.<time>.ipynb`."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%dT%H%M%S")
    folder = into or path.parent / "superseded"
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


def _put_in_place(running: Path, target: Path) -> None:
    """Rename a finished in-progress copy to its record name; a record found there (made by a
    runner without locks, e.g. NFS mounted with nolock) is moved to superseded/ first."""
    while True:
        try:
            move_no_replace(running, target)
            return
        except FileExistsError:
            _supersede(target)


class _KernelWatch:
    """While a cell runs in the main thread, SIGINT stops its kernel (the whole process group)
    instead of raising KeyboardInterrupt wherever the runner happens to be (inside ZMQ or an
    import lock, which prints tracebacks and may swallow it). `interrupted` is then raised as a
    clean KeyboardInterrupt by `execute_notebook`. A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.km = None
        self.interrupted = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            logging.getLogger("papermill").addFilter(self._quiet_after_interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            logging.getLogger("papermill").removeFilter(self._quiet_after_interrupt)

    def _quiet_after_interrupt(self, record) -> bool:
        """Drop papermill's 'Kernel died ...' once we stopped the kernel ourselves."""
        return not self.interrupted

    def _on_sigint(self, signum, frame) -> None:
        if self.interrupted or self.km is None:
            raise KeyboardInterrupt
        self.interrupted = True
        provisioner = getattr(self.km, "provisioner", None)
        pid = getattr(getattr(provisioner, "process", None), "pid", None)
        if pid is None:
            raise KeyboardInterrupt
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # the kernel leads its own session
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def execute_notebook(source: Path, target: Path, parameters: dict, *, kernel_name: str | None,
                     log_stream=None, runner_record: dict | None = None) -> None:
    """Execute with papermill into an in-progress copy unique to this runner
    (`.running/<host>-<pid>/`), add `runner_record` (where it ran: `scaleout.note_runner`), then
    rename into place. Raises papermill's
    PapermillExecutionError after the (failed) record is in place; KeyboardInterrupt (SIGINT)
    leaves the in-progress copy where it is, to be superseded by the next run."""
    import nbformat
    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager

    own = target.parent / RUNNING / runner_id()
    running = own / target.name
    own.mkdir(parents=True, exist_ok=True)
    kernel_name = kernel_name or nbformat.read(str(source), as_version=4).metadata.kernelspec.name
    # the kernel inherits these: a text progress bar (not widgets), and where the record goes
    settings = {"ENERGY_STUDY_TEXT_PROGRESS": "1", RECORD_ENV: str(target.resolve())}
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    watch = _KernelWatch()
    watch.km = AsyncKernelManager(kernel_name=kernel_name)
    try:
        with watch:
            pm.execute_notebook(str(source), str(running), parameters=parameters,
                                kernel_name=kernel_name, progress_bar=False,
                                stderr_file=log_stream, cwd=os.getcwd(), km=watch.km,
                                # the kernel app's own start-up notices (plain TCP on loopback,
                                # image alt text) are noise; the notebook's output and errors
                                # are kept
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception:  # a failed cell, or a kernel that died: its notebook is the record
        if watch.interrupted:
            raise KeyboardInterrupt from None
        if running.exists():
            _note_runner(running, runner_record)
            _put_in_place(running, target)
        with contextlib.suppress(OSError):
            own.rmdir()
        raise
    finally:
        _stop_kernel(watch.km)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if watch.interrupted:
        raise KeyboardInterrupt
    _note_runner(running, runner_record)
    _put_in_place(running, target)
    with contextlib.suppress(OSError):
        own.rmdir()  # this runner's own folder: no other runner writes there


def _stop_kernel(km) -> None:
    """Shut the cell's kernel down. papermill leaves a kernel whose manager it was given (`km=`)
    running; without this every cell's kernel (torch loaded: ~1 GB) lived until the runner
    exited -- for a long-lived Dask worker, never."""
    from jupyter_core.utils import run_sync

    with contextlib.suppress(Exception):  # already dead (interrupted, crashed): nothing to stop
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)


def _note_runner(running: Path, runner_record: dict | None) -> None:
    if runner_record is not None:
        from .scaleout import note_runner

        note_runner(running, runner_record)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def run_study(study: Study, *, force: bool = False, runs_root: str | Path = "runs",
              kernel_name: str | None = None, progress: bool = True,
              only: list[str] | None = None, client=None) -> StudyOutcome:
    """Run every cell that has no finished record (or all with `force`), one at a time --
    energy must not share a device -- or, given a Dask `client`, one cell per worker at a time
    on its cluster (`energy_lib.scaleout`). One failing cell never stops the others. A cell
    whose lock another runner holds is skipped (`outcome.busy`); one finished by another
    runner while this one worked (also under --force) is not run again."""
    from tqdm.auto import tqdm

    folder = study.runs_dir(runs_root)
    check_writable(folder, "runs")
    check_cells_can_run(study)
    folder.mkdir(parents=True, exist_ok=True)
    statuses = cell_status(study, runs_root)
    outcome = StudyOutcome()
    cells = [c for c in study.cells if only is None or c.name in only]
    seen = {c.name: _identity(folder / f"{c.name}.ipynb") for c in cells}
    todo = []
    for cell in cells:
        if statuses[cell.name] in FINISHED and not force:
            outcome.skipped.append(cell.name)
        else:
            todo.append(cell)
    if client is not None:
        from .scaleout import run_cells

        return run_cells(client, todo, folder, outcome, force=force, seen=seen,
                         kernel_name=kernel_name, progress=progress, study_name=study.name,
                         notebook=RUN_NOTEBOOK)
    bar = tqdm(todo, desc=f"study {study.name}", unit="cell", disable=not progress, file=sys.stderr)
    runner = {"executor": "serial", "worker": runner_id(), "host": socket.gethostname(),
              "pinned_device": os.environ.get("CUDA_VISIBLE_DEVICES"), "cells_at_once_on_host": 1,
              "shared_cpu": False}
    for cell in bar:
        bar.set_postfix_str(cell.name)
        done = run_cell(cell, folder, force=force, seen=seen[cell.name], kernel_name=kernel_name,
                        log_stream=sys.stderr if progress else None, runner=runner)
        if done.result == "error":  # no file locks here: a user-facing error, as before
            raise StudyError(done.message)
        tally(outcome, done, bar.write)
    return outcome


@dataclass
class CellRun:
    """What happened to one cell, returned by `run_cell` (picklable: Dask workers return it)."""

    cell: str
    result: str  # ran | failed | skipped | busy | error (could not even try: e.g. no locks)
    seconds: float = 0.0
    message: str = ""  # one line for the user, when there is something to say
    owner: str = ""  # the runner holding the lock, when busy
    worker: str = ""  # where it ran (Dask worker address), for the progress line


def tally(outcome: StudyOutcome, done: CellRun, say) -> None:
    """Add one cell's result to the outcome and say its line, if any."""
    where = f" [on {done.worker}]" if done.worker else ""
    if done.result == "busy":
        outcome.busy[done.cell] = done.owner
    elif done.result == "skipped":
        outcome.skipped.append(done.cell)
    elif done.result == "ran":
        outcome.ran.append(done.cell)
    else:
        outcome.failed.append(done.cell)
    if done.result in ("ran", "failed", "error"):
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
    import papermill as pm

    target = folder / f"{cell.name}.ipynb"
    try:
        with cell_lock(folder, cell.name):
            now = _status_of(cell, folder, locked=True)
            finished_elsewhere = now in FINISHED and _identity(target) != seen
            if now in FINISHED and (not force or finished_elsewhere):
                return CellRun(cell.name, "skipped")
            for leftover in _leftovers(folder, cell.name):  # killed runners' copies
                _supersede(leftover, cell.name, folder / "superseded")
                if leftover.parent.name != RUNNING and is_dead_runner(leftover.parent.name):
                    with contextlib.suppress(OSError):
                        leftover.parent.rmdir()  # only if empty
            if target.exists():
                _supersede(target)
            parameters = cell.config.to_dict()
            parameters["data_dir"] = str(Path(cell.config.data_dir).expanduser().resolve())
            started = time.perf_counter()
            try:
                execute_notebook(notebook or RUN_NOTEBOOK, target, parameters,
                                 kernel_name=kernel_name, log_stream=log_stream,
                                 runner_record=runner)
            except pm.PapermillExecutionError as error:
                return CellRun(cell.name, "failed", time.perf_counter() - started,
                               f"cell {cell.name} failed: {error.ename}: {error.evalue} "
                               f"(record kept: {target})")
            except Exception as error:  # the kernel died (out of memory, segfault): go on
                return CellRun(cell.name, "failed", time.perf_counter() - started,
                               f"cell {cell.name} failed: {type(error).__name__}: {error} "
                               f"(partial record: {target})")
            return CellRun(cell.name, "ran", time.perf_counter() - started)
    except CellBusy as busy:
        return CellRun(cell.name, "busy", owner=busy.owner,
                       message=f"cell {cell.name}: running elsewhere ({busy.owner}); skipped here")
    except StudyError as error:  # e.g. a filesystem without file locks
        return CellRun(cell.name, "error", message=str(error))


def build_report(study: Study, *, runs_root: str | Path = "runs",
                 report_root: str | Path = "report", kernel_name: str | None = None,
                 on_wait=None) -> Path:
    """Execute the analysis notebook for a study; returns the report folder. One analysis at
    a time per report folder: a second runner waits for the first (`on_wait(owner)` says so)."""
    from .report import export_html

    report_dir = study.report_dir(report_root)
    check_writable(report_dir, "report")
    report_dir.mkdir(parents=True, exist_ok=True)
    executed = report_dir / "analysis.ipynb"
    parameters = {"study_file": str(Path(study.path).resolve()),
                  "runs_dir": str(study.runs_dir(runs_root).resolve()),
                  "report_dir": str(report_dir.resolve()),
                  "overrides": dict(study.overrides), "repeats": study.repeats}
    with report_lock(report_dir, on_wait=on_wait):
        if executed.exists():  # the previous analysis: a report, not a lab record
            executed.unlink()
        execute_notebook(ANALYSIS_NOTEBOOK, executed, parameters, kernel_name=kernel_name)
        export_html(executed, report_dir / "analysis.html")
    return report_dir
