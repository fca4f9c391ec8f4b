"""energy.derive on hand-made energy tables: the headline picks measured over modelled per
window and component, its kind is said outright, constant power stays apart, and every total is
a plain sum of rows."""

from __future__ import annotations

import math

import pytest

from energy_lib.energy import derive
from energy_lib.energy.table import JOULES_PER_KWH, EnergyRow, Kind, Method, Phase


def row(epoch, phase, component, method, kind, energy_j, duration_s=10.0, above=None, flag=""):
    return EnergyRow(epoch, Phase(phase), component, Method(method), Kind(kind), energy_j,
                     duration_s, flag, above).to_dict()


def gpu_machine_table() -> list[dict]:
    """Two epochs on a GPU box: GPU measured, CPU measured by RAPL *and* modelled (TDP),
    RAM modelled; the constant-power estimate; whole-run and idle rows that must not be summed."""
    rows = [row(None, "idle", "gpu", "zeus-nvml", "measured", 300.0, 10.0),
            row(None, "idle", "assumed-board", "constant-power", "modelled", 700.0, 10.0)]
    for epoch in (1, 2):
        for phase, seconds in (("train", 10.0), ("eval", 2.0)):
            rows += [
                row(epoch, phase, "gpu", "zeus-nvml", "measured", 200.0 * seconds, seconds,
                    above=170.0 * seconds),
                row(epoch, phase, "cpu", "tdp-model", "modelled", 85.0 * seconds, seconds),
                row(epoch, phase, "cpu", "zeus-rapl", "measured", 40.0 * seconds, seconds),
                row(epoch, phase, "ram", "ram-model", "modelled", 10.0 * seconds, seconds),
                row(epoch, phase, "assumed-board", "constant-power", "modelled", 70.0 * seconds, seconds),
            ]
    rows.append(row(None, "run", "gpu", "zeus-nvml", "measured", 5000.0, 25.0))
    rows.append(row(None, "run", "cpu", "codecarbon", "modelled", 999.0, 25.0))
    return rows


def test_headline_prefers_measured_per_component_and_says_mixed():
    totals = derive.per_run(gpu_machine_table()).iloc[0]
    seconds = 2 * (10.0 + 2.0)
    assert totals["gpu_energy_j"] == pytest.approx(200.0 * seconds)
    assert totals["cpu_energy_j"] == pytest.approx(40.0 * seconds)  # RAPL, not the TDP model
    assert totals["ram_energy_j"] == pytest.approx(10.0 * seconds)
    assert totals["energy_j"] == pytest.approx(250.0 * seconds)
    assert totals["energy_kwh"] == pytest.approx(250.0 * seconds / JOULES_PER_KWH)
    assert totals["energy_kind"] == "mixed"  # gpu and cpu measured, ram modelled
    assert (totals["gpu_kind"], totals["cpu_kind"], totals["ram_kind"]) == (
        "measured", "measured", "modelled")
    assert totals["energy_methods"] == ("cpu: zeus-rapl (measured, machine); gpu: zeus-nvml "
                                        "(measured, process); ram: ram-model (modelled, machine)")
    assert totals["energy_scope"] == "mixed"  # no process rows for CPU/RAM in this table
    assert totals["mean_power_w"] == pytest.approx(250.0)
    assert totals["constant_power_energy_j"] == pytest.approx(70.0 * seconds)
    # only the GPU rows carry an above-idle figure: a sum with unknown parts is unknown
    assert math.isnan(totals["above_idle_j"])


def test_per_epoch_sums_train_and_eval_of_each_epoch():
    epochs = derive.per_epoch(gpu_machine_table())
    assert list(epochs["epoch"]) == [1, 2]
    assert list(epochs["energy_j"]) == pytest.approx([250.0 * 12.0] * 2)
    assert list(epochs["constant_power_energy_j"]) == pytest.approx([70.0 * 12.0] * 2)
    assert set(epochs["energy_kind"]) == {"mixed"}


