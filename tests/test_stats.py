"""The statistics layer: intervals against scipy, paired ratios, energy to target, Pareto front,
the original study's claims and the figures built on them."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from energy_lib.report import claims, repeats, stat_figures, stats  # noqa: E402
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
    out = stats.summarise_groups(table, "width", ["best_val_acc_pct"])
    one = out.set_index("width").loc[1]
    assert one["runs"] == 4 and one["failed"] == 1 and one["best_val_acc_pct_n"] == 3
    assert one["best_val_acc_pct_mean"] == pytest.approx(62.0)
    ref = stats.interval([60.0, 62.0, 64.0])
    assert one["best_val_acc_pct_ci_low"] == pytest.approx(ref.low)
    assert one["best_val_acc_pct_ci_high"] == pytest.approx(ref.high)
    two = out.set_index("width").loc[2]
    assert two["best_val_acc_pct_n"] == 1 and math.isnan(two["best_val_acc_pct_ci_low"])
    labelled = repeats.with_energy_labels(out, table, ["width"]).set_index("width")
    assert list(labelled["energy_kind"]) == ["measured", "measured"]  # of the finished runs
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


# ------------------------------------------------------------------------------- claims

NOISE = (0.0, 1.0, -1.0)


def _results(acc_by_width, amp_energy_ratio, ratio_noise=0.01, power_w=(50.0, 50.0), seeds=3,
             kind="measured"):
    """A results table whose verdicts are known: accuracy per width (with seed noise), amp/fp32
    energy ratio per width (times 1 + ratio_noise * NOISE[seed]), mean power fp32/amp."""
    rows = []
    for width, acc in acc_by_width.items():
        for seed in range(seeds):
            noise = NOISE[(seed + width) % 3]
            fp32_s = 100.0 * width * (1 + 0.1 * seed)
            fp32_j = power_w[0] * fp32_s
            amp_j = fp32_j * amp_energy_ratio[width] * (1 + ratio_noise * NOISE[seed])
            for precision, energy_j, power in (("fp32", fp32_j, power_w[0]),
                                               ("amp", amp_j, power_w[1])):
                rows.append({"width": width, "precision": precision, "seed": seed,
                             "best_val_acc_pct": acc + 0.5 * noise, "energy_j": energy_j,
                             "total_s": energy_j / power, "energy_kind": kind, "status": "ok"})
    return pd.DataFrame(rows)


def _verdicts(results):
    out = claims.evaluate_claims(results)
    assert list(out.columns[:5]) == ["id", "claim", "verdict", "evidence", "N"]
    return dict(zip(out["id"], out["verdict"]))


def test_claims_are_data():
    assert [c.id for c in claims.CLAIMS] == ["wider-is-more-accurate", "energy-proportional-to-time",
                                            "amp-saves-only-at-largest-width",
                                            "amp-can-cost-at-small-widths"]
    assert all(c.source == "original T4 study (seed 000)" for c in claims.CLAIMS)


def test_claims_supported():
    results = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.05, 2: 1.04, 3: 0.85})
    assert _verdicts(results) == {
        "wider-is-more-accurate": "supported", "energy-proportional-to-time": "supported",
        "amp-saves-only-at-largest-width": "supported", "amp-can-cost-at-small-widths": "supported"}
    out = claims.evaluate_claims(results).set_index("id")
    assert out.loc["amp-saves-only-at-largest-width", "N"] == 3
    assert "width 3: amp saves 15.0 % energy" in out.loc["amp-saves-only-at-largest-width", "evidence"]


def test_claims_contradicted():
    # width 3 is less accurate than width 2; amp draws 60 % more power; amp saves at every width
    results = _results({1: 70.0, 2: 77.0, 3: 74.0}, {1: 0.8, 2: 0.8, 3: 0.8}, power_w=(50.0, 80.0))
    assert _verdicts(results) == {
        "wider-is-more-accurate": "contradicted", "energy-proportional-to-time": "contradicted",
        "amp-saves-only-at-largest-width": "contradicted",
        "amp-can-cost-at-small-widths": "contradicted"}


def test_claims_inconclusive_when_intervals_span_no_effect():
    results = _results({1: 70.0, 2: 70.2, 3: 82.0}, {1: 1.0, 2: 1.0, 3: 1.0}, ratio_noise=0.05)
    v = _verdicts(results)
    assert v["wider-is-more-accurate"] == "inconclusive"
    assert v["amp-saves-only-at-largest-width"] == "inconclusive"
    assert v["amp-can-cost-at-small-widths"] == "inconclusive"
    # saving at width 3, nothing detectable below but wide intervals: absence of evidence, so
    # the 'only' claim is open (it needs the smaller widths shown equivalent)
    results = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.0, 2: 1.0, 3: 0.8}, ratio_noise=0.05)
    v = _verdicts(results)
    assert v["amp-saves-only-at-largest-width"] == "inconclusive"
    assert v["amp-can-cost-at-small-widths"] == "inconclusive"
    evidence = claims.evaluate_claims(results).set_index("id").loc[
        "amp-saves-only-at-largest-width", "evidence"]
    assert "'Only' needs the smaller widths shown equivalent within ±3 %" in evidence


def test_only_at_largest_needs_equivalence_below_tost():
    """Tight repeats: amp within ±3 % of fp32 at widths 1 and 2 (TOST), saving at width 3."""
    results = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.0, 2: 1.0, 3: 0.8}, ratio_noise=0.005)
    v = _verdicts(results)
    assert v["amp-saves-only-at-largest-width"] == "supported"
    assert v["amp-can-cost-at-small-widths"] == "inconclusive"  # equivalent is not 'costs'
    evidence = claims.evaluate_claims(results).set_index("id").loc[
        "amp-saves-only-at-largest-width", "evidence"]
    assert "width 1: equivalent within ±3 % (TOST: 90 % CI" in evidence
    # equivalent at the largest width too: no saving there, the claim is contradicted
    flat = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.0, 2: 1.0, 3: 1.0}, ratio_noise=0.005)
    assert _verdicts(flat)["amp-saves-only-at-largest-width"] == "contradicted"
    # a 4 % effect is outside the margin: not equivalent, not significant at this noise
    assert claims._equivalent(pd.Series({"n": 3, "ratio_ci_low": 0.99, "ratio_ci_high": 1.04}),
                              3.0) is False
    assert claims._equivalent(pd.Series({"n": 3, "ratio_ci_low": 0.98, "ratio_ci_high": 1.02}),
                              3.0) is True
    assert claims._equivalent(pd.Series({"n": 1, "ratio_ci_low": 1.0, "ratio_ci_high": 1.0}),
                              3.0) is False


def test_modelled_energy_claims_are_verdicts_about_time():
    """Energy modelled from time: the amp claims are tested on time, and say so. Here the
    (made-up) energies say amp saves 15 % at width 3 but its time is the same: the verdict
    follows time."""
    results = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.0, 2: 1.0, 3: 0.85},
                       ratio_noise=0.005, kind="modelled")
    fp32 = results[results["precision"] == "fp32"].set_index(["width", "seed"])["total_s"]
    amp = results["precision"] == "amp"
    results.loc[amp, "total_s"] = [fp32[(w, s)] for w, s in zip(results.loc[amp, "width"],
                                                                 results.loc[amp, "seed"])]
    out = claims.evaluate_claims(results).set_index("id")
    evidence = out.loc["amp-saves-only-at-largest-width", "evidence"]
    assert "verdict is about training time" in evidence and "amp/fp32 time paired" in evidence
    assert out.loc["amp-saves-only-at-largest-width", "verdict"] == "contradicted"
    measured = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.0, 2: 1.0, 3: 0.85}, ratio_noise=0.005)
    measured["total_s"] = results["total_s"]
    assert _verdicts(measured)["amp-saves-only-at-largest-width"] == "supported"


def test_claims_not_testable_with_one_run_per_cell_or_modelled_energy():
    single = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.05, 2: 1.04, 3: 0.85}, seeds=1)
    v = _verdicts(single)
    assert v["wider-is-more-accurate"] == "not testable here"
    assert v["amp-saves-only-at-largest-width"] == "not testable here"
    assert v["amp-can-cost-at-small-widths"] == "not testable here"
    modelled = _results({1: 70.0, 2: 77.0}, {1: 1.05, 2: 0.9}, kind="modelled")
    out = claims.evaluate_claims(modelled).set_index("id")
    assert out.loc["energy-proportional-to-time", "verdict"] == "not testable here"
    assert "by construction" in out.loc["energy-proportional-to-time", "evidence"]
    assert "modelled" in out.loc["amp-can-cost-at-small-widths", "evidence"]
    # the claim is about width 3: these records stop at width 2, so it is not judged on width 2
    assert out.loc["amp-saves-only-at-largest-width", "evidence"].startswith(
        "the claim is about width 3, which no finished run here has (width here: 1, 2)")
    assert set(claims.VERDICT_RULES) == {"supported", "contradicted", "inconclusive",
                                         "not testable here"}


def test_claims_failed_repeats_excluded_and_missing_axis_values():
    results = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: 1.05, 2: 1.04, 3: 0.85}, seeds=3)
    extra = results[results["seed"] == 0].assign(seed=9, status="failed", best_val_acc_pct=0.0,
                                                 energy_j=1.0)
    assert _verdicts(pd.concat([results, extra]))["wider-is-more-accurate"] == "supported"
    fp32_only = results[results["precision"] == "fp32"]
    v = _verdicts(fp32_only)
    assert v["amp-saves-only-at-largest-width"] == "not testable here"
    assert v["wider-is-more-accurate"] == "supported"
    with pytest.raises(ConfigError, match="total_s"):
        claims.evaluate_claims(results.drop(columns="total_s"))


def test_slightly_has_a_bound_the_interval_must_respect():
    """The seed's 'slightly': amp's cost at a small width with its whole interval within
    +10 %. +4 % is slight; +50 % is not (contradicted, not supported by its sign); a cost whose
    interval straddles +10 % is inconclusive."""
    def verdict(ratio, noise=0.005):
        results = _results({1: 70.0, 2: 77.0, 3: 82.0}, {1: ratio, 2: ratio, 3: 0.85},
                           ratio_noise=noise)
        return claims.evaluate_claims(results).set_index("id").loc["amp-can-cost-at-small-widths"]

    assert verdict(1.04)["verdict"] == "supported"
    assert verdict(1.5)["verdict"] == "contradicted"
    assert "'Slightly': the whole interval within +10 %" in verdict(1.5)["evidence"]
    assert verdict(1.10, noise=0.05)["verdict"] == "inconclusive"
    assert verdict(0.8)["verdict"] == "contradicted"  # saves at every small width


def test_only_at_the_largest_width_is_about_width_3():
    """Width 3 present: 'only' is judged at 3 against the widths below it; a wider grid's
    width 4 does not stand in for it; without width 3 the claim is not testable here."""
    results = _results({1: 70.0, 2: 77.0, 3: 82.0, 4: 84.0}, {1: 1.0, 2: 1.0, 3: 0.8, 4: 1.0},
                       ratio_noise=0.005)
    assert _verdicts(results)["amp-saves-only-at-largest-width"] == "supported"
    no_three = results[results["width"] != 3]
    out = claims.evaluate_claims(no_three).set_index("id").loc["amp-saves-only-at-largest-width"]
    assert out["verdict"] == "not testable here" and "width here: 1, 2, 4" in out["evidence"]


def test_claims_name_the_energy_methods():
    """Bug: the claims' energy note read a column `energy_method` of the old record format, so
    claims.csv never named the method. It names every component's method and kind now."""
    modelled = _results({1: 70.0, 2: 77.0, 3: 80.0}, {1: 1.05, 2: 1.05, 3: 0.9},
                        kind="modelled").assign(
        cpu_method="tdp-model", cpu_kind="modelled", ram_method="ram-model", ram_kind="modelled")
    out = claims.evaluate_claims(modelled).set_index("id")
    for claim in ("amp-saves-only-at-largest-width", "amp-can-cost-at-small-widths"):
        assert ("Energy here is modelled (cpu: tdp-model (modelled); ram: ram-model "
                "(modelled)): modelled from time, so this verdict is about training time"
                in out.loc[claim, "evidence"])


