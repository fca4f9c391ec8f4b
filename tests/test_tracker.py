"""energy_lib.Tracker: a user's own training loop measured with the study's meters, windows,
attribution, contention rule, prediction and lab record -- real training on the CPU, real
records read back by records.read_record and reported by `energy-study report DIR`, real
processes for two writers and for the busy neighbours."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch
from torch import nn

from energy_lib import BudgetExceeded, ConfigError, Tracker, TrackerError
from energy_lib.cli import main
from energy_lib.records import Status, read_record, read_runs

from conftest import ROOT

QUIET = {"idle_s": 0, "idle_after_s": 0}


def _data(samples: int = 1024, batch: int = 32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 32, generator=generator)
    y = (x[:, 0] > 0).long()
    return x, y, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def _train(tracker: Tracker, epochs: int, samples: int = 1024, fail_at: int | None = None,
           width: int = 64) -> None:
    """The user's own loop: a small MLP, SGD, an evaluation and a logged accuracy per epoch."""
    x, y, loader = _data(samples)
    model = nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(1, epochs + 1):
        with tracker.epoch():
            for xb, yb in tracker.steps(loader):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
            if epoch == fail_at:
                raise RuntimeError("loss became nan\nsecond line")
        with tracker.evaluation(), torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean() * 100
        tracker.log(val_acc_pct=accuracy, train_loss=0.5)


def test_a_tracked_loop_leaves_a_record_with_labelled_rows_and_a_prediction(tmp_path, capsys):
    out = tmp_path / "runs" / "mine"
    with Tracker("mlp", out=out, epochs=3, idle_s=0.3, idle_after_s=0) as tracker:
        _train(tracker, 3)
    printed = capsys.readouterr().out
    assert "tracker mlp: after epoch 1 of 3, the whole run is predicted at " in printed
    assert tracker.record_path == out / "mlp.ipynb"
    record = read_record(tracker.record_path)
    assert record.status == Status.OK, record.error
    assert [row["epoch"] for row in record.epochs] == [1, 2, 3]
    assert all(0 <= row["val_acc_pct"] <= 100 and row["train_loss"] == 0.5 for row in record.epochs)
    assert all(row["train_s"] > 0 and row["eval_s"] > 0 and row["steps"] == 32
               for row in record.epochs)
    rows = record.energy
    assert {r["phase"] for r in rows} >= {"idle", "train", "eval", "run", "steady", "predicted"}
    measured = [r for r in rows if r["phase"] != "predicted"]
    assert all(r["kind"] in ("measured", "modelled") for r in measured)
    cpu = {r["scope"] for r in measured if r["component"] == "cpu"}
    assert cpu == {"machine", "process"}  # the machine's figure and this process's share beside it
    early = [r for r in rows if r["method"] == "early-epochs"]
    assert len(early) == 1 and early[0]["epoch"] == 1 and early[0]["kind"] == "estimated"
    assert "after the warm-up" in early[0]["flag"]  # steps() gave epoch 1 a steady window
    summary = record.summary
    assert summary["status"] == "ok" and summary["epochs_completed"] == 3
    assert isinstance(summary["contended"], bool) and summary["contention_threshold"] == 0.25
    assert record.config["name"] == "mlp" and record.config["epochs"] == 3
    assert record.provenance["recorded_by"] == "energy_lib.Tracker"
    assert record.provenance["fingerprint_digest"] and record.windows
    assert record.carbon["intensity_g_per_kwh"] > 0
    # the summary the user prints: the headline with its kind and scope first
    shown = tracker.summary
    assert list(shown.index[:5]) == ["status", "stop_reason", "energy_j", "energy_kind",
                                     "energy_scope"]
    assert shown["energy_j"] > 0 and shown["energy_scope"] == "process"
    assert shown["emissions_kg"] > 0 and shown["record"] == str(tracker.record_path)
    # a folder of tracked runs reads as a study folder does
    runs = read_runs(out)
    assert list(runs.runs["cell"]) == ["mlp"] and list(runs.runs["status"]) == ["ok"]


