"""Scale-out on a real distributed.LocalCluster (2 process workers, 1 thread each): the same
cells and statuses as a serial run, failure isolation, a worker killed mid-cell, one cell per
worker at a time; the CLI's one-line errors; the runner's record and the shared-CPU flag; the
README's SLURM cluster built without SLURM.

Most cells here run a stand-in notebook that trains nothing (benchmarks.suite.stand_in_notebook):
it validates its parameters, sleeps `idle_s`, fails for seed 666 and records when it ran."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import types
from pathlib import Path

import pytest

import energy_lib.study.cell as cell_module
import energy_lib.study.execute as execute_module
from benchmarks.suite import FAIL_SEED, stand_in_notebook
from conftest import fake_executed_notebook, needs_fashion_mnist, write_study
from energy_lib.cli import main
from energy_lib.records import STORED, note_runner, read_record
from energy_lib.study import dask_executor
from energy_lib.study.dask_executor import DaskExecutor, local_cluster
from energy_lib.study import cell_status, load_study, run_study

ROOT = Path(__file__).resolve().parents[1]
distributed = pytest.importorskip("distributed")




STAND_IN = """\
    [study]
    name = "si"
    [fixed]
    dataset = "fashion_mnist"
    download = false
    idle_s = 0.5
    [axes]
    seed = [0, 1, 2]
    """


@pytest.fixture(scope="module")
def client():
    """One LocalCluster for the module: 2 process workers, 1 thread, resource device=1."""
    cluster = local_cluster(2, gpus=0)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Cells execute the stand-in notebook (serial and Dask alike: run_study passes the path
    to the workers); the working folder is tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(execute_module, "RUN_NOTEBOOK", stand_in_notebook(tmp_path / "nb"))
    return tmp_path


def _executor(path: Path) -> dict:
    return read_record(path).executor


def stored_names(record) -> set[str]:
    """The names a record stored (schema values that are set, and any others)."""
    return {name for name in STORED if getattr(record, name)} | set(record.extra)


# ------------------------------------------------------------------------------------------
# on a real LocalCluster
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_fashion_mnist
def test_dask_gives_the_cells_and_statuses_of_a_serial_run(stand_in, client):
    study = load_study(write_study(stand_in, STAND_IN.replace("[0, 1, 2]", f"[0, {FAIL_SEED}, 2]")))
    serial = run_study(study, runs_root="serial", progress=False)
    dask = run_study(study, runs_root="dask", progress=False, executor=DaskExecutor(client))
    assert sorted(dask.ran) == sorted(serial.ran) == ["seed-0", "seed-2"]
    assert dask.failed == serial.failed == [f"seed-{FAIL_SEED}"]
    statuses = cell_status(study, "serial")
    assert cell_status(study, "dask") == statuses
    assert statuses == {"seed-0": "ok", f"seed-{FAIL_SEED}": "failed", "seed-2": "ok"}
    for cell in study.cells:
        a = read_record(Path("serial/si") / f"{cell.name}.ipynb")
        b = read_record(Path("dask/si") / f"{cell.name}.ipynb")
        assert stored_names(a) == stored_names(b) and a.config == b.config
        assert a.executor["executor"] == "serial"
        where = b.executor
        assert where["executor"] == "dask" and where["worker"] in client.scheduler_info()["workers"]
        assert where["shared_cpu"] is True and where["cells_at_once_on_host"] == 2
    assert not list(Path("dask/si/.running").glob("*/*.ipynb"))  # every copy renamed into place
    # resume: nothing finished is run again, the failed cell is
    again = run_study(study, runs_root="dask", progress=False, executor=DaskExecutor(client))
    assert again.skipped == ["seed-0", "seed-2"] and again.failed == [f"seed-{FAIL_SEED}"]
    assert len(list(Path("dask/si/superseded").glob("*.ipynb"))) == 1


@pytest.mark.slow
@needs_fashion_mnist
def test_a_worker_killed_mid_cell_leaves_it_incomplete_and_a_rerun_completes_it(stand_in, client):
    study = load_study(write_study(stand_in, """\
        [study]
        name = "kill"
        [fixed]
        dataset = "fashion_mnist"
        download = false
        [axes]
        idle_s = [0.0, 3.0]
        """))
    folder = Path("runs/kill")
    victim = "idle_s-3"
    killed = []

    def kill_its_worker():
        """Wait for the cell's in-progress copy, then SIGKILL the worker process holding it."""
        deadline = time.time() + 60
        owner = folder / ".running" / f"{victim}.owner"
        while time.time() < deadline:
            copies = list(folder.glob(f".running/*/{victim}.ipynb"))
            if copies and owner.is_file() and owner.read_text().strip():
                pid = int(owner.read_text().strip().split("-t")[0].rpartition("-")[2])
                assert pid != os.getpid()  # a worker's, never this test's
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    import threading

    killer = threading.Thread(target=kill_its_worker)
    killer.start()
    outcome = run_study(study, runs_root="runs", progress=False, executor=DaskExecutor(client))
    killer.join()
    assert killed, "the cell never started"
    assert outcome.failed == [victim] and outcome.ran == ["idle_s-0"]
    assert cell_status(study, "runs") == {"idle_s-0": "ok", victim: "incomplete"}
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    again = run_study(study, runs_root="runs", progress=False, executor=DaskExecutor(client))
    assert again.ran == [victim] and again.skipped == ["idle_s-0"] and not again.failed
    assert cell_status(study, "runs") == {"idle_s-0": "ok", victim: "ok"}
    assert [p.name.split(".")[0] for p in (folder / "superseded").glob("*.ipynb")] == [victim]
    deadline = time.time() + 15  # the dead worker's kernel goes with it (ipykernel's parent poller)
    while _kernels_for(stand_in) and time.time() < deadline:
        time.sleep(0.5)
    assert not _kernels_for(stand_in)


