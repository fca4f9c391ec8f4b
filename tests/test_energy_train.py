"""The meters inside a real (tiny) training run on the CPU: idle baseline, per-phase readings of
every component, the summary's totals and carbon, the power timeline and its plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from conftest import needs_fashion_mnist  # noqa: E402
from energy_lib import RunConfig  # noqa: E402
from energy_lib.energy import JOULES_PER_KWH, derive  # noqa: E402
from energy_lib.energy.table import COLUMNS  # noqa: E402
from energy_lib.report import plot_timeline  # noqa: E402
from energy_lib.training.train import train  # noqa: E402

TINY = dict(dataset="fashion_mnist", train_subset=512, test_subset=256, epochs=2, width=0.25,
            batch_size=64, idle_s=0.6, sample_period_s=0.1, device="cpu", download=False,
            data_dir="unused", study="tests", cell="energy", lr=0.05, idle_after_s=0)
METHODS = {"cpu": ("tdp-model", "modelled"), "ram": ("ram-model", "modelled"),
           "assumed-board": ("constant-power", "modelled")}


def _no_rapl() -> bool:
    from energy_lib.energy.zeus_meter import ZeusMeter

    meter, _ = ZeusMeter.probe([], measure_cpu=True)
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
def test_energy_rows_per_window_and_component(run):
    assert run.status == "ok"
    assert set(run.energy[0]) == set(COLUMNS)
    # every CPU/RAM figure of the machine has the cell's share beside it, never larger
    for machine in (r for r in run.energy if r["scope"] == "machine"):
        share = [r for r in run.energy if r["scope"] == "process" and (r["epoch"], r["phase"],
                 r["component"], r["method"]) == (machine["epoch"], machine["phase"],
                                                  machine["component"], machine["method"])]
        assert len(share) == 1 and 0 <= share[0]["energy_j"] <= machine["energy_j"] + 1e-9
    rows = [r for r in run.energy if r["scope"] == "machine" or r["component"] == "assumed-board"]
    phased = [(r["epoch"], r["phase"], r["component"]) for r in rows if r["phase"] in ("train", "eval")]
    assert phased == [(e, p, c) for e in (1, 2) for p in ("train", "eval")
                      for c in ("cpu", "ram", "assumed-board")]
    for r in rows:
        if r["phase"] == "predicted":
            assert r["kind"] == "estimated" and r["method"] in (
                "ops-model", "layer-regression", "early-epochs")
            continue
        assert (r["method"], r["kind"]) == METHODS[r["component"]]
        assert r["energy_j"] >= 0 and r["duration_s"] > 0
    whole = [r for r in rows if r["phase"] == "run"]
    assert sorted(r["component"] for r in whole) == ["assumed-board", "cpu", "ram"]
    assert all(r["epoch"] is None for r in whole)
    phase_seconds = sum(r["duration_s"] for r in rows if r["phase"] in ("train", "eval")
                        and r["component"] == "cpu")
    assert whole[0]["duration_s"] >= phase_seconds
    idle = [r for r in rows if r["phase"] == "idle"]
    assert [r["component"] for r in idle] == ["cpu", "ram", "assumed-board"]
    assert idle[0]["duration_s"] == pytest.approx(0.6, abs=0.1)


@real_run
def test_above_idle_is_energy_minus_idle_power_times_time(run):
    idle = derive.idle_power_w(run.energy)[""]
    assert set(idle) == {"cpu/tdp-model", "ram/ram-model"}
    for r in run.energy:
        if r["component"] == "assumed-board" or r["phase"] in ("idle", "predicted"):
            assert r["above_idle_j"] is None  # no idle notion for an assumed power, nor for idle
            continue
        if r["scope"] == "process":
            continue  # the idle baseline is the machine's

        expected = r["energy_j"] - idle[f"{r['component']}/{r['method']}"] * r["duration_s"]
        assert r["above_idle_j"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if r["component"] == "ram":
            assert r["above_idle_j"] == pytest.approx(0.0, abs=1e-9)  # a constant model


@real_run
def test_summary_holds_no_energy_and_the_derived_figures_add_up(run):
    assert not any("energy" in key or "emissions" in key for key in run.summary)
    assert not any("energy" in key for row in run.epochs for key in row)
    figures = derive.run_figures(run.energy, run.summary["best_val_acc_pct"], run.carbon)
    work = [r for r in run.energy if r["phase"] in ("train", "eval")]
    # the headline is the cell's share (process rows); the machine's figure stands beside it
    component_j = sum(r["energy_j"] for r in work if r["component"] in ("cpu", "ram")
                      and r["scope"] == "process")
    machine_j = sum(r["energy_j"] for r in work if r["component"] in ("cpu", "ram")
                    and r["scope"] == "machine")
    constant_j = sum(r["energy_j"] for r in work if r["component"] == "assumed-board")
    assert figures["energy_j"] == pytest.approx(component_j)
    assert figures["energy_scope"] == "process"
    assert figures["machine_energy_j"] == pytest.approx(machine_j) and machine_j >= component_j
    assert figures["energy_kwh"] == pytest.approx(component_j / JOULES_PER_KWH)
    assert figures["energy_kind"] == "modelled"
    assert figures["constant_power_energy_j"] == pytest.approx(constant_j)
    assert figures["mean_power_w"] == pytest.approx(component_j / run.summary["total_s"])
    assert figures["acc_pct_per_wh"] == pytest.approx(
        run.summary["best_val_acc_pct"] / (component_j / 3600))
    assert run.carbon["intensity_g_per_kwh"] == 475.0 and "world average" in run.carbon["source"]
    assert figures["emissions_kg"] == pytest.approx(component_j / JOULES_PER_KWH * 0.475)
    assert run.meters["methods"]["cpu"] == {"method": "tdp-model", "kind": "modelled"}
    assert any("TDP" in d for d in run.meters["descriptions"])
    assert run.meters["failures"] == []


@real_run
def test_epoch_energy_is_derived_per_epoch(run):
    epochs = derive.per_epoch(run.energy)
    assert list(epochs["epoch"]) == [1, 2]
    for _, row in epochs.iterrows():
        readings = [r["energy_j"] for r in run.energy if r["epoch"] == row["epoch"]
                    and r["component"] in ("cpu", "ram") and r["scope"] == "process"]
        assert len(readings) == 4  # (train, eval) x (cpu, ram)
        assert row["energy_j"] == pytest.approx(sum(readings), rel=1e-12)


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
    assert derive.idle_power_w(run.energy) == {}
    assert [m["label"] for m in run.timeline_marks] == ["epoch 1"]
    assert all(r["above_idle_j"] is None for r in run.energy)
    # country and PUE reach the emissions
    assert run.carbon["country_iso_code"] == "FRA" and run.carbon["country_name"] == "France"
    assert run.carbon["pue"] == 1.5 and run.carbon["intensity_g_per_kwh"] != 475.0
    figures = derive.run_figures(run.energy, run.summary["best_val_acc_pct"], run.carbon)
    assert figures["emissions_kg"] == pytest.approx(
        figures["energy_kwh"] * run.carbon["intensity_g_per_kwh"] * 1.5 / 1000, rel=1e-12)


@real_run
def test_plot_timeline_of_a_real_run(run):
    fig = plot_timeline(run.timeline, run.timeline_marks, derive.idle_power_w(run.energy)[""])
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
# The metering context without data: idle baseline, windows -> rows, a raising block
# ------------------------------------------------------------------------------------------

def test_metering_idle_windows_and_rows_with_fake_meters():
    import torch

    from energy_lib.energy.metering import Metering
    from energy_lib.energy.meters import MeterSet
    from energy_lib.energy import ConstantPowerEstimator
    from energy_lib.energy.power_models import RamPowerModel
    from energy_lib.energy.table import Phase

    meters = MeterSet(meters=[RamPowerModel(4.0, "test"), ConstantPowerEstimator(70.0)])
    with Metering(meters, torch.device("cpu"), sample_period_s=1) as metering:
        metering.measure_idle(0)
        assert metering.rows == [] and metering.timeline.mark_rows() == []
        metering.measure_idle(0.05)
        assert metering.idle_power_w["ram/ram-model/machine"] == pytest.approx(4.0)
        assert 0 < metering.idle_power_w["ram/ram-model/process"] <= 4.0  # the cell's RSS share
        with metering.window(Phase.TRAIN, 1):
            pass
        with pytest.raises(ZeroDivisionError):
            with metering.window(Phase.EVAL, 1):
                1 / 0  # noqa: B018 - a block that raises leaves no rows
    assert [m["label"] for m in metering.timeline.mark_rows()] == ["idle", "idle end", "epoch 1"]
    assert [(r["phase"], r["component"], r["scope"]) for r in metering.rows] == [
        ("idle", "ram", "machine"), ("idle", "ram", "process"), ("idle", "assumed-board", "process"),
        ("train", "ram", "machine"), ("train", "ram", "process"),
        ("train", "assumed-board", "process")]
    assert [w["window"] for w in metering.windows] == ["idle", "train-1"]  # not the raising one
    train_ram = metering.rows[3]
    assert train_ram["epoch"] == 1 and train_ram["above_idle_j"] == pytest.approx(0.0, abs=1e-9)
