"""The report package: `build` over the committed records of the quick study, the shared-CPU
flag from the runner's columns, and figures whose names are plain text."""

from __future__ import annotations

import inspect
import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from conftest import fake_executed_notebook  # noqa: E402
from energy_lib.records import FINISHED, Runs, note_runner, read_runs  # noqa: E402
from energy_lib.report import (build, estimates, models, results, shared_machine,  # noqa: E402
                               stat_figures)
from energy_lib.report.output import legend_name, plain_figure  # noqa: E402
from energy_lib.study import load_study, read_study  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRICKY = r"data_dir-$\undefinedcommand{x}$"  # mathtext would fail to parse this on draw


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


# ------------------------------------------------------------------------------------------
# build: the one entry point of the analysis notebook
# ------------------------------------------------------------------------------------------

def test_build_writes_and_returns_the_whole_report_of_the_committed_records(committed, tmp_path):
    study = load_study(committed / "studies" / "quick.toml")
    runs, state = read_study(study, committed / "runs" / "quick")
    report = build(study, runs, state, tmp_path)
    assert report.opening.startswith("study 'quick': 12 cells")
    assert list(report.results["cell"]) == sorted(c.name for c in study.cells)
    assert set(report.results["status"]) <= set(FINISHED)
    written = {p.name for p in tmp_path.iterdir()}
    assert set(report.paths) == written and {"results.csv", "claims.csv", "emissions_log.csv",
                                              "energy_to_target.png", "pareto.png"} <= written
    assert list(report.curves) == ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    methods = "cpu: tdp-model (modelled, process); ram: ram-model (modelled, process)"
    # the energy to target names kind and methods (it said "kind not recorded")
    axes = report.energy_to_target.axes[0]
    assert axes.get_ylabel().endswith("— modelled")
    assert axes.get_title().endswith(f"\nmodelled: {methods}")
    # claims.csv names the method (it never did)
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("id")
    assert f"Energy here is modelled ({methods})" in claims.loc["amp-can-cost-at-small-widths",
                                                                  "evidence"]
    # the findings open the report: every claim's verdict with its whole evidence, the energy
    # kind and scope, and what was left out; findings.md holds the same text
    assert report.findings.startswith("## Findings: quick")
    # where it was measured, on the second line: the CPU, its speed flags, torch, the fingerprint
    digests = set(runs.runs["provenance_fingerprint_digest"])
    assert len(digests) == 1
    assert re.fullmatch(r"Measured on: AMD EPYC \(family \d+ model \d+; [a-z0-9_, ]*avx512_bf16[a-z0-9_, ]*\), "
                        r"\d+ cores, torch [\d.]+ \(.+ build, CPU capability \w+\), "
                        rf"fingerprint {digests.pop()}\.", report.findings.splitlines()[2])
    assert (tmp_path / "findings.md").read_text().strip() == report.findings.strip()
    assert "12 of 12 cells finished." in report.findings
    # how far each estimator was from the headline, with its goal, in the opening too
    assert "### Estimates against the headline" in report.findings
    assert ("- early-epochs (the run's first epochs; development set: these settings were used to "
            "choose its design) ranks the 4 settings right") in report.findings
    assert "Energy figures are modelled (" in report.findings and "scope: this cell's share" \
        in report.findings
    for _, row in claims.iterrows():
        assert f"**{row['verdict']}**: {row['claim']} {row['evidence']}" in report.findings
    shown = [*report.curves.values(), *report.energy.values(), report.pareto, report.confusion]
    assert not any(plt.fignum_exists(fig.number) for fig in shown)  # closed: shown once


# ------------------------------------------------------------------------------------------
# where the cells ran: the shared-CPU flag (moved here from scaleout, which read notebooks)
# ------------------------------------------------------------------------------------------

def test_shared_cpu_cells_are_flagged_and_said(tmp_path):
    energy = [{"epoch": 0, "phase": "train", "component": "cpu", "method": "tdp-model",
               "kind": "modelled", "energy_j": 10.0, "duration_s": 1.0, "flag": "",
               "above_idle_j": None}]
    for cell, shared in (("a", True), ("b", False), ("c", None)):
        path = fake_executed_notebook(tmp_path / f"{cell}.ipynb", {
            "energy": energy, "summary": {"status": "ok", "best_val_acc_pct": 50.0}})
        if shared is not None:
            note_runner(path, {"executor": "dask" if shared else "serial", "shared_cpu": shared,
                               "cells_at_once_on_host": 2 if shared else 1})
    runs = read_runs(tmp_path)
    sentence = shared_machine.flag_shared_cpu(runs.runs)
    table = runs.runs.set_index("cell")
    assert "shared_cpu" in table.loc["a", "flags"]
    assert "shared_cpu" not in str(table.loc["b", "flags"])
    assert "shared_cpu" not in str(table.loc["c", "flags"])  # an older record: nothing claimed
    assert list(table["shared_cpu"]) == [True, False, None]
    assert sentence.startswith("shared_cpu: 1 cell(s) ran on a host where up to 2 cells ran at once (a)")
    runs = read_runs(tmp_path, cells={"b": "ok"})
    assert shared_machine.flag_shared_cpu(runs.runs).startswith("Each cell ran alone")
    assert shared_machine.flag_shared_cpu(pd.DataFrame()) == "no records"


