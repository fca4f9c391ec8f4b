"""One run's metering: meter selection, the idle baseline, named windows, the power timeline,
CodeCarbon alongside, and cleanup -- all in one context manager, so the training loop only
opens and closes windows:

    with Metering.for_config(config, device) as metering:
        metering.measure_idle(config.idle_s)
        with metering.window(Phase.RUN):
            with metering.window(Phase.TRAIN, epoch=1):
                ...
    metering.rows  # the energy table (list of EnergyRow dicts)
    metering.windows  # per window: whose share of the machine it was (energy.attribution)

Every CPU and RAM figure of a machine-level meter (RAPL package/DRAM, the TDP and RAM models) is
kept as a `machine` row and gets a `process` row beside it: the machine figure x the cell's
share in that window (CPU: cell CPU time / machine busy time; RAM: cell RSS / used memory). An
SoC's row (CPU, GPU and memory in one figure) stays a `machine` row alone. The meters, and so
the run's one ZeusMonitor, are built once here (`for_config`) and shared by the windows, the idle
baseline and the power timeline. Nothing here runs inside the training step.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

from .attribution import Attribution, WindowShare
from .carbon import resolve_intensity
from .monitor import EnergyMonitor, Window
from .meters import MeterSet, build_meters
from .table import (ASSUMED_BOARD, MACHINE_COMPONENTS, EnergyRow, Kind, Method, Phase,
                    JOULES_PER_KWH, Scope, default_scope)
from .timeline import PowerTimeline


class Metering:
    def __init__(self, meter_set: MeterSet, device: torch.device, *, sample_period_s: float = 0.5,
                 codecarbon=None, attribution: Attribution | None = None) -> None:
        self.meter_set = meter_set
        self.device = device
        self.monitor = EnergyMonitor(meter_set.meters, device, fallback=meter_set.model_for)
        self.attribution = attribution or Attribution()
        self.timeline = PowerTimeline(meter_set.meters, meter_set.methods(), period_s=sample_period_s,
                                      probes=[self._sample_attribution])
        self.codecarbon = codecarbon
        self.rows: list[dict] = []
        self.attribution_failure = ""  # why the cell's share could not be read, if it could not
        self.idle_power_w: dict[str, float] = {}  # "component/method/scope" -> W
        self.last_duration_s = 0.0  # of the window that ended last

    @classmethod
    def for_config(cls, config, device: torch.device, *, codecarbon_dir=None) -> "Metering":
        """The meters `config` asks for on `device`; CodeCarbon, when asked, writes its log into
        `codecarbon_dir` (default ./codecarbon)."""
        from .. import provenance

        meter_set = build_meters(config.meter_names, device, assumed_power_w=config.assumed_power_w,
                                 cpu_tdp_w=config.cpu_tdp_w, ram_power_w=config.ram_power_w,
                                 cpu_model=provenance.cpu_model())
        codecarbon = None
        if "codecarbon" in config.meter_names:
            from .codecarbon_backend import CodeCarbonRun

            codecarbon = CodeCarbonRun.for_config(config, codecarbon_dir or "codecarbon", device)
        return cls(meter_set, device, sample_period_s=config.sample_period_s, codecarbon=codecarbon)

    def __enter__(self) -> "Metering":
        self.timeline.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timeline.stop()
        if self.codecarbon is not None and self.codecarbon.running:
            self._codecarbon_rows(self.codecarbon.stop())
        self.meter_set.close()

    # -- windows -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def window(self, phase: Phase, epoch: int | None = None) -> Iterator[None]:
        """Measure the block as one window; its rows are appended to `rows` when it ends. A
        block that raises leaves no rows (its figures would cover unfinished work)."""
        name = f"{phase}" if epoch is None else f"{phase}-{epoch}"
        if phase == Phase.TRAIN:
            self.timeline.mark(f"epoch {epoch}")
        if phase == Phase.RUN and self.codecarbon is not None:
            self.codecarbon.start()
        self.monitor.begin_window(name)
        attributed = self._attribution_call(self.attribution.begin, name)
        try:
            yield
        except BaseException:
            self.monitor.cancel_window(name)
            self.attribution.cancel(name)
            raise
        finished = self.monitor.end_window(name)
        self.last_duration_s = finished.duration_s
        share = None
        if attributed:
            sharers = {pid for r in finished.readings for pid in r.sharer_pids}
            share = self._attribution_call(self.attribution.end, name, phase=str(phase),
                                           epoch=epoch, duration_s=finished.duration_s,
                                           gpu_sharer_pids=sharers)
        self.rows += self._rows(phase, epoch, finished, share or None)
        if phase == Phase.RUN and self.codecarbon is not None:
            self._codecarbon_rows(self.codecarbon.stop())

    def measure_idle(self, seconds: float, after: bool = False) -> None:
        """`seconds` of doing nothing: before training, the baseline every later window's
        `above_idle_j` subtracts; after training (`after`), a check that it did not drift (a
        warm device idles higher)."""
        if seconds <= 0:
            return
        phase = Phase.IDLE_AFTER if after else Phase.IDLE
        self.timeline.mark("idle after" if after else "idle")
        with self.window(phase):
            time.sleep(seconds)
        self.timeline.mark("idle end")
        if not after:
            self.idle_power_w = {_idle_key(r): r["energy_j"] / r["duration_s"]
                                 for r in self.rows if r["phase"] == Phase.IDLE
                                 and r["component"] != ASSUMED_BOARD and r["duration_s"] > 0}

    @property
    def windows(self) -> list[dict]:
        """The per-window attribution table (energy.attribution.WindowShare rows)."""
        return self.attribution.windows

    def _attribution_call(self, call, *args, **kwargs):
        """Attribution never stops training: a failed read leaves the window without process
        rows for the machine's meters (the headline falls back to the machine figure) and the
        reason in `info()`."""
        try:
            return call(*args, **kwargs) or True
        except Exception as error:  # noqa: BLE001 - e.g. no /proc on this system
            self.attribution_failure = f"{type(error).__name__}: {error}".splitlines()[0]
            self.attribution.cancel(args[0])
            return None

    def _sample_attribution(self) -> None:
        if not self.attribution_failure:
            self.attribution.sample()

    def _rows(self, phase: Phase, epoch: int | None, window: Window,
              share: WindowShare | None = None) -> list[dict]:
        rows = []
        for r in window.readings:
            scope = default_scope(r.component, r.method)
            rows.append(self._row(phase, epoch, window, r.component, r.method, r.kind, r.energy_j,
                                  r.flag, scope))
            if share is None or r.component not in _SHARE or scope != Scope.MACHINE \
                    or r.method == Method.CODECARBON:
                continue  # an SoC's row stays the machine's: no share splits CPU, GPU and memory
            factor = getattr(share, _SHARE[r.component])
            flag = "; ".join(f for f in (r.flag, share.flag) if f)
            rows.append(self._row(phase, epoch, window, r.component, r.method, r.kind,
                                  r.energy_j * factor, flag, Scope.PROCESS))
        return rows

    def _row(self, phase, epoch, window: Window, component: str, method: str, kind: str,
             energy_j: float, flag: str, scope: Scope) -> dict:
        idle_w = self.idle_power_w.get(f"{component}/{method}/{scope}")
        above = energy_j - idle_w * window.duration_s if idle_w is not None else None
        return EnergyRow(epoch, phase, component, Method(method), Kind(kind), energy_j,
                         window.duration_s, flag, above, scope).to_dict()

    def _codecarbon_rows(self, figures: dict) -> None:
        for component, kwh in figures.get("energy_kwh", {}).items():
            if kwh is None:
                continue
            # in process mode its CPU and RAM are the cell's share; its GPU is the whole device
            process = figures.get("tracking_mode") == "process" and component in MACHINE_COMPONENTS
            self.rows.append(EnergyRow(None, Phase.RUN, component, Method.CODECARBON,
                                       Kind(figures["kinds"].get(component, Kind.MODELLED)),
                                       kwh * JOULES_PER_KWH, figures["duration_s"],
                                       "CodeCarbon's own figure for the whole run",
                                       scope=Scope.PROCESS if process else "").to_dict())

    # -- what the record says about the meters -------------------------------------------------

    def info(self) -> dict:
        """What each component's figure is, the notes on what could not be measured, and any
        meter that failed mid-run."""
        return {
            "methods": self.meter_set.methods(),
            "cpu_tdp": self.meter_set.cpu_tdp(),
            "update_periods_s": self.meter_set.update_periods_s(),
            "descriptions": self.meter_set.describe(),
            "failures": [vars(f) for f in self.monitor.failures],
            "codecarbon": self.codecarbon.describe() if self.codecarbon is not None else None,
            "attribution": ("CPU and RAM rows of scope 'machine' are the whole machine's; each has "
                            "a 'process' row beside it: the figure x the cell's share in that "
                            "window (CPU: the cell's CPU time / the machine's busy CPU time; RAM: "
                            "the cell's resident memory / the machine's used memory)"
                            if not self.attribution_failure else
                            f"the cell's share of the machine could not be read "
                            f"({self.attribution_failure}): only machine-level CPU and RAM rows"),
        }


#: The cell's share of each machine-level component (energy.attribution.WindowShare fields).
_SHARE = {"cpu": "cpu_attribution_share", "ram": "ram_attribution_share"}


def _idle_key(row: dict) -> str:
    return f"{row['component']}/{row['method']}/{row['scope']}"


def carbon_facts(config) -> dict:
    """The carbon intensity a run's emissions are computed with (resolved once, recorded)."""
    intensity = resolve_intensity(config.country, config.carbon_intensity_g_per_kwh)
    return {"intensity_g_per_kwh": intensity.g_per_kwh, "source": intensity.source,
            "country_iso_code": intensity.country_iso_code,
            "country_name": intensity.country_name, "pue": config.pue}
