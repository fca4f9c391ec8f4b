"""Which seed study's claims a study can test, and the claims of seeds 001 and 002.

Seed 000 (width x precision) has its claims in `report.claims`. Seed 002 (ResNets with and
without shortcuts, Xavier init, pruning, Adam learning rates, a 3-layer FFNN) states its
conclusions in its README; seed 001 (timm models x epochs x batch size x CIFAR-10/100 under
CodeCarbon) states none, so its entries are the questions its grid was built to answer, each
worded as the answer a reader would expect.

The factorial studies run one seed per setting on a GPU, so a comparison along one axis pairs
runs that agree on every *other* axis and the seed (a blocked design): resnet34 / resnet18 is
compared within each (shortcut, prune, seed). N is then the number of such blocks. The
interval says whether the effect holds on average over the other settings, not in each.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import ConfigError
from . import stats
from .claims import (CLAIMS, CONTRADICTED, EQUIVALENCE_MARGIN_PCT, INCONCLUSIVE, NOT_TESTABLE,
                     ORIGINAL_SOURCE, SUPPORTED, Claim, Context, _energy_or_time, _level,
                     _mixed_note)

SEED_002 = "seed 002 (ResNet shortcuts, Xavier, pruning) README"
SEED_001 = "seed 001 (timm x epochs x batch x CIFAR-10/100) grid: a question it asks, no stated answer"
#: Seed 002's reported compute reduction from pruning, in % (README: "15-30%").
PRUNING_REDUCTION_PCT = (15.0, 30.0)
#: "Maintained accuracy": a pruned run may lose at most this many points (non-inferiority).
ACCURACY_MARGIN_PP = 1.0
BLOCK = "_block"


@dataclass(frozen=True)
class Comparison:
    """One blocked comparison b vs a along `axis`: the paired ratio (or difference) row at the
    claim's confidence and at the TOST level (1 - 2 alpha) for equivalence."""

    a: object
    b: object
    row: pd.Series
    tost: pd.Series


def _blocks(data: pd.DataFrame, axis: str, context: Context) -> pd.DataFrame:
    """`data` with a `_block` column: the runs' values on every other setting axis and seed."""
    others = [x for x in context.axes if x != axis and x in data] + ["seed"]
    return data.assign(**{BLOCK: data[others].astype(str).agg("|".join, axis=1)})


def _present(data: pd.DataFrame, axis: str) -> list:
    return list(pd.unique(data[axis].dropna())) if axis in data else []


def _compare(data, axis, a, b, column, context, *, difference=False) -> Comparison:
    blocked = _blocks(data, axis, context)
    tost_level = 1 - 2 * (1 - context.confidence)
    if difference:
        row = stats.paired_difference(blocked, axis, a, b, column, pair_on=BLOCK,
                                      confidence=context.confidence).iloc[0]
        tost = stats.paired_difference(blocked, axis, a, b, column, pair_on=BLOCK,
                                       confidence=tost_level).iloc[0]
    else:
        row = stats.paired_ratio(blocked, axis, a, b, column, pair_on=BLOCK,
                                 confidence=context.confidence).iloc[0]
        tost = stats.paired_ratio(blocked, axis, a, b, column, pair_on=BLOCK,
                                  confidence=tost_level).iloc[0]
    return Comparison(a, b, row, tost)


def _ratio_text(c: Comparison, what: str, context: Context) -> str:
    r = c.row
    if r["n"] < 2:
        return f"{c.b} / {c.a} {what} {r['ratio']:.3f}, no interval (N={int(r['n'])})"
    return (f"{c.b} / {c.a} {what} {r['ratio']:.3f} ({_level(context.confidence)} "
            f"{r['ratio_ci_low']:.3f}–{r['ratio_ci_high']:.3f}, N={int(r['n'])})")


def _diff_text(c: Comparison, what: str, context: Context) -> str:
    r = c.row
    sign = lambda x: ("+" if x >= 0 else "−") + f"{abs(x):.1f}"  # noqa: E731
    if r["n"] < 2:
        return f"{c.b} − {c.a} {what} {sign(r['difference'])} pp, no interval (N={int(r['n'])})"
    return (f"{c.b} − {c.a} {what} {sign(r['difference'])} pp ({_level(context.confidence)} "
            f"{sign(r['diff_ci_low'])} to {sign(r['diff_ci_high'])}, N={int(r['n'])})")


