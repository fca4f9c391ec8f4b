"""energy_lib: the importable core of the CNN training-energy study.

Notebooks and the CLI only call into this package; nothing here imports a notebook or the CLI.
The public names below are loaded when first used (PEP 562), so importing one submodule (say
`energy_lib.provenance`) does not pull the configuration and the training core in with it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that holds it
_PUBLIC = {
    "RunConfig": "energy_lib.config",
    "ConfigError": "energy_lib.errors",
    "DatasetNotFound": "energy_lib.errors",
    "EnergyStudyError": "energy_lib.errors",
    "StudyError": "energy_lib.errors",
    "Tracker": "energy_lib.tracker",
    "TrackerError": "energy_lib.errors",
    "BudgetExceeded": "energy_lib.errors",
    "WriteError": "energy_lib.errors",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'energy_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
