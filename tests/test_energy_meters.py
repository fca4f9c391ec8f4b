"""Energy meters without their hardware: RAPL against a powercap tree written in the kernel's file
format, NVML through a fake nvidia-ml-py module, the CPU/RAM models against a fake /proc/stat,
meter selection (build_meters), the window monitor and the power timeline."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from energy_lib.energy import ConstantPowerEstimator, EnergyMonitor, Reading
from energy_lib.energy import models as energy_models
from energy_lib.energy import rapl as rapl_mod
from energy_lib.energy.models import (DEFAULT_CPU_TDP_W, CpuTdpModel, RamPowerModel,
                                      lookup_cpu_tdp, read_cpu_times, utilisation)
from energy_lib.energy.nvml import MIN_RELIABLE_WINDOW_S, NvmlMeter, physical_indices
from energy_lib.energy.rapl import RaplMeter, delta_uj, discover
from energy_lib.energy.setup import build_meters
from energy_lib.energy.timeline import PowerTimeline

CPU = torch.device("cpu")
MAX_RANGE_UJ = 262143328850


# ------------------------------------------------------------------------------------------
# RAPL: a powercap tree in the kernel's file format
# ------------------------------------------------------------------------------------------

def write_domain(path: Path, name: str, energy_uj: int, max_range_uj: int = MAX_RANGE_UJ) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path) -> SimpleNamespace:
    """Two packages; the first has a `core` sub-domain (ignored) and a `dram` one (ram)."""
    root = tmp_path / "powercap"
    pkg0 = write_domain(root / "intel-rapl:0", "package-0", 123456)
    core = write_domain(pkg0 / "intel-rapl:0:0", "core", 1000)
    dram = write_domain(pkg0 / "intel-rapl:0:1", "dram", 5000)
    pkg1 = write_domain(root / "intel-rapl:1", "package-1", 777)
    # as in the real /sys/class/powercap: sub-domains are also linked at the top level, next to
    # the control-type folder and the MMIO interface (none of which may be counted again)
    (root / "intel-rapl:0:0").symlink_to(core, target_is_directory=True)
    (root / "intel-rapl:0:1").symlink_to(dram, target_is_directory=True)
    (root / "intel-rapl").mkdir()
    (root / "intel-rapl" / "enabled").write_text("1\n")
    write_domain(root / "intel-rapl-mmio:0", "package-0", 42)
    return SimpleNamespace(root=root, pkg0=pkg0, core=core, dram=dram, pkg1=pkg1)


def test_discover_finds_packages_and_dram_but_not_core(powercap):
    domains, reason = discover(powercap.root)
    assert reason == ""
    assert [(d.name, d.component) for d in domains] == [
        ("package-0", "cpu"), ("dram", "ram"), ("package-1", "cpu")]
    assert [d.path for d in domains] == [powercap.pkg0, powercap.dram, powercap.pkg1]
    assert all(d.max_range_uj == MAX_RANGE_UJ for d in domains)
    assert domains[0].read_uj() == 123456


def test_rapl_window_joules_from_counter_deltas(powercap):
    meter, reason = RaplMeter.probe(powercap.root)
    assert reason == "" and meter is not None
    assert meter.components == ["cpu", "ram"]
    meter.begin("run")
    set_energy(powercap.pkg0, 123456 + 2_000_000)  # +2 J
    set_energy(powercap.pkg1, 777 + 3_500_000)  # +3.5 J
    set_energy(powercap.dram, 5000 + 250_000)  # +0.25 J
    meter.begin("train")  # nested window starts here
    set_energy(powercap.pkg0, 123456 + 2_000_000 + 1_000_000)
    set_energy(powercap.core, 99_999_999)  # core is inside the package figure: never read
    train = meter.end("train", 1.0)
    run = meter.end("run", 2.0)
    assert train == [Reading("cpu", pytest.approx(1.0), "rapl", "measured"),
                     Reading("ram", 0.0, "rapl", "measured")]
    assert [(r.component, r.method, r.kind) for r in run] == [
        ("cpu", "rapl", "measured"), ("ram", "rapl", "measured")]
    assert run[0].energy_j == pytest.approx(2.0 + 1.0 + 3.5)  # both packages summed
    assert run[1].energy_j == pytest.approx(0.25)


def test_rapl_counter_wrap_around(powercap):
    meter, _ = RaplMeter.probe(powercap.root)
    set_energy(powercap.pkg0, MAX_RANGE_UJ - 1_000_000)
    meter.begin("w")
    set_energy(powercap.pkg0, 500_000)  # wrapped: end < start
    readings = {r.component: r.energy_j for r in meter.end("w", 1.0)}
    assert readings["cpu"] == pytest.approx(1.5)
    assert readings["cpu"] > 0


@pytest.mark.parametrize("start,end,expected", [
    (0, 0, 0), (100, 350, 250), (MAX_RANGE_UJ - 10, 5, 15), (MAX_RANGE_UJ, 0, 0),
    (7, 7, 0), (0, MAX_RANGE_UJ, MAX_RANGE_UJ)])
def test_delta_uj(start, end, expected):
    assert delta_uj(start, end, MAX_RANGE_UJ) == expected


def test_delta_uj_small_range():
    assert delta_uj(90, 10, 100) == 20
    assert delta_uj(10, 90, 100) == 80


def test_rapl_power_from_two_samples(powercap, monkeypatch):
    clock = iter([10.0, 12.0, 12.0])
    monkeypatch.setattr(rapl_mod, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    meter, _ = RaplMeter.probe(powercap.root)
    assert meter.power_w() == {}  # the first call only remembers the counters
    set_energy(powercap.pkg0, 123456 + 30_000_000)  # 30 J in 2 s
    set_energy(powercap.pkg1, 777 + 10_000_000)  # 10 J
    set_energy(powercap.dram, 5000 + 4_000_000)  # 4 J
    assert meter.power_w() == {"cpu": pytest.approx(20.0), "ram": pytest.approx(2.0)}
    assert meter.power_w() == {}  # no time has passed: no power, not a division by zero


def test_rapl_power_real_clock(powercap):
    meter, _ = RaplMeter.probe(powercap.root)
    before = time.perf_counter()
    meter.power_w()
    time.sleep(0.05)
    set_energy(powercap.pkg0, 123456 + 1_000_000)
    power = meter.power_w()
    elapsed = time.perf_counter() - before
    assert 1.0 / elapsed <= power["cpu"] <= 1.0 / 0.05 + 1e-9
    assert power["ram"] == 0.0


def test_unreadable_counter_probe_says_which_file(tmp_path):
    root = tmp_path / "powercap"
    pkg = write_domain(root / "intel-rapl:0", "package-0", 1)
    (pkg / "energy_uj").unlink()
    (pkg / "energy_uj").mkdir()  # tests run as root: chmod would not stop the read
    meter, reason = RaplMeter.probe(root)
    assert meter is None
    assert str(pkg / "energy_uj") in reason
    assert reason.startswith("cannot read RAPL counters")
    assert discover(root) == ([], reason)


def test_unreadable_counter_falls_back_to_the_tdp_model(tmp_path):
    root = tmp_path / "powercap"
    pkg = write_domain(root / "intel-rapl:0", "package-0", 1)
    (pkg / "energy_uj").unlink()
    (pkg / "energy_uj").mkdir()
    chosen = build_meters(["auto"], CPU, assumed_power_w=70.0, cpu_model="AMD Ryzen 9 5950X",
                          powercap_root=root)
    assert [type(m) for m in chosen.meters] == [CpuTdpModel, RamPowerModel, ConstantPowerEstimator]
    assert len(chosen.notes) == 1
    assert "TDP model" in chosen.notes[0] and "CPU energy not measured" in chosen.notes[0]
    assert str(pkg / "energy_uj") in chosen.notes[0]
    assert chosen.meters[0].tdp_w == 105.0
    assert chosen.components() == {"cpu": "tdp-model (modelled)", "ram": "ram-model (modelled)"}


def test_only_one_of_two_packages_unreadable_keeps_the_other(powercap):
    (powercap.pkg1 / "energy_uj").unlink()
    (powercap.pkg1 / "energy_uj").mkdir()
    domains, reason = discover(powercap.root)
    assert reason == ""
    assert [d.name for d in domains] == ["package-0", "dram"]


def test_missing_root_reason(tmp_path):
    meter, reason = RaplMeter.probe(tmp_path / "nope")
    assert meter is None
    assert "does not exist" in reason and str(tmp_path / "nope") in reason


def test_empty_root_reason(tmp_path):
    meter, reason = RaplMeter.probe(tmp_path)
    assert meter is None and "no intel-rapl package domains" in reason


def test_rapl_meter_needs_a_domain():
    with pytest.raises(ValueError):
        RaplMeter([])


def test_unreadable_max_range_is_named(tmp_path):
    root = tmp_path / "powercap"
    pkg = write_domain(root / "intel-rapl:0", "package-0", 1)
    (pkg / "max_energy_range_uj").unlink()
    (pkg / "max_energy_range_uj").mkdir()
    _, reason = RaplMeter.probe(root)
    assert "max_energy_range_uj" in reason


def test_auto_on_cpu_with_readable_rapl_needs_no_model(powercap):
    chosen = build_meters(["auto"], CPU, assumed_power_w=70.0, powercap_root=powercap.root)
    assert [type(m) for m in chosen.meters] == [RaplMeter, ConstantPowerEstimator]
    assert chosen.notes == []
    assert chosen.components() == {"cpu": "rapl (measured)", "ram": "rapl (measured)"}


def test_auto_without_dram_domain_adds_the_ram_model(tmp_path):
    root = tmp_path / "powercap"
    write_domain(root / "intel-rapl:0", "package-0", 1)
    chosen = build_meters(["auto"], CPU, assumed_power_w=70.0, ram_power_w=4.0, powercap_root=root)
    assert [type(m) for m in chosen.meters] == [RaplMeter, RamPowerModel, ConstantPowerEstimator]
    assert chosen.components() == {"cpu": "rapl (measured)", "ram": "ram-model (modelled)"}
    assert chosen.meters[1].power_w_value == 4.0


def test_explicit_meter_names(tmp_path):
    missing = tmp_path / "none"
    only_constant = build_meters(["constant-power"], CPU, assumed_power_w=50.0, powercap_root=missing)
    assert [type(m) for m in only_constant.meters] == [ConstantPowerEstimator]
    assert only_constant.notes == [] and only_constant.components() == {}
    rapl_only = build_meters(["rapl"], CPU, assumed_power_w=50.0, cpu_tdp_w=42.0,
                             powercap_root=missing)
    assert [type(m) for m in rapl_only.meters] == [CpuTdpModel, ConstantPowerEstimator]
    assert rapl_only.meters[0].tdp_w == 42.0
    assert rapl_only.meters[0].tdp_source == "cpu_tdp_w parameter"
    nvml_on_cpu = build_meters(["nvml", "ram-model"], CPU, assumed_power_w=50.0, powercap_root=missing)
    assert nvml_on_cpu.notes == ["GPU energy not measured: this run uses the CPU"]
    assert [type(m) for m in nvml_on_cpu.meters] == [RamPowerModel, ConstantPowerEstimator]


# ------------------------------------------------------------------------------------------
# NVML through a fake nvidia-ml-py module
# ------------------------------------------------------------------------------------------

class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """The part of pynvml that NvmlMeter uses. Energy in mJ and power in mW, as NVML reports."""

    NVMLError = FakeNVMLError

    def __init__(self, *, counter: bool = True, power_mw: int = 200_000, init_error: bool = False,
                 names: dict | None = None):
        self.counter = counter
        self.power_mw = power_mw
        self.init_error = init_error
        self.energy_mj: dict = {}
        self.names = names or {}
        self.calls: list = []

    def nvmlInit(self):
        self.calls.append(("init",))
        if self.init_error:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(("index", index))
        return ("index", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(("uuid", uuid))
        return ("uuid", uuid)

    def nvmlDeviceGetName(self, handle):
        return self.names.get(handle, b"Tesla T4")  # older pynvml returns bytes

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise FakeNVMLError("Not Supported")
        return self.energy_mj.setdefault(handle, 1_000_000)

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power_mw


@pytest.fixture(autouse=False)
def no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_nvml_counter_window(no_visible_devices):
    fake = FakeNvml()
    meter, reason = NvmlMeter.probe([0], nvml=fake)
    assert reason == "" and meter is not None
    assert meter.method == "nvml-counter" and meter.kind == "measured" and meter.has_counter
    assert meter.names == ["Tesla T4"]
    assert "counter" in meter.describe() and "Tesla T4" in meter.describe()
    handle = ("index", 0)
    fake.energy_mj[handle] = 5_000_000
    meter.begin("train")
    fake.energy_mj[handle] = 5_000_000 + 12_345  # 12.345 J
    (reading,) = meter.end("train", 1.0)
    assert reading.component == "gpu" and reading.method == "nvml-counter"
    assert reading.kind == "measured"
    assert reading.energy_j == pytest.approx(12.345)
    assert reading.flag == ""
    meter.close()


def test_nvml_counter_sums_gpus(no_visible_devices):
    fake = FakeNvml()
    meter = NvmlMeter(fake, [0, 1])
    meter.begin("w")
    fake.energy_mj[("index", 0)] += 1000
    fake.energy_mj[("index", 1)] += 2500
    assert meter.end("w", 0.5)[0].energy_j == pytest.approx(3.5)


def test_short_window_is_flagged():
    fake = FakeNvml()
    meter = NvmlMeter(fake, [0])
    meter.begin("blink")
    fake.energy_mj[("index", 0)] += 3
    (reading,) = meter.end("blink", MIN_RELIABLE_WINDOW_S / 4)
    assert reading.flag and "shorter than" in reading.flag
    assert reading.energy_j == pytest.approx(0.003)
    meter.begin("long")
    assert meter.end("long", MIN_RELIABLE_WINDOW_S * 2)[0].flag == ""


def test_gpu_without_counter_integrates_sampled_power():
    fake = FakeNvml(counter=False, power_mw=200_000)  # constant 200 W
    meter = NvmlMeter(fake, [0])
    try:
        assert meter.method == "nvml-power-sampled" and not meter.has_counter
        assert "sampled" in meter.describe()
        assert meter.power_w() == {"gpu": pytest.approx(200.0)}
        before = time.perf_counter()
        meter.begin("w")
        time.sleep(0.5)
        (reading,) = meter.end("w", 0.5)
        elapsed = time.perf_counter() - before
        assert reading.method == "nvml-power-sampled" and reading.kind == "measured"
        assert reading.energy_j == pytest.approx(100.0, rel=0.1)
        assert 200.0 * 0.5 <= reading.energy_j <= 200.0 * elapsed + 1e-9
        assert meter._integrator.is_alive()  # the 100 ms sampler runs in the background
    finally:
        meter.close()
    meter._integrator.join(timeout=1)
    assert not meter._integrator.is_alive()


@pytest.mark.parametrize("visible,indices,expected", [
    (None, [0, 1], [0, 1]), ("", [1], [1]), ("2,3", [1], [3]), ("2,3", [0, 1], [2, 3]),
    (" 5 , 4 ", [0], [5]),
    ("GPU-8a1b2c3d-0000-1111-2222-333344445555,1", [0, 1],
     ["GPU-8a1b2c3d-0000-1111-2222-333344445555", 1]),
])
def test_physical_indices(monkeypatch, visible, indices, expected):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert physical_indices(indices, visible) == expected


def test_physical_indices_reads_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert physical_indices([1]) == [3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert physical_indices([0]) == ["GPU-abc"]


def test_nvml_meter_uses_uuid_handles(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,GPU-def")
    fake = FakeNvml(names={("uuid", "GPU-def"): "NVIDIA H100"})
    meter, reason = NvmlMeter.probe([1], nvml=fake)
    assert reason == ""
    assert meter.handles == [("uuid", "GPU-def")]
    assert ("uuid", "GPU-def") in fake.calls and not any(c[0] == "index" for c in fake.calls)
    assert meter.names == ["NVIDIA H100"]


def test_nvml_probe_when_init_fails(no_visible_devices):
    meter, reason = NvmlMeter.probe([0], nvml=FakeNvml(init_error=True))
    assert meter is None
    assert reason.startswith("NVML unavailable") and "Library Not Found" in reason


def test_nvml_probe_with_the_real_package_on_this_machine():
    """nvidia-ml-py is installed but there is no driver here: a reason, never an exception."""
    meter, reason = NvmlMeter.probe([0])
    if meter is not None:
        meter.close()
        pytest.skip("an NVIDIA driver is present")
    assert reason


def test_build_meters_on_cuda_picks_nvml(no_visible_devices, tmp_path):
    fake = FakeNvml()
    chosen = build_meters(["auto"], torch.device("cuda:0"), assumed_power_w=70,
                          nvml_module=fake, powercap_root=tmp_path / "none")
    try:
        assert [type(m) for m in chosen.meters] == [NvmlMeter, CpuTdpModel, RamPowerModel,
                                                    ConstantPowerEstimator]
        assert chosen.components() == {"gpu": "nvml-counter (measured)",
                                       "cpu": "tdp-model (modelled)",
                                       "ram": "ram-model (modelled)"}
        assert chosen.meters[-1].assumed_w == 70.0
        assert chosen.meters[0].handles == [("index", 0)]
        assert len(chosen.notes) == 1 and "TDP model" in chosen.notes[0]
        assert any("NVML" in line for line in chosen.describe())
    finally:
        chosen.close()


def test_build_meters_on_cuda_maps_visible_devices(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    fake = FakeNvml()
    chosen = build_meters(["auto"], torch.device("cuda", 1), assumed_power_w=70,
                          nvml_module=fake, powercap_root=tmp_path / "none")
    assert chosen.meters[0].handles == [("index", 3)]
    chosen.close()


def test_build_meters_on_cuda_without_nvml_notes_why(no_visible_devices, tmp_path):
    chosen = build_meters(["auto"], torch.device("cuda:0"), assumed_power_w=70,
                          nvml_module=FakeNvml(init_error=True), powercap_root=tmp_path / "none")
    assert [type(m) for m in chosen.meters] == [CpuTdpModel, RamPowerModel, ConstantPowerEstimator]
    assert chosen.notes[0].startswith("GPU energy not measured: NVML unavailable")
    assert len(chosen.notes) == 2


# ------------------------------------------------------------------------------------------
# CPU and RAM models
# ------------------------------------------------------------------------------------------

def write_stat(path: Path, user, nice, system, idle, iowait=0, irq=0, softirq=0, steal=0) -> None:
    path.write_text(f"cpu  {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} 0 0\n"
                    f"cpu0 {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} 0 0\n"
                    "intr 12345\nctxt 999\n")


def test_read_cpu_times(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, 100, 10, 40, 800, iowait=50, irq=5, softirq=5, steal=0)
    assert read_cpu_times(stat) == (160.0, 1010.0)  # idle + iowait are not busy


def test_cpu_tdp_model_half_busy(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, 100, 0, 100, 200)
    model = CpuTdpModel(100.0, "test", stat_path=stat)
    model.begin("w")
    write_stat(stat, 200, 0, 200, 400)  # +200 busy of +400 ticks: 50 %
    (reading,) = model.end("w", 2.0)
    assert reading == Reading("cpu", pytest.approx(100.0 * 0.5 * 2.0), "tdp-model", "modelled")
    assert model.power_w() == {"cpu": pytest.approx(50.0)}  # since construction, same 50 %
    write_stat(stat, 300, 0, 300, 400)  # +200 busy of +200: fully busy
    assert model.power_w() == {"cpu": pytest.approx(100.0)}
    assert model.power_w() == {"cpu": 0.0}  # no ticks since: no load
    assert "100 W TDP" in model.describe()


def test_cpu_tdp_model_idle_and_nested(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, 0, 0, 0, 0)
    model = CpuTdpModel(80.0, "test", stat_path=stat)
    model.begin("outer")
    write_stat(stat, 0, 0, 0, 100)
    model.begin("inner")
    write_stat(stat, 100, 0, 0, 100)  # inner: 100 %; outer: 50 %
    assert model.end("inner", 1.0)[0].energy_j == pytest.approx(80.0)
    assert model.end("outer", 2.0)[0].energy_j == pytest.approx(80.0 * 0.5 * 2.0)


def test_utilisation_bounds():
    assert utilisation((0, 0), (0, 0)) == 0.0
    assert utilisation((0, 0), (50, 100)) == 0.5
    assert utilisation((0, 0), (150, 100)) == 1.0
    assert utilisation((10, 100), (5, 200)) == 0.0


def test_lookup_cpu_tdp_in_table():
    tdp, source = lookup_cpu_tdp("AMD Ryzen 9 5950X 16-Core Processor")
    assert tdp == 105.0 and "CodeCarbon CPU table" in source


def test_lookup_cpu_tdp_unknown_gives_default_with_reason():
    tdp, source = lookup_cpu_tdp("Frobnicator 3000 Deluxe")
    assert tdp == DEFAULT_CPU_TDP_W == 85.0
    assert "default" in source and "Frobnicator 3000 Deluxe" in source and "not in" in source


def test_ram_model_default_override_and_installed(monkeypatch):
    override = RamPowerModel.default(5.5)
    assert override.power_w_value == 5.5 and override.source == "ram_power_w parameter"
    monkeypatch.setattr(energy_models, "total_ram_gb", lambda: 16.0)
    auto = RamPowerModel.default()
    assert auto.power_w_value == pytest.approx(6.0)  # 3 W per 8 GB
    assert "16.0 GB" in auto.source
    assert auto.end("w", 2.0) == [Reading("ram", pytest.approx(12.0), "ram-model", "modelled")]
    assert auto.power_w() == {"ram": pytest.approx(6.0)}


def test_ram_model_default_on_this_machine():
    model = RamPowerModel.default()
    assert model.power_w_value == pytest.approx(energy_models.total_ram_gb() * 3 / 8)
    assert model.power_w_value > 0


def test_constant_power_estimator():
    est = ConstantPowerEstimator(70)
    assert est.end("w", 3.0) == [Reading("assumed-board", 210.0, "constant-power", "modelled")]
    with pytest.raises(ValueError):
        ConstantPowerEstimator(0)


# ------------------------------------------------------------------------------------------
# EnergyMonitor and PowerTimeline
# ------------------------------------------------------------------------------------------

class DurationMeter:
    """Reports the duration it was given as joules (1 W), and logs its calls."""

    def __init__(self):
        self.calls = []

    def begin(self, name):
        self.calls.append(("begin", name))

    def end(self, name, duration_s):
        self.calls.append(("end", name))
        return [Reading("x", duration_s, "fake", "modelled")]


def test_monitor_windows_nest():
    meter = DurationMeter()
    monitor = EnergyMonitor([meter, ConstantPowerEstimator(10)], CPU)
    monitor.begin_window("run")
    monitor.begin_window("train")
    time.sleep(0.02)
    train = monitor.end_window("train")
    monitor.begin_window("eval")
    eval_ = monitor.end_window("eval")
    run = monitor.end_window("run")
    assert train.name == "train" and train.duration_s >= 0.02
    assert eval_.duration_s > 0
    assert run.duration_s >= train.duration_s + eval_.duration_s
    assert [r.method for r in train.readings] == ["fake", "constant-power"]
    assert train.readings[0].energy_j == train.duration_s
    assert train.readings[1].energy_j == pytest.approx(10 * train.duration_s)
    assert meter.calls == [("begin", "run"), ("begin", "train"), ("end", "train"),
                           ("begin", "eval"), ("end", "eval"), ("end", "run")]


def test_monitor_window_opened_twice_raises():
    meter = DurationMeter()
    monitor = EnergyMonitor([meter], CPU)
    monitor.begin_window("train")
    with pytest.raises(RuntimeError, match="already open"):
        monitor.begin_window("train")
    assert meter.calls == [("begin", "train")]  # the meters were not touched again
    assert monitor.end_window("train").duration_s > 0
    monitor.begin_window("train")  # closed: it can be opened again
    monitor.end_window("train")


class PowerMeter:
    method, kind = "fake-power", "measured"

    def __init__(self, component, watts, fail=False):
        self.components = [component]
        self.watts = watts
        self.fail = fail
        self.calls = 0

    def power_w(self):
        self.calls += 1
        if self.fail:
            raise OSError("counter vanished")
        return {self.components[0]: self.watts}


def test_timeline_samples_at_its_period():
    timeline = PowerTimeline([PowerMeter("cpu", 30.0), ConstantPowerEstimator(70)], period_s=0.05)
    assert [type(s) for s in timeline.sources] == [PowerMeter]  # no power_w: not sampled
    timeline.start()
    time.sleep(0.5)
    timeline.stop()
    assert not timeline.is_alive()
    times = [t for t, _ in timeline.samples]
    assert 3 <= len(times) <= 11
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.045 for g in gaps)
    assert sorted(gaps)[len(gaps) // 2] < 0.15
    count = len(timeline.samples)
    time.sleep(0.12)
    assert len(timeline.samples) == count  # stopped means stopped


def test_timeline_memory_is_bounded():
    meter = PowerMeter("cpu", 5.0)
    timeline = PowerTimeline([meter], period_s=0.1, max_samples=8)
    lengths = []
    for _ in range(100):
        timeline.sample()
        lengths.append(len(timeline.samples))
    assert max(lengths) < 8
    assert meter.calls == 100
    assert timeline.period_s > 0.1
    halvings = round(math.log2(timeline.period_s / 0.1))
    assert timeline.period_s == pytest.approx(0.1 * 2 ** halvings) and halvings >= 5
    times = [t for t, _ in timeline.samples]
    assert times == sorted(times)


def test_timeline_rows_marks_and_failing_meter():
    timeline = PowerTimeline([PowerMeter("cpu", 30.0), PowerMeter("ram", 3.0),
                              PowerMeter("gpu", 1.0, fail=True)], period_s=1)
    timeline.mark("epoch 1")
    timeline.sample()
    timeline.sample()
    timeline.mark("epoch 2")
    rows = timeline.rows()
    assert [(r["component"], r["power_w"], r["method"]) for r in rows] == [
        ("cpu", 30.0, "fake-power (measured)"), ("ram", 3.0, "fake-power (measured)")] * 2
    assert rows[0]["t_s"] == rows[1]["t_s"] <= rows[2]["t_s"]
    assert set(rows[0]) == {"t_s", "component", "power_w", "method"}
    marks = timeline.mark_rows()
    assert [m["label"] for m in marks] == ["epoch 1", "epoch 2"]
    assert marks[0]["t_s"] <= rows[0]["t_s"] <= marks[1]["t_s"]


@pytest.mark.parametrize("period", [0, -0.5, 1.5, 10])
def test_timeline_period_outside_range(period):
    with pytest.raises(ValueError, match="period_s"):
        PowerTimeline([], period_s=period)


def test_timeline_period_one_second_ok():
    assert PowerTimeline([], period_s=1).period_s == 1


def test_timeline_with_real_models(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, 0, 0, 0, 0)
    cpu = CpuTdpModel(40.0, "test", stat_path=stat)
    timeline = PowerTimeline([cpu, RamPowerModel(2.0, "test")], period_s=0.5)
    write_stat(stat, 25, 0, 0, 75)
    timeline.sample()
    rows = timeline.rows()
    assert {(r["component"], r["method"]) for r in rows} == {
        ("cpu", "tdp-model (modelled)"), ("ram", "ram-model (modelled)")}
    assert {r["component"]: r["power_w"] for r in rows} == {"cpu": pytest.approx(10.0), "ram": 2.0}
