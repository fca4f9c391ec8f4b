"""`energy-study selfcheck`: what can be measured here, as Zeus sees it?

On a GPU it measures idle power, then a known workload (large matrix products for a few seconds)
with Zeus's reading of the NVML energy counter, and compares it with the GPU's instantaneous
power sampled every 100 ms and integrated over the same window -- two independent NVML paths
that should agree within a few per cent. On a CPU-only machine it says which components Zeus
can measure (RAPL), which fall back to a model and why, and shows the figures of an idle and a
busy window.
"""

from __future__ import annotations

import sys
import threading
import time

import torch

from .energy import EnergyMonitor
from .energy.meters import build_meters
from .energy.monitor import Meter
from .energy.power_models import CpuTdpModel, RamPowerModel
from .energy.zeus_meter import ZeusMeter
from .provenance import cpu_model

SAMPLE_PERIOD_S = 0.1


class PowerIntegrator(threading.Thread):
    """Integrates sampled power (W) into joules (trapezoids): the independent cross-check of
    an energy counter."""

    def __init__(self, read_power_w, period_s: float = SAMPLE_PERIOD_S) -> None:
        super().__init__(daemon=True, name="power-integrator")
        self.read_power_w = read_power_w
        self.period_s = period_s
        self.joules = 0.0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._last = (time.perf_counter(), read_power_w())

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self.sample()

    def sample(self) -> float:
        now, power = time.perf_counter(), self.read_power_w()
        with self._lock:
            t0, p0 = self._last
            self.joules += (now - t0) * (p0 + power) / 2
            self._last = (now, power)
            return self.joules

    def stop(self) -> None:
        self._halt.set()


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


def check_gpu(idle_s: float = 3.0, busy_s: float = 8.0) -> int:
    device = torch.device("cuda:0")
    print(f"GPU: {torch.cuda.get_device_name(device)}")
    chosen = build_meters(["nvml"], device, assumed_power_w=None)  # the GPU's counter alone
    meter = chosen.by_component().get("gpu")
    if meter is None:
        print(f"  cannot measure GPU energy: {'; '.join(chosen.notes)}")
        return 1
    print(f"  {meter.describe()}")
    integrator = PowerIntegrator(lambda: meter.power_w()["gpu"])
    integrator.start()
    try:
        _workload(device, 1.0)  # warm up: CUDA context, clocks
        windows = _measure([meter], device, idle_s, busy_s)
        start = integrator.sample()
        monitor = EnergyMonitor([meter], device)
        monitor.begin_window("agree")
        _workload(device, busy_s)
        window = monitor.end_window("agree")
        sampled_j = integrator.sample() - start
    finally:
        integrator.stop()
        meter.close()
    _report(windows)
    counter_j = window.readings[0].energy_j
    print(f"  counter vs sampled power over {window.duration_s:.1f} s of work: {counter_j:.1f} J vs "
          f"{sampled_j:.1f} J ({100 * (sampled_j - counter_j) / counter_j:+.1f} %)")
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
