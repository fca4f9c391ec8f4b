"""train(config) on a small subset of the real Fashion-MNIST: learning, the per-epoch table, the
constant-power energy, the summary, provenance, determinism and divergence."""

from __future__ import annotations

import math
import re

import pytest
import torch

from conftest import needs_fashion_mnist
from energy_lib import ConfigError, RunConfig
from energy_lib.energy import JOULES_PER_KWH, derive
from energy_lib.records import Status
from energy_lib.training.train import summarise, train

pytestmark = [needs_fashion_mnist]

EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc_pct", "val_loss", "val_acc_pct",
                 "val_top5_acc_pct", "train_s", "eval_s", "parameters", "nonzero_parameters",
                 "parameter_sparsity", "weight_sparsity", "model_size_bytes",
                 "dense_macs_per_image", "sparse_macs_per_image"]  # no energy: derived from the table

BASE = dict(dataset="fashion_mnist", train_subset=512, test_subset=256, epochs=3, width=0.5,
            lr=0.05, batch_size=64, device="cpu", download=False, data_dir="unused",
            assumed_power_w=100.0, study="tests", cell="tiny", idle_s=0, idle_after_s=0)


def tiny(**changes) -> RunConfig:
    return RunConfig.from_dict({**BASE, **changes})


@pytest.fixture(scope="module")
def result():
    rows = []
    run = train(tiny(), progress=False, on_epoch=rows.append)
    run.callback_rows = rows
    return run


@pytest.fixture(scope="module")
def rerun():
    return train(tiny(), progress=False)


@pytest.mark.slow
def test_training_loss_falls(result):
    losses = [row["train_loss"] for row in result.epochs]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert result.status == Status.OK


@pytest.mark.slow
def test_epoch_table_columns_and_values(result):
    assert [list(row) for row in result.epochs] == [EPOCH_COLUMNS] * 3
    assert [row["epoch"] for row in result.epochs] == [1, 2, 3]
    frame = result.epochs_frame()
    assert list(frame.columns) == EPOCH_COLUMNS and len(frame) == 3
    for row in result.epochs:
        assert 0 <= row["train_acc_pct"] <= 100 and 0 <= row["val_acc_pct"] <= 100
        assert math.isfinite(row["val_loss"]) and row["val_loss"] > 0
        assert row["train_s"] > 0 and row["eval_s"] > 0
        # accuracy on 256 test images moves in steps of 100/256 %
        assert (row["val_acc_pct"] * 256 / 100) == pytest.approx(round(row["val_acc_pct"] * 2.56))
    assert result.callback_rows == result.epochs  # on_epoch saw every finished epoch


@pytest.mark.slow
def test_constant_power_energy_is_assumed_power_times_time(result):
    power = result.config.assumed_power_w
    assert power == 100.0
    epochs = derive.per_epoch(result.energy).set_index("epoch")
    for row in result.epochs:
        figure = epochs.loc[row["epoch"], "constant_power_energy_j"]
        assert figure == pytest.approx(power * (row["train_s"] + row["eval_s"]), rel=1e-9)
        assert epochs.loc[row["epoch"], "constant_power_energy_kwh"] == pytest.approx(
            figure / JOULES_PER_KWH, rel=1e-12)


@pytest.mark.slow
def test_energy_rows_are_long_form_per_phase(result):
    rows = [r for r in result.energy if r["phase"] != "predicted"]
    assert all(r["kind"] in ("measured", "modelled") for r in rows)
    predicted = [r for r in result.energy if r["phase"] == "predicted"]
    assert {(r["method"], r["kind"]) for r in predicted} == {
        ("ops-model", "estimated"), ("layer-regression", "estimated"), ("early-epochs", "estimated")}
    constant = [r for r in rows if r["method"] == "constant-power" and r["phase"] in ("train", "eval")]
    assert [(r["epoch"], r["phase"]) for r in constant] == [
        (e, p) for e in (1, 2, 3) for p in ("train", "eval")]
    whole_run = [r for r in rows if r["method"] == "constant-power" and r["phase"] == "run"]
    assert len(whole_run) == 1 and whole_run[0]["epoch"] is None
    assert whole_run[0]["duration_s"] >= sum(r["duration_s"] for r in constant)
    for r in constant:
        assert r["kind"] == "modelled" and r["component"] == "assumed-board"
        assert r["energy_j"] == pytest.approx(100.0 * r["duration_s"], rel=1e-9)
    for row in result.epochs:
        of_epoch = [r for r in constant if r["epoch"] == row["epoch"]]
        train_row = next(r for r in of_epoch if r["phase"] == "train")
        assert train_row["duration_s"] == pytest.approx(row["train_s"])
        eval_row = next(r for r in of_epoch if r["phase"] == "eval")
        assert eval_row["duration_s"] == pytest.approx(row["eval_s"])


