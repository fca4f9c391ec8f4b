"""Seed 001's and seed 002's claims on hand-made results whose verdicts are known, and which
study gets which seed's claims."""

import itertools

import pandas as pd
import pytest

from energy_lib.report import claims
from energy_lib.report.claim_registries import (SEED_001_CLAIMS, SEED_002_CLAIMS, claims_for,
                                                registry_note)

#: A small, fixed zig-zag (never zero mean over a block of axes) so intervals are finite.
WIGGLE = (0.004, -0.003, 0.002, -0.005, 0.001, 0.003, -0.002, -0.001)


def _grid(axes: dict, energy, acc=lambda s: 80.0, seeds=1, kind="measured", **extra):
    """One finished run per cell of `axes` x seeds; energy(setting) in J with a small wiggle,
    acc(setting) in %; time = energy / 100 W; extra columns are functions of the setting."""
    rows = []
    names = list(axes)
    for k, values in enumerate(itertools.product(*axes.values(), range(seeds))):
        setting = dict(zip(names + ["seed"], values))
        wiggle = 1 + WIGGLE[k % len(WIGGLE)]
        energy_j = energy(setting) * wiggle
        rows.append({**setting, "energy_j": energy_j, "total_s": energy_j / 100.0,
                     "best_val_acc_pct": acc(setting) + 10 * (wiggle - 1),
                     "energy_kind": kind, "status": "ok",
                     **{name: f(setting) for name, f in extra.items()}})
    return pd.DataFrame(rows)


def _evaluate(table, axes, registry):
    out = claims.evaluate_claims(table, claims=registry, axes=tuple(axes)).set_index("id")
    return out


FACTORIAL = {"model": ["resnet18", "resnet34"], "shortcut": [True, False],
             "prune": ["none", "structured"]}


def _factorial(prune_ratio=0.78, prune_acc_pp=0.0, shortcut_ratio=0.6, kind="measured"):
    def energy(s):
        return (1000.0 * (2.0 if s["model"] == "resnet34" else 1.0)
                * (prune_ratio if s["prune"] == "structured" else 1.0))

    def acc(s):
        return 85.0 + (prune_acc_pp if s["prune"] == "structured" else 0.0)

    table = _grid(FACTORIAL, energy, acc, kind=kind,
                  energy_to_target_j=lambda s: energy(s) * (shortcut_ratio if s["shortcut"] else 1) / 3,
                  time_to_target_s=lambda s: energy(s) * (shortcut_ratio if s["shortcut"] else 1) / 300,
                  prune_every_epochs=lambda s: 1, epochs=lambda s: 3)
    # compute (the seed's quantity) follows the same ratios as energy here, wiggle included
    return table.assign(sparse_macs_per_image=table["energy_j"] * 1e4)


def test_seed_002_factorial_supported_blocked_over_the_other_axes():
    out = _evaluate(_factorial(), FACTORIAL, SEED_002_CLAIMS)
    assert out.loc["deeper-costs-more", "verdict"] == "supported"
    assert out.loc["deeper-costs-more", "N"] == 4  # blocks: shortcut x prune, one seed
    assert "resnet34 / resnet18 energy 2.00" in out.loc["deeper-costs-more", "evidence"]
    assert out.loc["pruning-reduces-compute", "verdict"] == "supported"
    evidence = out.loc["pruning-reduces-compute", "evidence"]
    assert "structured (as claimed, compute reduction 22 to 23 %)" in evidence
    assert "Schedule: here pruned every 1 epoch(s) of 3; the seed pruned every 5 epochs of 50." \
        in evidence
    assert "Apart from the verdict, structured pruning's energy: structured / none energy 0.778" \
        in evidence
    assert out.loc["shortcuts-accelerate-convergence", "verdict"] == "supported"
    assert "energy to the target accuracy" in out.loc["shortcuts-accelerate-convergence", "evidence"]
    # the factorial has no lr axis and no mlp: said, not guessed
    assert out.loc["lr-0.001-optimal", "verdict"] == "not testable here"
    assert "does not vary 'lr'" in out.loc["lr-0.001-optimal", "evidence"]
    assert out.loc["ffnn-costs-more-than-resnet", "verdict"] == "not testable here"


@pytest.mark.parametrize("ratio, acc_pp, verdict, why", [
    (0.95, 0.0, "contradicted", "against the claim"),  # 5 % saved: 15-30 % ruled out
    (0.78, -5.0, "contradicted", "against the claim"),  # 22 % saved, but 5 points lost
    (0.60, 0.0, "contradicted", "against the claim"),  # 40 % saved: more than claimed
])
def test_pruning_claim_needs_the_range_and_the_accuracy(ratio, acc_pp, verdict, why):
    out = _evaluate(_factorial(prune_ratio=ratio, prune_acc_pp=acc_pp), FACTORIAL, SEED_002_CLAIMS)
    assert out.loc["pruning-reduces-compute", "verdict"] == verdict
    assert why in out.loc["pruning-reduces-compute", "evidence"]


