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
        "figures and where they came from, and the provenance (commit, library versions, device).\n\n"
        "**Energy.** Each epoch's train and evaluation phases are separate windows, opened and "
        "closed after synchronising the device. Energy here is the original study's estimate: "
        "an *assumed* constant board power (`assumed_power_w`, 70 W for the T4) × the window's "
        "wall time. It is **modelled, not measured**: every energy value carries "
        "`method=constant-power`, `kind=modelled`.\n\n"
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
    new_markdown_cell("## Curves and energy per epoch"),
    new_code_cell("from energy_lib.report import plot_run\n\n"
                  "epochs = lab.record_result(result)\n"
                  "plot_run(epochs);"),
    new_code_cell("epochs"),
    new_markdown_cell("## Summary\n\n`acc_pct_per_wh` is the original study's efficiency "
                      "figure: best validation accuracy (%) per watt-hour."),
    new_code_cell("import pandas as pd\n\npd.Series(result.summary, name=config.cell or config.study)"),
]

ANALYSIS = [
    new_markdown_cell(
        "# Study analysis\n\nReads the executed run notebooks of one study (never re-executing "
        "them) and writes the figures, the results table and this notebook's HTML to the report "
        "folder. Failed, diverged and missing cells are listed with their status."),
    parameters_cell("study_file = 'studies/quick.toml'\nruns_dir = 'runs/quick'\n"
                    "report_dir = 'report/quick'"),
    new_code_cell("from energy_lib import report\nfrom energy_lib.records import read_runs\n"
                  "from energy_lib.study import load_study\n\n"
                  "study = load_study(study_file)\nruns = read_runs(runs_dir)\n"
                  "for problem in runs.problems:\n    print('skipped:', problem)\n"
                  "written = report.write_report(runs, report_dir, [c.name for c in study.cells])\n"
                  "print(f'study {study.name!r}: {len(study.cells)} cells; {study.description}')"),
    new_markdown_cell("## Results\n\nThe original study's Table 1 columns. Energy is the "
                      "`energy_method` estimate (`energy_kind` says measured or modelled)."),
    new_code_cell("written['table']"),
    new_markdown_cell("## Training curves"),
    new_code_cell("for name in ['train_loss', 'train_accuracy', 'val_loss', 'val_accuracy']:\n"
                  "    display(written['figures'][name])"),
    new_markdown_cell("## Energy"),
    new_code_cell("for name in ['cumulative_energy', 'energy_per_epoch', 'accuracy_vs_energy']:\n"
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


def write(name: str, cells) -> None:
    notebook = new_notebook(cells=cells, metadata=KERNEL)
    nbformat.validate(notebook)
    nbformat.write(notebook, NOTEBOOKS / name)


if __name__ == "__main__":
    write("run.ipynb", RUN)
    write("analysis.ipynb", ANALYSIS)