@pytest.mark.slow
def test_summary(result):
    s, epochs = result.summary, result.epochs
    assert s["status"] == "ok" and s["epochs_completed"] == 3
    assert s["best_val_acc_pct"] == max(r["val_acc_pct"] for r in epochs)
    assert s["final_val_acc_pct"] == epochs[-1]["val_acc_pct"]
    assert s["final_train_loss"] == epochs[-1]["train_loss"]
    assert s["final_val_loss"] == epochs[-1]["val_loss"]
    assert s["train_s_total"] == pytest.approx(sum(r["train_s"] for r in epochs))
    assert s["total_s"] == pytest.approx(s["train_s_total"] + s["eval_s_total"])
    assert s["s_per_epoch"] == pytest.approx(s["total_s"] / 3)
    figures = derive.run_figures(result.energy, s["best_val_acc_pct"])
    assert figures["constant_power_energy_j"] == pytest.approx(100.0 * s["total_s"], rel=1e-9)
    assert figures["constant_power_acc_pct_per_wh"] == pytest.approx(
        s["best_val_acc_pct"] / (100.0 * s["total_s"] / 3600))
    assert s["compute_dtype"] == "float32" and s["device_name"] == "cpu"
    assert s["assumed_power_w"] == 100.0 and s["pipeline"] == "tensor"
    # width 0.5 on 1x28x28: 16,16 | 32,32 | 64 channels, 64*3*3 -> 128 -> 10
    expected = (1 * 16 * 9 + 16) + (16 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 32 * 9 + 32) \
        + (32 * 64 * 9 + 64) + (64 * 9 * 128 + 128) + (128 * 10 + 10)
    assert s["parameters"] == expected
    # whose share of the machine the training was: scalars, judged over the train windows
    assert isinstance(s["contended"], bool) and s["contention_threshold"] == 0.25
    assert 0 <= s["others_cpu_share"] <= 1 and 0 <= s["steal_share"] <= 1
    assert s["runnable_per_core"] >= 0
    assert [w["window"] for w in result.windows if w["phase"] == "train"] == [
        "train-1", "train-2", "train-3"]


@pytest.mark.slow
def test_provenance(result):
    p = result.provenance
    assert "git_commit" in p
    assert p["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", p["git_commit"])
    assert p["torch_version"] == torch.__version__
    assert isinstance(p["cpu_model"], str) and p["cpu_model"]
    assert p["device"] == "cpu" and p["device_name"] == "cpu"
    assert p["started"] <= p["finished"]
    assert set(p["data_sources"]) == {"train", "test"}
    assert "subset of 512" in p["data_sources"]["train"]


@pytest.mark.slow
def test_same_seed_gives_identical_run(result, rerun):
    for a, b in zip(result.epochs, rerun.epochs, strict=True):
        assert a["train_loss"] == b["train_loss"]
        assert a["val_loss"] == b["val_loss"] and a["val_acc_pct"] == b["val_acc_pct"]


@pytest.mark.slow
def test_another_seed_gives_another_run(result):
    other = train(tiny(seed=1, epochs=1), progress=False)
    assert other.epochs[0]["train_loss"] != result.epochs[0]["train_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("amp", "bfloat16"),
                                             ("fp32", "float32")])
def test_compute_dtype_on_cpu(precision, dtype):
    run = train(tiny(precision=precision, epochs=1, train_subset=128, test_subset=64),
                progress=False)
    assert run.status == "ok"
    assert run.summary["compute_dtype"] == dtype
    assert math.isfinite(run.epochs[0]["train_loss"])


@pytest.mark.slow
def test_text_progress_bar(capsys):
    train(tiny(epochs=2, train_subset=128, test_subset=64, cell="progress-cell"), progress="text")
    err = capsys.readouterr().err
    assert "progress-cell" in err and "2/2" in err


@pytest.mark.slow
def test_torchvision_pipeline_run_is_deterministic():
    config = tiny(pipeline="torchvision", num_workers=0, epochs=1, train_subset=128,
                  test_subset=64)
    a, b = train(config, progress=False), train(config, progress=False)
    assert a.summary["pipeline"] == "torchvision"
    assert a.epochs[0]["train_loss"] == b.epochs[0]["train_loss"]
    assert a.epochs[0]["val_loss"] == b.epochs[0]["val_loss"]


