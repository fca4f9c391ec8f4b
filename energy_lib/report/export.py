"""One row per run in a CodeCarbon-style schema, from our own figures. Two schemas (`SCHEMAS`):

- `experiment-log` (the default; `EXPORT_COLUMNS`): the experiment-log schema that
  CodeCarbon-based training studies publish -- CodeCarbon's run columns plus the training's
  (model, dataset, epochs, batch_size, losses, accuracies, lr). Energy and power are the IT
  equipment's (our headline), the PUE applied to emissions only. RAM GB = 10^9 bytes.
- `codecarbon3`: exactly the columns of CodeCarbon 3.x's emissions.csv, i.e. the fields of
  `codecarbon.output_methods.emissions_data.EmissionsData`, in its order (`codecarbon3_columns`:
  read from the installed CodeCarbon 3.x, else `CODECARBON3_COLUMNS`, pinned from 3.3.2). Its
  figures follow CodeCarbon 3.x's conventions: power and energy are multiplied by the PUE (as
  codecarbon/emissions_tracker.py, BaseEmissionsTracker._do_measurements does), so emissions =
  energy_consumed x intensity; ram_total_size is in GiB (psutil total / 1024^3, as
  codecarbon/external/ram.py reports it).

Units in both: duration s, emissions kg (CO2eq), emissions_rate kg/s, power W, energy kWh.
A field this study does not know stays empty; nothing is invented. In particular
`codecarbon_version` is always empty: these rows are our figures, not CodeCarbon's (when
CodeCarbon ran alongside, its own row is its emissions.csv beside the record,
`runs/<study>/<cell>.codecarbon/`). Nor do we fill CodeCarbon's 1-s utilisation means
(cpu/gpu/ram_utilization_percent, ram_used_gb), water (water_consumed, wue), location or cloud
fields.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..energy import joules_to_kwh
from ..energy.derive import COMPONENTS
from ..errors import ConfigError
from ..records import Runs, finished_rows
from .output import save_csv

EXPORT_COLUMNS = [
    "timestamp", "project_name", "run_id", "experiment_id", "experiment_name", "model", "dataset",
    "epochs", "batch_size", "duration", "emissions", "emissions_rate", "cpu_power", "gpu_power",
    "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "country_name",
    "country_iso_code", "region", "cloud_provider", "cloud_region", "os", "python_version",
    "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude",
    "latitude", "ram_total_size", "tracking_mode", "on_cloud", "pue", "train_loss", "eval_loss",
    "eval_top1", "eval_top5", "lr",
]

#: CodeCarbon 3.3.2's EmissionsData fields (codecarbon/output_methods/emissions_data.py), in
#: order: the codecarbon3 schema where CodeCarbon 3.x is not installed (it is an optional extra).
#: tests/test_export.py checks it against the installed EmissionsData.
CODECARBON3_COLUMNS = [
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions",
    "emissions_rate", "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy",
    "ram_energy", "energy_consumed", "water_consumed", "country_name", "country_iso_code",
    "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
    "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue",
]

SCHEMAS = ("experiment-log", "codecarbon3")
DEFAULT_SCHEMA = "experiment-log"
#: Each schema's file name in report/<study>/ (the CLI's default --output).
DEFAULT_FILE_NAMES = {"experiment-log": "emissions_log.csv",
                      "codecarbon3": "emissions_codecarbon3.csv"}

_GIB = 1024 ** 3


def check_schema(schema: str) -> str:
    if schema not in SCHEMAS:
        raise ConfigError(f"schema={schema!r} is not an export schema; allowed: "
                          f"{', '.join(SCHEMAS)}")
    return schema


@lru_cache(maxsize=1)
def installed_emissions_data_fields() -> tuple[str, ...] | None:
    """The field names of the installed CodeCarbon 3.x's EmissionsData, in order; None without
    CodeCarbon 3.x. Read from its source file, not imported: importing codecarbon probes the
    hardware and logs (an AMD GPU that is not there, on some machines)."""
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        if importlib.metadata.version("codecarbon").split(".")[0] != "3":
            return None
        root = Path(next(iter(spec.submodule_search_locations)))
        path = root / "output_methods" / "emissions_data.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, importlib.metadata.PackageNotFoundError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "EmissionsData":
            names = tuple(item.target.id for item in node.body if isinstance(item, ast.AnnAssign)
                          and isinstance(item.target, ast.Name))
            return names or None
    return None


def codecarbon3_columns() -> list[str]:
    """The codecarbon3 schema: the installed CodeCarbon 3.x's EmissionsData fields, else the
    pinned CODECARBON3_COLUMNS."""
    return list(installed_emissions_data_fields() or CODECARBON3_COLUMNS)


def columns(schema: str = DEFAULT_SCHEMA) -> list[str]:
    """A schema's columns, in order."""
    check_schema(schema)
    return list(EXPORT_COLUMNS) if schema == "experiment-log" else codecarbon3_columns()


