# %% [markdown]
# # Study analysis
#
# Reads the executed run notebooks of one study (never re-executing them) and writes the figures, the results table and this notebook's HTML to the report folder. Exactly the study's cells are reported, each with the status `energy-study list` gives (failed, diverged, stale, missing and running cells are listed, never dropped); other notebooks in the folder are named as not part of this study and never enter a figure, a table or the export.

# %% tags=["parameters"]
study_file = 'studies/quick.toml'
runs_dir = 'runs/quick'
report_dir = 'report/quick'
overrides = {}

# %%
from IPython.display import display

from energy_lib import report
from energy_lib.export import write_export
from energy_lib.plaintext import plain_text_figures
from energy_lib.study import load_study, read_study

study = load_study(study_file, **overrides)
runs, state = read_study(study, runs_dir)
for problem in runs.problems:
    print('skipped:', problem)
for path in state.foreign:
    print('not part of this study:', path)
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

# %%
import matplotlib.pyplot as plt

plt.close('all')
{name: str(path) for name, path in written['paths'].items()}
