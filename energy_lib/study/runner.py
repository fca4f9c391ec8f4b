"""Run a study: check every cell can run, run the unfinished ones on an executor, then the
analysis. The one entry point of the CLI's `run` and `report`, and of the Colab notebook.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StudyError, WriteError
from ..files import check_runs_folder, check_writable, resolve_path
from ..folders import REPORT, RUNS
from ..locks import report_lock, runner_id
from ..records import FINISHED
from . import execute
from .cell import StudyOutcome
from .execute import execute_notebook
from .executors import Executor, SerialExecutor
from .folder import identity, study_state
from .spec import MAX_CELLS, Cell, Study


def check_cells_can_run(study: Study) -> None:
    """Fail before the first cell: device/precision support and the dataset's presence."""
    from ..training.data import load_split
    from ..training.device import resolve_runtime

    datasets_seen = set()
    for cell in study.cells:
        resolve_runtime(cell.config)
        key = (cell.config.dataset, cell.config.data_dir)
        if key not in datasets_seen:  # reads the training split, downloading it once if allowed
            load_split(cell.config, train=True)
            datasets_seen.add(key)


#: What `--rerun` can name: finished cells to run again, their records kept in superseded/.
RERUN = ("contended",)


def start_look():
    """A look at the machine around this runner's checks of its cells (importing torch, reading
    the dataset: this process's own work, which the look leaves out), so that it costs no second
    of its own before the first cell (energy.attribution.LoadWatch)."""
    from ..energy.attribution import LoadWatch

    return LoadWatch(exclude_pids={os.getpid()})


def end_look(look, seconds: float = 1.0):
    """The machine's load over the look (energy.attribution.MachineLoad), which spans at least
    `seconds`."""
    time.sleep(max(0.0, seconds - (time.perf_counter() - look.started)))
    return look.stop()


def say_other_load(threshold: float, load) -> None:
    """Other busy processes before the first cell would slow the cells down and, at machine
    level, be billed as theirs; said in one line."""
    if load.busy(threshold):
        print(f"energy-study: note: {load.describe()}; cells measured now may be contended "
              "(--wait-quiet SECONDS waits for a quiet machine before each cell)", flush=True)


def emulated_lines(cells) -> list[str]:
    """One note per precision of the grid that runs emulated here (training.device.
    emulated_precision): its effect is this machine's software path, said before the first cell."""
    from ..provenance import fingerprint
    from ..training.device import emulated_precision, resolve_device

    said, machines = [], {}
    for cell in cells:
        device = resolve_device(cell.config.device)
        if device not in machines:  # one fingerprint per device, not per cell
            machines[device] = fingerprint(device)
        why = emulated_precision(cell.config.precision, device, machines[device])
        line = f"energy-study: note: {why}"
        if why and line not in said:
            said.append(line)
    return said


def say_emulated(cells) -> None:
    """Print `emulated_lines(cells)` before the first cell."""
    for line in emulated_lines(cells):
        print(line, flush=True)


@dataclass(frozen=True)
class Selection:
    """Which of a study's cells a run starts (`todo`), which it skips as finished, which
    finished ones it runs again (`again`), and each cell notebook's identity when chosen."""
    todo: tuple[Cell, ...]
    skipped: tuple[str, ...]
    again: frozenset[str]
    seen: dict


def select_cells(study: Study, folder: Path, *, force: bool = False, rerun: tuple[str, ...] = (),
                 only: list[str] | None = None, block: bool = False) -> Selection:
    """The cells `run` would start in `folder` (which may not exist yet): every cell without a
    finished record, all with `force`, and with `rerun=("contended",)` the contended ones;
    with `block`, every other arm of their comparisons too (Study.block_of), finished or not, so
    that no comparison pairs a new arm with an old one."""
    state = study_state(study, folder)
    cells = [c for c in study.cells if only is None or c.name in only]
    again = ({c.name for c in cells} if force else
             {c.name for c in cells if c.name in state.contended} if "contended" in rerun else set())
    todo = [c for c in cells if state.cells[c.name] not in FINISHED or c.name in again]
    if block and todo:
        arms = set(study.block_of([c.name for c in todo]))
        again |= {name for name in arms if state.cells[name] in FINISHED}
        cells = [c for c in study.cells if c.name in arms or c in cells]
        todo = [c for c in study.cells if c.name in arms]
    return Selection(tuple(todo), tuple(c.name for c in cells if c not in todo),
                     frozenset(again), {c.name: identity(folder / f"{c.name}.ipynb") for c in cells})


