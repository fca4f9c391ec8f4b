"""The modelled meters against a fake /proc/stat, the constant-power estimate, the window monitor
(including a meter that fails mid-run) and the power timeline. The measured path (Zeus) is in
test_zeus_meter.py."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from energy_lib.energy import ConstantPowerEstimator, EnergyMonitor, Reading
from energy_lib.energy import power_models as energy_models
from energy_lib.energy.monitor import Meter
from energy_lib.energy.power_models import (DEFAULT_CPU_TDP_W, CpuTdpModel, RamPowerModel,
                                            lookup_cpu_tdp, read_cpu_times, utilisation)
from energy_lib.energy.timeline import PowerTimeline

CPU = torch.device("cpu")


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
    tdp, source, in_table = lookup_cpu_tdp("AMD Ryzen 9 5950X 16-Core Processor")
    assert tdp == 105.0 and "CodeCarbon CPU table" in source and in_table


def test_lookup_cpu_tdp_unknown_gives_default_with_reason():
    tdp, source, in_table = lookup_cpu_tdp("Frobnicator 3000 Deluxe")
    assert tdp == DEFAULT_CPU_TDP_W == 85.0 and not in_table
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

class DurationMeter(Meter):
    """Reports the duration it was given as joules (1 W), and logs its calls."""

    components = ["x"]

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


METHODS = {c: {"method": "fake-power", "kind": "measured"} for c in ("cpu", "ram", "gpu")}
METHODS |= {"cpu": {"method": "tdp-model", "kind": "modelled"},
            "ram": {"method": "ram-model", "kind": "modelled"}}


class FailingMeter(Meter):
    """A measured GPU meter that reads 2 W x duration, then raises from its `fail_at`-th end."""

    components = ["gpu"]
    method, kind = "zeus-nvml", "measured"

    def __init__(self, fail_at: int, where: str = "end"):
        self.fail_at, self.where, self.ends = fail_at, where, 0

    def describe(self):
        return "GPU: fake counter"

    def begin(self, name):
        if self.where == "begin" and self.ends >= self.fail_at:
            raise OSError("NVML: GPU is lost")

    def end(self, name, duration_s):
        self.ends += 1
        if self.where == "end" and self.ends > self.fail_at:
            raise OSError("NVML: GPU is lost")
        return [Reading("gpu", 2.0 * duration_s, self.method, self.kind)]


def test_meter_failing_mid_run_is_replaced_by_its_mean_power():
    monitor = EnergyMonitor([FailingMeter(fail_at=2), ConstantPowerEstimator(10)], CPU)
    windows = []
    for epoch in range(4):  # the third end raises
        monitor.begin_window(f"train-{epoch}")
        time.sleep(0.01)
        windows.append(monitor.end_window(f"train-{epoch}"))
    gpu = [[r for r in w.readings if r.component == "gpu"][0] for w in windows]
    assert [r.method for r in gpu] == ["zeus-nvml", "zeus-nvml", "stand-in", "stand-in"]
    assert [r.kind for r in gpu] == ["measured", "measured", "modelled", "modelled"]
    assert gpu[0].flag == "" and "meter failed at" in gpu[2].flag and "GPU is lost" in gpu[2].flag
    for reading, window in zip(gpu[2:], windows[2:]):
        assert reading.energy_j == pytest.approx(2.0 * window.duration_s)  # its mean power so far
    (failure,) = monitor.failures
    assert failure.window == "train-2" and "GPU is lost" in failure.error
    assert all(any(r.method == "constant-power" for r in w.readings) for w in windows)


def test_meter_failing_before_any_reading_uses_the_components_model():
    ram = RamPowerModel(4.0, "test")
    fallback = {"ram": ram}.get

    class BrokenRam(FailingMeter):
        components = ["ram"]

    monitor = EnergyMonitor([BrokenRam(fail_at=0, where="begin")], CPU, fallback=fallback)
    monitor.begin_window("run")
    monitor.begin_window("train")
    train = monitor.end_window("train")
    run = monitor.end_window("run")
    for window in (train, run):
        (reading,) = window.readings
        assert (reading.component, reading.method, reading.kind) == ("ram", "ram-model", "modelled")
        assert reading.energy_j == pytest.approx(4.0 * window.duration_s)
        assert "the component's model" in reading.flag
    assert len(monitor.failures) == 1


def test_cancelled_window_leaves_no_open_state():
    meter = DurationMeter()
    monitor = EnergyMonitor([meter], CPU)
    monitor.begin_window("train")
    monitor.cancel_window("train")
    monitor.begin_window("train")  # can be opened again
    assert monitor.end_window("train").readings[0].energy_j >= 0


class PowerMeter(Meter):
    """Samples `watts` for the timeline (or raises); its windows read `watts` x duration."""

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

    def end(self, name, duration_s):
        return [Reading(self.components[0], self.watts * duration_s, "fake-power", "measured")]


def test_timeline_samples_at_its_period():
    timeline = PowerTimeline([PowerMeter("cpu", 30.0), ConstantPowerEstimator(70)], METHODS, period_s=0.05)
    timeline.start()
    time.sleep(0.5)
    timeline.stop()
    assert not timeline.is_alive()
    # the assumed constant power has figures per window only: nothing of it in the timeline
    assert timeline.samples and all(set(watts) == {"cpu"} for _, watts, _ in timeline.samples)
    times = [t for t, *_ in timeline.samples]
    assert 3 <= len(times) <= 11
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.045 for g in gaps)
    assert sorted(gaps)[len(gaps) // 2] < 0.15
    count = len(timeline.samples)
    time.sleep(0.12)
    assert len(timeline.samples) == count  # stopped means stopped


def test_timeline_memory_is_bounded():
    meter = PowerMeter("cpu", 5.0)
    timeline = PowerTimeline([meter], METHODS, period_s=0.1, max_samples=8)
    lengths = []
    for _ in range(100):
        timeline.sample()
        lengths.append(len(timeline.samples))
    assert max(lengths) < 8
    assert meter.calls == 100
    assert timeline.period_s > 0.1
    halvings = round(math.log2(timeline.period_s / 0.1))
    assert timeline.period_s == pytest.approx(0.1 * 2 ** halvings) and halvings >= 5
    times = [t for t, *_ in timeline.samples]
    assert times == sorted(times)


def test_timeline_rows_marks_and_failing_meter():
    timeline = PowerTimeline([PowerMeter("cpu", 30.0), PowerMeter("ram", 3.0),
                              PowerMeter("gpu", 1.0, fail=True)], METHODS, period_s=1)
    timeline.mark("epoch 1")
    timeline.sample()
    timeline.sample()
    timeline.mark("epoch 2")
    rows = timeline.rows()
    assert [(r["component"], r["power_w"], r["method"]) for r in rows] == [
        ("cpu", 30.0, "tdp-model (modelled)"), ("ram", 3.0, "ram-model (modelled)")] * 2
    assert rows[0]["t_s"] == rows[1]["t_s"] <= rows[2]["t_s"]
    assert set(rows[0]) == {"t_s", "component", "power_w", "method"}
    marks = timeline.mark_rows()
    assert [m["label"] for m in marks] == ["epoch 1", "epoch 2"]
    assert marks[0]["t_s"] <= rows[0]["t_s"] <= marks[1]["t_s"]


@pytest.mark.parametrize("period", [0, -0.5, 1.5, 10])
def test_timeline_period_outside_range(period):
    with pytest.raises(ValueError, match="period_s"):
        PowerTimeline([], {}, period_s=period)


def test_timeline_period_one_second_ok():
    assert PowerTimeline([], {}, period_s=1).period_s == 1


def test_timeline_with_real_models(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, 0, 0, 0, 0)
    cpu = CpuTdpModel(40.0, "test", stat_path=stat)
    timeline = PowerTimeline([cpu, RamPowerModel(2.0, "test")], METHODS, period_s=0.5)
    write_stat(stat, 25, 0, 0, 75)
    timeline.sample()
    rows = timeline.rows()
    assert {(r["component"], r["method"]) for r in rows} == {
        ("cpu", "tdp-model (modelled)"), ("ram", "ram-model (modelled)")}
    assert {r["component"]: r["power_w"] for r in rows} == {"cpu": pytest.approx(10.0), "ram": 2.0}


def test_the_cpu_table_lookup_matches_whole_words_as_a_regex_would():
    """lookup_cpu_tdp's word test (no regex compiled per table row) agrees with `\\bname\\b`
    on every row of the table, for a name found inside a longer string and one not found."""
    import re

    table = energy_models._tdp_table()
    for cpu in ("Intel(R) Xeon(R) Gold 5120 CPU @ 2.20GHz (VM)", "AMD EPYC 9B14 96-Core"):
        key = energy_models._normalise(cpu)
        expected = [n for n in table if n and re.search(rf"\b{re.escape(n)}\b", key)]
        assert [n for n in table if n and energy_models._has_word(key, n)] == expected
    assert energy_models.lookup_cpu_tdp("Intel(R) Xeon(R) Gold 5120 CPU @ 2.20GHz (VM)")[0] == 105.0