@pytest.mark.slow
@needs_fashion_mnist
def test_a_worker_runs_one_cell_at_a_time_even_with_two_threads(stand_in):
    """One worker with two threads: only the device=1 resource keeps its cells apart (without
    it the two threads would run two cells at once and this test would fail; two cells suffice)."""
    study = load_study(write_study(stand_in, STAND_IN.replace("idle_s = 0.5", "idle_s = 1.5")
                                   .replace("[0, 1, 2]", "[0, 1]")))
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                       resources={"device": 1}, dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        outcome = run_study(study, runs_root="runs", progress=False, executor=DaskExecutor(c))
    assert sorted(outcome.ran) == ["seed-0", "seed-1"]
    spans = sorted((r.extra["stand_in"]["started"], r.extra["stand_in"]["ended"])
                   for r in (read_record(p) for p in Path("runs/si").glob("*.ipynb")))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"two cells overlapped on one worker: {spans}"


@pytest.mark.slow
@needs_fashion_mnist
def test_two_workers_share_the_cells(stand_in, client):
    study = load_study(write_study(stand_in, STAND_IN.replace("[0, 1, 2]", "[0, 1, 2, 3]")))
    run_study(study, runs_root="runs", progress=False, executor=DaskExecutor(client))
    workers = {_executor(p)["worker"] for p in Path("runs/si").glob("*.ipynb")}
    assert len(workers) == 2


@pytest.mark.slow
@needs_fashion_mnist
def test_cli_dask_run_on_the_real_notebook(tmp_path, monkeypatch, capsys):
    """The real run notebook, a tiny Fashion-MNIST study, `--executor dask --workers 2`,
    including the analysis: results.csv flags the cells whose CPU was shared."""
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, """\
        [study]
        name = "tiny"
        [fixed]
        dataset = "fashion_mnist"
        download = false
        train_subset = 256
        test_subset = 128
        epochs = 1
        width = 0.25
        batch_size = 64
        idle_s = 0
        idle_after_s = 0
        [axes]
        precision = ["fp32", "bf16"]
        """)
    code = main(["run", str(path), "--executor", "dask", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    assert "cells: 2 ran, 0 skipped (finished), 0 failed" in out
    import pandas as pd

    table = pd.read_csv(tmp_path / "report/tiny/results.csv")
    assert list(table["status"]) == ["ok", "ok"]
    assert all("shared_cpu" in str(f) for f in table["flags"])
    html = (tmp_path / "report/tiny/analysis.html").read_text()
    assert "shared_cpu: 2 cell(s) ran on a host where up to 2 cells ran at once" in html


# ------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing run
# ------------------------------------------------------------------------------------------

@pytest.fixture
def one_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(cell_module, "execute_notebook", lambda *a, **k: ran.append(a))
    path = write_study(tmp_path, """\
        [fixed]
        dataset = "fashion_mnist"
        download = false
        """)
    return path, ran


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray"], "--executor 'ray': unknown; choose one of serial, dask"),
    (["--executor", "dask", "--workers", "0"], "--workers 0: must be at least 1"),
    (["--workers", "2"], "--workers and --scheduler need --executor dask"),
    (["--executor", "dask"], "--executor dask needs either --workers N"),
    (["--executor", "dask", "--workers", "2", "--scheduler", "tcp://x:1"],
     "--executor dask needs either --workers N"),
])
def test_bad_executor_options_are_one_line(one_cell, capsys, args, message):
    path, ran = one_cell
    code = main(["run", str(path), *args])
    out, err = capsys.readouterr()
    assert code == 2 and ran == [] and not Path("runs").exists()
    assert len(err.strip().splitlines()) == 1 and message in err


