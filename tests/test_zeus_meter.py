"""The measured path through Zeus, with Zeus's own device abstraction replaced at its boundary:
fake GPUs (an NVML-like energy counter in mJ, power in mW) and fake RAPL CPUs (package and DRAM
counters in mJ) installed as Zeus's device singletons. Everything above them -- ZeusMonitor's
windows, our meter, meter selection, the metering context and the energy table -- is real."""

from __future__ import annotations

import pytest
import torch
import zeus.device.cpu as zeus_cpu
import zeus.device.gpu as zeus_gpu
from zeus.device.cpu.common import CpuDramMeasurement

from conftest import needs_fashion_mnist
from energy_lib import ConfigError, RunConfig
from energy_lib.energy import zeus_meter
from energy_lib.energy.derive import per_run
from energy_lib.energy.meters import build_meters, check_available
from energy_lib.energy.zeus_meter import ZeusMeter

CPU = torch.device("cpu")


class FakeGPUs:
    """Zeus's GPUs interface: counters the test advances by hand."""

    def __init__(self, count=1, counter=True):
        self.energy_mj = [1_000_000.0] * count
        self.power_mw = [50_000.0] * count
        self.counter = counter

    def __len__(self):
        return len(self.energy_mj)

    def supports_get_total_energy_consumption(self, index):
        return self.counter

    def get_total_energy_consumption(self, index):
        return self.energy_mj[index]

    def get_instant_power_usage(self, index):
        return self.power_mw[index]

    def get_name(self, index):
        return "Fake H100"


class FakeCPUs:
    """Zeus's CPUs interface: RAPL package (and DRAM) counters in mJ."""

    def __init__(self, packages=1, dram=True):
        self.cpu_mj = [500.0] * packages
        self.dram_mj = [100.0] * packages
        self.dram = dram

    def __len__(self):
        return len(self.cpu_mj)

    def get_total_energy_consumption(self, index):
        return CpuDramMeasurement(cpu_mj=self.cpu_mj[index],
                                  dram_mj=self.dram_mj[index] if self.dram else None)

    def supports_get_dram_energy_consumption(self, index):
        return self.dram


def frozen_counters(monkeypatch):
    """The fakes' counters move only when a test moves them: a meter gives up timing them
    (zeus_meter.COUNTER_PROBE_S) after 10 ms instead of 350."""
    monkeypatch.setattr(zeus_meter, "COUNTER_PROBE_S", 0.01)


@pytest.fixture
def gpus(monkeypatch, forked_poller):
    fake = FakeGPUs()
    monkeypatch.setattr(zeus_gpu, "_gpus", fake)
    frozen_counters(monkeypatch)
    return fake


@pytest.fixture
def cpus(monkeypatch):
    fake = FakeCPUs(packages=2)
    monkeypatch.setattr(zeus_cpu, "_cpus", fake)
    return fake


@pytest.fixture
def no_rapl(monkeypatch):
    """A machine where Zeus finds no RAPL (this VM, and CI's)."""
    monkeypatch.setattr(zeus_cpu, "_cpus", None)
    monkeypatch.setattr(zeus_cpu, "rapl_is_available", lambda: False)


def test_gpu_window_is_the_counter_difference(gpus, no_rapl):
    meter, notes = ZeusMeter.probe([0], measure_cpu=False)
    assert notes == [] and meter.components == ["gpu"]
    assert meter.methods() == {"gpu": ("zeus-nvml", "measured")}
    meter.begin("train-1")
    gpus.energy_mj[0] += 123_456.0  # 123.456 J
    (reading,) = meter.end("train-1", duration_s=2.0)
    assert (reading.component, reading.method, reading.kind) == ("gpu", "zeus-nvml", "measured")
    assert reading.energy_j == pytest.approx(123.456)
    assert reading.flag == ""
    assert "NVML total-energy counter on Fake H100" in meter.describe()


def test_short_gpu_window_is_flagged(gpus, no_rapl):
    meter, _ = ZeusMeter.probe([0], measure_cpu=False)
    meter.begin("eval-1")
    (reading,) = meter.end("eval-1", duration_s=0.03)
    assert reading.energy_j == 0.0
    assert "shorter than the GPU energy counter's update period (100 ms, assumed)" in reading.flag


