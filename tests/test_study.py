"""Study files, the runner (resume, failures, supersede), the CLI's error contract and the
report. Runner logic is checked with a tiny stand-in run notebook (fast to execute); one slow test
module fixture runs the real run notebook on a tiny Fashion-MNIST study and builds its report."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from conftest import (TINY_DTYPES, TINY_STUDY, fake_executed_notebook, has_fashion_mnist,
                      needs_fashion_mnist, write_study)
from energy_lib import ConfigError, DatasetNotFound, StudyError
from energy_lib.study import cell as cell_module
from energy_lib.study import execute as execute_module
from energy_lib.study import folder as folder_module
from energy_lib.study import runner as runner_module
from energy_lib.cli import main
from energy_lib.lab import PARAMETERS
from energy_lib.records import RECORD_FORMAT, read_record, read_runs, to_json
from energy_lib.study import (build_report, cell_name, cell_status, execute_notebook,
                              load_study, run_study)

REPO = Path(__file__).resolve().parents[1]
FIGURES = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "cumulative_energy",
           "energy_per_epoch", "accuracy_vs_energy"]




SMALL = """\
    [study]
    name = "small"
    description = "a test study"

    [fixed]
    dataset = "fashion_mnist"
    train_subset = 256
    test_subset = 128
    epochs = 1
    batch_size = 64
    device = "cpu"
    download = false

    [axes]
    width = [0.5, 1.0]
    precision = ["fp32", "bf16"]