def say_plan(cells) -> None:
    """The predicted time and energy of `cells` here, in one line (study.plan)."""
    from .plan import make_plan

    print(f"energy-study: {make_plan(cells).line()}", flush=True)


def plan_text(study, runs_dir, **choose) -> str:
    """What `energy-study run --plan` prints (and Colab's notebook before its grid): the cells a
    run would start in `runs_dir` (`choose`: runner.select_cells' force/rerun/only/block), each
    predicted here, and the total. Probes; writes nothing."""
    from .plan import make_plan

    check_cells_can_run(study)
    selection = select_cells(study, runs_dir, **choose)
    todo = selection.todo
    lines = [f"study {study.name}: {len(todo)} cell{'s' * (len(todo) != 1)} to run here"
             + (f", {len(selection.skipped)} finished (skipped)" if selection.skipped else "")]
    if todo:
        lines += emulated_lines(todo)
        lines.append(make_plan(todo).table())
    return "\n".join(lines)


def invocation_id() -> str:
    """This call of the runner: `<host>-<pid>-<UTC start time>`. Records that share it were
    measured in one sitting; the report never pairs records of different invocations without
    saying so (report.findings.one_invocation)."""
    from datetime import UTC, datetime

    return f"{runner_id()}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"


def check_rerun(rerun) -> None:
    unknown = sorted(set(rerun) - set(RERUN))
    if unknown:
        raise StudyError(f"--rerun {unknown[0]!r}: unknown; choose one of {', '.join(RERUN)}")


def run_study(study: Study, *, force: bool = False, rerun: tuple[str, ...] = (),
              runs_root: str | Path = RUNS, kernel_name: str | None = None,
              progress: bool | str = True, only: list[str] | None = None,
              executor: Executor | None = None, look_first: bool = False,
              block: bool = False, plan: bool = True) -> StudyOutcome:
    """Run every cell that has no finished record (or all with `force`; or, with
    `rerun=("contended",)`, also the finished cells other load contended with) on `executor`
    (default: `SerialExecutor`, one cell at a time -- energy must not share a device; or a
    `dask_executor.DaskExecutor`). One failing cell never stops the others. A cell whose lock
    another runner holds is skipped (`outcome.busy`); one finished by another runner while this
    one worked (also under --force) is not run again. `block`: every other arm of the chosen
    cells' comparisons runs too (`select_cells`). `plan`: with `look_first`, print the plan's
    total first (serial runs only). `look_first`: before the first cell, say
    in one line each precision that runs emulated here, then look at the machine for a second
    and say in one line if other processes are busy. `progress`:
    True (the study's bar, and each cell's own output on stderr), "bar" (the bar only: one
    clean line in a notebook) or False."""
    check_rerun(rerun)
    folder = study.runs_dir(runs_root)
    check_runs_folder(folder)
    look = start_look() if look_first else None  # around the checks below
    check_cells_can_run(study)
    folder.mkdir(parents=True, exist_ok=True)
    selection = select_cells(study, folder, force=force, rerun=rerun, only=only, block=block)
    outcome = StudyOutcome(skipped=list(selection.skipped))
    if look is not None and selection.todo:
        load = end_look(look)  # before the plan's probes, which train here
        say_emulated(selection.todo)
        if plan and (executor is None or isinstance(executor, SerialExecutor)):  # run here
            say_plan(selection.todo)
        say_other_load(selection.todo[0].config.contention_threshold, load)
    invocation = invocation_id()  # every record of this call says it came from it
    places = {cell.name: {"order": study.order, "position": index, "cells": len(study.cells),
                          "invocation": invocation}
              for index, cell in enumerate(study.cells, 1)}
    return (executor or SerialExecutor()).run(
        selection.todo, folder, outcome, force=selection.again, seen=selection.seen,
        kernel_name=kernel_name, progress=progress, study_name=study.name, notebook=execute.RUN_NOTEBOOK, places=places)


def build_report(study: Study, *, runs_root: str | Path = RUNS,
                 report_root: str | Path = REPORT, kernel_name: str | None = None,
                 on_wait=None) -> Path:
    """Execute the analysis notebook for a study into its report folder, which is returned
    (written aside and renamed into place whole: `write_report_folder`)."""
    from ..report import export_html

    runs_dir = study.runs_dir(runs_root)

    def analyse(draft: Path) -> None:
        parameters = {"study_file": os.path.abspath(study.path),  # as given: its links mean this project
                      "runs_dir": str(runs_dir.resolve()), "report_dir": str(draft.resolve()),
                      "overrides": dict(study.overrides), "repeats": study.repeats,
                      # the grid loaded here loads there too (--max-cells reaches the analysis)
                      "max_cells": max(MAX_CELLS, len(study.cells))}
        execute_notebook(execute.ANALYSIS_NOTEBOOK, draft / "analysis.ipynb", parameters,
                         kernel_name=kernel_name)
        export_html(draft / "analysis.ipynb", draft / "analysis.html")

    return write_report_folder(study.report_dir(report_root), runs_dir, study.name, analyse,
                               on_wait=on_wait)


