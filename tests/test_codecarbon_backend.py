"""The optional CodeCarbon backend, with the real library (installed by the dev extra): its
offline tracker runs alongside our meters, leaves its emissions.csv next to the record, and is
given our PUE and carbon intensity."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

from conftest import needs_fashion_mnist
from energy_lib import ConfigError, RunConfig
from energy_lib.energy import codecarbon_backend, derive
from energy_lib.energy.carbon import country_table

codecarbon_backend._hide_broken_amdsmi()  # before CodeCarbon's import probes for AMD GPUs
codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")
from energy_lib.energy.codecarbon_backend import CodeCarbonRun

needs_codecarbon3 = pytest.mark.skipif(
    not codecarbon.__version__.startswith("3."),
    reason=f"CodeCarbon {codecarbon.__version__}: an explicit intensity needs 3.x")


def test_codecarbon_needs_a_country():
    with pytest.raises(ConfigError, match="country"):
        RunConfig(meters="auto,codecarbon")


@pytest.mark.slow
@needs_fashion_mnist
def test_codecarbon_runs_alongside_and_writes_beside_the_record(tmp_path):
    from energy_lib.training.train import train

    record = tmp_path / "runs" / "s" / "cell-a.ipynb"
    record.parent.mkdir(parents=True)
    config = RunConfig(dataset="fashion_mnist", train_subset=256, test_subset=128, epochs=1,
                       width=0.25, batch_size=64, idle_s=0, download=False, study="s",
                       meters="auto,codecarbon", country="FRA", pue=1.2)
    result = train(config, progress=False, codecarbon_dir=record.with_suffix(".codecarbon"))
    facts = result.meters["codecarbon"]
    csv = tmp_path / "runs" / "s" / "cell-a.codecarbon" / "emissions.csv"
    assert facts["csv"] == str(csv) and csv.is_file()
    log = pd.read_csv(csv)
    assert len(log) == 1 and log.loc[0, "country_iso_code"] == "FRA"
    assert log.loc[0, "emissions"] == pytest.approx(facts["emissions_kg"])
    assert facts["version"] == codecarbon.__version__
    # it computed its emissions with our intensity (the country's: none was given) and its PUE
    assert facts["intensity_g_per_kwh"] == result.carbon["intensity_g_per_kwh"]
    assert log.loc[0, "emissions"] == pytest.approx(
        log.loc[0, "energy_consumed"] * facts["intensity_g_per_kwh"] / 1000)
    assert log.loc[0, "pue"] == facts["pue"] == 1.2  # the run's own PUE, not CodeCarbon's 1.0
    # CodeCarbon's whole-run figures are rows of the energy table, labelled as its own ...
    rows = [r for r in result.energy if r["method"] == "codecarbon"]
    assert {r["component"] for r in rows} >= {"cpu", "ram"} and "gpu" not in {r["component"] for r in rows}
    assert all(r["phase"] == "run" and r["epoch"] is None and r["energy_j"] >= 0 for r in rows)
    # in process mode CodeCarbon's CPU figure is the process's CPU percent from psutil, whose
    # first reading is 0 by definition: on a sub-second run (this one) it can read 0 J (a CI
    # run did); its RAM figure (the process's memory x power) is never 0
    assert next(r["energy_j"] for r in rows if r["component"] == "ram") > 0
    # (IT-equipment energy: CodeCarbon's figure divided by the PUE it multiplied it by)
    assert sum(r["energy_j"] for r in rows) / 3.6e6 * log.loc[0, "pue"] == pytest.approx(
        log.loc[0, "energy_consumed"])
    # ... and never enter our headline, which stays ours
    figures = derive.run_figures(result.energy, result.summary["best_val_acc_pct"], result.carbon)
    assert "codecarbon" not in figures["energy_methods"]
    assert figures["energy_kind"] in ("modelled", "measured", "mixed")


# ------------------------------------------------------------------------------------------
# Our PUE and carbon intensity, given to the real OfflineEmissionsTracker
# ------------------------------------------------------------------------------------------

@needs_codecarbon3
def test_tracker_receives_our_pue_and_intensity(tmp_path):
    """A real (offline, CPU) CodeCarbon run: its emissions.csv says our PUE, its emissions are
    its energy x our intensity, and our rows are its energy less the PUE."""
    run = CodeCarbonRun("fra", "p", tmp_path / "cc", pue=1.5, carbon_intensity_g_per_kwh=123.0)
    assert run.tracker.force_carbon_intensity_g_co2e_kwh == 123.0
    run.start()
    time.sleep(0.5)
    figures = run.stop()
    log = pd.read_csv(tmp_path / "cc" / "emissions.csv")
    assert len(log) == 1 and log.loc[0, "country_iso_code"] == "FRA"
    assert log.loc[0, "pue"] == 1.5 and figures["pue"] == 1.5
    consumed = log.loc[0, "energy_consumed"]
    assert consumed > 0
    assert log.loc[0, "emissions"] == pytest.approx(consumed * 123.0 / 1000)
    assert figures["emissions_kg"] == pytest.approx(log.loc[0, "emissions"])
    assert sum(figures["energy_kwh"].values()) == pytest.approx(consumed / 1.5)
    assert figures["energy_kwh"]["ram"] == pytest.approx(log.loc[0, "ram_energy"] / 1.5)
    facts = run.describe()
    assert facts["pue"] == 1.5 and facts["intensity_g_per_kwh"] == 123.0
    assert facts["intensity_source"] == "explicit"


@needs_codecarbon3
def test_tracker_gets_the_country_intensity_by_default(tmp_path):
    run = CodeCarbonRun("DEU", "p", tmp_path)
    expected = country_table()["DEU"][1]
    assert run.tracker.force_carbon_intensity_g_co2e_kwh == expected
    assert run.tracker._pue == 1.0  # CodeCarbon's own attribute: what it multiplies by
    facts = run.describe()
    assert facts["intensity_g_per_kwh"] == expected and "country table" in facts["intensity_source"]


@needs_codecarbon3
def test_for_config_passes_the_run_settings(tmp_path):
    config = RunConfig(meters="auto,codecarbon", country="deu", pue=1.3,
                       carbon_intensity_g_per_kwh=200.0, study="s")
    run = CodeCarbonRun.for_config(config, tmp_path)
    assert run.given == {"pue": 1.3, "force_carbon_intensity_g_co2e_kwh": 200.0,
                         "tracking_mode": "process", "gpu_ids": [], "allow_multiple_runs": True}
    assert run.tracker._pue == 1.3 and run.tracker.force_carbon_intensity_g_co2e_kwh == 200.0
    assert run.tracker._project_name == "s" and run.tracker._country_iso_code == "DEU"


@needs_codecarbon3
def test_the_tracker_s_scope_is_explicit_and_recorded(tmp_path):
    """The real tracker object: process tracking (the scope of our headline), only the cell's
    GPU (none on a CPU cell: an empty list, since None would mean every GPU), concurrent cells
    allowed; the record's meters.codecarbon says each."""
    config = RunConfig(meters="auto,codecarbon", country="fra", study="s")
    run = CodeCarbonRun.for_config(config, tmp_path, torch.device("cpu"))
    assert run.tracker._tracking_mode == "process"
    assert run.tracker._conf["tracking_mode"] == "process"
    assert run.tracker._conf["allow_multiple_runs"] is True
    assert run.tracker._conf["gpu_ids"] == []
    facts = run.describe()
    assert (facts["tracking_mode"], facts["gpu_ids"], facts["allow_multiple_runs"]) == (
        "process", [], True)


def test_the_cell_s_gpu_is_named_by_its_uuid(monkeypatch):
    """CodeCarbon matches gpu_ids against NVML's "GPU-<uuid>": the UUID names the same GPU
    whatever CUDA_VISIBLE_DEVICES renumbered (a GPU is faked: this machine has none)."""
    class Properties:
        uuid = "4e817856-1fb8-192a-7ab7-0e0e4476c184"

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties)
    assert codecarbon_backend.gpu_uuid(torch.device("cuda", 0)) == (
        "GPU-4e817856-1fb8-192a-7ab7-0e0e4476c184")
    assert codecarbon_backend.gpu_uuid(torch.device("cpu")) is None
    assert codecarbon_backend.gpu_uuid(None) is None


@pytest.mark.parametrize("pue", [0, -1.0])
def test_bad_pue_is_named(tmp_path, pue):
    with pytest.raises(ConfigError, match="pue"):
        CodeCarbonRun("FRA", "p", tmp_path, pue=pue)
