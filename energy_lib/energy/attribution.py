"""Whose share of the machine a window was: the cell's process tree, other processes, the
hypervisor.

A CPU package (RAPL), its DRAM and the TDP x utilisation model see the whole machine, so on a
shared machine a busy neighbour's work is billed as the cell's. Per metering window we record:

- the cell's CPU time: this process (the kernel, its threads) and its descendants (DataLoader
  workers), by psutil, taken at both window edges. psutil counts a child's time while it lives
  and, once it is reaped, in the parent's `children_*` times, so a worker that dies unreaped
  inside a window loses its last slice (an under-count, never a double count);
- the machine's busy CPU time (/proc/stat user + nice + system + irq + softirq; guest time is
  already inside user and nice, so it is not added again) and the hypervisor's steal time,
  separately: steal is time another virtual machine had our core, not work of this machine;
- the capacity: cores (the per-CPU lines of /proc/stat, i.e. what the busy total covers) x the
  window's seconds;
- runnable threads (`procs_running` of /proc/stat) at the edges and at every power-timeline
  sample, less the one thread reading it, per core;
- the cell's resident memory (RSS summed over the tree; shared pages count once per process,
  so this leans high) and the machine's used memory (/proc/meminfo MemTotal - MemAvailable).

From these, per window: `cpu_attribution_share` = cell CPU / machine busy (clamped to [0, 1]; 1
when the machine was busy for less than a clock tick, said in the flag) -- the factor the
`process` CPU rows apply to the machine figure, for the TDP model and RAPL alike. With the TDP
model this makes the cell's figure TDP x cell CPU / capacity: its own cores' worth.

RAM is attributed by `ram_attribution_share` = cell RSS / machine used memory, not by CPU time:
the RAM model prices memory that is held (W per GB), and DRAM's energy is mostly refresh and
background power of the memory in use, which a CPU-bound neighbour spinning in registers does
not add to. A CPU share would move the cell's RAM energy with a neighbour's CPU use, which does
not change what the memory costs; the memory share moves only when someone else holds memory.

Interference per window: `others_cpu_share` = (machine busy - cell CPU) / capacity,
`steal_share` = steal / capacity, `runnable_per_core`. A run is contended when, over its
training windows, the time-weighted mean of others + steal exceeds the threshold
(`run_contention`).

`machine_load` is the same measurement for a runner before a cell starts: other processes'
share of the machine over a second, and the busiest of them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import psutil

PROC_STAT = Path("/proc/stat")
PROC_MEMINFO = Path("/proc/meminfo")
try:
    TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")  # /proc/stat's unit (USER_HZ, 100 Hz on Linux)
except (ValueError, OSError, AttributeError):
    TICK_S = 0.01
#: Below this much machine busy CPU time a window's shares are noise of the clock ticks.
FEW_TICKS_S = 10 * TICK_S


# ------------------------------------------------------------------------------------ readers

@dataclass(frozen=True)
class MachineTimes:
    """The machine's CPU counters (seconds since boot) and runnable threads now."""

    busy_s: float  # user + nice + system + irq + softirq (guest is inside user/nice)
    steal_s: float
    total_s: float  # busy + idle + iowait + steal
    cores: int  # per-CPU lines: the CPUs the totals cover
    runnable: int  # procs_running (includes the thread reading it)


