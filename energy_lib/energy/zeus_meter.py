"""Measured energy through Zeus (ml-energy/zeus): GPU by NVML or amdsmi, CPU and DRAM by RAPL,
and an SoC (Apple silicon, Jetson) by its own counters.

Zeus's `ZeusMonitor` reads the GPU's total-energy counter at window edges (polling power in a
helper process on GPUs without a usable one: NVIDIA before Volta, AMD GPUs whose counter failed
Zeus's check), RAPL's package and DRAM counters with wrap-around tracking, and the SoC's counters
(`zeus_soc`). We add what a lab record needs around it: the method Zeus really used per GPU, a
reason in words for every component it cannot measure (so the model that stands in is
explained), a flag on windows shorter than the GPU energy counter's update period (measured on
this GPU when the meter is built), a flag on windows during
which NVML listed other processes computing on the cell's GPU (its rows are the cell's -- scope
`process` -- because the device is pinned to one cell; another process on it would make that
untrue), and power for the timeline: the GPU's from Zeus's `PowerMonitor` (a helper process
polling NVML/amdsmi power, the series handed over when the run ends), the CPU, DRAM and SoC
counters' rates sampled by our timeline thread, each source read on its own so one failing read
never drops another's.

A run builds one ZeusMonitor, in its metering context (`probe`); checking beforehand whether an
explicitly named meter can work (`unavailable`) reads Zeus's device layer and builds none.
Zeus is imported only when needed: both say in one line why it cannot measure.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings
from typing import Any, Callable

from .monitor import Meter, Reading
from .table import MIN_RELIABLE_WINDOW_S, Kind, Method
from .zeus_soc import describe_soc, present_soc, soc_covers, soc_energy_j, soc_method

RAPL_DIR = "/sys/class/powercap/intel-rapl"
#: Where Zeus looks for its daemon zeusd, which reads RAPL as root for unprivileged processes
#: (zeus.utils.zeusd.ZeusdConfig.from_env: a Unix socket first, then host:port).
ZEUSD_VARIABLES = ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT")
RAPL_GRANT = ("run Zeus's daemon zeusd as root and set ZEUSD_SOCK_PATH to its socket (Zeus then "
              "reads RAPL through it); a `sudo chmod a+r` of the energy_uj files also works but "
              "is undone at reboot and reopens CVE-2020-8694 (RAPL as a side channel)")


def zeusd_configured() -> str:
    """`NAME=value` of the zeusd variable Zeus will use, or "" where none is set."""
    return next((f"{name}={os.environ[name]}" for name in ZEUSD_VARIABLES
                 if os.environ.get(name)), "")


def rapl_unreadable_reason() -> str:
    """Why RAPL cannot be read here, naming the file and how to grant access; "" where it can,
    or where zeusd is configured (the daemon reads the counters, also the host's from a
    container without /sys/class/powercap)."""
    if zeusd_configured():
        return ""
    if not os.path.isdir(RAPL_DIR) and not os.path.isdir("/sys/class/powercap"):
        return ("/sys/class/powercap does not exist (no RAPL driver: a VM, a container, or a "
                "CPU without RAPL)")
    if not os.path.exists(f"{RAPL_DIR}:0"):
        return f"{RAPL_DIR}:0 does not exist (no RAPL package domain exposed on this machine)"
    path = f"{RAPL_DIR}:0/energy_uj"
    if not os.access(path, os.R_OK):
        return (f"{path} is not readable by this user (root-only on recent kernels); to grant "
                f"access, {RAPL_GRANT}")
    return ""


#: The longest a GPU meter spends timing its energy counter when it is built: four updates of a
#: counter that moves every 100 ms (NVML's slowest, see table.MIN_RELIABLE_WINDOW_S) fit in it.
COUNTER_PROBE_S = 0.35


def counter_update_period_s(read_mj: Callable[[], float], budget_s: float | None = None,
                            intervals: int = 3) -> float | None:
    """How often an energy counter moves: read as fast as it answers until it has changed
    `intervals` + 1 times (or `budget_s`, default COUNTER_PROBE_S, passed), the median time
    between changes; None where it changed fewer than twice. Zeus infers a power counter's
    period the same way (zeus.monitor.power, per GPU model); we time the counter our windows
    read. Its public `infer_counter_update_period` returns 0 in Zeus 0.16 (fixed upstream in
    ml-energy/zeus#261, not yet released), so it is not called."""
    changes: list[float] = []
    deadline = time.perf_counter() + (COUNTER_PROBE_S if budget_s is None else budget_s)
    last = read_mj()
    while len(changes) <= intervals and time.perf_counter() < deadline:
        now, value = time.perf_counter(), read_mj()
        if value != last:
            changes.append(now)
            last = value
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    return statistics.median(gaps) if gaps else None


def power_poll_period_s(counter_period_s: float | None) -> float:
    """The PowerMonitor's polling period: half the counter's update period (Zeus's own rule, so
    every update is seen), within 0.05 s (below it NVML may answer NotSupported or 0, Zeus
    warns) and 0.1 s (Zeus's cap)."""
    return min(0.1, max(0.05, (counter_period_s or 0.1) / 2))


@contextlib.contextmanager
def main_module_hidden():
    """While Zeus starts its power poller: a spawned process runs the parent's `__main__` again
    (multiprocessing.spawn: by module name or file) before its target, so a user's training
    script without an `if __name__ == "__main__"` guard would train again in the poller (the
    Tracker runs in such scripts). The poller's target lives in zeus.monitor.power and needs
    nothing from `__main__`, so its name and file are hidden while the process starts."""
    import sys

    main = sys.modules.get("__main__")
    saved = {name: main.__dict__[name] for name in ("__spec__", "__file__")
             if main is not None and name in main.__dict__}
    try:
        for name in saved:
            setattr(main, name, None) if name == "__spec__" else delattr(main, name)
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def paced_poller(monitor: Any) -> None:
    """Give ZeusMonitor's own power poller (GPUs without an energy counter) a pace. Zeus 0.16
    starts it with an inferred period that is always 0 (ml-energy/zeus#261), so it polls as fast
    as the GPU answers and keeps a CPU core busy for the whole run, beside the cell it measures.
    It is replaced by one polling the domain Zeus's `get_energy` reads (instant power, else
    average) at half the power reading's own update period (`power_poll_period_s`); Zeus reads
    it through the same public attribute, `power_monitor`."""
    from zeus.monitor.power import PowerDomain, PowerMonitor

    own = getattr(monitor, "power_monitor", None)
    if own is None or own.update_period > 0:
        return
    domains = own.measurement_domains
    domain = (PowerDomain.DEVICE_INSTANT if PowerDomain.DEVICE_INSTANT in domains
              else PowerDomain.DEVICE_AVERAGE)
    read = (monitor.gpus.get_instant_power_usage if domain == PowerDomain.DEVICE_INSTANT
            else monitor.gpus.get_average_power_usage)
    periods = [counter_update_period_s(lambda: read(index)) for index in own.gpu_indices]
    period = None if None in periods else max(periods)
    own.get_all_power_timelines()  # takes in its queues, so its process can exit at once
    own.stop()
    with main_module_hidden():
        monitor.power_monitor = PowerMonitor(gpu_indices=own.gpu_indices, power_domains=[domain],
                                             update_period=power_poll_period_s(period))


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


def gpu_method(gpus: Any, index: int) -> Method:
    """How Zeus measures GPU `index`, as its device layer decided: the energy counter where
    `supports_get_total_energy_consumption` says so (NVML: Volta and newer; amdsmi: where the
    counter agreed with power x 0.5 s when Zeus started, see zeus.device.gpu.amd), else power
    polled in a helper process and integrated (ZeusMonitor's PowerMonitor)."""
    from zeus.device.gpu.amd import AMDGPUs

    counter = gpus.supports_get_total_energy_consumption(index)
    if isinstance(gpus, AMDGPUs):
        return Method.ZEUS_AMDSMI if counter else Method.ZEUS_AMDSMI_POLLED
    return Method.ZEUS_NVML if counter else Method.ZEUS_NVML_POLLED


def gpu_unmeasurable(gpus: Any, index: int) -> str:
    """Why Zeus can measure GPU `index` neither by counter nor by power ("" when it can): e.g.
    the second die of an MI250, whose power AMD reports on the first (Zeus's own words)."""
    if gpus.supports_get_total_energy_consumption(index):
        return ""
    reason = ""
    for read in (gpus.get_instant_power_usage, gpus.get_average_power_usage):
        try:
            read(index)
            return ""
        except Exception as error:  # noqa: BLE001 - Zeus's not-supported errors and others
            reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    return reason


def usable_gpus(gpu_indices: list[int]) -> tuple[list[int], list[str]]:
    """The GPUs among `gpu_indices` Zeus can measure, and a note for each one it cannot."""
    if not gpu_indices:
        return [], []
    from zeus.device import get_gpus
    from zeus.device.gpu.common import ZeusGPUInitError

    try:
        gpus = get_gpus()
    except ZeusGPUInitError:
        gpus = None
    seen = [i for i in gpu_indices if gpus is not None and i < len(gpus)]
    if not seen:
        return [], [("GPU energy not measured: Zeus sees no GPU through NVML or amdsmi "
                     "(no driver loaded, or not an NVIDIA/AMD GPU)")]
    usable, notes = [], []
    for index in seen:
        reason = gpu_unmeasurable(gpus, index)
        if reason:
            notes.append(f"GPU energy not measured: GPU {index} has no usable energy counter and "
                         f"Zeus cannot read its power ({reason})")
        else:
            usable.append(index)
    return usable, notes


def rapl_packages() -> int:
    """How many RAPL packages Zeus's device layer can read (0 where it cannot)."""
    from zeus.device import get_cpus

    try:
        return len(get_cpus())
    except Exception:  # noqa: BLE001 - no RAPL, no permission: nothing to read
        return 0


def _no_cpu_note() -> str:
    return f"CPU energy not measured: {rapl_unreadable_reason() or 'Zeus found no RAPL package'}"


def _dual_die_note(gpus: Any, index: int) -> str:
    """AMD reports a dual-die MI250's power on one die for both (zeus.device.gpu.amd)."""
    name = str(gpus.get_name(index)) if hasattr(gpus, "get_name") else ""
    if "MI250" not in name:
        return ""
    return (f"GPU {index} ({name}) is one die of a dual-die MI250: AMD reports both dies' power "
            "on one of them, so its figure may include the other die's work")


_GPU_HOW = {Method.ZEUS_NVML: "NVML total-energy counter",
            Method.ZEUS_NVML_POLLED: "NVML {power} power polled and integrated (no energy counter)",
            Method.ZEUS_AMDSMI: "amdsmi energy counter",
            Method.ZEUS_AMDSMI_POLLED: ("amdsmi {power} power polled and integrated (its energy "
                                        "counter is missing or failed Zeus's check)")}


def held_sum(series: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Several step series (time, value) summed: at each time any of them changes, the sum of
    every series' last value (a series before its first point counts nothing yet)."""
    if len(series) == 1:
        return list(series[0])
    last: dict[int, float] = {}
    out = []
    for t, which, value in sorted((t, i, v) for i, points in enumerate(series) for t, v in points):
        last[which] = value
        out.append((t, sum(last.values())))
    return out


#: The timeline's note on a GPU sample read as average power.
AVERAGE_POWER_NOTE = "average power (instant power unavailable)"


class ZeusMeter(Meter):
    """GPU, CPU+DRAM and/or SoC energy per window, read through one ZeusMonitor."""

    kind = Kind.MEASURED

    def __init__(self, monitor: Any, gpu_indices: list[int], measure_cpu: bool,
                 measure_soc: bool = False) -> None:
        self.monitor = monitor
        self.gpu_indices = list(gpu_indices)
        self.measure_cpu = measure_cpu and len(monitor.cpu_indices) > 0
        self.dram_packages = [i for i in monitor.cpu_indices if self.measure_cpu and
                              monitor.cpus.supports_get_dram_energy_consumption(i)]
        self.has_dram = bool(self.dram_packages)
        methods = [gpu_method(monitor.gpus, i) for i in self.gpu_indices]
        # one GPU row sums the GPUs: where Zeus measures them differently, the coarser method
        polled = [m for m in methods if m.endswith("-polled")]
        self.gpu_method = (polled or methods or [None])[0]
        self.soc = monitor.soc if measure_soc and getattr(monitor, "soc_is_present", False) else None
        self.soc_method = soc_method(self.soc) if self.soc is not None else None
        self._last_j: dict[str, tuple[float, float]] = {}  # component -> (time, cumulative J)
        self._power_notes: dict[str, str] = {}
        self._gpu_others: dict[str, tuple[set[int], bool]] = {}  # open window -> others seen
        # how often the GPU row's figure can change: the slowest of its GPUs' energy counters,
        # or the power polling period where Zeus integrates polled power
        self.gpu_update_period_s = self._gpu_update_period_s()
        self.power_monitor, self._power_domain = None, None
        self.power_monitor_failure = ""  # why the GPU has no power timeline, if it has none

    def _gpu_update_period_s(self) -> float | None:
        if not self.gpu_indices:
            return None
        if self.gpu_method in (Method.ZEUS_NVML_POLLED, Method.ZEUS_AMDSMI_POLLED):
            period = getattr(getattr(self.monitor, "power_monitor", None), "update_period", 0)
            return period if period and period > 0 else None
        periods = []
        for index in self.gpu_indices:
            try:
                periods.append(counter_update_period_s(
                    lambda: self.monitor.gpus.get_total_energy_consumption(index)))
            except Exception:  # noqa: BLE001 - no period is no flag threshold of our own
                periods.append(None)
        return None if None in periods else max(periods)

    def start_power_monitor(self) -> None:
        """Zeus's PowerMonitor for the GPUs' power timeline: instant power, or average power on
        a GPU that gives no instant figure (as Zeus's own domain check falls back), one polling
        process. ZeusMonitor's own is reused where it has one (GPUs without an energy counter).
        A monitor that cannot start leaves the timeline without GPU power (`describe` says
        why: `start_power_series`)."""
        from zeus.monitor.power import PowerDomain, PowerMonitor

        if not self.gpu_indices or self.power_monitor is not None:
            return
        own = getattr(self.monitor, "power_monitor", None)
        gpus, domain = self.monitor.gpus, PowerDomain.DEVICE_INSTANT
        try:
            for index in self.gpu_indices:
                gpus.get_instant_power_usage(index)
        except Exception:  # noqa: BLE001 - unsupported or failed: Zeus falls back to average
            domain = PowerDomain.DEVICE_AVERAGE
        if own is not None and domain in getattr(own, "measurement_domains", ()):
            self.power_monitor, self._power_domain = own, domain
            return
        with warnings.catch_warnings(), main_module_hidden():
            warnings.simplefilter("ignore")
            self.power_monitor = PowerMonitor(
                gpu_indices=self.gpu_indices, power_domains=[domain],
                update_period=power_poll_period_s(self.gpu_update_period_s))
        self._power_domain = domain

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

    @staticmethod
    def unavailable(gpu_indices: list[int], measure_cpu: bool) -> list[str]:
        """Why Zeus cannot measure these GPUs and/or the CPU here ([] when it can), read from its
        device layer alone: no ZeusMonitor is built, so a run's check before it starts costs no
        second monitor (and no second power-polling process)."""
        try:
            notes = usable_gpus(gpu_indices)[1]
        except ImportError as error:
            return [f"Zeus is not importable ({error}); pip install zeus"]
        if measure_cpu and not rapl_packages():
            notes.append(_no_cpu_note())
        return notes

    @classmethod
    def probe(cls, gpu_indices: list[int], measure_cpu: bool,
              measure_soc: bool = False) -> tuple["ZeusMeter | None", list[str]]:
        """A meter for these CUDA devices (framework indices), the CPU packages and/or the SoC
        (Apple silicon, Jetson), built on one new ZeusMonitor, or None; and one note per
        component it cannot measure, saying why."""
        try:
            usable, notes = usable_gpus(gpu_indices)
            soc = present_soc() if measure_soc else None
            if not usable and soc is None and not (measure_cpu and rapl_packages()):
                # nothing here Zeus can read: its monitor is not built (importing it costs each
                # cell's kernel ~1.5 s: it imports scikit-learn and SciPy)
                return None, notes + ([_no_cpu_note()] if measure_cpu else [])
            from zeus.monitor import ZeusMonitor
        except ImportError as error:
            return None, [f"Zeus is not importable ({error}); pip install zeus"]
        covered = soc_covers(soc) if soc is not None else set()
        if "gpu" in covered:  # a Jetson's GPU is inside its SoC row: NVML would count it twice
            usable, notes = [], [n for n in notes if not n.startswith("GPU energy")]
        with warnings.catch_warnings(), main_module_hidden():  # its own poller, on old GPUs
            warnings.simplefilter("ignore")
            try:
                monitor = ZeusMonitor(gpu_indices=usable, cpu_indices=None if measure_cpu else [],
                                      sync_execution_with="torch")
            except Exception as error:  # noqa: BLE001 - e.g. a GPU lost since the device check
                return None, notes + [f"Zeus could not start: {type(error).__name__}: {error}"]
            try:
                paced_poller(monitor)
            except Exception as error:  # noqa: BLE001 - Zeus's own poller stays, busy as it is
                notes.append(f"Zeus's power poller polls without pause ({type(error).__name__}: "
                             f"{error}): it keeps a CPU core busy")
        soc = soc is not None and monitor.soc_is_present
        if measure_cpu and not monitor.cpu_indices and "cpu" not in covered:
            notes.append(_no_cpu_note())
        if not usable and not monitor.cpu_indices and not soc:
            return None, notes
        notes += [n for n in (_dual_die_note(monitor.gpus, i) for i in usable) if n]
        meter = cls(monitor, usable, measure_cpu, measure_soc=soc)
        if measure_cpu and meter.measure_cpu and not meter.has_dram and "ram" not in covered:
            notes.append("RAM energy not measured: RAPL exposes no DRAM domain on this CPU")
        return meter, notes

    @property
    def components(self) -> list[str]:
        parts = ["gpu"] if self.gpu_indices else []
        if self.measure_cpu:
            parts += ["cpu", "ram"] if self.has_dram else ["cpu"]
        return parts + (["soc"] if self.soc is not None else [])

    @property
    def covered(self) -> set[str]:
        """Every component whose energy some row of this meter contains: its own, and the CPU,
        GPU and memory inside the SoC's row (no model may stand in for those as well)."""
        return set(self.components) | (soc_covers(self.soc) if self.soc is not None else set())

    def methods(self) -> dict[str, tuple[str, str]]:
        out = {}
        if self.gpu_indices:
            out["gpu"] = (str(self.gpu_method), str(self.kind))
        for component in ("cpu", "ram"):
            if component in self.components:
                out[component] = (str(Method.ZEUS_RAPL), str(self.kind))
        if self.soc is not None:
            out["soc"] = (str(self.soc_method), str(self.kind))
        return out

    def update_periods_s(self) -> dict[str, float]:
        return {"gpu": self.gpu_update_period_s} if self.gpu_update_period_s else {}

    def _polled_power(self) -> str:
        """Which power Zeus's PowerMonitor integrates: instant where it can, else average."""
        from zeus.monitor.power import PowerDomain

        domains = getattr(getattr(self.monitor, "power_monitor", None), "measurement_domains", ())
        return "average" if PowerDomain.DEVICE_INSTANT not in domains else "instant"

    def describe(self) -> str:
        parts = []
        gpus = self.monitor.gpus
        for index in self.gpu_indices:
            name = str(gpus.get_name(index)) if hasattr(gpus, "get_name") else f"GPU {index}"
            how = _GPU_HOW[gpu_method(gpus, index)]
            if "{power}" in how:
                how = how.format(power=self._polled_power())
            parts.append(f"GPU: Zeus, {how} on {name}")
        if self.measure_cpu:
            parts.append(f"CPU{' and DRAM' if self.has_dram else ''}: Zeus, RAPL counters of "
                         f"{len(self.monitor.cpu_indices)} package(s)")
        if self.soc is not None:
            parts.append(describe_soc(self.soc))
        if self.power_monitor_failure:
            parts.append(f"no GPU power timeline: {self.power_monitor_failure}")
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
            period_s = self.gpu_update_period_s or MIN_RELIABLE_WINDOW_S
            if duration_s < period_s:
                how = "measured" if self.gpu_update_period_s else "assumed"
                flags.append(f"window of {duration_s * 1000:.0f} ms is shorter than the GPU energy "
                             f"counter's update period ({period_s * 1000:.0f} ms, {how}): noise, "
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
        if self.soc is not None:
            readings.append(Reading("soc", soc_energy_j(measurement.soc_energy), self.soc_method,
                                    self.kind))
        return readings

    # -- the power timeline ----------------------------------------------------------------

    def power_w(self) -> dict[str, float]:
        """CPU, DRAM and SoC power as their counters' rate since the last read (the GPU's comes
        from Zeus's PowerMonitor: `power_series`). Each source is read on its own: one that
        fails leaves only its own gap in this sample. Each sample also looks for other
        processes on the cell's GPU, for the windows open now, and takes in the GPU poller's
        samples so far."""
        watts: dict[str, float] = {}
        if self.gpu_indices and self._gpu_others:
            self._see_gpu_processes(list(self._gpu_others))
        if self.power_monitor is not None:
            with contextlib.suppress(Exception):
                self._drain_power_monitor()
        if self.measure_cpu:
            with contextlib.suppress(Exception):
                readings = {i: self.monitor.cpus.get_total_energy_consumption(i)
                            for i in self.monitor.cpu_indices}
                watts.update(self._rate("cpu", sum(r.cpu_mj for r in readings.values()) / 1000.0))
                if self.has_dram:  # a DRAM domain that gives no figure leaves RAM's gap alone
                    watts.update(self._rate("ram", sum(readings[i].dram_mj
                                                       for i in self.dram_packages) / 1000.0))
        if self.soc is not None:
            with contextlib.suppress(Exception):
                watts.update(self._rate("soc", soc_energy_j(self.soc.get_total_energy_consumption())))
        return watts

    def start_power_series(self) -> None:
        """The timeline starts: so does Zeus's PowerMonitor (a GPU meter only)."""
        if self.gpu_indices:
            try:
                self.start_power_monitor()
            except Exception as error:  # noqa: BLE001 - a timeline gap, never a failed run
                reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
                self.power_monitor_failure = f"Zeus's PowerMonitor did not start ({reason})"

    def _drain_power_monitor(self) -> None:
        """Move the poller's samples into the monitor as the run goes (Zeus's `get_power` and
        `get_power_timeline` read its queue), so they never pile up in the polling process,
        whose exit would wait for them."""
        from zeus.monitor.power import PowerDomain

        if self._power_domain == PowerDomain.DEVICE_INSTANT:
            self.power_monitor.get_power()
        else:  # no instant power: the average domain's queue, nothing returned
            self.power_monitor.get_power_timeline(self._power_domain, start_time=time.time())

    def power_series(self) -> dict[str, list[tuple[float, float]]]:
        """The GPU row's power as Zeus's PowerMonitor polled it: (time.time(), W) at every change
        of the reading, summed over the row's GPUs (each held at its last value)."""
        if self.power_monitor is None:
            return {}
        from zeus.monitor.power import PowerDomain

        per_gpu = self.power_monitor.get_power_timeline(self._power_domain)
        if self._power_domain == PowerDomain.DEVICE_AVERAGE:
            self._power_notes["gpu"] = AVERAGE_POWER_NOTE
        return {"gpu": held_sum([per_gpu.get(i, []) for i in self.gpu_indices])}

    def power_notes(self) -> dict[str, str]:
        return dict(self._power_notes)

    def _rate(self, component: str, joules: float) -> dict[str, float]:
        """Watts of a cumulative counter since its last read ({} on the first read)."""
        now = time.perf_counter()
        previous, self._last_j[component] = self._last_j.get(component), (now, joules)
        if previous is None or now <= previous[0]:
            return {}
        return {component: (joules - previous[1]) / (now - previous[0])}

    def close(self) -> None:
        for power_monitor in {id(m): m for m in (getattr(self.monitor, "power_monitor", None),
                                                 self.power_monitor) if m is not None}.values():
            if hasattr(power_monitor, "stop"):
                power_monitor.stop()
