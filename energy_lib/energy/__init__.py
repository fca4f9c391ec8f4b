"""Energy: the one long-form table (`table`), what derives from it (`derive`), and the meters
behind a metering context (`metering`), each a `Meter` and chosen in one place
(`meters.build_meters`): measured by Zeus where the hardware allows, modelled
where not, and the original study's constant-power estimate beside them. Every row says its
`method` and `kind` (measured | modelled | estimated). Nothing runs inside the training step.
"""

from .constant_power import ConstantPowerEstimator
from .monitor import EnergyMonitor, Meter, Reading, Window
from .table import JOULES_PER_KWH, EnergyRow, Kind, Method, Phase, joules_to_kwh

__all__ = ["ConstantPowerEstimator", "EnergyMonitor", "EnergyRow", "JOULES_PER_KWH", "Kind",
           "Meter", "Method", "Phase", "Reading", "Window", "joules_to_kwh"]
