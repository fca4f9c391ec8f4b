"""Where and with what a run was made: stored in every lab record so a figure can be traced to a
commit, a library version and a machine."""

from __future__ import annotations

import os
from importlib import metadata
import platform
import subprocess
import sys
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


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def collect(device: torch.device) -> dict:
    """The machine, software and commit facts; the caller adds what it set up itself (the
    allocator's settings, the data sources)."""
    from . import __version__

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
        "hostname": platform.node(),
        "os": platform.platform(),
        "executable": sys.executable,
    }
