"""Run a study: check every cell can run, run the unfinished ones on an executor, then the
analysis. The one entry point of the CLI's `run` and `report`, and of the Colab notebook.
"""

from __future__ import annotations

from pathlib import Path

from ..files import check_writable
from ..locks import report_lock
from ..records import FINISHED
from .cell import StudyOutcome
from . import execute
from .execute import ANALYSIS_NOTEBOOK, execute_notebook
from .executors import Executor, SerialExecutor
from .folder import cell_status, identity
from .spec import Study


def check_cells_can_run(study: Study) -> None:
    """Fail before the first cell: device/precision support and the dataset's presence."""
    from ..data import load_split
    from ..device import resolve_runtime

    datasets_seen = set()
    for cell in study.cells:
        resolve_runtime(cell.config)
        key = (cell.config.dataset, cell.config.data_dir)
        if key not in datasets_seen:  # reads the training split, downloading it once if allowed
            load_split(cell.config, train=True)
            datasets_seen.add(key)


def run_study(study: Study, *, force: bool = False, runs_root: str | Path = "runs",
              kernel_name: str | None = None, progress: bool = True,
              only: list[str] | None = None, executor: Executor | None = None) -> StudyOutcome:
    """Run every cell that has no finished record (or all with `force`) on `executor` (default:
    `SerialExecutor`, one cell at a time -- energy must not share a device; or a
    `dask_executor.DaskExecutor`). One failing cell never stops the others. A cell whose lock
    another runner holds is skipped (`outcome.busy`); one finished by another runner while this
    one worked (also under --force) is not run again."""
    folder = study.runs_dir(runs_root)
    check_writable(folder, "runs")
    check_cells_can_run(study)
    folder.mkdir(parents=True, exist_ok=True)
    statuses = cell_status(study, runs_root)
    outcome = StudyOutcome()
    cells = [c for c in study.cells if only is None or c.name in only]
    seen = {c.name: identity(folder / f"{c.name}.ipynb") for c in cells}
    todo = []
    for cell in cells:
        if statuses[cell.name] in FINISHED and not force:
            outcome.skipped.append(cell.name)
        else:
            todo.append(cell)
    return (executor or SerialExecutor()).run(
        todo, folder, outcome, force=force, seen=seen, kernel_name=kernel_name,
        progress=progress, study_name=study.name, notebook=execute.RUN_NOTEBOOK)


def build_report(study: Study, *, runs_root: str | Path = "runs",
                 report_root: str | Path = "report", kernel_name: str | None = None,
                 on_wait=None) -> Path:
    """Execute the analysis notebook for a study; returns the report folder. One analysis at
    a time per report folder: a second runner waits for the first (`on_wait(owner)` says so)."""
    from ..report import export_html

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
