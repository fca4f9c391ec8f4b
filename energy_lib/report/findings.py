"""The findings a report opens with: what the study found, in full sentences, before any table.

A reader should not have to reach the last table to learn the verdicts, nor read a verdict
without its numbers. So the findings come first (Markdown: the analysis notebook and its HTML
show it as text, never as a truncated table cell; `findings.md` keeps it beside the figures):
what was run and what was left out, what the energy figures are (kind, methods, scope), every
claim's verdict with its evidence and N, every paired comparison, and the warnings about the
target accuracy. Everything here is worded from tables other modules computed; nothing is
computed twice.
"""

from __future__ import annotations

import pandas as pd

from ..energy.derive import energy_label
from ..records import FINISHED, finished_rows
from .claims import VERDICT_RULES


#: How a compared column reads in a sentence.
VALUE_NAMES = {"energy_j": "energy", "total_s": "time", "best_val_acc_pct": "best accuracy"}


def _cells_line(runs: pd.DataFrame, state) -> str:
    counts = pd.Series([str(s) for s in state.cells.values()]).value_counts()
    finished = int(sum(counts.get(str(s), 0) for s in FINISHED))
    other = ", ".join(f"{n} {status}" for status, n in counts.items()
                      if status not in {str(s) for s in FINISHED})
    line = f"{finished} of {len(state.cells)} cells finished"
    return line + (f"; not in any figure or verdict: {other}" if other else "") + "."


def machines_line(runs: pd.DataFrame) -> str:
    """Where the finished records were measured: each machine's fingerprint line
    (provenance.describe_machine) with its cell count; a record made before fingerprints were
    recorded is named by what it has (CPU name, torch version)."""
    done = finished_rows(runs)
    if done.empty:
        return ""
    fallback = [c for c in ("provenance_cpu_model", "provenance_device_name",
                            "provenance_torch_version") if c in done]
    named = (done[fallback].astype("string").apply(lambda row: ", ".join(row.dropna()), axis=1)
             if fallback else pd.Series("", index=done.index))
    older = named.replace("", "not recorded") + " (no fingerprint: recorded before energy_lib recorded one)"
    described = done.get("provenance_machine", pd.Series(pd.NA, index=done.index)).astype(
        object).fillna(older)
    counts = described.value_counts()
    if len(counts) == 1:
        return f"Measured on: {counts.index[0]}."
    listed = "; ".join(f"{machine} ({n} cells)" for machine, n in counts.items())
    return (f"Measured on {len(counts)} different machines: {listed}. Figures from different "
            "machines are not comparable as they stand.")


