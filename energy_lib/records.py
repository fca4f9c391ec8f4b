"""Lab records: named JSON values stored in an executed notebook, and read back with nbformat.

`record(name, value)` displays the value with this project's own MIME type (plus a short
text/plain line for human readers), so it is saved in the notebook's outputs like any other
display. `read_runs(folder)` reads executed notebooks -- never executing them -- into pandas
tables. This is the maintained pattern of recommenders' notebook_utils, without scrapbook.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

MIME_TYPE = "application/vnd.energy-study.record+json"
#: The lab record's format: 2 = one long-form energy table, figures derived on reading. A
#: finished record of another format reads as `outdated` (rerun it), never as a crash.
RECORD_FORMAT = 2
STATUSES = ("ok", "diverged", "failed", "incomplete", "outdated", "missing", "unreadable", "stale",
            "running")


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


def record(name: str, value: Any) -> Any:
    """Store `value` under `name` in the running notebook's outputs (no-op outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return value
    if get_ipython() is None:
        return value
    payload = {"name": name, "value": to_json(value)}
    text = json.dumps(payload["value"])
    summary = text if len(text) <= 120 else text[:117] + "..."
    display({MIME_TYPE: payload, "text/plain": f"[record] {name} = {summary}"}, raw=True)
    return value


@dataclass
class NotebookRecord:
    """What one executed notebook says: its parameters, records, status and timing."""

    path: Path
    status: str
    parameters: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    error: str = ""
    duration_s: float | None = None

    @property
    def cell(self) -> str:
        return self.path.stem


def _records_of(notebook) -> dict:
    found = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data", {})
            if MIME_TYPE in data:
                payload = data[MIME_TYPE]
                found[payload["name"]] = payload["value"]
    return found


def _first_error(notebook) -> str:
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return ""


def read_notebook(path: str | Path) -> NotebookRecord:
    """Read one executed notebook. A file that is not a notebook is reported as `unreadable`,
    never raised and never touched."""
    import nbformat

    path = Path(path)
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # not JSON, not a notebook, unreadable file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return NotebookRecord(path, "unreadable", error=f"not a readable notebook: {reason}")
    papermill = notebook.metadata.get("papermill", {})
    records = _records_of(notebook)
    summary = records.get("summary") or {}
    if papermill.get("exception") or _first_error(notebook):
        status = "failed"
    elif not summary or not papermill.get("end_time"):
        status = "incomplete"  # interrupted, or still being written
    elif records.get("format") != RECORD_FORMAT:
        status = "outdated"  # made by an older energy_lib: its figures cannot be derived
    else:
        status = summary.get("status", "ok")
    return NotebookRecord(path, status, parameters=dict(papermill.get("parameters", {})),
                          records=records, error=_first_error(notebook),
                          duration_s=papermill.get("duration"))


@dataclass
class Runs:
    """Tables of one study folder:
    - `energy`: THE energy table, long form (energy.table.EnergyRow + `cell`), as recorded;
    - `runs`: one row per notebook: config, accuracy/time summary, provenance, and the figures
      `energy.derive` computes from `energy` (energy_j/kwh + energy_kind, constant_power_*,
      acc_pct_per_wh, emissions_kg, ...);
    - `epochs`: one row per epoch, with the per-epoch energy derived the same way;
    - `timeline` (power samples) and `problems` (files that could not be read)."""

    runs: Any
    epochs: Any
    energy: Any
    timeline: Any
    problems: list[str]


def read_runs(folder: str | Path, cells: Mapping[str, str] | None = None) -> Runs:
    """Read every executed notebook directly in `folder` (not sub-folders: superseded attempts
    and in-progress copies live there). With `cells` (cell name -> status, e.g. from
    `study.study_state`), read only those cells' notebooks and report the status given: a
    study's report holds exactly its cells, as `list` sees them; a cell without a notebook is a
    row with its status and no values."""
    import pandas as pd

    from .energy import derive

    rows, epochs, energy, timeline, problems = [], [], [], [], []
    if cells is None:
        selected = [(path, None) for path in sorted(Path(folder).glob("*.ipynb"))]
    else:
        selected = [(Path(folder) / f"{cell}.ipynb", status) for cell, status in cells.items()]
    for path, status in selected:
        if status is not None and not path.is_file():
            rows.append({"cell": path.stem, "status": status, "error": "", "path": ""})
            continue
        nb = read_notebook(path)
        if nb.status == "unreadable":
            problems.append(f"{path}: {nb.error}")
        config = nb.records.get("config") or nb.parameters
        summary = {k: v for k, v in (nb.records.get("summary") or {}).items() if k != "status"}
        provenance = {f"provenance_{k}": v for k, v in (nb.records.get("provenance") or {}).items()
                      if not isinstance(v, (dict, list))}
        facts = {k: v for k, v in {**config, **summary, **provenance}.items() if k != "cell"}
        usable = nb.status not in ("outdated", "unreadable")
        cell_energy = [{"cell": nb.cell, **row} for row in nb.records.get("energy") or []] if usable else []
        derived = {}
        if usable and cell_energy:
            carbon = nb.records.get("carbon") or {}
            derived = derive.run_figures(cell_energy, summary.get("best_val_acc_pct"), carbon)
            derived |= {"carbon_intensity_g_per_kwh": carbon.get("intensity_g_per_kwh"),
                        "carbon_intensity_source": carbon.get("source"),
                        "country_iso_code": carbon.get("country_iso_code"),
                        "country_name": carbon.get("country_name")}
            codecarbon = (nb.records.get("meters") or {}).get("codecarbon") or {}
            derived |= {f"codecarbon_{k}": v for k, v in codecarbon.items()}
        rows.append({"cell": nb.cell, "status": status or nb.status, "error": nb.error,
                     "path": str(path), "papermill_s": nb.duration_s, **facts, **derived})
        for row in nb.records.get("epochs") or [] if usable else []:
            epochs.append({"cell": nb.cell, **row})
        energy += cell_energy
        for row in (nb.records.get("timeline") or {}).get("samples", []):
            timeline.append({"cell": nb.cell, **row})
    energy_table = derive.as_frame(energy)
    epochs_table = pd.DataFrame(epochs)
    if not epochs_table.empty:
        per_epoch = derive.per_epoch(energy_table)
        epochs_table["epoch"] = epochs_table["epoch"].astype("Int64")
        epochs_table = epochs_table.merge(per_epoch, on=["cell", "epoch"], how="left")
    return Runs(pd.DataFrame(rows), epochs_table, energy_table, pd.DataFrame(timeline), problems)