def test_all_modelled_run_and_cells_kept_apart():
    rows = [dict(r, cell=cell) for cell, factor in (("a", 1.0), ("b", 2.0)) for r in [
        row(1, "train", "cpu", "tdp-model", "modelled", 85.0 * factor, 1.0, above=5.0),
        row(1, "train", "ram", "ram-model", "modelled", 9.0 * factor, 1.0, above=0.0),
        row(1, "train", "assumed-board", "constant-power", "modelled", 70.0, 1.0)]]
    totals = derive.per_run(rows).set_index("cell")
    assert totals.loc["a", "energy_j"] == pytest.approx(94.0)
    assert totals.loc["b", "energy_j"] == pytest.approx(188.0)
    assert set(totals["energy_kind"]) == {"modelled"}
    assert totals.loc["a", "above_idle_j"] == pytest.approx(5.0)


def test_stand_in_rows_cover_the_windows_after_a_failure():
    flag = "meter failed at 12.0 s (OSError: GPU lost); stand-in from here: mean power"
    rows = [row(1, "train", "gpu", "zeus-nvml", "measured", 100.0, 1.0),
            row(2, "train", "gpu", "stand-in", "modelled", 90.0, 1.0, flag=flag)]
    totals = derive.per_run(rows).iloc[0]
    assert totals["energy_j"] == pytest.approx(190.0)
    assert totals["energy_kind"] == "mixed" and flag in totals["flags"]


def test_constant_power_only_run_has_no_headline():
    rows = [row(1, "train", "assumed-board", "constant-power", "modelled", 70.0, 1.0)]
    figures = derive.run_figures(rows, best_val_acc_pct=50.0)
    assert figures["energy_kind"] == "none" and math.isnan(figures["energy_j"])
    assert math.isnan(figures["acc_pct_per_wh"])
    assert figures["constant_power_acc_pct_per_wh"] == pytest.approx(50.0 / (70.0 / 3600.0))


def test_run_figures_efficiency_and_carbon():
    rows = [row(1, "train", "cpu", "tdp-model", "modelled", 3600.0, 10.0),
            row(1, "train", "assumed-board", "constant-power", "modelled", 7200.0, 10.0)]
    figures = derive.run_figures(rows, 80.0, {"intensity_g_per_kwh": 500.0, "pue": 1.5})
    assert figures["acc_pct_per_wh"] == pytest.approx(80.0)  # 3600 J = 1 Wh
    assert figures["constant_power_acc_pct_per_wh"] == pytest.approx(40.0)
    assert figures["emissions_kg"] == pytest.approx(0.001 * 1.5 * 500.0 / 1000.0)
    assert figures["constant_power_emissions_kg"] == pytest.approx(2 * figures["emissions_kg"])


def test_idle_power_per_reading():
    idle = derive.idle_power_w(gpu_machine_table())
    assert idle == {"": {"gpu/zeus-nvml": pytest.approx(30.0)}}  # constant power has no idle


def test_combined_kind():
    assert derive.combined_kind([]) == "none"
    assert derive.combined_kind(["measured", "measured"]) == "measured"
    assert derive.combined_kind(["measured", "modelled"]) == "mixed"


def test_idle_drift_before_and_after_training():
    rows = [row(None, "idle", "cpu", "tdp-model", "modelled", 100.0, 10.0),  # 10 W
            row(None, "idle", "cpu", "zeus-rapl", "measured", 50.0, 10.0),  # 5 W: preferred
            row(None, "idle", "ram", "ram-model", "modelled", 30.0, 10.0),  # 3 W
            row(None, "idle-after", "cpu", "zeus-rapl", "measured", 60.0, 5.0),  # 12 W
            row(None, "idle-after", "ram", "ram-model", "modelled", 15.0, 5.0)]  # 3 W
    drift = derive.idle_drift(rows)[""]
    assert drift["idle_before_w"] == pytest.approx(8.0) and drift["idle_after_w"] == pytest.approx(15.0)
    assert drift["idle_drift_pct"] == pytest.approx(87.5) and drift["idle_drift_flagged"]
    steady = derive.idle_drift(rows[:3] + [row(None, "idle-after", "cpu", "zeus-rapl", "measured",
                                                25.0, 5.0),
                                            row(None, "idle-after", "ram", "ram-model", "modelled",
                                                15.0, 5.0)])[""]
    assert steady["idle_drift_pct"] == pytest.approx(0.0) and not steady["idle_drift_flagged"]
    assert derive.idle_drift(rows[:3])[""]["idle_drift_pct"] is None  # no after-baseline


