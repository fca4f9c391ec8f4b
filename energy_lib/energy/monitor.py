"""Named measurement windows shared by every meter, timed on one synchronised clock; and the
`Meter` base every meter subclasses, so the monitor, the timeline and the meter set call one
declared protocol instead of probing for methods.

A meter that raises mid-run never stops training: from that moment its components are covered
by a stand-in (the meter's own mean power so far x time, or, before it read anything, the model
for that component), every such reading is flagged, and `failures` says when and why.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .table import Kind, Method


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so a clock read afterwards measures finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class Reading:
    """Energy of one component over one window, and how it was obtained."""

    component: str  # e.g. "assumed-board", "gpu", "cpu", "ram"
    energy_j: float
    method: str
    kind: str
    flag: str = ""  # e.g. why this reading should not be trusted as it stands
    # other processes that computed on the measured device during the window (GPU rows, from
    # NVML): the figure is not the cell's alone, and the run counts as contended
    sharer_pids: tuple[int, ...] = ()


@dataclass
class Window:
    name: str
    duration_s: float
    readings: list[Reading] = field(default_factory=list)


class Meter(ABC):
    """What every meter provides. Only `end` must be written; the rest has defaults for a meter
    of one method and kind that needs no setup, samples no power and holds nothing to release.

    `end` gets the window's synchronised duration, for models that compute energy from time.
    `power_w` is the timeline's: power per component since the previous call ({} for a meter
    whose figure exists only per window, such as the assumed constant power); `power_series` is
    a component's series recorded by the meter itself, handed over when the timeline stops;
    `power_notes` labels a sample read in another way than usual."""

    components: Sequence[str] = ()  # what it covers: "gpu", "cpu", "ram", "soc", "assumed-board"
    method: str = ""  # Method value of every reading (a meter of several overrides `methods`)
    kind: str = ""  # Kind value: measured | modelled | estimated

    def describe(self) -> str:
        """One line for the record: what is read or assumed, and from where ("" says nothing)."""
        return ""

    def methods(self) -> dict[str, tuple[str, str]]:
        """component -> (method, kind) of its readings."""
        return {c: (str(self.method), str(self.kind)) for c in self.components}

    def update_periods_s(self) -> dict[str, float]:
        """component -> how often its counter changes, where the meter measured it (a window
        shorter than that reads noise): the GPU energy counter's."""
        return {}

    def begin(self, name: str) -> None:
        """Window `name` opens (the device is synchronised already)."""

    @abstractmethod
    def end(self, name: str, duration_s: float) -> list[Reading]:
        """Window `name` closes after `duration_s`: its readings."""

    def cancel(self, name: str) -> None:
        """Window `name` closes without a reading (the block inside it raised)."""
        self.end(name, 0.0)

    def power_w(self) -> dict[str, float]:
        return {}

    def start_power_series(self) -> None:
        """The timeline starts: begin recording a power series of one's own, where the meter
        has one (a GPU's, polled by Zeus in its own process)."""

    def power_series(self) -> dict[str, list[tuple[float, float]]]:
        """component -> [(time.time(), W)] recorded since `start_power_series`, for components
        the timeline does not sample through `power_w`; read once, when the timeline stops."""
        return {}

    def power_notes(self) -> dict[str, str]:
        """component -> how its last `power_w` figure was read where that differs from the
        usual (e.g. a GPU's average power where its instant power is unavailable)."""
        return {}

    def close(self) -> None:
        """Release what the meter holds (threads, handles)."""


@dataclass
class MeterFailure:
    meter: str  # the meter's description
    at_s: float  # seconds since the monitor started
    window: str
    error: str