"""


# ------------------------------------------------------------------------------------------
# load_study
# ------------------------------------------------------------------------------------------

def test_load_study_cells_and_configs(tmp_path):
    study = load_study(write_study(tmp_path, SMALL))
    assert study.name == "small" and study.description == "a test study"
    assert [c.name for c in study.cells] == [
        "width-0.5_precision-fp32", "width-0.5_precision-bf16",
        "width-1_precision-fp32", "width-1_precision-bf16"]
    first = study.cells[0].config
    assert (first.width, first.precision, first.epochs) == (0.5, "fp32", 1)
    assert first.study == "small" and first.cell == "width-0.5_precision-fp32"
    assert study.axes == {"width": [0.5, 1.0], "precision": ["fp32", "bf16"]}
    assert study.runs_dir(tmp_path) == tmp_path / "small"
    assert study.report_dir("rep") == tmp_path / "rep" / "small"  # the project root's


def test_cell_names_follow_axis_order_of_the_file(tmp_path):
    study = load_study(write_study(tmp_path, """\
        [axes]
        precision = ["amp"]
        width = [2, 0.25]
    """))
    assert [c.name for c in study.cells] == ["precision-amp_width-2", "precision-amp_width-0.25"]
    assert study.name == "s"  # the file's stem without a [study] name


def test_cell_name_formatting():
    assert cell_name({"width": 1.0, "precision": "fp32"}) == "width-1_precision-fp32"
    assert cell_name({"data_dir": "/a b/c"}) == "data_dir--ab-c"
    assert cell_name({}) == "single"


def test_study_without_axes_has_one_cell(tmp_path):
    study = load_study(write_study(tmp_path, '[fixed]\nepochs = 2\n'))
    assert [c.name for c in study.cells] == ["single"] and study.cells[0].config.epochs == 2


def test_overrides_replace_fixed_settings(tmp_path):
    study = load_study(write_study(tmp_path, SMALL), epochs=3, lr=0.01)
    assert {c.config.epochs for c in study.cells} == {3}
    assert {c.config.lr for c in study.cells} == {0.01}


def test_a_notebook_s_study_parameter_names_a_study_file(tmp_path, monkeypatch):
    """Colab's `study`: "auto" is the paper study on a CUDA GPU and the quick one otherwise; a
    .toml path is taken as it is; a bare name is a shipped study."""
    from energy_lib.study import STUDIES_DIR, study_file_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert study_file_for("auto") == STUDIES_DIR / "quick.toml"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert study_file_for("auto") == STUDIES_DIR / "paper.toml"
    assert study_file_for("efficient_dl_quick") == STUDIES_DIR / "efficient_dl_quick.toml"
    assert study_file_for(str(tmp_path / "mine.toml")) == tmp_path / "mine.toml"
    assert all(study_file_for(name).is_file() for name in ("auto", "quick", "paper"))


def test_run_names_each_emulated_precision_before_the_first_cell(tmp_path, monkeypatch, capsys):
    """On a CPU without native bf16, `run` says so in one line per precision before any cell
    (a fingerprint without avx512_bf16/AMX stands in for such a CPU)."""
    from energy_lib import provenance
    from energy_lib.study.runner import say_emulated

    study = load_study(write_study(tmp_path, SMALL))  # fp32 and bf16 at two widths
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: {"model name": "Old CPU", "flags": "avx2"})
    say_emulated(study.cells)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["energy-study: note: bf16 (bfloat16 autocast) is emulated on this CPU (Old CPU: "
                     "no avx512_bf16, amx_bf16 or bf16 flag): its time and energy effect is a "
                     "software-path effect, not a property of 16-bit arithmetic"]
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: {"model name": "New CPU",
                                                         "flags": "avx2 avx512_bf16"})
    say_emulated(study.cells)
    assert capsys.readouterr().out == ""


def test_shipped_studies_load():
    quick = load_study(REPO / "studies" / "quick.toml")
    assert [c.name for c in quick.cells] == [  # seed-major: every setting of seed 0 first
        f"width-{w}_precision-{p}_seed-{s}" for s in (0, 1, 2) for w in ("0.5", "1")
        for p in ("fp32", "amp")]
    assert quick.repeats == 3 and quick.compare == "precision"
    once = load_study(REPO / "studies" / "quick.toml", repeats=1)
    assert [c.name for c in once.cells] == [
        "width-0.5_precision-fp32", "width-0.5_precision-amp",
        "width-1_precision-fp32", "width-1_precision-amp"]
    assert quick.cells[0].config.dataset == "fashion_mnist"
    paper = load_study(REPO / "studies" / "paper.toml")
    assert len(paper.cells) == 18 and paper.cells[-1].name == "width-3_precision-amp_seed-2"
    assert paper.repeats == 3  # the original's one run per cell gives no interval
    assert {c.config.epochs for c in paper.cells} == {30}


def test_missing_study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quick.toml").write_text("")
    with pytest.raises(StudyError) as info:
        load_study("studies/qiuck.toml")
    assert "'studies/qiuck.toml' does not exist" in str(info.value)
    assert "studies here: quick.toml" in str(info.value)


def test_malformed_toml(tmp_path):
    path = write_study(tmp_path, "[fixed]\nepochs = = 3\n")
    with pytest.raises(StudyError, match="is not valid TOML") as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_unknown_table(tmp_path):
    with pytest.raises(StudyError, match=r"unknown table\(s\) 'axis'"):
        load_study(write_study(tmp_path, '[axis]\nwidth = [1]\n'))


def test_unknown_study_key(tmp_path):
    with pytest.raises(StudyError, match="unknown key.*'?titel'?"):
        load_study(write_study(tmp_path, '[study]\ntitel = "x"\n'))


@pytest.mark.parametrize("name", ["a/b", "with space", ".hidden", ""])
def test_study_name_must_be_a_folder_name(tmp_path, name):
    with pytest.raises(StudyError, match="plain folder name"):
        load_study(write_study(tmp_path, f'[study]\nname = "{name}"\n'))


def test_unknown_axis_name(tmp_path):
    path = write_study(tmp_path, '[axes]\nwidht = [1, 2]\n')
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert "unknown parameter 'widht'" in str(info.value) and str(path) in str(info.value)


def test_unknown_fixed_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown parameter 'epoch'"):
        load_study(write_study(tmp_path, '[fixed]\nepoch = 1\n'))


def test_bad_axis_value_named(tmp_path):
    with pytest.raises(ConfigError, match="precision='fp64' is not allowed"):
        load_study(write_study(tmp_path, '[axes]\nprecision = ["fp32", "fp64"]\n'))


@pytest.mark.parametrize("value", ['"fp32"', "[]", "3"])
def test_axis_must_be_a_non_empty_list(tmp_path, value):
    with pytest.raises(StudyError, match="axis 'precision' must be a non-empty list"):
        load_study(write_study(tmp_path, f"[axes]\nprecision = {value}\n"))


def test_axis_and_fixed_at_once(tmp_path):
    with pytest.raises(StudyError, match="'width' is both an axis and a fixed setting"):
        load_study(write_study(tmp_path, '[fixed]\nwidth = 1\n[axes]\nwidth = [1, 2]\n'))


def test_override_of_an_axis_rejected(tmp_path):
    with pytest.raises(StudyError, match="'precision' is an axis of this study"):
        load_study(write_study(tmp_path, SMALL), precision="amp")


def test_override_with_unknown_name_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown parameter 'epohcs'"):
        load_study(write_study(tmp_path, SMALL), epohcs=1)


def test_duplicate_cell_names_rejected(tmp_path):
    with pytest.raises(StudyError, match="two cells share a name"):
        load_study(write_study(tmp_path, '[axes]\nwidth = [1, 1.0]\n'))


# ------------------------------------------------------------------------------------------
# cell_status from existing records (no execution)
# ------------------------------------------------------------------------------------------

def finished_record(path: Path, config, **summary) -> Path:
    return fake_executed_notebook(path, {"config": to_json(config),
                                         "summary": {"status": "ok", **summary}})


def test_cell_status(tmp_path):
    study = load_study(write_study(tmp_path, SMALL))
    runs = study.runs_dir(tmp_path / "runs")
    a, b, c, d = study.cells
    finished_record(runs / f"{a.name}.ipynb", a.config.replace(data_dir="/elsewhere"))
    finished_record(runs / f"{b.name}.ipynb", b.config.replace(epochs=5))  # other settings
    fake_executed_notebook(runs / f"{c.name}.ipynb", {"summary": {"status": "ok"}},
                           error=("RuntimeError", "x"))
    assert cell_status(study, tmp_path / "runs") == {
        a.name: "ok", b.name: "stale", c.name: "failed", d.name: "missing"}


def test_killed_first_attempt_is_incomplete_not_missing(tmp_path):
    """No record at the target, but an in-progress copy in .running/: a run was killed."""
    study = load_study(write_study(tmp_path, SMALL))
    folder = study.runs_dir(tmp_path)
    (folder / ".running" / "deadhost-9").mkdir(parents=True)
    (folder / ".running" / "deadhost-9" / f"{study.cells[1].name}.ipynb").write_text('{"half": ')
    statuses = cell_status(study, tmp_path)
    assert statuses[study.cells[1].name] == "incomplete"
    assert statuses[study.cells[0].name] == "missing"


def test_diverged_record_counts_as_finished(tmp_path):
    study = load_study(write_study(tmp_path, SMALL))
    cell = study.cells[0]
    fake_executed_notebook(study.runs_dir(tmp_path) / f"{cell.name}.ipynb",
                           {"config": to_json(cell.config), "summary": {"status": "diverged"}})
    assert cell_status(study, tmp_path)[cell.name] == "diverged"


def test_supersede_keeps_the_old_record(tmp_path):
    path = tmp_path / "cell.ipynb"
    path.write_text("old")
    folder_module.supersede(path)
    kept = list((tmp_path / "superseded").iterdir())
    assert not path.exists() and len(kept) == 1
    assert kept[0].name.startswith("cell.") and kept[0].suffix == ".ipynb"
    assert kept[0].read_text() == "old"


def test_supersede_never_overwrites_an_earlier_superseded_record(tmp_path):
    for content in ("first attempt", "second attempt"):
        path = tmp_path / "cell.ipynb"
        path.write_text(content)
        os.utime(path, (1_700_000_000, 1_700_000_000))
        folder_module.supersede(path)
    kept = sorted(p.read_text() for p in (tmp_path / "superseded").iterdir())
    assert kept == ["first attempt", "second attempt"]


# ------------------------------------------------------------------------------------------
# the CLI's error contract
# ------------------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working folder with a study file and a pre-existing runs folder holding records."""
    monkeypatch.chdir(tmp_path)
    write_study(tmp_path, SMALL, "small.toml")
    write_study(tmp_path, "[fixed]\nepochs = = 1\n", "broken.toml")
    write_study(tmp_path, """\
        [study]
        name = "small"
        [fixed]
        dataset = "cifar10"
        data_dir = "no-such-data"
        download = false
        [axes]
        precision = ["fp32"]
    """, "nodata.toml")
    runs = tmp_path / "runs" / "small"
    runs.mkdir(parents=True)
    (runs / "width-0.5_precision-fp32.ipynb").write_text("an old record")
    (runs / "superseded").mkdir()
    (runs / "superseded" / "x.ipynb").write_text("older")
    return tmp_path