def test_cpu_and_dram_from_rapl_summed_over_packages(cpus):
    meter, notes = ZeusMeter.probe([], measure_cpu=True)
    assert notes == [] and meter.components == ["cpu", "ram"]
    meter.begin("w")
    cpus.cpu_mj = [v + 10_000 for v in cpus.cpu_mj]  # 10 J per package
    cpus.dram_mj = [v + 2_000 for v in cpus.dram_mj]
    readings = {r.component: r for r in meter.end("w", 1.0)}
    assert readings["cpu"].energy_j == pytest.approx(20.0)
    assert readings["ram"].energy_j == pytest.approx(4.0)
    assert {(r.method, r.kind) for r in readings.values()} == {("zeus-rapl", "measured")}


def test_power_for_the_timeline(gpus, cpus):
    meter, _ = ZeusMeter.probe([0], measure_cpu=True)
    assert meter.power_w() == {}  # CPU power needs two counter reads; the GPU's is Zeus's series
    cpus.cpu_mj = [v + 1_000 for v in cpus.cpu_mj]
    second = meter.power_w()
    assert second.keys() == {"cpu", "ram"} and second["cpu"] > 0 and second["ram"] == 0
    assert meter.power_series() == {}  # no PowerMonitor before the timeline starts it


def test_auto_on_cpu_with_rapl_needs_no_model(cpus):
    chosen = build_meters(["auto"], CPU, assumed_power_w=70)
    assert chosen.methods() == {"cpu": {"method": "zeus-rapl", "kind": "measured"},
                                "ram": {"method": "zeus-rapl", "kind": "measured"},
                                "assumed-board": {"method": "constant-power", "kind": "modelled"}}
    assert chosen.notes == ["GPU energy not measured: this run uses the CPU"]


def test_rapl_without_dram_adds_the_ram_model(monkeypatch):
    monkeypatch.setattr(zeus_cpu, "_cpus", FakeCPUs(dram=False))
    chosen = build_meters(["auto"], CPU, assumed_power_w=70)
    methods = chosen.methods()
    assert methods["cpu"]["method"] == "zeus-rapl" and methods["ram"]["method"] == "ram-model"
    assert "RAM energy not measured: RAPL exposes no DRAM domain on this CPU" in chosen.notes


def test_without_rapl_the_models_stand_in_and_the_note_names_the_path(no_rapl, monkeypatch):
    monkeypatch.setattr(zeus_meter.os.path, "isdir", lambda path: False)
    chosen = build_meters(["auto"], CPU, assumed_power_w=70, cpu_tdp_w=100)
    assert {c: m["method"] for c, m in chosen.methods().items()} == {
        "cpu": "tdp-model", "ram": "ram-model", "assumed-board": "constant-power"}
    assert any(n.startswith("CPU energy not measured: /sys/class/powercap does not exist")
               for n in chosen.notes)


def test_unreadable_rapl_names_the_file_and_the_grant(monkeypatch):
    monkeypatch.setattr(zeus_meter.os.path, "isdir", lambda path: True)
    monkeypatch.setattr(zeus_meter.os.path, "exists", lambda path: True)
    monkeypatch.setattr(zeus_meter.os, "access", lambda path, mode: False)
    for name in zeus_meter.ZEUSD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    reason = zeus_meter.rapl_unreadable_reason()
    assert "/sys/class/powercap/intel-rapl:0/energy_uj is not readable" in reason
    assert "zeusd" in reason and "ZEUSD_SOCK_PATH" in reason  # the daemon first
    assert "undone at reboot" in reason and "CVE-2020-8694" in reason  # chmod, with its cost


def test_with_zeusd_configured_rapl_is_left_to_the_daemon(monkeypatch):
    """Zeus reads RAPL through zeusd where ZEUSD_SOCK_PATH (or ZEUSD_HOST_PORT) is set, also
    from a container without /sys/class/powercap: no reason to refuse it here."""
    monkeypatch.setattr(zeus_meter.os.path, "isdir", lambda path: False)
    monkeypatch.setenv("ZEUSD_SOCK_PATH", "/var/run/zeusd.sock")
    assert zeus_meter.zeusd_configured() == "ZEUSD_SOCK_PATH=/var/run/zeusd.sock"
    assert zeus_meter.rapl_unreadable_reason() == ""


def test_gpu_run_without_nvml_says_why(no_rapl, monkeypatch):
    monkeypatch.setattr(zeus_gpu, "_gpus", FakeGPUs(count=0))
    meter, notes = ZeusMeter.probe([0], measure_cpu=False)
    assert meter is None and notes[0].startswith("GPU energy not measured: Zeus sees no GPU")


