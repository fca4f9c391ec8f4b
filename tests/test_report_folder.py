"""The report folder: a new report is written aside and renamed into place whole, so a failed
or dead analysis never replaces a good report; a failure is one line; a folder the project did
not write, or one among the lab records, is refused. A stand-in analysis notebook (real
papermill, real kernel) writes a results.csv, raises, or kills its kernel as told."""

from __future__ import annotations

import textwrap

import nbformat
import pytest

import energy_lib.study.execute as execute_module
from energy_lib.cli import main

STUDY = """\
    [study]
    name = "s"
    [fixed]
    dataset = "fashion_mnist"
    download = false
    [axes]
    width = [0.5]
    """

ANALYSIS = """\
import os
from pathlib import Path

(Path(report_dir) / "results.csv").write_text(os.environ["FAKE_ANALYSIS_TEXT"])
if os.environ["FAKE_ANALYSIS"] == "raise":
    raise RuntimeError("the analysis broke")
if os.environ["FAKE_ANALYSIS"] == "die":
    os._exit(1)  # the kernel dies, as under the OOM killer
"""


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(textwrap.dedent(STUDY))
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}
    parameters = nbformat.v4.new_code_cell(
        "study_file = ''\nruns_dir = ''\nreport_dir = ''\noverrides = {}\nrepeats = None")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell(ANALYSIS)]
    path = tmp_path / "analysis_stand_in.ipynb"
    nbformat.write(notebook, str(path))
    monkeypatch.setattr(execute_module, "ANALYSIS_NOTEBOOK", path)
    return tmp_path


def report(monkeypatch, capsys, behaviour: str, text: str, *extra: str):
    monkeypatch.setenv("FAKE_ANALYSIS", behaviour)
    monkeypatch.setenv("FAKE_ANALYSIS_TEXT", text)
    code = main(["report", "s.toml", *extra])
    out, err = capsys.readouterr()
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("behaviour, what", [("raise", "RuntimeError: the analysis broke"),
                                             ("die", "DeadKernelError")])
def test_a_failed_analysis_never_replaces_a_good_report(here, monkeypatch, capsys, behaviour,
                                                        what):
    code, lines = report(monkeypatch, capsys, "ok", "good report")
    assert code == 0 and lines == []
    folder = here / "report" / "s"
    (folder / "my notes.txt").write_text("mine")  # a file of the user's, beside the report
    good = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert good["results.csv"] == b"good report" and "analysis.html" in good

    code, lines = report(monkeypatch, capsys, behaviour, "half a report")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"energy-study: analysis failed: {what}")
    assert "the previous report is unchanged" in lines[0]
    failed = here / "report" / "s.failed" / "analysis.ipynb"
    assert f"the failed attempt is kept: {failed})" in lines[0]  # where it is, wherever the shell is
    assert failed.is_file()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == good

    code, lines = report(monkeypatch, capsys, "ok", "new report")
    assert code == 0
    assert (folder / "results.csv").read_text() == "new report"
    assert (folder / "my notes.txt").read_text() == "mine"  # carried into the new report
    assert not list((here / "report").glob(".s.*"))  # no draft or old copy left behind


@pytest.mark.parametrize("report_dir, fragment", [
    ("runs", "inside or around the lab records"),
    ("runs/s/sub", "inside or around the lab records"),
])
def test_a_report_folder_among_the_lab_records_is_refused(here, capsys, report_dir, fragment):
    code = main(["report", "s.toml", "--report-dir", report_dir])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0]
    assert not (here / "runs").exists()


def test_a_folder_the_project_did_not_write_is_refused(here, capsys):
    folder = here / "elsewhere" / "s"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("someone else's")
    code = main(["report", "s.toml", "--report-dir", "elsewhere"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds files this project did not write" in err[0]
    assert (folder / "results.csv").read_text() == "someone else's"