def read_machine_times(stat_path: Path = PROC_STAT) -> MachineTimes:
    """Parse /proc/stat (or a fake of it). Fields of the `cpu` line, in ticks: user nice system
    idle iowait irq softirq steal guest guest_nice; older kernels have fewer (missing = 0)."""
    lines = Path(stat_path).read_text().splitlines()
    values = [float(v) for v in lines[0].split()[1:]] + [0.0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    runnable = next((int(line.split()[1]) for line in lines if line.startswith("procs_running")), 0)
    return MachineTimes(busy * TICK_S, steal * TICK_S, (busy + idle + iowait + steal) * TICK_S,
                        cores or (os.cpu_count() or 1), runnable)


def read_used_memory_bytes(meminfo_path: Path = PROC_MEMINFO) -> int:
    """MemTotal - MemAvailable (what processes hold; page cache that can be dropped is not)."""
    fields = {}
    for line in Path(meminfo_path).read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.split():
            fields[name] = int(rest.split()[0]) * 1024  # kB
    total = fields.get("MemTotal", 0)
    return max(0, total - fields.get("MemAvailable", fields.get("MemFree", 0)))


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds and resident bytes of a process and its live descendants."""

    cpu_s: float
    rss_bytes: int
    pids: frozenset[int]


def tree_usage(pid: int | None = None) -> TreeUsage:
    """This process (or `pid`) and its descendants: user + system CPU of each live process plus
    the times of the children it has reaped; RSS summed. A process that vanishes while read is
    skipped."""
    root = psutil.Process(pid)
    with root.oneshot():
        times = root.cpu_times()
        cpu_s = times.user + times.system + times.children_user + times.children_system
        rss = root.memory_info().rss
    pids = {root.pid}
    for child in root.children(recursive=True):
        try:
            with child.oneshot():
                times = child.cpu_times()
                cpu_s += times.user + times.system
                rss += child.memory_info().rss
            pids.add(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return TreeUsage(cpu_s, rss, frozenset(pids))


@dataclass(frozen=True)
class Snapshot:
    """Everything read at one window edge."""

    t_s: float  # time.perf_counter()
    machine: MachineTimes
    tree: TreeUsage
    used_memory_bytes: int


class ProcReader:
    """Reads snapshots of the machine and the cell's tree. Tests point `stat_path` and
    `meminfo_path` at fake files; `pid` is the tree's root (default: this process)."""

    def __init__(self, stat_path: Path = PROC_STAT, meminfo_path: Path = PROC_MEMINFO,
                 pid: int | None = None) -> None:
        self.stat_path, self.meminfo_path, self.pid = Path(stat_path), Path(meminfo_path), pid

    def machine(self) -> MachineTimes:
        return read_machine_times(self.stat_path)

    def snapshot(self) -> Snapshot:
        return Snapshot(time.perf_counter(), self.machine(), tree_usage(self.pid),
                        read_used_memory_bytes(self.meminfo_path))

    def runnable(self) -> int:
        return self.machine().runnable


# ---------------------------------------------------------------------------- one window

def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


@dataclass(frozen=True)
class WindowShare:
    """One row of the per-window attribution table (a record's `windows`)."""

    window: str  # "train-1", "idle", ...
    phase: str
    epoch: int | None
    duration_s: float
    cores: int
    capacity_cpu_s: float  # cores x duration
    cell_cpu_s: float  # the cell's process tree
    machine_busy_cpu_s: float  # every process on the machine, the cell's included
    steal_cpu_s: float  # the hypervisor gave our cores to someone else
    cpu_attribution_share: float  # cell / machine busy in [0, 1]: the process rows' factor
    others_cpu_share: float  # (machine busy - cell) / capacity
    steal_share: float  # steal / capacity
    runnable_per_core: float  # mean runnable threads (less the reader) / cores
    runnable_samples: int
    cell_rss_bytes: int  # mean of the edges
    machine_used_memory_bytes: int  # mean of the edges
    ram_attribution_share: float  # cell RSS / used memory in [0, 1]
    flag: str = ""
    gpu_sharer_pids: tuple[int, ...] = ()  # other processes NVML saw computing on the cell's GPU

    def to_dict(self) -> dict:
        return asdict(self)


def window_share(begin: Snapshot, end: Snapshot, runnable: Iterable[int] = (), *,
                 window: str = "", phase: str = "", epoch: int | None = None,
                 duration_s: float | None = None, gpu_sharer_pids=()) -> WindowShare:
    """The attribution arithmetic of one window, from its edge snapshots and the runnable-thread
    counts sampled inside it (the edges' own counts are added here)."""
    duration = end.t_s - begin.t_s if duration_s is None else duration_s
    cores = end.machine.cores
    capacity = cores * max(duration, 0.0)
    cell = max(0.0, end.tree.cpu_s - begin.tree.cpu_s)
    busy = max(0.0, end.machine.busy_s - begin.machine.busy_s)
    steal = max(0.0, end.machine.steal_s - begin.machine.steal_s)
    flags = []
    if busy < TICK_S:
        share = 1.0
        flags.append(f"machine busy CPU time {busy:.3f} s is below one clock tick "
                     f"({TICK_S:g} s): the whole machine figure is charged to the cell")
    else:
        share = _clamp(cell / busy)
        if busy < FEW_TICKS_S:
            flags.append(f"machine busy CPU time {busy:.2f} s is under {FEW_TICKS_S:g} s "
                         "(a few clock ticks): the cell's share is coarse")
    counts = [begin.machine.runnable, *runnable, end.machine.runnable]
    runnable_mean = sum(max(0, n - 1) for n in counts) / len(counts)  # less the reading thread
    rss = (begin.tree.rss_bytes + end.tree.rss_bytes) // 2
    used = (begin.used_memory_bytes + end.used_memory_bytes) // 2
    ram_share = _clamp(rss / used) if used > 0 else 1.0
    if used <= 0:
        flags.append("machine used memory unknown: the whole RAM figure is charged to the cell")
    return WindowShare(
        window=window, phase=str(phase), epoch=epoch, duration_s=duration, cores=cores,
        capacity_cpu_s=capacity, cell_cpu_s=cell, machine_busy_cpu_s=busy, steal_cpu_s=steal,
        cpu_attribution_share=share,
        others_cpu_share=_clamp((busy - cell) / capacity) if capacity > 0 else 0.0,
        steal_share=_clamp(steal / capacity) if capacity > 0 else 0.0,
        runnable_per_core=runnable_mean / cores, runnable_samples=len(counts),
        cell_rss_bytes=rss, machine_used_memory_bytes=used, ram_attribution_share=ram_share,
        flag="; ".join(flags), gpu_sharer_pids=tuple(sorted(set(gpu_sharer_pids))))


class Attribution:
    """Snapshots at every window edge (`begin`/`end`, beside the meters') and runnable-thread
    samples from the power timeline (`sample`, one read of /proc/stat)."""

    def __init__(self, reader: ProcReader | None = None) -> None:
        self.reader = reader or ProcReader()
        self._open: dict[str, tuple[Snapshot, list[int]]] = {}
        self._lock = threading.Lock()
        self.windows: list[dict] = []

    def begin(self, name: str) -> None:
        snapshot = self.reader.snapshot()
        with self._lock:
            self._open[name] = (snapshot, [])

    def end(self, name: str, *, phase: str, epoch: int | None, duration_s: float,
            gpu_sharer_pids=()) -> WindowShare:
        snapshot = self.reader.snapshot()
        with self._lock:
            begin, samples = self._open.pop(name)
        share = window_share(begin, snapshot, samples, window=name, phase=phase, epoch=epoch,
                             duration_s=duration_s, gpu_sharer_pids=gpu_sharer_pids)
        self.windows.append(share.to_dict())
        return share

    def cancel(self, name: str) -> None:
        with self._lock:
            self._open.pop(name, None)

    def sample(self) -> None:
        """Add the runnable threads now to every open window (called by the timeline thread)."""
        if not self._open:
            return
        runnable = self.reader.runnable()
        with self._lock:
            for _, samples in self._open.values():
                samples.append(runnable)


# ---------------------------------------------------------------------------------- per run

@dataclass(frozen=True)
class Contention:
    """Interference over a run's training windows, time-weighted."""

    others_cpu_share: float
    steal_share: float
    runnable_per_core: float
    contention_threshold: float
    contended: bool
    gpu_shared: bool = False  # another process computed on the cell's GPU while it trained

    def to_summary(self) -> dict:
        return asdict(self)


def run_contention(windows: list[dict], threshold: float, phase: str = "train") -> Contention:
    """Others' share + steal share over the `phase` windows, each window weighted by its
    capacity (cores x seconds): the share of the run's CPU capacity others took. `contended`
    when that exceeds `threshold`, or when NVML saw another process computing on the cell's
    GPU during any of those windows (`gpu_shared`): a GPU counter measures the whole device, so
    no share of it can be told apart.

    Time-weighted, not the worst window: the energy a neighbour adds to the run's figure is in
    proportion to the capacity it took over the whole run, and a single short window (a tenth
    of a second of a cron job) would flag a run whose figure it barely moved. The worst window
    stays in the `windows` table for anyone who wants it. No training window: nothing is
    known, so NaN shares and not contended."""
    gpu_shared = any(w.get("gpu_sharer_pids") for w in windows if w.get("phase") == phase)
    chosen = [w for w in windows if w.get("phase") == phase and (w.get("capacity_cpu_s") or 0) > 0]
    capacity = sum(w["capacity_cpu_s"] for w in chosen)
    if not capacity:
        nan = float("nan")
        return Contention(nan, nan, nan, threshold, gpu_shared, gpu_shared)
    others = sum(w["others_cpu_share"] * w["capacity_cpu_s"] for w in chosen) / capacity
    steal = sum(w["steal_share"] * w["capacity_cpu_s"] for w in chosen) / capacity
    runnable = sum(w["runnable_per_core"] * w["capacity_cpu_s"] for w in chosen) / capacity
    return Contention(others, steal, runnable, threshold, others + steal > threshold or gpu_shared,
                      gpu_shared)


# ------------------------------------------------------------------------ before a cell runs

@dataclass(frozen=True)
class MachineLoad:
    """What other processes did with the machine over a short look."""

    others_cpu_share: float  # 0..1 of the machine's capacity (cores x seconds)
    steal_share: float
    runnable_per_core: float  # runnable threads (less the reader) per core, mean of samples
    cores: int
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (name, pid, % of a core)
    seconds: float = 0.0

    def busy(self, threshold: float) -> bool:
        """Others + steal above `threshold` (the same rule as a run's `contended`)."""
        return self.others_cpu_share + self.steal_share > threshold

    def describe(self) -> str:
        line = (f"other processes use {100 * self.others_cpu_share:.0f} % of the machine's CPU "
                f"(steal {100 * self.steal_share:.0f} %)")
        if self.top:
            line += "; busiest: " + ", ".join(f"{name} (pid {pid}) {pct:.0f} % of a core"
                                              for name, pid, pct in self.top)
        return line


def _descendants(pids: Iterable[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            process = psutil.Process(pid)
            found.add(pid)
            found.update(child.pid for child in process.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _process_cpu() -> dict[int, tuple[str, float]]:
    out = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info.get("cpu_times")
        if times is not None:
            out[process.pid] = (process.info.get("name") or "?", times.user + times.system)
    return out


class LoadWatch:
    """Other processes' use of the machine from `LoadWatch()` to `.stop()`: a look around some
    work of this process (the machine-state probe), or around a sleep (`machine_load`)."""

    def __init__(self, exclude_pids: set[int] | None = None, *, stat_path: Path = PROC_STAT) -> None:
        self.roots = set(exclude_pids) if exclude_pids is not None else {os.getpid()}
        self.stat_path = stat_path
        self.before_excluded = _descendants(self.roots)
        self.start_machine, self.start_procs = read_machine_times(stat_path), _process_cpu()
        self.started = time.perf_counter()
        self.runnable_counts = [self.start_machine.runnable]

    def sample(self) -> None:
        """Count runnable threads now (their mean over the samples is `runnable_per_core`)."""
        self.runnable_counts.append(read_machine_times(self.stat_path).runnable)

    def stop(self) -> MachineLoad:
        end_machine, end_procs = read_machine_times(self.stat_path), _process_cpu()
        elapsed = time.perf_counter() - self.started
        excluded = self.before_excluded | _descendants(self.roots)
        per_process = []
        excluded_cpu = 0.0
        for pid, (name, cpu_s) in end_procs.items():
            if pid not in self.start_procs:
                continue
            delta = max(0.0, cpu_s - self.start_procs[pid][1])
            if pid in excluded:
                excluded_cpu += delta
            else:
                per_process.append((name, pid, delta))
        cores = end_machine.cores
        capacity = cores * elapsed
        busy = max(0.0, end_machine.busy_s - self.start_machine.busy_s)
        steal = max(0.0, end_machine.steal_s - self.start_machine.steal_s)
        per_process.sort(key=lambda item: -item[2])
        top = [(name, pid, 100 * delta / elapsed) for name, pid, delta in per_process[:3] if delta > 0]
        counts = self.runnable_counts + [end_machine.runnable]
        return MachineLoad(
            others_cpu_share=_clamp((busy - excluded_cpu) / capacity) if capacity > 0 else 0.0,
            steal_share=_clamp(steal / capacity) if capacity > 0 else 0.0,
            runnable_per_core=sum(max(0, n - 1) for n in counts) / len(counts) / cores,
            cores=cores, top=top, seconds=elapsed)


def machine_load(seconds: float = 1.0, exclude_pids: set[int] | None = None, *,
                 stat_path: Path = PROC_STAT, samples: int = 10) -> MachineLoad:
    """Other processes' share of the machine over `seconds`, excluding `exclude_pids` and their
    descendants (default: this process and its children -- the runner itself), the steal share,
    runnable threads per core (sampled `samples` times), and the three busiest other processes.
    Others' CPU is the machine's busy time less the excluded trees', so work of processes that
    started and ended inside the look is counted too (the `top` list only names processes
    alive at both ends)."""
    watch = LoadWatch(exclude_pids, stat_path=stat_path)
    for _ in range(max(1, samples)):
        time.sleep(max(seconds, 0.0) / max(1, samples))
        watch.sample()
    return watch.stop()
