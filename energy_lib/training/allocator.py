"""Fixed malloc thresholds for the processes that train and calibrate, so that a step costs the
same in a fresh process as in one that has run for an hour.

Why: glibc's malloc serves a block above its mmap threshold (128 KiB at start) with a fresh
mmap, and gives the pages back when the block is freed; it raises the threshold as large
blocks are freed, and trims the heap's top beyond twice that. A CPU training step allocates
and frees megabytes of activations and gradients, so a fresh process page-faults every one of
them again, step after step, until its history has raised the thresholds far enough. On the
project's 2-vCPU EPYC VM (torch 2.14.1, glibc 2.36):
- a 3x3 convolution's training step (16 channels, 28 x 28, batch 32) took 13-16 ms in a fresh
  process and 6-8 ms with these thresholds, or in a process that had calibrated for a while
  (5-10 ms): one layer, two prices, set by what ran before it;
- the quick study's training loop (paper CNN, width 1, fp32, batch 128) page-faulted about
  14,000 times per step and took 230-252 ms; with these thresholds 70 times and 197-213 ms.
Energy spent on page faults is energy the study would attribute to the model, and an estimate
calibrated in a warmed-up process would price a fresh run's layers at half their cost.

The thresholds are set with mallopt (glibc's documented interface; the MALLOC_MMAP_THRESHOLD_
environment variable does the same, but only for a process started with it). 32 MiB is glibc's
largest mmap threshold on 64-bit systems: bigger blocks (a 1000-image evaluation batch's
activations) are still mapped and returned. Freed memory below the trim threshold stays in the
process for the next step. Elsewhere than glibc (macOS, Windows, musl) nothing is changed, and
`settings()` says so in the record's provenance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from functools import lru_cache

#: mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


@lru_cache(maxsize=1)
def steady_allocator() -> dict:
    """Fix glibc's malloc thresholds in this process (once; later calls return the same facts).
    Returns what was done, for provenance."""
    if platform.libc_ver()[0] != "glibc":
        return {"allocator": "system default (not glibc: thresholds not set)"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
    except (OSError, AttributeError) as error:
        return {"allocator": f"glibc default (mallopt unavailable: {error})"}
    if not done:
        return {"allocator": "glibc default (mallopt refused the thresholds)"}
    return {"allocator": "glibc, fixed thresholds", "malloc_mmap_threshold_bytes": MMAP_THRESHOLD_BYTES,
            "malloc_trim_threshold_bytes": TRIM_THRESHOLD_BYTES}


def settings() -> dict:
    """The allocator facts for a record: what `steady_allocator` did, or that it was not called."""
    if steady_allocator.cache_info().currsize:
        return steady_allocator()
    return {"allocator": "default (steady_allocator not called in this process)"}
