"""The statistics layer: intervals against scipy, paired ratios, energy to target, Pareto front,
idle drift, the original study's claims and the figures built on them."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from energy_lib import stats  # noqa: E402
from energy_lib.errors import ConfigError  # noqa: E402


# ------------------------------------------------------------------------------- intervals

@pytest.mark.parametrize("sample", [[1.0, 2.0, 4.0], [81.2, 80.9, 81.7, 81.1, 80.5],
                                    [10.0, 12.0]])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_interval_matches_scipy_t(sample, confidence):
    iv = stats.interval(sample, confidence)
    ref = scipy_stats.ttest_1samp(sample, 0.0).confidence_interval(confidence_level=confidence)
    assert iv.n == len(sample)
    assert iv.mean == pytest.approx(np.mean(sample))
    assert iv.low == pytest.approx(ref.low)
    assert iv.high == pytest.approx(ref.high)
    assert iv.half_width == pytest.approx((ref.high - ref.low) / 2)
    assert iv.method == "student-t"


def test_interval_known_numbers():
    # mean 7/3, s = sqrt(7/3), t(0.975, 2) = 4.302653; half-width = 4.302653 * s / sqrt(3)
    iv = stats.interval([1, 2, 4])
    assert iv.half_width == pytest.approx(4.302653 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-6)


def test_interval_drops_nans_and_says_n():
    iv = stats.interval([1.0, float("nan"), 2.0, None, 4.0])
    assert iv.n == 3
    assert iv.low == pytest.approx(stats.interval([1.0, 2.0, 4.0]).low)


def test_single_run_has_no_interval():
    iv = stats.interval([5.0, float("nan")])
    assert (iv.mean, iv.low, iv.high, iv.half_width, iv.n) == (5.0, None, None, None, 1)
    assert "single run" in iv.method
    text = stats.format_interval(iv)
    assert "±" not in text and "N=1" in text


def test_no_runs():
    iv = stats.interval([float("nan")])
    assert iv.n == 0 and iv.mean is None and iv.low is None


def test_format_interval():
    assert stats.format_interval(stats.interval([1, 2, 4]), digits=1) == "2.3 ± 3.8 (N=3)"


def test_bad_confidence():
    with pytest.raises(ConfigError, match="confidence"):
        stats.interval([1, 2], confidence=95)


def test_summarise_groups_excludes_and_counts_failed():
    table = pd.DataFrame({
        "width": [1, 1, 1, 1, 2, 2],
        "status": ["ok", "ok", "failed", "diverged", "failed", "ok"],
        "best_val_acc_pct": [60.0, 62.0, 99.0, 64.0, 99.0, 70.0],
        "energy_kind": ["measured"] * 6,
    })
    out = stats.summarise_groups(table, "width", ["best_val_acc_pct"], keep=["energy_kind"])
    one = out.set_index("width").loc[1]
    assert one["runs"] == 4 and one["failed"] == 1 and one["best_val_acc_pct_n"] == 3
    assert one["best_val_acc_pct_mean"] == pytest.approx(62.0)
    ref = stats.interval([60.0, 62.0, 64.0])
    assert one["best_val_acc_pct_ci_low"] == pytest.approx(ref.low)
    assert one["best_val_acc_pct_ci_high"] == pytest.approx(ref.high)
    two = out.set_index("width").loc[2]
    assert two["best_val_acc_pct_n"] == 1 and math.isnan(two["best_val_acc_pct_ci_low"])
    assert one["energy_kind"] == "measured"
    text = stats.format_summary(out, ["best_val_acc_pct"])
    assert list(text["best_val_acc_pct"]) == ["62.00 ± 4.97 (N=3)", "70.00 (N=1, no interval)"]


def test_summarise_groups_keeps_all_failed_group():
    table = pd.DataFrame({"cell": ["a", "b"], "status": ["ok", "failed"], "energy_j": [1.0, 2.0]})
    out = stats.summarise_groups(table, ["cell"], ["energy_j"])
    assert list(out["cell"]) == ["a", "b"]
    assert list(out["energy_j_n"]) == [1, 0]


# ------------------------------------------------------------------------------- paired ratio

def _paired_table(ratios_by_width: dict, base: float = 100.0) -> pd.DataFrame:
    rows = []
    for width, ratios in ratios_by_width.items():
        for seed, ratio in enumerate(ratios):
            fp32 = base * width * (1 + 0.1 * seed)  # seeds differ a lot; pairing removes it
            rows += [{"width": width, "precision": "fp32", "seed": seed, "energy_j": fp32,
                      "status": "ok"},
                     {"width": width, "precision": "amp", "seed": seed, "energy_j": fp32 * ratio,
                      "status": "ok"}]
    return pd.DataFrame(rows)


def test_paired_ratio_known_answer():
    # log ratios ln(0.8), ln(0.9), ln(1.0): geometric mean = (0.72)^(1/3)
    table = _paired_table({1: [0.8, 0.9, 1.0], 3: [0.5, 0.5, 0.5]})
    out = stats.paired_ratio(table, "precision", "fp32", "amp", "energy_j", by=["width"])
    w1 = out.set_index("width").loc[1]
    logs = np.log([0.8, 0.9, 1.0])
    ref = scipy_stats.ttest_1samp(logs, 0.0).confidence_interval()
    assert w1["ratio"] == pytest.approx(0.72 ** (1 / 3))
    assert w1["ratio_ci_low"] == pytest.approx(math.exp(ref.low))
    assert w1["ratio_ci_high"] == pytest.approx(math.exp(ref.high))
    assert w1["n"] == 3 and w1["unpaired"] == 0
    w3 = out.set_index("width").loc[3]
    assert w3["ratio"] == pytest.approx(0.5)
    assert w3["verdict"].startswith("amp saves 50.0 % energy_j")


def test_paired_ratio_pairs_by_seed_not_by_order():
    table = _paired_table({2: [0.9, 0.9, 0.9]}).sample(frac=1.0, random_state=3)
    out = stats.paired_ratio(table, "precision", "fp32", "amp", "energy_j", by="width")
    # unpaired, the seeds' 10 % steps would swamp the 10 % saving; paired it is exact
    assert out["ratio"].iloc[0] == pytest.approx(0.9)
    assert out["ratio_ci_high"].iloc[0] == pytest.approx(0.9)


def test_paired_ratio_skips_failed_partner_and_counts_it():
    table = _paired_table({1: [0.8, 0.9, 1.0]})
    table.loc[(table["seed"] == 2) & (table["precision"] == "amp"), "status"] = "failed"
    out = stats.paired_ratio(table, "precision", "fp32", "amp", "energy_j")
    assert out["n"].iloc[0] == 2 and out["unpaired"].iloc[0] == 1
    assert out["ratio"].iloc[0] == pytest.approx(math.sqrt(0.72))


def test_paired_ratio_generic_axis_and_bad_values():
    table = _paired_table({1: [0.8, 0.9, 1.0]}).rename(columns={"precision": "optimizer"})
    table["optimizer"] = table["optimizer"].map({"fp32": "sgd", "amp": "adam"})
    out = stats.paired_ratio(table, "optimizer", "sgd", "adam", "energy_j")
    assert out["b"].iloc[0] == "adam" and out["n"].iloc[0] == 3
    with pytest.raises(ConfigError, match="lamb"):
        stats.paired_ratio(table, "optimizer", "sgd", "lamb", "energy_j")


def test_paired_difference():
    table = _paired_table({1: [0.8, 0.9, 1.0]})
    out = stats.paired_difference(table, "precision", "fp32", "amp", "energy_j")
    diffs = [100 * (r - 1) * (1 + 0.1 * s) for s, r in enumerate([0.8, 0.9, 1.0])]
    assert out["difference"].iloc[0] == pytest.approx(np.mean(diffs))
    assert out["diff_ci_low"].iloc[0] == pytest.approx(stats.interval(diffs).low)


def _row(ratio, low, high, n=3):
    return {"a": "fp32", "b": "amp", "ratio": ratio, "ratio_ci_low": low, "ratio_ci_high": high,
            "n": n, "confidence": 0.95}


def test_verdict_words():
    assert stats.verdict(_row(0.877, 0.838, 0.919)) == "amp saves 12.3 % energy (95 % CI 8.1–16.2 %)"
    assert stats.verdict(_row(1.05, 1.02, 1.08)) == "amp costs 5.0 % more energy (95 % CI 2.0–8.0 %)"
    assert stats.verdict(_row(1.01, 0.96, 1.061)) == \
        "no difference detectable at N = 3 (95 % CI −4.0 to +6.1 %)"
    assert "no interval at N = 1" in stats.verdict(_row(0.9, math.nan, math.nan, n=1))
    assert stats.verdict(_row(1.02, 1.01, 1.03), "accuracy", lower_is_better=False).startswith(
        "amp gains 2.0 % accuracy")
    assert stats.verdict(_row(0.98, 0.97, 0.99), "accuracy", lower_is_better=False).startswith(
        "amp loses 2.0 % accuracy")


# ------------------------------------------------------------------------------- energy to target

def _epochs(run, accs, energy_j=10.0, seconds=2.0):
    return pd.DataFrame({"cell": run, "epoch": range(1, len(accs) + 1), "val_acc_pct": accs,
                         "energy_j": energy_j, "seconds": seconds})


def test_energy_to_target_interpolates_inside_the_epoch():
    epochs = pd.concat([
        _epochs("mid", [40.0, 60.0, 70.0]),        # 50 crossed half-way through epoch 2
        _epochs("first", [80.0, 85.0]),            # crossed in epoch 1: from 0 to 80
        _epochs("never", [30.0, 45.0, 49.9]),
        _epochs("exact", [20.0, 50.0, 55.0], energy_j=[1.0, 3.0, 5.0], seconds=[1.0, 1.0, 1.0]),
    ])
    out = stats.energy_to_target(epochs, 50.0).set_index("cell")
    assert out.loc["mid", "energy_to_target_j"] == pytest.approx(10 + 0.5 * 10)
    assert out.loc["mid", "time_to_target_s"] == pytest.approx(2 + 0.5 * 2)
    assert out.loc["mid", "epoch"] == 2
    assert out.loc["first", "energy_to_target_j"] == pytest.approx(10 * 50 / 80)
    assert out.loc["first", "epoch"] == 1
    assert not out.loc["never", "reached"] and math.isnan(out.loc["never", "energy_to_target_j"])
    assert out.loc["never", "total_energy_j"] == pytest.approx(30.0)
    assert out.loc["exact", "energy_to_target_j"] == pytest.approx(4.0)
    assert out["reached"].tolist() == [True, True, True, False]  # sorted: exact, first, mid, never


def test_energy_to_target_start_accuracy_and_unsorted_epochs():
    epochs = _epochs("r", [80.0, 85.0]).iloc[::-1]
    out = stats.energy_to_target(epochs, 50.0, start_acc_pct=10.0)
    assert out["energy_to_target_j"].iloc[0] == pytest.approx(10 * 40 / 70)


def test_energy_to_target_bad_target():
    with pytest.raises(ConfigError, match="target_acc_pct"):
        stats.energy_to_target(_epochs("r", [50.0]), 0.0)
    with pytest.raises(ConfigError, match="target_acc_pct"):
        stats.energy_to_target(_epochs("r", [50.0]), 100.5)


def test_default_target_is_lowest_best():
    assert stats.default_target([81.9, 70.0, float("nan"), 77.6]) == 70.0
    with pytest.raises(ConfigError):
        stats.default_target([float("nan")])


# ------------------------------------------------------------------------------- Pareto

def test_pareto_front_hand_made():
    points = pd.DataFrame({
        "name": ["A", "B", "C", "D", "D2", "E", "F", "G", "H", "H2"],
        "energy_j": [1.0, 2.0, 3.0, 2.5, 2.5, 4.0, 1.0, np.nan, 5.0, 5.0],
        "best_val_acc_pct": [50.0, 60.0, 70.0, 55.0, 55.0, 70.0, 40.0, 99.0, 80.0, 80.0],
    }, index=list("abcdefghij"))
    mask = stats.pareto_front(points)
    # A, B, C on the front; D and its duplicate D2 dominated by B; E ties C on accuracy with
    # more energy; F ties A on energy with less accuracy; G has no energy; H and H2 are equal
    # optimal duplicates: both kept, whatever the order
    assert dict(zip(points["name"], mask)) == {
        "A": True, "B": True, "C": True, "D": False, "D2": False, "E": False, "F": False,
        "G": False, "H": True, "H2": True}
    assert list(mask.index) == list(points.index)
    shuffled = points.sample(frac=1.0, random_state=1)
    assert stats.pareto_front(shuffled).reindex(points.index).equals(mask)


# ------------------------------------------------------------------------------- idle drift

def test_idle_drift():
    d = stats.idle_drift(20.0, 23.0)
    assert d.drift_pct == pytest.approx(15.0) and d.flagged
    d = stats.idle_drift(20.0, 19.0, threshold_pct=10)
    assert d.drift_pct == pytest.approx(-5.0) and not d.flagged
    assert stats.idle_drift(20.0, 16.0).flagged  # downward drift counts too
    d = stats.idle_drift(None, 19.0)
    assert d.drift_pct is None and not d.flagged and "missing" in d.note