def _direction(c: Comparison, wanted: str) -> str:
    """'up' / 'down' (the interval excludes 1), 'same' (TOST within the margin), 'unclear',
    'untested' (fewer than two pairs). For a claim of no difference, equivalence within the
    margin wins over a significant but smaller difference; for a claim of a difference,
    significance wins."""
    r, t = c.row, c.tost
    if r["n"] < 2:
        return "untested"
    bound = 1 + EQUIVALENCE_MARGIN_PCT / 100
    same = t["ratio_ci_low"] >= 1 / bound and t["ratio_ci_high"] <= bound
    if wanted == "same" and same:
        return "same"
    if r["ratio_ci_low"] > 1:
        return "up"
    if r["ratio_ci_high"] < 1:
        return "down"
    return "same" if same else "unclear"


def _combine(states: list[str], wanted: str, against: set[str]) -> str:
    """The claim's verdict from its comparisons' states (VERDICT_RULES)."""
    if not states or all(s == "untested" for s in states):
        return NOT_TESTABLE
    if any(s in against for s in states):
        return CONTRADICTED
    if all(s == wanted for s in states):
        return SUPPORTED
    return INCONCLUSIVE


def _energy_head(data: pd.DataFrame) -> tuple[str, str, str]:
    """(column, its name, a sentence when the verdict is about time because energy is modelled
    from time)."""
    column, quantity = _energy_or_time(data)
    note = ("Energy here is modelled from time, so this verdict is about training time and the "
            "modelled energy follows it. " if column == "total_s" else "")
    return column, quantity, note


def _ordered_comparisons(data, axis, pairs, context, *, wanted: str, column=None,
                         what: str | None = None):
    """Verdict, evidence, N for a claim that every (a, b) in `pairs` goes `wanted` ('up',
    'down' or 'same') on energy (or time, `_energy_head`)."""
    if column is None:
        column, what, note = _energy_head(data)
    else:
        note = ""
    comparisons, states = [], []
    for a, b in pairs:
        try:
            comparisons.append(_compare(data, axis, a, b, column, context))
        except ConfigError:
            continue
        states.append(_direction(comparisons[-1], wanted))
    if not comparisons:
        return NOT_TESTABLE, f"no finished runs of both sides along {axis!r}", 0
    against = {"up": {"down"}, "down": {"up"}, "same": {"up", "down"}}[wanted]
    evidence = note + "Paired within blocks of the other axes and seed: " + "; ".join(
        _ratio_text(c, what, context) for c in comparisons) + "." + _mixed_note(data)
    n = min(int(c.row["n"]) for c in comparisons)
    verdict = _combine(states, wanted, against)
    if verdict == NOT_TESTABLE:
        evidence += " Fewer than two pairs: no interval."
    elif verdict == INCONCLUSIVE and wanted == "same":
        evidence += f" Equal needs a TOST within ±{EQUIVALENCE_MARGIN_PCT:g} %."
    return verdict, evidence, n


def _needs(data: pd.DataFrame, axis: str, values: list, context: Context) -> str:
    """'' or why the claim cannot be tested: the axis is not a setting axis of this study, or
    lacks the values it needs."""
    if axis not in context.axes:
        return f"this study does not vary {axis!r}"
    present = _present(data, axis)
    lacking = [v for v in values if v not in present]
    return f"needs finished runs with {axis} = {lacking}; found {present}" if lacking else ""


# -------------------------------------------------------------------------------- seed 002


#: The seed's quantity for "compute": multiply-accumulates per image of the pruned model (the
#: records' `sparse_macs_per_image`, nonzero weights only; a structured step shrinks the dense
#: count too).
PRUNING_COMPUTE = "sparse_macs_per_image"