def test_unreachable_scheduler_is_one_line_within_the_timeout(one_cell, capsys, monkeypatch):
    import socket

    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path, ran = one_cell
    started = time.perf_counter()
    code = main(["run", str(path), "--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}"])
    _, err = capsys.readouterr()
    assert time.perf_counter() - started < 20
    assert code == 2 and ran == [] and len(err.strip().splitlines()) == 1
    assert f"--scheduler tcp://127.0.0.1:{port}: no Dask scheduler reachable there within 2 s" in err


def test_without_dask_the_error_names_the_install_command(one_cell, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    path, ran = one_cell
    code = main(["run", str(path), "--executor", "dask", "--workers", "2"])
    _, err = capsys.readouterr()
    assert code == 2 and ran == [] and len(err.strip().splitlines()) == 1
    assert 'pip install "energy-lib[dask]"' in err


def test_workers_beyond_the_gpus_are_capped_and_said(monkeypatch):
    made, said = {}, []
    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = lambda **kwargs: made.update(kwargs) or "cluster"
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    assert local_cluster(5, gpus=2, say=said.append) == "cluster"
    assert made["n_workers"] == 2 and made["threads_per_worker"] == 1
    assert made["resources"] == {"device": 1}
    assert said == ["--workers 5: capped at 2, one worker per CUDA GPU"]
    said.clear()
    local_cluster(1, gpus=2, say=said.append)
    assert made["n_workers"] == 1 and said == []


def test_gpus_without_dask_cuda_is_one_line(monkeypatch):
    from energy_lib.errors import StudyError

    monkeypatch.setitem(sys.modules, "dask_cuda", None)
    with pytest.raises(StudyError, match="2 CUDA GPU\\(s\\) here, but dask-cuda .* pip install dask-cuda"):
        local_cluster(2, gpus=2)


def test_a_worker_that_cannot_write_the_runs_folder_fails_its_cell_in_one_line(tmp_path, monkeypatch):
    """The task itself (as a worker runs it): an unwritable runs folder is the cell's failure."""

    worker = types.SimpleNamespace(address="tcp://10.0.0.9:4000", name="w9")
    monkeypatch.setitem(sys.modules, "distributed",
                        types.SimpleNamespace(get_worker=lambda: worker))
    study = load_study(write_study(tmp_path, STAND_IN))
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    done = dask_executor._cell_task(study.cells[0], blocked / "si", False, None, None, None,
                               {"10.0.0.9": 1}, "tcp://s:1")
    assert done.result == "failed" and done.cell == "seed-0"
    assert done.message.startswith("cell seed-0 failed: runs folder")
    assert "\n" not in done.message and done.worker.startswith("worker w9@")


def test_workers_without_the_device_resource_are_refused(tmp_path):
    from energy_lib.errors import StudyError
    from energy_lib.study import StudyOutcome

    fake = types.SimpleNamespace(
        scheduler=types.SimpleNamespace(address="tcp://s:8786"),
        scheduler_info=lambda n_workers=-1: {"workers": {
            "tcp://10.0.0.1:1": {"host": "10.0.0.1", "resources": {}}}})
    study = load_study(write_study(tmp_path, STAND_IN))
    with pytest.raises(StudyError, match="offer no 'device' resource.*--resources device=1"):
        dask_executor.run_cells(fake, list(study.cells), tmp_path, StudyOutcome(), force=frozenset(),
                           seen={c.name: None for c in study.cells})


# ------------------------------------------------------------------------------------------
# the runner's record
# ------------------------------------------------------------------------------------------

def test_note_runner_adds_a_record_that_reads_back(tmp_path):
    path = fake_executed_notebook(tmp_path / "c.ipynb", {"summary": {"status": "ok"}})
    note_runner(path, {"executor": "dask", "worker": "tcp://h:1", "shared_cpu": True})
    record = read_record(path)
    assert record.status == "ok"
    assert record.executor == {"executor": "dask", "worker": "tcp://h:1",
                                             "shared_cpu": True}
    assert not list(tmp_path.glob(".*tmp"))


# ------------------------------------------------------------------------------------------
# the documented SLURM example (docs/scale-out.md), built without SLURM
# ------------------------------------------------------------------------------------------

def test_documented_slurm_cluster_builds_its_job_script():
    pytest.importorskip("dask_jobqueue")
    page = (ROOT / "docs" / "scale-out.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "SLURMCluster" in b)
    construction = block.split("cluster.scale")[0]  # up to the first submission
    namespace: dict = {}
    exec(construction, namespace)
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources device=1" in script and "#SBATCH --cpus-per-task=8" in script


# ------------------------------------------------------------------------------------------
# Ctrl-C
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_fashion_mnist
def test_ctrl_c_cancels_pending_cells_and_exits_130(tmp_path):
    """SIGINT to the runner's whole process group (as Ctrl-C in a terminal, which reaches the
    local workers too): one line, exit 130, no record that reads finished for the cells that
    were running, pending cells never started, and no process of the run left behind."""
    import subprocess

    write_study(tmp_path, """\
        [study]
        name = "ctrlc"
        [fixed]
        dataset = "fashion_mnist"
        download = false
        train_subset = 2048
        epochs = 20
        width = 0.25
        idle_s = 0
        idle_after_s = 0
        [axes]
        seed = [0, 1, 2, 3]
        """, "ctrlc.toml")
    folder = tmp_path / "runs" / "ctrlc"
    run = subprocess.Popen([sys.executable, "-m", "energy_lib", "run", "ctrlc.toml", "--no-report",
                            "--executor", "dask", "--workers", "2"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           start_new_session=True)
    deadline = time.time() + 120
    while len(list(folder.glob(".running/*/*.ipynb"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # inside both cells' training
    assert len(_kernels_for(tmp_path)) == 2  # (the check below can see them)
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert lines == ["energy-study: interrupted; run the same command again to resume "
                     "(finished cells are kept)"], err[-3000:]
    statuses = cell_status(load_study(tmp_path / "ctrlc.toml"), tmp_path / "runs")
    assert sorted(statuses.values()) == ["incomplete", "incomplete", "missing", "missing"]
    deadline = time.time() + 10  # the workers' and kernels' exits take a moment
    while True:
        left = subprocess.run(["pgrep", "-g", str(run.pid)], capture_output=True, text=True).stdout
        if not left.strip() or time.time() > deadline:
            break
        time.sleep(0.2)
    assert not left.strip(), f"processes of the interrupted run still alive: {left}"
    assert not _kernels_for(tmp_path), "kernels of the interrupted run still alive"


def _kernels_for(folder: Path) -> list[int]:
    """Processes (the cells' kernels: their own sessions) working in `folder`: papermill starts
    each kernel in the runner's working folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if (b"ipykernel" in (proc / "cmdline").read_bytes()
                        and os.path.realpath(proc / "cwd") == os.path.realpath(folder)):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_each_cells_kernel_is_shut_down_after_it(tmp_path):
    """A Dask worker lives for the whole study: a kernel left running after its cell (papermill
    keeps the kernels of managers it is given) would pile up there, ~1 GB each with torch."""
    from energy_lib.study import execute_notebook

    notebook = stand_in_notebook(tmp_path / "nb")
    parameters = {"config": {"dataset": "fashion_mnist", "idle_s": 0.0, "study": "k", "cell": "c"}}
    for name in ("a", "b"):
        execute_notebook(notebook, tmp_path / "runs" / f"{name}.ipynb", parameters, kernel_name=None)
    assert read_record(tmp_path / "runs" / "b.ipynb").status == "ok"
    assert not _kernels_for(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two usable cores to give two workers one each")
def test_local_cpu_workers_keep_to_disjoint_cores(stand_in, client):
    """Two cells at once on a CPU machine never compete for a core: each worker, and the
    kernel it starts, keeps to its own cores, and the record says which."""
    study = load_study(write_study(stand_in, STAND_IN))
    outcome = run_study(study, runs_root="runs", progress=False,
                        executor=DaskExecutor(client, pin_cores=True))
    assert sorted(outcome.ran) == ["seed-0", "seed-1", "seed-2"]
    by_worker = {}
    for cell in study.cells:
        record = read_record(Path("runs/si") / f"{cell.name}.ipynb")
        noted = record.executor["cpu_cores"]
        assert noted and record.extra["stand_in"]["cores"] == noted  # the kernel kept to them
        by_worker.setdefault(record.executor["worker"], set()).update(noted)
        assert record.executor["position"] == study.cells.index(cell) + 1
        assert record.executor["order"] == "interleaved" and record.executor["cells"] == 3
    sets = list(by_worker.values())
    assert len(sets) == 2 and not (sets[0] & sets[1])  # disjoint
