"""The lab record: what one executed run notebook holds, written once and read once.

A record is a set of named JSON values stored in the notebook's outputs under this project's
own MIME type (plus a short text/plain line for human readers), so a record is read back with
nbformat -- never executed. This is the maintained pattern of recommenders' notebook_utils,
without scrapbook.

This module owns the record's schema: `Status` (and `FINISHED`), the names a record stores
(`LabRecord`'s fields), the writes (`store` in the kernel, `store_run` for a whole run,
`note_runner` by the runner after the kernel finished) and the one read (`read_record`, and
`read_runs` for a folder). Nothing else in the package opens a record.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

MIME_TYPE = "application/vnd.energy-study.record+json"
#: The lab record's format: 2 = one long-form energy table, figures derived on reading; 3 = its
#: rows carry `scope` (process/machine) and the record holds the per-window `windows` table. A
#: finished record of another format reads as `outdated` (rerun it), never as a crash.
RECORD_FORMAT = 3


class Status(StrEnum):
    """A cell's status, as `energy-study list`, the report and the export name it."""

    OK = "ok"
    DIVERGED = "diverged"  # finished: the loss became NaN/inf; rerunning the same seed repeats it
    FAILED = "failed"  # a notebook cell raised; the executed notebook is the record
    INCOMPLETE = "incomplete"  # interrupted, or still being written
    OUTDATED = "outdated"  # finished, but by an older record format: its figures cannot be derived
    MISSING = "missing"  # no record yet
    UNREADABLE = "unreadable"  # not a notebook
    STALE = "stale"  # finished with other settings than the study file's now
    RUNNING = "running"  # another runner holds the cell's lock now
    STOPPED = "stopped"  # a tracked run its budget stopped after a prediction: fewer epochs


#: The statuses a record's summary may say (a failed run is told by its error output).
RECORDED = frozenset({Status.OK, Status.DIVERGED, Status.STOPPED})


#: The statuses of a run that finished: its numbers are results (a diverged run's included).
FINISHED = frozenset({Status.OK, Status.DIVERGED})
#: Where the runner's note (where the cell ran) is stored.
RUNNER_RECORD = "executor"
#: The notebook metadata a record written by `energy_lib.Tracker` keeps where papermill keeps
#: its own (parameters, start and end times, duration, exception).
TRACKER_METADATA = "energy_study_tracker"


@dataclass
class LabRecord:
    """One executed run notebook, read. The stored values have the names of the fields from
    `format` on; `extra` keeps any other value a notebook stored."""

    path: Path
    status: Status
    parameters: dict = field(default_factory=dict)  # papermill's, as injected
    error: str = ""  # the first error output, "ename: evalue"
    duration_s: float | None = None  # papermill's duration of the whole notebook
    # -- the stored values (the schema), in the order the run notebook stores them
    format: int | None = None
    config: dict = field(default_factory=dict)  # the validated RunConfig
    epochs: list = field(default_factory=list)  # one row per epoch
    energy: list = field(default_factory=list)  # the energy table (energy.table.EnergyRow)
    meters: dict = field(default_factory=dict)  # what each component's figure is, and notes
    timeline: dict = field(default_factory=dict)  # {"samples": [...], "marks": [...]}
    carbon: dict = field(default_factory=dict)  # intensity, its source, PUE
    provenance: dict = field(default_factory=dict)  # commit, versions, machine, device
    confusion: list = field(default_factory=list)  # final evaluation: rows true, columns predicted
    windows: list = field(default_factory=list)  # per window: whose share of the machine it was
    predictions: dict = field(default_factory=dict)  # per estimator: fit, machine state, cover
    #                                                  (estimators.predict.predict_run's facts)
    summary: dict = field(default_factory=dict)  # last: its presence marks a finished run
    executor: dict = field(default_factory=dict)  # the runner's note: where the cell ran
    extra: dict = field(default_factory=dict)  # values stored under other names

    @property
    def cell(self) -> str:
        return self.path.stem

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


#: The names a record stores, each a field of LabRecord.
STORED = tuple(f.name for f in fields(LabRecord))[5:-1]


