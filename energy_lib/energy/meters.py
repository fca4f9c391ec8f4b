"""Choose the meters for a run: measured where the hardware allows, modelled where not.

`auto` picks, per component: GPU -> Zeus (NVML/amdsmi) for CUDA runs; CPU -> Zeus (RAPL), else
the TDP model; RAM -> RAPL's DRAM domain, else the RAM model; on Apple silicon or a Jetson, the
SoC's counters through Zeus (one `soc` row with the chip's CPU, GPU and memory: no model stands in
for what it contains). The original study's constant-power estimate is added for comparison (a
run always has it; the self-check does not).
Under `auto` every fallback is explained once in `notes`, never raised; a meter named explicitly
(`nvml`, `rapl`) that cannot work here is a ConfigError before anything runs (`check_available`).

`build_meters` is the one place a set of meters is assembled: runs, the self-check and the
calibration all call it. It builds the run's one ZeusMonitor; `check_available` builds none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .constant_power import ConstantPowerEstimator
from .monitor import Meter
from .power_models import CpuTdpModel, RamPowerModel, lookup_cpu_tdp
from .zeus_meter import ZeusMeter


@dataclass
class MeterSet:
    meters: list[Meter] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is measured, what is modelled, and why
    cpu_tdp_w: float | None = None
    ram_power_w: float | None = None
    cpu_model: str = ""

    def describe(self) -> list[str]:
        return [line for line in (m.describe() for m in self.meters) if line] + self.notes

    def methods(self) -> dict[str, dict[str, str]]:
        """component -> {"method": ..., "kind": ...} for the meters of real components."""
        out = {}
        for meter in self.meters:
            out.update({c: {"method": m, "kind": k} for c, (m, k) in meter.methods().items()})
        return out

    def update_periods_s(self) -> dict[str, float]:
        """component -> its counter's measured update period (s), for the record."""
        return {c: s for meter in self.meters for c, s in meter.update_periods_s().items()}

    def cpu_tdp(self) -> dict | None:
        """The CPU TDP model's watts and their origin (power_models.TDP_ORIGINS), for the record:
        None where no TDP model is among the meters."""
        model = next((m for m in self.meters if isinstance(m, CpuTdpModel)), None)
        return None if model is None else {"tdp_w": model.tdp_w, "origin": model.origin,
                                           "source": model.tdp_source}

    def by_component(self) -> dict[str, Meter]:
        """component -> the meter that covers it (a later meter wins, as in `methods`)."""
        return {c: meter for meter in self.meters for c in meter.components}

    def model_for(self, component: str) -> Meter | None:
        """The model that stands in for `component` when its meter fails mid-run."""
        if component == "cpu":
            if self.cpu_tdp_w:
                return CpuTdpModel(self.cpu_tdp_w, "cpu_tdp_w parameter", origin="cpu_tdp_w")
            found = lookup_cpu_tdp(self.cpu_model)
            return CpuTdpModel(found.tdp_w, found.source,
                               origin="table" if found.in_table else "default")
        if component == "ram":
            return RamPowerModel.default(self.ram_power_w)
        return None  # a GPU has no model here: only its measured mean power can stand in

    def close(self) -> None:
        for meter in self.meters:
            meter.close()


def _wants(names: list[str], device: torch.device) -> tuple[bool, bool]:
    """(measure the GPU, measure the CPU) for these meter names on this device."""
    auto = "auto" in names
    gpu = (auto and device.type == "cuda") or "nvml" in names
    cpu = auto or "rapl" in names
    return gpu, cpu


def check_available(names: list[str], device: torch.device) -> None:
    """Refuse, before any cell runs, a meter named explicitly that cannot work here. Zeus's
    device layer answers; no ZeusMonitor is built (the run builds its one in `build_meters`)."""
    if "nvml" in names:
        if device.type != "cuda":
            where = "Apple's MPS" if device.type == "mps" else "the CPU (no CUDA GPU visible)"
            raise ConfigError(f"meters includes 'nvml' but this run uses {where}; use "
                              "meters='auto' or drop 'nvml'")
        notes = ZeusMeter.unavailable([device.index or 0], measure_cpu=False)
        if notes:
            raise ConfigError(f"meters includes 'nvml' but {'; '.join(notes)}; "
                              "use meters='auto' to fall back to the models")
    if "rapl" in names:
        notes = ZeusMeter.unavailable([], measure_cpu=True)
        if notes:
            raise ConfigError(f"meters includes 'rapl' but {'; '.join(notes)}; use meters='auto' "
                              "(the TDP and RAM models stand in) or drop 'rapl'")


def build_meters(names: list[str], device: torch.device, *, assumed_power_w: float | None,
                 cpu_tdp_w: float | None = None, ram_power_w: float | None = None,
                 cpu_model: str = "") -> MeterSet:
    """The meters `names` ask for on `device`, each fallback explained in `notes`.
    `assumed_power_w` None leaves out the constant-power estimate (the self-check compares
    meters of real components only)."""
    auto = "auto" in names
    chosen = MeterSet(cpu_tdp_w=cpu_tdp_w, ram_power_w=ram_power_w, cpu_model=cpu_model)
    have: set[str] = set()
    want_gpu, want_cpu = _wants(names, device)
    if want_gpu or want_cpu:
        gpu_indices = [device.index or 0] if want_gpu and device.type == "cuda" else []
        meter, notes = ZeusMeter.probe(gpu_indices, measure_cpu=want_cpu, measure_soc=auto)
        chosen.notes += notes
        if meter is not None:
            chosen.meters.append(meter)
            have.update(meter.covered)
    if auto and device.type != "cuda" and "gpu" not in have:
        chosen.notes.insert(0, "GPU energy not measured: " + (
            "Zeus found no Apple silicon energy counters (pip install 'zeus[apple]')"
            if device.type == "mps" else "this run uses the CPU"))
    if (auto or "cpu-model" in names or "rapl" in names) and "cpu" not in have:
        chosen.meters.append(chosen.model_for("cpu"))
        have.add("cpu")
    if (auto or "ram-model" in names) and "ram" not in have:
        chosen.meters.append(chosen.model_for("ram"))
        have.add("ram")
    if assumed_power_w is not None:
        chosen.meters.append(ConstantPowerEstimator(assumed_power_w))  # for comparison
    return chosen
