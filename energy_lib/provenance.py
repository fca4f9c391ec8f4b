"""Where and with what a run was made: stored in every lab record so a figure can be traced to a
commit, a library version and a machine.

The machine is described by its *fingerprint* (`fingerprint`): the facts that change how fast
training runs -- the CPU's identity (vendor, family, model, stepping) and the instruction-set
flags that decide which kernels torch can use (a bf16 autocast with avx512_bf16 or AMX is native
arithmetic; without them it is emulated, often slower than fp32), the cores this process may
use, the torch build and its CPU capability, and the GPU (capability, native bf16) -- plus a short
digest over those fields, so two records can be compared without trusting a marketing name
("AMD EPYC" named two CPUs here whose bf16 speeds differ tenfold). The CPU facts are read from
/proc/cpuinfo (what the kernel reports, fast, no dependency); py-cpuinfo reads the same file on
Linux but starts a subprocess for it. torch's own view comes from `torch.backends.cpu` and
`torch.__config__`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import metadata
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .bundled import PROJECT_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


#: instruction-set flags that change training speed: x86 (/proc/cpuinfo `flags`) and Arm
#: (`Features`: asimd, sve, bf16, i8mm)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile",
               "amx_bf16", "amx_fp16", "asimd", "sve", "sve2", "bf16", "i8mm")
#: the fingerprint's fields that change speed: its digest is taken over these
SPEED_FIELDS = ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_flags",
                "usable_cores", "torch_threads", "torch_version", "torch_build", "cpu_capability",
                "gpu_name", "gpu_capability", "gpu_bf16_native")
#: flags under which a CPU runs bfloat16 arithmetic natively (else torch emulates it)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    facts: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        facts.setdefault(key.strip(), value.strip())
    return facts


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; platform's guess elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def torch_build() -> str:
    """"cuda 13.0", "rocm 6.2" or "cpu": which accelerator this torch was built for."""
    if torch.version.cuda:
        return f"cuda {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"rocm {torch.version.hip}"
    return "cpu"


def _torch_config() -> dict[str, str | None]:
    """oneDNN's version and the BLAS, as torch's build configuration reports them."""
    shown = torch.__config__.show()
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v([\w.]+)", shown)
    blas = re.search(r"BLAS_INFO=(\w+)", shown)
    return {"onednn_version": onednn.group(1) if onednn else None,
            "blas": blas.group(1) if blas else None}


def gpu_bf16_native(device: torch.device) -> bool:
    """Whether the CUDA `device` computes bfloat16 in hardware (compute capability 8.0+).
    torch's default `is_bf16_supported()` also counts emulation, which says yes on a T4 (7.5,
    Colab's GPU), where bf16 runs through a slow software path; and it answers for the current
    device, so `device` is made current while it is asked (a node may mix GPU models)."""
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def _gpu_facts(device: torch.device | None) -> dict:
    """The GPU a run uses: name, compute capability, memory, driver, power limit, and whether it
    computes bf16 natively (a T4 emulates it). Empty for a CPU run."""
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return {"gpu_name": None, "gpu_capability": None, "gpu_bf16_native": None}
    index = device.index or 0
    props = torch.cuda.get_device_properties(index)
    facts = {"gpu_name": props.name, "gpu_capability": f"{props.major}.{props.minor}",
             "gpu_memory_gb": round(props.total_memory / 1e9, 1),
             "gpu_bf16_native": gpu_bf16_native(torch.device("cuda", index)),
             "gpu_driver": None, "gpu_power_limit_w": None}
    try:  # the driver and the board's power limit: NVML (pynvml ships with Zeus)
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        driver = pynvml.nvmlSystemGetDriverVersion()
        facts["gpu_driver"] = driver.decode() if isinstance(driver, bytes) else driver
        facts["gpu_power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    except Exception:  # no NVML (a ROCm build, a container without the library): left empty
        pass
    return facts


def fingerprint(device: torch.device | None = None) -> dict:
    """The machine as far as training speed goes (module docstring), with `digest`: 12 hex
    characters over SPEED_FIELDS, equal on two machines exactly when those fields are."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        usable = os.cpu_count()
    facts = {
        "cpu_vendor": info.get("vendor_id") or info.get("CPU implementer") or platform.machine(),
        "cpu_family": info.get("cpu family") or info.get("CPU architecture"),
        "cpu_model_number": info.get("model") or info.get("CPU part"),
        "cpu_stepping": info.get("stepping") or info.get("CPU revision"),
        "cpu_model": cpu_model(),
        "cpu_flags": sorted(flags & set(SPEED_FLAGS)),
        "usable_cores": usable,
        "ram_total_gb": round(total_ram_gb(), 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__.split("+")[0],
        "torch_build": torch_build(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **_torch_config(),
        **_gpu_facts(device),
    }
    speed = json.dumps({name: facts.get(name) for name in SPEED_FIELDS}, sort_keys=True)
    facts["digest"] = hashlib.sha256(speed.encode()).hexdigest()[:12]
    return facts


def cpu_bf16_native(facts: dict) -> bool:
    """Whether the fingerprint's CPU computes bfloat16 natively (else torch emulates it)."""
    return bool(set(facts.get("cpu_flags") or ()) & set(CPU_BF16_FLAGS))


def describe_machine(facts: dict) -> str:
    """One line a reader can compare: the processor (or GPU) with the flags that matter, the
    torch build, the cores, and the digest."""
    flags = ", ".join(facts.get("cpu_flags") or ()) or "no avx2/avx512/amx flags"
    cpu = (f"{facts.get('cpu_model')} (family {facts.get('cpu_family')} model "
           f"{facts.get('cpu_model_number')}; {flags})")
    gpu = ""
    if facts.get("gpu_name"):
        gpu = (f"{facts['gpu_name']} (compute {facts['gpu_capability']}, bf16 "
               f"{'native' if facts.get('gpu_bf16_native') else 'emulated'}) with ")
    return (f"{gpu}{cpu}, {facts.get('usable_cores')} cores, torch {facts.get('torch_version')} "
            f"({facts.get('torch_build')} build, CPU capability {facts.get('cpu_capability')}), "
            f"fingerprint {facts.get('digest')}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple silicon GPU (MPS)"
    return "cpu"


def total_ram_gb() -> float:
    """Installed memory (8 GB where the OS does not say): the RAM model's size and a record fact."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 8.0


@dataclass(frozen=True)
class Scheduler:
    """The environment variables a batch scheduler sets in a job: how a record finds its job
    in the scheduler's accounting (sacct, qstat -x, bhist, qacct)."""
    name: str
    job_id: str
    array_task_id: str | None = None
    array_job_id: str | None = None
    job_name: str | None = None
    #: one of these must be set too: the job id's name is generic (SGE's JOB_ID)
    requires: tuple[str, ...] = ()
    #: array_task_id values that mean "not an array job"
    no_task: tuple[str, ...] = ()


#: the one table of schedulers and their variables, asked in this order
SCHEDULERS = (
    Scheduler("slurm", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID",
              "SLURM_JOB_NAME"),
    Scheduler("pbs", "PBS_JOBID", "PBS_ARRAYID", job_name="PBS_JOBNAME"),  # PBS, Torque
    Scheduler("lsf", "LSB_JOBID", "LSB_JOBINDEX", job_name="LSB_JOBNAME", no_task=("0",)),
    Scheduler("sge", "JOB_ID", "SGE_TASK_ID", job_name="JOB_NAME",  # SGE, UGE
              requires=("SGE_ROOT", "SGE_CELL"), no_task=("undefined",)),
)
#: the provenance keys `scheduler_job` fills: flat strings, one runs-table column each
SCHEDULER_KEYS = ("scheduler", "scheduler_job_id", "scheduler_array_job_id",
                  "scheduler_array_task_id", "scheduler_job_name")


def scheduler_job(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The batch job this process runs in (SCHEDULERS), each SCHEDULER_KEYS value None where
    there is no scheduler or it did not set that variable."""
    env = os.environ if environ is None else environ

    def value(name: str | None) -> str | None:
        return (env.get(name) or None) if name else None

    for scheduler in SCHEDULERS:
        if not value(scheduler.job_id):
            continue
        if scheduler.requires and not any(value(name) for name in scheduler.requires):
            continue
        task = value(scheduler.array_task_id)
        return {"scheduler": scheduler.name, "scheduler_job_id": value(scheduler.job_id),
                "scheduler_array_job_id": value(scheduler.array_job_id),
                "scheduler_array_task_id": None if task in scheduler.no_task else task,
                "scheduler_job_name": value(scheduler.job_name)}
    return dict.fromkeys(SCHEDULER_KEYS)


def collect(device: torch.device) -> dict:
    """The machine, software and commit facts; the caller adds what it set up itself (the
    allocator's settings, the data sources)."""
    from . import __version__

    machine = fingerprint(device)
    commit = _git("rev-parse", "HEAD")
    # dirty = the code differs from the commit; the study's own outputs (runs/, report/) don't count
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)runs", ":(exclude)report") if commit else None
    return {
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "energy_lib_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torchvision_version": _version("torchvision"),  # without importing it (1-2 s)
        "cuda_version": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_total_gb": round(total_ram_gb(), 2),
        "torch_threads": torch.get_num_threads(),
        "fingerprint": machine,
        "fingerprint_digest": machine["digest"],
        # whether the run's device computes bfloat16 natively (None: not known for this device)
        "bf16_native": (machine["gpu_bf16_native"] if device.type == "cuda" else
                        cpu_bf16_native(machine) if device.type == "cpu" else None),
        "machine": describe_machine(machine),
        "hostname": platform.node(),
        "os": platform.platform(),
        "executable": sys.executable,
        **scheduler_job(),
    }