# ------------------------------------------------------------------------------- figures

TRICKY = r"w1 $\notacommand$ amp"  # mathtext would fail to parse this on draw


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _with_meters(results, kinds=("measured",)):
    """Runs whose GPU energy is zeus-nvml (measured) or the stand-in (modelled), by `kinds`."""
    kind = [kinds[i % len(kinds)] for i in range(len(results))]
    return results.assign(
        energy_kind=kind, gpu_kind=kind,
        gpu_method=["zeus-nvml" if k == "measured" else "stand-in" for k in kind])


def _summary(kinds=("measured",)):
    results = _with_meters(_results({1: 70.0, 2: 77.0}, {1: 1.05, 2: 0.85}), kinds)
    summary = stats.summarise_groups(results, ["width", "precision"],
                                     ["energy_j", "best_val_acc_pct"])
    summary["cell"] = [f"w{w} {p}" for w, p in zip(summary["width"], summary["precision"])]
    return summary, results


def test_figure_pareto_names_front_in_legend_and_labels_kind():
    summary, runs = _summary()
    summary.loc[0, "cell"] = TRICKY
    fig = stat_figures.figure_pareto(summary, runs, label="cell")
    fig.canvas.draw()  # raises if any text were parsed as mathtext
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    front = stats.pareto_beyond_intervals(summary)
    starred = sorted(t for t in legend if t.startswith("★"))
    assert starred == sorted(f"★ {c} (N=3)" for c in summary.loc[front.to_numpy(), "cell"])
    assert "no other setting better beyond the intervals on one axis and not worse" in ax.get_title()
    assert ax.get_xlabel() == "energy per run (Wh) — measured -- gpu: zeus-nvml (measured)"
    # names live in the legend only: no free text on the axes
    assert not ax.texts
    plt.close(fig)


