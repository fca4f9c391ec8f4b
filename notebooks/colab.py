# %% [markdown]
# # CNN training energy: the whole study in one Run all
#
# Installs the project (if it is not installed), reports the GPU, runs a study through the same runner as `energy-study run` -- the original paper study (CIFAR-10, widths 1-3, fp32 vs amp, 30 epochs) on a GPU, the quick Fashion-MNIST study otherwise -- then runs the analysis and shows the figures. Every cell of the study leaves an executed notebook: the lab record.
#
# In Colab: *Runtime > Change runtime type > GPU*, paste this project's git URL into `repo_url` below, then *Run all*. The records go to Google Drive (`keep_on_drive`, on by default: a Colab runtime that disconnects loses its local files); after a reconnect, *Run all* again resumes, skipping every cell whose record is finished. Before the grid starts, the plan cell prints each cell's predicted time and energy on this runtime.

# %% tags=["parameters"]
# Parameters
repo_url = ''  # @param {type:"string"} this project's git URL, e.g. https://github.com/<owner>/<repo>.git
repo_ref = 'main'  # @param {type:"string"}
study = 'auto'  # @param {type:"string"} 'auto': paper on a GPU, quick otherwise; or a study name / .toml path
overrides = {}  # replace [fixed] settings, e.g. {'epochs': 5}
repeats = None  # runs per setting; None: the study file's (quick: 3)
keep_on_drive = True  # @param {type:"boolean"} records and report in Google Drive (Colab only)
drive_folder = '/content/drive/MyDrive/energy-study'  # @param {type:"string"}
runs_root = 'runs'  # where records go when not on Drive
report_root = 'report'

# %%
# Install the project when it is not importable (a fresh Colab runtime).
import importlib.util, os, subprocess, sys

if importlib.util.find_spec('energy_lib') is None:
    if not repo_url.strip():
        raise SystemExit("repo_url is empty: paste this project's git URL (e.g. "
                         "https://github.com/<owner>/<repo>.git) into the first cell, then Run all")
    subprocess.run(['git', 'clone', '--depth', '1', '--branch', repo_ref, repo_url.strip(), 'energy-study'], check=True)
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', 'energy-study'], check=True)
    sys.path.insert(0, os.path.abspath('energy-study'))  # visible without a kernel restart
    os.chdir('energy-study')

# %%
from energy_lib.training.device import describe_accelerator
from energy_lib.study import colab_folders, load_study, study_file_for

print(describe_accelerator())
runs_root, report_root, where = colab_folders(keep_on_drive, drive_folder, runs_root, report_root)
print(where)
the_study = load_study(study_file_for(study), repeats=repeats, **overrides)
print(f'study {the_study.name!r}: {len(the_study.cells)} cells -> {the_study.runs_dir(runs_root)}')

# %% [markdown]
# ## The plan
#
# Each distinct setting is probed for a few training steps on this runtime (never recorded); every cell still to run is priced in time and energy. Cells whose records are finished (on Drive, from an earlier session) are skipped.

# %%
from energy_lib.study.runner import plan_text

print(plan_text(the_study, the_study.runs_dir(runs_root)))

# %% [markdown]
# ## Run the grid
#
# One papermill execution per cell, one at a time (energy must not share a device). A failed cell keeps its record and the others go on. One progress bar for the study; each cell's own output is in its lab record.

# %%
from energy_lib.study import build_report, run_study

outcome = run_study(the_study, runs_root=runs_root, progress='bar')
print(f'ran {outcome.ran}; skipped {outcome.skipped}; failed {outcome.failed}')

# %% [markdown]
# ## Findings
#
# The analysis notebook runs once (its executed copy and HTML are the report's lab record); the findings and the summary it wrote are shown here, then the main figures. Every file of the report is listed at the end.

# %%
import pandas as pd
from IPython.display import Image, Markdown, display

from energy_lib.report.repeats import readable_summary

pd.set_option('display.max_colwidth', None)
pd.set_option('display.max_columns', None)
report_dir = build_report(the_study, runs_root=runs_root, report_root=report_root)
display(Markdown((report_dir / 'findings.md').read_text(encoding='utf-8')))
display(readable_summary(pd.read_csv(report_dir / 'summary.csv'), the_study))

# %%
for name in ('pareto', 'energy_by_model', 'paired', 'val_accuracy', 'energy_per_epoch'):
    png = report_dir / f'{name}.png'
    if png.is_file():
        display(Image(filename=str(png)))

# %%
print(f'the whole report: {report_dir / "analysis.html"}')
print('its files:', ', '.join(sorted(p.name for p in report_dir.iterdir() if p.is_file())))
