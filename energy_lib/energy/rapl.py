"""CPU (and DRAM) energy measured by RAPL through Linux's powercap sysfs.

Each package domain `intel-rapl:N` (AMD CPUs appear under the same name) has a cumulative
`energy_uj` counter that wraps at `max_energy_range_uj`; its sub-domain named `dram`, where
present, measures memory. Reading a counter is one small file read, so window edges cost
microseconds. Where the files cannot be read (no permission -- recent kernels make energy_uj
root-only --, a VM, a container) `probe` says why and the caller falls back to a model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .monitor import Reading

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplDomain:
    path: Path
    name: str  # "package-0", "dram", ...
    component: str  # "cpu" or "ram"
    max_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


class _Unreadable(Exception):
    pass


def _read(path: Path) -> str:
    """A sysfs file's text, or _Unreadable naming the file and why."""
    try:
        return path.read_text().strip()
    except OSError as error:
        raise _Unreadable(f"{path}: {error.strerror or error}") from None


def _read_int(path: Path) -> int:
    text = _read(path)
    try:
        return int(text)
    except ValueError:
        raise _Unreadable(f"{path}: not a counter value ({text[:20]!r})") from None


def discover(root: Path = POWERCAP_ROOT) -> tuple[list[RaplDomain], str]:
    """Readable package and DRAM domains, and the reason when there are none."""
    if not root.is_dir():
        return [], f"{root} does not exist (no RAPL driver, or a VM/container without it)"
    domains, problems = [], []
    for package in sorted(root.glob("intel-rapl:[0-9]*")):
        if package.name.count(":") != 1:
            continue
        candidates = [package] + sorted(p for p in package.glob(f"{package.name}:*"))
        for path in candidates:
            try:
                name = _read(path / "name")
                if path != package and name != "dram":
                    continue  # core/uncore are inside the package figure already
                max_range = _read_int(path / "max_energy_range_uj")
                _read_int(path / "energy_uj")
            except _Unreadable as problem:
                problems.append(str(problem))
                continue
            domains.append(RaplDomain(path, name, "ram" if name == "dram" else "cpu", max_range))
    if domains:
        return domains, ""
    if problems:
        return [], "cannot read RAPL counters (" + "; ".join(problems[:2]) + ")"
    return [], f"no intel-rapl package domains under {root}"


def delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Counter difference allowing for one wrap-around at max_energy_range_uj."""
    return end - start if end >= start else end + max_range_uj - start


class RaplMeter:
    """Measured CPU package (and DRAM) energy per window."""

    method = "rapl"
    kind = "measured"

    def __init__(self, domains: list[RaplDomain]) -> None:
        if not domains:
            raise ValueError("RaplMeter needs at least one readable domain")
        self.domains = domains
        self._starts: dict[str, list[int]] = {}
        self._last_sample: tuple[float, list[int]] | None = None

    @classmethod
    def probe(cls, root: Path = POWERCAP_ROOT) -> tuple["RaplMeter | None", str]:
        domains, reason = discover(root)
        return (cls(domains), "") if domains else (None, reason)

    @property
    def components(self) -> list[str]:
        return sorted({d.component for d in self.domains})

    def read_uj(self) -> list[int]:
        return [d.read_uj() for d in self.domains]

    def begin(self, name: str) -> None:
        self._starts[name] = self.read_uj()

    def joules_since(self, start: list[int], end: list[int]) -> dict[str, float]:
        joules: dict[str, float] = {}
        for domain, a, b in zip(self.domains, start, end):
            joules[domain.component] = joules.get(domain.component, 0.0) + delta_uj(a, b, domain.max_range_uj) / 1e6
        return joules

    def power_w(self) -> dict[str, float]:
        """Average power since the previous call, for the timeline sampler."""
        now = (time.perf_counter(), self.read_uj())
        previous, self._last_sample = self._last_sample, now
        if previous is None or now[0] <= previous[0]:
            return {}
        joules = self.joules_since(previous[1], now[1])
        return {c: j / (now[0] - previous[0]) for c, j in joules.items()}

    def end(self, name: str, duration_s: float) -> list[Reading]:
        joules = self.joules_since(self._starts.pop(name), self.read_uj())
        return [Reading(component, j, self.method, self.kind) for component, j in sorted(joules.items())]
