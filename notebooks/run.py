# %% [markdown]
# # Lab record: one cell of a training-energy study
#
# This notebook trains one configuration of a width × precision study and keeps everything needed to read it later: the validated configuration, the per-epoch curves, the energy figures and how each was obtained, a power timeline, and the provenance (commit, library versions, device).
#
# **Energy.** Each epoch's train and evaluation phases are separate windows, opened and closed after synchronising the device; a `run` window spans all epochs and an `idle` window before the first epoch gives the idle baseline. Each component is *measured* through Zeus where the hardware allows (GPU: NVML energy counter; CPU and DRAM: RAPL) and *modelled* where not (CPU: TDP × utilisation; RAM: constant power per GB). The original study's estimate, an *assumed* constant board power (`assumed_power_w`, 70 W for the T4) × wall time, is always computed beside them.
#
# Every figure is one row of the run's **energy table** (window, component, `method`, `kind`, joules, seconds, flag, joules above idle). That table is what this record stores; every total below (per epoch, per run, kWh, mean power, efficiency, carbon) is derived from it by `energy_lib.energy.derive`. The values stored (`energy_lib.records`, which owns the record's schema) are what the analysis reads back.

# %% tags=["parameters"]
# Parameters (papermill replaces these; energy_lib.lab.PARAMETERS).
# config: the RunConfig fields to set, e.g. {'width': 2, 'precision': 'amp'};
# none set = RunConfig's defaults, the original T4 study's fp32 width-1 cell.
# progress, record_path: this execution's, set by `energy-study run`.
config = {}
progress = 'auto'
record_path = ''

# %% [markdown]
# ## Configuration
#
# Validated before any data is loaded; an unknown field, a bad value, or a setting passed beside `config` instead of inside it stops here with a one-line error.

# %%
import energy_lib.lab as lab

run_config = lab.config_from(config, globals())
lab.config_table(run_config)

# %% [markdown]
# ## Training

# %%
result = lab.train(run_config, record_path=record_path, progress=progress)

# %% [markdown]
# ## Predicted before training
#
# Before the first epoch (and before any meter started), `train` priced the whole run -- every training step of every epoch plus every evaluation forward pass -- with two structural estimators, each a row of the energy table with phase `predicted` and kind `estimated`. **ops-model**: operation counts priced with Horowitz's 45 nm energies (ISSCC 2014) -- an idealised chip, not this machine. **layer-regression**: per-layer regressions summed over the model, fitted on this machine's calibration (`calibration/<machine>.csv`, from `energy-study calibrate`) when one exists, else on Getzner et al. (2023)'s measurements of an Intel Xeon Gold 5120. `stands_for` names the data and hardware; `layers_left_out` the layers an estimator does not know.

# %%
print(lab.predictions_text(result))
lab.predictions_before(result)

# %% [markdown]
# ## What was measured, what was modelled

# %%
print(lab.meters_text(result))

# %% [markdown]
# ## Curves and energy per epoch

# %%
from energy_lib.report import plot_run, plot_timeline

epochs = lab.record_result(result)
plot_run(epochs);

# %%
epochs

# %% [markdown]
# ## Confusion matrix
#
# The last evaluation's predictions: rows are the true classes, columns the predicted ones, each row as shares of that class's test images (the title gives the total). The counts are stored in the record as `confusion`.

# %%
from energy_lib.report import class_names, plot_confusion

plot_confusion(result.confusion, class_names(run_config.dataset, len(result.confusion)));

# %% [markdown]
# ## The energy table
#
# One row per window (idle; each epoch's train and eval; the whole run), component and method. `above_idle_j` subtracts the idle baseline's power × the window's time where that reading has one.

# %%
lab.energy_view(result)

# %% [markdown]
# ## Whose share of the machine
#
# CPU and RAM meters see the whole machine (a TDP model of its utilisation, RAPL's package and DRAM counters), so each of their rows has `scope` = `machine`, and beside it a `process` row: the cell's share -- for the CPU, the CPU time of the process tree running this notebook (kernel, threads, data-loader workers) over the machine's busy CPU time; for RAM, the tree's resident memory over the machine's used memory. Per window below: those times, the hypervisor's steal, the share other processes took, and runnable threads per core. When others' share plus steal, time-weighted over the training windows, exceeds `contention_threshold`, the summary says `contended`: the run's time, and any machine-level figure, are not its own. GPU counters read one device; a GPU row's flag names other processes NVML saw on it.

# %%
lab.windows_view(result)

# %% [markdown]
# ## Power timeline

# %%
plot_timeline(result.timeline, result.timeline_marks, lab.idle_power_w(result));

# %% [markdown]
# ## Summary
#
# `energy_j` / `energy_kwh`: the best available figure per component over the train and eval windows -- measured over modelled, this process's share over the whole machine's -- with `energy_kind` (measured, modelled, or mixed), `energy_scope` (process, machine, or mixed), `energy_methods`, and the whole machine's figure beside it as `machine_energy_j`. `contended`, `others_cpu_share`, `steal_share`, `runnable_per_core`: how much other load shared the machine while this run trained. `constant_power_energy_*`: the original study's estimate. `acc_pct_per_wh` and `constant_power_acc_pct_per_wh`: best validation accuracy (%) per Wh of each. `emissions_kg` = headline energy × carbon intensity × PUE.

# %%
lab.summary_view(result)

# %% [markdown]
# ## Predictions beside the measurement
#
# Each prediction beside the run's headline energy (train + eval windows; `headline_kind` says whether it was measured or modelled), with `ratio` = predicted / headline. The structural estimators stand for other hardware, so their ratio says how far that hardware's joules are from this run's; `early-epochs` extrapolates this run's own headline from its first epoch(s) (`after_epoch`).

# %%
lab.predictions_beside(result)