def _pruning_schedule(data: pd.DataFrame) -> str:
    every = _listed(pd.to_numeric(data.get("prune_every_epochs"), errors="coerce").dropna()
                    .astype(int)) if "prune_every_epochs" in data else "not recorded"
    epochs = _listed(pd.to_numeric(data.get("epochs"), errors="coerce").dropna().astype(int)) \
        if "epochs" in data else "not recorded"
    return (f"Schedule: here pruned every {every} epoch(s) of {epochs}; the seed pruned every 5 "
            "epochs of 50.")


def _pruning_reduces_compute(data: pd.DataFrame, context: Context):
    """Seed 002's claim on its own quantity: compute (MACs per image), not time; the time or
    energy effect is reported apart, for structured pruning only (unstructured masks zero
    weights that the dense kernels still multiply: they cannot save dense time)."""
    why = _needs(data, "prune", ["none"], context)
    methods = [m for m in _present(data, "prune") if m != "none"]
    if why or not methods:
        return NOT_TESTABLE, why or "needs a pruned setting beside prune = none", 0
    if PRUNING_COMPUTE not in data or data[PRUNING_COMPUTE].isna().all():
        return NOT_TESTABLE, "the records hold no MACs per image (made before they were recorded)", 0
    low, high = PRUNING_REDUCTION_PCT
    parts, states, ns, costs = [], [], [], []
    column, quantity, note = _energy_head(data)
    for method in methods:
        try:
            compute = _compare(data, "prune", "none", method, PRUNING_COMPUTE, context)
            acc = _compare(data, "prune", "none", method, "best_val_acc_pct", context,
                           difference=True)
        except ConfigError:
            continue
        ns.append(int(compute.row["n"]))
        reduction = ""
        if compute.row["n"] < 2:
            states.append("untested")
        else:
            # reduction in %: 100 (1 - ratio); the interval maps over reversed
            red_low = 100 * (1 - compute.row["ratio_ci_high"])
            red_high = 100 * (1 - compute.row["ratio_ci_low"])
            in_range = low <= red_low and red_high <= high
            outside = red_high < low or red_low > high
            kept = acc.tost["diff_ci_low"] >= -ACCURACY_MARGIN_PP
            lost = acc.row["diff_ci_high"] < -ACCURACY_MARGIN_PP
            states.append("against" if outside or lost else
                          "for" if in_range and kept else "unclear")
            reduction = f", compute reduction {red_low:.0f} to {red_high:.0f} %"
        said = {"against": "against the claim", "for": "as claimed",
                "unclear": "undecided", "untested": "no interval"}[states[-1]]
        parts.append(f"{method} ({said}{reduction}): {_ratio_text(compute, 'MACs per image', context)}; "
                     f"{_diff_text(acc, 'best accuracy', context)}")
        if method == "structured":
            try:
                costs.append(_ratio_text(_compare(data, "prune", "none", method, column, context),
                                         quantity, context))
            except ConfigError:
                pass
    if not parts:
        return NOT_TESTABLE, "no finished pruned run with an unpruned partner", 0
    evidence = (f"Compute is MACs per image of the pruned model, paired within blocks of the "
                f"other axes and seed; supported where the reduction's interval lies within "
                f"{low:g}–{high:g} % and accuracy falls by at most {ACCURACY_MARGIN_PP:g} pp "
                f"(non-inferiority, {_level(1 - 2 * (1 - context.confidence))}): "
                + "; ".join(parts) + ". " + _pruning_schedule(data))
    if costs:
        evidence += (" Apart from the verdict, structured pruning's " + quantity + ": "
                     + "; ".join(costs) + "." + (f" {note.strip()}" if note else ""))
    if "unstructured" in methods:
        evidence += (" Unstructured masks zero weights that dense kernels still multiply: they "
                     "cannot save dense time or energy, so none is reported for them.")
    return _combine(states, "for", {"against"}), evidence + _mixed_note(data), min(ns)


def _shortcuts_accelerate(data: pd.DataFrame, context: Context):
    why = _needs(data, "shortcut", [True, False], context)
    if why:
        return NOT_TESTABLE, why, 0
    column = "energy_to_target_j" if _energy_or_time(data)[0] == "energy_j" else "time_to_target_s"
    if column not in data or data[column].isna().all():
        return NOT_TESTABLE, "no run has reached the target accuracy", 0
    what = "energy to the target accuracy" if column == "energy_to_target_j" else \
        "time to the target accuracy"
    return _ordered_comparisons(data, "shortcut", [(False, True)], context, wanted="down",
                                column=column, what=what)


