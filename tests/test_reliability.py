"""Issue 8: concurrent runners, the study's own cells only, unwritable folders, user text as
plain text, refused parameters, and the CLI's edges (help, version, SIGINT, offline HTML).

The two-runner and kill tests start real `energy-study run` processes with real papermill
kernels on a tiny Fashion-MNIST study (slow); the rest is fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from conftest import fake_executed_notebook, has_fashion_mnist, needs_fashion_mnist, write_study
from energy_lib import RunConfig, __version__
from energy_lib import study as study_module
from energy_lib.study import cell as cell_module
from energy_lib.cli import main
from energy_lib.files import atomic_write, check_writable, move_no_replace
from energy_lib.locks import CellBusy, cell_lock, is_running, runner_id
from energy_lib.records import read_record, read_runs, to_json
from energy_lib.study import NOTEBOOKS_DIR, load_study, read_study, study_state

REPO = Path(__file__).resolve().parents[1]




def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("energy-study: error: "), err
    return lines[0]


TWO_CELLS = """\
    [study]
    name = "two"
    [fixed]
    dataset = "fashion_mnist"
    epochs = 1
    train_subset = 256
    test_subset = 128
    device = "cpu"
    download = false
    idle_s = 0
    idle_after_s = 0
    [axes]
    precision = ["fp32", "bf16"]