# ------------------------------------------------------------------------------------------
# plain text: one mechanism (math parsing off while a figure is built)
# ------------------------------------------------------------------------------------------

def test_a_figure_built_plain_stays_plain_when_drawn_later():
    def figure(text):
        fig, ax = plt.subplots()
        ax.plot([1, 2], [1, 2], label=legend_name(text))
        ax.legend()
        ax.set_xticks([1, 2], [text, text])
        ax.annotate(text, (1, 1))
        return fig

    with pytest.raises(ValueError):  # what a label does to matplotlib unprotected
        figure(TRICKY).savefig(io.BytesIO())
    protected = plain_figure(figure)(TRICKY)
    protected.savefig(io.BytesIO())  # drawn outside the build: still plain
    drawn = texts(protected)
    assert TRICKY in drawn and not any("\\$" in t for t in drawn)  # as written, never escaped
    assert legend_name("_x") != "_x" and legend_name("a$b") == "a$b"
    plt.close("all")


def test_every_figure_function_of_the_report_is_built_plain():
    builders = [(module.__name__, name) for module in (results, stat_figures, models, estimates)
                for name, function in inspect.getmembers(module, inspect.isfunction)
                if name.startswith(("figure_", "plot_")) and function.__module__ == module.__name__]
    assert len(builders) >= 12
    unprotected = [f"{m}.{n}" for m, n in builders
                   if not getattr(getattr(__import__(m, fromlist=[n]), n), "plain_text", False)]
    assert not unprotected


def test_names_with_dollars_are_drawn_exactly_as_written():
    """Bug: a `$` in a cell's name was drawn as `\\$` (an escape on top of math parsing off)."""
    epochs = pd.DataFrame({"cell": [TRICKY, TRICKY], "epoch": [1, 2], "val_loss": [1.0, 0.5]})
    curves = results.figure_metric(epochs, "val_loss")
    runs = Runs(pd.DataFrame({"cell": [TRICKY], "status": ["ok"], "dataset": ["x"],
                              "final_val_acc_pct": [50.0]}),
                pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), [],
                confusion={TRICKY: [[1, 0], [0, 1]]})
    confusion, _ = models.figure_confusions(runs)
    targets = pd.DataFrame({"cell": [TRICKY], "reached": [True], "energy_to_target_j": [1.0],
                            "target_acc_pct": [50.0]})
    to_target = stat_figures.figure_energy_to_target(targets, runs.runs)
    for fig, shown in ((curves, f"{TRICKY} (N=1)"), (confusion, TRICKY + "\nfinal val acc 50.0 %"),
                       (to_target, TRICKY)):
        fig.savefig(io.BytesIO())  # mathtext would raise here
        assert shown in texts(fig)
    plt.close("all")


def test_curves_draw_settings_with_bands_not_runs():
    """Two settings x three seeds: two legend entries (N=3), a 95 % band each, six thin repeat
    lines, whole-number epoch ticks, the legend outside the axes."""
    rows = [{"cell": f"w{w}_s{s}", "epoch": e, "val_acc_pct": 50 + 10 * w + e + s}
            for w in (1, 2) for s in range(3) for e in (1, 2, 3, 4)]
    epochs = pd.DataFrame(rows)
    settings = results.setting_names(
        pd.DataFrame({"cell": sorted(epochs["cell"].unique()),
                      "width": [1.0] * 3 + [2.0] * 3, "seed": [0, 1, 2] * 2}), ["width"])
    assert settings["w1_s2"] == "width=1" and settings["w2_s0"] == "width=2"
    fig = results.figure_metric(epochs, "val_accuracy", settings)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["width=1 (N=3)", "width=2 (N=3)"]
    assert len(ax.collections) == 2  # one interval band per setting
    assert len(ax.lines) == 2 + 6  # a mean line per setting, a thin line per repeat
    assert all(float(t).is_integer() for t in ax.get_xticks())
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1  # outside the data
    plt.close(fig)


def test_many_settings_become_small_multiples_by_the_first_axis():
    """12 settings in one axes cannot be told apart (10 colours): one panel per model, each with
    its own legend; 4 settings stay one panel."""
    import itertools

    cells = [{"cell": f"m{m}-s{s}-p{p}", "model": m, "shortcut": s, "prune": p}
             for m, s, p in itertools.product(("r18", "r34"), (True, False), ("a", "b", "c"))]
    table = pd.DataFrame(cells)
    axes = ["model", "shortcut", "prune"]
    panels = results.panel_names(table, axes)
    assert set(panels.values()) == {"model=r18", "model=r34"} and len(panels) == 12
    assert results.panel_names(table[table["prune"] == "a"], axes) is None  # 4 settings
    epochs = pd.DataFrame([{"cell": c["cell"], "epoch": e, "val_acc_pct": 50.0 + e}
                           for c in cells for e in (1, 2)])
    fig = results.figure_metric(epochs, "val_accuracy", results.setting_names(table, axes),
                                panels)
    assert len(fig.axes) == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].endswith("model=r18") and titles[1] == "model=r34"
    assert all(len(ax.get_legend().get_texts()) == 6 for ax in fig.axes)
    plt.close(fig)


