"""Named measurement windows shared by every meter, timed on one synchronised clock."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch

from ..device import synchronize


@dataclass(frozen=True)
class Reading:
    """Energy of one component over one window, and how it was obtained."""

    component: str  # e.g. "assumed-board", "gpu", "cpu", "ram"
    energy_j: float
    method: str  # e.g. "constant-power", "nvml-counter", "rapl", "tdp-model"
    kind: str  # "measured" | "modelled"
    flag: str = ""  # e.g. why this reading should not be trusted as it stands

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Window:
    name: str
    duration_s: float
    readings: list[Reading] = field(default_factory=list)


class Meter(Protocol):
    """What a meter provides. `end` gets the window's synchronised duration for estimators
    that model energy from time."""

    def begin(self, name: str) -> None: ...

    def end(self, name: str, duration_s: float) -> list[Reading]: ...


class EnergyMonitor:
    """Opens and closes named windows on all meters at once (in the style of Zeus's
    begin_window/end_window). Each edge synchronises the device before reading any clock or
    counter, so the window holds exactly the work queued inside it."""

    def __init__(self, meters: list[Meter], device: torch.device) -> None:
        self.meters = list(meters)
        self.device = device
        self._starts: dict[str, float] = {}

    def begin_window(self, name: str) -> None:
        if name in self._starts:
            raise RuntimeError(f"window {name!r} is already open")
        synchronize(self.device)
        for meter in self.meters:
            meter.begin(name)
        self._starts[name] = time.perf_counter()

    def end_window(self, name: str) -> Window:
        synchronize(self.device)
        duration_s = time.perf_counter() - self._starts.pop(name)
        readings = [r for meter in self.meters for r in meter.end(name, duration_s)]
        return Window(name, duration_s, readings)