def to_json(value: Any) -> Any:
    """Plain JSON for a value: DataFrames become lists of rows, numpy scalars become Python
    numbers, NaN and infinities become null (JSON has neither)."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas DataFrame
        return to_json(value.to_dict(orient="records"))
    if hasattr(value, "to_dict") and not isinstance(value, dict):  # dataclass-like RunConfig
        return to_json(value.to_dict())
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _output(name: str, value: Any) -> dict:
    """The display data of one stored value: ours under MIME_TYPE, and a line for readers."""
    value = to_json(value)
    text = json.dumps(value)
    summary = text if len(text) <= 120 else text[:117] + "..."
    return {MIME_TYPE: {"name": name, "value": value}, "text/plain": f"[record] {name} = {summary}"}


# ------------------------------------------------------------------------------------ writes

def store(name: str, value: Any) -> Any:
    """Store `value` under `name` in the running notebook's outputs (no-op outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return value
    if get_ipython() is None:
        return value
    display(_output(name, value), raw=True)
    return value


def store_run(result) -> None:
    """Store a finished `train.RunResult`: every value of the schema the kernel makes, the
    summary last (its presence marks a finished run)."""
    store("format", RECORD_FORMAT)
    store("epochs", result.epochs)
    store("energy", result.energy)
    store("meters", result.meters)
    store("timeline", {"samples": result.timeline, "marks": result.timeline_marks})
    store("carbon", result.carbon)
    store("provenance", result.provenance)
    store("confusion", result.confusion)  # rows: true class, columns: predicted
    store("windows", result.windows)  # per window: cell / others / steal shares (attribution)
    store("predictions", result.predictions)  # per estimator: its fit, machine-state factor, cover
    store("summary", result.summary)


def note_runner(path: str | Path, value: dict) -> None:
    """Append the runner's note (`executor`: where the cell ran) to an executed notebook before
    it is renamed into place. Written by the runner, not executed by the kernel, and labelled
    so; written via a temporary name, so a failure leaves the notebook as it was."""
    from .jupyter_imports import without_iri_grammars

    without_iri_grammars()
    import nbformat

    from .files import atomic_write

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell(
        "## Where this ran\n\nNoted by the runner after the kernel finished (this cell was not "
        "executed): the executor, the worker and host, the device it was pinned to, and whether "
        "other cells could run on the same host at the same time (`shared_cpu`: then this "
        "record's CPU and RAM energy figures are shares of one machine, not this cell's own)."))
    cell = nbformat.v4.new_code_cell("# noted by the runner (energy_lib.records.note_runner)")
    cell.outputs = [nbformat.v4.new_output("display_data", data=_output(RUNNER_RECORD, value))]
    notebook.cells.append(cell)
    atomic_write(path, lambda tmp: nbformat.write(notebook, str(tmp)))


def write_tracked(folder: str | Path, name: str, values: dict, facts: dict,
                  error: tuple[str, str] | None = None) -> Path:
    """Write the record of a run `energy_lib.Tracker` measured as a notebook no kernel executed:
    a heading that says so, one output per stored value (`values`, in the schema's order, the
    summary last), the error (`error`: ename, evalue) of a run that raised, and `facts` (script,
    parameters, start and end time, duration, exception) under TRACKER_METADATA. Saved as
    `<name>.ipynb` in `folder`, or `<name>-2.ipynb`, ...: a record is never replaced, also when
    two processes write at once."""
    import nbformat  # in the user's own process: jupyter_imports' shortcut is not taken here

    from .files import create_new

    notebook = nbformat.v4.new_notebook()
    notebook.metadata[TRACKER_METADATA] = to_json(facts)
    notebook.cells.append(nbformat.v4.new_markdown_cell(
        f"# Lab record: {name}\n\nWritten by `energy_lib.Tracker` when the run ended, from "
        + (f"`{facts['script']}`" if facts.get("script") else
           "an interactive session (a notebook or IPython)")
        + ": a Python process measured its own "
        "training loop, and no kernel executed this notebook. Each output below is one stored "
        "value of the record (`energy_lib.records`): `read_record` reads them back, and "
        "`energy-study report <folder>` reports a folder of such records."))
    for key in sorted(values, key=lambda k: (k == "summary", STORED.index(k) if k in STORED else 99)):
        cell = nbformat.v4.new_code_cell(f"# stored by energy_lib.Tracker: {key}")
        cell.outputs = [nbformat.v4.new_output("display_data", data=_output(key, values[key]))]
        notebook.cells.append(cell)
    if error is not None:
        cell = nbformat.v4.new_code_cell("# the training loop raised")
        cell.outputs = [nbformat.v4.new_output("error", ename=error[0], evalue=error[1],
                                               traceback=[f"{error[0]}: {error[1]}"])]
        notebook.cells.append(cell)
    folder = Path(folder)
    for attempt in range(1, 10_000):
        path = folder / (f"{name}.ipynb" if attempt == 1 else f"{name}-{attempt}.ipynb")
        try:
            return create_new(path, lambda tmp: nbformat.write(notebook, str(tmp)))
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free record name for {name!r}")


