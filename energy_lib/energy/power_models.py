"""Modelled CPU and RAM energy, for machines whose counters cannot be read.

CPU: TDP x utilisation x time. Utilisation is the whole machine's busy share between the window
edges (/proc/stat; the hypervisor's steal time is not busy) -- so its rows are the machine's
(`scope` machine) and `attribution` gives the cell's share; the TDP comes from the user
(`cpu_tdp_w`), else CodeCarbon's CPU table (bundled, MIT), else 85 W. It ignores idle power
and turbo, and on a VM it charges the host CPU's TDP to the visible cores' load: an upper-bound
style estimate, labelled `modelled`.

This is not CodeCarbon 3.3's model. Where CodeCarbon reads no counter it uses
TDP x (0.1 + 0.9 x load^3), a cubic curve with a 10 % floor (codecarbon/external/hardware.py,
CPU._get_power_from_cpu_load), and its load counts steal time as busy. Its TDP is its table's
figure x the CPU sockets (core/resource_tracker.py); for a named CPU missing from its table it
takes 4 W x logical CPUs (core/cpu.py, TDP._main), and 85 W only when it cannot read the CPU
model at all. When CodeCarbon runs alongside (`meters = "...,codecarbon"`), its figures are
rows of their own, so the two models can be read side by side.

RAM: a constant power, by default 3 W per 8 GB of installed memory (CodeCarbon's rule before
3.0), or the user's `ram_power_w`. CodeCarbon 3.3 instead estimates the DIMM count from the
installed memory and charges about 5 W per x86 DIMM, less beyond four (external/ram.py).
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ..bundled import read_csv
from ..provenance import total_ram_gb
from .monitor import Meter, Reading
from .table import Kind, Method

DEFAULT_CPU_TDP_W = 85.0  # ours for any CPU missing from the table (CodeCarbon 3.3: see above)
RAM_W_PER_GB = 3.0 / 8.0


@lru_cache(maxsize=1)
def _tdp_table() -> dict[str, float]:
    table = {}
    for row in read_csv("cpu_tdp.csv"):
        try:
            table[_normalise(row["Name"])] = float(row["TDP"])
        except (TypeError, ValueError):
            continue  # a few upstream rows hold malformed values ("27.29.5"): skip them
    return table


def _normalise(name: str) -> str:
    name = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core", " ", name)
    return " ".join(name.split()).lower()


def _is_word_char(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")


def _has_word(text: str, name: str) -> bool:
    """Whether `name` occurs in `text` between word boundaries: regex `\\bname\\b`, without
    compiling one pattern per table row (4,900 of them: 0.8 s a lookup, in every cell)."""
    start = text.find(name)
    while start != -1:
        end = start + len(name)
        if (_is_word_char(text, start - 1) != _is_word_char(text, start)
                and _is_word_char(text, end - 1) != _is_word_char(text, end)):
            return True
        start = text.find(name, start + 1)
    return False


class CpuTdp(NamedTuple):
    """A CPU's TDP, where it came from in words, and whether CodeCarbon's table knew the CPU
    (else the default stands in, and absolute CPU joules are arbitrary: see the findings)."""
    tdp_w: float
    source: str
    in_table: bool


def lookup_cpu_tdp(cpu_model: str) -> CpuTdp:
    """The TDP of a CPU model string, from CodeCarbon's table, else the default."""
    table = _tdp_table()
    key = _normalise(cpu_model)
    if key in table:
        return CpuTdp(table[key], f"CodeCarbon CPU table: {cpu_model}", True)
    matches = [name for name in table if name and _has_word(key, name)]
    if matches:
        best = max(matches, key=len)  # the most specific model name inside the string
        return CpuTdp(table[best], f"CodeCarbon CPU table: {best}", True)
    return CpuTdp(DEFAULT_CPU_TDP_W,
                  f"default {DEFAULT_CPU_TDP_W:g} W ({cpu_model!r} not in the CPU table)", False)


def read_cpu_times(stat_path: Path = Path("/proc/stat")) -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine, in ticks; process time where /proc is absent.
    Busy is user + nice + system + irq + softirq (guest time is inside user and nice); steal --
    time the hypervisor gave our cores to another virtual machine -- counts in the total but is
    not this machine's work, so it is not charged."""
    try:
        fields = [float(v) for v in stat_path.read_text().splitlines()[0].split()[1:]] + [0.0] * 8
        user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
        return user + nice + system + irq + softirq, sum(fields[:8])
    except (OSError, ValueError, IndexError):
        return time.process_time(), time.perf_counter() * (os.cpu_count() or 1)


def utilisation(start: tuple[float, float], end: tuple[float, float]) -> float:
    busy, total = end[0] - start[0], end[1] - start[1]
    return min(1.0, max(0.0, busy / total)) if total > 0 else 0.0



#: Where a CPU TDP model's watts come from: CodeCarbon's table, the default for a CPU the table
#: lacks (absolute joules arbitrary), or the study's `cpu_tdp_w`.
TDP_ORIGINS = ("table", "default", "cpu_tdp_w")


class CpuTdpModel(Meter):
    """Modelled CPU energy: TDP x utilisation x window time."""

    method = Method.TDP_MODEL
    kind = Kind.MODELLED
    components = ["cpu"]

    def __init__(self, tdp_w: float, tdp_source: str, stat_path: Path = Path("/proc/stat"),
                 origin: str = "table") -> None:
        self.tdp_w = tdp_w
        self.tdp_source = tdp_source
        self.origin = origin  # TDP_ORIGINS: CodeCarbon's table, the default, or cpu_tdp_w
        self.stat_path = stat_path
        self._starts: dict[str, tuple[float, float]] = {}
        self._last_sample = read_cpu_times(stat_path)

    def describe(self) -> str:
        return f"CPU: {self.tdp_w:g} W TDP ({self.tdp_source}) x machine utilisation (/proc/stat)"

    def begin(self, name: str) -> None:
        self._starts[name] = read_cpu_times(self.stat_path)

    def end(self, name: str, duration_s: float) -> list[Reading]:
        share = utilisation(self._starts.pop(name), read_cpu_times(self.stat_path))
        return [Reading("cpu", self.tdp_w * share * duration_s, self.method, self.kind)]

    def power_w(self) -> dict[str, float]:
        """Power since the previous call, for the timeline sampler."""
        now = read_cpu_times(self.stat_path)
        share, self._last_sample = utilisation(self._last_sample, now), now
        return {"cpu": self.tdp_w * share}


class RamPowerModel(Meter):
    """Modelled RAM energy: a constant power x window time."""

    method = Method.RAM_MODEL
    kind = Kind.MODELLED
    components = ["ram"]

    def __init__(self, power_w: float, source: str) -> None:
        self.power_w_value = power_w
        self.source = source

    @classmethod
    def default(cls, override_w: float | None = None) -> "RamPowerModel":
        if override_w is not None:
            return cls(override_w, "ram_power_w parameter")
        gb = total_ram_gb()
        return cls(gb * RAM_W_PER_GB, f"3 W per 8 GB x {gb:.1f} GB installed")

    def describe(self) -> str:
        return f"RAM: constant {self.power_w_value:.2f} W ({self.source})"

    def end(self, name: str, duration_s: float) -> list[Reading]:
        return [Reading("ram", self.power_w_value * duration_s, self.method, self.kind)]

    def power_w(self) -> dict[str, float]:
        return {"ram": self.power_w_value}
