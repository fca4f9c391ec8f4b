"""Build notebooks/*.ipynb from their jupytext sources, notebooks/*.py (percent format).

The .py files are the notebooks' source of truth: real Python, lintable, reviewed as text. Each
pair is an ordinary jupytext pair (jupytext.toml at the repository root), so
`jupytext --sync notebooks/run.ipynb` and Jupyter with jupytext keep them in step; this script
is a small step on top. The run notebook's parameters cell is filled in from RunConfig's fields
and defaults here, in the notebook and in run.py alike (so the pair stays in step), and the list
papermill users see can never drift from the config. Cell ids are stable (`run-00`, ...) and
cells keep no metadata but tags, so rebuilding an unchanged source changes nothing. The .py is
rewritten as jupytext writes it (what `jupytext --sync` would write).

    python tools/make_notebooks.py          # rebuild every notebook
    python tools/make_notebooks.py --check  # exit 1 if a committed notebook is out of date
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import jupytext
import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOURCES = ("run.py", "analysis.py", "colab.py")
KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}
EXTRA_METADATA = {"colab.py": {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}}


def run_parameters() -> str:
    from energy_lib.config import RunConfig
    from energy_lib.lab import RUNNER_PARAMETERS

    lines = ["# Parameters (papermill replaces these; every name is a RunConfig field).",
             "# Defaults reproduce the original T4 study's fp32 width-1 cell.",
             "# Written from RunConfig by tools/make_notebooks.py: edit RunConfig, not this cell."]
    lines += [f"{name} = {value!r}" for name, value in RunConfig().to_dict().items()]
    lines += ["# This execution's, set by `energy-study run` (energy_lib.lab.RUNNER_PARAMETERS):",
              "# the progress bar's style, and the record being written."]
    lines += [f"{name} = {value!r}" for name, value in RUNNER_PARAMETERS.items()]
    return "\n".join(lines)


def build(source: str) -> nbformat.NotebookNode:
    """The notebook for one source file, ready to write (no outputs, stable ids)."""
    path = NOTEBOOKS / source
    notebook = jupytext.read(path, fmt="py:percent")
    stem = path.stem
    for index, cell in enumerate(notebook.cells):
        cell.id = f"{stem}-{index:02d}"
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if stem == "run" and "parameters" in cell.metadata.get("tags", []):
                cell.source = run_parameters()
    notebook.metadata = {**KERNEL, **EXTRA_METADATA.get(source, {})}
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return notebook


def script(notebook: nbformat.NotebookNode) -> str:
    """The percent-format source of a built notebook, as `jupytext --sync` writes it under the
    repository's jupytext.toml (whose metadata filter leaves the scripts without a header)."""
    config = tomllib.loads((REPO / "jupytext.toml").read_text())
    return jupytext.writes(notebook, fmt={"extension": ".py", "format_name": "percent",
                                          "notebook_metadata_filter":
                                              config.get("notebook_metadata_filter", "-all")})


def target(source: str) -> Path:
    return NOTEBOOKS / source.replace(".py", ".ipynb")


def main(argv: list[str]) -> int:
    stale = []
    for source in SOURCES:
        notebook = build(source)
        outputs = {target(source): nbformat.writes(notebook) + "\n",
                   NOTEBOOKS / source: script(notebook)}
        for path, text in outputs.items():
            current = path.read_text() if path.exists() else None
            if current == text:
                continue
            if "--check" in argv:
                stale.append(path.name)
            else:
                path.write_text(text)
    if stale:
        print(f"out of date (run python tools/make_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
