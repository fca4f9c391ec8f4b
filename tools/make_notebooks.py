"""Write notebooks/run.ipynb, analysis.ipynb and colab.ipynb from the cell texts below.

The notebooks are committed; this script is how they are edited, so their source stays
reviewable as Python text. Run: python tools/make_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from energy_lib.config import RunConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def parameters_cell(source: str):
    return new_code_cell(source, metadata={"tags": ["parameters"]})


def run_parameters() -> str:
    lines = ["# Parameters (papermill replaces these; every name is a RunConfig field).",
             "# Defaults reproduce the original T4 study's fp32 width-1 cell."]
    for name, value in RunConfig().to_dict().items():
        lines.append(f"{name} = {value!r}")
    return "\n".join(lines)


RUN = [
    new_markdown_cell(
        "# Lab record: one cell of a training-energy study\n\n"
        "This notebook trains one configuration of a width × precision study and keeps everything "
        "needed to read it later: the validated configuration, the per-epoch curves, the energy "
        "figures and how each was obtained, a power timeline, and the provenance (commit, library "
        "versions, device).\n\n"
        "**Energy.** Each epoch's train and evaluation phases are separate windows, opened and "
        "closed after synchronising the device; a `run` window spans all epochs and an `idle` "
        "window before the first epoch gives the idle baseline. Each component is *measured* "
        "where the hardware allows (GPU: NVML energy counter; CPU and DRAM: RAPL) and *modelled* "
        "where not (CPU: TDP × utilisation; RAM: constant power per GB) -- every value carries its "
        "`method` and `kind`. The original study's estimate, an *assumed* constant board power "
        "(`assumed_power_w`, 70 W for the T4) × wall time, is always computed beside them.\n\n"
        "The values stored with `record(...)` are what `energy_lib.records.read_runs` and the "
        "analysis notebook read back."),
    new_code_cell("import energy_lib.notebook as lab\n\n"
                  "_names_before_parameters = set(globals())"),
    parameters_cell(run_parameters()),
    new_markdown_cell("## Configuration\n\nValidated before any data is loaded; an unknown "
                      "parameter name or a bad value stops here with a one-line error."),
    new_code_cell("config = lab.config_from(globals(), _names_before_parameters)\n"
                  "lab.config_table(config)"),
    new_markdown_cell("## Training"),
    new_code_cell("from energy_lib.train import train\n\nresult = train(config)"),
    new_markdown_cell("## What was measured, what was modelled"),
    new_code_cell("print(lab.meters_text(result))"),
    new_markdown_cell("## Curves and energy per epoch"),
    new_code_cell("from energy_lib.report import plot_run, plot_timeline\n\n"
                  "epochs = lab.record_result(result)\n"
                  "plot_run(epochs);"),
    new_code_cell("epochs"),
    new_markdown_cell("## Power timeline"),
    new_code_cell("plot_timeline(result.timeline, result.timeline_marks, result.summary['idle_power_w']);"),
    new_markdown_cell("## Summary\n\n`acc_pct_per_wh` is the original study's efficiency "
                      "figure (best validation accuracy % per Wh of the constant-power estimate); "
                      "`component_*` are the meters' figures; `emissions_kg` = component energy × "
                      "carbon intensity × PUE."),
    new_code_cell("import pandas as pd\n\npd.Series(result.summary, name=config.cell or config.study)"),
]

ANALYSIS = [
    new_markdown_cell(
        "# Study analysis\n\nReads the executed run notebooks of one study (never re-executing "
        "them) and writes the figures, the results table and this notebook's HTML to the report "
        "folder. Failed, diverged and missing cells are listed with their status."),
    parameters_cell("study_file = 'studies/quick.toml'\nruns_dir = 'runs/quick'\n"
                    "report_dir = 'report/quick'"),
    new_code_cell("from energy_lib import report\nfrom energy_lib.export import write_export\n"
                  "from energy_lib.records import read_runs\n"
                  "from energy_lib.study import load_study\n\n"
                  "study = load_study(study_file)\nruns = read_runs(runs_dir)\n"
                  "for problem in runs.problems:\n    print('skipped:', problem)\n"
                  "written = report.write_report(runs, report_dir, [c.name for c in study.cells])\n"
                  "write_export(runs, study.name, f'{report_dir}/emissions_log.csv')\n"
                  "print(f'study {study.name!r}: {len(study.cells)} cells; {study.description}')"),
    new_markdown_cell("## Results\n\nThe original study's Table 1 columns. Energy is the "
                      "`energy_method` estimate (`energy_kind` says measured or modelled)."),
    new_code_cell("written['table']"),
    new_markdown_cell("## Training curves"),
    new_code_cell("for name in ['train_loss', 'train_accuracy', 'val_loss', 'val_accuracy']:\n"
                  "    display(written['figures'][name])"),
    new_markdown_cell("## Energy\n\nSolid lines: the meters' figures (each component measured "
                      "or modelled as the legend says); dashed: the original study's constant-power "
                      "estimate, for comparison."),
    new_code_cell("for name in ['cumulative_energy', 'energy_per_epoch', 'accuracy_vs_energy',\n"
                  "             'power_assumed_vs_metered']:\n"
                  "    display(written['figures'][name])"),
    new_markdown_cell("## Beside the original study (paper preset only)\n\nThe original Table 1 "
                      "(CIFAR-10, Colab T4, energy = 70 W × time) next to ours, matched on width "
                      "and precision."),
    new_code_cell("if study.name.startswith('paper'):\n"
                  "    display(report.compare_with_reference(written['table']))\n"
                  "else:\n    print('not the paper study: no reference comparison')"),
    new_code_cell("import matplotlib.pyplot as plt\n\nplt.close('all')\n"
                  "{name: str(path) for name, path in written['paths'].items()}"),
]

COLAB = [
    new_markdown_cell(
        "# CNN training energy: the whole study in one Run all\n\n"
        "Installs the project (if it is not installed), reports the GPU, runs a study through the "
        "same runner as `energy-study run` -- the original paper study (CIFAR-10, widths 1-3, "
        "fp32 vs amp, 30 epochs) on a GPU, the quick Fashion-MNIST study otherwise -- then runs the "
        "analysis and shows the figures. Every cell of the study leaves an executed notebook: "
        "the lab record.\n\n"
        "In Colab: *Runtime > Change runtime type > GPU*, set `repo_url` below, then *Run all*. "
        "Set `drive_folder` to keep the lab records in Google Drive across sessions; a rerun "
        "resumes, skipping cells whose records are finished."),
    parameters_cell(
        "# Parameters\n"
        "repo_url = 'https://github.com/OWNER/REPOSITORY.git'  # this project's git URL (for installing)\n"
        "repo_ref = 'main'\n"
        "study = 'auto'  # 'auto': paper on a GPU, quick otherwise; or a study name / .toml path\n"
        "overrides = {}  # replace [fixed] settings, e.g. {'epochs': 5}\n"
        "drive_folder = ''  # e.g. '/content/drive/MyDrive/energy-study' to keep records in Drive\n"
        "runs_root = 'runs'\n"
        "report_root = 'report'"),
    new_code_cell(
        "# Install the project when it is not importable (a fresh Colab runtime).\n"
        "import importlib.util, os, subprocess, sys\n\n"
        "if importlib.util.find_spec('energy_lib') is None:\n"
        "    if 'OWNER/REPOSITORY' in repo_url:\n"
        "        raise SystemExit('set repo_url (first cell) to this project\\'s git URL, then Run all again')\n"
        "    subprocess.run(['git', 'clone', '--depth', '1', '--branch', repo_ref, repo_url, 'energy-study'], check=True)\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-e', 'energy-study'], check=True)\n"
        "    sys.path.insert(0, os.path.abspath('energy-study'))  # visible without a kernel restart\n"
        "    os.chdir('energy-study')"),
    new_code_cell(
        "from pathlib import Path\n\n"
        "from energy_lib.device import describe_accelerator\n"
        "from energy_lib.study import STUDIES_DIR, build_report, default_study_file, load_study, run_study\n\n"
        "print(describe_accelerator())\n"
        "if study == 'auto':\n    study_file = default_study_file()\n"
        "elif study.endswith('.toml'):\n    study_file = Path(study)\n"
        "else:\n    study_file = STUDIES_DIR / f'{study}.toml'\n"
        "if drive_folder:\n"
        "    from google.colab import drive\n\n"
        "    drive.mount('/content/drive')\n"
        "    runs_root, report_root = Path(drive_folder) / 'runs', Path(drive_folder) / 'report'\n"
        "the_study = load_study(study_file, **overrides)\n"
        "print(f'study {the_study.name!r}: {len(the_study.cells)} cells -> {the_study.runs_dir(runs_root)}')"),
    new_markdown_cell("## Run the grid\n\nOne papermill execution per cell, one at a time (energy "
                      "must not share a device). A failed cell keeps its record and the others go on."),
    new_code_cell("outcome = run_study(the_study, runs_root=runs_root)\n"
                  "print(f'ran {outcome.ran}; skipped {outcome.skipped}; failed {outcome.failed}')"),
    new_markdown_cell("## Analysis and figures"),
    new_code_cell("import pandas as pd\nfrom IPython.display import Image, display\n\n"
                  "report_dir = build_report(the_study, runs_root=runs_root, report_root=report_root)\n"
                  "display(pd.read_csv(report_dir / 'results.csv'))\n"
                  "for png in sorted(report_dir.glob('*.png')):\n"
                  "    print(png.name)\n    display(Image(filename=str(png)))"),
]


def write(name: str, cells, **metadata) -> None:
    for index, cell in enumerate(cells):
        cell.id = f"{name.removesuffix('.ipynb')}-{index:02d}"  # stable ids: no churn on rewrite
    notebook = new_notebook(cells=cells, metadata={**KERNEL, **metadata})
    nbformat.validate(notebook)
    nbformat.write(notebook, NOTEBOOKS / name)


if __name__ == "__main__":
    write("run.ipynb", RUN)
    write("analysis.ipynb", ANALYSIS)
    write("colab.ipynb", COLAB, accelerator="GPU", colab={"gpuType": "T4", "provenance": []})
