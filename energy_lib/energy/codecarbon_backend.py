"""Optional backend: CodeCarbon's offline tracker run alongside our meters, for comparison with
studies that publish CodeCarbon logs. It keeps its own emissions.csv next to the lab record
(`runs/<study>/<cell>.codecarbon/`); its per-component energy for the whole run becomes rows of
the energy table with method `codecarbon`. An extra: `pip install "energy-lib[codecarbon]"`.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from .table import Kind

_MEASURING_CPU_MODES = ("intel_rapl", "intel_power_gadget", "windows_emi")


def _hide_broken_amdsmi() -> None:
    """The `amdsmi` wheel (a Zeus dependency) prints errors when imported on a machine without
    AMD's libamd_smi.so, and CodeCarbon then reports an AMD GPU that is not there. Where the
    library is absent, make `import amdsmi` fail quietly instead."""
    if "amdsmi" in sys.modules or importlib.util.find_spec("amdsmi") is None:
        return
    if not (os.path.exists("/opt/rocm/lib/libamd_smi.so") or ctypes.util.find_library("amd_smi")):
        sys.modules["amdsmi"] = None  # type: ignore[assignment]


class CodeCarbonRun:
    """Start/stop CodeCarbon's OfflineEmissionsTracker around a whole run (no network)."""

    def __init__(self, country_iso_code: str, project_name: str, folder: str | os.PathLike,
                 sample_period_s: float = 15.0) -> None:
        """`folder`: where CodeCarbon's emissions.csv goes (the runner: beside the record)."""
        _hide_broken_amdsmi()
        from codecarbon import OfflineEmissionsTracker

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.tracker = OfflineEmissionsTracker(
            country_iso_code=country_iso_code, project_name=project_name,
            output_dir=str(self.folder), output_file="emissions.csv",
            measure_power_secs=sample_period_s, log_level="error")
        self.running = False
        self.figures: dict = {}
        self._started = 0.0

    def start(self) -> None:
        self.tracker.start()
        self.running, self._started = True, time.perf_counter()

    def _kinds(self) -> dict[str, Kind]:
        """Whether CodeCarbon read a counter or used its model, per component."""
        kinds = {"ram": Kind.MODELLED, "cpu": Kind.MODELLED, "gpu": Kind.MEASURED}
        for hardware in getattr(self.tracker, "_hardware", []):
            if type(hardware).__name__ == "CPU" and getattr(hardware, "_mode", "") in _MEASURING_CPU_MODES:
                kinds["cpu"] = Kind.MEASURED
        return kinds

    def stop(self) -> dict:
        """CodeCarbon's own figures for the run: per-component kWh and their kinds."""
        emissions_kg = self.tracker.stop()
        self.running = False
        data = self.tracker.final_emissions_data
        self.figures = {
            "energy_kwh": {c: getattr(data, f"{c}_energy", None) for c in ("cpu", "gpu", "ram")},
            "kinds": self._kinds(), "duration_s": time.perf_counter() - self._started,
            "emissions_kg": emissions_kg,
        }
        # without a GPU CodeCarbon writes 0 kWh for it: that is no figure, not a measured zero
        self.figures["energy_kwh"] = {c: v for c, v in self.figures["energy_kwh"].items()
                                      if v is not None and (v > 0 or c != "gpu")}
        return self.figures

    def describe(self) -> dict:
        import codecarbon

        return {"version": codecarbon.__version__, "csv": str(self.folder / "emissions.csv"),
                "emissions_kg": self.figures.get("emissions_kg")}
