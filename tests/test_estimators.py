"""Estimators: operation counts against hand-computed numbers, the per-layer regression's
held-out bars, the public API on torchvision and our models, bad inputs, calibration resume,
early-epoch extrapolation."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from energy_lib.errors import ConfigError
from energy_lib.estimators import extrapolate_epochs, layerwise_estimate, load_fit, ops_estimate
from energy_lib.estimators import calibrate as cal
from energy_lib.estimators.layer_data import COLUMNS, count_macs, getzner2023
from energy_lib.estimators.regression import TRAINING_STEP_FACTOR
from energy_lib.provenance import fingerprint
from energy_lib.training.models import create_model

PJ = 1e-12
MUL32, ADD32, SRAM8K_32 = 3.7, 0.9, 5.0  # Horowitz table: pJ at 32 bits, tensors < 8 KB


def only_row(estimate):
    assert len(estimate.per_layer) == 1
    return estimate.per_layer.iloc[0]


# --- operation counts, by hand ------------------------------------------------------------

def test_conv2d_forward_counts_and_energy():
    # Conv2d(2 -> 3, 3x3, bias) on a 1x2x5x5 input: 3x3 outputs per channel, 27 outputs,
    # fan-in 2*9 = 18: 486 MACs; adds 27*(18-1) + 27 bias = 486.
    model = nn.Sequential(nn.Conv2d(2, 3, kernel_size=3))
    row = only_row(ops_estimate(model, (2, 5, 5), 1, training=False))
    assert (row.macs, row.mults, row.adds) == (486, 486, 486)
    assert (row.reads, row.writes) == (50 + 54 + 3, 27)  # input, weight, bias | output
    expected_pj = 486 * MUL32 + 486 * ADD32 + (107 + 27) * SRAM8K_32
    assert row.energy_j == pytest.approx(expected_pj * PJ)


def test_conv2d_training_step_counts():
    # First layer: no gradient w.r.t. the model's input. Gradient w.r.t. weights: 486 mul,
    # 486 - 54 + 27 (bias) adds, reads input and output grad, writes weight and bias grads.
    # SGD momentum + weight decay on 57 parameters: 3 mul, 3 add, 3 reads, 2 writes each.
    model = nn.Sequential(nn.Conv2d(2, 3, kernel_size=3))
    row = only_row(ops_estimate(model, (2, 5, 5), 1, training=True))
    assert row.mults == 486 + 486 + 3 * 57
    assert row.adds == 486 + (486 - 54 + 27) + 3 * 57
    assert row.reads == 107 + (50 + 27) + 3 * 57
    assert row.writes == 27 + 57 + 2 * 57
    assert row.grad_input_energy_j == 0


def test_linear_counts_at_32_and_16_bits():
    # Linear(4 -> 3), batch 2: 24 MACs; adds 6*(4-1) + 6 = 24; reads 8 + 12 + 3; writes 6.
    model = nn.Sequential(nn.Linear(4, 3))
    row32 = only_row(ops_estimate(model, (1, 1, 4), 2, training=False))
    assert (row32.macs, row32.mults, row32.adds, row32.reads, row32.writes) == (24, 24, 24, 23, 6)
    assert row32.energy_j == pytest.approx((24 * 3.7 + 24 * 0.9 + 29 * 5.0) * PJ)
    row16 = only_row(ops_estimate(model, (1, 1, 4), 2, bits=16, training=False))
    assert row16.energy_j == pytest.approx((24 * 1.1 + 24 * 0.4 + 29 * 2.5) * PJ)


def test_memory_level_follows_tensor_size():
    # The 1024x1024 fp32 weight (4 MiB) is read from DRAM (1000 pJ); the 4 KiB input, bias and
    # output stay in the < 8 KB level (5 pJ).
    model = nn.Sequential(nn.Linear(1024, 1024))
    row = only_row(ops_estimate(model, (1, 1, 1024), 1, training=False))
    n = 1024 * 1024
    expected_pj = n * MUL32 + n * ADD32 + n * 1000 + 3 * 1024 * SRAM8K_32
    assert row.energy_j == pytest.approx(expected_pj * PJ)


def test_own_mac_count_matches_getzner_up_to_their_bias_adds():
    # The authors counted with ptflops, which adds one operation per output for the bias.
    raw = pd.read_csv(__import__("importlib.resources").resources.files("energy_lib")
                      .joinpath("data/getzner2023/conv2d.csv"))
    raw = raw[raw.cpu_energy > 0]
    table = getzner2023()
    ours = table[table.layer_type == "Conv2d"]["macs"].to_numpy()
    side = np.floor((raw.image_size + 2 * raw.padding - raw.kernel_size) / raw.stride) + 1
    bias_adds = (raw.batch_size * raw.out_channels * side ** 2).to_numpy()
    np.testing.assert_allclose(ours + bias_adds, raw["macs"].to_numpy(), rtol=1e-6)


# --- the per-layer regression -------------------------------------------------------------

def test_getzner_energy_is_per_pass_already():
    # cpu_energy (kWh) x 3.6e6 is the energy of one pass: ~75 W x the time of one pass. Dividing
    # by forward_passes again would give ~75 W / forward_passes.
    table = getzner2023()
    power_w = table["energy_j"] / table["seconds"]
    for layer_type in ("Conv2d", "Linear", "MaxPool2d"):
        assert 60 < power_w[table.layer_type == layer_type].median() < 90


def test_conv2d_and_linear_held_out_r2_at_least_099():
    report = load_fit("getzner2023").report().set_index("layer_type")
    for layer_type in ("Conv2d", "Linear"):
        assert report.loc[layer_type, "n_test"] >= 150
        assert report.loc[layer_type, "r2"] >= 0.99, report.loc[layer_type].to_dict()
    assert set(report.index) == {"Conv2d", "Linear", "MaxPool2d", "ReLU", "Sigmoid", "Tanh", "Softmax"}
    assert report["mape_pct"].notna().all()


def test_sum_over_layers_scales_with_the_batch():
    # No per-layer constant to pile up: per image, a batch-1 and a batch-256 AlexNet pass cost
    # the same within a factor of 2 (an OLS intercept of ~200 J per conv layer makes it ~1000x).
    model = torchvision.models.alexnet(weights=None)
    one = layerwise_estimate(model, (3, 224, 224), 1).energy_j
    many = layerwise_estimate(model, (3, 224, 224), 256).energy_j / 256
    assert 0.5 < many / one < 2


def test_training_with_forward_only_fit_applies_the_documented_factor():
    model = create_model("paper_cnn")
    forward = layerwise_estimate(model, (3, 32, 32), 8)
    step = layerwise_estimate(model, (3, 32, 32), 8, training=True)
    assert step.energy_j == pytest.approx(TRAINING_STEP_FACTOR * forward.energy_j)
    assert "not measured" in step.source and step.training


# --- the public API on the required models ------------------------------------------------

MODELS = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), (3, 224, 224)),
    "vgg11": (lambda: torchvision.models.vgg11(weights=None), (3, 224, 224)),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), (3, 224, 224)),
    "paper_cnn_32": (lambda: create_model("paper_cnn"), (3, 32, 32)),
    "paper_cnn_28": (lambda: create_model("paper_cnn", image_size=28, in_channels=1), (1, 28, 28)),
}


@pytest.mark.parametrize("name", MODELS)
def test_both_estimators_on_required_models(name):
    build, size = MODELS[name]
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for estimate in (layerwise_estimate(model, size, 4), ops_estimate(model, size, 4)):
        assert estimate.kind == "estimated" and estimate.source
        assert math.isfinite(estimate.energy_j) and estimate.energy_j > 0
        assert {"name", "type", "macs", "energy_j", "covered"} <= set(estimate.per_layer.columns)
        assert estimate.energy_j == pytest.approx(estimate.per_layer["energy_j"].sum())
        assert 0 <= estimate.uncovered_macs_fraction < 0.01
        assert set(estimate.uncovered_layers) == set(
            estimate.per_layer.loc[~estimate.per_layer.covered, "name"])
        assert estimate.per_layer.macs.sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_method_labels_and_leftovers_on_resnet18():
    model = torchvision.models.resnet18(weights=None)
    learned = layerwise_estimate(model, (3, 224, 224), 1)
    counted = ops_estimate(model, (3, 224, 224), 1)
    assert (learned.method, counted.method) == ("layer-regression", "ops-model")
    # BatchNorm is no layer type of the Getzner data: left out, named, its MACs counted.
    assert "bn1" in learned.uncovered_layers and learned.uncovered_macs_fraction > 0
    assert counted.uncovered_layers == [] and counted.uncovered_macs_fraction == 0
    # A shared module called twice per block gives two rows.
    assert "layer1.0.relu#2" in set(learned.per_layer.name)


class MatMul(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n))

    def forward(self, x):
        return x @ self.weight


class FunctionalMatMul(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(x.flatten(1) @ self.weight)


def test_unknown_layers_are_left_out_and_said():
    model = nn.Sequential(nn.Flatten(), MatMul(8), nn.Linear(8, 2))
    for estimate in (ops_estimate(model, (1, 1, 8), 3), layerwise_estimate(model, (1, 1, 8), 3)):
        assert estimate.uncovered_layers == ["1"]
        assert estimate.uncovered_macs_fraction == pytest.approx(64 / (64 + 16))
    functional = ops_estimate(FunctionalMatMul(), (1, 1, 8), 3)
    assert functional.uncovered_macs_fraction == pytest.approx(64 / (64 + 16))
    assert any("outside any leaf module" in note for note in functional.notes)


# --- bad input ----------------------------------------------------------------------------

def test_bad_inputs_are_one_line_config_errors(tmp_path):
    model = create_model("paper_cnn")
    cases = [
        (lambda: layerwise_estimate(model, (3, 32, 32), 1, fit="getzner2024"), "getzner2023"),
        (lambda: layerwise_estimate(model, (3, 32, 32), 1, fit=tmp_path / "none.csv"), "does not exist"),
        (lambda: layerwise_estimate(model, (3, 28, 28), 1), "does not fit PaperCNN"),
        (lambda: ops_estimate(model, (3, 28, 28), 1), "does not fit PaperCNN"),
        (lambda: ops_estimate(model, (32, 32), 1), "(channels, height, width)"),
        (lambda: ops_estimate(model, (3, 32, 32), 0), "batch_size=0"),
        (lambda: ops_estimate(model, (3, 32, 32), 1, bits=12), "bits=12"),
        (lambda: ops_estimate(model, (3, 32, 32), 1, bits=8), "inference"),
        (lambda: ops_estimate(model, (3, 32, 32), 1, table=tmp_path / "t.csv"), "does not exist"),
    ]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    malformed = tmp_path / "malformed.csv"
    malformed.write_text("layer,energy\nConv2d,1\n")
    cases += [(lambda: layerwise_estimate(model, (3, 32, 32), 1, fit=empty), "is empty"),
              (lambda: layerwise_estimate(model, (3, 32, 32), 1, fit=malformed), "lacks columns")]
    for call, words in cases:
        with pytest.raises(ConfigError) as error:
            call()
        message = str(error.value)
        assert words in message and "\n" not in message, message


# --- calibration --------------------------------------------------------------------------

TINY = cal.Plan(ranges=cal.Ranges(batch_size=(1, 2), image_size=(4, 6), channels=(1, 3),
                                  kernel_size=(1, 2), stride=(1, 1), padding=(0, 0),
                                  features=(2, 8), elements=(4, 16)),
                per_type=1, layer_types=("Conv2d", "Linear", "ReLU"), min_window_s=0.001,
                max_repeats=3)


def read_rows(path):
    table = pd.read_csv(path)
    assert list(table.columns) == COLUMNS
    return table


def test_calibration_appends_and_resumes_without_duplicates(tmp_path):
    path, written, already = cal.calibrate(TINY, out_dir=tmp_path, machine="m", progress=False)
    assert (written, already) == (12, 0)  # 3 configurations x (forward, train_step) x 2 dtypes
    first = read_rows(path)
    references = (first.phase == "reference").to_numpy()
    assert references.tolist() == [True] + [False] * 12 + [True]  # the state before and after
    assert set(first.phase[~references]) == {"forward", "train_step"} and (first.energy_j > 0).all()
    assert set(first.dtype) == {"float32", "bfloat16"}  # fp32 and the CPU's amp dtype
    assert set(first.kind) <= {"measured", "modelled"} and first.method.str.len().min() > 0

    _, written, already = cal.calibrate(TINY, out_dir=tmp_path, machine="m", progress=False)
    assert (written, already) == (0, 12)
    with path.open("a") as handle:  # a calibration killed in the middle of a line
        handle.write("m,Conv2d,forw")
    _, written, already = cal.calibrate(replace(TINY, per_type=2), out_dir=tmp_path,
                                        machine="m", progress=False)
    assert (written, already) == (12, 12)
    table = read_rows(path)
    layers = table[table.phase != "reference"]
    assert len(layers) == 24 and not layers.duplicated(["config_id", "phase", "dtype"]).any()
    assert table.iloc[:14].equals(first)  # what was measured is kept as it was


def test_a_calibration_covers_every_layer_type_of_the_zoo(tmp_path):
    """BatchNorm2d, adaptive pooling and Dropout are calibrated beside Getzner's types, so the
    paper CNN, the ResNets and the MLP leave no layer out (residual additions happen in
    forward(), outside any module, and hold no MACs)."""
    from energy_lib.estimators.layer_data import LAYER_TYPES
    from energy_lib.training.models import create_model

    path, _, _ = cal.calibrate(replace(TINY, layer_types=tuple(LAYER_TYPES)), out_dir=tmp_path,
                               machine="m", progress=False)
    assert {"BatchNorm2d", "AdaptiveAvgPool2d", "Dropout"} <= set(pd.read_csv(path)["layer_type"])
    for name, knobs in (("paper_cnn", {}), ("resnet18", {"width": 0.25}),
                        ("resnet34", {"width": 0.25, "shortcut": False}), ("mlp", {})):
        model = create_model(name, in_channels=1, image_size=28, num_classes=10, **knobs)
        for training in (False, True):
            estimate = layerwise_estimate(model, (1, 28, 28), 4, fit=path, training=training)
            assert estimate.uncovered_layers == [], (name, estimate.uncovered_layers)
            assert estimate.uncovered_macs_fraction == 0


def test_the_fit_stands_for_the_median_reference_and_keeps_its_rows_as_measured():
    from energy_lib.estimators.reference import reference_state

    phases = ["forward", "reference", "forward", "reference", "train_step", "reference"]
    table = pd.DataFrame({"phase": phases, "energy_j": [3.0, 1.0, 2.0, 4.0, 7.0, 2.0]})
    layers, median_j = reference_state(table)
    assert median_j == 2.0 and layers.energy_j.tolist() == [3.0, 2.0, 7.0]
    plain, none = reference_state(layers)
    assert none is None and plain.energy_j.tolist() == [3.0, 2.0, 7.0]


def test_a_prediction_records_the_machines_present_state_and_uses_the_fit_as_calibrated(
        tmp_path, monkeypatch):
    """A run's layer-regression prediction is the fit's figure as calibrated; the machine-state
    factor (reference step metered now / the calibration's median reference) is recorded beside
    it, not applied (estimators/reference.py), and its source says both; a calibration without
    reference rows says it has none."""
    from energy_lib.estimators.calibrate import machine_name
    from energy_lib.estimators.predict import predict_run

    cpu = torch.device("cpu")
    monkeypatch.chdir(tmp_path)
    path, _, _ = cal.calibrate(replace(TINY, reference_every=4), out_dir="calibration",
                               machine=machine_name(cpu), progress=False)
    raw = pd.read_csv(path)
    assert (raw.phase == "reference").sum() == 4  # before rows 1, 5 and 9, after row 12
    assert load_fit(path).reference_j == pytest.approx(raw.loc[raw.phase == "reference", "energy_j"].median())
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    run = dict(input_size=(2, 5, 5), batch_size=2, eval_batch_size=2, train_size=4, test_size=2,
               epochs=1, compute_dtype="float32", device=cpu)

    def predicted(rows, facts):
        row = next(r for r in rows if r["method"] == "layer-regression")
        return row, facts["layer-regression"]

    row, facts = predicted(*predict_run(model, **run))
    state = facts["machine_state"]
    assert state["reference_calibration_j"] == load_fit(path).reference_j
    assert state["factor"] == pytest.approx(state["reference_now_j"] / state["reference_calibration_j"])
    assert 0.2 < state["factor"] < 5  # the same machine, minutes apart
    assert state["applied"] is False
    fit_step_j = layerwise_estimate(model, (2, 5, 5), 2, fit=path, training=True).energy_j
    assert facts["train_step_j"] == pytest.approx(fit_step_j)
    assert row["energy_j"] == pytest.approx(2 * facts["train_step_j"] + facts["eval_forward_j"])
    assert f"as calibrated (the reference step costs x{state['factor']:.2f} its calibration" \
        in row["flag"] and "not applied" in row["flag"]
    assert facts["fit"] == f"calibration {path.name} ({fingerprint(cpu)['digest']})"
    assert state["contended"] is False and state["others_cpu_share"] < 0.25

    # others busy on every core while the probe runs: it measured them, so no factor
    from benchmarks.suite import busy_neighbour

    with busy_neighbour(cores=os.cpu_count() or 1):
        row, facts = predicted(*predict_run(model, **run, contention_threshold=0.2))
    state = facts["machine_state"]
    assert state["contended"] is True and state["factor"] is None and state["others_cpu_share"] > 0.2
    assert facts["train_step_j"] == pytest.approx(fit_step_j)
    assert "machine state not known: other processes used" in row["flag"]

    raw[raw.phase != "reference"].to_csv(path, index=False)  # as a calibration before references
    row, facts = predicted(*predict_run(model, **run))
    assert facts["machine_state"] is None and "the fit has no reference rows" in row["flag"]
    assert facts["train_step_j"] == pytest.approx(
        layerwise_estimate(model, (2, 5, 5), 2, fit=path, training=True).energy_j)


def test_an_older_calibration_file_is_refused_for_appending_and_read_as_fp32(tmp_path):
    from energy_lib.errors import WriteError
    from energy_lib.estimators.layer_data import read_calibration

    path, _, _ = cal.calibrate(replace(TINY, dtypes=("float32",)), out_dir=tmp_path,
                               machine="m", progress=False)
    old = pd.read_csv(path).drop(columns="dtype")
    old.to_csv(path, index=False)  # as an earlier version wrote it
    before = path.read_bytes()
    with pytest.raises(WriteError, match="without the dtype column"):
        cal.calibrate(TINY, out_dir=tmp_path, machine="m", progress=False)
    assert path.read_bytes() == before
    assert set(read_calibration(path)["dtype"]) == {"float32"}


def test_the_fit_answers_in_the_runs_compute_dtype_or_says_it_cannot(tmp_path):
    path, _, _ = cal.calibrate(replace(TINY, per_type=2), out_dir=tmp_path, machine="m",
                               progress=False)
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    fp32 = layerwise_estimate(model, (2, 5, 5), 2, fit=path, training=True)
    bf16 = layerwise_estimate(model, (2, 5, 5), 2, fit=path, training=True,
                              compute_dtype="bfloat16")
    assert fp32.flags == [] and bf16.flags == [] and bf16.compute_dtype == "bfloat16"
    assert bf16.energy_j != fp32.energy_j  # two fits of two measurements
    assert "in bfloat16" in bf16.source
    getzner = layerwise_estimate(model, (2, 5, 5), 2, training=True, compute_dtype="bfloat16")
    assert getzner.flags == ["answered-at-float32"]
    assert "no bfloat16 data for Conv2d, Linear, ReLU" in " ".join(getzner.notes)
    assert getzner.energy_j == layerwise_estimate(model, (2, 5, 5), 2, training=True).energy_j
    with pytest.raises(ConfigError, match="compute_dtype='int8'"):
        layerwise_estimate(model, (2, 5, 5), 2, compute_dtype="int8")


def test_calibration_fit_predicts_with_measured_training_steps(tmp_path):
    path, _, _ = cal.calibrate(replace(TINY, per_type=2), out_dir=tmp_path, machine="m",
                               progress=False)
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    forward = layerwise_estimate(model, (2, 5, 5), 2, fit=path)
    step = layerwise_estimate(model, (2, 5, 5), 2, fit=path, training=True)
    assert forward.energy_j > 0 and step.energy_j > 0
    assert (step.per_layer["factor"] == 1).all()  # measured train steps, no rule of thumb
    assert "calibration" in step.source and step.uncovered_layers == []


@pytest.mark.parametrize("bad", [{"batch_size": (4, 2)}, {"channels": (0, 3)}, {"stride": ()}])
def test_empty_or_inverted_ranges_measure_nothing(tmp_path, bad):
    plan = replace(TINY, ranges=replace(TINY.ranges, **bad))
    with pytest.raises(ConfigError) as error:
        cal.calibrate(plan, out_dir=tmp_path / "c", machine="m", progress=False)
    assert "\n" not in str(error.value) and next(iter(bad)) in str(error.value)
    assert not (tmp_path / "c").exists()


def test_energy_study_calibrate_returns_2_on_a_bad_range(tmp_path, capsys):
    from energy_lib.cli import main

    code = main(["calibrate", "--quick", "--batch-size", "5,2", "--out-dir", str(tmp_path / "c")])
    assert code == 2 and "inverted" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_make_plan_turns_the_calibrate_options_into_a_plan():
    plan = cal.make_plan(quick=True, no_zoo=True, per_type=2, seed=3, types="ReLU, Linear",
                         dtypes=["float32"], min_window_s=0.01,
                         ranges={"batch_size": (1, 4), "channels": None})
    assert plan == replace(cal.QUICK_PLAN, zoo=(), per_type=2, seed=3,
                           layer_types=("ReLU", "Linear"), dtypes=("float32",), min_window_s=0.01,
                           ranges=replace(cal.QUICK, batch_size=(1, 4)))
    assert cal.make_plan() == cal.Plan(zoo=cal.ZOO)  # no options: the full plan with the zoo
    with pytest.raises(ConfigError, match="bogus"):
        cal.make_plan(ranges={"bogus": (1, 2)})


@pytest.mark.slow
def test_energy_study_calibrate_stops_on_sigterm_and_keeps_its_rows(tmp_path):
    """SIGTERM (what `kill`, `timeout` and SLURM send) in the middle of a calibration: exit
    128 + 15, one line that says the finished calibration rows are kept, no traceback; the rows
    already written stay, whole, for the rerun to continue from."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "c" / "m.csv"
    run = subprocess.Popen([sys.executable, "-m", "energy_lib", "calibrate", "--quick", "--no-zoo",
                            "--types", "Linear", "--per-type", "20", "--min-window-s", "0.2",
                            "--machine", "m", "--out-dir", str(path.parent)],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= 2:  # a row is in
            break
        time.sleep(0.05)
    assert run.poll() is None, run.communicate()  # 80 rows to go: minutes of calibrating
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # no bar
    assert lines == ["energy-study: terminated (SIGTERM); run the same command again to resume "
                     "(finished calibration rows are kept)"], err
    text = path.read_text()
    assert text.startswith(cal._header()) and text.endswith("\n")
    assert len(pd.read_csv(path)) >= 1 and sorted(p.name for p in path.parent.iterdir()) == ["m.csv"]


def test_sampling_is_seeded():
    assert cal.sample_configs(TINY) == cal.sample_configs(TINY)
    assert cal.sample_configs(TINY) != cal.sample_configs(replace(TINY, seed=1))


# --- early-epoch extrapolation ------------------------------------------------------------

def test_extrapolation_takes_the_first_epoch_as_measured():
    # epoch 1 carries 2 J and 1 s of warm-up; epochs 2..3 average 10 J and 5 s.
    prediction = extrapolate_epochs([12.0, 9.0, 11.0], [6.0, 4.5, 5.5], total_epochs=10)
    assert prediction.energy_j == pytest.approx(12 + 10 * 9)
    assert prediction.seconds == pytest.approx(6 + 5 * 9)
    assert (prediction.method, prediction.kind, prediction.measured_epochs) == ("early-epochs", "estimated", 3)


def test_extrapolation_from_one_epoch_is_a_plain_multiple():
    prediction = extrapolate_epochs([12.0], [6.0], total_epochs=5)
    assert (prediction.energy_j, prediction.seconds) == (60.0, 30.0)
    assert "overestimate" in prediction.basis
    assert extrapolate_epochs([3.0, 2.0], [1.0, 1.0], 2).energy_j == 5.0  # all epochs measured


def test_extrapolation_from_epoch_one_prices_later_epochs_at_its_steady_part():
    """The H200 case: epoch 1 took 2-6 s of which most was warm-up, later epochs 0.5 s."""
    from energy_lib.estimators.extrapolate import SteadyPart

    # 157 steps; the steady window held 145 of them: 290 J over 0.45 s; evaluation 5 J, 0.02 s
    steady = SteadyPart(290.0, 0.45, 145, 157, 5.0, 0.02)
    typical_j, typical_s = steady.epoch()
    assert typical_j == pytest.approx(290 * 157 / 145 + 5)
    assert typical_s == pytest.approx(0.45 * 157 / 145 + 0.02)
    prediction = extrapolate_epochs([900.0], [3.0], total_epochs=4, steady=steady)
    assert prediction.energy_j == pytest.approx(900 + 3 * typical_j)
    assert prediction.seconds == pytest.approx(3.0 + 3 * typical_s)
    assert "last 145 of 157 steps" in prediction.basis and "overestimate" not in prediction.basis
    # a steady part that cannot be right is not used
    broken = SteadyPart(float("nan"), 0.45, 145, 157, 5.0, 0.02)
    assert extrapolate_epochs([900.0], [3.0], 4, steady=broken).energy_j == 3600.0


def test_epoch_one_steady_window_leaves_out_warmup_and_the_last_step():
    from energy_lib.estimators.extrapolate import MIN_WARMUP_STEPS, steady_steps

    assert steady_steps(157) == range(16, 156)  # a tenth of 157, rounded up
    assert steady_steps(47) == range(MIN_WARMUP_STEPS, 46)
    assert steady_steps(12) is None  # too short to hold warm-up and a steady part


@pytest.mark.parametrize("energy, seconds, total", [([], [], 3), ([1.0], [1.0, 2.0], 3),
                                                    ([1.0, 2.0], [1.0, 1.0], 1), ([-1.0], [1.0], 2),
                                                    ([1.0], [float("nan")], 2)])
def test_extrapolation_rejects_bad_tables(energy, seconds, total):
    with pytest.raises(ConfigError):
        extrapolate_epochs(energy, seconds, total)


def test_whole_model_check_sums_layers_to_the_metered_whole(tmp_path, monkeypatch):
    """With per-layer data where energy = 1 nJ per MAC (and next to nothing for pools and
    activations), and a stand-in meter charging the whole model 1 nJ per MAC, the sum over
    layers must come out within 2 % of the metered figure: no layer double-counted or missed."""
    import csv

    from benchmarks import whole_model
    from energy_lib.estimators import calibrate as calibrate_module
    from energy_lib.estimators.layer_data import COLUMNS
    from energy_lib.training.models import create_model

    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        conv = {"layer_type": "Conv2d", "batch_size": int(rng.integers(1, 64)),
                "in_channels": int(rng.integers(1, 128)), "out_channels": int(rng.integers(8, 128)),
                "image_size": int(rng.integers(4, 28)), "kernel_size": 3, "stride": 1, "padding": 1}
        linear = {"layer_type": "Linear", "batch_size": int(rng.integers(1, 64)),
                  "in_features": int(rng.integers(8, 2048)), "out_features": int(rng.integers(8, 512))}
        pool = {"layer_type": "MaxPool2d", "batch_size": int(rng.integers(1, 64)),
                "in_channels": int(rng.integers(8, 128)), "image_size": int(rng.integers(4, 28)),
                "kernel_size": 2, "stride": 2, "padding": 0}
        pool["out_channels"] = pool["in_channels"]
        relu = {"layer_type": "ReLU", "batch_size": int(rng.integers(1, 64)),
                "elements": int(rng.integers(100, 100_000))}
        for row in (conv, linear, pool, relu):
            table = pd.DataFrame([row]).reindex(columns=["layer_type", "batch_size", "in_channels",
                                                         "out_channels", "image_size", "kernel_size",
                                                         "stride", "padding", "in_features",
                                                         "out_features"])
            macs = float(count_macs(table.astype({c: float for c in table.columns[1:]})).iloc[0])
            size = row["batch_size"] * row.get("elements", row.get("in_channels", 1) * row.get("image_size", 1) ** 2)
            rows.append({**row, "phase": "forward", "dtype": "float32", "macs": macs,
                         "machine": "test",
                         "energy_j": 1e-9 * macs if macs else 1e-15 * size, "config_id": f"{i}"})
    path = tmp_path / "cal.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    cases = ({"model": "paper_cnn", "width": 0.5}, {"model": "paper_cnn", "width": 1.0})
    expected = []
    for case in cases:
        model = create_model("paper_cnn", in_channels=1, image_size=28, num_classes=10,
                             width=case["width"])
        for batch in (4, 32):
            per_layer = layerwise_estimate(model, (1, 28, 28), batch, fit=path).per_layer
            expected.append(1e-9 * per_layer.loc[per_layer["type"].isin(["Conv2d", "Linear"]), "macs"].sum())
    charges = iter(expected)

    def stand_in(fn, repeats, device):
        fn()  # the whole model's forward pass runs
        return next(charges) * repeats, 0.01 * repeats, "stand-in", "modelled"

    monkeypatch.setattr(calibrate_module, "metered", stand_in)
    table = whole_model.whole_model_check(path, cases=cases, batch_sizes=(4, 32), training=(False,),
                                          dtypes=("float32",), repeats=1, min_window_s=0.001)
    assert len(table) == 4 and list(table["batch_size"]) == [4, 32, 4, 32]
    assert table["width"].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert table["metered_j"].tolist() == pytest.approx(expected)
    assert table["error_pct"].abs().max() < 2.0
    assert set(table["metered_kind"]) == {"modelled"} and (table["uncovered_layers"] == "").all()
    assert table["getzner_error_pct"].notna().all()
    # a calibration without reference rows has no machine-state factor to try
    assert table["state_factor"].isna().all() and table["rescaled_error_pct"].isna().all()
    summary = whole_model.error_summary(table)
    assert summary["n"].tolist() == [2, 2] and (summary["median_abs_error_pct"] < 2.0).all()


def test_calibration_windows_on_a_gpu_outlast_the_energy_counter():
    """The quick plan capped a ~30 us GPU layer call at 200 repeats: 6 ms windows on an H200."""
    from energy_lib.estimators.calibrate import GPU_MIN_WINDOW_S, QUICK_PLAN, repeats_for

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert repeats_for(30e-6, QUICK_PLAN, cpu) == QUICK_PLAN.max_repeats  # capped on a CPU
    assert repeats_for(30e-6, QUICK_PLAN, gpu) * 30e-6 >= GPU_MIN_WINDOW_S
    assert repeats_for(2.0, QUICK_PLAN, gpu) == 1


def test_the_quick_plan_measures_every_distinct_layer_of_the_zoo():
    """Around the shapes the models have: every layer call of each zoo model, at each zoo batch
    size, is one of the plan's configurations (no fit extrapolates to them), once each."""
    from energy_lib.estimators.layer_data import describe_call
    from energy_lib.estimators.trace import trace_model
    from energy_lib.training.models import create_model

    configs = cal.sample_configs(cal.QUICK_PLAN)
    ids = [c["config_id"] for c in configs]
    assert len(ids) == len(set(ids))
    zoo = [c for c in configs if c["config_id"].startswith("zoo-")]
    shapes = {tuple(sorted((k, v) for k, v in c.items() if k != "config_id")) for c in zoo}
    assert len(shapes) == len(zoo)  # distinct shapes only
    assert cal.zoo_configs(cal.QUICK_PLAN) == zoo  # stable: the same ids on a rerun
    seen = 0
    for case in cal.ZOO:
        knobs = {k: v for k, v in case.items() if k != "model"}
        model = create_model(case["model"], in_channels=1, image_size=28, num_classes=10, **knobs)
        for batch in cal.ZOO_BATCH_SIZES:
            for call in trace_model(model, cal.ZOO_INPUT, batch).calls:
                row = describe_call(call)
                if row is None:
                    continue
                wanted = {k: int(round(v)) if isinstance(v, float) else v for k, v in row.items()
                          if k in ("layer_type", "batch_size", "in_channels", "image_size",
                                   "kernel_size", "stride", "in_features", "out_features",
                                   "elements")}
                assert any(wanted.items() <= c.items() for c in zoo), wanted
                seen += 1
    assert seen > len(zoo)  # layers repeat across models and blocks; each is measured once
    linear_macs = [cal._macs(c) for c in zoo if c["layer_type"] == "Linear"]
    assert max(linear_macs) > 50e6  # the MLP's large layers, beyond the random samples' 2 M


def test_alone_vs_inside_times_every_leaf_call_and_the_whole_model():
    """Getzner's protocol on both sides: each leaf call alone (in-place activations also out of
    place, as the per-layer data measured them) and the whole model; the summary's ratios."""
    from torch import nn

    from benchmarks.alone_vs_inside import alone_vs_inside, summary

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 7 * 7, 5), nn.ReLU())
    table = alone_vs_inside(model, "tiny", 2, input_size=(3, 16, 16), min_window_s=0.01)
    assert list(table["layer_type"]) == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear",
                                         "ReLU", "(whole model)"]
    assert list(table["inplace"]) == [False, True, False, False, False, False, False]
    assert (table["alone_s"] > 0).all() and (table["alone_out_of_place_s"] > 0).all()
    same = table[~table["inplace"]]
    assert (same["alone_s"] == same["alone_out_of_place_s"]).all()
    assert model[1].inplace  # the model's own module is left as it was
    [row] = summary(table).to_dict("records")
    assert row["sum_over_whole"] == pytest.approx(row["sum_alone_s"] / row["whole_s"])
    assert 0 < row["relu_share_of_sum_pct"] < 100