def _groups_of_finished(table: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """(each row's value of `column`, "not recorded" where missing; the finished rows' counts
    per value, most first): how many finished cells each machine or invocation holds."""
    # as objects first: a column every record left empty is float NaN, which takes no text
    values = table.get(column, pd.Series(pd.NA, index=table.index)).astype(object).fillna(
        "not recorded")
    return values, values[finished_rows(table).index].value_counts()


def one_machine(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(the rows verdicts and paired comparisons may use, a sentence): where the finished
    records come from more than one machine fingerprint (records without one count as one
    machine of their own), only the machine with the most finished cells is compared; the
    others' rows stay in every table and figure, but never in a pair or a verdict."""
    digest, counts = _groups_of_finished(table, "provenance_fingerprint_digest")
    if len(counts) <= 1:
        return table, ""
    kept = counts.index[0]
    return table[digest == kept], (
        f"Verdicts and paired comparisons use only the {counts.iloc[0]} finished cells measured "
        f"on machine {kept}; " + ", ".join(f"{n} on {m}" for m, n in counts.iloc[1:].items())
        + " are left out of them: runs are never paired or compared across machines.")


def one_invocation(table: pd.DataFrame, include: bool) -> tuple[pd.DataFrame, str]:
    """(the rows verdicts and paired comparisons may use, a sentence): where the finished
    records come from more than one runner invocation (one `energy-study run`: records made
    hours apart at other commits, or one arm rerun alone), only the invocation with the most
    finished cells is compared, unless the study says `include_across_invocations = true`.
    Records made before invocations were recorded count as one invocation of their own."""
    invocation, counts = _groups_of_finished(table, "invocation")
    if len(counts) <= 1:
        return table, ""
    if include:
        return table, (f"The finished cells come from {len(counts)} runner invocations, and the "
                       "study includes comparisons across them (include_across_invocations): a "
                       "pair's arms may have been measured at different times and commits.")
    kept = counts.index[0]
    return table[invocation == kept], (
        f"The finished cells come from {len(counts)} runner invocations: verdicts and paired "
        f"comparisons use only the {counts.iloc[0]} cells of invocation {kept}, never a pair "
        "across invocations (`energy-study run STUDY --force` reruns every arm in one; "
        "include_across_invocations = true in [study] keeps them all).")


def emulation_line(runs: pd.DataFrame) -> str:
    """Where a finished cell computed in bfloat16 on a device without native bf16 (the record's
    provenance says so), the precision effect is scoped to this machine's software path."""
    done = finished_rows(runs)
    if done.empty or not {"compute_dtype", "provenance_bf16_native"} <= set(done.columns):
        return ""
    emulated = done[done["compute_dtype"].eq("bfloat16") & done["provenance_bf16_native"].eq(False)]
    if emulated.empty:
        return ""
    return (f"bfloat16 autocast ran emulated in {len(emulated)} of {len(done)} finished cells (the "
            "device that ran them has no native bf16): their time and energy effect is a "
            "software-path effect of that machine, not a property of 16-bit arithmetic.")


def tdp_line(runs: pd.DataFrame) -> str:
    """Where the CPU figure came from a TDP the table does not know (power_models.TDP_ORIGINS
    "default"): which watts were assumed, that absolute CPU joules are then arbitrary while
    ratios between this machine's cells hold, and CodeCarbon's figure beside ours where it ran."""
    done = finished_rows(runs)
    if done.empty or "meter_cpu_tdp_origin" not in done:
        return ""
    guessed = done[done["meter_cpu_tdp_origin"].eq("default")]
    if guessed.empty:
        return ""
    watts = ", ".join(f"{w:g} W" for w in sorted(guessed["meter_cpu_tdp_w"].dropna().unique()))
    cpu = ", ".join(sorted(guessed.get("provenance_cpu_model", pd.Series(["this CPU"])).dropna()
                           .astype(str).unique())) or "this CPU"
    line = (f"The CPU ({cpu}) is not in CodeCarbon's TDP table, so {watts} was assumed for it "
            f"in {len(guessed)} of {len(done)} finished cells: their absolute CPU joules are "
            "arbitrary, while ratios between cells of this machine hold (set `cpu_tdp_w` in the "
            "study's [fixed] to the CPU's real TDP).")
    if {"codecarbon_run_energy_j", "run_energy_j_as_codecarbon"} <= set(guessed.columns):
        both = guessed.dropna(subset=["codecarbon_run_energy_j", "run_energy_j_as_codecarbon"])
        if len(both):
            line += (f" CodeCarbon, run alongside in {len(both)} of them, gave a median "
                     f"{both['codecarbon_run_energy_j'].median():.0f} J for the whole run where "
                     f"our models gave {both['run_energy_j_as_codecarbon'].median():.0f} J for "
                     "the same window and components.")
    return line


def _energy_line(runs: pd.DataFrame) -> str:
    done = finished_rows(runs)
    if done.empty:
        return "No finished run: no energy figure yet."
    label = energy_label(done)
    scopes = sorted(done["energy_scope"].dropna().astype(str).unique()) if "energy_scope" in done else []
    scope = {"process": "this cell's share of each machine-level figure",
             "machine": "the whole machine's figures"}
    said = "; ".join(scope.get(s, s) for s in scopes) or "not recorded"
    return f"Energy figures are {label.kind} ({label.methods}); scope: {said}."


def _claims_lines(claims) -> list[str]:
    return [f"- **{row['verdict']}**: {row['claim']} {row['evidence']} (N = {row['N']})"
            for _, row in claims.iterrows()]


def _claims_sections(claims, runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The claims, then the questions (a seed that stated no answer), each seed's group opened
    by how far this twin is from it (claim_registries.twin_distance); settings near chance
    named after them."""
    from .claim_registries import near_chance, twin_distance
    from .repeats import NEAR_CHANCE_PP

    if isinstance(claims, str) or claims is None or claims.empty:
        return ["### Claims tested", "", claims, ""] if isinstance(claims, str) and claims else []
    kinds = claims["kind"] if "kind" in claims else pd.Series("claim", index=claims.index)
    out = []
    for kind, title in (("claim", "### Claims tested"),
                        ("question", "### Questions asked (the seed states no answer; the "
                                     "verdict is about the answer a reader would expect)")):
        chosen = claims[kinds == kind]
        if chosen.empty:
            continue
        out += [title, ""]
        for source, group in chosen.groupby("source", sort=False) if "source" in chosen \
                else [("", chosen)]:
            distance = twin_distance(source, runs)
            out += ([distance, ""] if distance else []) + _claims_lines(group) + [""]
    chance = near_chance(runs, axes, NEAR_CHANCE_PP)
    return out + ([chance, ""] if chance else [])


def _paired_lines(paired) -> list[str]:
    if isinstance(paired, str) or paired is None or paired.empty:
        return [f"- {paired}"] if isinstance(paired, str) and paired else []
    context = [c for c in paired.columns if c not in {
        "axis", "a", "b", "value", "ratio", "ratio_ci_low", "ratio_ci_high", "n", "unpaired",
        "pair_on", "confidence", "method", "verdict"}]
    lines = []
    for _, row in paired.iterrows():
        where = ", ".join(f"{c} {row[c]:g}" if isinstance(row[c], float) else f"{c} {row[c]}"
                          for c in context if pd.notna(row[c]))
        value = VALUE_NAMES.get(row["value"], row["value"])
        lines.append(f"- {where + ': ' if where else ''}{row['b']} / {row['a']}, "
                     f"{value}: {row['verdict']} (N = {int(row['n'])} pairs)")
    return lines


def _estimates_lines(summary) -> list[str]:
    if summary is None or summary.empty:
        return []
    return [f"- {sentence}" for sentence in summary["in_words"]]


def findings(*, study, runs: pd.DataFrame, state, contended: str, repeats_line: str,
             claims, paired, estimates=None, gpu: list[str] = ()) -> str:
    """The report's opening, as Markdown. `gpu`: what the measured GPU totals are made of
    (report.gpu_energy.gpu_lines)."""
    machines = machines_line(runs)
    emulation = emulation_line(runs)
    out = [f"## Findings: {study.name}", "", *([machines, ""] if machines else []),
           *([emulation, ""] if emulation else []),
           study.description or "", "",
           _cells_line(runs, state) + " " + contended, "", _energy_line(runs), "",
           *([tdp, ""] if (tdp := tdp_line(runs)) else []),
           *[part for line in gpu for part in (line, "")],
           repeats_line[:1].upper() + repeats_line[1:] + ".", ""]
    claim_lines = _claims_sections(claims, runs, study.setting_axes)
    if claim_lines:
        out += [*claim_lines,
                "Verdicts: " + "; ".join(f"*{v}*: {rule}" for v, rule in VERDICT_RULES.items())
                + ".", ""]
    paired_lines = _paired_lines(paired)
    if paired_lines:
        out += ["### Paired comparisons (by seed, 95 % intervals)", "", *paired_lines, ""]
    estimate_lines = _estimates_lines(estimates)
    if estimate_lines:
        out += ["### Estimates against the headline (finished, uncontended cells)", "",
                *estimate_lines, ""]
    return "\n".join(out)