def test_pareto_beyond_intervals_hand_made():
    """a beats c beyond both intervals; b overlaps a in energy but is less accurate beyond the
    intervals: a dominates it too (better on one axis, not worse on the other); e is far cheaper
    than a and less accurate: a trade-off, both starred; d has one run: no interval, never
    starred, dominates nothing (though its mean beats everyone)."""
    summary = pd.DataFrame({
        "energy_j_ci_low":  [10.0, 11.0, 30.0, 1.0, 2.0],
        "energy_j_ci_high": [12.0, 13.0, 32.0, 1.0, 3.0],
        "best_val_acc_pct_ci_low": [80.0, 70.0, 60.0, 99.0, 50.0],
        "best_val_acc_pct_ci_high": [82.0, 72.0, 62.0, 99.0, 55.0],
        "best_val_acc_pct_n": [3, 3, 3, 1, 3]}, index=list("abcde"))
    assert stats.pareto_beyond_intervals(summary).to_dict() == {
        "a": True, "b": False, "c": False, "d": False, "e": True}
    # overlapping on both axes: neither dominates the other (the quick study's noisy settings)
    summary.loc["b", ["best_val_acc_pct_ci_low", "best_val_acc_pct_ci_high"]] = [79.0, 81.0]
    assert stats.pareto_beyond_intervals(summary)[["a", "b"]].tolist() == [True, True]
    # 33x the energy of another setting for an accuracy inside its interval: dominated
    summary.loc["c", ["best_val_acc_pct_ci_low", "best_val_acc_pct_ci_high"]] = [79.5, 83.0]
    assert not stats.pareto_beyond_intervals(summary)["c"]