"""


# ------------------------------------------------------------------------------------------
# 1. locks
# ------------------------------------------------------------------------------------------

def test_cell_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    with cell_lock(tmp_path, "c"):
        assert is_running(tmp_path, "c") == runner_id()
        with pytest.raises(CellBusy) as info:  # a second lock object, as a worker thread would
            with cell_lock(tmp_path, "c"):
                pass
        assert info.value.owner == runner_id() and "running elsewhere" in str(info.value)
        with cell_lock(tmp_path, "other"):  # other cells are free
            pass
    assert is_running(tmp_path, "c") is None
    with cell_lock(tmp_path, "c"):  # released: free again
        pass


HOLDER = """\
import sys, time
from energy_lib.locks import cell_lock
with cell_lock(sys.argv[1], "c"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    """kill -9 of the holder: the OS drops its lock, nothing stale blocks the cell."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(CellBusy) as info:
            with cell_lock(tmp_path, "c"):
                pass
        assert info.value.owner.endswith(f"-{child.pid}")
    finally:
        child.kill()
        child.wait()
    assert is_running(tmp_path, "c") is None
    with cell_lock(tmp_path, "c"):
        pass


def test_is_running_writes_nothing(tmp_path):
    assert is_running(tmp_path / "nope", "c") is None
    assert not (tmp_path / "nope").exists() and list(tmp_path.iterdir()) == []


def test_move_no_replace_never_overwrites(tmp_path):
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("kept")
    with pytest.raises(FileExistsError):
        move_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "kept" and (tmp_path / "a").read_text() == "new"
    move_no_replace(tmp_path / "a", tmp_path / "c")
    assert not (tmp_path / "a").exists() and (tmp_path / "c").read_text() == "new"


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path):
    def fails(tmp: Path):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "out.csv", fails)
    assert list(tmp_path.iterdir()) == []


def test_runner_skips_a_cell_locked_elsewhere(tmp_path, monkeypatch, capsys):
    """The runner never starts a cell whose lock is held; it says so in one line and runs the
    rest."""
    if not has_fashion_mnist():
        pytest.skip(needs_fashion_mnist.kwargs["reason"])
    monkeypatch.chdir(tmp_path)
    ran = []

    def fake_execute(source, target, parameters, **kwargs):
        ran.append(target.stem)
        fake_executed_notebook(target, {"config": parameters, "summary": {"status": "ok"}})

    monkeypatch.setattr(cell_module, "execute_notebook", fake_execute)
    study = load_study(write_study(tmp_path, TWO_CELLS))
    folder = study.runs_dir("runs")
    with cell_lock(folder, "precision-fp32"):
        assert study_state(study, folder).cells["precision-fp32"] == "running"
        code = main(["run", str(study.path), "--no-report", "--no-plan"])
    out, err = capsys.readouterr()
    assert code == 0 and ran == ["precision-bf16"]
    assert f"cell precision-fp32: running elsewhere ({runner_id()}); skipped here" in out
    assert "cells: 1 ran, 0 skipped (finished), 1 running elsewhere, 0 failed" in out


def test_runner_does_not_rerun_a_cell_finished_elsewhere_meanwhile(tmp_path, monkeypatch):
    """Decided again under the lock: a cell another runner finished after this one started
    is skipped, also with --force (which reruns only what was there before)."""
    if not has_fashion_mnist():
        pytest.skip(needs_fashion_mnist.kwargs["reason"])
    monkeypatch.chdir(tmp_path)
    study = load_study(write_study(tmp_path, TWO_CELLS))
    folder = study.runs_dir("runs")
    ran = []
    real_lock = cell_module.cell_lock

    def lock_after_another_runner_finished(runs_dir, cell):
        if cell == "precision-bf16":  # the other runner finishes it while we run fp32
            fake_executed_notebook(folder / f"{cell}.ipynb", {
                "config": to_json(study.cells[1].config), "summary": {"status": "ok"}})
        return real_lock(runs_dir, cell)

    def fake_execute(source, target, parameters, **kwargs):
        ran.append(target.stem)
        fake_executed_notebook(target, {"config": parameters, "summary": {"status": "ok"}})

    monkeypatch.setattr(cell_module, "cell_lock", lock_after_another_runner_finished)
    monkeypatch.setattr(cell_module, "execute_notebook", fake_execute)
    outcome = study_module.run_study(study, force=True, runs_root="runs", progress=False)
    assert ran == ["precision-fp32"] and outcome.skipped == ["precision-bf16"]
    assert not (folder / "superseded").exists()


# ------------------------------------------------------------------------------------------
# 2. the report and the export hold exactly the study's cells
# ------------------------------------------------------------------------------------------

@pytest.fixture
def mixed_folder(tmp_path):
    """A study folder with an ok cell, a stale one, a missing one, a killed one, and two
    notebooks that are not cells of this study."""
    study = load_study(write_study(tmp_path, """\
        [study]
        name = "mix"
        [fixed]
        dataset = "fashion_mnist"
        [axes]
        width = [0.5, 1, 2, 3]
    """))
    folder = tmp_path / "runs" / "mix"
    a, b, c, d = study.cells
    epochs = [{"epoch": 1, "train_loss": 1.0, "train_acc_pct": 40.0, "val_loss": 1.1,
               "val_acc_pct": 50.0, "energy_j": 70.0, "energy_kwh": 70.0 / 3.6e6,
               "energy_method": "constant-power", "energy_kind": "modelled"}]
    summary = {"status": "ok", "energy_kwh_total": 70.0 / 3.6e6, "final_val_acc_pct": 50.0,
               "best_val_acc_pct": 50.0, "assumed_power_w": 70.0, "component_mean_power_w": 20.0}
    fake_executed_notebook(folder / f"{a.name}.ipynb", {
        "config": to_json(a.config), "epochs": epochs, "summary": summary})
    fake_executed_notebook(folder / f"{b.name}.ipynb", {  # made with other settings
        "config": to_json(b.config.replace(epochs=7)), "epochs": epochs,
        "summary": {"status": "ok"}})
    (folder / ".running" / "deadhost-9").mkdir(parents=True)
    (folder / ".running" / "deadhost-9" / f"{d.name}.ipynb").write_text("{")
    fake_executed_notebook(folder / "width-9.ipynb", {  # a cell of an older grid
        "config": to_json(a.config.replace(width=9.0, cell="width-9")), "epochs": epochs,
        "summary": {"status": "ok"}})
    fake_executed_notebook(folder / "other-study-cell.ipynb", {"summary": {"status": "ok"}})
    return study, folder


def test_study_state_classifies_the_folder(mixed_folder):
    study, folder = mixed_folder
    state = study_state(study, folder)
    assert state.cells == {"width-0.5": "ok", "width-1": "stale", "width-2": "missing",
                           "width-3": "incomplete"}
    assert state.foreign == [folder / "other-study-cell.ipynb", folder / "width-9.ipynb"]


def test_read_runs_with_a_selection_reads_only_those_cells(mixed_folder):
    _, folder = mixed_folder
    runs = read_runs(folder, cells={"width-0.5": "ok", "width-1": "stale", "width-2": "missing"})
    assert dict(zip(runs.runs["cell"], runs.runs["status"])) == {
        "width-0.5": "ok", "width-1": "stale", "width-2": "missing"}
    assert set(runs.epochs["cell"]) == {"width-0.5", "width-1"}
    assert len(read_runs(folder).runs) == 4  # without a selection: every notebook, as before


def test_report_and_export_hold_only_the_study_cells(mixed_folder, tmp_path):
    from energy_lib import report
    from energy_lib.report.export import export_runs

    study, folder = mixed_folder
    runs, state = read_study(study, folder)
    assert set(runs.epochs["cell"]) == {"width-0.5"}  # stale epochs never reach a figure
    written = report.write_report(runs, tmp_path / "rep")
    table = pd.read_csv(written["paths"]["results"])
    assert dict(zip(table["cell"], table["status"])) == {
        "width-0.5": "ok", "width-1": "stale", "width-2": "missing", "width-3": "incomplete"}
    exported = export_runs(runs, study.name)
    assert list(exported["experiment_id"]) == ["width-0.5"]


def test_cli_list_names_notebooks_that_are_not_part_of_the_study(mixed_folder, capsys):
    study, folder = mixed_folder
    assert main(["list", str(study.path), "--runs-dir", str(folder.parent)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [f"not part of this study: {folder / 'other-study-cell.ipynb'}",
                        f"not part of this study: {folder / 'width-9.ipynb'}"]
    assert "  width-1    stale" in out


def test_analysis_notebook_reads_the_study_with_its_overrides():
    source = (REPO / "notebooks" / "analysis.py").read_text()
    assert "read_study(study, root / runs_dir)" in source and "read_runs(" not in source
    assert "study_path, root = locate(study_file)" in source  # from notebooks/ too (JupyterLab)
    assert "load_study(study_path, repeats=repeats, max_cells=max_cells, **overrides)" in source
    assert "build(study, runs, state, root / report_dir)" in source  # figures plain: report.output


# ------------------------------------------------------------------------------------------
# 4. unwritable runs/, report/ and export targets: one line, exit 2, nothing written
# ------------------------------------------------------------------------------------------

def read_only_folder(tmp_path: Path) -> Path:
    """A folder where creating a file really fails, for root too (root ignores permission
    bits: sysfs refuses new files to everyone)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    else:
        folder = Path("/sys")
    try:
        handle, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return folder
    os.close(handle)
    os.unlink(name)
    pytest.skip(f"no folder here refuses new files ({folder} accepted one)")


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    executed = []
    monkeypatch.setattr(cell_module, "execute_notebook", lambda *a, **k: executed.append(a))
    write_study(tmp_path, TWO_CELLS, "two.toml")
    (tmp_path / "afile").write_text("a regular file")
    return tmp_path, executed


def assert_nothing_written(base: Path, before: dict) -> None:
    assert snapshot(base) == before
    assert not list(base.rglob("*.tmp")) and not list(base.rglob(".energy-study-write-check-*"))


@pytest.mark.parametrize("flag", ["--runs-dir", "--report-dir"])
def test_run_into_a_path_under_a_file(small, capsys, flag):
    base, executed = small
    before = snapshot(base)
    assert main(["run", "two.toml", flag, "afile/sub"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "afile/sub/two" in line and "is not a folder" in line
    assert executed == [] and sorted(p.name for p in base.iterdir()) == ["afile", "two.toml"]
    assert_nothing_written(base, before)


@pytest.mark.parametrize("flag", ["--runs-dir", "--report-dir"])
def test_run_into_a_read_only_folder(small, capsys, flag):
    base, executed = small
    folder = read_only_folder(base)
    before = snapshot(base)
    assert main(["run", "two.toml", flag, str(folder / "deeper")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(folder / "deeper" / "two") in line and "not writable" in line
    assert executed == [] and not (folder / "deeper").exists()
    assert_nothing_written(base, before)


def test_report_into_a_read_only_folder(small, capsys):
    base, executed = small
    folder = read_only_folder(base)
    assert main(["report", "two.toml", "--report-dir", str(folder)]) == 2
    assert "not writable" in one_error_line(capsys.readouterr().err) and executed == []


@pytest.mark.parametrize("where", ["folder", "read-only", "under a file"])
def test_export_output_that_cannot_be_written(small, capsys, where):
    base, _ = small
    (base / "adir").mkdir()
    output = {"folder": base / "adir", "read-only": read_only_folder(base) / "log.csv",
              "under a file": base / "afile" / "log.csv"}[where]
    before = snapshot(base)
    assert main(["export", "two.toml", "--output", str(output)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(output if where == "folder" else output.parent) in line
    assert_nothing_written(base, before)
    assert list((base / "adir").iterdir()) == []


def test_check_writable_creates_nothing(tmp_path):
    check_writable(tmp_path / "a" / "b", "runs")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# 6. grid size and user text
# ------------------------------------------------------------------------------------------

def test_grid_size_is_checked_before_any_cell_is_built(tmp_path, monkeypatch, capsys):
    built = []
    monkeypatch.setattr(RunConfig, "from_dict", classmethod(lambda cls, v: built.append(v)))
    axes = "\n".join(f"{name} = {list(range(1, 11))}" for name in
                     ("epochs", "batch_size", "seed", "crop_padding", "num_workers"))
    path = write_study(tmp_path, f"[axes]\n{axes}\n")
    assert main(["list", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the grid has 100,000 cells" in line and "limit of 10,000" in line
    assert "--max-cells" in line and built == []


def test_max_cells_option(tmp_path, capsys):
    path = write_study(tmp_path, "[axes]\nseed = [1, 2, 3]\n")
    assert main(["list", str(path), "--max-cells", "2"]) == 2
    assert "the grid has 3 cells (3 seed), more than the limit of 2" in capsys.readouterr().err
    assert main(["list", str(path), "--max-cells", "3", "--runs-dir", str(tmp_path)]) == 0
    assert len(load_study(path, max_cells=3).cells) == 3


@pytest.mark.parametrize("toml, message", [
    ('[study]\nname = "tab\\there"\n', "study name 'tab\\there' cannot be a file name: it "
     "contains a control character"),
    ('[fixed]\ndataset = "fashion_mnist"\n[axes]\ndata_dir = ["a\\nb"]\n',
     "cell name 'data_dir-a\\nb' cannot be a file name: it contains a control character"),
    ('[axes]\ndata_dir = ["' + "x" * 250 + '"]\n', "is longer than 200 bytes"),
])
def test_names_that_cannot_be_file_names(tmp_path, capsys, toml, message):
    path = write_study(tmp_path, toml)
    assert main(["list", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_html_report_is_self_contained_and_escapes_text(tmp_path):
    from energy_lib.report import export_html

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(study.description)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text="<script>alert('x')</script> $x$\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Study analysis"), cell]
    nbformat.write(nb, tmp_path / "a.ipynb")
    html = export_html(tmp_path / "a.ipynb", tmp_path / "a.html").read_text()
    assert "&lt;script&gt;alert" in html and "<script>alert" not in html
    assert "<script" not in html  # no require.js, MathJax, Mermaid: nothing from a CDN
    assert "cdnjs" not in html and "unpkg" not in html
    assert [p.name for p in tmp_path.iterdir()] == ["a.ipynb", "a.html"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "a.ipynb"]


# ------------------------------------------------------------------------------------------
# 7. parameters that would be ignored or break the notebook are refused
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["[axes]\n{name} = ['a', 'b']", "[fixed]\n{name} = 'a'",
                                   "--set"])
@pytest.mark.parametrize("name", ["cell", "study"])
def test_cell_and_study_cannot_be_set(tmp_path, capsys, where, name):
    if where == "--set":
        path = write_study(tmp_path, "[axes]\nseed = [1]\n")
        argv = ["list", str(path), "--set", f"{name}=x"]
    else:
        path = write_study(tmp_path, where.format(name=name).replace("'", '"') + "\n")
        argv = ["list", str(path)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{name!r} cannot be set in" in line and "the runner sets" in line


@pytest.mark.slow
@pytest.mark.parametrize("parameters, message", [
    ({"_width": 3}, "parameter '_width' not allowed: the run notebook's parameters are config, "
                    "progress, record_path; RunConfig fields go inside `config`"),
    ({"width": 2}, "parameter 'width' not allowed: the run notebook's parameters are config, "
                   "progress, record_path; width is a RunConfig field: pass it inside `config`"),
    ({"config": {"widht": 2}}, "unknown parameter 'widht'"),
    ({"config": 2}, "parameter config=2 is not allowed: it is a mapping of RunConfig fields"),
    ({"progress": "bar"}, "parameter progress='bar' is not allowed; use one of: auto, text"),
])
def test_papermill_parameters_that_are_not_fields_are_refused(tmp_path, parameters, message):
    import papermill as pm

    out = tmp_path / "out.ipynb"
    settings = {"config": {"dataset": "fashion_mnist", "epochs": 1, "train_subset": 64,
                           "test_subset": 64, "idle_s": 0, "idle_after_s": 0}}
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(NOTEBOOKS_DIR / "run.ipynb"), str(out), progress_bar=False,
                            parameters={**settings, **parameters}, cwd=str(tmp_path))
    assert info.value.ename == "ConfigError"
    assert info.value.evalue.startswith(message) and "\n" not in info.value.evalue
    record = read_record(out)
    assert record.status == "failed" and not record.config


# ------------------------------------------------------------------------------------------
# 9. the CLI's edges
# ------------------------------------------------------------------------------------------

def test_help_is_for_users_and_version_is_printed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "Measure the energy it takes to train neural networks" in out
    assert "argument parsing" not in out and "study.py" not in out
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"energy-study {__version__}"


def test_pyproject_license_is_an_spdx_string():
    import tomllib

    document = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert document["project"]["license"] == "MIT"
    assert "setuptools>=77" in document["build-system"]["requires"][0]
    assert any(d.startswith("filelock") for d in document["project"]["dependencies"])


# ------------------------------------------------------------------------------------------
# real runners (slow): two at once, one killed, one interrupted
# ------------------------------------------------------------------------------------------

FOUR_CELLS = """\
    [study]
    name = "race"
    [fixed]
    dataset = "fashion_mnist"
    epochs = {epochs}
    width = 0.25
    train_subset = 256
    test_subset = 128
    batch_size = 64
    device = "cpu"
    download = false
    idle_s = 0
    idle_after_s = 0
    [axes]
    precision = ["fp32", "bf16"]
    seed = [0, 1]
"""


def runner(base: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "energy_lib", "run", "race.toml", "--no-plan",
                             *args],
                            cwd=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def ran_count(out: str) -> int:
    line = next(text for text in out.splitlines() if text.startswith("cells: "))
    return int(line.split()[1])


@pytest.mark.slow
@needs_fashion_mnist
def test_two_runners_at_once_run_every_cell_exactly_once(tmp_path):
    # two cells are enough for a race: each runner meets the other's lock once
    write_study(tmp_path, FOUR_CELLS.format(epochs=1).replace('["fp32", "bf16"]', '["fp32"]'),
                "race.toml")
    first, second = runner(tmp_path), runner(tmp_path, "--no-report")  # one report: the first's
    (out1, err1), (out2, err2) = first.communicate(timeout=600), second.communicate(timeout=600)
    assert (first.returncode, second.returncode) == (0, 0), err1 + err2
    for err in (err1, err2):
        assert "Traceback" not in err and "Error" not in err, err
    folder = tmp_path / "runs" / "race"
    cells = ["precision-fp32_seed-0", "precision-fp32_seed-1"]
    assert ran_count(out1) + ran_count(out2) == 2  # every cell ran exactly once
    assert "running elsewhere" in out1 + out2  # they did run at the same time
    assert "energy-study: plan:" not in out1 + out2  # --no-plan: no probe before the cells
    for cell in cells:  # every finished record intact
        record = read_record(folder / f"{cell}.ipynb")
        assert record.status == "ok" and record.config["cell"] == cell
    assert not (folder / "superseded").exists()  # nothing replaced
    assert sorted((folder / ".running").rglob("*.ipynb")) == []
    table = pd.read_csv(tmp_path / "report" / "race" / "results.csv")
    assert set(table["cell"]) == set(cells) and set(table["status"]) <= {"ok", "running"}
    assert (tmp_path / "report" / "race" / "analysis.html").is_file()


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
@needs_fashion_mnist
def test_a_killed_runner_leaves_no_lock_behind(tmp_path):
    write_study(tmp_path, FOUR_CELLS.format(epochs=30), "race.toml")
    folder = tmp_path / "runs" / "race"
    killed = runner(tmp_path, "--no-report", "--cell", "precision-fp32_seed-0")
    wait_for(lambda: list((folder / ".running").glob("*/precision-fp32_seed-0.ipynb")))
    assert is_running(folder, "precision-fp32_seed-0") is not None
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert is_running(folder, "precision-fp32_seed-0") is None

    write_study(tmp_path, FOUR_CELLS.format(epochs=1), "race.toml")
    again = runner(tmp_path, "--no-report", "--cell", "precision-fp32_seed-0")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert ran_count(out) == 1 and "Traceback" not in err
    assert read_record(folder / "precision-fp32_seed-0.ipynb").status == "ok"
    kept = list((folder / "superseded").iterdir())  # the killed runner's copy, kept
    assert len(kept) == 1 and kept[0].name.startswith("precision-fp32_seed-0.")
    assert [p for p in (folder / ".running").iterdir() if p.is_dir()] == []  # its folder gone


@pytest.mark.slow
@needs_fashion_mnist
def test_sigint_during_a_cell_prints_one_line(tmp_path):
    write_study(tmp_path, FOUR_CELLS.format(epochs=30), "race.toml")
    folder = tmp_path / "runs" / "race"
    run = subprocess.Popen([sys.executable, "-m", "energy_lib", "run", "race.toml", "--no-report",
                            "--no-plan"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                           start_new_session=True)
    wait_for(lambda: list((folder / ".running").glob("*/*.ipynb")))
    time.sleep(2)  # inside the cell's training
    os.killpg(run.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the runner's whole group
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130
    assert "Traceback" not in err and "Error" not in err and "Kernel died" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert lines == ["energy-study: interrupted; run the same command again to resume "
                     "(finished cells are kept)"]
    statuses = study_state(load_study(tmp_path / "race.toml"), folder).cells
    assert statuses["precision-fp32_seed-0"] == "incomplete"  # no record that reads finished
    assert not list(folder.glob("*.ipynb"))


@pytest.mark.slow
@needs_fashion_mnist
def test_sigterm_during_a_cell_stops_its_kernel_and_prints_one_line(tmp_path):
    """SIGTERM to the runner alone (what `kill`, `timeout` and systemd send): exit 143 with
    one line, the cell's kernel stopped with it, no record that reads finished."""
    import psutil

    write_study(tmp_path, FOUR_CELLS.format(epochs=30), "race.toml")
    folder = tmp_path / "runs" / "race"
    run = runner(tmp_path, "--no-report")
    wait_for(lambda: list((folder / ".running").glob("*/*.ipynb")))
    time.sleep(2)  # inside the cell's training
    children = psutil.Process(run.pid).children(recursive=True)
    assert children  # the cell's kernel
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143
    assert "Traceback" not in err and "Kernel died" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert lines == ["energy-study: terminated (SIGTERM); run the same command again to resume "
                     "(finished cells are kept)"]
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    statuses = study_state(load_study(tmp_path / "race.toml"), folder).cells
    assert statuses["precision-fp32_seed-0"] == "incomplete"
    assert not list(folder.glob("*.ipynb"))


# ------------------------------------------------------------------------------------------
# Issue 30: odd filesystem states, records that lie about themselves, the project root
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["run", "two.toml", "--runs-dir", "loop"], ["run", "two.toml", "--report-dir", "loop"],
    ["list", "two.toml", "--runs-dir", "loop"], ["report", "two.toml", "--report-dir", "loop"],
    ["export", "two.toml", "--output", "loop"]])
def test_a_symlink_loop_given_as_a_path_is_one_line(small, capsys, command):
    base, executed = small
    os.symlink("loop2", base / "loop")
    os.symlink("loop", base / "loop2")
    before = snapshot(base)
    assert main(command) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "loop" in line and "symbolic link loop" in line
    assert executed == [] and not (base / "runs").exists() and not (base / "report").exists()
    assert_nothing_written(base, before)


@pytest.mark.parametrize("inner", [".running", "superseded"])
def test_a_file_where_the_runner_keeps_its_folders_is_refused_before_any_cell(small, capsys, inner):
    base, executed = small
    folder = base / "runs" / "two"
    folder.mkdir(parents=True)
    (folder / inner).write_text("a sync tool's conflict copy")
    before = snapshot(base)
    assert main(["run", "two.toml", "--no-report", "--force"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(folder / inner) in line and "is not a folder" in line
    assert executed == []
    assert_nothing_written(base, before)


def test_a_symlink_to_a_folder_that_takes_no_files_is_one_line(small, capsys):
    base, executed = small
    os.symlink(read_only_folder(base), base / "link")
    before = snapshot(base)
    assert main(["run", "two.toml", "--runs-dir", "link"]) == 2
    assert "not writable" in one_error_line(capsys.readouterr().err)
    assert executed == []
    assert_nothing_written(base, before)


def test_a_study_file_that_is_a_symlink_loop_is_one_line(small, capsys):
    base, _ = small
    os.symlink("x.toml", base / "y.toml")
    os.symlink("y.toml", base / "x.toml")
    assert main(["list", "x.toml"]) == 2
    assert "symbolic link to nothing" in one_error_line(capsys.readouterr().err)


def lying(notebook_path: Path, how: str) -> None:
    """A finished-looking record of cell precision-fp32 that lies about itself in one way."""
    summary = {"status": "ok", "best_val_acc_pct": 50.0, "contended": False}
    records = {"config": {"cell": "precision-fp32"}, "summary": summary}
    if how == "status outside the vocabulary":
        summary["status"] = "finished"
    elif how == "contended as a string":
        summary["contended"] = "yes"
    elif how == "a number as text":
        summary["best_val_acc_pct"] = "50%"
    elif how == "energy not a list":
        records["energy"] = {"joules": 5}
    fake_executed_notebook(notebook_path, records)
    if how == "a stored value without its name":
        from energy_lib.records import MIME_TYPE

        notebook = nbformat.read(notebook_path, as_version=4)
        del notebook.cells[0].outputs[0]["data"][MIME_TYPE]["name"]
        nbformat.write(notebook, notebook_path)


@pytest.mark.parametrize("how", ["status outside the vocabulary", "contended as a string",
                                 "a number as text", "energy not a list",
                                 "a stored value without its name"])
def test_a_record_that_lies_about_itself_is_unreadable_in_list_and_report(small, capsys, how):
    """One reader decides: `list`, the report's tables and the export all call the cell
    unreadable and name it; none crashes."""
    base, _ = small
    study = load_study(base / "two.toml")
    folder = study.runs_dir()
    lying(folder / "precision-fp32.ipynb", how)
    before = snapshot(base)
    assert main(["list", "two.toml"]) == 0
    listed = capsys.readouterr().out
    assert "precision-fp32" in listed and "unreadable" in listed
    runs, state = read_study(study, folder)
    table = runs.runs.set_index("cell")
    assert table.loc["precision-fp32", "status"] == "unreadable"
    assert any("precision-fp32.ipynb" in problem and "not a usable record" in problem
               for problem in runs.problems)
    assert runs.finished().empty and runs.energy.empty
    assert snapshot(base) == before  # read, never touched


def test_python_m_an_old_module_path_is_one_line():
    done = subprocess.run([sys.executable, "-m", "energy_lib.runner"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"{sys.executable}: No module named energy_lib.runner"]


# The project root: the nearest studies/ folder the study file lies in as given

def test_a_study_file_in_a_subfolder_of_studies_means_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "studies" / "sub").mkdir(parents=True)
    path = write_study(tmp_path / "studies" / "sub", TWO_CELLS, "two.toml")
    monkeypatch.chdir(tmp_path / "studies")
    study = load_study(path)
    assert study.root == tmp_path
    assert study.runs_dir() == tmp_path / "runs" / "two"
    assert study.report_dir() == tmp_path / "report" / "two"


def test_a_study_file_linked_from_another_project_means_this_project(tmp_path, monkeypatch):
    other, mine = tmp_path / "other", tmp_path / "mine"
    target = write_study(other / "studies", TWO_CELLS, "two.toml")
    (mine / "studies").mkdir(parents=True)
    os.symlink(target, mine / "studies" / "two.toml")
    monkeypatch.chdir(mine)
    study = load_study("studies/two.toml")
    assert study.root == mine and study.runs_dir() == mine / "runs" / "two"
    monkeypatch.chdir(tmp_path)  # from anywhere: the path as given decides, not the link's target
    assert load_study(mine / "studies" / "two.toml").root == mine


@pytest.mark.parametrize("command", [["list", "two.toml"], ["export", "two.toml"],
                                     ["run", "two.toml", "--no-report"]])
def test_a_runs_folder_that_is_a_file_is_one_line(small, capsys, command):
    base, executed = small
    (base / "runs").mkdir()
    (base / "runs" / "two").write_text("not a folder")
    before = snapshot(base)
    assert main(command) == 2
    assert "runs/two is not a folder" in one_error_line(capsys.readouterr().err)
    assert executed == []
    assert_nothing_written(base, before)
