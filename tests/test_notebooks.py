"""The Colab notebook runs unchanged under papermill on a CPU machine with tiny settings (it
finds energy_lib installed, so it skips the install step), and the paper comparison table."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest

from conftest import needs_fashion_mnist, write_study
from energy_lib.records import read_runs
from energy_lib.report.results import compare_with_reference, reference_table
from energy_lib.study import NOTEBOOKS_DIR


@pytest.mark.slow
@needs_fashion_mnist
def test_colab_notebook_runs_under_papermill_on_cpu(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.chdir(tmp_path)
    executed = tmp_path / "colab.ipynb"
    # the quick study's two precisions at one width ("auto" picks quick here: a test of
    # study_file_for checks that without running it)
    study = write_study(tmp_path / "studies", """\
        [study]
        name = "quick"
        compare = "precision"
        [fixed]
        dataset = "fashion_mnist"
        width = 0.5
        [axes]
        precision = ["fp32", "amp"]
        """, "quick.toml")
    tiny = {"epochs": 1, "train_subset": 256, "test_subset": 128, "batch_size": 64, "idle_s": 0,
            "idle_after_s": 0, "eval_batch_size": 128}
    pm.execute_notebook(str(NOTEBOOKS_DIR / "colab.ipynb"), str(executed), progress_bar=False,
                        parameters={"study": str(study), "overrides": tiny, "repeats": 1,
                                    "runs_root": str(tmp_path / "runs"),
                                    "report_root": str(tmp_path / "report")})
    runs = read_runs(tmp_path / "runs" / "quick")
    assert sorted(runs.runs["status"]) == ["ok"] * 2
    assert set(runs.runs["epochs"]) == {1} and set(runs.runs["train_subset"]) == {256}
    report = tmp_path / "report" / "quick"
    assert {p.name for p in report.glob("*.png")} >= {
        "train_loss.png", "train_accuracy.png", "val_loss.png", "val_accuracy.png",
        "cumulative_energy.png", "energy_per_epoch.png", "accuracy_vs_energy.png"}
    text = "".join(str(o.get("text", "")) for c in nbformat.read(executed, 4).cells
                   for o in c.get("outputs", []))
    assert "no CUDA GPU visible" in text and "ran [" in text
    assert "not on Colab: records in" in text  # keep_on_drive is on by default, and said
    assert text.index("to run here") < text.index("ran [")  # the plan before the grid
    assert "total" in text


def test_paper_comparison_puts_the_t4_table_beside_ours():
    reference = reference_table()
    assert len(reference) == 6 and set(reference["precision"]) == {"fp32", "amp"}
    ours = pd.DataFrame({
        "cell": ["width-1_precision-fp32", "width-3_precision-amp"], "status": ["ok", "failed"],
        "width": [1, 3], "precision": ["fp32", "amp"], "best_val_acc_pct": [71.0, None],
        "s_per_epoch": [2.0, None], "energy_kwh": [0.0013, None], "energy_kind": ["measured", None],
        "constant_power_energy_kwh": [0.001, None], "acc_pct_per_wh": [54.6, None],
        "constant_power_acc_pct_per_wh": [71.0, None]})
    table = compare_with_reference(ours)
    assert len(table) == 6  # every row of the original, ours or not
    row = table[(table["width"] == 1) & (table["precision"] == "fp32")].iloc[0]
    assert row["best_val_acc_pct (T4)"] == 69.96 and row["best_val_acc_pct (ours)"] == 71.0
    assert row["s_per_epoch (T4)"] == 20.60 and row["status (ours)"] == "ok"
    # like beside like: their assumed-70 W energy beside our constant-power figure ...
    assert row["constant_power_energy_kwh (T4)"] == 0.01202
    assert row["constant_power_energy_kwh (ours)"] == 0.001
    assert row["constant_power_acc_pct_per_wh (ours)"] == 71.0
    # ... and our headline figure as a further column, with its kind
    assert row["energy_kwh (ours)"] == 0.0013 and row["energy_kind (ours)"] == "measured"
    failed = table[(table["width"] == 3) & (table["precision"] == "amp")].iloc[0]
    assert failed["status (ours)"] == "failed"
    missing = table[(table["width"] == 2) & (table["precision"] == "fp32")].iloc[0]
    assert missing["status (ours)"] == "missing" and pd.isna(missing["best_val_acc_pct (ours)"])


def test_colab_keeps_records_on_drive_only_where_it_can(tmp_path, monkeypatch):
    """Off Colab (papermill, JupyterLab) the given folders stay, and the line says so; on Colab
    (google.colab faked: a platform CI lacks) Drive is mounted and both folders go under it; a
    drive_folder outside the mount is one line."""
    import sys
    import types

    from energy_lib.errors import ConfigError
    from energy_lib.study import colab_folders

    runs, report, line = colab_folders(False, "/content/drive/MyDrive/x", "runs", "report")
    assert (runs, report) == ("runs", "report") and "loses them" in line
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not on Colab
    runs, report, line = colab_folders(True, "/content/drive/MyDrive/x", "runs", "report")
    assert (runs, report) == ("runs", "report") and line.startswith("not on Colab")
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    runs, report, line = colab_folders(True, " /content/drive/MyDrive/x ", "runs", "report")
    assert mounted == ["/content/drive"]
    assert (str(runs), str(report)) == ("/content/drive/MyDrive/x/runs",
                                        "/content/drive/MyDrive/x/report")
    assert "resumes" in line
    with pytest.raises(ConfigError, match="drive_folder"):
        colab_folders(True, "/tmp/elsewhere", "runs", "report")
