"""Hardware this machine lacks, faked at the layer Zeus itself calls: Apple silicon
(the `zeus_apple_silicon` library's AppleEnergyMonitor), a Jetson (the helper process that
integrates its INA3221 rails), AMD GPUs (the `amdsmi` library), NVIDIA GPUs (`pynvml`), Apple's
MPS (torch.backends.mps). Above that layer everything is real: Zeus's device classes (AMDGPUs'
energy-counter check, AppleSilicon, Jetson's windows, NVIDIAGPUs), ZeusMonitor and its
PowerMonitor, our meter, meter selection, the metering context, the timeline and the energy
table. Also: a run builds exactly one ZeusMonitor."""

from __future__ import annotations

import copy
import gc
import re
import time
from types import SimpleNamespace

import pytest
import torch
import zeus.device.cpu as zeus_cpu
import zeus.device.gpu as zeus_gpu
import zeus.device.gpu.amd as zeus_amd
import zeus.device.soc as zeus_soc
import zeus.device.soc.apple as zeus_apple
import zeus.monitor
import zeus.monitor.power as zeus_power
from zeus.device.cpu.common import CpuDramMeasurement
from zeus.device.soc.jetson import Jetson, JetsonMeasurement

from conftest import needs_fashion_mnist
from energy_lib import ConfigError, RunConfig
from energy_lib.energy.derive import per_run
from energy_lib.energy.metering import Metering
from energy_lib.energy.meters import build_meters, check_available
from energy_lib.energy.table import Phase
from energy_lib.energy.timeline import PowerTimeline
from energy_lib.energy.zeus_meter import AVERAGE_POWER_NOTE, ZeusMeter

CPU = torch.device("cpu")


@pytest.fixture
def no_rapl(monkeypatch):
    """No RAPL (true of this VM; said outright so that no test depends on it)."""
    monkeypatch.setattr(zeus_cpu, "_cpus", None)
    monkeypatch.setattr(zeus_cpu, "rapl_is_available", lambda: False)


@pytest.fixture
def no_gpus(monkeypatch):
    """Neither NVML nor amdsmi answers (true of this VM)."""
    monkeypatch.setattr(zeus_gpu, "_gpus", None)
    monkeypatch.setattr(zeus_gpu, "nvml_is_available", lambda: False)
    monkeypatch.setattr(zeus_gpu, "amdsmi_is_available", lambda: False)


class FakeCPUs:
    """Zeus's CPUs interface: RAPL package and DRAM counters in mJ (as test_zeus_meter)."""

    def __init__(self):
        self.cpu_mj, self.dram_mj, self.fail = [500.0], [100.0], False

    def __len__(self):
        return len(self.cpu_mj)

    def get_total_energy_consumption(self, index):
        if self.fail:
            raise OSError("RAPL: energy_uj vanished")
        return CpuDramMeasurement(cpu_mj=self.cpu_mj[index], dram_mj=self.dram_mj[index])

    def supports_get_dram_energy_consumption(self, index):
        return True


# ------------------------------------------------------------------------------------------
# Apple silicon: zeus_apple_silicon's AppleEnergyMonitor over counters the test advances
# ------------------------------------------------------------------------------------------

APPLE_FIELDS = ("cpu_total_mj", "efficiency_cores_mj", "performance_cores_mj",
                "efficiency_cluster_mj", "performance_cluster_mj", "efficiency_core_manager_mj",
                "performance_core_manager_mj", "dram_mj", "gpu_mj", "gpu_sram_mj", "ane_mj")


class AppleChip:
    """The zeus-apple-silicon library: cumulative IOReport energy per channel in mJ (ints; core
    lists are parts of cpu_total), windows returning the difference."""

    def __init__(self):
        self.mj = {"cpu_total_mj": 10_000, "efficiency_cores_mj": [1_000, 1_000],
                   "performance_cores_mj": [4_000, 4_000], "dram_mj": 2_000, "gpu_mj": 5_000,
                   "gpu_sram_mj": 300, "ane_mj": 0}
        self.windows: dict[str, dict] = {}

    def add(self, **mj):
        for field, value in mj.items():
            old = self.mj[field]
            self.mj[field] = [a + value for a in old] if isinstance(old, list) else old + value

    def AppleEnergyMonitor(self):  # the library's class, called by its name
        return self

    def _metrics(self, values):
        return SimpleNamespace(**{f: copy.copy(values.get(f)) for f in APPLE_FIELDS})

    def get_cumulative_energy(self):
        return self._metrics(self.mj)

    def begin_window(self, key, restart=False):
        if key in self.windows and not restart:
            raise RuntimeError("Measurement with specified key already exists.")
        self.windows[key] = copy.deepcopy(self.mj)

    def end_window(self, key):
        start = self.windows.pop(key)
        delta = {f: ([a - b for a, b in zip(v, start[f])] if isinstance(v, list) else v - start[f])
                 for f, v in self.mj.items()}
        return self._metrics(delta)


