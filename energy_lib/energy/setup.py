"""Choose the meters for a run: measured where the hardware allows, modelled where not.

`auto` picks, per component: GPU -> NVML (CUDA runs); CPU -> RAPL, else the TDP model; RAM ->
RAPL's DRAM domain, else the RAM model. The original study's constant-power estimate is always
added, for comparison. Every fallback is explained once in `notes`, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .constant_power import ConstantPowerEstimator
from .models import CpuTdpModel, RamPowerModel, lookup_cpu_tdp
from .nvml import NvmlMeter
from .rapl import POWERCAP_ROOT, RaplMeter


@dataclass
class MeterSet:
    meters: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is measured, what is modelled, and why

    def describe(self) -> list[str]:
        return [m.describe() for m in self.meters if hasattr(m, "describe")] + self.notes

    def components(self) -> dict[str, str]:
        """component -> 'method (kind)' for the meters that report real components."""
        return {c: f"{m.method} ({m.kind})" for m in self.meters
                for c in getattr(m, "components", [])}

    def close(self) -> None:
        for meter in self.meters:
            if hasattr(meter, "close"):
                meter.close()


def build_meters(names: list[str], device: torch.device, *, assumed_power_w: float,
                 cpu_tdp_w: float | None = None, ram_power_w: float | None = None,
                 cpu_model: str = "", powercap_root=POWERCAP_ROOT, nvml_module=None) -> MeterSet:
    wanted = set(names)
    auto = "auto" in wanted
    chosen = MeterSet()
    have: set[str] = set()

    if auto and device.type == "cuda" or "nvml" in wanted:
        if device.type == "cuda":
            meter, why = NvmlMeter.probe([device.index or 0], nvml=nvml_module)
            if meter:
                chosen.meters.append(meter)
                have.add("gpu")
            else:
                chosen.notes.append(f"GPU energy not measured: {why}")
        else:
            chosen.notes.append("GPU energy not measured: this run uses the CPU")

    if auto or "rapl" in wanted:
        meter, why = RaplMeter.probe(powercap_root)
        if meter:
            chosen.meters.append(meter)
            have.update(meter.components)
        else:
            chosen.notes.append(f"CPU energy not measured: {why}; using the TDP model instead")
            wanted.add("cpu-model")

    if (auto or "cpu-model" in wanted) and "cpu" not in have:
        tdp_w, source = (cpu_tdp_w, "cpu_tdp_w parameter") if cpu_tdp_w else lookup_cpu_tdp(cpu_model)
        chosen.meters.append(CpuTdpModel(tdp_w, source))
        have.add("cpu")

    if (auto or "ram-model" in wanted) and "ram" not in have:
        chosen.meters.append(RamPowerModel.default(ram_power_w))
        have.add("ram")

    chosen.meters.append(ConstantPowerEstimator(assumed_power_w))  # always, for comparison
    return chosen
