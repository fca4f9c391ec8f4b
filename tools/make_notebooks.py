"""Build notebooks/*.ipynb from their jupytext sources, notebooks/*.py (percent format).

The .py files are the notebooks' source of truth: real Python, lintable, reviewed as text. Each
pair is an ordinary jupytext pair (jupytext.toml at the repository root), so
`jupytext --sync notebooks/run.ipynb` and Jupyter with jupytext keep them in step; this script
is a small step on top. The run notebook's parameters cell is filled in from
energy_lib.lab.PARAMETERS here, in the notebook and in run.py alike (so the pair stays in step). Cell ids are stable (`run-00`, ...) and
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
SOURCES = ("run.py", "analysis.py", "colab.py", "your_model.py")
KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}
EXTRA_METADATA = {"colab.py": {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}}


def run_parameters() -> str:
    from energy_lib.lab import PARAMETERS

    lines = ["# Parameters (papermill replaces these; energy_lib.lab.PARAMETERS).",
             "# config: the RunConfig fields to set, e.g. {'width': 2, 'precision': 'amp'};",
             "# none set = RunConfig's defaults, the original T4 study's fp32 width-1 cell.",
             "# progress, record_path: this execution's, set by `energy-study run`."]
    lines += [f"{name} = {value!r}" for name, value in PARAMETERS.items()]
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