@pytest.fixture
def apple(monkeypatch, no_rapl, no_gpus):
    chip = AppleChip()
    monkeypatch.setattr(zeus_apple, "zeus_apple_silicon", chip)
    monkeypatch.setattr(zeus_soc, "_soc", zeus_apple.AppleSilicon())  # Zeus's own class
    return chip


def test_apple_soc_window_is_one_row_in_joules(apple):
    meter, notes = ZeusMeter.probe([], measure_cpu=True, measure_soc=True)
    assert notes == [] and meter.components == ["soc"]
    assert meter.methods() == {"soc": ("zeus-apple-silicon", "measured")}
    assert meter.covered == {"soc", "cpu", "gpu", "ram"}
    meter.begin("train-1")
    # 1.5 J CPU (its cores are parts of it), 2.5 J GPU, 0.1 J GPU SRAM, 0.4 J DRAM, 0.2 J ANE
    apple.add(cpu_total_mj=1_500, efficiency_cores_mj=250, performance_cores_mj=500,
              gpu_mj=2_500, gpu_sram_mj=100, dram_mj=400, ane_mj=200)
    (reading,) = meter.end("train-1", duration_s=1.0)
    assert (reading.component, reading.method, reading.kind) == ("soc", "zeus-apple-silicon", "measured")
    assert reading.energy_j == pytest.approx(4.7)  # mJ -> J, cores not counted twice
    assert "Apple silicon IOReport energy counters (cpu_total + gpu + gpu_sram + dram + ane)" \
        in meter.describe()


def test_apple_auto_meters_let_no_model_count_the_chip_twice(apple):
    chosen = build_meters(["auto"], CPU, assumed_power_w=70)
    assert chosen.methods() == {"soc": {"method": "zeus-apple-silicon", "kind": "measured"},
                                "assumed-board": {"method": "constant-power", "kind": "modelled"}}
    assert chosen.notes == []  # the CPU, GPU and DRAM are inside the SoC's row
    on_mps = build_meters(["auto"], torch.device("mps"), assumed_power_w=70)
    assert "soc" in on_mps.methods() and on_mps.notes == []


def test_mps_without_apple_counters_says_so(no_rapl, no_gpus, monkeypatch):
    monkeypatch.setattr(zeus_soc, "_soc", None)
    monkeypatch.setattr(zeus_soc, "apple_silicon_is_available", lambda: False)
    monkeypatch.setattr(zeus_soc, "jetson_is_available", lambda: False)
    chosen = build_meters(["auto"], torch.device("mps"), assumed_power_w=70)
    assert chosen.notes[0] == ("GPU energy not measured: Zeus found no Apple silicon energy "
                               "counters (pip install 'zeus[apple]')")
    assert {c: m["method"] for c, m in chosen.methods().items()} == {
        "cpu": "tdp-model", "ram": "ram-model", "assumed-board": "constant-power"}


def test_apple_soc_rows_in_the_energy_table_and_the_headline(apple):
    with Metering(build_meters(["auto"], CPU, assumed_power_w=70), CPU, sample_period_s=1) as metering:
        with metering.window(Phase.TRAIN, 1):
            apple.add(cpu_total_mj=3_000, gpu_mj=1_000)
        with pytest.raises(ZeroDivisionError):
            with metering.window(Phase.EVAL, 1):
                apple.add(gpu_mj=9_000)
                1 / 0  # noqa: B018 - cancelled: Zeus ends the SoC window, nothing is kept
        assert apple.windows == {}
    soc = [r for r in metering.rows if r["component"] == "soc"]
    assert [(r["phase"], r["method"], r["kind"], r["scope"]) for r in soc] == [
        ("train", "zeus-apple-silicon", "measured", "machine")]  # no share splits the chip
    assert soc[0]["energy_j"] == pytest.approx(4.0)
    totals = per_run(metering.rows).iloc[0]
    assert totals["energy_j"] == pytest.approx(4.0) and totals["energy_kind"] == "measured"
    assert (totals["soc_method"], totals["soc_kind"], totals["soc_scope"]) == (
        "zeus-apple-silicon", "measured", "machine")
    assert "soc: zeus-apple-silicon (measured, machine)" in totals["energy_methods"]


def test_apple_soc_power_for_the_timeline(apple):
    meter, _ = ZeusMeter.probe([], measure_cpu=True, measure_soc=True)
    assert meter.power_w() == {}  # a rate needs two reads
    time.sleep(0.05)
    apple.add(gpu_mj=1_000)
    watts = meter.power_w()
    assert set(watts) == {"soc"} and 0 < watts["soc"] <= 1.0 / 0.05  # 1 J over >= 50 ms