def test_in_place_activations_are_named_as_priced_out_of_place():
    """The per-layer data measured ReLU out of place; a model applying it in place is told so."""
    from torch import nn

    in_place = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Flatten(),
                             nn.Linear(4 * 26 * 26, 10))
    note = "1 activation(s) applied in place are priced from out-of-place measurements"
    assert any(n.startswith(note) for n in layerwise_estimate(in_place, (1, 28, 28), 8).notes)
    in_place[1].inplace = False
    assert not any("applied in place" in n for n in layerwise_estimate(in_place, (1, 28, 28), 8).notes)


# ------------------------------------------------------------------------------------------
# a calibration is this machine's only when its rows carry this machine's fingerprint
# ------------------------------------------------------------------------------------------

def _calibration_file(folder, digest: str | None) -> Path:
    """This machine's calibration file by name, with one row measured on `digest` (None: a file
    of the format before fingerprints)."""
    import csv

    columns = COLUMNS if digest is not None else [c for c in COLUMNS if c != "fingerprint"]
    path = folder / f"{cal.machine_name(torch.device('cpu'))}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"machine": "m", "layer_type": "Linear", "phase": "forward", "dtype": "float32",
           "batch_size": 8, "in_features": 64, "out_features": 64, "macs": 32768, "repeats": 10,
           "energy_j": 0.01, "seconds": 0.001, "method": "tdp-model", "kind": "modelled",
           "seed": 0, "config_id": "x", "fingerprint": digest}
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    return path