# -------------------------------------------------------------------------------------- read

class UntrustedRecord(ValueError):
    """A notebook whose stored values contradict the record schema: read as `unreadable`."""


def _code_outputs(notebook: dict):
    """Every output of every code cell of a notebook read as plain JSON."""
    for cell in notebook["cells"]:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            for output in cell.get("outputs") or []:
                if isinstance(output, dict):
                    yield output


def _stored_values(notebook: dict) -> dict:
    found = {}
    for output in _code_outputs(notebook):
        data = output.get("data") or {}
        if isinstance(data, dict) and MIME_TYPE in data:
            payload = data[MIME_TYPE]
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str) \
                    or "value" not in payload:
                raise UntrustedRecord("a stored value has no name or no value")
            found[payload["name"]] = payload["value"]
    return found


#: Summary values the readers decide on (contended runs are left out of comparisons; a shared
#: GPU is said): true or false, never a string that merely looks like one.
SUMMARY_FLAGS = ("contended", "gpu_shared")
#: Name endings of summary values that are numbers (or null: not measured).
SUMMARY_NUMBER_ENDINGS = ("_pct", "_s", "_share", "_per_core", "_threshold", "_w", "_j")


def _check_stored(values: dict) -> None:
    """Raise UntrustedRecord where a stored value's type contradicts the schema (LabRecord's
    fields: a dict field holds a mapping, a list field a list) or the summary says something
    the readers cannot use: a status outside the finished ones, a flag that is not a bool, a
    number that is not one."""
    for f in fields(LabRecord):
        if f.name in STORED and values.get(f.name) is not None:
            kind = type(f.default_factory()) if f.default_factory is not MISSING else None
            if kind in (dict, list) and not isinstance(values[f.name], kind):
                raise UntrustedRecord(f"its stored {f.name!r} is a {type(values[f.name]).__name__}, "
                                      f"not a {kind.__name__}")
    summary = values.get("summary") or {}
    status = summary.get("status", Status.OK)
    if status not in {s.value for s in RECORDED}:
        raise UntrustedRecord(f"its summary status {status!r} is not one of "
                              f"{', '.join(sorted(s.value for s in RECORDED))}")
    for flag in SUMMARY_FLAGS:
        if flag in summary and not isinstance(summary[flag], bool):
            raise UntrustedRecord(f"its summary {flag!r} is {summary[flag]!r}, not true or false")
    for key, value in summary.items():
        if key.endswith(SUMMARY_NUMBER_ENDINGS) and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UntrustedRecord(f"its summary {key!r} is {value!r}, not a number")


def _first_error(notebook: dict) -> str:
    for output in _code_outputs(notebook):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return ""


