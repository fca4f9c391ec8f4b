"""The optional CodeCarbon backend, with the real library (installed by the dev extra): its
offline tracker runs alongside our meters and leaves its emissions.csv next to the record."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import needs_fashion_mnist
from energy_lib import ConfigError, RunConfig
from energy_lib.energy import derive

codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")


def test_codecarbon_needs_a_country():
    with pytest.raises(ConfigError, match="country"):
        RunConfig(meters="auto,codecarbon")


@pytest.mark.slow
@needs_fashion_mnist
def test_codecarbon_runs_alongside_and_writes_beside_the_record(tmp_path):
    from energy_lib.train import train

    record = tmp_path / "runs" / "s" / "cell-a.ipynb"
    record.parent.mkdir(parents=True)
    config = RunConfig(dataset="fashion_mnist", train_subset=256, test_subset=128, epochs=1,
                       width=0.25, batch_size=64, idle_s=0, download=False, study="s",
                       meters="auto,codecarbon", country="FRA")
    result = train(config, progress=False, codecarbon_dir=record.with_suffix(".codecarbon"))
    facts = result.meters["codecarbon"]
    csv = tmp_path / "runs" / "s" / "cell-a.codecarbon" / "emissions.csv"
    assert facts["csv"] == str(csv) and csv.is_file()
    log = pd.read_csv(csv)
    assert len(log) == 1 and log.loc[0, "country_iso_code"] == "FRA"
    assert log.loc[0, "emissions"] == pytest.approx(facts["emissions_kg"])
    assert facts["version"] == codecarbon.__version__
    # CodeCarbon's whole-run figures are rows of the energy table, labelled as its own ...
    rows = [r for r in result.energy if r["method"] == "codecarbon"]
    assert {r["component"] for r in rows} >= {"cpu", "ram"} and "gpu" not in {r["component"] for r in rows}
    assert all(r["phase"] == "run" and r["epoch"] is None and r["energy_j"] > 0 for r in rows)
    assert sum(r["energy_j"] for r in rows) / 3.6e6 == pytest.approx(log.loc[0, "energy_consumed"])
    # ... and never enter our headline, which stays ours
    figures = derive.run_figures(result.energy, result.summary["best_val_acc_pct"], result.carbon)
    assert "codecarbon" not in figures["energy_methods"]
    assert figures["energy_kind"] in ("modelled", "measured", "mixed")