def test_a_calibration_from_another_fingerprint_is_never_used_and_says_why(tmp_path, monkeypatch):
    """Same machine name, other fingerprint (another CPU sold under the name, or one without
    avx512_bf16): no layer-regression estimate from it; the Getzner fit, labelled with its own
    hardware, stands in, and one line says why and what to run."""
    from energy_lib import provenance
    from energy_lib.estimators import predict

    monkeypatch.chdir(tmp_path)
    here = provenance.fingerprint(torch.device("cpu"))["digest"]
    for digest, found in ((here, True), ("0123456789ab", False), (None, False)):
        path = _calibration_file(tmp_path / cal.DEFAULT_DIR, digest)
        used, why = predict.calibration_for(torch.device("cpu"))
        if found:
            assert used == cal.DEFAULT_DIR / path.name and why == ""
            continue
        assert used is None and "\n" not in why
        assert why.startswith(f"{cal.DEFAULT_DIR / path.name} was measured on machine fingerprint "
                              f"{digest or 'not recorded'}, not this one ({here}): not used")
        assert "energy-study calibrate --quick" in why
    rows, facts = predict.predict_run(
        create_model("mlp", in_channels=1, image_size=28), input_size=(1, 28, 28), batch_size=32,
        eval_batch_size=64, train_size=64, test_size=64, epochs=1, compute_dtype="bfloat16",
        device=torch.device("cpu"))
    regression = next(r for r in rows if r["method"] == "layer-regression")
    assert "Getzner" in regression["flag"] and "not this one" in regression["flag"]
    assert facts["calibration"].endswith("(minutes on a 2-core CPU)")