def test_explicit_meters_that_cannot_work_are_refused(no_rapl):
    with pytest.raises(ConfigError, match="'nvml' but this run uses the CPU"):
        check_available(["nvml"], CPU)
    with pytest.raises(ConfigError, match="'rapl' but CPU energy not measured"):
        check_available(["rapl"], CPU)
    check_available(["auto"], CPU)  # auto falls back, never refuses
    config = RunConfig(meters="rapl", device="cpu")  # a valid config ...
    from energy_lib.training.device import resolve_runtime

    with pytest.raises(ConfigError, match="meters includes 'rapl'"):
        resolve_runtime(config)  # ... refused where it must run (before any cell starts)


def test_explicit_rapl_accepted_where_it_works(cpus):
    check_available(["rapl"], CPU)


@pytest.mark.slow
@needs_fashion_mnist
def test_training_run_measured_through_zeus(cpus, monkeypatch):
    """A real tiny training run on the CPU whose CPU/DRAM counters are the fake ones: every
    train/eval row is a Zeus RAPL reading and the headline says measured."""
    from energy_lib.training.train import train

    def tick(*_):
        cpus.cpu_mj = [v + 5_000 for v in cpus.cpu_mj]  # 10 J per counter read over 2 packages
        cpus.dram_mj = [v + 500 for v in cpus.dram_mj]

    real_read = FakeCPUs.get_total_energy_consumption

    def advancing(self, index):
        if index == 0:
            tick()
        return real_read(self, index)

    monkeypatch.setattr(FakeCPUs, "get_total_energy_consumption", advancing)
    config = RunConfig(dataset="fashion_mnist", train_subset=256, test_subset=128, epochs=2,
                       width=0.25, batch_size=64, idle_s=0.2, download=False, device="cpu")
    result = train(config, progress=False)
    work = [r for r in result.energy if r["phase"] in ("train", "eval") and r["component"] != "assumed-board"]
    assert {(r["component"], r["method"], r["kind"]) for r in work} == {
        ("cpu", "zeus-rapl", "measured"), ("ram", "zeus-rapl", "measured")}
    # each counter read adds 10 J (cpu) and 1 J (dram); the timeline's reads land inside windows
    cpu = [r["energy_j"] for r in work if r["component"] == "cpu" and r["scope"] == "machine"]
    ram = [r["energy_j"] for r in work if r["component"] == "ram" and r["scope"] == "machine"]
    assert len(cpu) == 4 and all(j >= 10.0 and j % 10.0 == pytest.approx(0.0, abs=1e-6) for j in cpu)
    assert ram == pytest.approx([j / 10 for j in cpu])
    # RAPL sees the package: beside each figure, the cell's share of it (CPU time, RSS)
    shares = {(w["window"]): w for w in result.windows}
    for r in work:
        if r["scope"] == "process":
            name = f"{r['phase']}-{r['epoch']}"
            machine = next(m["energy_j"] for m in work if m["scope"] == "machine" and
                           (m["phase"], m["epoch"], m["component"]) == (r["phase"], r["epoch"], r["component"]))
            factor = shares[name]["cpu_attribution_share" if r["component"] == "cpu"
                                  else "ram_attribution_share"]
            assert r["energy_j"] == pytest.approx(machine * factor)
    totals = per_run(result.energy).iloc[0]
    assert totals["energy_kind"] == "measured" and totals["energy_scope"] == "process"
    assert totals["machine_energy_j"] == pytest.approx(sum(cpu) + sum(ram))
    assert totals["energy_j"] <= totals["machine_energy_j"]


# ------------------------------------------------------------------------------------------
# Other processes on the cell's GPU (NVML's compute-process list, faked at pynvml)
# ------------------------------------------------------------------------------------------

class FakeNVMLGPUs(FakeGPUs):
    """FakeGPUs whose devices carry NVML handles, as Zeus's NVIDIAGPUs do."""

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.gpus = [SimpleNamespace(handle="handle-0")]


@pytest.fixture
def nvml_processes(monkeypatch):
    """The pids pynvml lists on the GPU: a list the test edits."""
    import os
    from types import SimpleNamespace

    import pynvml

    listed = [os.getpid()]
    monkeypatch.setattr(zeus_gpu, "_gpus", FakeNVMLGPUs())
    frozen_counters(monkeypatch)

    def running(handle):
        assert handle == "handle-0"
        return [SimpleNamespace(pid=pid, usedGpuMemory=0) for pid in listed]

    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", running)
    return listed


