"""Files written on a user's word (`export --output`, the benchmarks' `--out`) never replace
a file this project did not write: not a lab record, not a study file, not a FIFO or a device
node; an earlier export is replaced, anything else only with --overwrite. Real files, a real
FIFO and a real device node; exit 2, one line, every byte kept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from energy_lib.cli import main
from energy_lib.report.export import EXPORT_COLUMNS
from test_export import study_toml, write_cell

REPO = Path(__file__).resolve().parents[1]
STUDY = study_toml(["fp32"], "")


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(STUDY)
    write_cell(tmp_path / "runs" / "exportstudy", "precision-fp32")
    return tmp_path


def refused(capsys, args: list[str], fragment: str) -> None:
    code = main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("energy-study: error: "), err
    assert fragment in err[0], err[0]


def test_a_lab_record_is_never_an_export_target(here, capsys):
    record = here / "runs" / "exportstudy" / "precision-fp32.ipynb"
    before = record.read_bytes()
    for flags in ([], ["--overwrite"]):
        refused(capsys, ["export", "s.toml", "--output", str(record), *flags],
                "where only the runner writes")
    assert record.read_bytes() == before
    assert not list((here / "runs" / "exportstudy").glob("superseded"))


def test_a_file_we_did_not_write_needs_overwrite(here, capsys):
    study = here / "s.toml"
    before = study.read_bytes()
    refused(capsys, ["export", "s.toml", "--output", "s.toml"], "was not written by energy-study")
    assert study.read_bytes() == before
    mine = here / "notes.csv"
    mine.write_text("a,b\n1,2\n")
    refused(capsys, ["export", "s.toml", "--output", str(mine)], "--overwrite")
    assert mine.read_text() == "a,b\n1,2\n"
    assert main(["export", "s.toml", "--output", str(mine), "--overwrite"]) == 0
    assert mine.read_text().splitlines()[0] == ",".join(EXPORT_COLUMNS)


def test_an_earlier_export_is_replaced(here, capsys):
    out = here / "log.csv"
    assert main(["export", "s.toml", "--output", str(out)]) == 0
    out.write_text(out.read_text() + "\n")  # changed since
    assert main(["export", "s.toml", "--output", str(out)]) == 0
    assert out.read_text().count("exportstudy/precision-fp32") == 1


@pytest.mark.parametrize("make", ["fifo", "device"])
def test_a_fifo_or_device_node_is_never_replaced(here, capsys, make):
    if make == "fifo":
        target = here / "pipe.csv"
        os.mkfifo(target)
        is_kind = stat.S_ISFIFO
    else:
        target = Path("/dev/null")  # a character device: as root it could be replaced
        is_kind = stat.S_ISCHR
    for flags in ([], ["--overwrite"]):
        refused(capsys, ["export", "s.toml", "--output", str(target), *flags],
                "is not a regular file")
    assert is_kind(os.lstat(target).st_mode)


def test_benchmarks_out_is_checked_before_measuring(tmp_path):
    foreign = tmp_path / "mine.json"
    foreign.write_text('{"my": "data"}')
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--only", "P1",
                           "--out", str(foreign)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("benchmarks: error: --out file") and "--overwrite" in lines[0]
    assert foreign.read_text() == '{"my": "data"}'