def test_idle_drift_between_two_baselines():
    d = derive.idle_drift_between(20.0, 23.0)
    assert d.drift_pct == pytest.approx(15.0) and d.flagged
    d = derive.idle_drift_between(20.0, 19.0, threshold_pct=10)
    assert d.drift_pct == pytest.approx(-5.0) and not d.flagged
    assert derive.idle_drift_between(20.0, 16.0).flagged  # downward drift counts too
    d = derive.idle_drift_between(None, 19.0)
    assert d.drift_pct is None and not d.flagged and "missing" in d.note


def test_per_component_method_and_kind_columns_label_the_energy():
    totals = derive.per_run(gpu_machine_table()).iloc[0]
    assert (totals["gpu_method"], totals["cpu_method"], totals["ram_method"]) == (
        "zeus-nvml", "zeus-rapl", "ram-model")
    label = derive.energy_label(derive.per_run(gpu_machine_table()))
    assert label.kind == "mixed: measured, modelled"
    assert label.methods == totals["energy_methods"]  # the display column is the same labeller
    epochs = derive.per_epoch(gpu_machine_table())
    assert derive.energy_label(epochs).methods == label.methods


def test_energy_label_over_several_cells_and_without_meters():
    rows = [dict(r, cell=cell) for cell, method, kind in (("a", "tdp-model", "modelled"),
                                                        ("b", "zeus-rapl", "measured"))
            for r in [row(1, "train", "cpu", method, kind, 10.0, 1.0),
                      row(1, "train", "ram", "ram-model", "modelled", 1.0, 1.0)]]
    label = derive.energy_label(derive.per_run(rows))
    assert label.methods == ("cpu: tdp-model (modelled, machine); cpu: zeus-rapl (measured, "
                             "machine); ram: ram-model (modelled, machine)")
    assert str(label) == "mixed: measured, modelled, machine scope -- " + label.methods
    one = derive.energy_label(derive.per_run(rows).query("cell == 'a'"))
    assert (one.kind, one.methods) == ("modelled", "cpu: tdp-model (modelled, machine); "
                                       "ram: ram-model (modelled, machine)")
    none = derive.energy_label([{"cell": "x", "energy_kind": "none"}])
    assert (none.kind, none.methods) == ("no metered figure", "no meters recorded")


def test_a_component_whose_meter_failed_names_both_methods():
    flag = "meter failed"
    rows = [row(1, "train", "gpu", "zeus-nvml", "measured", 100.0, 1.0),
            row(2, "train", "gpu", "stand-in", "modelled", 90.0, 1.0, flag=flag)]
    totals = derive.per_run(rows).iloc[0]
    assert (totals["gpu_method"], totals["gpu_kind"]) == ("stand-in + zeus-nvml", "mixed")
    assert totals["energy_methods"] == "gpu: stand-in + zeus-nvml (mixed, process)"


# ------------------------------------------------------------------------------------------
# Scope: the cell's share (process) beside the machine's figure
# ------------------------------------------------------------------------------------------

def scoped(epoch, phase, component, method, kind, energy_j, scope, duration_s=10.0, flag=""):
    return EnergyRow(epoch, Phase(phase), component, Method(method), Kind(kind), energy_j,
                     duration_s, flag, None, scope).to_dict()