# ------------------------------------------------------------------------------------------
# Jetson: Zeus's Jetson class, its rail-integrating helper process replaced by counters
# ------------------------------------------------------------------------------------------

class JetsonRails(Jetson):
    """Zeus's Jetson with the helper process that integrates the INA3221 rails (mJ) replaced
    by counters the test advances; its windows and metrics are Zeus's own."""

    def __init__(self, total: bool):  # no sysfs, no helper process
        self.measurement_states = {}
        self.available_metrics = None
        self.mj = JetsonMeasurement(cpu_energy_mj=1_000.0, gpu_energy_mj=2_000.0,
                                    total_energy_mj=6_000.0 if total else None)

    def get_total_energy_consumption(self, timeout: float = 15.0) -> JetsonMeasurement:
        return copy.copy(self.mj)


@pytest.mark.parametrize("total", [True, False])
def test_jetson_soc_row(monkeypatch, no_rapl, no_gpus, total):
    rails = JetsonRails(total)
    monkeypatch.setattr(zeus_soc, "_soc", rails)
    chosen = build_meters(["auto"], CPU, assumed_power_w=70)
    (meter,) = [m for m in chosen.meters if isinstance(m, ZeusMeter)]
    assert meter.methods() == {"soc": ("zeus-jetson", "measured")}
    meter.begin("w")
    rails.mj.cpu_energy_mj += 1_000.0
    rails.mj.gpu_energy_mj += 3_000.0
    if total:
        rails.mj.total_energy_mj += 5_500.0  # the module's input: CPU, GPU and the rest
    (reading,) = meter.end("w", 1.0)
    assert reading.energy_j == pytest.approx(5.5 if total else 4.0)  # rails never summed twice
    # the input rail covers the memory too; without it the RAM model stands in
    assert chosen.methods().get("ram", {}).get("method") == (None if total else "ram-model")
    assert "cpu" not in chosen.methods()  # inside the SoC's row either way


def test_jetson_gpu_is_not_read_twice(nvml, monkeypatch):
    """Where NVML also answers, the Jetson's GPU stays inside the SoC's row alone."""
    monkeypatch.setattr(zeus_soc, "_soc", JetsonRails(total=True))
    chosen = build_meters(["auto"], torch.device("cuda:0"), assumed_power_w=70)
    assert set(chosen.methods()) == {"soc", "assumed-board"} and chosen.notes == []
    (meter,) = [m for m in chosen.meters if isinstance(m, ZeusMeter)]
    assert meter.monitor.gpu_indices == []


# ------------------------------------------------------------------------------------------
# AMD: the amdsmi library faked; Zeus's AMDGPUs decides counter or power polling
# ------------------------------------------------------------------------------------------

class AmdSmiError(Exception):
    def get_error_code(self):
        return 2

    def get_error_info(self):
        return "not supported"


class FakeAmdSmi:
    """The amdsmi library on a machine of AMD GPUs: power in W ("N/A" where unsupported),
    energy counter in ticks of `counter_resolution` uJ that advances at the GPU's power
    (`counter="accurate"`), stands still (`"stuck"`: the known amdsmi bug Zeus checks for)."""

    AmdSmiInitFlags = SimpleNamespace(INIT_AMD_GPUS=1)
    AmdSmiLibraryException = AmdSmiError
    AmdSmiException = AmdSmiError

    def __init__(self, names, powers_w, counter="accurate"):
        self.names, self.powers_w, self.counter = names, powers_w, counter
        self.t0 = time.monotonic()

    def amdsmi_init(self, flags):
        pass

    def amdsmi_shut_down(self):
        pass

    def amdsmi_get_processor_handles(self):
        return list(range(len(self.names)))

    def amdsmi_get_gpu_enumeration_info(self, handle):
        return {"hip_id": handle}

    def amdsmi_get_gpu_asic_info(self, handle):
        return {"market_name": self.names[handle]}

    def _power_w(self, handle):
        base = self.powers_w[handle]
        # changes every 20 ms, as a real sensor does (Zeus's poller keeps only changes)
        return base + int(time.monotonic() * 50) % 2 if base else 0

    def amdsmi_get_power_info(self, handle):
        watts = self._power_w(handle)
        return {"current_socket_power": watts, "average_socket_power": watts}

    def amdsmi_get_energy_count(self, handle):
        elapsed = time.monotonic() - self.t0 if self.counter == "accurate" else 0.0
        return {"energy_accumulator": int(elapsed * self.powers_w[handle] * 1e6),
                "counter_resolution": 1.0}