def test_pruning_is_judged_on_compute_not_on_the_time_masks_cannot_save():
    """Unstructured masks cut MACs per image by 25 % but leave dense time and energy as they
    were: the claim (compute) is supported, and no time effect is claimed for the masks."""
    table = _factorial(prune_ratio=1.0)
    table["prune"] = table["prune"].replace({"structured": "unstructured"})
    table["sparse_macs_per_image"] *= table["prune"].map({"none": 1.0, "unstructured": 0.75})
    axes = {**FACTORIAL, "prune": ["none", "unstructured"]}
    out = _evaluate(table, axes, SEED_002_CLAIMS).loc["pruning-reduces-compute"]
    assert out["verdict"] == "supported"
    assert "unstructured (as claimed, compute reduction 25 to 26 %)" in out["evidence"]
    assert "Unstructured masks zero weights that dense kernels still multiply" in out["evidence"]
    assert "Apart from the verdict" not in out["evidence"]
    older = _evaluate(table.drop(columns=["sparse_macs_per_image"]), axes, SEED_002_CLAIMS)
    assert older.loc["pruning-reduces-compute", "verdict"] == "not testable here"


def test_pruning_claim_inconclusive_when_the_interval_straddles_the_range():
    table = _factorial(prune_ratio=0.85)  # 15 % exactly: the interval crosses the bound
    out = _evaluate(table, FACTORIAL, SEED_002_CLAIMS)
    assert out.loc["pruning-reduces-compute", "verdict"] == "inconclusive"


def test_shortcuts_slower_contradict_and_modelled_energy_tests_time():
    out = _evaluate(_factorial(shortcut_ratio=1.5), FACTORIAL, SEED_002_CLAIMS)
    assert out.loc["shortcuts-accelerate-convergence", "verdict"] == "contradicted"
    modelled = _evaluate(_factorial(kind="modelled"), FACTORIAL, SEED_002_CLAIMS)
    assert "time to the target accuracy" in modelled.loc["shortcuts-accelerate-convergence",
                                                         "evidence"]
    assert modelled.loc["deeper-costs-more", "evidence"].startswith(
        "Energy here is modelled from time, so this verdict is about training time")
    assert "resnet34 / resnet18 time 2.00" in modelled.loc["deeper-costs-more", "evidence"]


def test_one_block_gives_no_interval():
    table = _factorial()
    one_block = table[(table["shortcut"]) & (table["prune"] == "none")]
    out = _evaluate(one_block, FACTORIAL, SEED_002_CLAIMS)
    assert out.loc["deeper-costs-more", "verdict"] == "not testable here"
    assert out.loc["deeper-costs-more", "N"] == 1


BASELINES = {"model": ["resnet18", "mlp"], "lr": [0.01, 0.001, 0.0001]}


def test_seed_002_baselines_learning_rate_and_ffnn():
    table = _grid(BASELINES, energy=lambda s: 500.0 if s["model"] == "mlp" else 1000.0,
                  acc=lambda s: 80.0 + (3.0 if s["lr"] == 0.001 else 0.0), seeds=3)
    out = _evaluate(table, BASELINES, SEED_002_CLAIMS)
    assert out.loc["lr-0.001-optimal", "verdict"] == "supported"
    assert out.loc["lr-0.001-optimal", "N"] == 6  # model x seed blocks
    # the mlp here costs half of ResNet-18: the seed's table is contradicted
    assert out.loc["ffnn-costs-more-than-resnet", "verdict"] == "contradicted"
    assert "mlp / resnet18 energy 0.50" in out.loc["ffnn-costs-more-than-resnet", "evidence"]
    worse = _grid(BASELINES, energy=lambda s: 1000.0,
                  acc=lambda s: 80.0 - (3.0 if s["lr"] == 0.001 else 0.0), seeds=3)
    assert _evaluate(worse, BASELINES, SEED_002_CLAIMS).loc["lr-0.001-optimal",
                                                            "verdict"] == "contradicted"


EE = {"model": ["timm:resnet18", "timm:mobilenetv3_small_100"], "batch_size": [32, 64, 128],
      "epochs": [1, 2], "dataset": ["cifar10", "cifar100"]}
MACS = {"timm:resnet18": 37e6, "timm:mobilenetv3_small_100": 2e6}


def _ee(energy_per_epoch):
    return _grid(EE, energy=lambda s: energy_per_epoch(s) * s["epochs"],
                 dense_macs_per_image=lambda s: MACS[s["model"]])


def test_seed_001_claims_known_answers():
    out = _evaluate(_ee(lambda s: (100.0 if "resnet" in s["model"] else 40.0)
                        * {32: 1.0, 64: 0.8, 128: 0.7}[s["batch_size"]]), EE, SEED_001_CLAIMS)
    assert dict(out["verdict"]) == {
        "energy-proportional-to-epochs": "supported", "larger-batch-saves-energy": "supported",
        "cifar100-costs-as-cifar10": "supported", "bigger-model-costs-more": "supported"}
    assert "within blocks" in out.loc["larger-batch-saves-energy", "evidence"]
    assert "timm:mobilenetv3_small_100 2.0, timm:resnet18 37.0" in \
        out.loc["bigger-model-costs-more", "evidence"]


