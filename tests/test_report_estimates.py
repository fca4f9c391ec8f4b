"""Estimates vs measurement: the table, Spearman and MAPE on hand-made records with known answers,
the figure on empty input, the fit cache (numpy predictors equal scikit-learn's; a second load is
read, not refitted; a corrupt cache is refitted), and a real tiny study whose records hold the
predictions and whose analysis writes estimates.csv."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from energy_lib.records import Runs
from energy_lib.report.estimates import (NOT_RECORDED, estimates_sentence, estimates_summary,
                                         estimates_table, plot_estimates, split_of,
                                         write_estimates)

HEADLINE_J = {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0}
OPS_J = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}  # same order, 1 % of the scale
REGRESSION_J = {"a": 11.0, "b": 18.0, "c": 36.0, "d": 32.0}  # c and d swapped; errors 10/10/20/20 %


def _energy_rows(cell: str, headline_j: float, predictions: dict[str, float]) -> list[dict]:
    """Two epochs of train + eval windows (cpu modelled, ram modelled, constant power) whose
    headline sums to headline_j, plus one predicted row per estimator."""
    rows = []
    for epoch in (1, 2):
        for phase, share in (("train", 0.4), ("eval", 0.1)):
            cpu, ram = headline_j * share * 0.75, headline_j * share * 0.25
            rows += [
                {"epoch": epoch, "phase": phase, "component": "cpu", "method": "tdp-model",
                 "kind": "modelled", "energy_j": cpu, "duration_s": 1.0, "flag": ""},
                {"epoch": epoch, "phase": phase, "component": "ram", "method": "ram-model",
                 "kind": "modelled", "energy_j": ram, "duration_s": 1.0, "flag": ""},
                {"epoch": epoch, "phase": phase, "component": "assumed-board",
                 "method": "constant-power", "kind": "modelled", "energy_j": 999.0,
                 "duration_s": 1.0, "flag": ""},
            ]
    for method, energy_j in predictions.items():
        rows.append({"epoch": None, "phase": "predicted", "component": "model", "method": method,
                     "kind": "estimated", "energy_j": energy_j, "duration_s": math.nan,
                     "flag": f"{method} source"})
    return [{"cell": cell, **row} for row in rows]


def _runs(statuses: dict[str, str] | None = None) -> Runs:
    statuses = statuses or {}
    energy, table = [], []
    for cell, headline in HEADLINE_J.items():
        energy += _energy_rows(cell, headline, {"ops-model": OPS_J[cell],
                                                "layer-regression": REGRESSION_J[cell]})
        table.append({"cell": cell, "status": statuses.get(cell, "ok")})
    # a failed cell: half its windows, a prediction, never compared
    energy += [r for r in _energy_rows("e", 50.0, {"ops-model": 5.0}) if r["epoch"] != 2]
    table.append({"cell": "e", "status": "failed"})
    return Runs(pd.DataFrame(table), pd.DataFrame(), pd.DataFrame(energy), pd.DataFrame(), [])


def test_table_puts_each_prediction_beside_the_headline_and_its_kind():
    table = estimates_table(_runs())
    assert len(table) == 9  # 4 cells x 2 estimators + the failed cell's one
    row = table[(table["cell"] == "c") & (table["estimator"] == "layer-regression")].iloc[0]
    assert row["predicted_j"] == 36.0
    assert row["energy_j"] == pytest.approx(30.0)  # train + eval, cpu + ram; never constant power
    assert row["energy_kind"] == "modelled"
    assert row["ratio"] == pytest.approx(36.0 / 30.0)
    assert row["source"] == "layer-regression source"
    failed = table[table["cell"] == "e"].iloc[0]
    assert failed["status"] == "failed" and math.isnan(failed["ratio"])


def test_spearman_and_mape_have_the_hand_computed_values():
    summary = estimates_summary(estimates_table(_runs())).set_index("estimator")
    ops, regression = summary.loc["ops-model"], summary.loc["layer-regression"]
    assert ops["cells"] == 4 and regression["cells"] == 4  # the failed cell is left out
    assert ops["spearman_rho"] == pytest.approx(1.0)
    assert ops["mape_pct"] == pytest.approx(99.0)
    assert ops["median_ratio"] == pytest.approx(0.01)
    # ranks [1, 2, 4, 3] vs [1, 2, 3, 4]: rho = 1 - 6 x 2 / (4 x 15) = 0.8
    assert regression["spearman_rho"] == pytest.approx(0.8)
    assert regression["mape_pct"] == pytest.approx(15.0)
    assert regression["median_ape_pct"] == pytest.approx(15.0)  # errors 10, 10, 20, 20 %
    assert regression["target_pct"] == 25.0 and regression["target_met"] == True  # noqa: E712
    assert pd.isna(ops["target_met"])  # the ops model stands for other hardware: no goal
    assert "Goal: median error <= 25 %: met." in regression["in_words"]
    assert "ranks the 4 cells right" in ops["in_words"] and "scale is off" in ops["in_words"]
    sentence = estimates_sentence(summary.reset_index())
    assert "Ranks the settings right although its absolute scale is off: ops-model." in sentence
    assert "Right in both order and scale: layer-regression." in sentence


def test_too_few_cells_are_not_ranked():
    runs = _runs({"a": "diverged", "b": "failed"})
    summary = estimates_summary(estimates_table(runs)).set_index("estimator")
    assert summary.loc["ops-model", "cells"] == 2
    assert "cannot be ranked on 2 cells" in summary.loc["ops-model", "in_words"]
    assert "Ranks the settings right" not in estimates_sentence(summary.reset_index())


def test_ranks_are_over_setting_means_and_contended_cells_are_left_out():
    """a and b are two seeds of one setting, c and d of another: two settings cannot be ranked,
    however many seeds; a cell left out (contended) is not in any figure of the summary."""
    table = estimates_table(_runs())
    settings = {"a": "small", "b": "small", "c": "large", "d": "large", "e": "huge"}
    summary = estimates_summary(table, settings).set_index("estimator")
    assert summary.loc["layer-regression", "n_settings"] == 2
    assert "cannot be ranked on 2 settings" in summary.loc["layer-regression", "in_words"]
    without = estimates_summary(table, exclude={"c"}).set_index("estimator")
    assert without.loc["layer-regression", "cells"] == 3
    # errors 10, 10, 20 %: median 10, mean 13.3
    assert without.loc["layer-regression", "median_ape_pct"] == pytest.approx(10.0)
    assert without.loc["layer-regression", "mape_pct"] == pytest.approx(40 / 3)


def test_rows_are_per_fit_with_the_split_and_the_error_before_the_machine_state_factor():
    """Cells a and b priced with this machine's calibration (records of the version that
    applied the machine-state factor: x2 and x0.5), c and d with the Getzner fit: two
    layer-regression rows, never pooled; the study names the split."""
    runs = _runs()
    calibrated = {"fit": "calibration m.csv (abc)", "machine_state": {"factor": 2.0}}
    runs.predictions = {
        "a": {"layer-regression": calibrated, "ops-model": {"fit": "horowitz2014_45nm.csv"}},
        "b": {"layer-regression": {**calibrated, "machine_state": {"factor": 0.5}}},
        "c": {"layer-regression": {"fit": "getzner2023", "machine_state": None}},
        "d": {"layer-regression": {"fit": "getzner2023", "machine_state": None}}}
    table = estimates_table(runs)
    row = table[(table["cell"] == "a") & (table["estimator"] == "layer-regression")].iloc[0]
    assert row["fit"] == "calibration m.csv (abc)" and row["machine_state_factor"] == 2.0
    assert row["predicted_unscaled_j"] == pytest.approx(11.0 / 2) and row["factor_applied"]
    assert row["predicted_rescaled_j"] == pytest.approx(11.0)
    assert sorted(table.loc[table["cell"] == "b", "fit"]) == ["calibration m.csv (abc)", NOT_RECORDED]

    summary = estimates_summary(table, study="quick")
    regression = summary[summary["estimator"] == "layer-regression"].set_index("fit")
    assert sorted(regression.index) == ["calibration m.csv (abc)", "getzner2023"]
    assert set(regression["split"]) == {"development"}  # the quick study chose its design
    calibration = regression.loc["calibration m.csv (abc)"]
    assert calibration["cells"] == 2 and calibration["median_ape_pct"] == pytest.approx(10.0)
    # without the factor: a 5.5 J vs 10 J (45 %), b 36 J vs 20 J (80 %)
    assert calibration["median_ape_unscaled_pct"] == pytest.approx(62.5)
    assert calibration["median_ape_rescaled_pct"] == pytest.approx(10.0)
    assert calibration["in_words"].endswith(
        "As calibrated, before the machine-state factor its records applied: median error 62 %.")
    getzner = regression.loc["getzner2023"]
    assert getzner["median_ape_unscaled_pct"] == getzner["median_ape_pct"] == pytest.approx(20.0)
    assert math.isnan(getzner["median_ape_rescaled_pct"])  # no factor: nothing to rescale
    assert "(getzner2023; development set: these settings were used" in getzner["in_words"]
    assert summary["split"].tolist()[0] == "held-out"  # the ops model: never fitted to records

    held_out = estimates_summary(table, study="ee_training_quick")
    assert set(held_out["split"]) == {"held-out"}
    assert split_of("layer-regression", "quick") == "development"
    assert split_of("early-epochs", "other") == "held-out"


def test_a_factor_recorded_but_not_applied_is_tested_in_the_summary():
    """Records of today's version keep the machine-state factor beside a prediction made as
    calibrated: predicted_j is that prediction, and the summary says what the factor would
    have made of it (a x0.5, b x2: errors 45 % and 80 % with it, 10 % without)."""
    runs = _runs()
    state = {"applied": False, "contended": False}
    runs.predictions = {cell: {"layer-regression": {"fit": "calibration m.csv (abc)",
                                                    "machine_state": {**state, "factor": factor}}}
                        for cell, factor in (("a", 0.5), ("b", 2.0))}
    table = estimates_table(runs)
    regression = table[table["estimator"] == "layer-regression"].set_index("cell")
    assert not regression.loc["a", "factor_applied"]
    assert regression.loc["a", "predicted_unscaled_j"] == regression.loc["a", "predicted_j"] == 11.0
    assert regression.loc["a", "predicted_rescaled_j"] == pytest.approx(5.5)
    assert math.isnan(regression.loc["c", "predicted_rescaled_j"])  # no factor recorded
    calibration = estimates_summary(table).set_index("fit").loc["calibration m.csv (abc)"]
    assert calibration["median_ape_pct"] == calibration["median_ape_unscaled_pct"] == pytest.approx(10.0)
    assert calibration["median_ape_rescaled_pct"] == pytest.approx(62.5)
    assert calibration["in_words"].endswith(
        "With the machine-state factor (recorded, not applied): median error 62 %.")


def test_figure_is_log_log_with_plain_labels_naming_the_kind():
    figure = plot_estimates(estimates_table(_runs()), _runs())
    ax = figure.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "modelled" in ax.get_xlabel() and "estimated" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["layer-regression", "ops-model", "y = x"]
    assert not any("$" in text for text in [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), *labels])


def test_empty_input_gives_a_figure_that_says_why(tmp_path):
    energy = [r for r in _energy_rows("a", 10.0, {}) if r["phase"] != "predicted"]
    runs = Runs(pd.DataFrame([{"cell": "a", "status": "ok"}]), pd.DataFrame(),
                pd.DataFrame(energy), pd.DataFrame(), [])
    written = write_estimates(runs, tmp_path)
    assert written["table"].empty and written["summary"].empty
    texts = [t.get_text() for t in written["figure"].axes[0].texts]
    assert any("no finished cell with both a prediction" in t for t in texts)
    assert "No estimator could be compared" in written["sentence"]
    assert pd.read_csv(tmp_path / "estimates.csv").empty


def test_write_estimates_writes_the_csv_without_leftovers(tmp_path):
    written = write_estimates(_runs(), tmp_path)
    read = pd.read_csv(tmp_path / "estimates.csv")
    assert len(read) == 9 and read["predicted_j"].sum() == pytest.approx(
        written["table"]["predicted_j"].sum())
    assert (tmp_path / "estimates_vs_measurement.png").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _result(status: str = "ok"):
    from energy_lib.config import RunConfig
    from energy_lib.training.train import RunResult

    energy = [{k: v for k, v in r.items() if k != "cell"}
              for r in _energy_rows("", 10.0, {"ops-model": 0.1, "layer-regression": 12.0})]
    energy.append({"epoch": 1, "phase": "predicted", "component": "total", "method": "early-epochs",
                   "kind": "estimated", "energy_j": 9.0, "duration_s": 2.0, "flag": "epoch 1 x 2"})
    predictions = {"ops-model": {"train_step_j": 0.01, "eval_forward_j": 0.002, "source": "45 nm chip",
                                 "uncovered_layers": [], "uncovered_macs_fraction": 0.0},
                   "layer-regression": {"train_step_j": 1.0, "eval_forward_j": 0.2,
                                        "source": "Xeon Gold 5120", "uncovered_layers": ["odd"],
                                        "uncovered_macs_fraction": 0.25},
                   "seconds": 0.05}
    return RunResult(config=RunConfig(), status=status, energy=energy, predictions=predictions)


def test_lab_record_tables_before_and_beside():
    import energy_lib.lab as lab

    before = lab.predictions_before(_result()).set_index("estimator")
    assert list(before.index) == ["ops-model", "layer-regression"]  # not the early-epoch row
    assert before.loc["layer-regression", "predicted_j"] == 12.0
    assert before.loc["layer-regression", "stands_for"] == "Xeon Gold 5120"
    assert before.loc["layer-regression", "layers_left_out"] == "odd (25.0% of MACs)"
    assert before.loc["ops-model", "layers_left_out"] == "none"
    assert "0.05 s" in lab.predictions_text(_result())
    beside = lab.predictions_beside(_result()).set_index("estimator")
    assert beside.loc["layer-regression", "ratio"] == pytest.approx(1.2)
    assert beside.loc["early-epochs", "ratio"] == pytest.approx(0.9)
    assert beside.loc["early-epochs", "after_epoch"] == 1
    assert set(beside["headline_kind"]) == {"modelled"}
    assert beside["ratio"].notna().all()
    assert lab.predictions_beside(_result("diverged"))["ratio"].isna().all()


# --- the fit cache --------------------------------------------------------------------------

def test_numpy_trees_predict_what_sklearn_predicts():
    from sklearn.ensemble import HistGradientBoostingRegressor

    from energy_lib.estimators.fit_cache import TreeEnsemble

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = np.sin(x[:, 0]) + x[:, 1] ** 2 - x[:, 2] * x[:, 3]
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values take the side sklearn learned
    model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(x, y)
    test = rng.normal(size=(200, 4))
    test[rng.random(test.shape) < 0.05] = np.nan
    np.testing.assert_allclose(TreeEnsemble.from_sklearn(model).predict(test), model.predict(test),
                               rtol=1e-12, atol=1e-12)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    from energy_lib.estimators import regression

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    regression._fit_getzner.cache_clear()
    regression._fit_calibration.cache_clear()
    yield tmp_path / "cache" / "energy_lib" / "fits"
    regression._fit_getzner.cache_clear()
    regression._fit_calibration.cache_clear()


def test_getzner_fit_is_cached_and_predicts_the_same(fresh_cache):
    from energy_lib.estimators import layerwise_estimate, regression
    from energy_lib.training.models import create_model

    model = create_model("paper_cnn", width=1, in_channels=1, image_size=28, num_classes=10)
    started = time.perf_counter()
    fitted = layerwise_estimate(model, (1, 28, 28), 128, training=True)
    fit_s = time.perf_counter() - started
    first_fit = regression.load_fit("getzner2023")
    assert len(list(fresh_cache.glob("getzner2023-*.npz"))) == 1
    regression._fit_getzner.cache_clear()  # as a new process would start
    started = time.perf_counter()
    layer_fit = regression.load_fit("getzner2023")
    load_s = time.perf_counter() - started
    cached = layerwise_estimate(model, (1, 28, 28), 128, training=True)
    assert load_s < fit_s / 3
    assert cached.energy_j == fitted.energy_j
    pd.testing.assert_frame_equal(cached.per_layer, fitted.per_layer)
    assert layer_fit is not first_fit
    pd.testing.assert_frame_equal(layer_fit.report(), first_fit.report())
    assert layer_fit.source == first_fit.source and layer_fit.machine == first_fit.machine


@pytest.mark.parametrize("damage", [b"not an npz file", b""])
def test_corrupt_cache_is_refitted_and_replaced(fresh_cache, tmp_path, damage):
    from energy_lib.estimators import fit_cache, regression
    from energy_lib.estimators.layer_data import getzner2023

    table = getzner2023().groupby("layer_type").head(30)
    calls = []

    def fit():
        calls.append(1)
        return regression.fit_table(table, "small", "test machine")

    data = [b"small table"]
    first, how = fit_cache.cached("small", data, fit)
    assert how == "fitted" and len(calls) == 1
    (path,) = fresh_cache.glob("small-*.npz")
    assert fit_cache.cached("small", data, fit)[1] == "cache" and len(calls) == 1
    path.write_bytes(damage)
    again, how = fit_cache.cached("small", data, fit)
    assert how == "fitted" and len(calls) == 2
    assert fit_cache.load(path) is not None  # replaced by a readable file
    x = table[table["layer_type"] == "Linear"].head(5)
    model = again.models[("Linear", "forward", "float32")]
    np.testing.assert_array_equal(model.predict(x)[0], first.models[("Linear", "forward", "float32")].predict(x)[0])


def test_other_data_gets_another_cache_file(fresh_cache):
    from energy_lib.estimators import fit_cache

    assert fit_cache.fit_key([b"a"]) != fit_cache.fit_key([b"b"])
    assert fit_cache.fit_key([b"a"]) == fit_cache.fit_key([b"a"])


# --- a real tiny study ----------------------------------------------------------------------


@pytest.mark.slow
def test_real_records_hold_predictions_and_the_analysis_writes_estimates(tiny_run):
    """The shared tiny study (conftest.tiny_run): each record holds the three predictions and
    shows them beside its headline; the analysis wrote estimates.csv and its figure."""
    from energy_lib.records import read_record
    from energy_lib.study import load_study

    import torch

    from energy_lib.estimators.predict import calibration_for, fingerprint_of

    calibration, _ = calibration_for(torch.device("cpu"))  # this machine's, where it has one
    fit = (f"calibration {calibration.name} ({fingerprint_of(torch.device('cpu'))})"
           if calibration is not None else "getzner2023")
    study = load_study(tiny_run.study_file)
    for cell in study.cells:
        record = read_record(tiny_run.runs / f"{cell.name}.ipynb")
        assert record.status == "ok", record.error
        predicted = {(r["method"], r["component"], r["epoch"]) for r in record.energy
                     if r["phase"] == "predicted"}
        assert predicted == {("ops-model", "model", None), ("layer-regression", "model", None),
                             ("early-epochs", "total", 1)}
        text = "".join(str(output.get("data", {}).get("text/plain", "")) + str(output.get("text", ""))
                       for c in record_cells(record.path) for output in c.get("outputs", []))
        assert "stands_for" in text and "headline_kind" in text
        # what each structural estimator priced with is recorded, not only said in a flag
        assert record.predictions["ops-model"]["fit"] == "horowitz2014_45nm.csv"
        assert record.predictions["layer-regression"]["fit"] == fit
        state = record.predictions["layer-regression"]["machine_state"]
        # this machine's calibration: its state metered and recorded, the fit used as calibrated
        assert (state is None) == (calibration is None) and (state is None or not state["applied"])
    estimates = pd.read_csv(tiny_run.report / "estimates.csv")
    assert len(estimates) == 3 * len(study.cells)
    summary = pd.read_csv(tiny_run.report / "estimates_summary.csv")
    assert set(summary["split"]) == {"held-out"}  # the tiny study chose no estimator's design
    assert {"fit", "n_settings", "median_ape_unscaled_pct",
            "median_ape_rescaled_pct"} <= set(summary.columns)
    assert not estimates["factor_applied"].any()
    assert (estimates["predicted_unscaled_j"] == estimates["predicted_j"]).all()
    assert set(estimates["estimator"]) == {"ops-model", "layer-regression", "early-epochs"}
    assert (estimates["ratio"] > 0).all() and (estimates["energy_kind"] != "none").all()
    assert (tiny_run.report / "estimates_vs_measurement.png").is_file()


def record_cells(path):
    import nbformat

    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