def _load_notebook(path: Path) -> dict:
    """A notebook file as plain JSON, checked to be a version-4 notebook (what papermill and
    the Tracker write). Read without nbformat: a record is only read, never validated or
    converted, and nbformat's import of jsonschema costs seconds (see `jupyter_imports`) in
    every analysis kernel."""
    with open(path, encoding="utf-8") as handle:
        notebook = json.load(handle)
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise ValueError("no list of cells")
    if notebook.get("nbformat") != 4:
        raise ValueError(f"nbformat {notebook.get('nbformat')!r}, not 4")
    if not isinstance(notebook.get("metadata", {}), dict):
        raise ValueError("its metadata is not a mapping")
    return notebook


def read_record(path: str | Path) -> LabRecord:
    """Read one executed notebook. A file that is not a notebook is `unreadable`, never raised
    and never touched."""
    path = Path(path)
    try:
        notebook = _load_notebook(path)
    except Exception as error:  # not JSON, not a notebook, unreadable file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return LabRecord(path, Status.UNREADABLE, error=f"not a readable notebook: {reason}")
    # papermill's execution facts, or the Tracker's (written the same way, no kernel ran)
    metadata = notebook.get("metadata") or {}
    papermill = metadata.get("papermill") or metadata.get(TRACKER_METADATA) or {}
    if not isinstance(papermill, dict):
        return LabRecord(path, Status.UNREADABLE, error="not a usable record: its execution "
                         "metadata is not a mapping")
    try:
        values = _stored_values(notebook)
        _check_stored(values)
    except UntrustedRecord as error:  # one reader decides: list, report and export agree
        return LabRecord(path, Status.UNREADABLE, error=f"not a usable record: {error}")
    summary = values.get("summary") or {}
    error = _first_error(notebook)
    if papermill.get("exception") or error:
        status = Status.FAILED
    elif not summary or not papermill.get("end_time"):
        status = Status.INCOMPLETE  # interrupted, or still being written
    elif values.get("format") != RECORD_FORMAT:
        status = Status.OUTDATED  # made by an older energy_lib: its figures cannot be derived
    else:
        status = Status(summary.get("status", Status.OK))
    stored = {name: values[name] for name in STORED if values.get(name) is not None}
    return LabRecord(path, status, parameters=dict(papermill.get("parameters", {})), error=error,
                     duration_s=papermill.get("duration"), **stored,
                     extra={k: v for k, v in values.items() if k not in STORED})


@dataclass
class Runs:
    """Tables of one study folder:
    - `energy`: THE energy table, long form (energy.table.EnergyRow + `cell`), as recorded;
    - `runs`: one row per notebook: config, accuracy/time summary, provenance, where it ran
      (`executor`, `worker`, `pinned_device`, `cells_at_once_on_host`, `shared_cpu`), and the
      figures `energy.derive` computes from `energy` (energy_j/kwh + energy_kind,
      constant_power_*, acc_pct_per_wh, emissions_kg, ...);
    - `epochs`: one row per epoch, with the per-epoch energy derived the same way;
    - `timeline` (power samples), `confusion` (cell -> final confusion matrix of finished runs),
      `predictions` (cell -> what each estimator priced with: its fit, the machine-state factor)
      and `problems` (files that could not be read)."""

    runs: Any
    epochs: Any
    energy: Any
    timeline: Any
    problems: list[str]
    confusion: dict[str, list] = field(default_factory=dict)
    predictions: dict[str, dict] = field(default_factory=dict)  # cell -> its predictions' facts

    def finished(self):
        """The rows of `runs` whose run finished (`finished_rows`)."""
        return finished_rows(self.runs)


def is_finished(table):
    """The one test of which rows of a runs table are results: status in FINISHED (a diverged
    run's numbers are real too). A table without `status` is one already made of finished runs
    (a per-setting summary): every row."""
    import pandas as pd

    if "status" not in table:
        return pd.Series(True, index=table.index)
    return table["status"].isin(FINISHED)


def finished_rows(table):
    """The rows of `table` whose run finished (`is_finished`)."""
    return table[is_finished(table)]


def _where_it_ran(note: dict) -> dict:
    return {"executor": note.get("executor"),
            "worker": note.get("worker_name") or note.get("worker"),
            "pinned_device": note.get("pinned_device"),
            "cells_at_once_on_host": note.get("cells_at_once_on_host"),
            "shared_cpu": note.get("shared_cpu"), "invocation": note.get("invocation")}


