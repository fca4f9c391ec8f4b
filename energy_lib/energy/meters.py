"""Choose the meters for a run: measured where the hardware allows, modelled where not.

`auto` picks, per component: GPU -> Zeus (NVML/amdsmi) for CUDA runs; CPU -> Zeus (RAPL), else
the TDP model; RAM -> RAPL's DRAM domain, else the RAM model. The original study's
constant-power estimate is always added, for comparison. Under `auto` every fallback is
explained once in `notes`, never raised; a meter named explicitly (`nvml`, `rapl`) that cannot
work here is a ConfigError before anything runs (`check_available`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .constant_power import ConstantPowerEstimator
from .models import CpuTdpModel, RamPowerModel, lookup_cpu_tdp
from .zeus_meter import ZeusMeter


@dataclass
class MeterSet:
    meters: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is measured, what is modelled, and why
    cpu_tdp_w: float | None = None
    ram_power_w: float | None = None
    cpu_model: str = ""

    def describe(self) -> list[str]:
        return [m.describe() for m in self.meters if hasattr(m, "describe")] + self.notes

    def methods(self) -> dict[str, dict[str, str]]:
        """component -> {"method": ..., "kind": ...} for the meters of real components."""
        out = {}
        for meter in self.meters:
            if hasattr(meter, "methods"):
                pairs = meter.methods()
            else:
                pairs = {c: (str(meter.method), str(meter.kind))
                         for c in getattr(meter, "components", [])}
            out.update({c: {"method": m, "kind": k} for c, (m, k) in pairs.items()})
        return out

    def model_for(self, component: str):
        """The model that stands in for `component` when its meter fails mid-run."""
        if component == "cpu":
            tdp_w, source = ((self.cpu_tdp_w, "cpu_tdp_w parameter") if self.cpu_tdp_w
                             else lookup_cpu_tdp(self.cpu_model))
            return CpuTdpModel(tdp_w, source)
        if component == "ram":
            return RamPowerModel.default(self.ram_power_w)
        return None  # a GPU has no model here: only its measured mean power can stand in

    def close(self) -> None:
        for meter in self.meters:
            if hasattr(meter, "close"):
                meter.close()


def _wants(names: list[str], device: torch.device) -> tuple[bool, bool]:
    """(measure the GPU, measure the CPU) for these meter names on this device."""
    auto = "auto" in names
    gpu = (auto and device.type == "cuda") or "nvml" in names
    cpu = auto or "rapl" in names
    return gpu, cpu


def check_available(names: list[str], device: torch.device) -> None:
    """Refuse, before any cell runs, a meter named explicitly that cannot work here."""
    if "nvml" in names:
        if device.type != "cuda":
            raise ConfigError("meters includes 'nvml' but this run uses the CPU (no CUDA GPU "
                              "visible); use meters='auto' or drop 'nvml'")
        meter, notes = ZeusMeter.probe([device.index or 0], measure_cpu=False)
        if meter is None:
            raise ConfigError(f"meters includes 'nvml' but {'; '.join(notes) or 'Zeus cannot read the GPU'}; "
                              "use meters='auto' to fall back to the models")
    if "rapl" in names:
        meter, notes = ZeusMeter.probe([], measure_cpu=True)
        if meter is None:
            raise ConfigError(f"meters includes 'rapl' but {'; '.join(notes)}; use meters='auto' "
                              "(the TDP and RAM models stand in) or drop 'rapl'")


def build_meters(names: list[str], device: torch.device, *, assumed_power_w: float,
                 cpu_tdp_w: float | None = None, ram_power_w: float | None = None,
                 cpu_model: str = "") -> MeterSet:
    auto = "auto" in names
    chosen = MeterSet(cpu_tdp_w=cpu_tdp_w, ram_power_w=ram_power_w, cpu_model=cpu_model)
    have: set[str] = set()
    want_gpu, want_cpu = _wants(names, device)
    if auto and device.type != "cuda":
        chosen.notes.append("GPU energy not measured: this run uses the CPU")
    if want_gpu or want_cpu:
        gpu_indices = [device.index or 0] if want_gpu and device.type == "cuda" else []
        meter, notes = ZeusMeter.probe(gpu_indices, measure_cpu=want_cpu)
        chosen.notes += notes
        if meter is not None:
            chosen.meters.append(meter)
            have.update(meter.components)
    if (auto or "cpu-model" in names or "rapl" in names) and "cpu" not in have:
        chosen.meters.append(chosen.model_for("cpu"))
        have.add("cpu")
    if (auto or "ram-model" in names) and "ram" not in have:
        chosen.meters.append(chosen.model_for("ram"))
        have.add("ram")
    chosen.meters.append(ConstantPowerEstimator(assumed_power_w))  # always, for comparison
    return chosen