def shared_machine_table() -> list[dict]:
    """A CPU run on a shared machine: the TDP and RAM models' machine figures and the cell's
    shares of them; the constant-power row."""
    rows = [scoped(None, "idle", "cpu", "tdp-model", "modelled", 50.0, "machine"),
            scoped(None, "idle", "cpu", "tdp-model", "modelled", 1.0, "process")]
    for epoch in (1, 2):
        rows += [scoped(epoch, "train", "cpu", "tdp-model", "modelled", 800.0, "machine"),
                 scoped(epoch, "train", "cpu", "tdp-model", "modelled", 200.0, "process"),
                 scoped(epoch, "train", "ram", "ram-model", "modelled", 90.0, "machine"),
                 scoped(epoch, "train", "ram", "ram-model", "modelled", 30.0, "process"),
                 row(epoch, "train", "assumed-board", "constant-power", "modelled", 700.0)]
    return rows


def test_headline_takes_the_cells_share_and_keeps_the_machine_total_beside_it():
    totals = derive.per_run(shared_machine_table()).iloc[0]
    assert totals["energy_j"] == pytest.approx(2 * (200.0 + 30.0))
    assert totals["machine_energy_j"] == pytest.approx(2 * (800.0 + 90.0))
    assert (totals["energy_scope"], totals["cpu_scope"], totals["ram_scope"]) == (
        "process", "process", "process")
    assert totals["constant_power_energy_j"] == pytest.approx(1400.0)
    label = derive.energy_label(derive.per_run(shared_machine_table()))
    assert label.scope == "process"
    assert str(label) == ("modelled, process scope -- cpu: tdp-model (modelled, process); "
                          "ram: ram-model (modelled, process)")
    machine = derive.headline_rows(shared_machine_table(), prefer="machine")
    assert set(machine["scope"]) == {"machine"} and machine["energy_j"].sum() == pytest.approx(1780.0)
    epochs = derive.per_epoch(shared_machine_table())
    assert list(epochs["machine_energy_j"]) == [pytest.approx(890.0)] * 2


def test_rows_without_scope_are_the_machines_and_gpu_rows_the_cells():
    totals = derive.per_run(gpu_machine_table()).iloc[0]  # no process rows for CPU and RAM
    assert (totals["gpu_scope"], totals["cpu_scope"], totals["ram_scope"]) == (
        "process", "machine", "machine")
    assert totals["energy_scope"] == "mixed"
    assert totals["machine_energy_j"] == pytest.approx(totals["energy_j"])  # nothing to share
    cpu_only = derive.per_run([r for r in gpu_machine_table() if r["component"] != "gpu"])
    assert cpu_only.iloc[0]["energy_scope"] == "machine"
    assert derive.energy_label(cpu_only).scope == "machine"
    old = derive.as_frame([{k: v for k, v in r.items() if k != "scope"}
                           for r in gpu_machine_table()])
    assert set(old.loc[old["component"] == "cpu", "scope"]) == {"machine"}
    assert set(old.loc[old["component"] == "assumed-board", "scope"]) == {"process"}


def test_a_window_without_the_cells_share_falls_back_to_the_machine():
    rows = [r for r in shared_machine_table()
            if not (r["epoch"] == 2 and r["component"] == "cpu" and r["scope"] == "process")]
    totals = derive.per_run(rows).iloc[0]
    assert totals["cpu_energy_j"] == pytest.approx(200.0 + 800.0)
    assert totals["cpu_scope"] == "mixed" and totals["energy_scope"] == "mixed"
    assert derive.energy_label(derive.per_run(rows)).methods.startswith(
        "cpu: tdp-model (modelled, mixed)")


def test_idle_power_and_drift_read_the_machines_figures():
    assert derive.idle_power_w(shared_machine_table()) == {"": {"cpu/tdp-model": 5.0}}
    drift = derive.idle_drift(shared_machine_table())[""]
    assert drift["idle_before_w"] == pytest.approx(5.0)


def test_codecarbon_is_set_beside_our_figure_for_the_same_window_and_components():
    rows = gpu_machine_table() + [row(None, "run", "cpu", "tdp-model", "modelled", 2125.0, 25.0)]
    beside = derive.codecarbon_beside(rows)
    assert beside == {"codecarbon_run_energy_j": 999.0, "run_energy_j_as_codecarbon": 2125.0}
    assert derive.codecarbon_beside([r for r in rows if r["method"] != "codecarbon"]) == {}