def _get(row: pd.Series, key: str):
    value = row.get(key)
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def _tracking_mode(row: pd.Series) -> str | None:
    """CodeCarbon's tracking_mode for our headline: `process` where every CPU/RAM figure is the
    cell's share, `machine` where it is the whole machine's; empty for a mix (no CodeCarbon
    value says that)."""
    scope = _get(row, "energy_scope")
    return scope if scope in ("process", "machine") else None


def _common(row: pd.Series, study_name: str, energy_factor: float) -> dict:
    """The fields both schemas share; energy and power x `energy_factor` (the codecarbon3
    schema's PUE)."""
    duration = _get(row, "train_s_total")
    eval_s = _get(row, "eval_s_total")
    seconds = duration + eval_s if duration is not None and eval_s is not None else None
    emissions = _get(row, "emissions_kg")
    energy_kwh = _get(row, "energy_kwh")
    out = {}
    for component in COMPONENTS:  # the headline's parts, derived from the energy table
        joules = _get(row, f"{component}_energy_j")
        if joules is not None:
            out[f"{component}_energy"] = joules_to_kwh(joules) * energy_factor
            out[f"{component}_power"] = joules * energy_factor / seconds if seconds else None
    device = _get(row, "provenance_device") or ""
    on_gpu = device.startswith("cuda")
    out.update(
        timestamp=_get(row, "provenance_finished"),
        project_name=study_name,
        run_id=f"{study_name}/{row['cell']}",
        experiment_id=row["cell"],
        duration=seconds,
        emissions=emissions,
        emissions_rate=emissions / seconds if emissions is not None and seconds else None,
        energy_consumed=energy_kwh * energy_factor if energy_kwh is not None else None,
        country_name=_get(row, "country_name") or None,
        country_iso_code=_get(row, "country_iso_code") or None,
        os=_get(row, "provenance_os"),
        python_version=_get(row, "provenance_python_version"),
        codecarbon_version=None,  # our figures, not CodeCarbon's (even when it ran alongside)
        cpu_count=_get(row, "provenance_cpu_count"),
        cpu_model=_get(row, "provenance_cpu_model"),
        gpu_count=1 if on_gpu else 0,
        gpu_model=_get(row, "provenance_device_name") if on_gpu else None,
        tracking_mode=_tracking_mode(row),
        pue=_get(row, "pue"),
    )
    return out


def export_row(row: pd.Series, study_name: str, schema: str = DEFAULT_SCHEMA) -> dict:
    """Map one run of `read_runs(...).runs` to `schema`'s columns."""
    wanted = columns(schema)
    if schema == "codecarbon3":
        pue = _get(row, "pue")
        out = _common(row, study_name, pue if pue is not None else 1.0)
        ram_gb = _get(row, "provenance_ram_total_gb")
        out["ram_total_size"] = ram_gb * 1e9 / _GIB if ram_gb is not None else None
    else:
        out = _common(row, study_name, 1.0)
        model = f"{_get(row, 'model')} width={_get(row, 'width')} {_get(row, 'precision')}"
        out.update(
            experiment_name=row["cell"],
            model=model,
            dataset=_get(row, "dataset"),
            epochs=_get(row, "epochs_completed"),
            batch_size=_get(row, "batch_size"),
            ram_total_size=_get(row, "provenance_ram_total_gb"),
            train_loss=_get(row, "final_train_loss"),
            eval_loss=_get(row, "final_val_loss"),
            eval_top1=_get(row, "final_val_acc_pct"),
            eval_top5=_get(row, "final_val_top5_acc_pct"),
            lr=_get(row, "lr"),
        )
    return {column: out.get(column) for column in wanted}


def export_runs(runs: Runs, study_name: str, schema: str = DEFAULT_SCHEMA) -> pd.DataFrame:
    """Finished runs (records.FINISHED) as a table with exactly `columns(schema)`."""
    wanted = columns(schema)
    table = runs.runs
    done = finished_rows(table)
    rows = [export_row(row, study_name, schema) for _, row in done.iterrows()]
    return pd.DataFrame(rows, columns=wanted)


def write_export(runs: Runs, study_name: str, path: str | Path,
                 schema: str = DEFAULT_SCHEMA) -> Path:
    """The export CSV (`emissions_log.csv` by default), written atomically."""
    frame = export_runs(runs, study_name, schema)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_csv(frame, path)


def is_export(path: str | Path) -> bool:
    """Whether `path` is an export of one of these schemas (its header is a schema's columns,
    the pinned codecarbon3 list included): the only file `energy-study export --output`
    replaces without --overwrite."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(65536)
    except OSError:
        return False
    headers = {",".join(EXPORT_COLUMNS), ",".join(codecarbon3_columns()),
               ",".join(CODECARBON3_COLUMNS)}
    return first.rstrip(b"\r\n").decode("utf-8", "replace") in headers
