"""Lab records: store() in a real papermill-executed notebook, read back with nbformat; the
status of executed notebooks; read_runs' tables; to_json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import fake_executed_notebook
from energy_lib import RunConfig
from energy_lib.energy.table import COLUMNS
from energy_lib.records import MIME_TYPE, read_record, read_runs, store, to_json

RECORDING_CODE = """\
import numpy as np
import pandas as pd
from energy_lib.records import RECORD_FORMAT, store

store('format', RECORD_FORMAT)
store('config', {'width': width, 'precision': precision})
store('epochs', pd.DataFrame({'epoch': [1, 2], 'train_loss': [0.5, float('nan')]}))
store('summary', {'status': 'ok', 'best_val_acc_pct': 91.5,
                   'total_s': np.float32(12.5), 'nan_value': float('nan')})
store('x', float('nan'))
store('count', np.int64(7))
"""


def new_notebook(*sources: str, parameters: str | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def execute(nb, folder: Path, name: str, **parameters) -> Path:
    import papermill as pm

    source, target = folder / f"source-{name}", folder / name
    nbformat.write(nb, source)
    try:
        pm.execute_notebook(str(source), str(target), parameters=parameters, kernel_name="python3",
                            progress_bar=False, cwd=str(folder))
    finally:
        source.unlink()
    return target


# ------------------------------------------------------------------------------------------
# real executions with papermill
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_record_round_trip_through_papermill(tmp_path):
    nb = new_notebook(RECORDING_CODE, parameters="width = 1.0\nprecision = 'fp32'")
    path = execute(nb, tmp_path, "cell-a.ipynb", width=2.0)

    rec = read_record(path)
    assert rec.status == "ok" and rec.error == ""
    assert rec.cell == "cell-a"
    assert rec.parameters == {"width": 2.0}
    assert rec.duration_s is not None and rec.duration_s > 0
    assert rec.extra["x"] is None  # NaN -> null
    assert rec.extra["count"] == 7
    assert rec.config == {"width": 2.0, "precision": "fp32"}
    assert rec.epochs == [{"epoch": 1, "train_loss": 0.5},
                                     {"epoch": 2, "train_loss": None}]
    assert rec.summary == {"status": "ok", "best_val_acc_pct": 91.5,
                                      "total_s": 12.5, "nan_value": None}
    # a short human-readable line beside the JSON
    texts = [o["data"]["text/plain"] for c in nbformat.read(path, as_version=4).cells
             for o in c.get("outputs", []) if MIME_TYPE in o.get("data", {})]
    assert "[record] x = null" in texts

    runs = read_runs(tmp_path)
    assert runs.problems == []
    assert len(runs.runs) == 1
    row = runs.runs.iloc[0]
    assert row["cell"] == "cell-a" and row["status"] == "ok"
    assert row["width"] == 2.0 and row["best_val_acc_pct"] == 91.5
    assert pd.isna(row["nan_value"])
    assert list(runs.epochs["cell"]) == ["cell-a", "cell-a"]
    assert list(runs.epochs["epoch"]) == [1, 2]
    assert runs.energy.empty


@pytest.mark.slow
def test_failed_execution_reads_as_failed(tmp_path):
    import papermill as pm

    nb = new_notebook("from energy_lib.records import store\n"
                      "store('summary', {'status': 'ok'})",
                      "raise ValueError('boom from the test')",
                      "store('after', 1)")
    with pytest.raises(pm.PapermillExecutionError):
        execute(nb, tmp_path, "bad.ipynb")
    rec = read_record(tmp_path / "bad.ipynb")  # papermill still wrote the notebook
    assert rec.status == "failed"
    assert rec.error == "ValueError: boom from the test"
    assert "after" not in rec.extra


def test_record_outside_ipython_is_a_no_op():
    value = {"a": 1}
    assert store("anything", value) is value


# ------------------------------------------------------------------------------------------
# status logic on executed-looking notebooks (no kernel)
# ------------------------------------------------------------------------------------------

def test_finished_notebook_with_summary_is_ok(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"summary": {"best_val_acc_pct": 50}})
    assert read_record(path).status == "ok"


def test_summary_status_is_used(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"summary": {"status": "diverged"}})
    assert read_record(path).status == "diverged"


def test_papermill_exception_is_failed(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"summary": {"status": "ok"}},
                                  exception=True, error=("RuntimeError", "CUDA out of memory"))
    rec = read_record(path)
    assert rec.status == "failed" and rec.error == "RuntimeError: CUDA out of memory"


def test_exception_flag_alone_is_failed(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"summary": {"status": "ok"}},
                                  exception=True)
    assert read_record(path).status == "failed"


def test_error_output_alone_is_failed(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {}, error=("KeyError", "'x'"))
    rec = read_record(path)
    assert rec.status == "failed" and rec.error == "KeyError: 'x'"


def test_without_summary_is_incomplete(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"config": {"width": 1}, "epochs": []})
    assert read_record(path).status == "incomplete"


def test_unfinished_execution_is_incomplete(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"summary": {"status": "ok"}},
                                  finished=False)
    assert read_record(path).status == "incomplete"


def test_notebook_never_run_by_papermill_is_incomplete(tmp_path):
    path = tmp_path / "plain.ipynb"
    nbformat.write(new_notebook("1 + 1"), path)
    rec = read_record(path)
    assert rec.status == "incomplete" and rec.parameters == {} and rec.duration_s is None


@pytest.mark.parametrize("content", ["this is not json {", "", '{"a": 1}', "[1, 2]"])
def test_unreadable_file_reported_and_untouched(tmp_path, content):
    path = tmp_path / "broken.ipynb"
    path.write_text(content)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    fake_executed_notebook(tmp_path / "good.ipynb", {"summary": {"status": "ok"}})

    rec = read_record(path)
    assert rec.status == "unreadable" and "not a readable notebook" in rec.error
    runs = read_runs(tmp_path)
    assert len(runs.problems) == 1 and str(path) in runs.problems[0]
    assert dict(zip(runs.runs["cell"], runs.runs["status"])) == {"broken": "unreadable",
                                                                 "good": "ok"}
    assert path.read_text() == content and path.stat().st_mtime == 1_000_000_000


# ------------------------------------------------------------------------------------------
# read_runs tables
# ------------------------------------------------------------------------------------------

def test_read_runs_tables(tmp_path):
    fake_executed_notebook(
        tmp_path / "b.ipynb",
        {"config": {"width": 1.0, "precision": "fp32", "cell": "ignored"},
         "epochs": [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}],
         "energy": [{"epoch": 1, "phase": "train", "component": "cpu", "method": "tdp-model",
                     "kind": "modelled", "energy_j": 3.0, "duration_s": 1.0, "flag": "",
                     "above_idle_j": None},
                    {"epoch": 1, "phase": "train", "component": "assumed-board",
                     "method": "constant-power", "kind": "modelled", "energy_j": 70.0,
                     "duration_s": 1.0, "flag": "", "above_idle_j": None}],
         "provenance": {"torch_version": "9.9", "data_sources": {"train": "x"}},
         "meters": {"update_periods_s": {"gpu": 0.025}},
         "summary": {"status": "ok", "best_val_acc_pct": 80.0}},
        parameters={"config": {"width": 5.0}})
    fake_executed_notebook(tmp_path / "a.ipynb", {"config": {"width": 2.0}}, finished=False,
                           parameters={"config": {"width": 2.0, "precision": "amp"}})
    fake_executed_notebook(tmp_path / "superseded" / "b.20260101T000000.ipynb",
                           {"summary": {"status": "ok"}})
    fake_executed_notebook(tmp_path / ".running" / "c.ipynb", {})
    (tmp_path / "notes.txt").write_text("not a notebook, not an .ipynb")

    runs = read_runs(tmp_path)
    assert runs.problems == []
    assert list(runs.runs["cell"]) == ["a", "b"]  # only the folder itself, sorted
    a, b = (runs.runs.iloc[i] for i in range(2))
    assert a["status"] == "incomplete" and b["status"] == "ok"
    assert b["width"] == 1.0  # the recorded config wins over papermill's parameters
    assert a["width"] == 2.0 and pd.isna(a["precision"])  # recorded config first, if any
    assert b["best_val_acc_pct"] == 80.0 and b["papermill_s"] == 5.0
    assert b["provenance_torch_version"] == "9.9"
    assert "provenance_data_sources" not in runs.runs.columns
    assert list(runs.epochs["cell"]) == ["b", "b"] and list(runs.epochs["train_loss"]) == [2.0, 1.5]
    assert set(runs.energy.columns) == {"cell", *COLUMNS}  # the energy table, as recorded
    assert runs.energy.iloc[0][["cell", "epoch", "phase", "energy_j"]].to_dict() == {
        "cell": "b", "epoch": 1, "phase": "train", "energy_j": 3.0}
    # derived from it, never stored: the run's headline and the epoch's energy
    assert b["energy_j"] == 3.0 and b["energy_kind"] == "modelled"
    assert b["constant_power_energy_j"] == 70.0
    assert b["acc_pct_per_wh"] == pytest.approx(80.0 / (3.0 / 3600))
    assert list(runs.epochs["energy_j"].fillna(-1)) == [3.0, -1]  # epoch 2 has no rows
    assert pd.isna(a["energy_j"])  # an incomplete run without energy rows
    assert b["meter_gpu_update_period_s"] == 0.025  # the GPU counter's, as measured


def test_record_of_an_older_format_is_outdated_not_a_crash(tmp_path):
    path = fake_executed_notebook(
        tmp_path / "old.ipynb",
        {"format": None, "epochs": [{"epoch": 1, "energy_j": 5.0, "energy_kwh": 1e-6}],
         "summary": {"status": "ok", "energy_kwh_total": 1e-6}})
    assert read_record(path).status == "outdated"
    runs = read_runs(tmp_path)
    row = runs.runs.iloc[0]
    assert row["status"] == "outdated" and pd.isna(row.get("energy_j"))
    assert runs.epochs.empty and runs.energy.empty


def test_read_runs_uses_parameters_without_config_record(tmp_path):
    fake_executed_notebook(tmp_path / "x.ipynb", {}, parameters={
        "config": {"width": 3.0, "precision": "bf16"}, "progress": "text"})
    row = read_runs(tmp_path).runs.iloc[0]
    assert row["width"] == 3.0 and row["precision"] == "bf16"


def test_read_runs_of_empty_folder(tmp_path):
    runs = read_runs(tmp_path)
    assert runs.runs.empty and runs.epochs.empty and runs.energy.empty and runs.problems == []


# ------------------------------------------------------------------------------------------
# to_json
# ------------------------------------------------------------------------------------------

def test_to_json_of_a_dataframe():
    frame = pd.DataFrame({"epoch": [1, 2], "loss": [0.25, np.nan], "kind": ["a", "b"]})
    out = to_json(frame)
    assert out == [{"epoch": 1, "loss": 0.25, "kind": "a"}, {"epoch": 2, "loss": None, "kind": "b"}]
    assert type(out[0]["epoch"]) is int
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("value,expected", [
    (np.float32(0.5), 0.5), (np.int64(3), 3), (np.bool_(True), True), (np.float64(np.nan), None),
    (float("inf"), None), (float("-inf"), None), (torch.tensor(2.5), 2.5), (None, None),
    ("text", "text"), (Path("/a/b"), "/a/b"),
])
def test_to_json_scalars(value, expected):
    out = to_json(value)
    assert out == expected and type(out) is type(expected)


def test_to_json_nested_and_config():
    out = to_json({1: (np.int32(1), [np.float16(0.5), math.nan]), "k": {"inner": np.nan}})
    assert out == {"1": [1, [0.5, None]], "k": {"inner": None}}
    config = to_json(RunConfig(width=0.5))
    assert config["width"] == 0.5 and config["eval_batch_size"] is None
    json.dumps(config, allow_nan=False)
