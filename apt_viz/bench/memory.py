"""The peak-memory probe of ``apt-viz bench`` and ``benchmarks/``: the extra memory one run of a call takes.

CUDA: ``max_memory_allocated`` over the run minus what was allocated before it. CPU (Linux): the
resident-set high-water mark, reset to the current resident set just before the run, minus that
resident set; approximate, since memory the allocator kept from earlier runs does not show
(:func:`return_freed_memory` makes glibc give large freed blocks back, so they do). Needs torch only.
"""
from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from typing import Any

import torch

MB = 1024 * 1024
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc maps blocks at least this large on their own, and unmaps them when freed


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(f"{field_name} missing from /proc/self/status")


def return_freed_memory() -> None:
    """CPU (glibc): fix the mmap threshold and trim the heap, so a run's peak shows in the resident set.

    glibc otherwise raises its threshold as blocks are freed, and a freed block kept in the heap
    hides the next run's allocation. Makes every later large allocation slower: call it after timing.
    The same setting as ``MALLOC_MMAP_THRESHOLD_`` in the environment of a fresh process.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)


def peak_memory_mb(call: Callable[[], Any], device: torch.device) -> float | None:
    """Extra memory one run of ``call`` takes at its peak (MiB); None where it cannot be measured.

    Args:
        call: The run (its result is dropped after the measurement).
        device: Where it runs.

    Returns:
        MiB above what was in use before the run (never below 0: the high-water mark starts at the
        resident set), or None without ``/proc/self/clear_refs``.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = call()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return (peak - before) / MB
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset the high-water mark to the current resident set
    except OSError:
        return None
    before = _proc_status_kb("VmRSS")
    result = call()
    peak = _proc_status_kb("VmHWM")
    del result
    return (peak - before) / 1024