def test_gpu_row_is_the_cells_and_flagged_when_others_compute_on_it(nvml_processes, no_rapl):
    meter, _ = ZeusMeter.probe([0], measure_cpu=False)
    meter.begin("train-1")
    (alone,) = meter.end("train-1", duration_s=1.0)
    assert alone.flag == ""  # only this process on the GPU
    meter.begin("train-2")
    nvml_processes.append(424242)  # another process starts computing mid-window
    meter.power_w()  # the timeline's sample sees it
    nvml_processes.remove(424242)  # and it is gone by the window's end
    (shared,) = meter.end("train-2", duration_s=1.0)
    assert "other processes computed on this GPU" in shared.flag and "424242" in shared.flag
    assert shared.sharer_pids == (424242,) and alone.sharer_pids == ()
    meter.begin("train-3")
    (after,) = meter.end("train-3", duration_s=1.0)
    assert after.flag == "" and after.sharer_pids == ()


def test_gpu_processes_in_another_pid_namespace(nvml_processes, no_rapl):
    from energy_lib.energy.zeus_meter import other_gpu_processes

    nvml_processes[:] = [777]  # a container: NVML reports the host's pid of this cell
    meter, _ = ZeusMeter.probe([0], measure_cpu=False)
    meter.begin("w")
    assert meter.end("w", 1.0)[0].flag == ""  # one process: taken to be this cell
    nvml_processes[:] = [777, 778]
    meter.begin("w")
    (reading,) = meter.end("w", 1.0)
    assert "NVML listed 2 processes" in reading.flag and "another pid namespace" in reading.flag
    assert reading.sharer_pids == ()  # cannot be told from this cell: flagged, not contended
    assert other_gpu_processes(None) == (set(), False)


def test_gpu_rows_have_process_scope_in_the_energy_table(gpus, no_rapl):
    from energy_lib.energy.metering import Metering
    from energy_lib.energy.table import Phase

    meter_set = build_meters(["nvml"], torch.device("cuda:0"), assumed_power_w=70.0)
    with Metering(meter_set, CPU) as metering:
        with metering.window(Phase.TRAIN, 1):
            gpus.energy_mj[0] += 5000.0
    scopes = {(r["component"], r["scope"]) for r in metering.rows}
    assert scopes == {("gpu", "process"), ("assumed-board", "process")}


def test_a_cancelled_window_is_cancelled_in_zeus(nvml_processes, no_rapl):
    """A window whose block raised ends with Zeus's cancel=True: no counters read, nothing kept,
    and the name can open again."""
    from energy_lib.energy.monitor import EnergyMonitor

    meter, _ = ZeusMeter.probe([0], measure_cpu=False)
    calls = []
    original = meter.monitor.end_window
    meter.monitor.end_window = lambda name, **kw: calls.append(kw) or original(name, **kw)
    monitor = EnergyMonitor([meter], CPU)
    monitor.begin_window("train-1")
    monitor.cancel_window("train-1")
    assert calls == [{"sync_execution": False, "cancel": True}]
    assert "train-1" not in meter._gpu_others and "train-1" not in meter.monitor.measurement_states
    monitor.begin_window("train-1")
    assert monitor.end_window("train-1").readings[0].component == "gpu"


def test_the_power_pollers_process_does_not_run_the_users_script_again(tmp_path):
    """Zeus starts its poller with multiprocessing's spawn, which runs the parent's __main__
    again first: a training script without a main guard would train twice. While the poller
    starts (zeus_meter.main_module_hidden), it does not; without it, it would (the control)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "train.py"
    log = tmp_path / "runs.txt"
    script.write_text(textwrap.dedent(f"""\
        import multiprocessing, time
        LOG = {str(log)!r}
        open(LOG, "a").write("script\\n")  # unguarded: runs again in a child that re-runs main
        if __name__ == "__main__":
            from energy_lib.energy.zeus_meter import main_module_hidden
            context = multiprocessing.get_context("spawn")
            for hidden in (True, False):
                open(LOG, "a").write(f"hidden={{hidden}}\\n")
                with (main_module_hidden() if hidden else open(__file__)):
                    process = context.Process(target=time.sleep, args=(0,))
                    process.start()
                process.join()
                assert process.exitcode == 0
                assert __file__ and __spec__ is None  # put back as they were
        """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # the script once; no rerun in the hidden child; one in the plain child
    assert log.read_text().split() == ["script", "hidden=True", "hidden=False", "script"]
