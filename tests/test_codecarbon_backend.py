"""The optional CodeCarbon backend, with the real library (installed by the dev extra): its
offline tracker runs alongside our meters and leaves its emissions.csv next to the record."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import needs_fashion_mnist
from energy_lib import ConfigError, RunConfig
from energy_lib.energy.codecarbon_backend import RECORD_ENV

codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is not installed")


def test_codecarbon_needs_a_country():
    with pytest.raises(ConfigError, match="country"):
        RunConfig(meters="auto,codecarbon")


@pytest.mark.slow
@needs_fashion_mnist
def test_codecarbon_runs_alongside_and_writes_beside_the_record(tmp_path, monkeypatch):
    from energy_lib.train import train

    record = tmp_path / "runs" / "s" / "cell-a.ipynb"
    record.parent.mkdir(parents=True)
    monkeypatch.setenv(RECORD_ENV, str(record))
    config = RunConfig(dataset="fashion_mnist", train_subset=256, test_subset=128, epochs=1,
                       width=0.25, batch_size=64, idle_s=0, download=False, study="s",
                       meters="auto,codecarbon", country="FRA")
    result = train(config, progress=False)
    summary = result.summary
    csv = tmp_path / "runs" / "s" / "cell-a.codecarbon" / "emissions.csv"
    assert summary["codecarbon_csv"] == str(csv) and csv.is_file()
    log = pd.read_csv(csv)
    assert len(log) == 1 and log.loc[0, "country_iso_code"] == "FRA"
    assert log.loc[0, "emissions"] == pytest.approx(summary["codecarbon_emissions_kg"])
    assert summary["codecarbon_energy_kwh"] > 0
    assert summary["codecarbon_version"] == codecarbon.__version__
    # our own figures are still there, labelled as ours
    assert summary["component_energy_kind"] in ("modelled", "measured", "mixed")
