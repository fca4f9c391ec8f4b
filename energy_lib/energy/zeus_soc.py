"""An SoC's energy as Zeus reports it (Apple silicon, NVIDIA Jetson), made one `soc` row.

Zeus's `Measurement.soc_energy` is a dataclass of per-subsystem figures in millijoules, whatever
the chip: `AppleSiliconMeasurement` (IOReport energy counters, ints; per-core and per-cluster
lists are parts of `cpu_total_mj`) and `JetsonMeasurement` (INA3221 power rails integrated by a
Zeus helper process, floats; `total_energy_mj` is the module's input rail and contains the CPU and
GPU rails). The table gets the chip's energy once, in joules, summed over subsystems that do not
overlap, so no part is counted twice and no part of the chip is left out.
"""

from __future__ import annotations

from typing import Any

from .table import Method

MJ_PER_J = 1000.0
#: Apple's channels that do not overlap: CPU (all clusters), GPU, GPU SRAM, DRAM, Neural Engine.
APPLE_PARTS_MJ = ("cpu_total_mj", "gpu_mj", "gpu_sram_mj", "dram_mj", "ane_mj")
#: What each Apple channel covers of the components a run would otherwise model.
APPLE_COVERS = {"cpu_total_mj": "cpu", "gpu_mj": "gpu", "dram_mj": "ram"}
#: Jetson's rails when the module's input rail is missing (it would contain both).
JETSON_PARTS_MJ = ("cpu_energy_mj", "gpu_energy_mj")
JETSON_COVERS = {"cpu_energy_mj": "cpu", "gpu_energy_mj": "gpu"}


def present_soc() -> Any | None:
    """The SoC Zeus finds here (its singleton, which ZeusMonitor uses too), or None."""
    from zeus.device import get_soc
    from zeus.device.soc.common import ZeusSoCInitError

    try:
        return get_soc()
    except ZeusSoCInitError:
        return None


def _is_apple(thing: Any) -> bool:
    from zeus.device.soc.apple import AppleSilicon, AppleSiliconMeasurement

    return isinstance(thing, (AppleSilicon, AppleSiliconMeasurement))


def soc_method(soc: Any) -> Method:
    """The method of the SoC Zeus found: Apple's energy counters, else Jetson's power rails."""
    return Method.ZEUS_APPLE_SILICON if _is_apple(soc) else Method.ZEUS_JETSON


def soc_energy_j(measurement: Any) -> float:
    """Joules of one SoC measurement (a window's, or Zeus's cumulative figure)."""
    if _is_apple(measurement):
        parts = APPLE_PARTS_MJ
    elif getattr(measurement, "total_energy_mj", None) is not None:
        parts = ("total_energy_mj",)
    else:
        parts = JETSON_PARTS_MJ
    return sum(getattr(measurement, p, None) or 0 for p in parts) / MJ_PER_J


def soc_covers(soc: Any) -> set[str]:
    """The components ("cpu", "gpu", "ram") the SoC's row contains, from the metrics Zeus says
    the chip exposes: a model standing in for one of them would count it twice."""
    available = soc.get_available_metrics()
    if _is_apple(soc):
        return {c for field, c in APPLE_COVERS.items() if field in available}
    if "total_energy_mj" in available:
        return {"cpu", "gpu", "ram"}
    return {c for field, c in JETSON_COVERS.items() if field in available}


def describe_soc(soc: Any) -> str:
    """One line: what the SoC row is read from and what it contains."""
    available = soc.get_available_metrics()
    if _is_apple(soc):
        parts = [p.removesuffix("_mj") for p in APPLE_PARTS_MJ if p in available]
        return f"SoC: Zeus, Apple silicon IOReport energy counters ({' + '.join(parts)})"
    rails = (["total (module input)"] if "total_energy_mj" in available else
             [p.removesuffix("_energy_mj") for p in JETSON_PARTS_MJ if p in available])
    return f"SoC: Zeus, Jetson INA3221 power rails integrated ({' + '.join(rails)})"