def _lr_best(data: pd.DataFrame, context: Context):
    why = _needs(data, "lr", [0.001], context)
    others = [v for v in _present(data, "lr") if v != 0.001]
    if why or not others:
        return NOT_TESTABLE, why or "needs another learning rate beside 0.001", 0
    parts, states, ns = [], [], []
    for other in sorted(others):
        try:
            c = _compare(data, "lr", other, 0.001, "best_val_acc_pct", context, difference=True)
        except ConfigError:
            continue
        r = c.row
        ns.append(int(r["n"]))
        states.append("untested" if r["n"] < 2 else "up" if r["diff_ci_low"] > 0 else
                      "down" if r["diff_ci_high"] < 0 else "unclear")
        parts.append(_diff_text(c, "best accuracy", context))
    if not parts:
        return NOT_TESTABLE, "no finished pair of learning rates", 0
    evidence = "Paired within blocks of the other axes and seed: " + "; ".join(parts) + "."
    return _combine(states, "up", {"down"}), evidence, min(ns)


def _model_pair(data: pd.DataFrame, context: Context, a: str, b: str, wanted: str):
    why = _needs(data, "model", [a, b], context)
    if why:
        return NOT_TESTABLE, why, 0
    return _ordered_comparisons(data, "model", [(a, b)], context, wanted=wanted)


SEED_002_CLAIMS: tuple[Claim, ...] = (
    Claim("pruning-reduces-compute",
          "Pruning a Xavier-initialised ResNet reduces compute by 15–30 % while keeping its "
          "accuracy.", SEED_002,
          "README: 'Pruning + ResNet + Xavier reduces compute by 15-30%'; pruned models "
          "'maintained ~98% accuracy while using 30% fewer FLOPs' (pruning every 5 epochs)",
          _pruning_reduces_compute),
    Claim("shortcuts-accelerate-convergence",
          "Shortcut connections accelerate convergence (less energy to reach a given accuracy).",
          SEED_002, "README: 'Shortcut connections accelerate convergence' and 'reduce energy "
                    "cost'; no numbers", _shortcuts_accelerate),
    Claim("lr-0.001-optimal", "Adam's learning rate 0.001 beats 0.01 and 0.0001 in accuracy.",
          SEED_002, "README: 'Optimal learning rate (0.001) improves efficiency'; no numbers",
          _lr_best),
    Claim("ffnn-costs-more-than-resnet",
          "A 3-layer feed-forward network costs more energy than a ResNet (ResNet-18).",
          SEED_002, "README table: FFNN (3-layer) 'high energy, high FLOPs'; ResNet without "
                    "pruning 'medium'", lambda d, c: _model_pair(d, c, "resnet18", "mlp", "up")),
    Claim("deeper-costs-more", "A deeper ResNet (34 vs 18 layers) costs more energy to train.",
          SEED_002, "README figure 'Energy Consumption Over Depth'; no numbers",
          lambda d, c: _model_pair(d, c, "resnet18", "resnet34", "up")),
)


# -------------------------------------------------------------------------------- seed 001


def _sorted_values(data: pd.DataFrame, axis: str) -> list:
    values = _present(data, axis)
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def _per_epoch(data: pd.DataFrame) -> pd.DataFrame:
    epochs = pd.to_numeric(data["epochs"], errors="coerce")
    return data.assign(energy_per_epoch_j=data["energy_j"] / epochs,
                       time_per_epoch_s=data["total_s"] / epochs)


def _energy_scales_with_epochs(data: pd.DataFrame, context: Context):
    values = _sorted_values(data, "epochs") if "epochs" in context.axes else []
    if len(values) < 2:
        return NOT_TESTABLE, ("this study does not vary 'epochs' (separate runs per epoch count: "
                              "a cosine schedule makes epoch 50 of a 100-epoch run another run)"
                              if "epochs" not in context.axes else
                              f"needs two epoch counts; found {values}"), 0
    column, what, note = _energy_head(data)
    per_epoch = {"energy_j": "energy_per_epoch_j", "total_s": "time_per_epoch_s"}[column]
    verdict, evidence, n = _ordered_comparisons(
        _per_epoch(data), "epochs", list(zip(values, values[1:])), context, wanted="same",
        column=per_epoch, what=f"{what} per epoch")
    return verdict, note + evidence, n


