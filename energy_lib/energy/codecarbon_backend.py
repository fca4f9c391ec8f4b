"""Optional backend: CodeCarbon's offline tracker run alongside our meters, for comparison with
studies that publish CodeCarbon logs. It keeps its own emissions.csv next to the lab record
(`runs/<study>/<cell>.codecarbon/`); its per-component energy for the whole run becomes rows of
the energy table with method `codecarbon`. An extra: `pip install "energy-lib[codecarbon]"`.

CodeCarbon is given the run's own PUE and carbon intensity (`pue`, and
`force_carbon_intensity_g_co2e_kwh`: the explicit `carbon_intensity_g_per_kwh`, else the
country's figure from our table, else the world average -- carbon.resolve_intensity), so its
emissions differ from ours only through its energy. CodeCarbon 3.x multiplies power *and* energy
by the PUE (codecarbon/emissions_tracker.py, BaseEmissionsTracker._do_measurements); ours is
IT-equipment energy with the PUE applied to emissions only (carbon.emissions_kg). Its energy
rows here are therefore divided by the PUE it applied, to compare like with like; its
emissions.csv and `emissions_kg` keep CodeCarbon's own (facility-side) figures. What it was
given is in `describe()` (the record's meters.codecarbon: `pue`, `intensity_g_per_kwh`,
`intensity_source`) beside our own carbon facts.

Its scope is explicit: `tracking_mode="process"` (CPU and RAM as the cell's process share, like
our headline's process rows), `gpu_ids` = the cell's own GPU by its UUID (the same GPU whatever
CUDA_VISIBLE_DEVICES renumbered; none on a CPU cell) and `allow_multiple_runs=True` (cells of
one study run at once on a Dask cluster; CodeCarbon's lock would stop all but one). The record's
meters.codecarbon says which.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from .carbon import CarbonIntensity, resolve_intensity
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

    #: CPU and RAM as the cell's process share: the scope of our headline
    TRACKING_MODE = "process"

    def __init__(self, country_iso_code: str, project_name: str, folder: str | os.PathLike,
                 sample_period_s: float = 15.0, *, pue: float = 1.0,
                 carbon_intensity_g_per_kwh: float | None = None,
                 gpu_uuid: str | None = None) -> None:
        """`folder`: where CodeCarbon's emissions.csv goes (the runner: beside the record).
        `pue` and `carbon_intensity_g_per_kwh` (None: the country's figure) as in RunConfig:
        CodeCarbon computes its emissions with them. `gpu_uuid`: the cell's GPU (NVML's
        "GPU-..." form), None for a CPU cell."""
        if not pue > 0:
            raise ConfigError(f"pue={pue!r} must be > 0 (1.0 = no facility overhead)")
        self.pue = float(pue)
        self.intensity: CarbonIntensity = resolve_intensity(country_iso_code,
                                                            carbon_intensity_g_per_kwh)
        _hide_broken_amdsmi()
        from codecarbon import OfflineEmissionsTracker

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        #: what it is given, and the record keeps (describe)
        self.given = {"pue": self.pue,
                      "force_carbon_intensity_g_co2e_kwh": self.intensity.g_per_kwh,
                      "tracking_mode": self.TRACKING_MODE,
                      # no GPU: an empty list, not None (None means every GPU of the machine)
                      "gpu_ids": [gpu_uuid] if gpu_uuid else [],
                      "allow_multiple_runs": True}
        self.tracker = OfflineEmissionsTracker(
            country_iso_code=self.intensity.country_iso_code or country_iso_code,
            project_name=project_name,
            output_dir=str(self.folder), output_file="emissions.csv",
            measure_power_secs=sample_period_s, log_level="error", **self.given)
        self.running = False
        self.figures: dict = {}
        self._started = 0.0

    @classmethod
    def for_config(cls, config, folder: str | os.PathLike, device=None) -> CodeCarbonRun:
        """The tracker for a RunConfig on `device` (a torch.device): its country, study (as
        CodeCarbon's project name), PUE, carbon intensity and the cell's own GPU."""
        return cls(config.country, config.study, folder, pue=config.pue,
                   carbon_intensity_g_per_kwh=config.carbon_intensity_g_per_kwh,
                   gpu_uuid=gpu_uuid(device))

    def start(self) -> None:
        self.tracker.start()
        self.running, self._started = True, time.perf_counter()

    def _kinds(self) -> dict[str, Kind]:
        """Whether CodeCarbon read a counter or used its model, per component. CodeCarbon 3.3
        has no public accessor for its CPU tracking method (get_detected_hardware() names the
        CPU, not how it is read; EmissionsData neither), so its tracker's `_hardware` list is
        read, defensively: an unknown shape leaves the CPU "modelled"."""
        kinds = {"ram": Kind.MODELLED, "cpu": Kind.MODELLED, "gpu": Kind.MEASURED}
        for hardware in getattr(self.tracker, "_hardware", []):
            if type(hardware).__name__ == "CPU" and getattr(hardware, "_mode", "") in _MEASURING_CPU_MODES:
                kinds["cpu"] = Kind.MEASURED
        return kinds

    def stop(self) -> dict:
        """CodeCarbon's own figures for the run: per-component kWh (IT-equipment energy: divided
        by the PUE CodeCarbon multiplied it by) and their kinds, and its emissions (kg)."""
        emissions_kg = self.tracker.stop()
        self.running = False
        data = self.tracker.final_emissions_data
        applied_pue = float(getattr(data, "pue", None) or 1.0)
        energy = {c: getattr(data, f"{c}_energy", None) for c in ("cpu", "gpu", "ram")}
        self.figures = {
            "energy_kwh": {c: v / applied_pue for c, v in energy.items() if v is not None},
            "kinds": self._kinds(), "duration_s": time.perf_counter() - self._started,
            "emissions_kg": emissions_kg, "pue": applied_pue,
            "tracking_mode": getattr(data, "tracking_mode", None) or self.TRACKING_MODE,
        }
        # without a GPU CodeCarbon writes 0 kWh for it: that is no figure, not a measured zero
        self.figures["energy_kwh"] = {c: v for c, v in self.figures["energy_kwh"].items()
                                      if v > 0 or c != "gpu"}
        return self.figures

    def describe(self) -> dict:
        """What the record keeps of CodeCarbon (meters.codecarbon): its version and log, its
        emissions, the PUE and carbon intensity it computed them with (ours), and its scope."""
        import codecarbon

        return {"version": codecarbon.__version__, "csv": str(self.folder / "emissions.csv"),
                "emissions_kg": self.figures.get("emissions_kg"),
                "pue": self.given["pue"],
                "intensity_g_per_kwh": self.given["force_carbon_intensity_g_co2e_kwh"],
                "intensity_source": self.intensity.source,
                "tracking_mode": self.given["tracking_mode"],
                "gpu_ids": self.given["gpu_ids"],
                "allow_multiple_runs": self.given["allow_multiple_runs"]}


def gpu_uuid(device) -> str | None:
    """The GPU of a torch.device in NVML's "GPU-<uuid>" form (what CodeCarbon matches its
    gpu_ids against), None for any other device."""
    if device is None or getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"
