"""A full disk under runs/: the real cause and the real path in one line per cell, and no
record lost -- a finished record stays, a complete notebook whose runner's note could not be
added is kept without it. On a real tmpfs of a few hundred kilobytes (mounting needs root; the
test is skipped, with the reason, where mounting is not allowed)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

import energy_lib.study.execute as execute_module
from benchmarks.suite import stand_in_notebook
from conftest import needs_fashion_mnist
from energy_lib.records import read_record
from energy_lib.study import cell_status, load_study, run_study

STUDY = """\
    [study]
    name = "full"
    [fixed]
    dataset = "fashion_mnist"
    download = false
    idle_s = 0.0
    [axes]
    seed = [0, 1, 2]
    """


@contextlib.contextmanager
def small_tmpfs(path: Path, size_kb: int):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): the "
                    "full-disk test needs one")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(path: Path, leave_bytes: int = 0) -> Path:
    """A filler file that leaves about `leave_bytes` free (or none at all)."""
    filler = path / "filler.bin"
    with open(filler, "wb") as handle:
        want = max(free_bytes(path) - leave_bytes, 0)
        chunk = b"\0" * 4096
        try:
            while want > 0:
                handle.write(chunk[:min(want, 4096)])
                handle.flush()
                want -= 4096
        except OSError:
            pass  # full
    return filler


@pytest.fixture
def full_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(execute_module, "RUN_NOTEBOOK", stand_in_notebook(tmp_path / "nb"))
    study_path = tmp_path / "full.toml"
    study_path.write_text(textwrap.dedent(STUDY))
    with small_tmpfs(tmp_path / "disk", 2048) as disk:
        yield load_study(study_path), disk


@pytest.mark.slow
@needs_fashion_mnist
def test_a_full_disk_names_the_real_cause_and_keeps_every_record(full_study, capsys):
    study, disk = full_study
    first = run_study(study, runs_root=disk, progress=False, only=["seed-0"])
    assert first.ran == ["seed-0"]
    kept = disk / "full" / "seed-0.ipynb"
    before = kept.read_bytes()

    filler = fill(disk)  # nothing left
    outcome = run_study(study, runs_root=disk, progress=False)
    assert outcome.skipped == ["seed-0"] and outcome.failed == ["seed-1", "seed-2"]
    for cell in ("seed-1", "seed-2"):
        record = disk / "full" / f"{cell}.ipynb"
        assert cell_status(study, disk)[cell] in ("incomplete", "missing", "unreadable")
        assert not record.exists() or read_record(record).status != "ok"
    assert kept.read_bytes() == before  # a finished record is never touched

    # the messages: the real cause, a path that exists (or none), for both cells
    capsys.readouterr()
    again = run_study(study, runs_root=disk, progress=True)
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("cell ")]
    assert again.failed == ["seed-1", "seed-2"] and len(said) == 2, out
    for line in said:
        assert "No space left on device" in line and "NotJSONError" not in line, line
        if "kept: " in line:
            assert Path(line.rsplit("kept: ", 1)[1].rstrip(")")).exists(), line
        else:
            assert "no record could be written" in line, line

    filler.unlink()  # space again: the study resumes, and loses nothing
    last = run_study(study, runs_root=disk, progress=False)
    assert sorted(last.ran) == ["seed-1", "seed-2"] and last.skipped == ["seed-0"]
    assert set(cell_status(study, disk).values()) == {"ok"}
    assert kept.read_bytes() == before


@pytest.mark.slow
@needs_fashion_mnist
def test_a_note_that_does_not_fit_never_costs_a_complete_record(full_study):
    """Room for the executed notebook but not for the rewrite that adds the runner's note: the
    complete record is renamed into place without it, and the run says so."""
    study, disk = full_study
    first = run_study(study, runs_root=disk, progress=False, only=["seed-0"])
    assert first.ran == ["seed-0"]
    size = (disk / "full" / "seed-0.ipynb").stat().st_size
    filler = fill(disk, leave_bytes=size + size // 2)
    from energy_lib.study.cell import run_cell

    done = run_cell(study.cells[1], disk / "full", force=False, seen=None,
                    runner={"executor": "serial"})
    record = read_record(disk / "full" / "seed-1.ipynb")
    assert done.result == "ran" and record.status == "ok" and record.executor == {}
    assert done.message.startswith("cell seed-1: record complete, but the runner's note "
                                   "(where it ran) could not be added: ")
    assert "No space left on device" in done.message
    filler.unlink()
