"""Which device a config runs on, which autocast dtype its precision means there, and whether the
meters it names can work there. (Waiting for the device before reading a clock is
`energy.monitor.synchronize`, beside the clock it protects.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..energy.meters import check_available
from ..errors import ConfigError
from ..provenance import gpu_bf16_native

if TYPE_CHECKING:  # a RunConfig is passed in; the training core never builds one
    from ..config import RunConfig


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: no autocast (fp32)
    use_grad_scaler: bool  # float16 needs loss scaling; bfloat16 has fp32's range and does not
    eval_autocast: bool  # the original study evaluated AMP models without autocast


def devices_here() -> list[str]:
    """The device values this machine can run: what a refusal offers instead."""
    here = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        here += ["cuda", f"cuda:0..cuda:{count - 1}" if count > 1 else "cuda:0"]
    if torch.backends.mps.is_available():
        here.append("mps")
    return here


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps' is not available here (torch.backends.mps.is_available() "
                          "is False: not Apple silicon on macOS 12.3+, or a torch without MPS); "
                          f"use one of: {', '.join(devices_here())}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} is not available here (no CUDA GPU visible); "
                              "use device='auto' or 'cpu'")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} GPU(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype:
    """What `precision = "amp"` computes in on this device: float16 with loss scaling on CUDA
    (the original study), bfloat16 on a CPU (its autocast dtype)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def resolve_runtime(config: RunConfig) -> Runtime:
    """Check that the device can run the precision, and say what to use instead if not."""
    device = resolve_device(config.device)
    check_available(config.meter_names, device)  # a meter named explicitly must work here
    on_cuda = device.type == "cuda"
    if config.precision == "fp32":
        return Runtime(device, None, False, False)
    if config.precision == "bf16":
        if on_cuda and not gpu_bf16_native(device):
            gpu = torch.cuda.get_device_name(device)
            raise ConfigError(f"precision='bf16' is not supported on {gpu}; use 'amp' (float16 "
                              "with loss scaling) or 'fp32'")
        return Runtime(device, torch.bfloat16, False, True)
    # amp: float16 + gradient scaling on CUDA (the original study); CPU autocast is bfloat16.
    return Runtime(device, amp_dtype(device), on_cuda, False)




def describe_accelerator() -> str:
    """One line for a notebook: which GPU this run will use, or why it will use the CPU."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return (f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
                f"{props.major}.{props.minor}, bf16 "
                f"{'native' if gpu_bf16_native(torch.device('cuda', 0)) else 'emulated only'}"
                f"; CUDA {torch.version.cuda}")
    return "no CUDA GPU visible: running on the CPU (in Colab: Runtime > Change runtime type > GPU)"


def emulated_precision(precision: str, device: torch.device, machine: dict) -> str | None:
    """Why `precision` runs emulated on `device` of the fingerprinted `machine`
    (provenance.fingerprint), in one sentence; None where it computes natively (or is fp32).
    bfloat16 autocast on a CPU without avx512_bf16/AMX (or Arm's bf16), or on a GPU without
    native bf16 (a T4), runs through a software path: its time and energy say how fast that
    path is here, not what 16-bit arithmetic costs."""
    from ..provenance import cpu_bf16_native

    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else amp_dtype(device)
    if dtype != torch.bfloat16:
        return None
    if device.type == "cpu" and not cpu_bf16_native(machine):
        where = f"this CPU ({machine.get('cpu_model')}: no avx512_bf16, amx_bf16 or bf16 flag)"
    elif device.type == "cuda" and machine.get("gpu_bf16_native") is False:
        where = f"this GPU ({machine.get('gpu_name')}: no native bf16)"
    else:
        return None
    return (f"{precision} (bfloat16 autocast) is emulated on {where}: its time and energy effect "
            "is a software-path effect, not a property of 16-bit arithmetic")


def threads_for_free_cores(idle_window: dict | None, threads: int) -> int:
    """The CPU threads to train with, given the idle window just measured (a record's `windows`
    row, energy.attribution.WindowShare): as many as now, less the cores other processes (and
    the hypervisor's steal) kept busy meanwhile, at least one. Why: beside a process spinning on
    one of two cores, two threads wait on the slower one at every operation, spinning meanwhile;
    the run took ~4x as long and its own CPU time ~2.5x (benchmark P9). Threads matched to the
    free cores keep the cell's own CPU time, hence its attributed energy, near its quiet value."""
    if not idle_window or not idle_window.get("cores"):
        return threads
    busy_cores = round((idle_window["others_cpu_share"] + idle_window["steal_share"])
                       * idle_window["cores"])
    return max(1, min(threads, idle_window["cores"] - busy_cores))
