"""Whose share of the machine a window was (energy.attribution): the arithmetic on fake /proc
files and hand-made snapshots, the real /proc and psutil path on this machine, machine_load
beside a real busy process, and a tiny training run beside one (it must say `contended` and
bill the cell less than the machine)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from conftest import needs_fashion_mnist
from energy_lib.energy import attribution
from energy_lib.energy.attribution import (TICK_S, MachineLoad, MachineTimes, ProcReader,
                                           Snapshot, TreeUsage, machine_load,
                                           read_machine_times, read_used_memory_bytes,
                                           run_contention, tree_usage, window_share)

HZ = round(1 / TICK_S)


def write_stat(path, user, nice, system, idle, iowait=0, irq=0, softirq=0, steal=0, guest=0,
               cores=2, running=1):
    """A /proc/stat in ticks (guest is inside user, as the kernel reports it)."""
    line = f"{user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} {guest} 0"
    per_cpu = "".join(f"cpu{i} {line}\n" for i in range(cores))
    path.write_text(f"cpu  {line}\n{per_cpu}intr 1\nctxt 2\nbtime 3\nprocesses 4\n"
                    f"procs_running {running}\nprocs_blocked 0\n")


def snap(t_s, busy_s, cell_s, steal_s=0.0, cores=2, runnable=1, rss=100, used=1000) -> Snapshot:
    machine = MachineTimes(busy_s, steal_s, 0.0, cores, runnable)
    return Snapshot(t_s, machine, TreeUsage(cell_s, rss, frozenset({1})), used)


# ------------------------------------------------------------------------------ the readers

def test_read_machine_times_busy_steal_cores_runnable(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, user=300, nice=10, system=50, idle=900, iowait=40, irq=5, softirq=5,
               steal=70, guest=200, cores=4, running=3)
    times = read_machine_times(stat)
    assert times.busy_s == pytest.approx(370 / HZ)  # guest already inside user: not added
    assert times.steal_s == pytest.approx(70 / HZ)  # apart, not busy
    assert times.total_s == pytest.approx((370 + 900 + 40 + 70) / HZ)
    assert (times.cores, times.runnable) == (4, 3)


def test_read_used_memory(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:         1000000 kB\n"
                       "MemAvailable:    12000000 kB\nCached:          9000000 kB\n")
    assert read_used_memory_bytes(meminfo) == 4_000_000 * 1024  # cache that can go is not used


def test_reader_on_fake_files_keeps_the_real_tree(tmp_path):
    stat, meminfo = tmp_path / "stat", tmp_path / "meminfo"
    write_stat(stat, 100, 0, 0, 100, running=5)
    meminfo.write_text("MemTotal: 2000 kB\nMemAvailable: 1000 kB\n")
    snapshot = ProcReader(stat, meminfo).snapshot()
    assert snapshot.machine.runnable == 5 and snapshot.used_memory_bytes == 1000 * 1024
    assert os.getpid() in snapshot.tree.pids and snapshot.tree.rss_bytes > 0


# --------------------------------------------------------------------------- the arithmetic

def test_window_share_splits_the_machine_between_cell_others_and_steal():
    begin = snap(0.0, busy_s=10.0, cell_s=5.0, steal_s=1.0, runnable=3, rss=200, used=1000)
    end = snap(2.0, busy_s=13.0, cell_s=6.5, steal_s=1.4, runnable=5, rss=400, used=1000)
    share = window_share(begin, end, [4, 2], window="train-1", phase="train", epoch=1)
    assert share.capacity_cpu_s == pytest.approx(4.0)  # 2 cores x 2 s
    assert (share.cell_cpu_s, share.machine_busy_cpu_s) == (pytest.approx(1.5), pytest.approx(3.0))
    assert share.cpu_attribution_share == pytest.approx(0.5)  # the cell did half the busy time
    assert share.others_cpu_share == pytest.approx((3.0 - 1.5) / 4.0)
    assert share.steal_share == pytest.approx(0.4 / 4.0)
    assert share.runnable_per_core == pytest.approx((2 + 3 + 1 + 4) / 4 / 2)  # less the reader
    assert share.runnable_samples == 4
    assert share.ram_attribution_share == pytest.approx(300 / 1000)  # mean RSS / mean used
    assert share.flag == "" and share.to_dict()["window"] == "train-1"


def test_window_share_clamps_and_says_when_the_machine_was_idle():
    more_than_busy = window_share(snap(0, 0.0, 0.0), snap(1, 1.0, 1.2))  # tick rounding
    assert more_than_busy.cpu_attribution_share == 1.0 and more_than_busy.others_cpu_share == 0.0
    idle = window_share(snap(0, 5.0, 1.0), snap(1, 5.0, 1.0))
    assert idle.cpu_attribution_share == 1.0 and "below one clock tick" in idle.flag
    coarse = window_share(snap(0, 5.0, 1.0), snap(0.05, 5.0 + 2 * TICK_S, 1.0 + TICK_S))
    assert coarse.cpu_attribution_share == pytest.approx(0.5) and "coarse" in coarse.flag
    no_memory = window_share(snap(0, 0, 0, used=0), snap(1, 1, 1, used=0))
    assert no_memory.ram_attribution_share == 1.0 and "used memory unknown" in no_memory.flag


def test_run_contention_is_time_weighted_over_training_windows():
    windows = [
        {"phase": "train", "capacity_cpu_s": 8.0, "others_cpu_share": 0.1, "steal_share": 0.0,
         "runnable_per_core": 1.0},
        {"phase": "train", "capacity_cpu_s": 2.0, "others_cpu_share": 0.9, "steal_share": 0.1,
         "runnable_per_core": 2.0},
        {"phase": "eval", "capacity_cpu_s": 50.0, "others_cpu_share": 1.0, "steal_share": 0.0,
         "runnable_per_core": 9.0},  # not a training window: not judged
    ]
    run = run_contention(windows, 0.25)
    assert run.others_cpu_share == pytest.approx((0.8 + 1.8) / 10)
    assert run.steal_share == pytest.approx(0.02)
    assert run.runnable_per_core == pytest.approx(1.2)
    assert run.contended  # 0.26 + 0.02 > 0.25, though the longer window alone was quiet
    assert not run_contention(windows, 0.3).contended
    assert set(run.to_summary()) == {"contended", "others_cpu_share", "steal_share",
                                     "runnable_per_core", "contention_threshold", "gpu_shared"}
    assert not run.gpu_shared
    nothing = run_contention([], 0.25)
    assert not nothing.contended and math.isnan(nothing.others_cpu_share)


def test_machine_load_says_busy_and_describes_itself():
    load = MachineLoad(0.48, 0.02, 1.5, 2, [("python3", 123, 97.0), ("cron", 9, 3.4)], 1.0)
    assert load.busy(0.25) and not load.busy(0.5)
    assert load.describe() == ("other processes use 48 % of the machine's CPU (steal 2 %); "
                               "busiest: python3 (pid 123) 97 % of a core, cron (pid 9) 3 % of a core")


# ------------------------------------------------------------------- real processes, real /proc

@pytest.fixture
def neighbour():
    """One process spinning on a core, not a descendant of this one."""
    from benchmarks.suite import busy_neighbour

    with busy_neighbour() as pids:
        yield pids[0]


def test_the_tree_counts_a_child_and_not_a_neighbour(neighbour):
    before = tree_usage()
    assert neighbour not in before.pids
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.4: pass\ntime.sleep(5)"])
    try:
        import psutil

        deadline = time.perf_counter() + 20  # a busy machine gives the child its CPU slowly
        while time.perf_counter() < deadline:
            spent = psutil.Process(child.pid).cpu_times()
            if spent.user + spent.system >= 0.4:
                break
            time.sleep(0.05)
        during = tree_usage()
        assert child.pid in during.pids and neighbour not in during.pids
        assert during.cpu_s - before.cpu_s >= 0.35  # the child's spin is the cell's
    finally:
        child.kill()
        child.wait()


def test_machine_load_sees_the_neighbour_and_leaves_out_excluded_pids(neighbour):
    """Real /proc and psutil. Everything but the neighbour (and its ancestors, whose trees hold
    it) is excluded, so what this shared dev machine runs besides cannot crowd it out."""
    import psutil

    ancestors = {p.pid for p in psutil.Process(neighbour).parents()}
    everyone_else = {p for p in psutil.pids() if p != neighbour and p not in ancestors}
    load = machine_load(0.6, exclude_pids=everyone_else)
    assert load.cores == len([line for line in open("/proc/stat") if line[:3] == "cpu"
                              and line[3:4].isdigit()])
    named = [pid for _, pid, _ in load.top]
    assert named[0] == neighbour  # an ancestor (e.g. a CI runner as pid 1) may work a little too
    assert set(named) <= {neighbour} | ancestors
    spinning = load.top[0][2]
    assert spinning > 10  # % of one core: all of one when the machine is quiet
    assert load.others_cpu_share > 0
    assert f"(pid {neighbour})" in load.describe()
    without = machine_load(0.3, exclude_pids=everyone_else | {neighbour})
    assert neighbour not in [pid for _, pid, _ in without.top]
    default = machine_load(0.3)  # excludes this process (the runner) and its children
    assert os.getpid() not in [pid for _, pid, _ in default.top]


def test_the_runners_look_spans_its_own_checks_and_leaves_them_out(neighbour):
    """The runner's look at the machine (study.runner.start_look / end_look) spans the runner's
    own work before the first cell (its checks): the work costs no extra second, is not counted
    as another process's, and the neighbour still is."""
    from energy_lib.study.runner import end_look, start_look

    started = time.perf_counter()
    look = start_look()
    spin_until = time.perf_counter() + 0.8  # this process busy, as while importing torch
    while time.perf_counter() < spin_until:
        pass
    load = end_look(look, seconds=1.0)
    assert 1.0 <= time.perf_counter() - started < 1.6  # a second in all, not 1 s + 0.8 s
    assert os.getpid() not in [pid for _, pid, _ in load.top]
    assert neighbour in [pid for _, pid, _ in load.top]


