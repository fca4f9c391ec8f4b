"""Moved modules: every import a committed notebook (lab records, reports, the notebooks
themselves) or the README makes still resolves, to the same objects as the new paths."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

from energy_lib.moved_modules import MOVED

ROOT = Path(__file__).resolve().parents[1]


def _committed_sources() -> list[tuple[str, str]]:
    """(where, Python source) of every code cell of every committed notebook, and of every
    python code block of the README."""
    found = []
    for path in sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("runs/*/*.ipynb"),
                        *ROOT.glob("report/*/*.ipynb")]):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found.append((f"{path.relative_to(ROOT)} cell {index}", "".join(cell["source"])))
    readme = (ROOT / "README.md").read_text()
    for index, block in enumerate(re.findall(r"```python\n(.*?)```", readme, flags=re.S)):
        found.append((f"README.md python block {index}", block))
    return found


def _imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every energy_lib import in `source`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: not our imports
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names if alias.name.startswith("energy_lib")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("energy_lib"):
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def test_every_committed_import_resolves():
    checked, broken = 0, set()
    for where, source in _committed_sources():
        for module_name, names in _imports(source):
            checked += 1
            try:
                module = importlib.import_module(module_name)
                for name in names:
                    if not hasattr(module, name):  # `from package import submodule`
                        importlib.import_module(f"{module_name}.{name}")
            except ImportError as error:
                broken.add(f"{where}: {error}")
    assert checked > 100  # the records, reports, notebooks and README were all read
    assert not broken, "\n".join(sorted(broken))


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_path_is_the_new_module(old, new):
    moved, home = importlib.import_module(old), importlib.import_module(new)
    assert moved is home
    assert home.__spec__.name == new  # the new module keeps its own identity
