"""Where the solver runs: the torch device, its free memory, and CPU threads.

Pure torch and the operating system; no ITK. ``registration`` asks these before it builds
the working grid, so a run that cannot fit fails with the figures and the fix, before
anything large is allocated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import torch

from ..errors import InputError, ResourceError

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when torch sees a GPU, else the CPU; others are checked."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ResourceError(
                f"device={device!r} was requested but torch {torch.__version__} sees no CUDA "
                "device; use device='cpu' (or 'auto'), or install a CUDA build of torch."
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ResourceError(
                f"device={device!r} does not exist: torch sees {torch.cuda.device_count()} CUDA "
                f"device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
        return dev
    raise InputError(f"device={device!r} is not understood; use 'auto', 'cpu', 'cuda' or 'cuda:N'.")


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory of the device (CUDA) or available RAM (CPU, from /proc/meminfo)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    need_bytes: int, what: str, device: torch.device, limit_gb: float | None = None, fix: str = ""
) -> None:
    """Raise ResourceError when ``need_bytes`` exceed the limit or the free memory.

    Args:
        need_bytes: the estimate.
        what: the work, for the message (e.g. "registering on a 96x96x80 grid at 2 mm").
        device: where it would run.
        limit_gb: a user limit replacing the free memory (``memory_limit_gb``).
        fix: what to change, appended to the message.
    """
    limit = limit_gb * 1e9 if limit_gb else available_memory_bytes(device)
    if limit is not None and need_bytes > limit:
        raise ResourceError(
            f"{what} needs about {need_bytes / 1e9:.1f} GB but {limit / 1e9:.1f} GB is "
            f"available on {device}; {fix or 'free memory or use a larger machine.'}"
        )


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """torch CPU threads when the user sets none: every core this process may use."""
    return max(1, cpu_count())


def _cpu_jiffies(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over ``cpus`` from /proc/stat; None where unreadable."""
    busy = total = 0
    seen = 0
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            for line in handle:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                values = [int(v) for v in fields[:8]]
                idle = values[3] + values[4]  # idle + iowait
                total += sum(values)
                busy += sum(values) - idle
                seen += 1
    except (OSError, ValueError):
        return None
    return (busy, total) if seen else None


def busy_cores(sample_s: float = 0.1) -> float | None:
    """How many of this process's cores other processes keep busy, from two /proc/stat
    readings ``sample_s`` apart (this process sleeps in between); None off Linux."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None
    first = _cpu_jiffies(cpus)
    if first is None:
        return None
    time.sleep(sample_s)
    second = _cpu_jiffies(cpus)
    if second is None or second[1] <= first[1]:
        return None
    return len(cpus) * (second[0] - first[0]) / (second[1] - first[1])


def load_aware_threads(limit: int, busy: float | None) -> int:
    """Threads for a CPU run when the user set none: the cores nobody else keeps busy,
    at most ``limit`` (torch's current setting) and at least 1.

    Measured on a 2-core machine (``benchmarks/process_time.py``): with one core kept busy
    by another process, two torch threads made a warm registration 3-4x slower than idle
    (OpenMP threads wait on the one that is descheduled), one thread 1.7x.
    """
    if busy is None:
        return max(1, limit)
    free = cpu_count() - round(busy)
    return max(1, min(limit, free))


@contextlib.contextmanager
def torch_threads(threads: int | None, device: torch.device | None = None) -> Iterator[int]:
    """Run a block with ``threads`` torch CPU threads; restore the previous count afterwards.

    ``threads=None`` on the CPU: :func:`load_aware_threads` of the current setting (a user's
    ``torch.set_num_threads`` is the upper bound) and a short load sample; on CUDA, the
    current setting. A number given by the user always wins.
    """
    before = torch.get_num_threads()
    if threads:
        wanted = int(threads)
    elif device is not None and device.type == "cpu":
        wanted = load_aware_threads(before, busy_cores())
        if wanted < before:
            logger.info(
                "other processes keep %d of %d cores busy: %d torch thread(s) instead of %d "
                "(set num_threads / --threads to choose)",
                cpu_count() - wanted,
                cpu_count(),
                wanted,
                before,
            )
    else:
        wanted = before
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


__all__ = [
    "available_memory_bytes",
    "busy_cores",
    "check_memory",
    "cpu_count",
    "default_threads",
    "load_aware_threads",
    "resolve_device",
    "torch_threads",
]
