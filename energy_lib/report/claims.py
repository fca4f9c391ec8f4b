"""The original study's conclusions as data, and our verdict on each from repeated runs.

The original study drew its conclusions from one run per cell, with energy assumed as
70 W x time. Here every claim is tested with intervals over repeats; a claim that the data at
hand cannot test says so instead of borrowing a verdict.

The verdict vocabulary and its rules are `VERDICT_RULES` (written once; the report prints it).
Claims about energy are tested on energy where any component was measured; where every
component is modelled from time (a TDP or constant-power model), the ratio of energies is the
ratio of times by construction, so the verdict is about training time and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..energy.derive import energy_label
from ..errors import ConfigError
from ..records import finished_rows
from . import stats

ORIGINAL_SOURCE = "original T4 study (seed 000)"
SUPPORTED, CONTRADICTED = "supported", "contradicted"
INCONCLUSIVE, NOT_TESTABLE = "inconclusive", "not testable here"
POWER_SPREAD_THRESHOLD_PCT = 10.0  # cells' mean power within this spread = proportional
#: "No difference" needs evidence, not a wide interval: two one-sided tests (TOST) at level
#: alpha, i.e. the (1 - 2 alpha) interval of the paired ratio inside [1/(1+m), 1+m].
EQUIVALENCE_MARGIN_PCT = 3.0
#: "Slightly" in a claim: an effect whose whole interval lies within this many percent. The
#: seed's own "slight" increases were +0.2 % and +2.2 % (widths 2 and 1); 10 % keeps that reading
#: and refuses to call +50 % slight.
SLIGHTLY_MAX_PCT = 10.0
#: The seed study's largest width: its claims about "the largest width" and "small widths"
#: (below it) are about these widths, not about whatever a twin's grid tops out at.
SEED_LARGEST_WIDTH = 3

VERDICT_RULES = {
    SUPPORTED: "every comparison the claim makes goes its way: a 95 % interval excludes no "
               "effect where it says there is one, and an equivalence test (TOST, within "
               f"±{EQUIVALENCE_MARGIN_PCT:g} %) shows no effect where it says there is none",
    CONTRADICTED: "a 95 % interval shows an effect against the claim",
    INCONCLUSIVE: "testable here, but neither: the intervals at this N are too wide to show "
                  "the effect or to rule it out within the margin",
    NOT_TESTABLE: "the data lacks what the claim needs (the setting it is about, a second "
                  "width, repeats, both precisions, measured energy for a claim about power)",
}
#: Columns every claim's table has; each test checks the axes it needs itself.
RESULT_COLUMNS = ("seed", "best_val_acc_pct", "energy_j", "energy_kind", "total_s", "status")


@dataclass(frozen=True)
class Context:
    """What a claim's test may use besides the runs: the confidence level and the study's
    setting axes (a blocked comparison pairs runs that agree on every other axis)."""

    confidence: float = 0.95
    axes: tuple[str, ...] = ("width", "precision")


@dataclass(frozen=True)
class Claim:
    """One conclusion of a seed study, with the numbers it rested on and its test:
    `test(data, context) -> (verdict, evidence, N)` on the finished runs."""

    id: str
    text: str
    source: str = ORIGINAL_SOURCE
    original_evidence: str = ""
    test: Callable[[pd.DataFrame, Context], tuple[str, str, int]] | None = None
    #: the settings the claim is about, as (axis, values) pairs: where the data lack one, the
    #: claim is not testable here and says which (never judged on a stand-in setting)
    about: tuple[tuple[str, tuple], ...] = ()
    #: a question the seed's grid was built to answer, with no answer stated: listed apart from
    #: the claims, its verdict being about the answer a reader would expect
    question: bool = False


def missing_settings(claim: Claim, data: pd.DataFrame) -> str:
    """Why the data cannot test `claim` (the settings it is about that no finished run has),
    or ""."""
    for axis, values in claim.about:
        present = set(data[axis].dropna()) if axis in data else set()
        lacking = [v for v in values if v not in present]
        if lacking:
            have = ", ".join(_w(v) for v in sorted(present)) or "none"
            return (f"the claim is about {axis} {', '.join(_w(v) for v in lacking)}, which no "
                    f"finished run here has ({axis} here: {have}); a verdict on another "
                    f"{axis} would not be about this claim")
    return ""



def _w(width) -> str:
    return f"{width:g}" if isinstance(width, (int, float, np.number)) else str(width)


def _signed(x: float, digits: int = 1) -> str:
    return ("+" if x >= 0 else "−") + f"{abs(x):.{digits}f}"


def _mixed_note(data: pd.DataFrame) -> str:
    """A sentence naming the components' kinds and methods where they differ (part measured,
    part modelled), else ''."""
    label = energy_label(data)
    return f" Energy kinds are {label.kind} ({label.methods})." if len(label.kinds) > 1 else ""


# -------------------------------------------------------------------------------- the claims


def _wider_is_more_accurate(data: pd.DataFrame, confidence: float):
    widths = sorted(data["width"].dropna().unique())
    if len(widths) < 2:
        return NOT_TESTABLE, f"needs at least two widths; found {[_w(w) for w in widths]}", 0
    parts, ns, states = [], [], []
    for precision, rows in data.groupby("precision", sort=True):
        for low_w, high_w in zip(widths, widths[1:]):
            pair = rows[rows["width"].isin([low_w, high_w])]
            try:
                d = stats.paired_difference(pair, "width", low_w, high_w, "best_val_acc_pct",
                                            confidence=confidence).iloc[0]
            except ConfigError:
                continue
            ns.append(int(d["n"]))
            if d["n"] < 2:
                states.append("untested")
                value = "—" if d["n"] == 0 else f"{_signed(d['difference'])} pp, no interval"
                parts.append(f"{precision}: width {_w(low_w)}→{_w(high_w)} {value} (N={d['n']})")
                continue
            states.append("up" if d["diff_ci_low"] > 0 else
                          "down" if d["diff_ci_high"] < 0 else "unclear")
            parts.append(f"{precision}: width {_w(low_w)}→{_w(high_w)} {_signed(d['difference'])} pp "
                         f"({_level(confidence)} {_signed(d['diff_ci_low'])} to "
                         f"{_signed(d['diff_ci_high'])}, N={d['n']})")
    evidence = "best val accuracy, paired by seed: " + "; ".join(parts)
    if not states or all(s == "untested" for s in states):
        return NOT_TESTABLE, evidence + ". One run per cell: no interval.", min(ns, default=0)
    if "down" in states:
        verdict = CONTRADICTED
    elif all(s == "up" for s in states):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return verdict, evidence, min(ns)


def _level(confidence: float) -> str:
    return f"{round(confidence * 100):g} % CI"


def _measured_component(data: pd.DataFrame) -> str | None:
    """A component measured in every run (`<c>_kind` measured, `<c>_energy_j` known) where the
    headline as a whole is not: the claim about energy and time can be tested on it."""
    from ..energy.derive import COMPONENTS

    for component in COMPONENTS:
        kind, energy = f"{component}_kind", f"{component}_energy_j"
        if kind in data and energy in data and len(data) and (data[kind] == "measured").all() \
                and pd.to_numeric(data[energy], errors="coerce").gt(0).all():
            return component
    return None


def _energy_proportional_to_time(data: pd.DataFrame, confidence: float, threshold_pct: float):
    rows = data[(data["energy_j"] > 0) & (data["total_s"] > 0)].copy()
    if rows.empty:
        return NOT_TESTABLE, "no finished run has both energy and time", 0
    component = None if (rows["energy_kind"] == "measured").all() else _measured_component(rows)
    if component is not None:  # the headline mixes kinds: test on the measured part
        rows = rows.assign(energy_j=pd.to_numeric(rows[f"{component}_energy_j"]),
                           energy_kind="measured")
    rows["power_w"] = rows["energy_j"] / rows["total_s"]
    measured = rows[rows["energy_kind"] == "measured"]
    if measured.empty:
        label = energy_label(rows)
        kinds = (f"{label.kind} ({label.methods}), not wholly measured" if len(label.kinds) > 1
                 else f"{label.kind}, not measured" if label.kinds else "of unknown kind")
        iv = stats.interval(rows["power_w"], confidence)
        return (NOT_TESTABLE,
                f"energy here is {kinds}: under a constant-power model energy = "
                f"power x time, so it is proportional to time by construction (energy / time = "
                f"{stats.format_interval(iv, 1, 'W')} over runs)", iv.n)
    dropped = len(rows) - len(measured)
    cells = stats.summarise_groups(measured, ["width", "precision"], ["power_w"],
                                   scales={"power_w": "log"})
    cells = cells[cells["power_w_n"] > 0]
    n = len(measured)
    if len(cells) < 2 or n < 3:
        return NOT_TESTABLE, f"needs measured energy from at least two cells ({len(cells)}) " \
                             f"and three runs ({n})", n
    low, high = cells.loc[cells["power_w_mean"].idxmin()], cells.loc[cells["power_w_mean"].idxmax()]
    spread_pct = (high["power_w_mean"] / low["power_w_mean"] - 1) * 100
    r = float(np.corrcoef(measured["total_s"], measured["energy_j"])[0, 1]) if n > 2 else math.nan

    def cell(c):
        iv = stats.Interval(c["power_w_mean"], c["power_w_ci_low"], c["power_w_ci_high"],
                            None if pd.isna(c["power_w_half_width"]) else c["power_w_half_width"],
                            int(c["power_w_n"]), "")
        return f"width {_w(c['width'])} {c['precision']}: {stats.format_interval(iv, 1, 'W')}"

    evidence = (f"tested on the {component.upper()}'s measured energy (the other components are "
                "modelled): " if component else "") + (
                f"measured mean power (energy / time) per cell ranges from {cell(low)} to "
                f"{cell(high)}, a spread of {spread_pct:.1f} % (proportional if within "
                f"{threshold_pct:g} %); Pearson r(energy, time) = {r:.3f} over {n} runs")
    if dropped:
        evidence += f"; {dropped} runs with non-measured energy left out"
    return (SUPPORTED if spread_pct <= threshold_pct else CONTRADICTED), evidence, n


def _energy_or_time(data: pd.DataFrame) -> tuple[str, str]:
    """(the column an energy claim is tested on, its name in words): energy where any component
    was measured; time where all of it is modelled from time, where the two ratios are one."""
    label = energy_label(data)
    if not label.kinds or "measured" in label.kinds:
        return "energy_j", "energy"
    return "total_s", "time"


def _equivalent(tost: pd.Series, margin_pct: float) -> bool:
    bound = 1 + margin_pct / 100
    return bool(tost["n"] >= 2 and tost["ratio_ci_low"] >= 1 / bound
                and tost["ratio_ci_high"] <= bound)


def _amp_ratios(data: pd.DataFrame, confidence: float, margin_pct: float = EQUIVALENCE_MARGIN_PCT):
    """Per width: (width, row of paired_ratio, state) with state saves / costs / equivalent
    (TOST within ±margin) / unclear / untested, on energy or, where it is modelled from time, on
    time (`_energy_or_time`)."""
    column, quantity = _energy_or_time(data)
    ratios = stats.paired_ratio(data, "precision", "fp32", "amp", column, by="width",
                                confidence=confidence, quantity=quantity)
    tost = stats.paired_ratio(data, "precision", "fp32", "amp", column, by="width",
                              confidence=1 - 2 * (1 - confidence), quantity=quantity)
    tost = {row["width"]: row for _, row in tost.iterrows()}
    out = []
    for _, r in ratios.sort_values("width").iterrows():
        if r["n"] < 2:
            state = "untested"
        elif r["ratio_ci_high"] < 1:
            state = "saves"
        elif r["ratio_ci_low"] > 1:
            state = "costs"
        elif _equivalent(tost[r["width"]], margin_pct):
            state = "equivalent"
        else:
            state = "unclear"
        r = r.copy()
        if state == "equivalent":
            t = tost[r["width"]]
            r["verdict"] = (f"equivalent within ±{margin_pct:g} % (TOST: "
                            f"{_level(1 - 2 * (1 - confidence))} {t['ratio_ci_low']:.3f}–"
                            f"{t['ratio_ci_high']:.3f}, N = {int(t['n'])})")
        out.append((r["width"], r, state))
    return out


def _describe(ratios, data: pd.DataFrame) -> str:
    column, quantity = _energy_or_time(data)
    head = f"amp/fp32 {quantity} paired by seed: "
    if column == "total_s":
        label = energy_label(data)
        head = (f"Energy here is {label.kind} ({label.methods}): modelled from time, so this "
                f"verdict is about training time, and the modelled energy follows it. " + head)
    return head + "; ".join(f"width {_w(w)}: {r['verdict']}" for w, r, _ in ratios)


def _amp_saves_only_at_largest(data: pd.DataFrame, confidence: float,
                               largest: float = SEED_LARGEST_WIDTH):
    """'Only at the largest width': a saving at `largest`, none (equivalence or a cost) below."""
    ratios = [r for r in _amp_ratios(data, confidence) if r[0] <= largest]
    if len(ratios) < 2 or ratios[-1][0] != largest:
        return NOT_TESTABLE, f"needs amp and fp32 runs at width {_w(largest)} and below", 0
    evidence = _describe(ratios, data) + "." + _mixed_note(data)
    n = min(int(r["n"]) for _, r, _ in ratios)
    top, smaller = ratios[-1][2], [s for _, _, s in ratios[:-1]]
    if all(s == "untested" for _, _, s in ratios):
        return NOT_TESTABLE, evidence + " One pair per width: no interval.", n
    if top in ("costs", "equivalent") or "saves" in smaller:
        return CONTRADICTED, evidence, n
    if top == "saves" and all(s in ("equivalent", "costs") for s in smaller):
        # the 'only' part: the smaller widths shown equivalent (TOST) or costlier, not merely
        # without a detectable saving (absence of evidence)
        return SUPPORTED, evidence, n
    return INCONCLUSIVE, evidence + (
        f" 'Only' needs the smaller widths shown equivalent within ±{EQUIVALENCE_MARGIN_PCT:g} % "
        "(or costlier), not merely without a detectable saving." if top == "saves" else ""), n


def _amp_can_cost_at_small_widths(data: pd.DataFrame, confidence: float,
                                  below: float = SEED_LARGEST_WIDTH,
                                  slightly_max_pct: float = SLIGHTLY_MAX_PCT):
    """'Can slightly increase energy at small widths' (below `below`): supported where amp
    costs at some small width with its whole interval within +`slightly_max_pct` %;
    contradicted where every small width saves, or costs beyond "slightly" (its whole interval
    above the bound); inconclusive otherwise."""
    small = [r for r in _amp_ratios(data, confidence) if r[0] < below]
    if not small:
        return NOT_TESTABLE, f"needs amp and fp32 runs at a width below {_w(below)}", 0
    bound = 1 + slightly_max_pct / 100
    evidence = (_describe(small, data) + f". 'Slightly': the whole interval within "
                f"+{slightly_max_pct:g} %." + _mixed_note(data))
    n = min(int(r["n"]) for _, r, _ in small)
    states = []
    for _, r, state in small:
        if state == "costs":
            state = ("costs slightly" if r["ratio_ci_high"] <= bound else
                     "costs more than slightly" if r["ratio_ci_low"] > bound else "costs, size unclear")
        states.append(state)
    if all(s == "untested" for s in states):
        return NOT_TESTABLE, evidence + " One pair per width: no interval.", n
    if "costs slightly" in states:
        return SUPPORTED, evidence, n
    if all(s in ("saves", "costs more than slightly") for s in states):
        return CONTRADICTED, evidence, n
    return INCONCLUSIVE, evidence, n


_AMP_T4 = ("amp/fp32 energy 0.968 at width 3, 1.002 at width 2, 1.022 at width 1 "
           "(one run per cell, energy = 70 W x time)")
#: Seed 000's claims (the width x precision study).
CLAIMS: tuple[Claim, ...] = (
    Claim("wider-is-more-accurate", "Wider networks reach a higher validation accuracy.",
          original_evidence="best val acc 69.96 / 77.59 / 81.87 % at widths 1 / 2 / 3 (fp32, "
                            "one run each)",
          test=lambda data, c: _wider_is_more_accurate(data, c.confidence)),
    Claim("energy-proportional-to-time", "Energy is proportional to training time.",
          original_evidence="energy was assumed as 70 W x time, so energy / time = 70 W in "
                            "every cell by construction",
          test=lambda data, c: _energy_proportional_to_time(data, c.confidence,
                                                            POWER_SPREAD_THRESHOLD_PCT)),
    Claim("amp-saves-only-at-largest-width",
          "Mixed precision reduces energy only at the largest width (3).",
          original_evidence=_AMP_T4,
          test=lambda data, c: _amp_saves_only_at_largest(data, c.confidence),
          about=(("width", (SEED_LARGEST_WIDTH,)),)),
    Claim("amp-can-cost-at-small-widths",
          "For small widths, mixed precision can slightly increase energy.",
          original_evidence=_AMP_T4,
          test=lambda data, c: _amp_can_cost_at_small_widths(data, c.confidence)),
)


def evaluate_claims(results: pd.DataFrame, confidence: float = 0.95,
                    claims: tuple[Claim, ...] = CLAIMS,
                    axes: tuple[str, ...] = ("width", "precision")) -> pd.DataFrame:
    """Our verdict on each claim from a results table (one row per run: its setting axes,
    seed, best_val_acc_pct, energy_j, energy_kind, total_s, status).

    Only finished runs (ok/diverged) count. Positive parts of a claim ('saves', 'is more
    accurate') need an interval that excludes no effect; negative parts ('only at width 3')
    need an equivalence test. N is the smallest number of runs or pairs behind any one
    comparison of the claim. A claim whose data is missing is "not testable here", never an
    error.

    Columns: id, claim, verdict, evidence, N, original_evidence, source, kind (claim or
    question).
    """
    missing = [c for c in RESULT_COLUMNS if c not in results]
    if missing:
        raise ConfigError(f"evaluate_claims: results lack column(s) {missing}; "
                          f"needs {list(RESULT_COLUMNS)}")
    data = finished_rows(results).copy()
    for column in ("best_val_acc_pct", "energy_j", "total_s"):
        data[column] = pd.to_numeric(data[column], errors="coerce")
    context = Context(confidence, tuple(axes))
    rows = []
    for claim in claims:
        lacking = missing_settings(claim, data)
        if claim.test is None:
            verdict, evidence, n = NOT_TESTABLE, "no test is defined for this claim", 0
        elif lacking:
            verdict, evidence, n = NOT_TESTABLE, lacking, 0
        else:
            try:
                verdict, evidence, n = claim.test(data, context)
            except ConfigError as error:  # e.g. no amp runs in this study
                verdict, evidence, n = NOT_TESTABLE, str(error), 0
        rows.append({"id": claim.id, "claim": claim.text, "verdict": verdict,
                     "evidence": evidence, "N": n, "original_evidence": claim.original_evidence,
                     "source": claim.source, "kind": "question" if claim.question else "claim"})
    return pd.DataFrame(rows)