BAD_INVOCATIONS = {
    "missing file": ["run", "nope.toml"],
    "malformed toml": ["run", "broken.toml"],
    "unknown --set name": ["run", "small.toml", "--set", "widht=2"],
    "bad --set value": ["run", "small.toml", "--set", "epochs=0"],
    "--set of an axis": ["run", "small.toml", "--set", "precision=amp"],
    "unknown --cell": ["run", "small.toml", "--cell", "width-9_precision-fp32"],
    "dataset missing": ["run", "nodata.toml"],
    "list, bad --set": ["list", "small.toml", "--set", "batch_size=-1"],
    "report, missing file": ["report", "nope.toml"],
}
if not torch.cuda.is_available():
    BAD_INVOCATIONS["no cuda here"] = ["run", "small.toml", "--set", "device=cuda"]


@pytest.mark.parametrize("argv", list(BAD_INVOCATIONS.values()), ids=list(BAD_INVOCATIONS))
def test_cli_user_errors(project, capsys, argv):
    before = snapshot(project / "runs")
    code = main([*argv, "--runs-dir", "runs", "--report-dir", "report"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("energy-study: error: "), err
    assert "Traceback" not in err and out == ""
    assert snapshot(project / "runs") == before  # nothing moved, nothing written
    assert sorted(p.name for p in project.iterdir()) == [
        "broken.toml", "nodata.toml", "runs", "small.toml"]  # no report, no data folder


def test_cli_error_messages_name_the_problem(project, capsys):
    main(["run", "small.toml", "--set", "widht=2"])
    assert "widht" in capsys.readouterr().err
    main(["run", "small.toml", "--set", "epochs=0"])
    assert "epochs=0" in capsys.readouterr().err
    main(["run", "nodata.toml"])
    err = capsys.readouterr().err
    assert "dataset='cifar10' not found" in err and "no-such-data" in err
    main(["run", "small.toml", "--cell", "nope"])
    assert "unknown cell(s) nope" in capsys.readouterr().err


def test_cli_list(project, capsys):
    code = main(["list", "small.toml", "--runs-dir", "runs"])
    out = capsys.readouterr().out
    assert code == 0
    assert "study small: 4 cells" in out
    statuses = dict(line.split() for line in out.splitlines()[1:])
    assert statuses == {"width-0.5_precision-fp32": "unreadable",
                        "width-0.5_precision-bf16": "missing",
                        "width-1_precision-fp32": "missing", "width-1_precision-bf16": "missing"}


def test_cli_set_reads_toml_values():
    from energy_lib.cli import _override

    assert _override("epochs=1") == ("epochs", 1)
    assert _override("lr = 0.5") == ("lr", 0.5)
    assert _override('device="cpu"') == ("device", "cpu")
    assert _override("device=cpu") == ("device", "cpu")
    assert _override("download=false") == ("download", False)


# ------------------------------------------------------------------------------------------
# the runner, with a tiny stand-in for notebooks/run.ipynb
# ------------------------------------------------------------------------------------------

STAND_IN_STUDY = """\
    [study]
    name = "fake"
    [fixed]
    dataset = "fashion_mnist"
    train_subset = 64
    test_subset = 64
    batch_size = 32
    epochs = 1
    device = "cpu"
    download = false
    [axes]
    precision = ["fp32", "bf16", "amp"]
"""


def stand_in_run_notebook(path: Path) -> Path:
    """Validates its parameters as run.ipynb does, fails for the precisions listed in the
    environment variable FAKE_RUN_FAIL, kills its kernel for those in FAKE_RUN_CRASH, and records
    a summary (no training)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "\n".join(f"{k} = {v!r}" for k, v in PARAMETERS.items()),
            metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os\nimport energy_lib.lab as lab\nfrom energy_lib import records\n"
            "config = lab.config_from(config, globals())\n"
            "if config.precision in os.environ.get('FAKE_RUN_FAIL', '').split(','):\n"
            "    raise RuntimeError(f'fake failure in {config.cell}')\n"
            "if config.precision in os.environ.get('FAKE_RUN_CRASH', '').split(','):\n"
            "    os._exit(1)  # the kernel dies, as under the OOM killer or a driver crash\n"
            "records.store('format', records.RECORD_FORMAT)\n"
            "records.store('summary', {'status': 'ok', 'best_val_acc_pct': 50.0})"),
    ]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    if not has_fashion_mnist():
        pytest.skip(needs_fashion_mnist.kwargs["reason"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(execute_module, "RUN_NOTEBOOK",
                        stand_in_run_notebook(tmp_path / "stand_in_run.ipynb"))
    monkeypatch.delenv("FAKE_RUN_FAIL", raising=False)
    monkeypatch.delenv("FAKE_RUN_CRASH", raising=False)
    study = load_study(write_study(tmp_path, STAND_IN_STUDY))
    return study, tmp_path / "runs"


@pytest.mark.slow
def test_failing_cell_does_not_stop_the_others(stand_in, monkeypatch, capsys):
    study, runs_root = stand_in
    folder = study.runs_dir(runs_root)
    monkeypatch.setenv("FAKE_RUN_FAIL", "bf16")
    outcome = run_study(study, runs_root=runs_root, progress=False)
    assert outcome.ran == ["precision-fp32", "precision-amp"]
    assert outcome.failed == ["precision-bf16"] and outcome.skipped == []
    assert set(outcome.seconds) == {"precision-fp32", "precision-bf16", "precision-amp"}
    failed = read_record(folder / "precision-bf16.ipynb")  # the failed record is kept
    assert failed.status == "failed" and "fake failure in precision-bf16" in failed.error
    assert failed.parameters["config"]["precision"] == "bf16"
    assert Path(failed.parameters["config"]["data_dir"]).is_absolute()
    assert in_progress(folder) == []
    assert cell_status(study, runs_root) == {"precision-fp32": "ok", "precision-bf16": "failed",
                                             "precision-amp": "ok"}
    assert "cell precision-bf16 failed: RuntimeError" in capsys.readouterr().out

    # the CLI reruns only the failed cell; still failing: exit 1, the cell named on stderr
    code = main(["run", str(study.path), "--runs-dir", str(runs_root), "--no-report",
                 "--no-plan"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "cells: 0 ran, 2 skipped (finished), 1 failed" in out
    assert "failed cells" in err and "precision-bf16" in err
    superseded = list((folder / "superseded").iterdir())
    assert len(superseded) == 1 and read_record(superseded[0]).status == "failed"

    # fixed: the rerun succeeds, the finished cells are not touched
    monkeypatch.delenv("FAKE_RUN_FAIL")
    finished = {n: (folder / f"{n}.ipynb").stat().st_mtime_ns
                for n in ("precision-fp32", "precision-amp")}
    outcome = run_study(study, runs_root=runs_root, progress=False)
    assert outcome.ran == ["precision-bf16"] and outcome.failed == []
    assert outcome.skipped == ["precision-fp32", "precision-amp"]
    assert {n: (folder / f"{n}.ipynb").stat().st_mtime_ns for n in finished} == finished
    assert read_record(folder / "precision-bf16.ipynb").status == "ok"
    assert len(list((folder / "superseded").iterdir())) == 2


@pytest.mark.slow
def test_cell_whose_kernel_dies_does_not_stop_the_others(stand_in, monkeypatch):
    study, runs_root = stand_in
    monkeypatch.setenv("FAKE_RUN_CRASH", "bf16")
    outcome = run_study(study, runs_root=runs_root, progress=False)
    assert outcome.ran == ["precision-fp32", "precision-amp"]
    assert outcome.failed == ["precision-bf16"]


@pytest.mark.slow
def test_interrupted_and_unreadable_cells_rerun_finished_cells_skipped(stand_in):
    study, runs_root = stand_in
    folder = study.runs_dir(runs_root)
    fp32, bf16, amp = study.cells
    finished_record(folder / f"{fp32.name}.ipynb", fp32.config)
    # an interrupted cell: the in-progress copy left in .running/ and an old record without
    # a summary at the target
    fake_executed_notebook(folder / f"{bf16.name}.ipynb", {"config": to_json(bf16.config)},
                           finished=False)
    (folder / ".running" / "deadhost-1").mkdir(parents=True)  # a killed runner's copy
    (folder / ".running" / "deadhost-1" / f"{bf16.name}.ipynb").write_text('{"half": ')
    (folder / f"{amp.name}.ipynb").write_text("garbage, not a notebook")
    before = snapshot(folder)
    assert cell_status(study, runs_root) == {fp32.name: "ok", bf16.name: "incomplete",
                                             amp.name: "unreadable"}

    outcome = run_study(study, runs_root=runs_root, progress=False)
    assert outcome.skipped == [fp32.name]
    assert outcome.ran == [bf16.name, amp.name] and outcome.failed == []
    assert snapshot(folder)[f"{fp32.name}.ipynb"] == before[f"{fp32.name}.ipynb"]
    assert cell_status(study, runs_root) == {c.name: "ok" for c in study.cells}
    assert in_progress(folder) == []
    # the replaced records and the killed runner's copy were moved aside, byte for byte
    kept = sorted((p.name.split(".")[0], p.read_bytes()) for p in (folder / "superseded").iterdir())
    assert kept == sorted([(bf16.name, before[f"{bf16.name}.ipynb"][0]),
                           (bf16.name, before[f".running/deadhost-1/{bf16.name}.ipynb"][0]),
                           (amp.name, before[f"{amp.name}.ipynb"][0])])


def in_progress(folder: Path) -> list[Path]:
    """Notebooks left in a study folder's .running/ (lock files live there too)."""
    return sorted((folder / ".running").rglob("*.ipynb"))


@pytest.mark.slow
def test_execute_notebook_keeps_a_failed_record(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.chdir(tmp_path)
    source = tmp_path / "raises.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import os\n"
                                          "assert os.getcwd() == os.environ['EXPECTED_CWD']\n"
                                          "assert not any(k.startswith('ENERGY_STUDY') for k in os.environ)\n"
                                          "raise ValueError(f'x was {x}')")]
    nbformat.write(nb, source)
    monkeypatch.setenv("EXPECTED_CWD", str(tmp_path))
    target = tmp_path / "runs" / "s" / "c.ipynb"
    other = tmp_path / "runs" / "s" / ".running" / "otherhost-7" / "c.ipynb"  # another runner's
    other.parent.mkdir(parents=True)
    other.write_text("in progress")
    with pytest.raises(pm.PapermillExecutionError):
        execute_notebook(source, target, {"x": 41}, kernel_name="python3")
    record = read_record(target)
    assert record.status == "failed" and record.error == "ValueError: x was 41"
    assert in_progress(target.parent) == [other]  # the other runner's copy is left alone
    assert other.read_text() == "in progress"


@needs_fashion_mnist
def test_run_study_checks_every_cell_before_running(tmp_path, monkeypatch):
    """A cell that cannot run (here: no dataset) stops the study before any notebook runs."""
    monkeypatch.chdir(tmp_path)
    executed = []
    monkeypatch.setattr(cell_module, "execute_notebook", lambda *a, **k: executed.append(a))
    study = load_study(write_study(tmp_path, """\
        [fixed]
        data_dir = "nothing-here"
        download = false
        [axes]
        dataset = ["fashion_mnist", "cifar10"]
    """))
    with pytest.raises(DatasetNotFound) as info:
        run_study(study, runs_root=tmp_path / "runs", progress=False)
    assert "dataset='cifar10' not found" in str(info.value) and executed == []
    assert not (tmp_path / "runs").exists()


def test_build_report_parameters_match_the_analysis_notebook(tmp_path, monkeypatch):
    """The names build_report passes are the analysis notebook's parameters."""
    seen = {}

    def fake_execute(source, target, parameters, **kwargs):
        seen.update(source=source, parameters=parameters)
        nbformat.write(nbformat.v4.new_notebook(), target)

    monkeypatch.setattr(runner_module, "execute_notebook", fake_execute)
    study = load_study(write_study(tmp_path, SMALL))
    report_dir = build_report(study, runs_root=tmp_path / "runs", report_root=tmp_path / "rep")
    assert report_dir == tmp_path / "rep" / "small"
    assert (report_dir / "analysis.html").is_file()
    analysis = nbformat.read(seen["source"], as_version=4)
    cell = next(c for c in analysis.cells if "parameters" in c.metadata.get("tags", []))
    declared = {line.split("=")[0].strip() for line in cell.source.splitlines()
                if "=" in line and not line.startswith("#")}
    assert set(seen["parameters"]) == declared
    assert seen["parameters"]["runs_dir"] == str((tmp_path / "runs" / "small").resolve())


# ------------------------------------------------------------------------------------------
# the real run notebook on a tiny Fashion-MNIST study, and its report
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_study_runs_clean_and_records_every_cell(tiny_run):
    """The shared tiny study (conftest.tiny_run): `energy-study run` exits 0, prints no
    traceback (kernels on ipc sockets: no port races between kernels), and each cell's record
    holds what the run notebook was given and what it measured."""
    assert tiny_run.returncode == 0, tiny_run.stderr
    printed = tiny_run.stdout + tiny_run.stderr
    assert "Traceback" not in printed and "DELIM" not in printed, printed
    # before the first cell, one line: the plan's total from a probe of each setting
    assert re.search(r"^energy-study: plan: 6 cells here, about \d+ (s|min) and [\d.]+ k?J "
                     r"\(probed 6 settings in \d+ s; --plan shows each cell\)$",
                     tiny_run.stdout, re.MULTILINE), tiny_run.stdout
    assert tiny_run.stdout.index("energy-study: plan:") < tiny_run.stdout.index("cells: 6 ran")
    study = load_study(tiny_run.study_file)
    assert len(study.cells) == 6
    folder = tiny_run.runs
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".running", *(f"{c.name}.ipynb" for c in study.cells)])
    assert in_progress(folder) == []  # .running/ keeps only the cells' (empty) lock files
    for cell in study.cells:
        record = read_record(folder / f"{cell.name}.ipynb")
        assert record.status == "ok", record.error
        assert record.config["cell"] == cell.name
        assert record.config["width"] == cell.config.width
        assert record.summary["compute_dtype"] == TINY_DTYPES[cell.config.precision]
        assert record.format == RECORD_FORMAT
        assert len(record.epochs) == 2
        assert [r["phase"] for r in record.energy if r["method"] == "constant-power"] == [
            "train", "eval", "train", "eval", "run"]  # idle_s = idle_after_s = 0: no idle window
        labels = {r["component"]: (r["method"], r["kind"]) for r in record.energy
                  if r["phase"] == "train"}
        assert labels["assumed-board"] == ("constant-power", "modelled")
        assert labels["cpu"] in {("tdp-model", "modelled"), ("zeus-rapl", "measured")}
        assert labels["ram"] in {("ram-model", "modelled"), ("zeus-rapl", "measured")}
        if labels["cpu"][0] == "tdp-model":  # which watts, and whether the table knew the CPU
            assert record.meters["cpu_tdp"]["origin"] in ("table", "default")
            assert record.meters["cpu_tdp"]["tdp_w"] > 0
        assert record.timeline["marks"][0]["label"] == "epoch 1"  # idle_s=0 here
        assert "git_commit" in record.provenance
        # the one hand-off: the validated config, and this execution's settings, as papermill
        # parameters (never environment variables)
        assert set(record.parameters) == {"config", "progress", "record_path"}
        assert record.parameters["config"]["data_dir"] == str((tiny_run.root / "data").resolve())
        assert record.parameters["progress"] == "text"
        assert record.parameters["record_path"] == str((folder / f"{cell.name}.ipynb").resolve())
    assert set(cell_status(study, tiny_run.root / "runs").values()) == {"ok"}
    # the CPU model's watts and their origin reach results.csv under the names the findings read
    runs = read_runs(folder).runs
    if (runs["cpu_method"] == "tdp-model").all():
        assert runs["meter_cpu_tdp_w"].gt(0).all()
        assert set(runs["meter_cpu_tdp_origin"]) <= {"table", "default"}


