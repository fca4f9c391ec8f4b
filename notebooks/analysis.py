# %% [markdown]
# # Study analysis
#
# Reads the executed run notebooks of one study (never re-executing them) and writes the figures, the results table and this notebook's HTML to the report folder. Exactly the study's cells are reported, each with the status `energy-study list` gives (failed, diverged, stale, missing and running cells are listed, never dropped); other notebooks in the folder are named as not part of this study and never enter a figure, a table or the export.

# %% tags=["parameters"]
study_file = 'studies/quick.toml'
runs_dir = 'runs/quick'
report_dir = 'report/quick'
overrides = {}
repeats = None  # None: the study file's
max_cells = None  # None: load_study's default; the runner passes the limit its command got

# %%
import pandas as pd
from IPython.display import Markdown, display

from energy_lib.report import build
from energy_lib.report.output import shown
from energy_lib.study import load_study, locate, read_study

pd.set_option("display.max_colwidth", None)  # a verdict's evidence is never cut
pd.set_option("display.max_columns", None)  # nor a table's columns
pd.set_option("display.max_rows", 200)


def show(*items):
    """Print sentences, display tables and figures (a figure as the PNG the report saved)."""
    for item in items:
        if isinstance(item, str):
            print(item)
        else:
            display(shown(item))


# relative paths mean the project root, wherever the kernel started (JupyterLab: notebooks/)
study_path, root = locate(study_file)
study = load_study(study_path, repeats=repeats, max_cells=max_cells, **overrides)
runs, state = read_study(study, root / runs_dir)
report = build(study, runs, state, root / report_dir)
show(*report.notes)
display(Markdown(report.findings))

# %% [markdown]
# ## Results
#
# One row per cell: its status, best validation accuracy, time and headline energy. The energy is the best available figure per component -- measured where a meter could read the hardware, else modelled -- and `energy kind` says which (`mixed` when the components differ; the findings name each method). `results.csv` holds every column: the original study's Table 1 figures, each component's method, kind and scope, the original study's constant-power estimate (`constant_power_energy_kwh`, assumed board power × time) and its efficiency figure, and the emissions.

# %%
report.results_shown

# %% [markdown]
# ## Where the cells ran, and what else ran there
#
# Each record notes where it ran (the runner's `executor` record: serial or a Dask worker, the host, the GPU it was pinned to, its place in the study's running order). Cells that ran while other cells ran on the same host carry the flag `shared_cpu`; cells whose training other processes contended with (more of the machine's CPU than their `contention_threshold`) carry `contended`, and are left out of the summary, the paired comparisons, the claims and the Pareto front unless the study includes them. Timings that cannot both be right on a quiet machine are listed last.

# %%
show(report.shared_cpu, report.contended, report.consistency)

# %% [markdown]
# ## Training curves

# %%
show(*report.curves.values())

# %% [markdown]
# ## Energy
#
# Solid lines: the headline energy (each component measured or modelled, as the title says); dashed: the original study's constant-power estimate, for comparison. Every figure is derived from the records' energy tables (`runs.energy`).

# %%
show(*report.energy.values())

# %% [markdown]
# ## Repeats, intervals and comparisons
#
# Runs of one setting that differ only in their seed (`repeats` in the study file) are grouped: each headline figure is the mean with a 95 % Student-t interval and N (a setting with one run has no interval, and says so). The paired comparison divides, seed by seed, the runs of the two values of the compared axis (`compare`, by default `precision`), with the interval of the geometric-mean ratio and a verdict in words. Energy to target: the energy and time until validation accuracy first reaches the target (`target_acc_pct`, by default the lowest best accuracy of any cell), interpolated inside the epoch. The Pareto figure stars the settings that no other setting beats beyond the intervals on one axis while not being worse beyond them on the other (summary.csv's `pareto` column); a setting of one run has no interval and is never starred. Energy and time intervals are on the log scale (around the geometric mean, never below zero); accuracy intervals stay within [0, 100]. Failed runs are left out of every interval and counted.

# %%
show(report.repeats, report.summary)

# %%
show(report.paired, report.paired_accuracy, report.paired_figure)

# %%
show(report.targets, report.energy_to_target, report.pareto)

# %% [markdown]
# ## Energy by model depth
#
# Where the study varies the model: energy per run against the model, in order of its compute per image, one line per setting of the other axes (seed 002's energy-over-depth question).

# %%
show(report.energy_by_model)

# %% [markdown]
# ## The seed studies' claims, tested
#
# The claims of the seed study this grid reproduces (width x precision: the original study; ResNet shortcuts, pruning, learning rate, FFNN: seed 002; timm models x epochs x batch x dataset: seed 001), each with our verdict and the numbers and intervals behind it; the findings at the top say the same in sentences, with the rule behind each verdict. A claim of an effect needs a 95 % interval that excludes "no effect"; a claim of no effect needs an equivalence test (TOST within ±3 %). Factorial studies with one seed compare within blocks of the other axes. Where every energy component is modelled from time, the verdict is about training time, and says so.

# %%
show(report.claims)

# %% [markdown]
# ## Model experiments: confusion matrices and pruning
#
# The final confusion matrix of each finished cell, as shares of each true class's test images (the rule that picks the cells, when there are more than fit, is in the title). For pruned cells, each epoch's energy against the dense MACs per image the hardware executes (left) and the sparse MACs a zero-skipping engine would need (right): masking weights (unstructured) moves a run left only on the right, with its energy unchanged; removing channels (structured) lowers both compute figures, and the energy follows. The table gives the changes from before the first pruning step to the final state (`pruning.csv`).

# %%
show(report.confusion_rule, report.confusion, report.pruning_figure, report.pruning)

# %% [markdown]
# ## Beside the original study (paper preset only)
#
# The original Table 1 (CIFAR-10, Colab T4, energy = 70 W × time) next to ours, matched on width and precision: their assumed-power energy beside our constant-power figure (the same method), then our headline energy and its kind.

# %%
show(report.reference)

# %% [markdown]
# ## Estimates vs measurement
#
# Every record holds the predictions made before training (`ops-model`: operation counts priced on an idealised 45 nm chip; `layer-regression`: per-layer regressions fitted on this machine's calibration or on Getzner et al. 2023's Xeon) and after the first epoch(s) (`early-epochs`). Per cell: each prediction beside the headline energy (its kind said), and predicted / headline. Across the finished, uncontended cells, per estimator: Spearman's rank correlation over settings, each the mean of its repeats (does it order the candidates right?), the median absolute percentage error (is its scale right?), and the project's goal for it (layer regression: median error <= 25 % before training; early epochs: <= 10 % after one epoch) met or missed. The amp cells' layer-regression figures come from the calibration's amp-dtype layers where it has them, and say so where it has not. Written to `estimates.csv`, `estimates_summary.csv` and `estimates_vs_measurement.png`.

# %%
show(report.estimates_sentence, report.estimates_summary, report.estimates, report.estimates_figure)

# %%
print('files of this report:', ', '.join(sorted(report.paths)))