def build_tracked_report(runs_dir: str | Path, report_dir: str | Path, on_wait=None) -> Path:
    """The report of a folder of `energy_lib.Tracker` records (report.tracked), written like a
    study's: aside, then renamed into place whole."""
    from ..report.tracked import build_tracked

    runs_dir, report_dir = Path(runs_dir), Path(report_dir)
    return write_report_folder(report_dir, runs_dir, runs_dir.name,
                               lambda draft: build_tracked(runs_dir, draft),
                               mark=TRACKED_REPORT_MARK, on_wait=on_wait)


def write_report_folder(report_dir: Path, runs_dir: Path, name: str, write, *,
                        mark: str | None = None, on_wait=None) -> Path:
    """Call `write(draft)` for a fresh draft folder (`report/.<name>.<runner>.draft/`) and
    rename it into place only when it is whole, so a failed or killed analysis never leaves half
    a report where a good one was; a failed attempt is kept as `report/<name>.failed/` to read.
    One writer at a time per report: a second waits for the first (`on_wait(owner)`)."""
    check_report_folder(report_dir, runs_dir, mark or REPORT_MARK)
    check_writable(report_dir.parent, "report")
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    with report_lock(report_dir.parent, name, on_wait=on_wait):
        draft = report_dir.with_name(f".{report_dir.name}.{runner_id()}.draft")
        shutil.rmtree(draft, ignore_errors=True)  # this runner's own, from an earlier attempt
        draft.mkdir()
        try:
            write(draft)
        except BaseException:
            _keep_failed(draft, report_dir.with_name(f"{report_dir.name}.failed"))
            raise
        _swap_in(draft, report_dir)
    return report_dir


#: What marks a folder as a report this project wrote: its executed analysis notebook (a
#: tracked folder's report: its findings).
REPORT_MARK, TRACKED_REPORT_MARK = "analysis.ipynb", "findings.md"


def check_report_folder(report_dir: Path, runs_dir: Path, mark: str = REPORT_MARK) -> None:
    """A report folder the analysis may (re)write: not a symbolic link, not a lab-record
    folder, not a file, and either new, empty, or a report this project wrote (its files are
    replaced as a whole). `run` checks it before the first cell."""
    if report_dir.is_symlink():
        raise WriteError(f"report folder {report_dir} is a symbolic link (to "
                         f"{os.readlink(report_dir)}): a report is replaced as a whole, which "
                         "would move files of the folder it points to; give --report-dir a real "
                         "folder")
    resolved, runs = resolve_path(report_dir, "report folder"), resolve_path(runs_dir, "runs folder")
    if resolved == runs or runs in resolved.parents or resolved in runs.parents:
        raise WriteError(f"report folder {report_dir} is inside or around the lab records "
                         f"({runs_dir}); give --report-dir a folder apart from --runs-dir")
    if report_dir.exists() and not report_dir.is_dir():
        raise WriteError(f"report folder {report_dir} is not a folder")
    if report_dir.is_dir() and any(report_dir.iterdir()) and not (report_dir / mark).is_file():
        raise WriteError(f"report folder {report_dir} holds files this project did not write "
                         f"(no {mark}); choose another --report-dir, or empty it")


def _swap_in(draft: Path, report_dir: Path) -> None:
    """Put the finished draft where the report is; files of the old report that the new one
    does not write (an older version's figure) are kept in it, never lost."""
    old = report_dir.with_name(f".{report_dir.name}.{runner_id()}.old")
    if report_dir.exists():
        os.rename(report_dir, old)
    os.rename(draft, report_dir)
    if old.exists():
        for entry in old.iterdir():
            if not (report_dir / entry.name).exists():
                os.rename(entry, report_dir / entry.name)
        shutil.rmtree(old)


def _keep_failed(draft: Path, failed: Path) -> None:
    """The failed attempt, kept to read (replacing an older failed attempt, never a report)."""
    with contextlib.suppress(OSError):
        if failed.exists():
            shutil.rmtree(failed)
        os.rename(draft, failed)