@pytest.mark.slow
def test_real_study_second_run_skips_finished_cells(tiny_run, monkeypatch):
    study = load_study(tiny_run.study_file)
    monkeypatch.chdir(tiny_run.root)
    before = snapshot(tiny_run.runs)
    outcome = run_study(study, runs_root="runs", progress=False)
    assert outcome.skipped == [c.name for c in study.cells] and outcome.ran == [] and outcome.failed == []
    assert snapshot(tiny_run.runs) == before


@pytest.mark.slow
def test_real_study_force_supersedes(tiny_run, tmp_path, monkeypatch):
    shutil.copytree(tiny_run.root, tmp_path / "project", copy_function=shutil.copy2)
    project = tmp_path / "project"
    study = load_study(project / "studies" / "tiny.toml")
    monkeypatch.chdir(project)
    folder = project / "runs" / "tiny"
    cell = study.cells[0].name
    old = (folder / f"{cell}.ipynb").read_bytes()
    outcome = run_study(study, force=True, runs_root="runs", progress=False, only=[cell])
    assert outcome.ran == [cell] and outcome.skipped == []
    superseded = list((folder / "superseded").iterdir())
    assert len(superseded) == 1 and superseded[0].read_bytes() == old
    assert superseded[0].name.startswith(f"{cell}.")
    new = read_record(folder / f"{cell}.ipynb")
    assert new.status == "ok" and (folder / f"{cell}.ipynb").read_bytes() != old
    assert read_runs_cells(folder) == sorted(c.name for c in study.cells)  # not superseded/