class StandIn(Meter):
    """Covers a failed meter's components: its mean power per component until it failed x the
    window's time (modelled), else the fallback model's reading; always flagged."""

    method = Method.STAND_IN
    kind = Kind.MODELLED

    def __init__(self, failed: Meter, mean_power_w: dict[str, float],
                 fallback: Callable[[str], Meter | None], reason: str) -> None:
        self.components = list(failed.components)
        self.mean_power_w = mean_power_w
        self.fallbacks = {c: fallback(c) for c in self.components if c not in mean_power_w}
        self.reason = reason

    def begin(self, name: str) -> None:
        for meter in self.fallbacks.values():
            if meter is not None:
                meter.begin(name)

    def end(self, name: str, duration_s: float) -> list[Reading]:
        readings = []
        for component in self.components:
            if component in self.mean_power_w:
                readings.append(Reading(component, self.mean_power_w[component] * duration_s,
                                        Method.STAND_IN, Kind.MODELLED, self.reason))
                continue
            model = self.fallbacks.get(component)
            if model is None:
                continue
            for r in model.end(name, duration_s):
                if r.component == component:
                    readings.append(Reading(r.component, r.energy_j, r.method, r.kind, self.reason))
        return readings


class EnergyMonitor:
    """Opens and closes named windows on all meters at once (in the style of Zeus's
    begin_window/end_window). Each edge synchronises the device before reading any clock or
    counter, so the window holds exactly the work queued inside it."""

    def __init__(self, meters: list[Meter], device: torch.device,
                 fallback: Callable[[str], Meter | None] = lambda component: None) -> None:
        self.meters = list(meters)
        self.device = device
        self.fallback = fallback
        self.failures: list[MeterFailure] = []
        self._starts: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._seen: dict[int, dict[str, list[float]]] = {}  # meter id -> component -> [J, s]

    def begin_window(self, name: str) -> None:
        if name in self._starts:
            raise RuntimeError(f"window {name!r} is already open")
        synchronize(self.device)
        for index, meter in enumerate(self.meters):
            try:
                meter.begin(name)
            except Exception as error:  # noqa: BLE001 - a meter must never stop training
                self._replace(index, name, error, begin_windows=[*self._starts, name])
        self._starts[name] = time.perf_counter()

    def end_window(self, name: str) -> Window:
        synchronize(self.device)
        duration_s = time.perf_counter() - self._starts.pop(name)
        readings = []
        for index, meter in enumerate(self.meters):
            try:
                got = meter.end(name, duration_s)
            except Exception as error:  # noqa: BLE001
                stand_in = self._replace(index, name, error, begin_windows=[*self._starts, name])
                got = stand_in.end(name, duration_s)
            else:
                seen = self._seen.setdefault(id(meter), {})
                for r in got:
                    total = seen.setdefault(r.component, [0.0, 0.0])
                    total[0] += r.energy_j
                    total[1] += duration_s
            readings += got
        return Window(name, duration_s, readings)

    def cancel_window(self, name: str) -> None:
        """Close a window without a reading (the block inside it raised)."""
        if self._starts.pop(name, None) is None:
            return
        for meter in self.meters:
            try:
                meter.cancel(name)
            except Exception:  # noqa: BLE001
                pass

    def _replace(self, index: int, window: str, error: Exception, begin_windows: list[str]) -> StandIn:
        """Swap meter `index` for a stand-in whose windows `begin_windows` are already open."""
        failed = self.meters[index]
        at_s = time.perf_counter() - self._t0
        text = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        label = failed.describe() or type(failed).__name__
        self.failures.append(MeterFailure(label, at_s, window, text))
        seen = self._seen.get(id(failed), {})
        mean_w = {c: j / s for c, (j, s) in seen.items() if s > 0}
        reason = (f"meter failed at {at_s:.1f} s ({text}); stand-in from here: "
                  + ("mean power until then x time" if mean_w else "the component's model"))
        stand_in = StandIn(failed, mean_w, self.fallback, reason)
        for open_window in begin_windows:
            stand_in.begin(open_window)
        self.meters[index] = stand_in
        try:
            failed.close()
        except Exception:  # noqa: BLE001
            pass
        return stand_in