def test_the_budget_stops_the_loop_after_epoch_1_and_the_record_says_so(tmp_path, capsys):
    with pytest.raises(BudgetExceeded) as stop:
        with Tracker("big", out=tmp_path, epochs=500, budget_s=1.0, **QUIET) as tracker:
            _train(tracker, 500)
    assert stop.value.predicted_s > 1.0 and stop.value.predicted_wh > 0
    assert "stopped after epoch 1: budget: predicted" in str(stop.value)
    assert tracker.summary["status"] == "stopped"
    record = read_record(tracker.record_path)
    assert record.status == Status.STOPPED and record.summary["epochs_completed"] == 1
    assert record.summary["stop_reason"].startswith("budget: predicted ")
    assert "budget_s 1" in record.summary["stop_reason"]
    assert any(r["phase"] == "run" for r in record.energy)  # the run window ended at the stop
    # a generous budget does not stop it
    with Tracker("small", out=tmp_path, epochs=2, budget_wh=1000, **QUIET) as tracker:
        _train(tracker, 2)
    assert read_record(tracker.record_path).status == Status.OK


def test_an_exception_in_the_loop_writes_a_failed_record_and_is_raised_again(tmp_path):
    with pytest.raises(RuntimeError, match="loss became nan"):
        with Tracker("boom", out=tmp_path, epochs=3, **QUIET) as tracker:
            _train(tracker, 3, fail_at=2)
    assert tracker.summary["status"] == "failed"
    record = read_record(tracker.record_path)
    assert record.status == Status.FAILED
    assert record.error == "RuntimeError: loss became nan"  # the last line of the traceback
    assert len(record.epochs) == 1  # epoch 2 raised: it has no row and no energy rows
    assert not [r for r in record.energy if r["phase"] == "train" and r["epoch"] == 2]


def test_a_run_beside_two_spinning_processes_is_contended_and_left_out_of_the_report(tmp_path,
                                                                                     capsys):
    from benchmarks.suite import busy_neighbour

    out = tmp_path / "runs" / "mine"
    with Tracker("mlp", out=out, epochs=2, **QUIET) as tracker:
        _train(tracker, 2)
    with busy_neighbour(2), Tracker("mlp", out=out, epochs=2, **QUIET) as beside:
        _train(beside, 2, samples=8192, width=256)
    record = read_record(beside.record_path)
    assert beside.record_path.name == "mlp-2.ipynb"  # a second run of the same name: a repeat
    assert record.summary["contended"] is True and record.summary["others_cpu_share"] > 0.25
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = tmp_path / "report" / "mine"
    assert capsys.readouterr().out.strip() == f"report: {report}"
    findings = (report / "findings.md").read_text()
    assert "2 record(s) in" in findings and "mlp-2" in findings
    assert "contended run(s) left out of the summary" in findings
    results = pd.read_csv(report / "results.csv")
    assert list(results["cell"]) == ["mlp", "mlp-2"]
    assert results.set_index("cell").loc["mlp-2", "flags"].count("contended") == 1
    summary = pd.read_csv(report / "summary.csv")
    alone = read_record(tracker.record_path).summary["contended"]
    assert list(summary["energy_j_n"]) == ([] if alone else [1])  # contended runs left out
    assert (report / "energy_per_epoch.png").stat().st_size > 0
    assert (report / "predictions.csv").is_file()
    # built again: replaced as a whole, a file the user put there refused, not overwritten
    assert main(["report", str(out)]) == 0
    foreign = tmp_path / "report" / "other"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    other = tmp_path / "runs" / "other"
    other.mkdir()
    (other / "x.ipynb").write_bytes(beside.record_path.read_bytes())
    capsys.readouterr()
    assert main(["report", str(other)]) == 2
    assert "holds files this project did not write" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


WRITER = textwrap.dedent("""\
    import sys, torch
    from energy_lib import Tracker
    with Tracker("same", out=sys.argv[1], idle_s=0, idle_after_s=0, quiet=True) as tracker:
        with tracker.epoch():
            torch.randn(256, 256) @ torch.randn(256, 256)
    print(tracker.record_path)
    """)