def read_runs_cells(folder: Path) -> list[str]:
    from energy_lib.records import read_runs

    return list(read_runs(folder).runs["cell"])


@pytest.mark.slow
def test_real_study_report(tiny_run, tmp_path):
    """The report `energy-study run` built for the shared tiny study (the analysis notebook,
    executed), and the same analysis under a study file that also names width 1, whose cells
    never ran: they are rows with status `missing`."""
    from energy_lib.report import build
    from energy_lib.study import read_study

    report_dir = tiny_run.report
    for name in FIGURES:
        png = report_dir / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(report_dir.glob(".*.tmp"))
    table = pd.read_csv(report_dir / "results.csv")
    assert list(table["status"]) == ["ok"] * 6
    assert set(table["energy_kind"]) <= {"modelled", "measured", "mixed"}
    assert (table["constant_power_energy_kwh"] > 0).all() and (table["energy_kwh"] > 0).all()
    assert (table["acc_pct_per_wh"] > 0).all() and (table["constant_power_acc_pct_per_wh"] > 0).all()
    assert set(table["compute_dtype"]) == {"float32", "bfloat16"}
    # the findings open with the machine that measured them, by its fingerprint
    from energy_lib.provenance import describe_machine, fingerprint

    here = describe_machine(fingerprint(torch.device("cpu")))
    assert (report_dir / "findings.md").read_text().splitlines()[2] == f"Measured on: {here}."

    executed = read_record(report_dir / "analysis.ipynb")
    assert executed.status != "failed" and executed.error == ""
    # the analysis reloads the study with a limit that takes the grid the command loaded
    assert executed.parameters["max_cells"] == 10_000
    html = (report_dir / "analysis.html").read_text()
    assert "<img" in html and "width-0.5_precision-amp" in html
    # findings first, each figure once
    assert "Findings: " in html and html.index("Findings: ") < html.index("<img")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert images and len(images) == len(set(images))
    # no table is cut: no elided column or row, no pandas "N rows x M columns" footer
    assert "<td>...</td>" not in html and "<th>...</th>" not in html
    assert not re.search(r"\d+ rows × \d+ columns", html)
    assert "energy (Wh)" in html and "overflow-wrap: break-word" in html
    for code_only in ("load_study", "read_runs", "write_report", "plt.close"):
        assert code_only not in html  # code cells are not exported, only their outputs
    assert '<div class="highlight' not in html

    wider = TINY_STUDY.replace("width = [0.25, 0.5]", "width = [0.25, 0.5, 1]")
    study = load_study(write_study(tmp_path / "studies", wider, "tiny.toml"))
    runs, state = read_study(study, tiny_run.runs)
    build(study, runs, state, tmp_path / "wider")
    table = pd.read_csv(tmp_path / "wider" / "results.csv")
    statuses = dict(zip(table["cell"], table["status"]))
    assert {c: s for c, s in statuses.items() if "width-1_" in c} == {
        f"width-1_precision-{p}": "missing" for p in ("fp32", "bf16", "amp")}
    assert [s for c, s in statuses.items() if "width-1_" not in c] == ["ok"] * 6
    assert table.loc[table["status"] == "missing", "best_val_acc_pct"].isna().all()


