"""Optional backend: CodeCarbon's offline tracker run alongside our meters, for comparison with
studies that publish CodeCarbon logs. It keeps its own emissions.csv next to the lab record
(`runs/<study>/<cell>.codecarbon/`). An extra: `pip install "energy-lib[codecarbon]"`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

#: Set by the study runner to the record being written, so CodeCarbon's file lands beside it.
RECORD_ENV = "ENERGY_STUDY_RECORD"


def output_dir() -> Path:
    record = os.environ.get(RECORD_ENV)
    return Path(record).with_suffix(".codecarbon") if record else Path("codecarbon")


class CodeCarbonRun:
    """Start/stop CodeCarbon's OfflineEmissionsTracker around a whole run (no network)."""

    def __init__(self, country_iso_code: str, project_name: str, sample_period_s: float = 15.0) -> None:
        from codecarbon import OfflineEmissionsTracker

        self.folder = output_dir()
        self.folder.mkdir(parents=True, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.tracker = OfflineEmissionsTracker(
            country_iso_code=country_iso_code, project_name=project_name,
            output_dir=str(self.folder), output_file="emissions.csv",
            measure_power_secs=sample_period_s, log_level="error")

    def start(self) -> None:
        self.tracker.start()

    def stop(self) -> dict:
        """CodeCarbon's own figures for the run, labelled as its."""
        import codecarbon

        emissions_kg = self.tracker.stop()
        data = self.tracker.final_emissions_data
        return {"codecarbon_version": codecarbon.__version__,
                "codecarbon_emissions_kg": emissions_kg,
                "codecarbon_energy_kwh": getattr(data, "energy_consumed", None),
                "codecarbon_csv": str(self.folder / "emissions.csv")}
