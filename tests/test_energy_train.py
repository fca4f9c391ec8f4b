"""The meters inside a real (tiny) training run on the CPU: idle baseline, per-phase readings of
every component, the summary's totals and carbon, the power timeline and its plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from conftest import needs_fashion_mnist  # noqa: E402
from energy_lib import RunConfig  # noqa: E402
from energy_lib.energy import JOULES_PER_KWH  # noqa: E402
from energy_lib.report import plot_timeline  # noqa: E402
from energy_lib.train import train  # noqa: E402

TINY = dict(dataset="fashion_mnist", train_subset=512, test_subset=256, epochs=2, width=0.25,
            batch_size=64, idle_s=0.6, sample_period_s=0.1, device="cpu", download=False,
            data_dir="unused", study="tests", cell="energy", lr=0.05)
METHODS = {"cpu": ("tdp-model", "modelled"), "ram": ("ram-model", "modelled"),
           "assumed-board": ("constant-power", "modelled")}


def _no_rapl() -> bool:
    from energy_lib.energy.rapl import RaplMeter

    meter, _ = RaplMeter.probe()
    return meter is None


modelled_machine = pytest.mark.skipif(not _no_rapl(), reason="RAPL is readable here: the CPU is "
                                      "measured, not modelled")


def real_run(test):
    """A test on the tiny training run: slow, needs the data and a machine without RAPL."""
    return pytest.mark.slow(needs_fashion_mnist(modelled_machine(test)))


@pytest.fixture(scope="module")
def run():
    return train(RunConfig.from_dict(TINY), progress=False)


@pytest.fixture(scope="module")
def run_without_idle():
    return train(RunConfig.from_dict({**TINY, "idle_s": 0, "epochs": 1, "country": "fra",
                                      "pue": 1.5}), progress=False)


@real_run
def test_energy_rows_per_epoch_phase_and_component(run):
    assert run.status == "ok"
    rows = run.energy
    phased = [(r["epoch"], r["phase"], r["component"]) for r in rows if r["phase"] != "run"]
    assert phased == [(e, p, c) for e in (1, 2) for p in ("train", "eval")
                      for c in ("cpu", "ram", "assumed-board")]
    for r in rows:
        assert (r["method"], r["kind"]) == METHODS[r["component"]]
        assert r["energy_j"] >= 0 and r["duration_s"] > 0
    whole = [r for r in rows if r["phase"] == "run"]
    assert sorted(r["component"] for r in whole) == ["assumed-board", "cpu", "ram"]
    assert all(r["epoch"] is None for r in whole)
    phase_seconds = sum(r["duration_s"] for r in rows if r["phase"] != "run" and r["component"] == "cpu")
    assert whole[0]["duration_s"] >= phase_seconds
    assert "idle" not in {r["phase"] for r in rows}


@real_run
def test_idle_baseline_and_above_idle(run):
    idle = run.summary["idle_power_w"]
    assert set(idle) == {"cpu/tdp-model", "ram/ram-model"}
    assert idle["cpu/tdp-model"] >= 0
    ram_rows = [r for r in run.energy if r["component"] == "ram"]
    assert idle["ram/ram-model"] == pytest.approx(ram_rows[0]["energy_j"] / ram_rows[0]["duration_s"])
    for r in run.energy:
        if r["component"] == "assumed-board":
            assert r["above_idle_j"] is None  # no idle notion for an assumed power
            continue
        expected = r["energy_j"] - idle[f"{r['component']}/{r['method']}"] * r["duration_s"]
        assert r["above_idle_j"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        if r["component"] == "ram":
            assert r["above_idle_j"] == pytest.approx(0.0, abs=1e-9)  # a constant model
    s = run.summary
    for component in ("cpu", "ram"):
        phased = [r for r in run.energy if r["component"] == component and r["phase"] in ("train", "eval")]
        assert s[f"{component}_energy_j"] == pytest.approx(sum(r["energy_j"] for r in phased))
        assert s[f"{component}_above_idle_j"] == pytest.approx(sum(r["above_idle_j"] for r in phased))
    assert s["ram_above_idle_j"] == pytest.approx(0.0, abs=1e-9)


@real_run
def test_summary_totals_kind_and_carbon(run):
    s = run.summary
    assert s["components"] == {"cpu": "tdp-model (modelled)", "ram": "ram-model (modelled)"}
    assert s["component_energy_kind"] == "modelled"
    total = s["cpu_energy_j"] + s["ram_energy_j"]
    assert s["component_energy_j_total"] == pytest.approx(total)
    assert s["component_energy_kwh_total"] == pytest.approx(total / JOULES_PER_KWH)
    assert s["component_mean_power_w"] == pytest.approx(total / s["total_s"])
    assert s["carbon_intensity_g_per_kwh"] == 475.0
    assert "world average" in s["carbon_intensity_source"]
    assert s["country_iso_code"] == "" and s["pue"] == 1.0
    assert s["emissions_kg"] == pytest.approx(s["component_energy_kwh_total"] * 475 / 1000, rel=1e-12)
    assert s["emissions_kg"] > 0
    assert s["emissions_kg_constant_power"] == pytest.approx(s["energy_kwh_total"] * 0.475, rel=1e-12)
    assert s["idle_s"] == 0.6
    assert run.meters["components"] == s["components"]
    assert any("TDP model" in d for d in run.meters["descriptions"])


@real_run
def test_epoch_rows_sum_their_phases(run):
    assert len(run.epochs) == 2
    for row in run.epochs:
        for component in ("cpu", "ram"):
            readings = [r["energy_j"] for r in run.energy
                        if r["epoch"] == row["epoch"] and r["component"] == component]
            assert len(readings) == 2  # train + eval
            assert row[f"{component}_energy_j"] == pytest.approx(sum(readings), rel=1e-12)
        assert "assumed-board_energy_j" not in row


@real_run
def test_timeline_samples_and_marks(run):
    for component, method in (("cpu", "tdp-model (modelled)"), ("ram", "ram-model (modelled)")):
        samples = [r for r in run.timeline if r["component"] == component]
        assert len(samples) >= 4  # 0.6 s idle at 0.1 s alone gives ~5
        assert all(r["method"] == method for r in samples)
        times = [r["t_s"] for r in samples]
        assert all(b > a for a, b in zip(times, times[1:]))
        assert all(r["power_w"] >= 0 for r in samples)
    assert {r["component"] for r in run.timeline} == {"cpu", "ram"}
    labels = [m["label"] for m in run.timeline_marks]
    assert labels == ["idle", "idle end", "epoch 1", "epoch 2"]
    times = [m["t_s"] for m in run.timeline_marks]
    assert times == sorted(times)
    assert times[1] - times[0] == pytest.approx(0.6, abs=0.2)


@real_run
def test_no_idle_window_when_idle_s_is_zero(run_without_idle):
    run = run_without_idle
    s = run.summary
    assert s["idle_power_w"] == {}
    assert [m["label"] for m in run.timeline_marks] == ["epoch 1"]
    assert all(r["above_idle_j"] is None for r in run.energy)
    assert s["cpu_above_idle_j"] is None and s["ram_above_idle_j"] is None
    # country and PUE reach the emissions
    assert s["country_iso_code"] == "FRA" and s["country_name"] == "France"
    assert s["pue"] == 1.5
    assert s["emissions_kg"] == pytest.approx(
        s["component_energy_kwh_total"] * s["carbon_intensity_g_per_kwh"] * 1.5 / 1000, rel=1e-12)
    assert s["carbon_intensity_g_per_kwh"] != 475.0


@real_run
def test_plot_timeline_of_a_real_run(run):
    fig = plot_timeline(run.timeline, run.timeline_marks, run.summary["idle_power_w"])
    try:
        ax = fig.axes[0]
        labels = sorted(line.get_label() for line in ax.get_lines()
                        if not line.get_label().startswith("_"))
        assert labels == ["cpu: tdp-model (modelled)", "ram: ram-model (modelled)"]
        # 2 power lines + 2 idle levels + 4 marks
        assert len(ax.get_lines()) == 2 + 2 + 4
    finally:
        plt.close(fig)


def test_plot_timeline_one_line_per_component():
    samples = [{"t_s": t, "component": c, "power_w": w, "method": f"{c}-m (measured)"}
               for t in (0.5, 1.0, 1.5) for c, w in (("gpu", 60.0 + t), ("cpu", 20.0), ("ram", 3.0))]
    fig = plot_timeline(samples, [], {})
    try:
        ax = fig.axes[0]
        lines = ax.get_lines()
        assert len(lines) == 3
        assert sorted(line.get_label() for line in lines) == [
            "cpu: cpu-m (measured)", "gpu: gpu-m (measured)", "ram: ram-m (measured)"]
        gpu = next(line for line in lines if line.get_label().startswith("gpu"))
        assert list(gpu.get_xdata()) == [0.5, 1.0, 1.5]
        assert list(gpu.get_ydata()) == [60.5, 61.0, 61.5]
    finally:
        plt.close(fig)


def test_plot_timeline_without_samples():
    fig = plot_timeline([], [{"t_s": 0.0, "label": "epoch 1"}], {"cpu/tdp-model": 1.0})
    try:
        ax = fig.axes[0]
        assert ax.get_lines() == []
        assert any("no power samples" in t.get_text() for t in ax.texts)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------
# The pieces of train() that turn windows into rows and totals (no data needed)
# ------------------------------------------------------------------------------------------

def window(name, duration_s, **energies):
    from energy_lib.energy import Reading, Window

    methods = {"gpu": ("nvml-counter", "measured"), "cpu": ("tdp-model", "modelled"),
               "ram": ("ram-model", "modelled"), "assumed_board": ("constant-power", "modelled")}
    return Window(name, duration_s, [Reading(c.replace("_", "-"), j, *methods[c])
                                     for c, j in energies.items()])


def test_energy_rows_and_component_summary_by_hand():
    from energy_lib.train import _energy_rows, component_summary

    idle = {"gpu/nvml-counter": 20.0, "cpu/tdp-model": 5.0}
    rows = _energy_rows(1, idle, train=window("train", 2.0, gpu=300.0, cpu=50.0, ram=6.0,
                                              assumed_board=140.0),
                        eval=window("eval", 1.0, gpu=100.0, cpu=10.0, ram=3.0, assumed_board=70.0))
    rows += _energy_rows(None, idle, run=window("run", 3.5, gpu=999.0, cpu=99.0, ram=9.0,
                                                assumed_board=245.0))
    by = {(r["phase"], r["component"]): r for r in rows}
    assert by[("train", "gpu")]["above_idle_j"] == pytest.approx(300.0 - 20.0 * 2.0)
    assert by[("eval", "cpu")]["above_idle_j"] == pytest.approx(10.0 - 5.0 * 1.0)
    assert by[("train", "ram")]["above_idle_j"] is None  # no idle baseline for ram here
    assert by[("run", "gpu")]["epoch"] is None and by[("train", "gpu")]["epoch"] == 1
    components = {"gpu": "nvml-counter (measured)", "cpu": "tdp-model (modelled)",
                  "ram": "ram-model (modelled)"}
    config = RunConfig(country="DEU", pue=1.25)
    s = component_summary(rows, idle, components, config)
    assert s["gpu_energy_j"] == 400.0 and s["cpu_energy_j"] == 60.0 and s["ram_energy_j"] == 9.0
    assert s["gpu_above_idle_j"] == pytest.approx(400.0 - 60.0)
    assert s["cpu_above_idle_j"] == pytest.approx(60.0 - 15.0)
    assert s["ram_above_idle_j"] is None
    assert s["component_energy_j_total"] == 469.0  # the run window is not added again
    assert s["component_energy_kind"] == "mixed"
    assert s["component_mean_power_w"] == pytest.approx(469.0 / 3.0)
    assert s["country_iso_code"] == "DEU" and s["pue"] == 1.25
    assert s["emissions_kg"] == pytest.approx(469.0 / 3.6e6 * s["carbon_intensity_g_per_kwh"]
                                              * 1.25 / 1000)
    assert s["emissions_kg_constant_power"] == pytest.approx(
        210.0 / 3.6e6 * s["carbon_intensity_g_per_kwh"] * 1.25 / 1000)
    measured = component_summary([r for r in rows if r["component"] == "gpu"], idle,
                                 {"gpu": components["gpu"]}, RunConfig(carbon_intensity_g_per_kwh=100))
    assert measured["component_energy_kind"] == "measured"
    assert measured["carbon_intensity_source"] == "explicit"
    assert measured["emissions_kg"] == pytest.approx(400.0 / 3.6e6 * 100 / 1000)


def test_no_component_meters_is_not_mixed():
    from energy_lib.train import _energy_rows, component_summary

    rows = _energy_rows(1, {}, train=window("train", 2.0, assumed_board=140.0))
    s = component_summary(rows, {}, {}, RunConfig(meters="constant-power"))
    assert s["component_energy_kind"] != "mixed"


def test_measure_idle_with_fake_meters():
    import torch

    from energy_lib.energy import ConstantPowerEstimator, EnergyMonitor
    from energy_lib.energy.models import RamPowerModel
    from energy_lib.energy.timeline import PowerTimeline
    from energy_lib.train import measure_idle

    meters = [RamPowerModel(4.0, "test"), ConstantPowerEstimator(70.0)]
    monitor = EnergyMonitor(meters, torch.device("cpu"))
    timeline = PowerTimeline(meters, period_s=1)
    assert measure_idle(monitor, timeline, 0) == {}
    assert timeline.mark_rows() == []
    idle = measure_idle(monitor, timeline, 0.05)
    assert idle == {"ram/ram-model": pytest.approx(4.0)}  # the assumed power has no idle notion
    marks = timeline.mark_rows()
    assert [m["label"] for m in marks] == ["idle", "idle end"]
    assert marks[1]["t_s"] - marks[0]["t_s"] >= 0.05
