"""`energy-study selfcheck`: what can be measured here, as Zeus sees it?

On a GPU it measures idle power, then a known workload (large matrix products for a few seconds)
with Zeus's reading of the NVML energy counter, and compares it with the GPU's power polled by
Zeus's PowerMonitor and integrated over the same window -- two independent NVML paths that should
agree within a few per cent. It also says how often the energy counter moved (the shortest
window a figure can be trusted for). On a CPU-only machine it says which components Zeus
can measure (RAPL), which fall back to a model and why, and shows the figures of an idle and a
busy window.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from .energy import EnergyMonitor
from .energy.meters import build_meters
from .energy.monitor import Meter
from .energy.power_models import CpuTdpModel, RamPowerModel
from .energy.zeus_meter import ZeusMeter
from .provenance import cpu_model

def _workload(device: torch.device, seconds: float) -> int:
    """Matrix products until `seconds` have passed; returns how many ran."""
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            a = torch.mm(a, b).clamp_(-1, 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        count += 10
    return count


def _measure(meters: list[Meter], device: torch.device, idle_s: float, busy_s: float) -> dict:
    monitor = EnergyMonitor(meters, device)
    monitor.begin_window("idle")
    time.sleep(idle_s)
    idle = monitor.end_window("idle")
    monitor.begin_window("busy")
    _workload(device, busy_s)
    busy = monitor.end_window("busy")
    return {"idle": idle, "busy": busy}


def _report(windows: dict) -> None:
    for name, window in windows.items():
        for r in window.readings:
            print(f"  {name:>4} {r.component:>4}: {r.energy_j:9.1f} J over {window.duration_s:5.2f} s "
                  f"= {r.energy_j / window.duration_s:7.1f} W  [{r.method}, {r.kind}]"
                  + (f"  ! {r.flag}" if r.flag else ""))


def counter_vs_polled(meter: ZeusMeter, device: torch.device,
                      work: Callable[[], object]) -> tuple[float, float, float] | None:
    """(counter J, polled-power J, seconds) of the GPU over one window of `work`: Zeus's reading
    of the energy counter, and Zeus's PowerMonitor's power integrated over the same span. None
    where the PowerMonitor could not start (`meter.power_monitor_failure` says why)."""
    meter.start_power_series()
    if meter.power_monitor is None:
        return None
    monitor = EnergyMonitor([meter], device)
    monitor.begin_window("agree")
    start = time.time()
    work()
    window = monitor.end_window("agree")
    polled = meter.power_monitor.get_energy(start, time.time()) or {}
    return window.readings[0].energy_j, sum(polled.values()), window.duration_s


def check_gpu(idle_s: float = 3.0, busy_s: float = 8.0) -> int:
    device = torch.device("cuda:0")
    print(f"GPU: {torch.cuda.get_device_name(device)}")
    chosen = build_meters(["nvml"], device, assumed_power_w=None)  # the GPU's counter alone
    meter = chosen.by_component().get("gpu")
    if meter is None:
        print(f"  cannot measure GPU energy: {'; '.join(chosen.notes)}")
        return 1
    print(f"  {meter.describe()}")
    period = meter.gpu_update_period_s
    print(f"  energy counter update period: {period * 1000:.0f} ms (shorter windows read noise)"
          if period else "  energy counter update period: not measurable here")
    try:
        _workload(device, 1.0)  # warm up: CUDA context, clocks
        windows = _measure([meter], device, idle_s, busy_s)
        compared = counter_vs_polled(meter, device, lambda: _workload(device, busy_s))
    finally:
        meter.close()
    _report(windows)
    if compared is None:
        print(f"  counter vs polled power: not compared: {meter.power_monitor_failure}")
        return 1
    counter_j, polled_j, seconds = compared
    off_pct = 100 * (polled_j - counter_j) / counter_j
    print(f"  counter vs polled power (Zeus's PowerMonitor, every "
          f"{meter.power_monitor.update_period * 1000:.0f} ms) over {seconds:.1f} s of work: "
          f"{counter_j:.1f} J vs {polled_j:.1f} J ({off_pct:+.1f} %)")
    return 0


def check_cpu(idle_s: float = 2.0, busy_s: float = 3.0) -> int:
    device = torch.device("cpu")
    # RAPL for CPU and DRAM where readable; the TDP and RAM models for what it cannot read
    chosen = build_meters(["rapl", "cpu-model", "ram-model"], device, assumed_power_w=None,
                          cpu_model=cpu_model())
    covered = chosen.by_component()
    cpu = covered["cpu"]
    if isinstance(cpu, CpuTdpModel):
        print(f"CPU: not measured -- {'; '.join(chosen.notes)}\n"
              f"  modelled instead: {cpu.tdp_w:g} W TDP ({cpu.tdp_source}) x utilisation")
    else:
        print(f"CPU: measured -- {cpu.describe()}")
    if isinstance(covered["ram"], RamPowerModel):
        print(f"RAM: not measured (no RAPL DRAM domain) -- {covered['ram'].describe()}")
    if not torch.cuda.is_available():
        gpu_notes = ZeusMeter.unavailable([0], measure_cpu=False)  # no monitor needed to say why
        print(f"GPU: none visible to torch ({'; '.join(gpu_notes) or 'no CUDA device'})")
    try:
        _report(_measure(chosen.meters, device, idle_s, busy_s))
    finally:
        chosen.close()
    return 0


def main() -> int:
    print(f"energy self-check on {cpu_model()}")
    status = check_gpu() if torch.cuda.is_available() else 0
    return max(status, check_cpu())


if __name__ == "__main__":
    sys.exit(main())
