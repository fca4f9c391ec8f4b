"""Study files -> grid cells -> one papermill execution per cell, resumable and atomic.

A study file (TOML) has three tables:

    [study]  name, description              (name defaults to the file's stem)
    [fixed]  RunConfig fields shared by every cell
    [axes]   RunConfig fields -> lists of values; the grid is their product

Every cell's config is validated, and its device and dataset checked, before the first cell
runs. Each cell executes `notebooks/run.ipynb` into `runs/<study>/.running/<cell>.ipynb` and is
renamed to `runs/<study>/<cell>.ipynb` only when papermill is done, so a killed run never leaves
a notebook that reads as complete. A record that is replaced (a failed cell rerun, or --force) is
moved to `runs/<study>/superseded/`, never deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import RunConfig
from .energy.codecarbon_backend import RECORD_ENV
from .errors import ConfigError, StudyError
from .provenance import PROJECT_ROOT
from .records import read_notebook

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
RUN_NOTEBOOK = NOTEBOOKS_DIR / "run.ipynb"
ANALYSIS_NOTEBOOK = NOTEBOOKS_DIR / "analysis.ipynb"
FINISHED = ("ok", "diverged")  # a diverged run is a result, not a crash: rerunning repeats it


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


def load_study(path: str | Path, **overrides: Any) -> Study:
    """Parse and validate a study file; `overrides` replace [fixed] values (e.g. epochs=1)."""
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
    extra = sorted(set(meta) - {"name", "description"})
    if extra:
        raise StudyError(f"{path}: unknown key(s) in [study]: {', '.join(extra)}; allowed: name, description")
    name = str(meta.get("name", path.stem))
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise StudyError(f"{path}: study name {name!r} must be a plain folder name")
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{path}: axis {axis!r} must be a non-empty list, got {values!r}")
        if axis in fixed:
            raise StudyError(f"{path}: {axis!r} is both an axis and a fixed setting; keep one")
    for key in overrides:
        if key in axes:
            raise StudyError(f"{path}: {key!r} is an axis of this study; it cannot be set for all cells")
    fixed = {**fixed, **overrides}
    cells = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        name_of_cell = cell_name(point)
        try:
            config = RunConfig.from_dict({**fixed, **point, "study": name, "cell": name_of_cell})
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        cells.append(Cell(name_of_cell, config))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise StudyError(f"{path}: two cells share a name; make the axis values distinct")
    return Study(name, path, str(meta.get("description", "")), axes, fixed, tuple(cells))


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
    seconds: dict[str, float] = field(default_factory=dict)


def _same_settings(recorded: dict | None, config: RunConfig) -> bool:
    """Whether a record was made with this cell's settings (data_dir aside: same data)."""
    if not recorded:
        return False
    wanted = {k: v for k, v in config.to_dict().items() if k != "data_dir"}
    return all(recorded.get(k) == v for k, v in wanted.items())


def cell_status(study: Study, runs_root: str | Path = "runs") -> dict[str, str]:
    """Status of every cell from its executed notebook: ok, diverged, failed, incomplete,
    unreadable, missing (no notebook) or stale (finished, but with other settings)."""
    folder = study.runs_dir(runs_root)
    statuses = {}
    for cell in study.cells:
        path = folder / f"{cell.name}.ipynb"
        if not path.exists():  # a copy in .running/ is a run in progress or one that was killed
            statuses[cell.name] = "incomplete" if (folder / ".running" / path.name).exists() else "missing"
            continue
        record = read_notebook(path)
        stale = record.status in FINISHED and not _same_settings(record.records.get("config"), cell.config)
        statuses[cell.name] = "stale" if stale else record.status
    return statuses


