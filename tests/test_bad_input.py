"""Bad input from the command line and the study file: one `energy-study: error:` line, exit
2, checked from the numbers alone before anything is built, started or written."""

from __future__ import annotations

import os
import textwrap
import tracemalloc
import types
from pathlib import Path

import pytest

from energy_lib.cli import main

QUICK = """\
    [study]
    name = "bad"
    [fixed]
    dataset = "fashion_mnist"
    download = false
    [axes]
    width = [0.5, 1]
    """


def one_line_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("energy-study: error: "), err
    return lines[0]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def study_file(folder: Path, text: str = QUICK, name: str = "bad.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("content, what", [
    (bytes(range(256)) * 4, "binary junk"),
    ('[study]\nname = "caf\xe9"\n'.encode("latin-1"), "Latin-1 text"),
])
def test_a_study_file_that_is_not_utf8(here, capsys, content, what):
    path = here / "bad.toml"
    path.write_bytes(content)
    line = one_line_error(capsys, main(["list", str(path)]))
    assert "is not UTF-8 text" in line and "bad.toml" in line, what


def test_a_folder_as_the_study_file(here, capsys):
    (here / "studies.toml").mkdir()
    line = one_line_error(capsys, main(["list", "studies.toml"]))
    assert "is a folder" in line


def test_a_fifo_as_the_study_file_is_refused_without_blocking(here, capsys):
    os.mkfifo(here / "pipe.toml")  # opening it for reading would block forever
    line = one_line_error(capsys, main(["list", "pipe.toml"]))
    assert "is not a regular file" in line


@pytest.mark.parametrize("args, fragment", [
    (["list", "bad.toml", "--set", "epochs"], "expected key=value"),
    (["list", "bad.toml", "--repeats", "abc"], "invalid int value: 'abc'"),
    (["run", "bad.toml", "--workers", "many"], "invalid int value: 'many'"),
    (["list"], "required: study"),
    (["frobnicate", "bad.toml"], "invalid choice: 'frobnicate'"),
])
def test_argparse_mistakes_are_one_line(here, capsys, args, fragment):
    study_file(here)
    line = one_line_error(capsys, main(args))
    assert fragment in line


@pytest.mark.parametrize("args, text, fragment", [
    (["--repeats", "99999999999999999999999"], QUICK, "more than the limit of 10,000"),
    ([], QUICK.replace('name = "bad"', 'name = "bad"\n    repeats = 1000000000'),
     "more than the limit of 10,000"),
    (["--repeats", "2", "--max-cells", "10000000000"], QUICK, "--max-cells 10000000000"),
    (["--set", "seed=18446744073709551615", "--repeats", "2"], QUICK, "0..2**63 - 1"),
    (["--set", "seed=9223372036854775807", "--repeats", "2"], QUICK, "0..2**63 - 1"),
    (["--set", f"epochs={10**400}"], QUICK, "at most 2**63 - 1"),
    (["--set", f"lr={10**400}"], QUICK, "expected a finite number"),
])
def test_sizes_and_numbers_are_checked_before_anything_is_built(here, capsys, args, text,
                                                                 fragment):
    path = study_file(here, text)
    import energy_lib.training.models  # noqa: F401 -- torch's import is not what is measured
    import energy_lib.training.pruning  # noqa: F401

    tracemalloc.start()
    try:
        code = main(["list", str(path), *args])
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = one_line_error(capsys, code)
    assert fragment in line and len(line) < 400
    assert peak_bytes < 50 * 2**20  # refused from the numbers: no list of cells or seeds built
    assert not (here / "runs").exists()


def test_dask_workers_beyond_the_cores_are_capped_in_one_line(monkeypatch):
    """No GPU: at most one single-threaded worker per usable core, said before any starts."""
    from energy_lib.study import dask_executor

    made, said = {}, []
    fake = types.SimpleNamespace(LocalCluster=lambda **kwargs: made.update(kwargs) or "cluster")
    monkeypatch.setattr(dask_executor, "_distributed", lambda: fake)
    cores = dask_executor.usable_cores()
    assert dask_executor.local_cluster(10_000, gpus=0, say=said.append) == "cluster"
    assert made["n_workers"] == cores and made["threads_per_worker"] == 1
    assert said == [f"--workers 10000: capped at {cores}, the CPU cores this process may use"]
    said.clear()
    dask_executor.local_cluster(1, gpus=0, say=said.append)
    assert made["n_workers"] == 1 and said == []


# --- refusals that do not depend on any cell's result come before the first cell -------------

@pytest.mark.parametrize("case", ["report is the runs folder", "report holds a user's file",
                                  "report is a symlink"])
def test_report_folder_refusals_come_before_the_first_cell(here, capsys, case):
    """Each is one line, exit 2, and no cell ran (no lab record written); a symlinked report
    folder is refused, and the user's file in the folder it points to is untouched."""
    study = study_file(here, QUICK.replace('width = [0.5, 1]', 'width = [0.5]'))
    args = ["run", str(study)]
    shared = here / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    if case == "report is the runs folder":
        args += ["--runs-dir", "out", "--report-dir", "out"]
    elif case == "report holds a user's file":
        (here / "report" / "bad").mkdir(parents=True)
        (here / "report" / "bad" / "notes.txt").write_text("mine")
    else:
        (here / "report").mkdir()
        (here / "report" / "bad").symlink_to(shared, target_is_directory=True)
    line = one_line_error(capsys, main(args))
    assert {"report is the runs folder": "inside or around the lab records",
            "report holds a user's file": "holds files this project did not write",
            "report is a symlink": "is a symbolic link"}[case] in line
    assert not list(here.rglob("*.ipynb"))  # no cell ran
    assert (shared / "notes.txt").read_text() == "mine" and sorted(shared.iterdir()) == [
        shared / "notes.txt"]
    if case == "report is a symlink":  # the analysis alone refuses too, before touching it
        assert "is a symbolic link" in one_line_error(capsys, main(["report", str(study)]))
        assert sorted(shared.iterdir()) == [shared / "notes.txt"]


def test_text_settings_are_checked_after_their_whitespace_is_trimmed():
    from energy_lib.config import RunConfig

    assert RunConfig(device="cpu\n", precision=" amp ").device == "cpu"
    assert RunConfig(device="cpu\n", precision=" amp ").precision == "amp"


@pytest.mark.parametrize("command", [["init", "runs/quick"],
                                     ["calibrate", "--quick", "--out-dir", "runs/quick"]])
def test_files_written_on_the_users_word_never_land_among_lab_records(here, capsys, command):
    """A project (studies/ beside runs/): init and calibrate refuse a folder inside runs/ in one
    line, exit 2, and write nothing there."""
    (here / "studies").mkdir()
    (here / "runs" / "quick").mkdir(parents=True)
    line = one_line_error(capsys, main(command))
    assert "where only the runner writes (the lab records)" in line
    assert list((here / "runs").rglob("*")) == [here / "runs" / "quick"]