ORDER_STUDY = """\
    [study]
    name = "o"
    repeats = 3
    {order}
    [fixed]
    dataset = "fashion_mnist"
    download = false
    [axes]
    width = [0.5, 1]
    precision = ["fp32", "amp"]
    """


def test_cells_run_seed_major_by_default(tmp_path):
    study = load_study(write_study(tmp_path, ORDER_STUDY.format(order="")))
    seeds = [c.config.seed for c in study.cells]
    assert study.order == "interleaved"
    assert seeds == [0] * 4 + [1] * 4 + [2] * 4  # every setting of seed 0, then of seed 1, ...
    settings = [(c.config.width, c.config.precision) for c in study.cells]
    assert settings[:4] == settings[4:8] == settings[8:]


def test_grid_and_random_orders(tmp_path):
    grid = load_study(write_study(tmp_path, ORDER_STUDY.format(order='order = "grid"')))
    assert [c.config.seed for c in grid.cells][:3] == [0, 1, 2]  # setting after setting
    first = load_study(write_study(tmp_path, ORDER_STUDY.format(order='order = "random"')))
    again = load_study(write_study(tmp_path, ORDER_STUDY.format(order='order = "random"')))
    names = [c.name for c in first.cells]
    assert names == [c.name for c in again.cells]  # seeded: the same shuffle every time
    assert sorted(names) == sorted(c.name for c in grid.cells) and names != [c.name for c in grid.cells]