def test_two_processes_writing_to_one_folder_keep_both_records(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    paths = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        paths.append(out.strip().splitlines()[-1])
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["same-2.ipynb", "same.ipynb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same-2.ipynb", "same.ipynb"]
    assert {read_record(p).status for p in paths} == {Status.OK}


@pytest.mark.parametrize("arguments, message", [
    ({"epochs": 0}, "Tracker epochs=0 is not allowed: a whole number >= 1, or None"),
    ({"epochs": 2.5}, "Tracker epochs=2.5 is not allowed"),
    ({"epochs": True}, "Tracker epochs=True is not allowed"),
    ({"epochs": 5, "budget_wh": -1}, "Tracker budget_wh=-1 is not allowed: a number > 0, or None"),
    ({"epochs": 5, "budget_s": "10"}, "Tracker budget_s='10' is not allowed"),
    ({"epochs": 5, "budget_s": float("nan")}, "Tracker budget_s=nan is not allowed"),
    ({"budget_s": 10}, "budget_wh/budget_s need epochs >= 2"),
    ({"width": 2}, "Tracker setting 'width' is not allowed; the settings are device, meters"),
    ({"device": "tpu"}, "device='tpu' is not allowed"),
    ({"name": "a/b"}, "Tracker name 'a/b' cannot be a file name: it contains a path separator"),
    ({"name": 3}, "Tracker name=3 is not allowed"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, arguments, message):
    arguments = {"name": "run", **arguments}
    with pytest.raises(ConfigError) as error:
        Tracker(arguments.pop("name"), out=tmp_path / "out", **arguments)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_is_a_file_or_a_studys_records_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        Tracker("run", out=afile)
    assert afile.read_text() == "mine"
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quick.toml").write_text("[study]\nname = 'quick'\n")
    for out in (tmp_path / "runs" / "quick", tmp_path / "runs" / "quick" / "inner"):
        with pytest.raises(ConfigError, match=r"the lab records of a study \(only its runner"):
            Tracker("run", out=out)
    (tmp_path / "runs" / "elsewhere" / ".running").mkdir(parents=True)  # a runner's folder
    with pytest.raises(ConfigError, match="the lab records of a study"):
        Tracker("run", out=tmp_path / "runs" / "elsewhere")
    assert not (tmp_path / "runs" / "quick").exists()
    Tracker("run", out=tmp_path / "runs" / "mine")  # a folder of one's own under runs/ is fine


def test_windows_out_of_order_are_one_line_and_an_existing_record_is_left_untouched(tmp_path):
    with Tracker("order", out=tmp_path, **QUIET) as tracker:
        with tracker.epoch():
            with pytest.raises(TrackerError, match=r"tracker.epoch\(\) inside tracker.epoch\(\)"):
                with tracker.epoch():
                    pass
            with pytest.raises(TrackerError, match="comes after an epoch"):
                with tracker.evaluation():
                    pass
        with pytest.raises(ConfigError, match=r"tracker.log\(epoch=...\) is not allowed"):
            tracker.log(epoch=3)
        with pytest.raises(ConfigError, match=r"tracker.log\(note='x'\) is not allowed: a number"):
            tracker.log(note="x")
    first = tracker.record_path.read_bytes()
    with pytest.raises(TrackerError, match="needs an open tracker.*has closed"):
        with tracker.epoch():
            pass
    with pytest.raises(TrackerError, match="was already used"):
        with tracker:
            pass
    with pytest.raises(TrackerError, match="needs an open tracker"):
        Tracker("unopened", out=tmp_path).log(x=1)
    with Tracker("order", out=tmp_path, **QUIET) as again:
        with again.epoch():
            pass
    assert again.record_path.name == "order-2.ipynb"
    assert tracker.record_path.read_bytes() == first  # never replaced
    assert json.loads(first)["metadata"]["energy_study_tracker"]["written_by"] == "energy_lib.Tracker"


def test_report_of_a_studys_own_records_folder_points_to_its_study_file(tmp_path, capsys):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quick.toml").write_text("[study]\nname = 'quick'\n")
    records = tmp_path / "runs" / "quick"
    records.mkdir(parents=True)
    (records / "cell.ipynb").write_text("{}")
    assert main(["report", str(records)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"energy-study: error: {records} holds a study's lab records ({records}): "
                   "report it with its study file, e.g. energy-study report studies/quick.toml")
    assert not (tmp_path / "report").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "holds no lab record (*.ipynb)" in capsys.readouterr().err
