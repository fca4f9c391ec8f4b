"""Shared fixtures: tiny CIFAR-format folders written by the tests, the real Fashion-MNIST files,
and executed-looking notebooks built with nbformat (no kernel needed)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from energy_lib.jupyter_imports import without_iri_grammars

without_iri_grammars()  # as the project's own processes do: 3.8 s of every test session here
from energy_lib.training.datasets import DEBIAN_FASHION_MNIST_DIR
from energy_lib.records import MIME_TYPE, RECORD_FORMAT

CIFAR_PER_BATCH = 20  # images per data_batch_i / test_batch in the fixture
ROOT = Path(__file__).resolve().parents[1]
#: what the shipped examples are made of: read from the commit by `committed`
COMMITTED_PATHS = ("runs", "report", "studies", "notebooks", "calibration", "README.md", "docs")


@pytest.fixture(scope="session")
def committed(tmp_path_factory) -> Path:
    """The project's shipped examples as last committed (`git archive HEAD`), extracted once.
    Tests of the committed records and reports read them from here, never from the working
    tree: README command 1 rewrites runs/quick/ and report/quick/ on the user's machine, and
    the tests (command 2) must still pass after it."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD",
                                  *COMMITTED_PATHS], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"the committed examples need a git checkout: {error}")
    out = tmp_path_factory.mktemp("committed")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        # our own commit's files; the "data" filter where this Python has it (3.11.4+: Debian
        # 12's 3.11.2 has none)
        tar.extractall(out, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return out


@pytest.fixture
def forked_poller(monkeypatch):
    """Zeus's power poller is a spawned process, which would not see a fake GPU layer installed
    here: it is forked instead, so that it polls the same fake."""
    import multiprocessing
    from types import SimpleNamespace

    import zeus.monitor.power as zeus_power

    monkeypatch.setattr(zeus_power, "mp", SimpleNamespace(
        get_context=lambda method: multiprocessing.get_context("fork")))


def write_study(folder: Path, text: str, name: str = "s.toml") -> Path:
    """A study file `folder/name` from an indented TOML text."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST_DIR))


def has_fashion_mnist() -> bool:
    folder = fashion_mnist_dir()
    return all((folder / f"{p}-{k}-idx{d}-ubyte.gz").is_file()
               for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1)))


needs_fashion_mnist = pytest.mark.skipif(
    not has_fashion_mnist(),
    reason=f"Fashion-MNIST gzip files not found in {fashion_mnist_dir()} "
    "(apt-get install dataset-fashion-mnist)")


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar10(root: Path, per_batch: int = CIFAR_PER_BATCH, seed: int = 0) -> dict:
    """Write `root/cifar-10-batches-py/` in the official pickle format; return the arrays written
    ({'train': (data, labels), 'test': (data, labels)}, data as N x 3072 uint8)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_data, train_labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        _pickle(folder / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5", "labels": labels, "data": data,
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)]})
        train_data.append(data)
        train_labels += labels
    test_data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels,
                                    "data": test_data,
                                    "filenames": [f"t_{j}.png" for j in range(per_batch)]})
    return {"train": (np.concatenate(train_data), train_labels), "test": (test_data, test_labels)}


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 1) -> dict:
    """Write `root/cifar-100-python/{train,test}` in the official pickle format."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [v // 5 for v in fine]
        _pickle(folder / name, {"filenames": [f"{name}_{j}.png" for j in range(n)],
                                "batch_label": f"{name} batch", "fine_labels": fine,
                                "coarse_labels": coarse, "data": data})
        written[name] = (data, fine)
    return written


@pytest.fixture
def cifar10_dir(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "data"
    return root, write_cifar10(root)


@pytest.fixture
def cifar100_dir(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "data100"
    return root, write_cifar100(root)


# ------------------------------------------------------------------------------------------
# Executed-looking notebooks (for the status logic, without starting a kernel)
# ------------------------------------------------------------------------------------------

def record_output(name: str, value) -> dict:
    import nbformat

    return nbformat.v4.new_output("display_data", data={
        MIME_TYPE: {"name": name, "value": value}, "text/plain": f"[record] {name}"})


def fake_executed_notebook(path: Path, records: dict | None = None, *, finished: bool = True,
                           exception: bool = False, error: tuple[str, str] | None = None,
                           parameters: dict | None = None) -> Path:
    """An nbformat notebook that looks like papermill's output: records as display outputs,
    metadata.papermill with end_time (None when `finished` is false) and exception flag."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.papermill = {
        "parameters": parameters or {}, "exception": exception or None,
        "start_time": "2026-01-01T00:00:00+00:00",
        "end_time": "2026-01-01T00:00:05+00:00" if finished else None,
        "duration": 5.0 if finished else None, "version": "2.6.0",
    }
    records = dict(records or {})
    if "summary" in records and "format" not in records:
        records = {"format": RECORD_FORMAT, **records}  # a current record, unless told otherwise
    cell = nbformat.v4.new_code_cell("from energy_lib.records import store")
    cell.outputs = [record_output(k, v) for k, v in records.items() if v is not None]
    nb.cells.append(cell)
    if error is not None:
        failing = nbformat.v4.new_code_cell("raise ValueError('boom')")
        failing.outputs = [nbformat.v4.new_output("error", ename=error[0], evalue=error[1],
                                                  traceback=[])]
        nb.cells.append(failing)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _fit_cache_in_a_temporary_folder(tmp_path_factory):
    """The estimators cache fitted models under XDG_CACHE_HOME; tests (and the notebook kernels
    they start, which inherit the environment) use a folder of their own, never the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def _close_figures_after_each_test():
    """The report's figure functions return pyplot figures (the analysis notebook shows and closes
    them); a test that keeps one open would leave it for every later test to carry."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")  # never imported just to close nothing
    if pyplot is not None:
        pyplot.close("all")


# ------------------------------------------------------------------------------------------
# One real study, run once per session and shared by the tests that only read what it left
# ------------------------------------------------------------------------------------------

TINY_STUDY = """\
    [study]
    name = "tiny"
    description = "two widths x three precisions on 256 Fashion-MNIST images"

    [fixed]
    dataset = "fashion_mnist"
    train_subset = 256
    test_subset = 128
    epochs = 2
    batch_size = 64
    device = "cpu"
    download = false
    idle_s = 0
    idle_after_s = 0

    [axes]
    width = [0.25, 0.5]
    precision = ["fp32", "bf16", "amp"]
"""
TINY_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "amp": "bfloat16"}  # on a CPU


@dataclass
class TinyRun:
    """What `energy-study run studies/tiny.toml` left in a fresh project folder, and printed."""

    root: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def study_file(self) -> Path:
        return self.root / "studies" / "tiny.toml"

    @property
    def runs(self) -> Path:
        return self.root / "runs" / "tiny"

    @property
    def report(self) -> Path:
        return self.root / "report" / "tiny"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The 6-cell tiny study run as a user runs it: `energy-study run` in a real process, one
    real kernel per cell executing the real run notebook on real Fashion-MNIST files, then the
    real analysis notebook. Run once per session; tests that only read its records, report or
    output share it, and a test that changes a folder works on a copy."""
    if not has_fashion_mnist():
        pytest.skip(needs_fashion_mnist.kwargs["reason"])
    root = tmp_path_factory.mktemp("tiny-project")
    write_study(root / "studies", TINY_STUDY, "tiny.toml")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "energy_lib", "run", "studies/tiny.toml"],
                          cwd=root, capture_output=True, text=True, timeout=900)
    return TinyRun(root, done.returncode, done.stdout, done.stderr, time.perf_counter() - started)
