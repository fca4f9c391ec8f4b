"""A report for every state of a study: no records, some, running cells, one side of a
comparison only. It shows what exists and says in words what cannot be computed yet."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from energy_lib.cli import main
from energy_lib.locks import cell_lock
from energy_lib.report import build
from energy_lib.study import load_study, read_study
from test_export import config_record, study_toml, write_cell

STUDY = study_toml(["fp32", "amp"], 'compare = "precision"\nrepeats = 2')


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(STUDY)
    return load_study(tmp_path / "s.toml")


def build_here(study, tmp_path):
    runs, state = read_study(study, tmp_path / "runs" / study.name)
    return build(study, runs, state, tmp_path / "out"), state


def test_no_records_yet(study, tmp_path):
    report, state = build_here(study, tmp_path)
    assert set(state.cells.values()) == {"missing"}
    table = report.results
    assert len(table) == 4 and set(table["status"]) == {"missing"}
    assert sorted(table["precision"]) == ["amp", "amp", "fp32", "fp32"]  # the setting is named
    assert report.paired == ("no paired comparison yet: no finished run of precision = 'fp32' "
                             "or 'amp' (0 of 4 cells finished)")
    assert report.repeats.endswith("no target accuracy yet: no run has finished with an accuracy")
    assert list(report.summary["precision"]) == ["amp", "fp32"]  # grouped by setting, not cell


def test_one_side_finished_and_one_cell_running(study, tmp_path):
    folder = tmp_path / "runs" / study.name
    cell = "precision-fp32_seed-0"
    write_cell(folder, cell, config=config_record(cell, study="exportstudy", precision="fp32",
                                                  seed=0))
    with cell_lock(folder, "precision-amp_seed-0"):  # another runner is running it now
        report, state = build_here(study, tmp_path)
    assert state.cells[cell] == "ok" and state.cells["precision-amp_seed-0"] == "running"
    table = report.results.set_index("cell")
    assert table.loc["precision-amp_seed-0", "status"] == "running"
    assert table.loc["precision-amp_seed-0", "precision"] == "amp"
    assert report.paired == ("no paired comparison yet: no finished run of precision = 'amp' "
                             "(1 of 4 cells finished)")
    assert pd.read_csv(tmp_path / "out" / "results.csv")["status"].tolist().count("ok") == 1


@pytest.mark.slow
def test_the_report_command_on_a_new_study(study, tmp_path, capsys):
    """The user's path: `energy-study report` before any cell ran."""
    code = main(["report", "s.toml"])
    out, err = capsys.readouterr()
    assert code == 0, err
    notebook = json.loads((tmp_path / "report" / "exportstudy" / "analysis.ipynb").read_text())
    text = json.dumps(notebook)
    assert "no paired comparison yet" in text and "Traceback" not in text
    html = (tmp_path / "report" / "exportstudy" / "analysis.html").read_text()
    assert "no paired comparison yet" in html