def read_runs(folder: str | Path, cells: Mapping[str, str] | None = None,
              records: Mapping[str, LabRecord] | None = None) -> Runs:
    """Read every executed notebook directly in `folder` (not sub-folders: superseded attempts
    and in-progress copies live there). With `cells` (cell name -> status, e.g. from
    `study.study_state`), read only those cells' notebooks and report the status given: a
    study's report holds exactly its cells, as `list` sees them; a cell without a notebook is a
    row with its status and no values. `records`: cell -> its record already read (by
    `study_state`, deciding its status), so that no record is parsed twice."""
    import pandas as pd

    from .energy import derive

    rows, epochs, energy, timeline, problems, confusion, predictions = [], [], [], [], [], {}, {}
    if cells is None:
        selected = [(path, None) for path in sorted(Path(folder).glob("*.ipynb"))]
    else:
        selected = [(Path(folder) / f"{cell}.ipynb", status) for cell, status in cells.items()]
    for path, status in selected:
        if status is not None and not path.is_file():
            rows.append({"cell": path.stem, "status": Status(status), "error": "", "path": ""})
            continue
        rec = (records or {}).get(path.stem) or read_record(path)
        if rec.status == Status.UNREADABLE:
            problems.append(f"{path}: {rec.error}")
        status = Status(status or rec.status)
        config = rec.config or rec.parameters.get("config")  # a cell that failed before storing it
        config = config if isinstance(config, dict) else {}
        summary = {k: v for k, v in rec.summary.items() if k != "status"}
        provenance = {f"provenance_{k}": v for k, v in rec.provenance.items()
                      if not isinstance(v, (dict, list))}
        facts = {k: v for k, v in {**config, **summary, **provenance}.items() if k != "cell"}
        usable = rec.status not in (Status.OUTDATED, Status.UNREADABLE)
        cell_energy = [{"cell": rec.cell, **row} for row in rec.energy] if usable else []
        derived = {}
        if cell_energy:
            derived = derive.run_figures(cell_energy, summary.get("best_val_acc_pct"), rec.carbon)
            derived |= {"carbon_intensity_g_per_kwh": rec.carbon.get("intensity_g_per_kwh"),
                        "carbon_intensity_source": rec.carbon.get("source"),
                        "country_iso_code": rec.carbon.get("country_iso_code"),
                        "country_name": rec.carbon.get("country_name")}
            codecarbon = rec.meters.get("codecarbon") or {}
            derived |= {f"codecarbon_{k}": v for k, v in codecarbon.items()}
            tdp = rec.meters.get("cpu_tdp") or {}  # the CPU model's watts, where one ran
            periods = rec.meters.get("update_periods_s") or {}  # measured; none in older records
            derived |= {"meter_cpu_tdp_w": tdp.get("tdp_w"), "meter_cpu_tdp_origin": tdp.get("origin"),
                        "meter_gpu_update_period_s": periods.get("gpu")}
        rows.append({"cell": rec.cell, "status": status, "error": rec.error, "path": str(path),
                     "papermill_s": rec.duration_s, **facts, **_where_it_ran(rec.executor),
                     **derived})
        if usable:
            epochs += [{"cell": rec.cell, **row} for row in rec.epochs]
            if status in FINISHED and rec.confusion:
                confusion[rec.cell] = rec.confusion
            if rec.predictions:
                predictions[rec.cell] = rec.predictions
        energy += cell_energy
        timeline += [{"cell": rec.cell, **row} for row in rec.timeline.get("samples", [])]
    energy_table = derive.as_frame(energy)
    epochs_table = pd.DataFrame(epochs)
    if not epochs_table.empty:
        per_epoch = derive.per_epoch(energy_table)
        epochs_table["epoch"] = epochs_table["epoch"].astype("Int64")
        epochs_table = epochs_table.merge(per_epoch, on=["cell", "epoch"], how="left")
    return Runs(pd.DataFrame(rows), epochs_table, energy_table, pd.DataFrame(timeline), problems,
                confusion, predictions)
