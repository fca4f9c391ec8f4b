"""Old import paths of modules that moved, so committed lab records and notebooks still run.

Executed run notebooks in runs/ are lab records: they are read, never edited, and a reader may
re-run one. They import `energy_lib.notebook` (today `energy_lib.lab`) and the report's old
flat modules. Each old path here is served by its new module itself (the same object, not a
copy), through one import hook installed by `energy_lib/__init__.py`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: old module path -> the module that holds its code now
MOVED = {
    "energy_lib.notebook": "energy_lib.lab",
    "energy_lib.scaleout": "energy_lib.study.dask_executor",
    "energy_lib.report_models": "energy_lib.report.models",
    "energy_lib.report_repeats": "energy_lib.report.repeats",
    "energy_lib.report_estimates": "energy_lib.report.estimates",
    "energy_lib.export": "energy_lib.report.export",
    "energy_lib.plaintext": "energy_lib.report.output",
    "energy_lib.figures_stats": "energy_lib.report.stat_figures",
    "energy_lib.claims": "energy_lib.report.claims",
    "energy_lib.stats": "energy_lib.report.stats",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old path with the module at its new one."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def __init__(self) -> None:
        self._own_specs: dict = {}

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        """Nothing to run: the module is the new one, already imported. The import system has
        just stamped the old path's spec on it; give it back its own."""
        module.__spec__ = self._own_specs[module.__name__]


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
