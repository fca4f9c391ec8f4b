"""Power timeline: every meter's power sampled by one background thread, in bounded memory.

The sampler wakes every `period_s` (<= 1 s), asks each meter for its power since the previous
sample, and stores (seconds since start, component, watts), with a note where a figure was read
in another way than usual (a GPU's average power where its instant power is unavailable: the
series' label says so). A meter that fails leaves a gap for its own components only. When
`max_samples` is reached it keeps every other sample and doubles its period, so a run of any
length fits in a fixed amount of memory with an even resolution. A meter that records a series
of its own (the GPU's power, polled by Zeus's PowerMonitor at the counter's pace) hands it over
when the timeline stops; it is thinned to `max_samples` evenly too. It never touches the
training step.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable

from .monitor import Meter


class PowerTimeline(threading.Thread):
    def __init__(self, meters: list[Meter], methods: dict[str, dict[str, str]], period_s: float = 0.5,
                 max_samples: int = 4000, probes: list[Callable[[], None]] = ()) -> None:
        super().__init__(daemon=True, name="power-timeline")
        if not 0 < period_s <= 1:
            raise ValueError(f"period_s={period_s!r} must be in (0, 1]")
        self.sources = list(meters)  # a meter with figures per window only samples {}
        self.probes = list(probes)  # called at every sample too (runnable threads per window)
        self.methods = {c: f"{m['method']} ({m['kind']})" for c, m in methods.items()}
        self.period_s = period_s
        self.max_samples = max_samples
        # (seconds since start, component -> W, component -> note on how it was read)
        self.samples: list[tuple[float, dict[str, float], dict[str, str]]] = []
        self.marks: list[tuple[float, str]] = []  # (time, label): epoch boundaries, idle end
        # (seconds since start, component, watts, note) handed over by meters at `stop`
        self.series: list[tuple[float, str, float, str]] = []
        self._handed_over = False
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.t0 = time.perf_counter()
        self.t0_wall = time.time()  # the same instant on the clock of the meters' own series

    def start(self) -> None:
        for source in self.sources:
            with contextlib.suppress(Exception):
                source.start_power_series()
        super().start()

    def now_s(self) -> float:
        return time.perf_counter() - self.t0

    def mark(self, label: str) -> None:
        with self._lock:
            self.marks.append((self.now_s(), label))

    def sample(self) -> None:
        watts: dict[str, float] = {}
        notes: dict[str, str] = {}
        for source in self.sources:
            try:
                got = source.power_w()
            except Exception:  # a meter that fails to sample leaves a gap, not a crash
                continue
            watts.update(got)
            with contextlib.suppress(Exception):
                notes.update({c: n for c, n in source.power_notes().items() if c in got})
        for probe in self.probes:
            try:
                probe()
            except Exception:  # noqa: BLE001
                continue
        with self._lock:
            self.samples.append((self.now_s(), watts, notes))
            if len(self.samples) >= self.max_samples:
                self.samples = self.samples[::2]
                self.period_s *= 2

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=2)
        if self._handed_over:
            return
        self._handed_over = True
        for source in self.sources:
            try:
                got, notes = source.power_series(), source.power_notes()
            except Exception:  # noqa: BLE001 - a meter whose series fails leaves its gap
                continue
            for component, points in got.items():
                points = [(t - self.t0_wall, w) for t, w in points if t >= self.t0_wall]
                stride = -(-len(points) // self.max_samples) if points else 1
                self.series += [(t, component, w, notes.get(component, ""))
                                for t, w in points[::stride]]

    def rows(self) -> list[dict]:
        """Long form: one row per (time, component); `method` is the component's method and
        kind, and how this figure was read where that differs from the usual."""
        with self._lock:
            sampled = [(t, c, w, notes.get(c)) for t, watts, notes in self.samples
                       for c, w in watts.items()]
        return [{"t_s": t, "component": c, "power_w": w,
                 "method": "; ".join(filter(None, (self.methods.get(c, ""), note)))}
                for t, c, w, note in sorted(sampled + self.series, key=lambda row: row[0])]

    def mark_rows(self) -> list[dict]:
        with self._lock:
            return [{"t_s": t, "label": label} for t, label in self.marks]
