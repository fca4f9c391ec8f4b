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

# %%
from IPython.display import display

from energy_lib import report
from energy_lib.export import write_export
from energy_lib.plaintext import plain_text_figures
from energy_lib.scaleout import flag_shared_cpu
from energy_lib.study import load_study, read_study

study = load_study(study_file, repeats=repeats, **overrides)
runs, state = read_study(study, runs_dir)
for problem in runs.problems:
    print('skipped:', problem)
for path in state.foreign:
    print('not part of this study:', path)
shared_cpu_note = flag_shared_cpu(runs)  # cells whose host ran other cells at once: flagged
with plain_text_figures():  # names from the study file are text, never math
    written = report.write_report(runs, report_dir, [c.name for c in study.cells])
write_export(runs, study.name, f'{report_dir}/emissions_log.csv')
print(f'study {study.name!r}: {len(study.cells)} cells; {study.description}')

# %% [markdown]
# ## Results
#
# The original study's Table 1 columns. `energy_kwh` is the best available figure per component -- measured where a meter could read the hardware, else modelled -- and `energy_kind` says which (`mixed` when the components differ; `energy_methods` names each). `constant_power_energy_kwh` is the original study's estimate (assumed board power × time), and `constant_power_acc_pct_per_wh` its efficiency figure; `acc_pct_per_wh` is best accuracy per Wh of the headline energy.

# %%
written['table']

# %% [markdown]
# ## Where the cells ran
#
# Each record notes where it ran (the runner's `executor` record: serial or a Dask worker, the host, the GPU it was pinned to). Cells that ran while other cells ran on the same host (`--executor dask` with several workers on one machine) carry the flag `shared_cpu`, also in `results.csv`'s `flags`: their CPU and RAM figures are not theirs alone.

# %%
print(shared_cpu_note)

# %% [markdown]
# ## Training curves

# %%
for name in ['train_loss', 'train_accuracy', 'val_loss', 'val_accuracy']:
    display(written['figures'][name])

# %% [markdown]
# ## Energy
#
# Solid lines: the headline energy (each component measured or modelled, as the title says); dashed: the original study's constant-power estimate, for comparison. Every figure is derived from the records' energy tables (`runs.energy`).

# %%
for name in ['cumulative_energy', 'energy_per_epoch', 'accuracy_vs_energy',
             'power_assumed_vs_metered']:
    display(written['figures'][name])

# %% [markdown]
# ## Repeats, intervals and comparisons
#
# Runs of one setting that differ only in their seed (`repeats` in the study file) are grouped: each headline figure is the mean with a 95 % Student-t interval and N (a setting with one run has no interval, and says so). The paired comparison divides, seed by seed, the runs of the two values of the compared axis (`compare`, by default `precision`), with the interval of the geometric-mean ratio and a verdict in words. Energy to target: the energy and time until validation accuracy first reaches the target (`target_acc_pct`, by default the lowest best accuracy of any cell), interpolated inside the epoch. The Pareto figure marks the settings no other setting beats on both accuracy and energy. Failed runs are left out of every interval and counted.

# %%
from energy_lib import report_repeats

with plain_text_figures():
    statistics = report_repeats.write_study_statistics(runs.runs, runs.epochs, study, report_dir)
print(f"repeats per setting: {study.repeats}; target accuracy: {statistics['target_acc_pct']}")
display(report_repeats.readable_summary(statistics['summary'], study))

# %%
if not statistics['paired'].empty:
    display(statistics['paired'][[c for c in statistics['paired'] if c not in ('method', 'confidence')]])
else:
    print('no paired comparison: the study has no two-valued compare axis')
display(statistics['paired_accuracy'])
display(statistics['figures']['paired'])

# %%
display(statistics['targets'])
display(statistics['figures']['energy_to_target'])
display(statistics['figures']['pareto'])

# %% [markdown]
# ## The original study's claims, tested
#
# Each conclusion of the original width x precision study, with our verdict and the numbers and intervals behind it (width x precision studies only). A verdict needs an interval that excludes "no effect"; with modelled energy, claims about energy are not testable.

# %%
if not statistics['claims'].empty:
    display(statistics['claims'][['claim', 'verdict', 'evidence', 'N']])
else:
    print('not a width x precision study: no claims to test')

# %% [markdown]
# ## Model experiments: confusion matrices and pruning
#
# The final confusion matrix of each finished cell, as shares of each true class's test images (the rule that picks the cells, when there are more than fit, is in the title). For pruned cells, each epoch's energy against the dense MACs per image the hardware executes (left) and the sparse MACs a zero-skipping engine would need (right): masking weights (unstructured) moves a run left only on the right, with its energy unchanged; removing channels (structured) lowers both compute figures, and the energy follows. The table gives the changes from before the first pruning step to the final state (`pruning.csv`).

# %%
from energy_lib import report_models

with plain_text_figures():
    models = report_models.write_model_report(runs, report_dir)
print('confusion matrices:', models['confusion_rule'])
display(models['figures']['confusion_matrices'])
display(models['figures']['pruning_energy_vs_macs'])
models['pruning_table']

# %% [markdown]
# ## Beside the original study (paper preset only)
#
# The original Table 1 (CIFAR-10, Colab T4, energy = 70 W × time) next to ours, matched on width and precision: their assumed-power energy beside our constant-power figure (the same method), then our headline energy and its kind.

# %%
if study.name.startswith('paper'):
    display(report.compare_with_reference(written['table']))
else:
    print('not the paper study: no reference comparison')

# %% [markdown]
# ## Estimates vs measurement
#
# Every record holds the predictions made before training (`ops-model`: operation counts priced on an idealised 45 nm chip; `layer-regression`: per-layer regressions fitted on this machine's calibration or on Getzner et al. 2023's Xeon) and after the first epoch(s) (`early-epochs`). Per cell: each prediction beside the headline energy (its kind said), and predicted / headline. Across the finished cells, per estimator: Spearman's rank correlation (does it order the cells right?) and the mean absolute percentage error (is its scale right?). Written to `estimates.csv` and `estimates_vs_measurement.png`.

# %%
from energy_lib.report_estimates import write_estimates

estimates = write_estimates(runs, report_dir)
written['paths'].update(estimates['paths'])
print(estimates['sentence'])
display(estimates['summary'])
display(estimates['table'])
display(estimates['figure'])

# %%
import matplotlib.pyplot as plt

plt.close('all')
{name: str(path) for name, path in written['paths'].items()}
