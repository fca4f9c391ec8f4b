"""Confusion matrices (recorded, drawn, small multiples), the pruning figures and table, the
new results.csv and export columns, and the study files of issue #11 (load, and their CPU twins
run)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from conftest import fake_executed_notebook, has_fashion_mnist, needs_fashion_mnist
from energy_lib import RunConfig
from energy_lib import lab, records
from energy_lib.records import Runs, read_record, read_runs
from energy_lib.report import models as report_models
from energy_lib.report import results_table
from energy_lib.report.export import export_row
from energy_lib.study import load_study, run_study

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def runs_of(runs=None, epochs=None) -> Runs:
    return Runs(pd.DataFrame(runs if runs is not None else []),
                pd.DataFrame(epochs if epochs is not None else []), pd.DataFrame(),
                pd.DataFrame(), [])


# ------------------------------------------------------------------------------------------
# the confusion matrix: recorded from a real run, drawn
# ------------------------------------------------------------------------------------------

@needs_fashion_mnist
def test_real_run_records_a_confusion_matrix_that_sums_to_the_test_set(monkeypatch):
    from energy_lib.training.train import train

    config = RunConfig(model="mlp", width=0.25, dataset="fashion_mnist", epochs=1, batch_size=64,
                       train_subset=256, test_subset=137, eval_batch_size=50, device="cpu",
                       download=False, idle_s=0, idle_after_s=0, optimizer="adam", lr=0.001)
    result = train(config, progress=False)
    recorded = []
    monkeypatch.setattr(records, "store", lambda name, value: recorded.append((name, value)))
    lab.record_result(result)
    names = [name for name, _ in recorded]
    assert names[-1] == "summary" and "confusion" in names  # summary stays last
    matrix = np.array(dict(recorded)["confusion"])
    assert matrix.shape == (10, 10) and matrix.sum() == 137
    assert np.trace(matrix) == round(result.epochs[-1]["val_acc_pct"] * 137 / 100)
    fig = report_models.plot_confusion(matrix, report_models.class_names("fashion_mnist", 10))
    shown = fig.axes[0].images[0].get_array()
    assert np.allclose(np.nansum(shown, axis=1)[matrix.sum(axis=1) > 0], 1.0)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == "Ankle boot"


def test_confusion_rows_are_shares_of_each_true_class():
    shares = report_models.normalise_rows([[3, 1], [0, 0]])
    assert shares[0].tolist() == [0.75, 0.25] and np.isnan(shares[1]).all()
    with pytest.raises(ValueError, match="square"):
        report_models.normalise_rows([[1, 2, 3]])


def test_drawing_a_confusion_matrix_keeps_labels_plain_and_says_when_empty():
    fig = report_models.plot_confusion([[5, 0], [1, 4]], [r"$\notacommand$", "_b"])
    fig.canvas.draw()  # mathtext would raise on the unknown command
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [r"$\notacommand$", "_b"]
    assert "10 test images" in ax.get_title()
    empty = report_models.plot_confusion([])
    assert "no confusion matrix" in empty.axes[0].texts[0].get_text()


def test_class_names_fall_back_to_indices():
    assert report_models.class_names("cifar10", 10)[0] == "airplane"
    assert report_models.class_names("cifar100", 100)[:3] == ["0", "1", "2"]
    assert report_models.class_names("fashion_mnist", 3) == ["0", "1", "2"]  # size mismatch


def test_small_multiples_show_each_finished_record(tmp_path):
    for index, (cell, status) in enumerate([("a", "ok"), ("b", "ok"), ("c", "failed")]):
        fake_executed_notebook(tmp_path / f"{cell}.ipynb", {
            "confusion": [[index + 1, 0], [0, 1]],
            "config": {"dataset": "cifar10"},
            "summary": {"status": status, "final_val_acc_pct": 50.0 + index}})
    runs = read_runs(tmp_path)
    assert runs.confusion == {"a": [[1, 0], [0, 1]], "b": [[2, 0], [0, 1]]}  # not the failed cell
    fig, rule = report_models.figure_confusions(runs)
    assert rule == "all 2 finished cells"
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["a\nfinal val acc 50.0 %", "b\nfinal val acc 51.0 %"]


def test_many_cells_single_out_the_best_and_worst():
    cells = [f"c{i:02d}" for i in range(20)]
    table = pd.DataFrame({"cell": cells, "final_val_acc_pct": range(20)})
    chosen, rule = report_models.singled_out(table, cells, limit=4)
    assert chosen == ["c19", "c18", "c01", "c00"]
    assert rule == "4 of 20 finished cells: the 2 best and the 2 worst by final validation accuracy"
    assert report_models.singled_out(table, cells[:3], limit=4)[0] == ["c00", "c01", "c02"]


# ------------------------------------------------------------------------------------------
# pruning: energy against dense and sparse MACs
# ------------------------------------------------------------------------------------------

def pruning_runs() -> Runs:
    """Three cells, four epochs, pruning after epochs 2 and 3: masking halves the sparse MACs
    with the energy flat; removing channels lowers both, and the energy follows."""
    runs = [{"cell": "dense", "status": "ok", "prune": "none"},
            {"cell": "masked", "status": "ok", "prune": "unstructured"},
            {"cell": "slim", "status": "ok", "prune": "structured"},
            {"cell": "broken", "status": "failed", "prune": "structured"}]
    epochs = []
    for epoch, (sparse_m, slim_m, slim_j) in enumerate(
            [(100, 100, 130.0), (100, 100, 100.0), (70, 70, 72.0), (50, 50, 50.0)], start=1):
        epochs += [
            {"cell": "dense", "epoch": epoch, "energy_j": 100.0, "energy_kind": "modelled",
             "dense_macs_per_image": 100e6, "sparse_macs_per_image": 100e6},
            {"cell": "masked", "epoch": epoch, "energy_j": 100.0, "energy_kind": "modelled",
             "dense_macs_per_image": 100e6, "sparse_macs_per_image": sparse_m * 1e6},
            {"cell": "slim", "epoch": epoch, "energy_j": slim_j, "energy_kind": "modelled",
             "dense_macs_per_image": slim_m * 1e6, "sparse_macs_per_image": slim_m * 1e6},
            {"cell": "broken", "epoch": epoch, "energy_j": 1.0, "energy_kind": "modelled",
             "dense_macs_per_image": 1e6, "sparse_macs_per_image": 1e6}]
    return runs_of(runs, epochs)


def test_pruning_figure_plots_energy_against_dense_and_sparse_macs():
    fig = report_models.figure_pruning(pruning_runs())
    dense_ax, sparse_ax = fig.axes
    lines = {ax: {line.get_label(): line for line in ax.get_lines()} for ax in fig.axes}
    assert set(lines[dense_ax]) == {"masked (unstructured)", "slim (structured)"}
    masked_dense = lines[dense_ax]["masked (unstructured)"].get_xdata()
    masked_sparse = lines[sparse_ax]["masked (unstructured)"].get_xdata()
    assert list(masked_dense) == [100.0] * 4  # masking: the hardware still does every MAC
    assert list(masked_sparse) == [100.0, 100.0, 70.0, 50.0]
    assert list(lines[dense_ax]["slim (structured)"].get_ydata()) == [130.0, 100.0, 72.0, 50.0]
    assert "modelled" in dense_ax.get_ylabel()
    assert "dense MACs" in dense_ax.get_xlabel() and "sparse MACs" in sparse_ax.get_xlabel()


def test_pruning_figure_without_pruned_cells_says_so():
    runs = pruning_runs()
    runs.runs["prune"] = "none"
    fig = report_models.figure_pruning(runs)
    assert "no finished pruned cells" in fig.axes[0].texts[0].get_text()


def test_pruning_table_measures_the_change():
    table = report_models.pruning_table(pruning_runs()).set_index("cell")
    assert list(table.index) == ["masked", "slim"]
    assert table.loc["masked", "dense_macs_change_pct"] == 0.0
    assert table.loc["masked", "sparse_macs_change_pct"] == -50.0
    assert table.loc["masked", "energy_per_epoch_change_pct"] == 0.0
    assert table.loc["slim", "dense_macs_change_pct"] == -50.0
    # before: epoch 2 only (epoch 1's warm-up left out); after: the last state (epoch 4)
    assert table.loc["slim", "energy_per_epoch_before_j"] == 100.0
    assert table.loc["slim", "energy_per_epoch_after_j"] == 50.0
    assert table.loc["slim", "energy_per_epoch_change_pct"] == -50.0


def test_model_report_is_written_atomically(tmp_path):
    written = report_models.write_model_report(pruning_runs(), tmp_path / "r")
    for name in report_models.FIGURE_NAMES:
        assert (tmp_path / "r" / f"{name}.png").read_bytes()[:8] == PNG
    assert pd.read_csv(tmp_path / "r" / "pruning.csv")["cell"].tolist() == ["masked", "slim"]
    assert not list((tmp_path / "r").glob(".*"))  # no temporary file left behind
    assert written["confusion_rule"] == "no finished cell recorded a confusion matrix"


# ------------------------------------------------------------------------------------------
# results.csv and the export
# ------------------------------------------------------------------------------------------

def test_results_table_has_the_model_columns():
    runs = runs_of([{"cell": "a", "status": "ok", "model": "resnet18", "optimizer": "adam",
                     "parameters": 1234, "dense_macs_per_image": 5678,
                     "best_val_top5_acc_pct": 99.5, "best_val_acc_pct": 90.0},
                    {"cell": "b", "status": "missing"}])  # as read_study gives a cell without a record
    row = results_table(runs).set_index("cell")
    for column, value in {"model": "resnet18", "optimizer": "adam", "parameters": 1234,
                          "dense_macs_per_image": 5678, "best_val_top5_acc_pct": 99.5}.items():
        assert row.loc["a", column] == value
        assert pd.isna(row.loc["b", column])  # a missing cell keeps its row, empty


def test_export_fills_eval_top5_from_the_final_top5():
    row = pd.Series({"cell": "a", "final_val_acc_pct": 80.0, "final_val_top5_acc_pct": 97.25,
                     "best_val_top5_acc_pct": 98.0})
    out = export_row(row, "s")
    assert out["eval_top1"] == 80.0 and out["eval_top5"] == 97.25
    assert export_row(pd.Series({"cell": "a"}), "s")["eval_top5"] is None


# ------------------------------------------------------------------------------------------
# the study files
# ------------------------------------------------------------------------------------------

STUDY_CELLS = {"efficient_dl": 72, "efficient_dl_quick": 12, "efficient_dl_baselines": 18,
               "efficient_dl_baselines_quick": 6, "ee_training": 72, "ee_training_quick": 12}


@pytest.mark.parametrize("name,count", STUDY_CELLS.items())
def test_study_files_load_with_their_cell_counts(name, count):
    study = load_study(REPO / "studies" / f"{name}.toml")
    assert study.name == name and len(study.cells) == count
    assert len({c.name for c in study.cells}) == count


def test_gpu_studies_follow_the_seeds():
    efficient = load_study(REPO / "studies" / "efficient_dl.toml")
    assert {(c.config.epochs, c.config.batch_size, c.config.optimizer) for c in efficient.cells} == {
        (50, 64, "adam")}
    assert {c.config.prune for c in efficient.cells} == {"none", "unstructured", "structured"}
    baselines = load_study(REPO / "studies" / "efficient_dl_baselines.toml")
    assert {(c.config.model, c.config.lr) for c in baselines.cells} == {
        (m, lr) for m in ("resnet18", "mlp") for lr in (0.01, 0.001, 0.0001)}
    ee = load_study(REPO / "studies" / "ee_training.toml")
    assert all(c.config.model.startswith("timm:") for c in ee.cells)
    assert {c.config.batch_size for c in ee.cells} == {32, 64, 128}
    assert {c.config.dataset for c in ee.cells} == {"cifar10", "cifar100"}
    assert {c.config.epochs for c in ee.cells} == {50, 75, 100}  # separate runs, as the seed's
    # the GPU studies give every setting an interval (ee_training answers within blocks)
    assert efficient.repeats == baselines.repeats == 3 and ee.repeats == 1
    assert all("codecarbon" in c.config.meter_names and c.config.country for c in ee.cells)


@pytest.mark.parametrize("gpu,cpu", [("efficient_dl", "efficient_dl_quick"),
                                     ("efficient_dl_baselines", "efficient_dl_baselines_quick"),
                                     ("ee_training", "ee_training_quick")])
def test_quick_twins_keep_their_studys_axes(gpu, cpu):
    """A twin shrinks sizes; its axes are the GPU study's (minus the dataset axis, which on a
    machine without CIFAR can only be Fashion-MNIST)."""
    axes = {name: tomllib.loads((REPO / "studies" / f"{name}.toml").read_text())["axes"]
            for name in (gpu, cpu)}
    expected = {k: v for k, v in axes[gpu].items() if k != "dataset"}
    if gpu == "efficient_dl":  # the twin fixes init to Xavier: 24 cells took over 10 minutes
        del expected["init"]
        assert {c.config.init for c in load_study(REPO / "studies" / f"{cpu}.toml").cells} == {
            "xavier"}
    if gpu == "ee_training":  # the twin keeps the two smallest timm CNNs of seed 001, 1-2 epochs
        expected["model"] = ["timm:resnet18", "timm:mobilenetv3_small_100"]
        expected["epochs"] = [1, 2]
    assert axes[cpu] == expected
    assert {c.config.dataset for c in load_study(REPO / "studies" / f"{cpu}.toml").cells} == {
        "fashion_mnist"}


TINY = {"train_subset": 256, "test_subset": 200, "epochs": 2, "download": False}


@pytest.mark.slow
@pytest.mark.parametrize("name,cells", [
    ("efficient_dl_quick", ["model-resnet18_shortcut-False_prune-unstructured",
                            "model-resnet18_shortcut-True_prune-structured"]),
    ("efficient_dl_baselines_quick", ["model-mlp_lr-0.001"]),
    ("ee_training_quick", ["model-timm:mobilenetv3_small_100_batch_size-128_epochs-1"]),
])
def test_quick_twins_run_and_report(name, cells, tmp_path, monkeypatch):
    if not has_fashion_mnist():
        pytest.skip(needs_fashion_mnist.kwargs["reason"])
    monkeypatch.chdir(tmp_path)
    tiny = {k: v for k, v in TINY.items() if k != "epochs" or name != "ee_training_quick"}
    study = load_study(REPO / "studies" / f"{name}.toml", **tiny)  # epochs: an axis there
    outcome = run_study(study, runs_root=tmp_path / "runs", progress=False, only=cells)
    assert sorted(outcome.ran) == sorted(cells) and outcome.failed == []
    for cell in cells:
        record = read_record(tmp_path / "runs" / name / f"{cell}.ipynb")
        assert record.status == "ok", record.error
        assert np.array(record.confusion).sum() == 200
    # the report's own computations in this process (the analysis notebook around them is
    # exercised by the shared tiny study's run: conftest.tiny_run)
    from energy_lib.report import build
    from energy_lib.study import read_study

    runs, state = read_study(study, tmp_path / "runs" / name)
    report = tmp_path / "report" / name
    build(study, runs, state, report)
    assert (report / "confusion_matrices.png").read_bytes()[:8] == PNG
    table = pd.read_csv(report / "results.csv")
    done = table[table["status"] == "ok"]
    assert len(done) == len(cells) and (done["parameters"] > 0).all()
    pruned = pd.read_csv(report / "pruning.csv")
    if name == "efficient_dl_quick":
        by_cell = pruned.set_index("prune")
        assert by_cell.loc["unstructured", "dense_macs_change_pct"] == 0
        assert by_cell.loc["unstructured", "sparse_macs_change_pct"] < 0
        assert by_cell.loc["structured", "dense_macs_change_pct"] < 0
    else:
        assert pruned.empty
    if name == "ee_training_quick":
        from energy_lib.report.export import write_export

        log = pd.read_csv(write_export(runs, study.name, tmp_path / "log.csv"))
        assert 0 <= log["eval_top5"].iloc[0] <= 100 and not math.isnan(log["eval_top5"].iloc[0])
        assert log["eval_top5"].iloc[0] >= log["eval_top1"].iloc[0]