@pytest.mark.parametrize("line, fragment", [
    ('order = "sideways"', "order='sideways' is not allowed; choose one of interleaved, random, grid"),
    ("include_contended = 1", "include_contended='1' is not allowed; use true or false"),
])
def test_bad_run_settings_are_one_line(tmp_path, line, fragment):
    with pytest.raises(StudyError, match=re.escape(fragment)):
        load_study(write_study(tmp_path, ORDER_STUDY.format(order=line)))


def test_locate_finds_project_paths_from_a_notebook_folder(tmp_path, monkeypatch):
    """JupyterLab starts the kernel in notebooks/: the analysis notebook's 'studies/quick.toml'
    and 'runs/quick' must mean the project root's, not notebooks/studies/..."""
    from energy_lib.study import locate

    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "s.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert locate("studies/s.toml") == (tmp_path / "studies" / "s.toml", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert locate("studies/s.toml") == (tmp_path / "studies" / "s.toml", tmp_path)
    missing, base = locate("studies/nope.toml")
    assert missing == tmp_path / "studies" / "nope.toml" and base == tmp_path
    assert locate(tmp_path / "x.toml")[0] == tmp_path / "x.toml"


def test_block_of_adds_every_other_arm_of_a_comparison(tmp_path):
    study = load_study(write_study(tmp_path / "studies", """\
        [study]
        name = "b"
        repeats = 2
        compare = "precision"
        [axes]
        width = [1, 2]
        precision = ["fp32", "amp"]
    """))
    assert study.compared_axis == "precision"
    assert sorted(study.block_of(["width-1_precision-amp_seed-1"])) == [
        "width-1_precision-amp_seed-1", "width-1_precision-fp32_seed-1"]


@pytest.mark.slow
def test_rerunning_one_arm_is_said_and_rerun_block_takes_every_arm(tiny_run, tmp_path,
                                                                    monkeypatch, capsys):
    """On the tiny study's finished records, read as a two-precision comparison: --cell on one
    arm says in one line that the other stays as it was; --rerun-block plans both arms."""
    root = tmp_path / "project"
    shutil.copytree(tiny_run.root, root)
    text = TINY_STUDY.replace('precision = ["fp32", "bf16", "amp"]', 'precision = ["fp32", "amp"]')
    path = write_study(root / "studies", text.replace('name = "tiny"',
                                                      'name = "tiny"\n    compare = "precision"'),
                       "pair.toml")
    monkeypatch.chdir(root)
    arm = "width-0.25_precision-amp"
    assert main(["run", str(path), "--cell", arm, "--force", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("energy-study: note: --cell reruns only some arms of the precision "
                          "comparison; the other arms stay as they were")
    assert "study tiny: 1 cell to run here" in out
    assert main(["run", str(path), "--cell", arm, "--force", "--rerun-block", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "study tiny: 2 cells to run here" in out
    assert "width-0.25_precision-fp32 " in out and f"{arm} " in out