def test_machine_load_subtracts_the_excluded_trees(tmp_path, monkeypatch):
    """The arithmetic of machine_load on a fake /proc/stat and fake process times: others are
    the machine's busy time less the excluded trees' (a runner and its children)."""
    stat = tmp_path / "stat"
    write_stat(stat, 0, 0, 0, 0, cores=2, running=2)
    cpu = iter([{10: ("runner", 1.0), 11: ("worker", 0.0), 20: ("spin", 5.0), 30: ("cron", 0.0)},
                {10: ("runner", 1.2), 11: ("worker", 0.3), 20: ("spin", 5.0 + 0.9),
                 30: ("cron", 0.1)}])
    clock = iter([100.0, 101.0])

    def fake_process_cpu():
        times = next(cpu)
        write_stat(stat, 150 * HZ // 100, 0, 0, 50, steal=HZ // 10, cores=2, running=4)
        return times

    monkeypatch.setattr(attribution, "_process_cpu", fake_process_cpu)
    monkeypatch.setattr(attribution, "_descendants", lambda roots: {10, 11} if 10 in roots else set(roots))
    monkeypatch.setattr(attribution.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(attribution.time, "sleep", lambda s: None)
    load = machine_load(1.0, exclude_pids={10}, stat_path=stat, samples=1)
    assert load.cores == 2 and load.seconds == pytest.approx(1.0)
    # busy 1.5 s, of which the runner's tree 0.5 s: others 1.0 s of 2 core-seconds
    assert load.others_cpu_share == pytest.approx(0.5)
    assert load.steal_share == pytest.approx(0.05)
    assert [(name, pid) for name, pid, _ in load.top] == [("spin", 20), ("cron", 30)]
    assert load.top[0][2] == pytest.approx(90.0)


# --------------------------------------------------------- a training run beside a neighbour

def _tiny_config():
    from energy_lib import RunConfig

    return RunConfig(dataset="fashion_mnist", train_subset=256, test_subset=128, epochs=1,
                     width=0.25, batch_size=64, device="cpu", idle_s=0, idle_after_s=0,
                     download=False)


def _cpu_j(result, scope):
    return sum(r["energy_j"] for r in result.energy
               if r["component"] == "cpu" and r["scope"] == scope and r["phase"] == "train")


@pytest.mark.slow
@needs_fashion_mnist
def test_a_run_beside_a_busy_process_is_contended_and_billed_its_share():
    from benchmarks.suite import busy_neighbour
    from energy_lib.training.train import train

    config = _tiny_config()
    train(config, progress=False)  # warm: imports and the data cache
    quiet = machine_load(0.5)
    alone = train(config, progress=False)
    # two spinners, one per core: with one, torch's OpenMP threads (which spin while they
    # wait) keep most of the CPU, and others' share sits near the 0.25 default threshold
    with busy_neighbour(2):
        beside = train(config, progress=False)
    summary = beside.summary
    assert summary["contended"] and summary["contention_threshold"] == 0.25
    assert summary["others_cpu_share"] > 0.25
    assert 0 < _cpu_j(beside, "process") < _cpu_j(beside, "machine")
    train_windows = [w for w in beside.windows if w["phase"] == "train"]
    assert train_windows and all(0 < w["cpu_attribution_share"] < 1 for w in train_windows)
    if alone.summary["contended"]:
        # a run this short can meet one burst from elsewhere (CI's fresh clone once flagged it,
        # the machine quiet before and after): look again, then run alone once more; a rule that
        # flags every run alone fails both times
        quiet = machine_load(0.5)
        alone = train(config, progress=False)
    if quiet.busy(0.1):
        pytest.skip(f"the machine was not quiet before the alone run ({quiet.describe()}): "
                    "cannot check that a run alone is not flagged")
    assert not alone.summary["contended"]
    assert summary["others_cpu_share"] > alone.summary["others_cpu_share"] + 0.2


# ------------------------------------------------- the metering context: process rows per window

class ScriptedReader(ProcReader):
    """Snapshots from a list (what /proc would have said at each window edge)."""

    def __init__(self, snapshots):
        super().__init__()
        self.snapshots = list(snapshots)

    def snapshot(self):
        return self.snapshots.pop(0)

    def runnable(self):
        return 1


def _metering(reader):
    """A metering context whose one meter reads the machine: 100 J CPU and 10 J RAM a window."""
    import torch

    from energy_lib.energy.metering import Metering
    from energy_lib.energy.meters import MeterSet
    from energy_lib.energy.monitor import Meter, Reading

    class Cpu(Meter):
        components, method, kind = ["cpu"], "tdp-model", "modelled"

        def end(self, name, duration_s):
            return [Reading("cpu", 100.0, "tdp-model", "modelled"),
                    Reading("ram", 10.0, "ram-model", "modelled")]

    return Metering(MeterSet(meters=[Cpu()]), torch.device("cpu"), sample_period_s=1,
                    attribution=attribution.Attribution(reader))


def test_metering_adds_the_cells_share_beside_each_machine_row():
    from energy_lib.energy.table import Phase

    reader = ScriptedReader([snap(0, busy_s=0, cell_s=0, rss=100, used=1000),
                             snap(1, busy_s=1.6, cell_s=0.4, rss=300, used=1000)])
    with _metering(reader) as metering:
        with metering.window(Phase.TRAIN, 1):
            pass
    rows = {(r["component"], r["scope"]): r for r in metering.rows}
    assert rows[("cpu", "machine")]["energy_j"] == 100.0
    assert rows[("cpu", "process")]["energy_j"] == pytest.approx(100.0 * 0.4 / 1.6)
    assert rows[("ram", "process")]["energy_j"] == pytest.approx(10.0 * 200 / 1000)
    (window,) = metering.windows
    assert window["window"] == "train-1" and window["others_cpu_share"] > 0
    assert "cell's CPU time" in metering.info()["attribution"]


def test_a_failed_attribution_read_leaves_machine_rows_and_says_why():
    from energy_lib.energy.table import Phase

    class Broken(ProcReader):
        def snapshot(self):
            raise FileNotFoundError("/proc/stat")

    with _metering(Broken()) as metering:
        with metering.window(Phase.TRAIN, 1):
            pass
    assert {r["scope"] for r in metering.rows} == {"machine"}
    assert metering.windows == []
    assert "could not be read (FileNotFoundError" in metering.info()["attribution"]


def test_another_process_on_the_gpu_makes_the_run_contended():
    """A GPU counter measures the whole device: a window NVML saw shared is not the cell's."""
    import torch

    from energy_lib.energy.metering import Metering
    from energy_lib.energy.meters import MeterSet
    from energy_lib.energy.monitor import Meter, Reading
    from energy_lib.energy.table import Phase

    class SharedGpu(Meter):
        components, method, kind = ["gpu"], "zeus-nvml", "measured"

        def end(self, name, duration_s):
            pids = (4242,) if name == "train-2" else ()
            return [Reading("gpu", 50.0, "zeus-nvml", "measured", sharer_pids=pids)]

    reader = ScriptedReader([snap(t, busy_s=t, cell_s=t) for t in range(4)])
    with Metering(MeterSet(meters=[SharedGpu()]), torch.device("cpu"), sample_period_s=1,
                  attribution=attribution.Attribution(reader)) as metering:
        for epoch in (1, 2):
            with metering.window(Phase.TRAIN, epoch):
                pass
    first, second = metering.windows
    assert first["gpu_sharer_pids"] == () and second["gpu_sharer_pids"] == (4242,)
    run = run_contention(metering.windows, 0.25)
    assert run.others_cpu_share == 0 and run.gpu_shared and run.contended
    assert not run_contention([first], 0.25).contended
