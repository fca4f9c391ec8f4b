"""The fixed malloc thresholds (energy_lib/training/allocator.py), checked in real processes: a fresh
process that trains a layer page-faults its tensors again on every step; with the thresholds
fixed it reuses them."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
if sys.argv[1] == "steady":
    from energy_lib.training.allocator import steady_allocator
    assert steady_allocator()["allocator"] == "glibc, fixed thresholds"
conv, x = torch.nn.Conv2d(16, 16, 3, padding=1), torch.randn(32, 16, 28, 28)
for _ in range(3):
    conv(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    conv(x).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                          check=True, timeout=120)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_fixed_thresholds_stop_a_fresh_process_faulting_its_tensors_in_again():
    default, steady = page_faults("default"), page_faults("steady")
    # 20 steps of ~1.6 MB activations and gradients: thousands of 4 KiB pages each time
    assert default > 2000, default
    assert steady * 10 < default, (steady, default)


def test_the_record_says_what_the_allocator_was():
    from energy_lib.training import allocator

    facts = allocator.steady_allocator()
    assert allocator.settings() == facts
    if platform.libc_ver()[0] == "glibc":
        assert facts["malloc_mmap_threshold_bytes"] == allocator.MMAP_THRESHOLD_BYTES
    else:
        assert facts["allocator"].startswith("system default")