def _larger_batch_saves(data: pd.DataFrame, context: Context):
    values = _sorted_values(data, "batch_size") if "batch_size" in context.axes else []
    if len(values) < 2:
        return NOT_TESTABLE, "this study does not vary 'batch_size' over two values or more", 0
    return _ordered_comparisons(data, "batch_size", list(zip(values, values[1:])), context,
                                wanted="down")


def _cifar100_as_cifar10(data: pd.DataFrame, context: Context):
    why = _needs(data, "dataset", ["cifar10", "cifar100"], context)
    if why:
        return NOT_TESTABLE, why, 0
    return _ordered_comparisons(data, "dataset", [("cifar10", "cifar100")], context,
                                wanted="same")


def _bigger_model_costs_more(data: pd.DataFrame, context: Context):
    if "model" not in context.axes or "dense_macs_per_image" not in data:
        return NOT_TESTABLE, "this study does not vary 'model'", 0
    macs = (data.assign(m=pd.to_numeric(data["dense_macs_per_image"], errors="coerce"))
            .groupby("model")["m"].median().dropna().sort_values())
    if len(macs) < 2:
        return NOT_TESTABLE, "needs two models with known MACs per image", 0
    models = list(macs.index)
    verdict, evidence, n = _ordered_comparisons(data, "model", list(zip(models, models[1:])),
                                                context, wanted="up")
    order = ", ".join(f"{m} {macs[m] / 1e6:,.1f}" for m in models)
    return verdict, f"Models by dense MMACs per image: {order}. " + evidence, n


SEED_001_CLAIMS: tuple[Claim, ...] = (
    Claim("energy-proportional-to-epochs",
          "Training energy grows in proportion to the number of epochs (equal energy per "
          "epoch whatever the epoch count; the seed ran 50, 75 and 100).", SEED_001,
          "195 CodeCarbon runs at 50/75/100 epochs; the seed reports no analysis",
          _energy_scales_with_epochs, question=True),
    Claim("larger-batch-saves-energy",
          "A larger batch (32 → 64 → 128) trains the same epochs with less energy.", SEED_001,
          "runs at batch 32/64/128; the seed reports no analysis", _larger_batch_saves,
          question=True),
    Claim("cifar100-costs-as-cifar10",
          "CIFAR-100 costs as much energy as CIFAR-10 (the same images; only the classifier's "
          "last layer differs).", SEED_001,
          "runs on both datasets; the seed reports no analysis", _cifar100_as_cifar10,
          question=True),
    Claim("bigger-model-costs-more",
          "A model with more MACs per image costs more energy to train.", SEED_001,
          "14 timm models; the seed reports no analysis", _bigger_model_costs_more,
          question=True),
)


# ----------------------------------------------------------------- how far a twin is from its seed

@dataclass(frozen=True)
class SeedSetting:
    """What a seed study trained, on what, for how long, where: the yardstick a twin's
    distance is said against (facts from ../shared/reference/README.md and the seeds' READMEs)."""
    models: str
    dataset: str
    epochs: str
    device: str


SEED_SETTINGS = {
    ORIGINAL_SOURCE: SeedSetting("the paper CNN at widths 1, 2, 3", "CIFAR-10", "30",
                                 "one NVIDIA T4 GPU (Colab)"),
    SEED_002: SeedSetting("ResNet-18/34 with and without shortcuts, and a 3-layer FFNN",
                          "CIFAR-10", "50 (pruning every 5)", "a GPU"),
    SEED_001: SeedSetting("14 timm models", "CIFAR-10 and CIFAR-100", "50, 75 and 100", "a GPU"),
}
TWIN_CAVEAT = "A verdict here is about this twin; it neither confirms nor refutes the paper."


def _listed(values) -> str:
    values = [str(v) for v in pd.unique(pd.Series(list(values)).dropna())]
    return ", ".join(values) if values else "not recorded"


