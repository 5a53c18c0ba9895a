"""The worker side of a batch: one Dask task registers one pair into an attempt folder.

A task reads, pre-aligns, registers, scores and writes its pair exactly as ``samconvex
register`` does (``apps.pair.register_files``) into ``OUT/.samconvex-tmp/<name>.<id>/`` and
commits the folder to ``OUT/<name>`` in one rename (``commit``). It never raises for its
pair's own errors: the summary row carries the message, the traceback and whether a retry
may help. Attempts lost with their worker (killed, out of memory) leave their folder behind;
the attempt that finishes the pair counts them and notes why the pair was retried.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...edge.io import write_json
from ...errors import InputError, ResourceError
from ...solver.config import SAMConvexConfig
from ..outputs import OUTPUT_NAMES
from ..pair import pair_output_paths, register_files
from .commit import (
    ATTEMPT_FILE,
    TMP_DIR,
    attempt_folders,
    commit_attempt,
    is_complete,
    read_attempt,
)
from .manifest import PairSpec
from .summary import folder_stats, report_stats

try:  # distributed is an optional dependency; only the worker plugin needs it at import
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - exercised only without distributed
    WorkerPlugin = object  # type: ignore[assignment,misc]

#: Worker resource that bounds how many pairs a worker runs at once.
RESOURCE = "samconvex_pair"
_EXTRACTOR_KEYS = (
    "features",
    "sam_checkpoint",
    "mind_radius",
    "mind_dilation",
    "hu_min",
    "hu_max",
    "device",
)

PairHook = Callable[[str, str, Path], None]


@dataclass
class PairTask:
    """What one Dask task needs to register one pair (sent to the worker, so keep it small).

    Attributes:
        spec: the pair.
        config: its registration parameters (per-pair overrides applied).
        output_dir: ``OUT`` (absolute).
        overwrite: replace an existing complete ``OUT/<name>``.
        qc: write the QC report.
        write_field: also write ``field.nii.gz``.
        hd95: add HD95 to the report.
        torch_threads: ``torch.set_num_threads`` value for the pair (None: the worker's).
        reset_peak: measure the pair's own peak RSS (only when a worker runs one pair at a
            time; the kernel's high-water mark is per process).
        attempt: submission number, from 1.
        reasons: why the pair was submitted again (failed submissions, lost attempts).
        hook: optional callable ``hook(name, stage, folder)`` run on the worker at stages
            ``"start"`` and ``"before_commit"`` (for instrumentation and fault-injection
            tests); it must be picklable.
    """

    spec: PairSpec
    config: SAMConvexConfig
    output_dir: str
    overwrite: bool = False
    qc: bool = True
    write_field: bool = False
    hd95: bool = False
    torch_threads: int | None = None
    reset_peak: bool = True
    attempt: int = 0
    hook: PairHook | None = None
    reasons: list[str] = field(default_factory=list)


_EXTRACTORS: dict[tuple, Any] = {}
_EXTRACTORS_LOCK = threading.Lock()
_WORKER_PEAK_MB = 0.0


def cached_extractor(cfg: SAMConvexConfig) -> Any:
    """The feature extractor for ``cfg``, built once per worker process and reused.

    Keyed by the fields that define an extractor (backend, checkpoint, MIND parameters,
    intensity window, device), so a worker serving pairs with different settings keeps one
    model per setting.
    """
    from ...solver.device import resolve_device
    from ...solver.features import make_extractor

    key = tuple(getattr(cfg, name, None) for name in _EXTRACTOR_KEYS)
    with _EXTRACTORS_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = make_extractor(cfg, resolve_device(cfg.device))
        return _EXTRACTORS[key]


def configure_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch and for BLAS/OpenMP in child processes."""
    import torch

    threads = max(1, int(threads))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class BatchWorkerSetup(WorkerPlugin):
    """Prepares every worker (current and future) for batch pairs.

    Sets torch's thread count (``torch_threads``, or the worker's threads divided by
    ``pairs_per_worker``) and gives workers that lack it the ``samconvex_pair`` resource, so
    a worker runs at most ``pairs_per_worker`` pairs at once even on a cluster started
    without ``--resources``.
    """

    name = "itk-samconvex-batch"

    def __init__(self, pairs_per_worker: int = 1, torch_threads: int | None = None) -> None:
        self.pairs_per_worker = int(pairs_per_worker)
        self.torch_threads = torch_threads

    async def setup(self, worker: Any) -> None:
        threads = self.torch_threads or max(1, worker.state.nthreads // self.pairs_per_worker)
        configure_threads(threads)
        if RESOURCE not in worker.state.total_resources:
            await worker.set_resources(**{RESOURCE: self.pairs_per_worker})


def _rss_peak_mb() -> float | None:
    """This process's peak resident memory (kernel high-water mark), MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except (ImportError, OSError):
        return None


def _reset_rss_peak() -> bool:
    """Reset the high-water mark to the current RSS (Linux ``clear_refs``); True if done."""
    global _WORKER_PEAK_MB
    before = _rss_peak_mb()
    if before is not None:
        _WORKER_PEAK_MB = max(_WORKER_PEAK_MB, before)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:pid{os.getpid()}"


def _is_transient(error: BaseException) -> bool:
    """Errors worth a retry: memory, lost resources, flaky I/O; never bad inputs."""
    import torch

    if isinstance(error, InputError | FileNotFoundError | FileExistsError | PermissionError):
        return False
    oom = getattr(torch, "OutOfMemoryError", MemoryError)
    if isinstance(error, MemoryError | ResourceError | oom | TimeoutError | ConnectionError):
        return True
    return isinstance(error, OSError) and error.errno in (
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ETIMEDOUT,
        getattr(errno, "ESTALE", -1),
    )


def _lost_attempts(out: Path, name: str, own: Path) -> list[str]:
    """Notes on the attempts of this pair that died with their worker (folders left)."""
    notes = []
    for folder in attempt_folders(out, name):
        if folder == own:
            continue
        info = read_attempt(folder)
        who = info.get("worker", "an unknown worker")
        pid = f" (pid {info['pid']})" if "pid" in info else ""
        notes.append(
            f"the attempt on {who}{pid} started at {info.get('started', '?')} was "
            "lost with its worker (killed or out of memory) and the pair was redone"
        )
    return notes


def _register_into(task: PairTask, attempt: Path, final: Path) -> dict[str, Any]:
    """Read, register and write one pair into ``attempt``; return its report."""
    import torch

    spec = task.spec
    files = spec.files
    paths = pair_output_paths(files, attempt, qc=task.qc, write_field=task.write_field)
    extra = {
        "batch": {
            "name": spec.name,
            "attempt_folder": attempt.name,
            "worker": _worker_name(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "submission": task.attempt,
            "torch_threads": torch.get_num_threads(),
        }
    }
    return register_files(
        files,
        task.config,
        paths,
        pair=spec.name,
        extractor=cached_extractor(task.config),
        extra=extra,
        listed_folder=final,
        hd95=task.hd95,
    )


def run_pair(task: PairTask) -> dict[str, Any]:
    """Register one pair on this worker; never raises for a pair's own errors.

    Returns:
        A summary row (see ``summary.SUMMARY_COLUMNS``) plus ``traceback`` and ``transient``
        for failures, and ``lost_attempts`` (notes) when earlier attempts died with their
        worker.
    """
    global _WORKER_PEAK_MB
    start = time.perf_counter()
    spec = task.spec
    out = Path(task.output_dir)
    final = out / spec.name
    row: dict[str, Any] = {
        "name": spec.name,
        "status": "failed",
        "worker": _worker_name(),
        "output": str(final),
        "fixed": spec.files.fixed,
        "moving": spec.files.moving,
    }
    if not task.overwrite and is_complete(final):
        # a concurrent attempt of this pair (rescheduled after a worker death) finished first
        row.update(
            status="done",
            note="finished by a concurrent attempt of this pair",
            seconds=time.perf_counter() - start,
            **folder_stats(final),
        )
        return row
    if task.torch_threads:
        configure_threads(task.torch_threads)
    per_pair_peak = task.reset_peak and _reset_rss_peak()
    attempt = out / TMP_DIR / f"{spec.name}.{uuid.uuid4().hex[:12]}"
    try:
        attempt.mkdir(parents=True)
        write_json(
            attempt / ATTEMPT_FILE,
            {
                "worker": _worker_name(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "submission": task.attempt,
            },
        )
        if task.hook is not None:
            task.hook(spec.name, "start", attempt)
        report = _register_into(task, attempt, final)
        if task.hook is not None:
            task.hook(spec.name, "before_commit", attempt)
        row["lost_attempts"] = _lost_attempts(out, spec.name, attempt)
        if commit_attempt(attempt, final, task.overwrite):
            (final / ATTEMPT_FILE).unlink(missing_ok=True)  # the pair's record is its report
        else:
            row["note"] = "a concurrent attempt of this pair finished first; its outputs kept"
            report = json.loads((final / OUTPUT_NAMES["report"]).read_text(encoding="utf-8"))
        row.update(status="done", **report_stats(report))
    except Exception as error:  # a pair's failure must not stop the batch
        shutil.rmtree(attempt, ignore_errors=True)
        message = " ".join(str(error).split())  # one line, even for ITK's multi-line errors
        if len(message) > 1000:
            message = message[:1000] + " ..."
        row.update(
            error=f"{type(error).__name__}: {message}".rstrip(": "),
            traceback=traceback.format_exc(),
            transient=_is_transient(error),
        )
    peak = _rss_peak_mb()
    if peak is not None:
        _WORKER_PEAK_MB = max(_WORKER_PEAK_MB, peak)
        row["peak_rss_mb"] = peak if per_pair_peak else None
        row["worker_peak_rss_mb"] = _WORKER_PEAK_MB
    row["seconds"] = time.perf_counter() - start
    return row


__all__ = [
    "RESOURCE",
    "BatchWorkerSetup",
    "PairTask",
    "cached_extractor",
    "configure_threads",
    "run_pair",
]