def test_summary_pareto_column_is_what_the_figure_stars(tmp_path):
    results = _results({1: 70.0, 2: 77.0}, {1: 1.05, 2: 0.85})
    summary = stats.summarise_groups(results, ["width", "precision"],
                                     ["energy_j", "best_val_acc_pct"])
    summary["pareto"] = [True, False, False, True]
    summary["cell"] = [f"w{w} {p}" for w, p in zip(summary["width"], summary["precision"])]
    fig = stat_figures.figure_pareto(summary, results, label="cell")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(t for t in legend if t.startswith("★")) == sorted(
        f"★ {c} (N=3)" for c in summary.loc[summary["pareto"], "cell"])
    plt.close(fig)


def test_intervals_respect_their_quantity():
    """Energies at N = 2 with a wide spread: a raw t interval goes below zero, the log-scale
    one never does and centres on the geometric mean; an accuracy interval stays in [0, 100]."""
    energies = [100.0, 900.0]
    raw = stats.interval(energies)
    assert raw.low < 0
    logged = stats.interval(energies, scale="log")
    assert logged.mean == pytest.approx(300.0) and 0 < logged.low < 300 < logged.high
    assert "on logs" in logged.method
    assert stats.interval([0.0, -5.0, 200.0], scale="log").n == 1  # not a positive measurement
    accuracy = stats.interval([99.0, 60.0], scale="percent")
    assert accuracy.high == 100.0 and accuracy.low == 0.0 and "clipped" in accuracy.method
    assert stats.format_interval(logged, 0).startswith("300 [") and "(N=2)" in \
        stats.format_interval(logged, 0)
    with pytest.raises(ConfigError, match="scale = 'cubic' is not allowed"):
        stats.interval(energies, scale="cubic")
    table = pd.DataFrame({"g": ["x", "x"], "energy_j": energies, "status": ["ok", "ok"]})
    summary = stats.summarise_groups(table, "g", ["energy_j"], scales={"energy_j": "log"})
    assert summary.loc[0, "energy_j_ci_low"] > 0
    assert summary.loc[0, "interval_scales"] == "energy_j: log"


