"""The report of a study: `build(study, runs, state, out_dir)` writes every table and figure
into `out_dir` and returns them, with the sentences that go with them, as one `Report` in the
order the analysis notebook shows them. The notebook only displays what `build` returns.

Modules, one concern each: `results` (results table, per-cell figures, shared-CPU flag, the
original study beside ours), `stats` (intervals, paired ratios, targets, Pareto), `repeats` and
`stat_figures` (settings over repeats), `claims`, `models` (confusion matrices, pruning),
`estimates`, `export` (experiment-log CSV), `output` (writers, plain-text figures, HTML). None
of them opens a record: everything comes from `records.read_runs`' tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from ..records import finished_rows
from . import repeats
from .claim_registries import registry_note
from .estimates import write_estimates
from .export import write_export
from .findings import findings as write_findings, one_invocation, one_machine
from .gpu_energy import gpu_lines
from .models import class_names, plot_confusion, write_model_report
from .output import export_html
from .results import (compare_with_reference, plot_run, plot_timeline, results_table,
                      setting_names, shown_results, write_report)
from .shared_machine import consistency, consistency_sentence, flag_contended, flag_shared_cpu

CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
ENERGY_FIGURES = ("cumulative_energy", "energy_per_epoch", "accuracy_vs_energy",
                  "power_assumed_vs_metered")


@dataclass
class Report:
    """What the analysis shows, field by field in its order. A table that cannot exist for this
    study (no compared axis, not a width x precision study, not the paper study) is the sentence
    that says so instead."""

    notes: list[str]  # files skipped as unreadable; notebooks that are not this study's
    opening: str  # the study, its cells and description
    findings: str  # Markdown: the verdicts and comparisons in sentences, first (findings.md)
    results: pd.DataFrame  # results.csv: one row per cell, with status
    results_shown: pd.DataFrame  # its columns a reader compares, nothing cut at 1280 px
    shared_cpu: str  # which cells shared a host's CPU (flagged in results' `flags`)
    contended: str  # which cells other load contended with, and whether they were left out
    consistency: pd.DataFrame | str  # timings that cannot both be right, or the sentence
    curves: dict[str, Any]  # training curves, CURVES
    energy: dict[str, Any]  # ENERGY_FIGURES
    repeats: str  # repeats per setting and the target accuracy
    summary: pd.DataFrame  # mean ± interval per setting, as text
    paired: pd.DataFrame | str
    paired_accuracy: pd.DataFrame
    paired_figure: Any
    targets: pd.DataFrame  # energy to the target accuracy per run
    energy_to_target: Any
    pareto: Any
    energy_by_model: Any  # energy against model depth (compute), or why there is none
    claims: pd.DataFrame | str
    confusion_rule: str
    confusion: Any
    pruning_figure: Any
    pruning: pd.DataFrame
    reference: pd.DataFrame | str
    estimates_sentence: str
    estimates_summary: pd.DataFrame
    estimates: pd.DataFrame
    estimates_figure: Any
    paths: dict[str, Path] = field(default_factory=dict)  # every file written, by file name


def _close(figures: dict) -> None:
    """Close figures once saved: still displayable, never shown twice by a notebook's inline
    backend (which shows every open figure at the end of a cell)."""
    for figure in figures.values():
        plt.close(figure)


def build(study, runs, state, out_dir: str | Path) -> Report:
    """Write the study's report into `out_dir` from its records' tables (`runs`, `state` from
    `study.read_study`) and return it."""
    out_dir = Path(out_dir)
    notes = [f"skipped: {problem}" for problem in runs.problems]
    notes += [f"not part of this study: {path}" for path in state.foreign]
    shared_cpu = flag_shared_cpu(runs.runs)  # before the results table: its `flags` say it
    for_verdicts, contended_note = flag_contended(runs.runs, study.include_contended)
    for_verdicts, machines_note = one_machine(for_verdicts)
    for_verdicts, invocations_note = one_invocation(for_verdicts, study.include_across_invocations)
    contended_note = " ".join(n for n in (contended_note, machines_note, invocations_note) if n)
    findings = consistency(runs.runs, study.setting_axes)
    written = write_report(runs, out_dir, study.setting_axes)
    statistics = repeats.write_study_statistics(for_verdicts, runs.epochs, study, out_dir)
    models = write_model_report(runs, out_dir)
    left_out = frozenset(set(runs.runs.get("cell", [])) - set(for_verdicts.get("cell", [])))
    estimates = write_estimates(runs, out_dir, setting_names(runs.runs, study.setting_axes),
                                left_out, study.name)
    export = write_export(runs, study.name, out_dir / "emissions_log.csv")
    paths = {path.name: path for part in (written, statistics, models, estimates)
             for path in part["paths"].values()} | {export.name: export}
    for figures in (written["figures"], statistics["figures"], models["figures"],
                    {"estimates": estimates["figure"]}):
        _close(figures)
    paired = statistics["paired"]
    repeats_line = (repeats.repeats_text(study, statistics["summary"]) + "; " + (
        f"target accuracy: {statistics['target_acc_pct']:g} %"
        if statistics["target_acc_pct"] is not None else
        "no target accuracy yet: no run has finished with an accuracy") + "".join(
        f"; WARNING: {note}" for note in
        [repeats.target_note(statistics["target_acc_pct"], runs.runs)] if note))
    claims = (statistics["claims"][["claim", "verdict", "evidence", "N", "source", "kind"]]
              if not statistics["claims"].empty else
              registry_note(study.axes))
    paired_shown = (paired[[c for c in paired if c not in ("method", "confidence")]]
                    if not paired.empty else statistics["paired_why_not"] or
                    "no paired comparison: no setting has finished runs of both values")
    opening = write_findings(study=study, runs=runs.runs, state=state, contended=contended_note,
                             repeats_line=repeats_line, claims=claims, paired=paired_shown,
                             estimates=estimates["summary"],
                             gpu=gpu_lines(runs.energy[runs.energy["cell"].isin(
                                 finished_rows(runs.runs)["cell"])], runs.runs))
    findings_path = out_dir / "findings.md"
    findings_path.write_text(opening + "\n", encoding="utf-8")
    paths[findings_path.name] = findings_path
    return Report(
        notes=notes,
        opening=f"study {study.name!r}: {len(study.cells)} cells; {study.description}",
        findings=opening,
        results=written["table"],
        results_shown=shown_results(written["table"]),
        shared_cpu=shared_cpu,
        contended=contended_note,
        consistency=findings if not findings.empty else consistency_sentence(findings),
        curves={name: written["figures"][name] for name in CURVES},
        energy={name: written["figures"][name] for name in ENERGY_FIGURES},
        repeats=repeats_line,
        summary=repeats.readable_summary(statistics["summary"], study),
        paired=paired_shown,
        paired_accuracy=statistics["paired_accuracy"],
        paired_figure=statistics["figures"]["paired"],
        targets=statistics["targets"],
        energy_to_target=statistics["figures"]["energy_to_target"],
        pareto=statistics["figures"]["pareto"],
        energy_by_model=statistics["figures"].get(
            "energy_by_model", "one model only: no energy-by-depth figure"),
        claims=claims,
        confusion_rule=f"confusion matrices: {models['confusion_rule']}",
        confusion=models["figures"]["confusion_matrices"],
        pruning_figure=models["figures"]["pruning_energy_vs_macs"],
        pruning=models["pruning_table"],
        reference=(compare_with_reference(written["table"]) if study.name.startswith("paper")
                   else "not the paper study: no reference comparison"),
        estimates_sentence=estimates["sentence"],
        estimates_summary=estimates["summary"],
        estimates=estimates["table"],
        estimates_figure=estimates["figure"],
        paths=paths,
    )


__all__ = ["Report", "build", "class_names", "compare_with_reference", "export_html",
           "plot_confusion", "plot_run", "plot_timeline", "results_table", "write_report"]
