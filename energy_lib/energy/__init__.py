"""Energy meters (measured) and estimators (modelled) behind one interface: named windows.

The training loop opens a window after synchronising the device and closes it after
synchronising again (see EnergyMonitor); every meter reports joules for that window, labelled
with its `method` and `kind` (measured | modelled). Nothing runs inside the training step.
"""

from .monitor import EnergyMonitor, Reading, Window
from .constant_power import ConstantPowerEstimator

JOULES_PER_KWH = 3.6e6


def joules_to_kwh(energy_j: float) -> float:
    return energy_j / JOULES_PER_KWH


__all__ = ["ConstantPowerEstimator", "EnergyMonitor", "JOULES_PER_KWH", "Reading", "Window",
           "joules_to_kwh"]