def test_seed_001_claims_contradicted():
    out = _evaluate(_ee(lambda s: (20.0 if "resnet" in s["model"] else 40.0)
                        * (1.3 if s["dataset"] == "cifar100" else 1.0)
                        * (1.2 if s["epochs"] == 2 else 1.0)
                        * {32: 1.0, 64: 1.1, 128: 1.2}[s["batch_size"]]), EE, SEED_001_CLAIMS)
    assert set(out["verdict"]) == {"contradicted"}


def test_equivalence_needs_tost_not_a_wide_interval():
    noisy = _ee(lambda s: 100.0)
    # +-20 % noise between datasets: no difference shown, none ruled out either
    noisy.loc[noisy["dataset"] == "cifar100", "energy_j"] *= [1.2, 0.8] * (len(noisy) // 4)
    out = _evaluate(noisy, EE, SEED_001_CLAIMS)
    assert out.loc["cifar100-costs-as-cifar10", "verdict"] == "inconclusive"
    assert "TOST within ±3 %" in out.loc["cifar100-costs-as-cifar10", "evidence"]


def test_each_study_gets_its_seeds_claims():
    from energy_lib.study import load_study

    def ids(name):
        return {c.id for c in claims_for(load_study(f"studies/{name}.toml").axes)}

    seed_000 = {c.id for c in claims.CLAIMS}
    seed_001 = {c.id for c in SEED_001_CLAIMS}
    seed_002 = {c.id for c in SEED_002_CLAIMS}
    assert ids("quick") == ids("paper") == ids("gpu_widths") == seed_000
    assert ids("efficient_dl_quick") == ids("efficient_dl") == seed_002
    assert ids("efficient_dl_baselines_quick") == seed_002
    assert ids("ee_training") == ids("ee_training_quick") == seed_001
    assert registry_note({"width": [1, 2], "precision": ["fp32"]}) == ""
    assert "no claims to test" in registry_note({"optimizer": ["sgd", "adam"]})
    assert all(c.test is not None and c.source for c in (*SEED_001_CLAIMS, *SEED_002_CLAIMS))


def test_a_twin_says_how_far_it_is_from_its_seed():
    from energy_lib.report.claim_registries import SEED_002, TWIN_CAVEAT, twin_distance

    runs = pd.DataFrame({"status": ["ok", "ok", "failed"], "model": ["resnet18", "resnet34", "x"],
                         "dataset": ["fashion_mnist"] * 3, "train_subset": [2048] * 3,
                         "epochs": [2, 2, 9], "device_name": ["cpu"] * 3,
                         "provenance_cpu_model": ["AMD EPYC"] * 3})
    assert twin_distance(SEED_002, runs) == (
        f"The seed ({SEED_002}) trained ResNet-18/34 with and without shortcuts, and a 3-layer "
        "FFNN on CIFAR-10 for 50 (pruning every 5) epochs on a GPU; this twin trained resnet18, "
        "resnet34 on fashion_mnist (2048 training images) for 2 epochs on AMD EPYC (CPU). "
        + TWIN_CAVEAT)
    assert twin_distance("a study nobody recorded", runs) == ""


def test_settings_near_chance_are_named():
    from energy_lib.report.claim_registries import near_chance

    runs = pd.DataFrame({"status": ["ok"] * 4, "model": ["a", "a", "b", "b"],
                         "dataset": ["fashion_mnist"] * 4,
                         "best_val_acc_pct": [12.0, 14.0, 80.0, 82.0]})
    assert near_chance(runs, ["model"], 10.0) == (
        "Near chance (mean best accuracy within 10 points of it): model=a (13.0 %, chance 10 %). "
        "Verdicts involving these settings say little about the model.")
    assert near_chance(runs[runs["model"] == "b"], ["model"], 10.0) == ""


def test_seed_001_entries_are_questions_listed_apart():
    from energy_lib.report.claim_registries import SEED_001_CLAIMS, SEED_002_CLAIMS
    from energy_lib.report.findings import _claims_sections

    assert all(c.question for c in SEED_001_CLAIMS) and not any(c.question for c in SEED_002_CLAIMS)
    table = pd.DataFrame({"claim": ["q?", "c."], "verdict": ["inconclusive", "supported"],
                          "evidence": ["e1", "e2"], "N": [3, 3],
                          "source": ["s1", "s2"], "kind": ["question", "claim"]})
    lines = _claims_sections(table, pd.DataFrame({"status": ["ok"]}), [])
    assert lines.index("### Claims tested") < lines.index("- **supported**: c. e2 (N = 3)")
    questions = next(i for i, line in enumerate(lines) if line.startswith("### Questions asked"))
    assert questions > lines.index("- **supported**: c. e2 (N = 3)")
    assert lines.index("- **inconclusive**: q? e1 (N = 3)") > questions