def twin_distance(source: str, runs: pd.DataFrame) -> str:
    """One sentence: the seed's setting beside this study's (models, data, epochs, device), and
    TWIN_CAVEAT. "" for a source without a recorded setting."""
    seed = SEED_SETTINGS.get(source)
    if seed is None:
        return ""
    done = runs[runs["status"].isin(["ok", "diverged"])] if "status" in runs else runs
    column = lambda name: done[name] if name in done else pd.Series(dtype=object)  # noqa: E731
    images = pd.to_numeric(column("train_subset"), errors="coerce").dropna()
    subset = f" ({_listed(images.astype(int))} training images)" if len(images) else ""
    widths = pd.to_numeric(column("width"), errors="coerce").dropna()
    models = _listed(column("model")) + (f" at widths {_listed(widths.map('{:g}'.format))}"
                                         if len(widths) else "")
    devices = column("device_name").astype("string")
    cpus = column("provenance_cpu_model").astype("string").reindex(devices.index)
    devices = devices.where(devices.ne("cpu"), cpus.fillna("a CPU") + " (CPU)")
    return (f"The seed ({source}) trained {seed.models} on {seed.dataset} for {seed.epochs} "
            f"epochs on {seed.device}; this twin trained {models} on "
            f"{_listed(column('dataset'))}{subset} for "
            f"{_listed(pd.to_numeric(column('epochs'), errors='coerce').dropna().map('{:g}'.format))}"
            f" epochs on "
            f"{_listed(devices)}. {TWIN_CAVEAT}")


def near_chance(runs: pd.DataFrame, setting_axes: list[str], margin_pp: float) -> str:
    """'' or a sentence naming the settings whose mean best accuracy is within `margin_pp` of
    chance (100 / classes): their verdicts say little about the model."""
    from ..training.datasets import DATASETS

    done = runs[runs["status"].isin(["ok", "diverged"])] if "status" in runs else runs
    axes = [a for a in setting_axes if a in done]
    if done.empty or "dataset" not in done or "best_val_acc_pct" not in done or not axes:
        return ""
    found = []
    for key, group in done.groupby(axes + ["dataset"], sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        spec = DATASETS.get(key[-1])
        accuracy = pd.to_numeric(group["best_val_acc_pct"], errors="coerce").mean()
        if spec is None or pd.isna(accuracy):
            continue
        chance = 100.0 / spec.num_classes
        if accuracy - chance < margin_pp:
            setting = " ".join(f"{a}={v}" for a, v in zip(axes, key[:-1]))
            found.append(f"{setting} ({accuracy:.1f} %, chance {chance:g} %)")
    return ("Near chance (mean best accuracy within "
            f"{margin_pp:g} points of it): {'; '.join(found)}. Verdicts involving these settings "
            "say little about the model.") if found else ""


def claims_for(axes) -> tuple[Claim, ...]:
    """The claims a study with these setting axes can be asked about: seed 000's for a width x
    precision study; seed 002's where it varies shortcut, pruning, init or learning rate (or
    pits the mlp against a ResNet); seed 001's where it varies epochs, batch size or dataset, or
    its models are timm's. Empty when no seed study asked about such a grid."""
    axes = dict(axes)
    names = set(axes)
    models = [str(m) for m in axes.get("model", [])]
    chosen: tuple[Claim, ...] = ()
    if {"width", "precision"} <= names:
        chosen += CLAIMS
    if names & {"shortcut", "prune", "init", "lr"} or "mlp" in models:
        chosen += SEED_002_CLAIMS
    if names & {"epochs", "batch_size", "dataset"} or any(m.startswith("timm:") for m in models):
        chosen += SEED_001_CLAIMS
    return chosen


def registry_note(axes) -> str:
    """'' or why a study has no claims to test."""
    return "" if claims_for(axes) else (
        "no seed study's claims concern this grid's axes "
        f"({', '.join(dict(axes)) or 'none'}): no claims to test")


__all__ = ["SEED_001_CLAIMS", "SEED_002_CLAIMS", "SEED_SETTINGS", "claims_for", "near_chance",
           "registry_note", "twin_distance"]
