"""The original study's estimate: an assumed constant board power times wall time."""

from __future__ import annotations

from .monitor import Meter, Reading
from .table import ASSUMED_BOARD, Kind, Method


class ConstantPowerEstimator(Meter):
    """E = P_assumed x t. Modelled, not measured: it cannot see how hard the device worked.
    The original study used 70 W (the T4's board power limit) for train + eval time."""

    method = Method.CONSTANT_POWER
    kind = Kind.MODELLED
    component = ASSUMED_BOARD
    components = [ASSUMED_BOARD]

    def __init__(self, power_w: float) -> None:
        if not power_w > 0:
            raise ValueError(f"power_w={power_w!r} must be > 0")
        self.assumed_w = float(power_w)

    def describe(self) -> str:
        return (f"constant power: {self.assumed_w:g} W assumed x wall time (the original study's "
                "estimate; modelled)")

    def end(self, name: str, duration_s: float) -> list[Reading]:
        return [Reading(self.component, self.assumed_w * duration_s, self.method, self.kind)]
