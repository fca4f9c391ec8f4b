# %% [markdown]
# # Lab record: one cell of a training-energy study
#
# This notebook trains one configuration of a width × precision study and keeps everything needed to read it later: the validated configuration, the per-epoch curves, the energy figures and how each was obtained, a power timeline, and the provenance (commit, library versions, device).
#
# **Energy.** Each epoch's train and evaluation phases are separate windows, opened and closed after synchronising the device; a `run` window spans all epochs and an `idle` window before the first epoch gives the idle baseline. Each component is *measured* where the hardware allows (GPU: NVML energy counter; CPU and DRAM: RAPL) and *modelled* where not (CPU: TDP × utilisation; RAM: constant power per GB) -- every value carries its `method` and `kind`. The original study's estimate, an *assumed* constant board power (`assumed_power_w`, 70 W for the T4) × wall time, is always computed beside them.
#
# The values stored with `record(...)` are what `energy_lib.records.read_runs` and the analysis notebook read back.

# %%
import energy_lib.notebook as lab

lab.mark_parameters(globals())  # every name assigned from here to the config cell must be a RunConfig field

# %% tags=["parameters"]
# Parameters: papermill replaces these. Every name is a RunConfig field; the built notebook
# lists them all with RunConfig's defaults (tools/make_notebooks.py fills this cell in).

# %% [markdown]
# ## Configuration
#
# Validated before any data is loaded; an unknown parameter name or a bad value stops here with a one-line error.

# %%
import energy_lib.notebook as lab  # again: a parameter named `lab` is refused, not obeyed

config = lab.config_from(globals())
lab.config_table(config)

# %% [markdown]
# ## Training

# %%
from energy_lib.train import train

result = train(config)

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
# ## Power timeline

# %%
plot_timeline(result.timeline, result.timeline_marks, result.summary['idle_power_w']);

# %% [markdown]
# ## Summary
#
# `acc_pct_per_wh` is the original study's efficiency figure (best validation accuracy % per Wh of the constant-power estimate); `component_*` are the meters' figures; `emissions_kg` = component energy × carbon intensity × PUE.

# %%
import pandas as pd

pd.Series(result.summary, name=config.cell or config.study)