def test_calibrate_never_appends_to_another_machine_s_rows(tmp_path):
    from energy_lib.errors import WriteError

    _calibration_file(tmp_path, "0123456789ab")
    with pytest.raises(WriteError, match="was measured on another machine .fingerprint 0123456789ab"):
        cal.calibrate(cal.make_plan(quick=True, no_zoo=True, per_type=1, types="Linear"),
                      out_dir=tmp_path, progress=False)
    _calibration_file(tmp_path, None)
    with pytest.raises(WriteError, match="without the machine fingerprint of its rows"):
        cal.calibrate(cal.make_plan(quick=True, no_zoo=True, per_type=1, types="Linear"),
                      out_dir=tmp_path, progress=False)


def test_a_bad_dtype_makes_no_file_and_unusable_rows_are_measured_again(tmp_path):
    """`--dtypes float64` is refused before any file exists; a row whose energy the fit cannot
    use (NaN, negative) is not counted as done on resume: it is measured again."""
    from energy_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="dtypes=\\['float64'\\] is not allowed"):
        cal.calibrate(replace(TINY, dtypes=("float64",)), out_dir=tmp_path / "cal",
                      machine="m", progress=False)
    assert not (tmp_path / "cal").exists()
    path, written, _ = cal.calibrate(TINY, out_dir=tmp_path, machine="m", progress=False)
    table = read_rows(path)
    layers = table.index[table.phase != "reference"]
    table.loc[layers[0], "energy_j"] = float("nan")
    table.loc[layers[1], "energy_j"] = -1.0
    table.to_csv(path, index=False)
    _, written, already = cal.calibrate(TINY, out_dir=tmp_path, machine="m", progress=False)
    assert (written, already) == (2, 10)
