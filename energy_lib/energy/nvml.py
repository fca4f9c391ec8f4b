"""NVIDIA GPU energy through NVML (the nvidia-ml-py package, imported as `pynvml`).

Volta and newer GPUs keep a total-energy counter in millijoules: reading it at synchronised
window edges gives the window's energy exactly (Zeus's method). Older GPUs have no counter; there
a background thread samples board power every 100 ms and integrates it (trapezoids). Only the
GPUs the run uses are read, mapped through CUDA_VISIBLE_DEVICES. A window shorter than the
counter's update period is flagged rather than reported as fact.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .monitor import Reading

SAMPLE_PERIOD_S = 0.1
#: NVML's energy counter and power readings refresh every few tens of milliseconds on recent
#: GPUs (about 100 ms on older ones); shorter windows are flagged as unreliable.
MIN_RELIABLE_WINDOW_S = 0.1


def physical_indices(cuda_indices: list[int], visible: str | None = None) -> list[str | int]:
    """NVML identifiers (index or UUID) of CUDA device indices, through CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible:
        return list(cuda_indices)
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    out: list[str | int] = []
    for i in cuda_indices:
        entry = entries[i]
        out.append(int(entry) if entry.isdigit() else entry)
    return out


def _handle(nvml: Any, ident: str | int):
    if isinstance(ident, int):
        return nvml.nvmlDeviceGetHandleByIndex(ident)
    return nvml.nvmlDeviceGetHandleByUUID(ident)


class PowerIntegrator(threading.Thread):
    """Integrates sampled power (W) of some GPUs into joules, for GPUs without a counter."""

    def __init__(self, read_power_w, period_s: float = SAMPLE_PERIOD_S) -> None:
        super().__init__(daemon=True, name="nvml-power-integrator")
        self.read_power_w = read_power_w
        self.period_s = period_s
        self.joules = 0.0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._last = (time.perf_counter(), read_power_w())

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self.sample()

    def sample(self) -> float:
        now, power = time.perf_counter(), self.read_power_w()
        with self._lock:
            t0, p0 = self._last
            self.joules += (now - t0) * (p0 + power) / 2
            self._last = (now, power)
            return self.joules

    def stop(self) -> None:
        self._halt.set()


class NvmlMeter:
    """Measured GPU energy per window for the GPUs a run uses."""

    kind = "measured"
    components = ["gpu"]

    def __init__(self, nvml: Any, identifiers: list[str | int]) -> None:
        self.nvml = nvml
        self.handles = [_handle(nvml, i) for i in identifiers]
        self.names = [self._text(nvml.nvmlDeviceGetName(h)) for h in self.handles]
        try:
            for h in self.handles:
                nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            self.has_counter = True
        except nvml.NVMLError:
            self.has_counter = False
        self.method = "nvml-counter" if self.has_counter else "nvml-power-sampled"
        self._integrator = None
        if not self.has_counter:
            self._integrator = PowerIntegrator(self.read_power_w)
            self._integrator.start()
        self._starts: dict[str, float] = {}

    @staticmethod
    def _text(value) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    @classmethod
    def probe(cls, cuda_indices: list[int], nvml: Any = None) -> tuple["NvmlMeter | None", str]:
        """A meter for these CUDA devices, or None and why not."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        try:
            nvml.nvmlInit()
            return cls(nvml, physical_indices(cuda_indices)), ""
        except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return None, f"NVML unavailable: {error}"

    def describe(self) -> str:
        how = "total-energy counter (mJ)" if self.has_counter else f"power sampled every {SAMPLE_PERIOD_S * 1000:.0f} ms"
        return f"GPU: NVML {how} on {', '.join(self.names)}"

    def read_energy_j(self) -> float:
        if self.has_counter:
            return sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1000.0
        return self._integrator.sample()

    def read_power_w(self) -> float:
        return sum(self.nvml.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1000.0

    def power_w(self) -> dict[str, float]:
        return {"gpu": self.read_power_w()}

    def begin(self, name: str) -> None:
        self._starts[name] = self.read_energy_j()

    def end(self, name: str, duration_s: float) -> list[Reading]:
        joules = self.read_energy_j() - self._starts.pop(name)
        flag = ""
        if duration_s < MIN_RELIABLE_WINDOW_S:
            flag = (f"window of {duration_s * 1000:.0f} ms is shorter than NVML's update period "
                    f"(~{MIN_RELIABLE_WINDOW_S * 1000:.0f} ms): noise, not a measurement")
        return [Reading("gpu", joules, self.method, self.kind, flag)]

    def close(self) -> None:
        if self._integrator is not None:
            self._integrator.stop()