def test_findings_scope_a_precision_effect_that_ran_emulated():
    from energy_lib.report.findings import emulation_line

    runs = pd.DataFrame({"status": ["ok", "ok", "ok", "failed"],
                         "compute_dtype": ["float32", "bfloat16", "bfloat16", "bfloat16"],
                         "provenance_bf16_native": [False, False, True, False]})
    assert emulation_line(runs) == (
        "bfloat16 autocast ran emulated in 1 of 3 finished cells (the device that ran them has "
        "no native bf16): their time and energy effect is a software-path effect of that "
        "machine, not a property of 16-bit arithmetic.")
    assert emulation_line(runs.assign(provenance_bf16_native=True)) == ""
    assert emulation_line(runs.drop(columns="provenance_bf16_native")) == ""  # older records


def test_runs_are_never_paired_or_compared_across_machines():
    from energy_lib.report.findings import one_machine

    table = pd.DataFrame({"cell": list("abcde"), "status": ["ok"] * 4 + ["failed"],
                          "provenance_fingerprint_digest": ["aaa", "aaa", "bbb", None, "bbb"]})
    kept, note = one_machine(table)
    assert list(kept["cell"]) == ["a", "b"]
    assert note.startswith("Verdicts and paired comparisons use only the 2 finished cells "
                           "measured on machine aaa; 1 on bbb, 1 on not recorded are left out")
    same, none = one_machine(table[table["cell"].isin(["a", "b", "e"])])
    assert list(same["cell"]) == ["a", "b", "e"] and none == ""  # one machine: nothing left out


def test_findings_say_when_the_cpu_tdp_was_assumed_and_set_codecarbon_beside():
    from energy_lib.report.findings import tdp_line

    table = pd.DataFrame({"cell": ["a", "b", "c"], "status": ["ok", "ok", "failed"],
                          "provenance_cpu_model": ["AMD EPYC"] * 3,
                          "meter_cpu_tdp_w": [85.0, 85.0, 85.0],
                          "meter_cpu_tdp_origin": ["default"] * 3,
                          "codecarbon_run_energy_j": [1000.0, 1200.0, None],
                          "run_energy_j_as_codecarbon": [3000.0, 3400.0, None]})
    line = tdp_line(table)
    assert line.startswith("The CPU (AMD EPYC) is not in CodeCarbon's TDP table, so 85 W was "
                           "assumed for it in 2 of 2 finished cells: their absolute CPU joules are "
                           "arbitrary, while ratios between cells of this machine hold")
    assert line.endswith("CodeCarbon, run alongside in 2 of them, gave a median 1100 J for the "
                         "whole run where our models gave 3200 J for the same window and components.")
    assert tdp_line(table.assign(meter_cpu_tdp_origin="table")) == ""
    assert tdp_line(table.drop(columns=["meter_cpu_tdp_origin"])) == ""  # older records


def test_runs_of_different_invocations_are_not_paired_unless_the_study_says_so():
    from energy_lib.report.findings import one_invocation

    table = pd.DataFrame({"cell": list("abcd"), "status": ["ok"] * 4,
                          "invocation": ["h-1-20261207T000000"] * 3 + ["h-2-20261207T090000"]})
    kept, note = one_invocation(table, include=False)
    assert list(kept["cell"]) == ["a", "b", "c"]
    assert note.startswith("The finished cells come from 2 runner invocations: verdicts and "
                           "paired comparisons use only the 3 cells of invocation "
                           "h-1-20261207T000000, never a pair across invocations")
    everything, said = one_invocation(table, include=True)
    assert len(everything) == 4 and "include_across_invocations" in said
    assert one_invocation(table.iloc[:3], include=False)[1] == ""


def test_a_column_every_record_left_empty_reads_not_recorded_without_a_pandas_warning():
    """A column whose every value is missing comes back from the records as float NaN; filling
    it with text warns in pandas 3 and raises in pandas 4 (Pandas4Warning)."""
    import warnings

    from energy_lib.report.findings import one_invocation, one_machine

    table = pd.DataFrame({"cell": ["a", "b"], "status": ["ok", "ok"],
                          "provenance_fingerprint_digest": [float("nan")] * 2,
                          "invocation": [float("nan")] * 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert one_machine(table)[1] == "" and one_invocation(table, include=False)[1] == ""
    assert len(one_machine(table)[0]) == 2