def _supersede(path: Path) -> None:
    """Move an old record aside (kept, never deleted) before its cell runs again."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%dT%H%M%S")
    folder = path.parent / "superseded"
    folder.mkdir(exist_ok=True)
    target = folder / f"{path.stem}.{stamp}{path.suffix}"
    attempt = 1
    while target.exists():  # two replacements within one second: never overwrite a kept record
        attempt += 1
        target = folder / f"{path.stem}.{stamp}-{attempt}{path.suffix}"
    shutil.move(path, target)


def execute_notebook(source: Path, target: Path, parameters: dict, *, kernel_name: str | None,
                     log_stream=None) -> None:
    """Execute with papermill into a hidden in-progress copy, then rename into place. Raises
    papermill's PapermillExecutionError after the (failed) record is in place."""
    import papermill as pm

    running = target.parent / ".running" / target.name
    running.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits these: a text progress bar (not widgets), and where the record goes
    settings = {"ENERGY_STUDY_TEXT_PROGRESS": "1", RECORD_ENV: str(target.resolve())}
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        pm.execute_notebook(str(source), str(running), parameters=parameters,
                            kernel_name=kernel_name, progress_bar=False, stderr_file=log_stream,
                            cwd=os.getcwd(),
                            # the kernel app's own start-up notices (plain TCP on loopback, image
                            # alt text) are noise here; the notebook's output and errors are kept
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception:  # a failed cell, or a kernel that died: its notebook is the record
        if running.exists():
            os.replace(running, target)
        with contextlib.suppress(OSError):
            running.parent.rmdir()
        raise
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    os.replace(running, target)
    with contextlib.suppress(OSError):
        running.parent.rmdir()  # only when no other run is in progress there


def run_study(study: Study, *, force: bool = False, runs_root: str | Path = "runs",
              kernel_name: str | None = None, progress: bool = True,
              only: list[str] | None = None) -> StudyOutcome:
    """Run every cell that has no finished record (or all with `force`), one at a time --
    energy must not share a device. One failing cell never stops the others."""
    import papermill as pm
    from tqdm.auto import tqdm

    check_cells_can_run(study)
    folder = study.runs_dir(runs_root)
    folder.mkdir(parents=True, exist_ok=True)
    statuses = cell_status(study, runs_root)
    outcome = StudyOutcome()
    cells = [c for c in study.cells if only is None or c.name in only]
    bar = tqdm(cells, desc=f"study {study.name}", unit="cell", disable=not progress, file=sys.stderr)
    for cell in bar:
        target = folder / f"{cell.name}.ipynb"
        if statuses[cell.name] in FINISHED and not force:
            outcome.skipped.append(cell.name)
            continue
        if target.exists():
            _supersede(target)
        bar.set_postfix_str(cell.name)
        parameters = cell.config.to_dict()
        parameters["data_dir"] = str(Path(cell.config.data_dir).expanduser().resolve())
        started = time.perf_counter()
        try:
            execute_notebook(RUN_NOTEBOOK, target, parameters, kernel_name=kernel_name,
                             log_stream=sys.stderr if progress else None)
        except pm.PapermillExecutionError as error:
            outcome.failed.append(cell.name)
            bar.write(f"cell {cell.name} failed: {error.ename}: {error.evalue} "
                      f"(record kept: {target})")
        except Exception as error:  # the kernel died (out of memory, segfault): go on
            outcome.failed.append(cell.name)
            bar.write(f"cell {cell.name} failed: {type(error).__name__}: {error} "
                      f"(partial record: {target})")
        else:
            outcome.ran.append(cell.name)
        outcome.seconds[cell.name] = time.perf_counter() - started
    return outcome


def build_report(study: Study, *, runs_root: str | Path = "runs",
                 report_root: str | Path = "report", kernel_name: str | None = None) -> Path:
    """Execute the analysis notebook for a study; returns the report folder."""
    from .report import export_html

    report_dir = study.report_dir(report_root)
    report_dir.mkdir(parents=True, exist_ok=True)
    executed = report_dir / "analysis.ipynb"
    parameters = {"study_file": str(Path(study.path).resolve()),
                  "runs_dir": str(study.runs_dir(runs_root).resolve()),
                  "report_dir": str(report_dir.resolve())}
    execute_notebook(ANALYSIS_NOTEBOOK, executed, parameters, kernel_name=kernel_name)
    export_html(executed, report_dir / "analysis.html")
    return report_dir
