"""One row per run in the experiment-log schema that CodeCarbon-based training studies publish.

Units follow that schema: duration s, emissions kg (CO2eq), emissions_rate kg/s, power W,
energy kWh, RAM GB. A field this study cannot know stays empty; nothing is invented.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..energy import joules_to_kwh
from ..energy.derive import COMPONENTS
from ..records import FINISHED, Runs
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


def _get(row: pd.Series, key: str):
    value = row.get(key)
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def export_row(row: pd.Series, study_name: str) -> dict:
    """Map one run of `read_runs(...).runs` to the schema's columns."""
    duration = _get(row, "train_s_total")
    eval_s = _get(row, "eval_s_total")
    seconds = duration + eval_s if duration is not None and eval_s is not None else None
    emissions = _get(row, "emissions_kg")
    out = dict.fromkeys(EXPORT_COLUMNS)
    for component in COMPONENTS:  # the headline's parts, derived from the energy table
        joules = _get(row, f"{component}_energy_j")
        if joules is not None:
            out[f"{component}_energy"] = joules_to_kwh(joules)
            out[f"{component}_power"] = joules / seconds if seconds else None
    device = _get(row, "provenance_device") or ""
    on_gpu = device.startswith("cuda")
    out.update(
        timestamp=_get(row, "provenance_finished"),
        project_name=study_name,
        run_id=f"{study_name}/{row['cell']}",
        experiment_id=row["cell"],
        experiment_name=row["cell"],
        model=f"{_get(row, 'model')} width={_get(row, 'width')} {_get(row, 'precision')}",
        dataset=_get(row, "dataset"),
        epochs=_get(row, "epochs_completed"),
        batch_size=_get(row, "batch_size"),
        duration=seconds,
        emissions=emissions,
        emissions_rate=emissions / seconds if emissions is not None and seconds else None,
        energy_consumed=_get(row, "energy_kwh"),
        country_name=_get(row, "country_name") or None,
        country_iso_code=_get(row, "country_iso_code") or None,
        os=_get(row, "provenance_os"),
        python_version=_get(row, "provenance_python_version"),
        codecarbon_version=_get(row, "codecarbon_version"),  # only when it ran alongside
        cpu_count=_get(row, "provenance_cpu_count"),
        cpu_model=_get(row, "provenance_cpu_model"),
        gpu_count=1 if on_gpu else 0,
        gpu_model=_get(row, "provenance_device_name") if on_gpu else None,
        ram_total_size=_get(row, "provenance_ram_total_gb"),
        tracking_mode="machine",  # RAPL, NVML and /proc/stat all see the whole machine
        pue=_get(row, "pue"),
        train_loss=_get(row, "final_train_loss"),
        eval_loss=_get(row, "final_val_loss"),
        eval_top1=_get(row, "final_val_acc_pct"),
        eval_top5=_get(row, "final_val_top5_acc_pct"),
        lr=_get(row, "lr"),
    )
    return out


def export_runs(runs: Runs, study_name: str) -> pd.DataFrame:
    """Finished runs (records.FINISHED) as a table with exactly EXPORT_COLUMNS."""
    table = runs.runs
    done = table[table["status"].isin(FINISHED)] if not table.empty else table
    rows = [export_row(row, study_name) for _, row in done.iterrows()]
    return pd.DataFrame(rows, columns=EXPORT_COLUMNS)


def write_export(runs: Runs, study_name: str, path: str | Path) -> Path:
    """The export CSV (`emissions_log.csv`), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_csv(export_runs(runs, study_name), path)


def is_export(path: str | Path) -> bool:
    """Whether `path` is an export of this kind (its header is EXPORT_COLUMNS): the only file
    `energy-study export --output` replaces without --overwrite."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(65536)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == ",".join(EXPORT_COLUMNS).encode()