def test_figure_pareto_says_mixed_kinds():
    summary, runs = _summary(kinds=("measured", "modelled"))
    fig = stat_figures.figure_pareto(summary, runs, label="cell")
    assert fig.axes[0].get_xlabel() == (
        "energy per run (Wh) — mixed: measured, modelled -- gpu: stand-in (modelled); "
        "gpu: zeus-nvml (measured)")
    plt.close(fig)


def test_figure_pareto_single_runs_have_no_error_bars():
    results = _results({1: 70.0, 2: 77.0}, {1: 1.05, 2: 0.85}, seeds=1)
    summary = stats.summarise_groups(results, ["width", "precision"],
                                     ["energy_j", "best_val_acc_pct"])
    fig = stat_figures.figure_pareto(summary, results)
    fig.canvas.draw()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("width=1 precision=amp (N=1)" in t for t in legend)
    assert not any(t.startswith("★") for t in legend)  # one run: never starred
    assert not [c for c in fig.axes[0].containers if c.has_xerr]
    plt.close(fig)


def test_figure_paired_and_energy_to_target_build():
    results = _results({1: 70.0, 2: 77.0}, {1: 1.05, 2: 0.85})
    ratios = pd.concat([stats.paired_ratio(results, "precision", "fp32", "amp", v, by="width")
                        for v in ("energy_j", "total_s")])
    fig = stat_figures.figure_paired(ratios)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["width=1", "width=2"]
    assert any(line.get_ydata()[0] == 1.0 for line in ax.get_lines())
    assert ax.get_ylabel().startswith("amp / fp32")
    plt.close(fig)

    epochs = pd.concat([_epochs(TRICKY, [40.0, 60.0]), _epochs("b", [30.0, 45.0])])
    targets = stats.energy_to_target(epochs, 50.0)
    runs = pd.DataFrame({"cell": [TRICKY, "b"], "energy_kind": "modelled",
                         "cpu_method": "tdp-model", "cpu_kind": "modelled"})
    fig = stat_figures.figure_energy_to_target(targets, runs, "cell", energy_unit="J")
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "1 of 1 not reached" in " ".join(ticks) and TRICKY in ticks
    assert ax.get_ylabel().endswith("50 % validation accuracy (J) — modelled")
    assert ax.get_title().endswith("\nmodelled: cpu: tdp-model (modelled)")
    plt.close(fig)


@pytest.mark.parametrize("build", [
    lambda: stat_figures.figure_pareto(pd.DataFrame(), pd.DataFrame()),
    lambda: stat_figures.figure_paired(pd.DataFrame()),
    lambda: stat_figures.figure_energy_to_target(pd.DataFrame(), pd.DataFrame()),
])
def test_figures_with_empty_input_say_why(build):
    fig = build()
    fig.canvas.draw()
    assert any(text.startswith("no ") for text in _texts(fig))
    plt.close(fig)


def test_a_target_near_chance_is_flagged():
    from energy_lib.report.repeats import target_note

    runs = pd.DataFrame({"dataset": ["fashion_mnist", "fashion_mnist"]})
    note = target_note(12.8, runs)  # seen in a seed-002 run: 10 classes, chance 10 %
    assert "within 10 points of chance (10 % for 10 classes)" in note
    assert target_note(60.0, runs) == "" and target_note(None, runs) == ""
    assert "for 100 classes" in target_note(5.0, pd.DataFrame({"dataset": ["cifar100"]}))


def test_proportional_to_time_is_tested_on_the_measured_gpu_when_the_headline_is_mixed():
    """GPU measured, CPU modelled: the headline is mixed, but the GPU's own energy can answer
    the claim; its power differs by 60 % between cells: contradicted, on the GPU, said so."""
    results = _results({1: 70.0, 2: 77.0}, {1: 1.0, 2: 1.0}, power_w=(100.0, 160.0),
                       kind="mixed")
    results = results.assign(gpu_kind="measured", gpu_energy_j=results["energy_j"] * 0.7,
                             cpu_kind="modelled", cpu_energy_j=results["energy_j"] * 0.3)
    out = claims.evaluate_claims(results).set_index("id").loc["energy-proportional-to-time"]
    assert out["verdict"] == "contradicted"
    assert out["evidence"].startswith("tested on the GPU's measured energy (the other "
                                      "components are modelled): measured mean power")
    modelled_gpu = results.assign(gpu_kind="modelled")
    assert claims.evaluate_claims(modelled_gpu).set_index("id").loc[
        "energy-proportional-to-time", "verdict"] == "not testable here"