def _amd_gpus(monkeypatch, library):
    """Zeus's real AMDGPUs over `library`, installed as Zeus's GPU singleton."""
    monkeypatch.setattr(zeus_amd, "amdsmi", library)
    monkeypatch.delenv("HIP_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    zeus_amd._hip_to_amdsmi_handle.cache_clear()
    gpus = zeus_amd.AMDGPUs()  # measures each counter against power for 0.5 s
    monkeypatch.setattr(zeus_gpu, "_gpus", gpus)
    return gpus


@pytest.fixture
def amd(monkeypatch, no_rapl, forked_poller):
    """Make AMD GPUs: `amd(names, powers_w, counter)`."""
    yield lambda *args, **kw: _amd_gpus(monkeypatch, FakeAmdSmi(*args, **kw))
    zeus_gpu._gpus = None  # (monkeypatch restores None too, after the fake amdsmi is gone)
    gc.collect()  # AMDGPUs.__del__ shuts amdsmi down: while the fake is still in place
    zeus_amd._hip_to_amdsmi_handle.cache_clear()


def test_amd_gpu_with_an_accurate_counter_is_read_by_it(amd):
    amd(["AMD Instinct MI210"], [100])
    meter, notes = ZeusMeter.probe([0], measure_cpu=False)
    assert notes == [] and meter.monitor.power_monitor is None
    assert meter.methods() == {"gpu": ("zeus-amdsmi", "measured")}
    assert "GPU: Zeus, amdsmi energy counter on AMD Instinct MI210" == meter.describe()
    meter.begin("w")
    time.sleep(0.2)
    (reading,) = meter.end("w", 0.2)
    assert reading.energy_j == pytest.approx(100 * 0.2, rel=0.25)  # the counter's difference


def test_amd_gpu_whose_counter_fails_zeus_check_is_polled(amd):
    amd(["AMD Instinct MI210"], [100], counter="stuck")
    meter, notes = ZeusMeter.probe([0], measure_cpu=False)
    try:
        assert notes == [] and meter.methods() == {"gpu": ("zeus-amdsmi-polled", "measured")}
        assert "amdsmi instant power polled and integrated" in meter.describe()
        assert meter.monitor.power_monitor.update_period == pytest.approx(0.05)  # paced
        time.sleep(0.1)
        meter.begin("w")
        time.sleep(1.0)
        (reading,) = meter.end("w", 1.0)
        # Zeus's PowerMonitor integrated ~100.5 W (the stuck counter would have said 0 J) from
        # its first to its last poll inside the window: up to a poll period lost at each edge
        assert 100 * 0.8 < reading.energy_j < 101 * 1.05
    finally:
        processes = list(meter.monitor.power_monitor.processes.values())
        meter.close()
    assert processes and not any(p.is_alive() for p in processes)


def test_mi250_second_die_is_not_measured_and_says_why(amd):
    amd(["AMD Instinct MI250X", "AMD Instinct MI250X"], [300, 0])  # die 1's power is on die 0
    meter, notes = ZeusMeter.probe([1], measure_cpu=False)
    assert meter is None
    assert notes[0].startswith("GPU energy not measured: GPU 1 has no usable energy counter and "
                               "Zeus cannot read its power (ZeusGPUNotSupportedError: GPU 1 is "
                               "a chiplet of a dual-die AMD Instinct MI250/MI250X")
    with pytest.raises(ConfigError, match="meters includes 'nvml' but GPU energy not measured: GPU 1"):
        check_available(["nvml"], torch.device("cuda:1"))
    first, notes = ZeusMeter.probe([0], measure_cpu=False)
    assert first.methods() == {"gpu": ("zeus-amdsmi", "measured")}
    assert notes == ["GPU 0 (AMD Instinct MI250X) is one die of a dual-die MI250: AMD reports "
                     "both dies' power on one of them, so its figure may include the other "
                     "die's work"]


# NVIDIA: pynvml faked; Zeus's PowerMonitor gives the timeline's GPU power; the short-window
# flag uses the energy counter's measured update period
# ------------------------------------------------------------------------------------------

class FakeNVML:
    """pynvml's calls that Zeus's NVIDIAGPUs makes, for one Volta-or-newer GPU: power fields in
    mW that answer or fail as the test says, and an energy counter in mJ that moves as a real
    one does once `tick` is called (frozen before)."""

    def __init__(self, pynvml):
        self.pynvml = pynvml
        self.energy_mj, self.instant_mw, self.average_mw = 1_000_000, 250_000, 200_000
        self.instant, self.average = pynvml.NVML_SUCCESS, pynvml.NVML_SUCCESS
        self.architecture = pynvml.NVML_DEVICE_ARCH_AMPERE
        self.ticking = None

    def tick(self, counter_period_s: float, toggle_s: float = 0.2, step_mw: int = 10_000):
        """From now on the instant power alternates between instant_mw and instant_mw + step_mw
        every `toggle_s`, and the energy counter integrates it, updated every
        `counter_period_s` (on the wall clock, which a forked poller shares)."""
        self.ticking = (time.time(), counter_period_s, toggle_s, step_mw)

    def instant_now_mw(self) -> int:
        if self.ticking is None:
            return self.instant_mw
        t0, _, toggle_s, step_mw = self.ticking
        return self.instant_mw + step_mw * (int((time.time() - t0) / toggle_s) % 2)

    def counter_mj(self) -> float:
        if self.ticking is None:
            return self.energy_mj
        t0, period_s, toggle_s, step_mw = self.ticking
        t = int((time.time() - t0) / period_s) * period_s  # the counter's last update
        done = int(t / toggle_s)  # whole toggles: every second one at the high power
        high_s = toggle_s * (done // 2) + (t - done * toggle_s if done % 2 else 0.0)
        return self.energy_mj + self.instant_mw * t + step_mw * high_s  # mW x s = mJ

    def install(self, monkeypatch):
        nv = self.pynvml

        def unsupported(*_):
            raise nv.NVMLError(nv.NVML_ERROR_NOT_SUPPORTED)

        def fields(handle, wanted):
            (field, _scope), = wanted
            status, value = ((self.instant, self.instant_now_mw())
                             if field == nv.NVML_FI_DEV_POWER_INSTANT
                             else (self.average, self.average_mw))
            return [SimpleNamespace(nvmlReturn=status, value=SimpleNamespace(uiVal=value))]

        for name, call in {
            "nvmlInit": lambda: None, "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: 1, "nvmlDeviceGetHandleByIndex": lambda i: f"gpu{i}",
            "nvmlDeviceGetC2cModeInfoV": unsupported,
            "nvmlDeviceGetName": lambda h: "Fake NVIDIA GPU",
            "nvmlDeviceGetArchitecture": lambda h: self.architecture,
            "nvmlDeviceGetTotalEnergyConsumption": lambda h: self.counter_mj(),
            "nvmlDeviceGetFieldValues": fields,
            "nvmlDeviceGetComputeRunningProcesses": lambda h: [],
            "nvmlErrorString": lambda code: f"NVML error {code}",
        }.items():
            monkeypatch.setattr(nv, name, call)


@pytest.fixture
def nvml(monkeypatch, no_rapl, forked_poller):
    import pynvml
    from zeus.device.gpu.nvidia import NVIDIAGPUs

    fake = FakeNVML(pynvml)
    fake.install(monkeypatch)
    fake.tick(counter_period_s=0.02)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("ZEUSD_SOCK_PATH", raising=False)
    monkeypatch.setattr(zeus_gpu, "_gpus", NVIDIAGPUs())  # Zeus's own class over the fake
    return fake


@pytest.fixture
def probed(nvml):
    """`probed(**FakeNVML.tick arguments)`: a ZeusMeter on the fake GPU; closed afterwards."""
    meters = []

    def probe(**tick):
        if tick:
            nvml.tick(**tick)
        meter, notes = ZeusMeter.probe([0], measure_cpu=False)
        assert notes == []
        meters.append(meter)
        return meter

    yield probe
    for meter in meters:
        meter.close()


def test_nvidia_gpu_without_an_energy_counter_is_polled_at_a_pace(nvml, monkeypatch):
    """Before Volta Zeus integrates polled power. Its own poller's inferred period is 0 in Zeus
    0.16 (it would poll without pause); the meter's poller polls at half the power reading's
    update period (160 ms here: 80 ms), and Zeus's windows read it."""
    from energy_lib.energy import zeus_meter

    monkeypatch.setattr(zeus_meter, "COUNTER_PROBE_S", 0.6)  # three changes of a 160 ms reading
    nvml.architecture = nvml.pynvml.NVML_DEVICE_ARCH_PASCAL  # before Volta: no counter
    nvml.tick(counter_period_s=0.02, toggle_s=0.16)
    meter, notes = ZeusMeter.probe([0], measure_cpu=False)
    try:
        assert notes == [] and meter.methods() == {"gpu": ("zeus-nvml-polled", "measured")}
        assert meter.describe() == ("GPU: Zeus, NVML instant power polled and integrated (no "
                                    "energy counter) on Fake NVIDIA GPU")
        poller = meter.monitor.power_monitor
        assert poller.update_period == pytest.approx(0.08, abs=0.01)
        assert poller.measurement_domains == [zeus_power.PowerDomain.DEVICE_INSTANT]
        assert meter.gpu_update_period_s == poller.update_period
        meter.begin("train-1")
        time.sleep(1.0)
        (reading,) = meter.end("train-1", duration_s=1.0)
        # 250-260 W, integrated from the first to the last kept poll in the window (a reading
        # that changes every 160 ms is kept every other poll): up to 0.16 s lost at each edge
        assert 150 <= reading.energy_j <= 265
        meter.start_power_series()
        assert meter.power_monitor is poller  # the timeline reads the same poller
    finally:
        meter.close()


def test_paced_poller_leaves_a_poller_with_a_pace_alone(nvml):
    from energy_lib.energy.zeus_meter import paced_poller

    nvml.architecture = nvml.pynvml.NVML_DEVICE_ARCH_PASCAL
    meter, _ = ZeusMeter.probe([0], measure_cpu=False)
    try:
        poller = meter.monitor.power_monitor
        paced_poller(meter.monitor)
        assert meter.monitor.power_monitor is poller
    finally:
        meter.close()


def test_the_short_window_flag_uses_the_counters_measured_update_period(probed):
    slow = probed(counter_period_s=0.15)  # slower than the 100 ms a fixed rule assumed
    assert slow.gpu_update_period_s == pytest.approx(0.15, rel=0.2)
    assert slow.update_periods_s() == {"gpu": slow.gpu_update_period_s}
    slow.begin("eval-1")
    (short,) = slow.end("eval-1", duration_s=0.12)
    assert re.search(r"shorter than the GPU energy counter's update period \(1[2-8]\d ms, "
                     r"measured\): noise", short.flag), short.flag
    slow.begin("eval-2")
    assert slow.end("eval-2", duration_s=0.25)[0].flag == ""
    fast = probed(counter_period_s=0.02)
    assert fast.gpu_update_period_s == pytest.approx(0.02, rel=0.3)
    fast.begin("eval-1")
    assert fast.end("eval-1", duration_s=0.05)[0].flag == ""  # 5 updates: a figure
    fast.begin("eval-2")
    assert "(2" in fast.end("eval-2", duration_s=0.01)[0].flag


def test_a_counter_that_never_moves_falls_back_to_the_assumed_period(nvml, monkeypatch):
    from energy_lib.energy import zeus_meter

    nvml.ticking = None  # frozen: no period can be read from it
    monkeypatch.setattr(zeus_meter, "COUNTER_PROBE_S", 0.05)
    meter, _ = ZeusMeter.probe([0], measure_cpu=False)
    try:
        assert meter.gpu_update_period_s is None and meter.update_periods_s() == {}
        meter.begin("eval-1")
        (reading,) = meter.end("eval-1", duration_s=0.09)
        assert "update period (100 ms, assumed)" in reading.flag
    finally:
        meter.close()


def test_the_record_keeps_the_measured_period(nvml, forked_poller):
    meter_set = build_meters(["nvml"], torch.device("cuda:0"), assumed_power_w=None)
    try:
        periods = meter_set.update_periods_s()
        assert periods.keys() == {"gpu"} and periods["gpu"] == pytest.approx(0.02, rel=0.3)
        with Metering(meter_set, CPU) as metering:
            pass
        assert metering.info()["update_periods_s"] == periods
    finally:
        meter_set.close()


TIMELINE_METHODS = {"gpu": {"method": "zeus-nvml", "kind": "measured"},
                    "cpu": {"method": "zeus-rapl", "kind": "measured"},
                    "ram": {"method": "zeus-rapl", "kind": "measured"}}


def test_gpu_power_timeline_comes_from_zeus_power_monitor(probed):
    meter = probed(counter_period_s=0.02, toggle_s=0.1)
    timeline = PowerTimeline([meter], TIMELINE_METHODS, period_s=1)  # samples nothing of its own
    timeline.start()
    time.sleep(0.6)
    timeline.stop()
    assert isinstance(meter.power_monitor, zeus_power.PowerMonitor)
    assert meter.power_monitor.update_period == pytest.approx(0.05)  # half of ~20 ms, >= 50 ms
    rows = timeline.rows()
    assert {r["component"] for r in rows} == {"gpu"} and timeline.samples == []
    assert 3 <= len(rows) <= 10  # a change every 100 ms, over 0.6 s
    assert {r["power_w"] for r in rows} == {250.0, 260.0}
    assert {r["method"] for r in rows} == {"zeus-nvml (measured)"}
    times = [r["t_s"] for r in rows]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= 0.7
    count = len(rows)
    timeline.stop()  # a second stop hands nothing over again
    assert len(timeline.rows()) == count


def test_the_pollers_samples_are_taken_in_as_the_run_goes(probed):
    """Each timeline sample takes in what Zeus's poller has queued, so a long run's samples
    never pile up in the polling process (whose exit would wait for them)."""
    meter = probed(counter_period_s=0.02, toggle_s=0.1)
    timeline = PowerTimeline([meter], TIMELINE_METHODS, period_s=0.1)
    timeline.start()
    time.sleep(0.5)
    domain = zeus_power.PowerDomain.DEVICE_INSTANT
    held = len(meter.power_monitor.samples[domain][0])  # in the monitor, before any stop
    timeline.stop()
    assert held >= 2 and len([r for r in timeline.rows() if r["component"] == "gpu"]) >= held


def test_a_power_monitor_that_cannot_start_is_said_in_the_record(probed, monkeypatch):
    meter = probed()

    def refuse(*args, **kwargs):
        raise RuntimeError("Power monitor subprocess for device_instant failed to start")

    monkeypatch.setattr(zeus_power, "PowerMonitor", refuse)
    timeline = PowerTimeline([meter], TIMELINE_METHODS, period_s=1)
    timeline.start()
    timeline.stop()
    assert timeline.rows() == [] and meter.power_monitor is None
    assert meter.describe().endswith(
        "; no GPU power timeline: Zeus's PowerMonitor did not start (RuntimeError: Power "
        "monitor subprocess for device_instant failed to start)")
    meter.begin("w")
    assert meter.end("w", 1.0)[0].component == "gpu"  # the windows still read the counter
    from energy_lib.selfcheck import counter_vs_polled

    assert counter_vs_polled(meter, CPU, lambda: None) is None  # selfcheck says why, no crash


def test_gpu_power_falls_back_to_average_and_the_series_says_so(probed, nvml):
    nvml.instant = nvml.pynvml.NVML_ERROR_NOT_SUPPORTED
    meter = probed()
    timeline = PowerTimeline([meter], TIMELINE_METHODS, period_s=1)
    timeline.start()
    time.sleep(0.2)
    timeline.stop()
    rows = timeline.rows()
    assert rows and {(r["power_w"], r["method"]) for r in rows} == {
        (200.0, f"zeus-nvml (measured); {AVERAGE_POWER_NOTE}")}


def test_counter_and_polled_power_agree_on_a_steady_gpu(probed):
    from energy_lib.selfcheck import counter_vs_polled

    meter = probed(counter_period_s=0.02, toggle_s=0.01)  # a reading that moves at each poll
    counter_j, polled_j, seconds = counter_vs_polled(meter, CPU, lambda: time.sleep(1.5))
    assert isinstance(meter.power_monitor, zeus_power.PowerMonitor)
    assert seconds == pytest.approx(1.5, abs=0.05)
    assert counter_j == pytest.approx(255.0 * seconds, rel=0.03)  # 250 and 260 W, half each
    # Zeus integrates from its first to its last kept poll inside the window (a poll that reads
    # the same value as the one before is dropped): a poll period or two lost at each edge
    assert counter_j * 0.85 <= polled_j <= counter_j * 1.02


def test_one_failed_source_leaves_the_others_in_the_sample(nvml, monkeypatch):
    cpus = FakeCPUs()
    monkeypatch.setattr(zeus_cpu, "_cpus", cpus)
    meter, _ = ZeusMeter.probe([0], measure_cpu=True)
    try:
        timeline = PowerTimeline([meter], TIMELINE_METHODS, period_s=1)
        timeline.start()
        timeline.sample()  # the counters' first read: no rate yet
        cpus.cpu_mj[0] += 1_000
        timeline.sample()  # CPU and RAM
        cpus.fail = True
        timeline.sample()  # RAPL fails: nothing sampled, the GPU's series goes on
        cpus.fail = False
        cpus.dram_mj[0] = None
        timeline.sample()  # a package without its DRAM figure: CPU stays
        time.sleep(0.3)
        timeline.stop()
        got = [sorted(watts) for _, watts, _ in timeline.samples]
        assert got[:4] == [[], ["cpu", "ram"], [], ["cpu"]]
        assert timeline.samples[1][1]["cpu"] > 0 and timeline.samples[1][1]["ram"] == 0
        assert {r["component"] for r in timeline.rows()} == {"cpu", "ram", "gpu"}
    finally:
        meter.close()


def test_held_sum_adds_step_series():
    from energy_lib.energy.zeus_meter import held_sum

    assert held_sum([[(1.0, 10.0), (3.0, 30.0)]]) == [(1.0, 10.0), (3.0, 30.0)]
    assert held_sum([[(1.0, 10.0), (3.0, 30.0)], [(2.0, 5.0), (4.0, 7.0)]]) == [
        (1.0, 10.0), (2.0, 15.0), (3.0, 35.0), (4.0, 37.0)]


# ------------------------------------------------------------------------------------------
# device = "mps"
# ------------------------------------------------------------------------------------------

def test_mps_refused_where_torch_has_none():
    from energy_lib.training.device import devices_here, resolve_device, resolve_runtime

    assert not torch.backends.mps.is_available()  # this machine: Linux
    config = RunConfig(device="mps")  # a valid config: it may be meant for a Mac
    with pytest.raises(ConfigError) as refused:
        resolve_runtime(config)  # refused where it must run, before any data is loaded
    message = str(refused.value)
    assert "\n" not in message and message.startswith("device='mps' is not available here")
    assert message.endswith("use one of: " + ", ".join(devices_here()))
    assert devices_here()[:2] == ["auto", "cpu"] and "mps" not in devices_here()
    with pytest.raises(ConfigError, match="device='mps' is not available here"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="device='mps0' is not allowed; use auto, cpu, cuda, "
                                          "cuda:N or mps"):
        RunConfig(device="mps0")


def test_mps_accepted_where_torch_has_it(monkeypatch, apple):
    from energy_lib.provenance import device_name
    from energy_lib.training.device import devices_here, resolve_runtime
    from energy_lib.energy.monitor import EnergyMonitor

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    syncs = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: syncs.append(1))
    runtime = resolve_runtime(RunConfig(device="mps", precision="fp32"))
    assert runtime.device == torch.device("mps") and "mps" in devices_here()
    assert device_name(runtime.device) == "Apple silicon GPU (MPS)"
    monitor = EnergyMonitor(build_meters(["auto"], runtime.device, assumed_power_w=70).meters,
                            runtime.device)
    monitor.begin_window("w")
    apple.add(gpu_mj=2_000)
    window = monitor.end_window("w")
    assert len(syncs) == 2  # each edge waits for the queued MPS kernels
    assert {r.component: r.energy_j for r in window.readings}["soc"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="'nvml' but this run uses Apple's MPS"):
        resolve_runtime(RunConfig(device="mps", meters="nvml"))


# ------------------------------------------------------------------------------------------
# One ZeusMonitor per run
# ------------------------------------------------------------------------------------------

@pytest.fixture
def monitors_built(monkeypatch):
    """Each ZeusMonitor built (Zeus's own __init__ still runs)."""
    built = []
    real = zeus.monitor.ZeusMonitor.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(zeus.monitor.ZeusMonitor, "__init__", counting)
    return built


def test_a_metered_run_builds_one_zeus_monitor(monitors_built, no_gpus, monkeypatch):
    """The explicit 'rapl' is checked before the run (Zeus's device layer answers) and the
    metering context builds the one monitor its windows, idle baseline and timeline share."""
    from energy_lib.training.device import resolve_runtime

    cpus = FakeCPUs()
    monkeypatch.setattr(zeus_cpu, "_cpus", cpus)
    config = RunConfig(device="cpu", meters="rapl", sample_period_s=0.05)
    runtime = resolve_runtime(config)
    assert monitors_built == []
    with Metering.for_config(config, runtime.device) as metering:
        metering.measure_idle(0.1)
        with metering.window(Phase.RUN):
            with metering.window(Phase.TRAIN, 1):
                cpus.cpu_mj[0] += 2_000
                time.sleep(0.1)
    assert len(monitors_built) == 1
    (meter,) = [m for m in metering.meter_set.meters if isinstance(m, ZeusMeter)]
    assert metering.timeline.sources[0] is meter
    train = [r for r in metering.rows if r["phase"] == "train" and r["scope"] == "machine"
             and r["component"] == "cpu"]
    assert train[0]["method"] == "zeus-rapl" and train[0]["energy_j"] == pytest.approx(2.0)


@pytest.mark.slow
@needs_fashion_mnist
def test_a_training_run_builds_one_zeus_monitor(monitors_built, no_gpus, monkeypatch):
    from energy_lib.training.train import train

    monkeypatch.setattr(zeus_cpu, "_cpus", FakeCPUs())
    config = RunConfig(dataset="fashion_mnist", train_subset=128, test_subset=64, epochs=1,
                       width=0.25, batch_size=64, idle_s=0.1, idle_after_s=0.1, download=False,
                       device="cpu", meters="rapl")
    import energy_lib.estimators.calibrate as calibrate

    built_by = {"metering": [], "machine-state probe": []}

    def counted(name, call):
        def wrapper(*args, **kwargs):
            before = len(monitors_built)
            try:
                return call(*args, **kwargs)
            finally:
                built_by[name].append(len(monitors_built) - before)
        return wrapper

    monkeypatch.setattr(Metering, "for_config", classmethod(counted(
        "metering", Metering.for_config.__func__)))
    monkeypatch.setattr(calibrate, "probe", counted("machine-state probe", calibrate.probe))
    result = train(config, progress=False)
    # the run's metering builds one; where this machine has a calibration (and its present
    # state was not metered earlier in this process), the machine-state probe before it
    # (estimators.reference: its own CPU windows) builds one of its own
    assert result.status == "ok" and built_by["metering"] == [1]
    assert built_by["machine-state probe"] in ([], [0], [1])  # at most one of its own
    assert len(monitors_built) == 1 + sum(built_by["machine-state probe"])
    assert result.meters["methods"]["cpu"]["method"] == "zeus-rapl"