@pytest.mark.slow
def test_divergence_is_a_status_not_an_exception():
    seen = []
    run = train(tiny(lr=1e6, epochs=3), progress=False, on_epoch=seen.append)
    assert run.status == Status.DIVERGED
    assert len(run.epochs) == 1 and not math.isfinite(run.epochs[0]["train_loss"])
    assert math.isnan(run.epochs[0]["val_loss"]) and math.isnan(run.epochs[0]["val_acc_pct"])
    assert run.epochs[0]["eval_s"] == 0.0
    epoch = derive.per_epoch(run.energy).iloc[0]
    assert epoch["constant_power_energy_j"] == pytest.approx(100.0 * run.epochs[0]["train_s"], rel=1e-9)
    assert {r["phase"] for r in run.energy} == {"predicted", "train", "run"}  # no eval after divergence
    assert seen == []  # no finished epoch to report
    s = run.summary
    assert s["status"] == "diverged" and s["epochs_completed"] == 1
    figures = derive.run_figures(run.energy, s["best_val_acc_pct"])
    assert math.isnan(s["best_val_acc_pct"]) and math.isnan(figures["acc_pct_per_wh"])
    assert figures["energy_j"] > 0


def test_cuda_on_a_cpu_machine_fails_before_loading_data(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    config = RunConfig(dataset="cifar10", data_dir=str(tmp_path / "no-data"), download=False,
                       device="cuda")
    with pytest.raises(ConfigError, match="device='cuda'"):
        train(config, progress=False)
    assert not (tmp_path / "no-data").exists()


def test_summarise_of_no_epochs():
    s = summarise([], Status.OK)
    assert s["epochs_completed"] == 0 and math.isnan(s["best_val_acc_pct"])
    assert math.isnan(s["s_per_epoch"]) and not any("energy" in key for key in s)
    assert s["total_s"] == 0
    assert s["contended"] is False and math.isnan(s["others_cpu_share"])  # nothing trained


def test_summarise_says_contended_from_the_train_windows():
    windows = [{"phase": "train", "capacity_cpu_s": 4.0, "others_cpu_share": 0.5,
                "steal_share": 0.0, "runnable_per_core": 1.5}]
    s = summarise([], Status.OK, windows, contention_threshold=0.4)
    assert s["contended"] is True and s["others_cpu_share"] == 0.5
    assert summarise([], Status.OK, windows, contention_threshold=0.6)["contended"] is False


@pytest.mark.slow
def test_epoch_one_has_a_steady_window_inside_it_that_the_extrapolation_uses():
    result = train(tiny(train_subset=1024, epochs=2, width=0.25, idle_s=0, idle_after_s=0),
                   progress=False)  # 16 steps: 10 of warm-up, steps 10..14 steady, the last out
    steady = [r for r in result.energy if r["phase"] == "steady"]
    train_1 = [r for r in result.energy if r["phase"] == "train" and r["epoch"] == 1]
    assert steady and {r["epoch"] for r in steady} == {1}
    assert 0 < steady[0]["duration_s"] < train_1[0]["duration_s"]
    (early,) = [r for r in result.energy if r["method"] == "early-epochs"]
    assert "last 5 of 16 steps" in early["flag"]
    # never part of a headline: the run's energy is its train and eval windows alone
    total = derive.per_run(result.energy)["energy_j"].iloc[0]
    work = derive.headline_rows(result.energy)
    assert total == pytest.approx(work["energy_j"].sum())
    assert "steady" not in set(work["phase"])
    assert [w["window"] for w in result.windows][:2] == ["steady-1", "train-1"]


def test_threads_match_the_cores_others_left_free():
    from energy_lib.training.device import threads_for_free_cores

    window = {"cores": 4, "others_cpu_share": 0.25, "steal_share": 0.0}
    assert threads_for_free_cores(window, 4) == 3  # one core busy elsewhere
    assert threads_for_free_cores({**window, "others_cpu_share": 0.02}, 4) == 4  # quiet
    assert threads_for_free_cores({**window, "others_cpu_share": 1.0}, 4) == 1  # at least one
    assert threads_for_free_cores({**window, "steal_share": 0.5}, 2) == 1  # steal counts too
    assert threads_for_free_cores(None, 2) == 2  # no idle window: no look, no change


def test_a_cell_beside_busy_cores_trains_on_the_free_ones_and_restores_its_threads():
    """Real spinning processes on every core during the idle window: the run trains with one
    thread, records it, and leaves the process's thread count as it was."""
    import os

    from benchmarks.suite import busy_neighbour

    quiet = torch.get_num_threads()
    with busy_neighbour(cores=os.cpu_count() or 1):
        run = train(tiny(epochs=1, idle_s=0.5), progress=False)
    assert run.summary["torch_threads"] == 1 and run.summary["torch_threads_quiet"] == quiet
    assert torch.get_num_threads() == quiet
    alone = train(tiny(epochs=1, idle_s=0.5), progress=False)
    assert alone.summary["torch_threads"] == quiet
