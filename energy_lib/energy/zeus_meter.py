"""Measured energy through Zeus (ml-energy/zeus): GPU by NVML (or amdsmi), CPU and DRAM by RAPL.

Zeus's `ZeusMonitor` reads the GPU's total-energy counter at window edges (polling power in a
helper process on GPUs without one) and RAPL's package and DRAM counters with wrap-around
tracking. We add what a lab record needs around it: a reason in words for every component it
cannot measure (so the model that stands in is explained), a flag on windows shorter than the
counter's update period, a flag on windows during which NVML listed other processes computing on
the cell's GPU (its rows are the cell's -- scope `process` -- because the device is pinned to one
cell; another process on it would make that untrue), and instantaneous power for the timeline.

Zeus is imported only when a meter is built: `probe` says in one line why it cannot measure.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from .monitor import Meter, Reading
from .table import Kind, Method

#: NVML's energy counter updates about every 20-100 ms; a shorter window reads noise.
MIN_RELIABLE_WINDOW_S = 0.1
RAPL_DIR = "/sys/class/powercap/intel-rapl"
RAPL_GRANT = ("sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
              "/sys/class/powercap/intel-rapl:*/intel-rapl:*/energy_uj")


def rapl_unreadable_reason() -> str:
    """Why RAPL cannot be read here, naming the file and the command that grants access."""
    if not os.path.isdir(RAPL_DIR) and not os.path.isdir("/sys/class/powercap"):
        return ("/sys/class/powercap does not exist (no RAPL driver: a VM, a container, or a "
                "CPU without RAPL)")
    if not os.path.exists(f"{RAPL_DIR}:0"):
        return f"{RAPL_DIR}:0 does not exist (no RAPL package domain exposed on this machine)"
    path = f"{RAPL_DIR}:0/energy_uj"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user (root-only on recent kernels); grant it: {RAPL_GRANT}"
    return ""


def gpu_compute_pids(gpus: Any, index: int) -> list[int] | None:
    """The pids NVML lists as computing on Zeus's GPU `index`, or None where it cannot say (an
    AMD GPU, a device layer without NVML handles, an NVML error)."""
    try:
        handle = gpus.gpus[index].handle
        import pynvml

        return [int(p.pid) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
    except Exception:  # noqa: BLE001 - a missing answer is no answer, never a failed meter
        return None


def other_gpu_processes(pids: list[int] | None) -> tuple[set[int], bool]:
    """(pids of other processes, unsure) among the pids NVML listed. Ours are this process and
    its descendants. In a container NVML reports the host's pids, so this cell's own pid is not
    among them: then one listed process is taken to be this cell, and with more than one we
    cannot tell which is ours (`unsure`: all are returned)."""
    if not pids:
        return set(), False
    import psutil

    own = {os.getpid()}
    try:
        own |= {c.pid for c in psutil.Process().children(recursive=True)}
    except psutil.Error:
        pass
    listed = set(pids)
    if listed & own:
        return listed - own, False
    return (set(), False) if len(listed) == 1 else (listed, True)


def _gpu_method(gpus: Any, index: int) -> Method:
    vendor = type(gpus).__name__.lower()
    if "amd" in vendor:
        return Method.ZEUS_AMDSMI
    if gpus.supports_get_total_energy_consumption(index):
        return Method.ZEUS_NVML
    return Method.ZEUS_NVML_POLLED


class ZeusMeter(Meter):
    """GPU and/or CPU+DRAM energy per window, read through one ZeusMonitor."""

    kind = Kind.MEASURED

    def __init__(self, monitor: Any, gpu_indices: list[int], measure_cpu: bool) -> None:
        self.monitor = monitor
        self.gpu_indices = list(gpu_indices)
        self.measure_cpu = measure_cpu and len(monitor.cpu_indices) > 0
        self.has_dram = self.measure_cpu and any(
            monitor.cpus.supports_get_dram_energy_consumption(i) for i in monitor.cpu_indices)
        self.gpu_method = _gpu_method(monitor.gpus, self.gpu_indices[0]) if self.gpu_indices else None
        self._last_cpu: tuple[float, dict[str, float]] | None = None
        self._gpu_others: dict[str, tuple[set[int], bool]] = {}  # open window -> others seen

    def _see_gpu_processes(self, names) -> None:
        """Add the other processes on the cell's GPUs now to the windows `names`."""
        for index in self.gpu_indices:
            others, unsure = other_gpu_processes(gpu_compute_pids(self.monitor.gpus, index))
            for name in names:
                seen = self._gpu_others.get(name)
                if seen is not None:  # still open (the timeline thread may run late)
                    self._gpu_others[name] = (seen[0] | others, seen[1] or unsure)

    def gpu_sharing(self, name: str) -> tuple[str, tuple[int, ...]]:
        """(the flag of window `name`'s GPU row, the pids known to be other processes). When
        NVML lists pids of another namespace (a container), none of them can be told apart
        from ours: the flag says so, but no pid counts as a known sharer."""
        others, unsure = self._gpu_others.pop(name, (set(), False))
        return self._sharing_flag(others, unsure), (() if unsure else tuple(sorted(others)))

    @staticmethod
    def _sharing_flag(others: set[int], unsure: bool) -> str:
        if not others:
            return ""
        listed = ", ".join(str(p) for p in sorted(others)[:5]) + (", ..." if len(others) > 5 else "")
        if unsure:
            return (f"NVML listed {len(others)} processes on this GPU during the window (pids "
                    f"{listed}, none of them this cell's pid: another pid namespace), so other "
                    "work may have shared the GPU: its energy is not only this cell's")
        return (f"other processes computed on this GPU during the window (pids {listed}): its "
                "energy is not only this cell's")

    @classmethod
    def probe(cls, gpu_indices: list[int], measure_cpu: bool) -> tuple["ZeusMeter | None", list[str]]:
        """A meter for these CUDA devices (framework indices) and/or the CPU packages, or None;
        and one note per component it cannot measure, saying why."""
        notes: list[str] = []
        try:
            from zeus.device import get_gpus
            from zeus.device.gpu.common import ZeusGPUInitError
            from zeus.monitor import ZeusMonitor
        except ImportError as error:
            return None, [f"Zeus is not importable ({error}); pip install zeus"]
        usable: list[int] = []
        if gpu_indices:
            try:
                gpus_seen = len(get_gpus())
            except ZeusGPUInitError:
                gpus_seen = 0
            usable = [i for i in gpu_indices if i < gpus_seen]
            if not usable:
                notes.append("GPU energy not measured: Zeus sees no GPU through NVML or amdsmi "
                             "(no driver loaded, or not an NVIDIA/AMD GPU)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                monitor = ZeusMonitor(gpu_indices=usable, cpu_indices=None if measure_cpu else [],
                                      sync_execution_with="torch")
            except Exception as error:  # e.g. a GPU lost between the probe and here
                return None, notes + [f"Zeus could not start: {type(error).__name__}: {error}"]
        if measure_cpu and not monitor.cpu_indices:
            notes.append(f"CPU energy not measured: {rapl_unreadable_reason() or 'Zeus found no RAPL package'}")
        if not usable and not monitor.cpu_indices:
            return None, notes
        meter = cls(monitor, usable, measure_cpu)
        if measure_cpu and meter.measure_cpu and not meter.has_dram:
            notes.append("RAM energy not measured: RAPL exposes no DRAM domain on this CPU")
        return meter, notes

    @property
    def components(self) -> list[str]:
        parts = ["gpu"] if self.gpu_indices else []
        if self.measure_cpu:
            parts += ["cpu", "ram"] if self.has_dram else ["cpu"]
        return parts

    def methods(self) -> dict[str, tuple[str, str]]:
        out = {}
        if self.gpu_indices:
            out["gpu"] = (str(self.gpu_method), str(self.kind))
        for component in ("cpu", "ram"):
            if component in self.components:
                out[component] = (str(Method.ZEUS_RAPL), str(self.kind))
        return out

    def describe(self) -> str:
        parts = []
        if self.gpu_indices:
            names = ", ".join(str(self.monitor.gpus.get_name(i)) if hasattr(self.monitor.gpus, "get_name")
                              else f"GPU {i}" for i in self.gpu_indices)
            how = {Method.ZEUS_NVML: "NVML total-energy counter",
                   Method.ZEUS_NVML_POLLED: "NVML power polled and integrated (no energy counter)",
                   Method.ZEUS_AMDSMI: "amdsmi energy counter"}[self.gpu_method]
            parts.append(f"GPU: Zeus, {how} on {names}")
        if self.measure_cpu:
            parts.append(f"CPU{' and DRAM' if self.has_dram else ''}: Zeus, RAPL counters of "
                         f"{len(self.monitor.cpu_indices)} package(s)")
        return "; ".join(parts)

    def begin(self, name: str) -> None:
        # the metering context has synchronised the device already
        self.monitor.begin_window(name, sync_execution=False)
        if self.gpu_indices:
            self._gpu_others[name] = (set(), False)
            self._see_gpu_processes([name])

    def cancel(self, name: str) -> None:
        """Zeus's own cancel: the window is dropped without reading its counters."""
        self._gpu_others.pop(name, None)
        self.monitor.end_window(name, sync_execution=False, cancel=True)

    def end(self, name: str, duration_s: float) -> list[Reading]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Zeus warns on zero-energy windows; we flag them
            measurement = self.monitor.end_window(name, sync_execution=False)
        readings = []
        if self.gpu_indices:
            self._see_gpu_processes([name])
            sharing_flag, sharers = self.gpu_sharing(name)
            flags = [sharing_flag]
            if duration_s < MIN_RELIABLE_WINDOW_S:
                flags.append(f"window of {duration_s * 1000:.0f} ms is shorter than the GPU energy "
                        f"counter's update period (~{MIN_RELIABLE_WINDOW_S * 1000:.0f} ms): noise, "
                        "not a measurement")
            readings.append(Reading("gpu", sum(measurement.gpu_energy.values()),
                                    self.gpu_method, self.kind, "; ".join(f for f in flags if f),
                                    sharer_pids=sharers))
        if self.measure_cpu:
            readings.append(Reading("cpu", sum((measurement.cpu_energy or {}).values()),
                                    Method.ZEUS_RAPL, self.kind))
            if self.has_dram:
                readings.append(Reading("ram", sum((measurement.dram_energy or {}).values()),
                                        Method.ZEUS_RAPL, self.kind))
        return readings

    def power_w(self) -> dict[str, float]:
        """Instantaneous GPU power; CPU/DRAM power as the counters' rate since the last call."""
        watts: dict[str, float] = {}
        gpus, cpus = self.monitor.gpus, self.monitor.cpus
        if self.gpu_indices:
            watts["gpu"] = sum(gpus.get_instant_power_usage(i) for i in self.gpu_indices) / 1000.0
            if self._gpu_others:
                self._see_gpu_processes(list(self._gpu_others))
        if self.measure_cpu:
            now = time.perf_counter()
            readings = [cpus.get_total_energy_consumption(i) for i in self.monitor.cpu_indices]
            joules = {"cpu": sum(r.cpu_mj for r in readings) / 1000.0}
            if self.has_dram:
                joules["ram"] = sum(r.dram_mj or 0.0 for r in readings) / 1000.0
            previous, self._last_cpu = self._last_cpu, (now, joules)
            if previous is not None and now > previous[0]:
                for component, value in joules.items():
                    watts[component] = (value - previous[1][component]) / (now - previous[0])
        return watts

    def close(self) -> None:
        power_monitor = getattr(self.monitor, "power_monitor", None)
        if power_monitor is not None and hasattr(power_monitor, "stop"):
            power_monitor.stop()
