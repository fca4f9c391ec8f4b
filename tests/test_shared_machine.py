"""What a shared machine did to a study, on hand-made tables and real record files: contended
cells flagged, left out of verdicts by default and counted; consistency checks with known
answers; `list` shows `ok, contended`; `--rerun contended` reruns exactly those cells."""

from __future__ import annotations


import nbformat
import pandas as pd
import pytest

from energy_lib.cli import main
from energy_lib.report.shared_machine import consistency, flag_contended
from energy_lib.study import cell as cell_module
from test_export import config_record, study_toml, summary_record, write_cell


def runs_table(**columns) -> pd.DataFrame:
    base = {"cell": ["a", "b", "c"], "status": ["ok", "ok", "ok"]}
    return pd.DataFrame({**base, **columns})


def test_contended_cells_are_flagged_and_left_out_by_default():
    table = runs_table(contended=[False, True, None], others_cpu_share=[0.0, 0.48, None])
    kept, sentence = flag_contended(table, include=False)
    assert list(kept["cell"]) == ["a", "c"]
    assert table.loc[1, "flags"] == "contended" and table.loc[0, "flags"] == ""
    assert sentence.startswith("1 contended cell(s) left out of the summary, the paired "
                               "comparisons, the claims and the Pareto front: b (48% of the CPU")
    kept, sentence = flag_contended(runs_table(contended=[False, True, False]), include=True)
    assert len(kept) == 3 and "are included, as the study asks" in sentence


def test_a_cell_that_shared_its_gpu_says_so():
    table = runs_table(contended=[False, True, False], others_cpu_share=[0.0, 0.01, 0.0],
                       gpu_shared=[False, True, False])
    kept, sentence = flag_contended(table, include=False)
    assert list(kept["cell"]) == ["a", "c"]
    assert "b (another process computed on its GPU; 1% of the CPU taken by others)" in sentence


def test_a_failed_cell_is_not_called_contended():
    table = runs_table(contended=[True, False, False])
    table.loc[0, "status"] = "failed"
    kept, sentence = flag_contended(table, include=False)
    assert len(kept) == 3 and sentence.startswith("No cell was contended")


def test_consistency_finds_a_slow_repeat_and_a_compute_inversion():
    table = pd.DataFrame({
        "cell": ["r18_s0", "r18_s1", "r18_s2", "r34_s0", "r34_s1"],
        "status": ["ok"] * 5,
        "model": ["resnet18"] * 3 + ["resnet34"] * 2,
        "seed": [0, 1, 2, 0, 1],
        "dataset": ["fashion_mnist"] * 5, "train_subset": [1000] * 5,
        "epochs_completed": [2] * 5,
        "dense_macs_per_image": [1e6] * 3 + [2e6] * 2,
        # ResNet-18's seed 2 ran 3x slower (a neighbour); ResNet-34, twice the MACs, faster
        "train_s_total": [10.0, 10.0, 30.0, 8.0, 8.0],
        "s_per_epoch": [5.0, 5.0, 15.0, 4.0, 4.0],
    })
    found = consistency(table, ["model"])  # the setting axes (seed is not one)
    slow = found[found["check"] == "repeat off its setting's speed"]
    assert list(slow["cells"]) == ["r18_s2"] and slow["detail"].iloc[0].startswith("3.00x")
    inverted = found[found["check"] == "more compute, less time"]
    assert len(inverted) == 1 and inverted["cells"].iloc[0].startswith("r34_s0, r34_s1 vs r18")
    quiet = table.assign(train_s_total=[10.0, 10.0, 10.0, 20.0, 20.0],
                         s_per_epoch=[5.0, 5.0, 5.0, 10.0, 10.0])
    assert consistency(quiet, ["model"]).empty


STUDY = study_toml(["fp32", "amp"], "")


@pytest.fixture
def two_records(tmp_path, monkeypatch):
    """Two finished records, the amp one contended."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(STUDY)
    folder = tmp_path / "runs" / "exportstudy"
    for precision, busy in (("fp32", False), ("amp", True)):
        cell = f"precision-{precision}"
        write_cell(folder, cell, config=config_record(cell, precision=precision),
                   summary=summary_record(contended=busy, others_cpu_share=0.5 if busy else 0.0))
    return folder


def test_list_shows_contended_cells(two_records, capsys):
    assert main(["list", "s.toml"]) == 0
    out = capsys.readouterr().out
    assert "precision-amp   ok, contended" in out and "precision-fp32  ok\n" in out


@pytest.mark.skipif(not __import__("conftest").has_fashion_mnist(),
                    reason="the pre-flight check reads Fashion-MNIST")
def test_rerun_contended_runs_exactly_those_cells(two_records, monkeypatch, capsys):
    ran = []

    def fake_execute(source, target, parameters, **kwargs):
        ran.append(target.stem)
        nbformat.write(nbformat.v4.new_notebook(), target)
        return ""

    monkeypatch.setattr(cell_module, "execute_notebook", fake_execute)
    before = (two_records / "precision-amp.ipynb").read_bytes()
    assert main(["run", "s.toml", "--no-report", "--no-plan", "--rerun", "contended"]) in (0, 1)
    assert ran == ["precision-amp"]
    kept = list((two_records / "superseded").iterdir())
    assert len(kept) == 1 and kept[0].read_bytes() == before  # the old record, kept
    capsys.readouterr()
    assert main(["run", "s.toml", "--no-report", "--rerun", "everything"]) == 2
    assert "--rerun 'everything': unknown; choose one of contended" in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["--wait-quiet", "-1"], "--wait-quiet -1.0: use a number of seconds >= 0"),
    (["--wait-quiet", "nan"], "--wait-quiet nan: use a number of seconds >= 0"),
    (["--wait-quiet", "soon"], "invalid float value: 'soon'"),
    (["--wait-quiet", "5", "--executor", "dask", "--workers", "2"], "--wait-quiet needs --executor serial"),
])
def test_bad_wait_quiet_is_one_line(two_records, capsys, args, fragment):
    assert main(["run", "s.toml", "--no-report", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and fragment in err[0], err
