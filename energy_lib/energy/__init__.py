"""Energy: the one long-form table (`table`), what derives from it (`derive`), and the meters
behind a metering context (`metering`), each a `Meter` and chosen in one place
(`meters.build_meters`): measured by Zeus where the hardware allows, modelled
where not, and the original study's constant-power estimate beside them. Every row says its
`method` and `kind` (measured | modelled | estimated). Nothing runs inside the training step.

The table and what derives from it need no torch; the meters do. So the meters' names are
loaded when first used (PEP 562): a report, which only reads tables, never imports torch.
"""

from __future__ import annotations

import importlib

from .table import JOULES_PER_KWH, EnergyRow, Kind, Method, Phase, joules_to_kwh

#: names loaded on first use -> the module that holds them
_LAZY = {"ConstantPowerEstimator": ".constant_power", "EnergyMonitor": ".monitor",
         "Meter": ".monitor", "Reading": ".monitor", "Window": ".monitor"}

__all__ = ["ConstantPowerEstimator", "EnergyMonitor", "EnergyRow", "JOULES_PER_KWH", "Kind",
           "Meter", "Method", "Phase", "Reading", "Window", "joules_to_kwh"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
