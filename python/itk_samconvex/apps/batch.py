"""Many pairs: ``samconvex batch`` / :func:`register_many` on Dask distributed.

Each pair of a manifest (see :mod:`itk_samconvex.batch_manifest`) is one Dask task that
registers it and writes exactly what ``samconvex register`` writes (``transform.h5``,
``field.nii.gz``, ``warped.nii.gz``, ``warped_labels.nii.gz``, ``qc.png``, ``report.json``)
into ``OUT/<name>/``. Transforms map fixed physical points to moving physical points (LPS mm),
as everywhere in itk-samconvex.

Guarantees:

* **Atomic per pair.** A task writes into its own attempt folder
  ``OUT/.samconvex-tmp/<name>.<id>/`` (``report.json`` last) and renames the folder to
  ``OUT/<name>`` in one step. ``OUT/<name>`` therefore either does not exist or holds one
  complete set of outputs; a worker killed mid-write leaves only an attempt folder, which is
  removed. When two attempts of the same pair race (Dask reschedules a task whose worker
  died, while the old worker still runs), the first rename wins and the loser discards its
  folder.
* **Resumable.** A pair whose folder holds a readable ``report.json`` (the completion marker,
  written last) and the outputs it lists is skipped on a re-run; anything else is redone.
* **Failure-isolated.** Any error of a pair (unreadable file, bad geometry, out of memory) is
  recorded with its message, and its traceback goes to ``OUT/failures/<name>.error.txt``;
  the other pairs go on. A worker that dies while running a pair is replaced by its nanny and
  Dask reruns the pair elsewhere. ``retries`` reruns pairs that failed for reasons that may
  be transient (memory, I/O, lost workers), never bad inputs.
* **Bounded memory.** By default each worker runs one pair at a time (a worker resource),
  with ``torch`` using the worker's threads, so ``workers x threads`` matches the cores.

``OUT/summary.csv`` and ``OUT/summary.json`` (written atomically, also during the run) list
every pair: status ``done`` / ``skipped`` / ``failed``, attempts, seconds, worker, peak RSS,
Jacobian statistics, mean Dice (with both label maps) and TRE (with landmarks).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_manifest import (
    ELASTIX_AFFINE,
    ManifestError,
    PairSpec,
    load_pairs,
    read_landmarks,
)
from ..cli import OUTPUT_NAMES
from ..solver.config import SAMConvexConfig
from ..errors import InputError, ResourceError, SAMConvexError

try:  # distributed is an optional dependency; only the worker plugin needs it at import
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - exercised only without distributed
    WorkerPlugin = object  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

#: Worker resource that bounds how many pairs a worker runs at once.
RESOURCE = "samconvex_pair"
#: Hidden folder of in-progress attempts (same file system as the outputs: renames are atomic).
TMP_DIR = ".samconvex-tmp"
#: Lock file that keeps two batch runs from writing into one output folder.
LOCK_FILE = ".samconvex-batch.lock"
#: Folder of the per-pair error files.
FAILURES_DIR = "failures"
#: Output file names, as ``samconvex register`` writes them.
OUTPUT_FILES = OUTPUT_NAMES
#: Columns of ``summary.csv`` (``summary.json`` has the same keys per pair).
SUMMARY_COLUMNS = (
    "name", "status", "attempts", "seconds", "registration_seconds", "worker", "peak_rss_mb",
    "worker_peak_rss_mb", "jacobian_min", "jacobian_percent_nonpositive", "sdlogj",
    "dice_mean_before", "dice_mean_after", "tre_mean_before_mm", "tre_mean_after_mm",
    "tre_max_after_mm", "output", "error", "error_file", "note", "fixed", "moving",
)
_SUMMARY_EVERY_S = 2.0
_EXTRACTOR_KEYS = ("features", "sam_checkpoint", "mind_radius", "mind_dilation", "hu_min",
                   "hu_max", "device")

PairHook = Callable[[str, str, Path], None]


# ==========================================================================================
# output folders: completion, atomic commit, locking


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished pair.

    Finished means ``report.json`` (written last) parses and every output it lists exists
    in ``folder`` (matched by file name, so a moved output folder still counts).
    """
    report_path = Path(folder) / OUTPUT_FILES["report"]
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    outputs = report.get("outputs") if isinstance(report, dict) else None
    if not isinstance(outputs, dict) or "transform" not in outputs:
        return False
    return all((Path(folder) / Path(str(p)).name).is_file() for p in outputs.values())


def commit_attempt(attempt: Path, final: Path, overwrite: bool = False) -> bool:
    """Move a finished attempt folder to its final place in one rename.

    Args:
        attempt: the complete attempt folder (inside ``OUT/.samconvex-tmp``).
        final: ``OUT/<name>``.
        overwrite: replace a complete ``final`` (else a complete ``final`` wins).

    Returns:
        True when ``attempt`` became ``final``; False when another complete attempt was
        already in place (``attempt`` is then deleted).
    """
    aside = attempt.with_name(f"{attempt.name}.replaced")

    def set_aside() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)

    for _ in range(3):
        if overwrite and final.exists():
            set_aside()
        try:
            os.rename(attempt, final)  # fails on a non-empty directory: never merges
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if not overwrite and is_complete(final):
                shutil.rmtree(attempt, ignore_errors=True)
                return False
            set_aside()  # an incomplete folder (not a finished pair) is in the way
            continue
        return True
    raise OSError(f"could not move {attempt} to {final}: another process keeps replacing it")


class _OutputLock:
    """Exclusive advisory lock on ``OUT/.samconvex-batch.lock`` (POSIX ``flock``)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.handle: Any = None

    def __enter__(self) -> _OutputLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        self.handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise SAMConvexError(
                f"another `samconvex batch` is writing into {self.path.parent} (it holds "
                f"{self.path}); wait for it to finish or choose another -o folder.") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the flock


def _remove_tmp(out: Path) -> None:
    """Delete every attempt folder (only while holding the lock, with no task running)."""
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)


# ==========================================================================================
# worker side


@dataclass
class PairTask:
    """What one Dask task needs to register one pair (sent to the worker, so keep it small).

    Attributes:
        spec: the pair.
        config: its registration parameters (per-pair overrides applied).
        output_dir: ``OUT`` (absolute).
        overwrite: replace an existing complete ``OUT/<name>``.
        qc: write ``qc.png``.
        torch_threads: ``torch.set_num_threads`` value for the pair (None: the worker's).
        reset_peak: measure the pair's own peak RSS (only when a worker runs one pair at a
            time; the kernel's high-water mark is per process).
        attempt: submission number, from 1.
        hook: optional callable ``hook(name, stage, folder)`` run on the worker at stages
            ``"start"`` and ``"before_commit"`` (for instrumentation and fault-injection
            tests); it must be picklable.
    """

    spec: PairSpec
    config: SAMConvexConfig
    output_dir: str
    overwrite: bool = False
    qc: bool = True
    torch_threads: int | None = None
    reset_peak: bool = True
    attempt: int = 0
    hook: PairHook | None = None


_EXTRACTORS: dict[tuple, Any] = {}
_EXTRACTORS_LOCK = threading.Lock()
_WORKER_PEAK_MB = 0.0


def cached_extractor(cfg: SAMConvexConfig) -> Any:
    """The feature extractor for ``cfg``, built once per worker process and reused.

    Keyed by the fields that define an extractor (backend, checkpoint, MIND parameters,
    intensity window, device), so a worker serving pairs with different settings keeps one
    model per setting.
    """
    from ..solver.features import make_extractor
    from ..edge.registration import resolve_device

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
        errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, getattr(errno, "ESTALE", -1))


def report_stats(report: Mapping[str, Any]) -> dict[str, Any]:
    """Summary columns from a pair's ``report.json`` (Jacobian, Dice, TRE, timing)."""
    jac = report.get("jacobian") or {}
    dice = report.get("dice") or {}
    tre = report.get("tre") or {}
    return {
        "registration_seconds": (report.get("timings_s") or {}).get("total"),
        "jacobian_min": jac.get("min"),
        "jacobian_percent_nonpositive": jac.get("percent_nonpositive"),
        "sdlogj": jac.get("sdlogj"),
        "dice_mean_before": dice.get("mean_before"),
        "dice_mean_after": dice.get("mean_after"),
        "tre_mean_before_mm": tre.get("mean_before_mm"),
        "tre_mean_after_mm": tre.get("mean_after_mm"),
        "tre_max_after_mm": tre.get("max_after_mm"),
    }


def _tre_report(spec: PairSpec, result: Any) -> dict[str, Any]:
    """Landmark TRE (mm) before (identity, and initial transform) and after registration."""
    import itk
    import numpy as np

    from .metrics import sample_field, tre, tre_identity
    from ..edge.space import Grid

    fixed_pts = read_landmarks(spec.fixed_landmarks)
    moving_pts = read_landmarks(spec.moving_landmarks)
    field_mm = np.asarray(itk.array_view_from_image(result.field))
    grid = Grid.of(result.field)

    def through_field(points: np.ndarray) -> np.ndarray:
        return points + sample_field(field_mm, grid.spacing, grid.origin,
                                     grid.direction_matrix, points)

    after = tre(fixed_pts, moving_pts, through_field)
    before = tre_identity(fixed_pts, moving_pts)
    out: dict[str, Any] = {
        "count": len(after),
        "mean_before_mm": float(before.mean()),
        "mean_after_mm": float(after.mean()),
        "max_after_mm": float(after.max()),
        "per_point_after_mm": [float(v) for v in after],
        "note": "before = identity; after = the registration's transform (initial transform "
                "included); landmarks x,y,z LPS mm, row i of both files corresponds",
    }
    initial = result.initial_transform
    if initial is not None:
        def through_initial(points: np.ndarray) -> np.ndarray:
            return np.array([list(initial.TransformPoint([float(v) for v in p]))
                             for p in points])

        out["mean_initial_mm"] = float(tre(fixed_pts, moving_pts, through_initial).mean())
    return out


def _read_input(path: str | None, what: str) -> Any:
    from ..cli.run import read_image

    return read_image(path, what)


def _register_into(task: PairTask, attempt: Path, final: Path) -> dict[str, Any]:
    """Read, register and write one pair into ``attempt``; return its report."""
    import torch

    from ..cli import dump_json
    from ..edge.registration import register
    from ..cli.run import prepare_output, write_outputs

    spec = task.spec
    fixed = _read_input(spec.fixed, "fixed image")
    moving = _read_input(spec.moving, "moving image")
    moving_labels = _read_input(spec.moving_labels, "moving label map")
    fixed_labels = _read_input(spec.fixed_labels, "fixed label map")
    fixed_mask = _read_input(spec.fixed_mask, "fixed mask")
    moving_mask = _read_input(spec.moving_mask, "moving mask")
    initial: Any = spec.initial_transform
    if initial == ELASTIX_AFFINE:
        from ..edge.elastix import elastix_affine

        initial = elastix_affine(fixed, moving)
    threads = torch.get_num_threads()
    result = register(fixed, moving, task.config, initial, fixed_mask, moving_mask,
                      extractor=cached_extractor(task.config))
    extra: dict[str, Any] = {
        "inputs": spec.inputs(),
        "batch": {"name": spec.name, "attempt_folder": attempt.name, "worker": _worker_name(),
                  "host": socket.gethostname(), "pid": os.getpid(),
                  "submission": task.attempt, "torch_threads": threads},
    }
    if spec.fixed_landmarks and spec.moving_landmarks:
        extra["tre"] = _tre_report(spec, result)
    names = ["transform", "field", "warped", "report"]
    if task.qc:
        names.append("qc")
    if moving_labels is not None:
        names.append("warped_labels")
    paths = prepare_output(attempt, names, overwrite=False)
    report = write_outputs(result, fixed, moving, paths, moving_labels, fixed_labels, False,
                           extra)
    # the report lists where the outputs will be once the folder is renamed into place
    report["outputs"] = {key: str(final / path.name) for key, path in paths.items()}
    dump_json(report, paths["report"])
    return report


def run_pair(task: PairTask) -> dict[str, Any]:
    """Register one pair on this worker; never raises for a pair's own errors.

    Returns:
        A summary row (see :data:`SUMMARY_COLUMNS`) plus ``traceback`` and ``transient`` for
        failures.
    """
    global _WORKER_PEAK_MB
    start = time.perf_counter()
    spec = task.spec
    out = Path(task.output_dir)
    final = out / spec.name
    row: dict[str, Any] = {"name": spec.name, "status": "failed", "worker": _worker_name(),
                           "output": str(final), "fixed": spec.fixed, "moving": spec.moving}
    if not task.overwrite and is_complete(final):
        # a concurrent attempt of this pair (rescheduled after a worker death) finished first
        row.update(status="done", note="finished by a concurrent attempt of this pair",
                   seconds=time.perf_counter() - start, **_stats_of(final))
        return row
    if task.torch_threads:
        configure_threads(task.torch_threads)
    per_pair_peak = task.reset_peak and _reset_rss_peak()
    attempt = out / TMP_DIR / f"{spec.name}.{uuid.uuid4().hex[:12]}"
    try:
        attempt.mkdir(parents=True)
        if task.hook is not None:
            task.hook(spec.name, "start", attempt)
        report = _register_into(task, attempt, final)
        if task.hook is not None:
            task.hook(spec.name, "before_commit", attempt)
        if not commit_attempt(attempt, final, task.overwrite):
            row["note"] = "a concurrent attempt of this pair finished first; its outputs kept"
            report = json.loads((final / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
        row.update(status="done", **report_stats(report))
    except Exception as error:  # a pair's failure must not stop the batch
        shutil.rmtree(attempt, ignore_errors=True)
        message = " ".join(str(error).split())  # one line, even for ITK's multi-line errors
        if len(message) > 1000:
            message = message[:1000] + " ..."
        row.update(error=f"{type(error).__name__}: {message}".rstrip(": "),
                   traceback=traceback.format_exc(), transient=_is_transient(error))
    peak = _rss_peak_mb()
    if peak is not None:
        _WORKER_PEAK_MB = max(_WORKER_PEAK_MB, peak)
        row["peak_rss_mb"] = peak if per_pair_peak else None
        row["worker_peak_rss_mb"] = _WORKER_PEAK_MB
    row["seconds"] = time.perf_counter() - start
    return row


def _stats_of(folder: Path) -> dict[str, Any]:
    try:
        report = json.loads((folder / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report_stats(report)


# ==========================================================================================
# client side


@dataclass
class BatchSummary:
    """The outcome of :func:`register_many`.

    Attributes:
        rows: one dict per pair in manifest order, keys :data:`SUMMARY_COLUMNS`.
        output_dir: ``OUT``.
        seconds: wall time of the call, including starting a local cluster.
        workers: number of Dask workers when the pairs were submitted (0 if nothing ran).
        dashboard: the Dask dashboard URL, when there was one.
    """

    rows: list[dict[str, Any]]
    output_dir: Path
    seconds: float = 0.0
    workers: int = 0
    dashboard: str | None = None
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def counts(self) -> dict[str, int]:
        """Pairs per status (``done``, ``skipped``, ``failed``, and ``pending`` if cut short)."""
        counts = {"done": 0, "skipped": 0, "failed": 0}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    @property
    def ok(self) -> bool:
        """True when every pair is done or skipped."""
        return all(row["status"] in ("done", "skipped") for row in self.rows)

    @property
    def pairs_per_minute(self) -> float | None:
        """Pairs registered in this call per minute of wall time (None if none ran)."""
        done = self.counts["done"]
        return 60.0 * done / self.seconds if done and self.seconds > 0 else None

    @property
    def csv_path(self) -> Path:
        return self.output_dir / "summary.csv"

    @property
    def json_path(self) -> Path:
        return self.output_dir / "summary.json"

    def __getitem__(self, name: str) -> dict[str, Any]:
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "started": self.started,
                "seconds": self.seconds, "workers": self.workers, "dashboard": self.dashboard,
                "counts": self.counts, "pairs_per_minute": self.pairs_per_minute,
                "pairs": [_clean_row(r) for r in self.rows]}

    def write(self) -> None:
        """Write ``summary.csv`` and ``summary.json`` atomically (temp file + rename)."""
        _write_atomic(self.json_path, json.dumps(self.to_dict(), indent=2) + "\n")
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(v) for k, v in _clean_row(row).items()})
        _write_atomic(self.csv_path, buffer.getvalue())


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, text: str) -> None:
    """Write text to ``path`` via a temp file in the same folder and a rename.

    The file gets the permissions a plain ``open`` would (0666 minus the umask).
    """
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False, newline="", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(handle.name, 0o666 & ~_umask())
    os.replace(handle.name, path)


def _clean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key in SUMMARY_COLUMNS:
        value = row.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _default_workers(pairs: int, threads_per_worker: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(pairs, cores // max(1, threads_per_worker)))


def _local_client(workers: int, threads_per_worker: int, pairs_per_worker: int,
                  memory_limit: str | float | None, dashboard_address: str | None):
    """A ``LocalCluster`` of worker processes (one nanny each, restarted if they die)."""
    from distributed import Client, LocalCluster

    torch_threads = max(1, threads_per_worker // pairs_per_worker)
    env = {name: str(torch_threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                 "OPENBLAS_NUM_THREADS")}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                           processes=True, resources={RESOURCE: pairs_per_worker},
                           memory_limit=memory_limit, dashboard_address=dashboard_address,
                           env=env)
    return Client(cluster), cluster


def _dashboard(client: Any) -> str | None:
    try:
        link = client.dashboard_link
    except (AttributeError, KeyError):
        return None
    return link or None


def _failure_file(out: Path, name: str) -> Path:
    return out / FAILURES_DIR / f"{name}.error.txt"


def _write_failure(out: Path, spec: PairSpec, row: dict[str, Any]) -> Path:
    path = _failure_file(out, spec.name)
    path.parent.mkdir(exist_ok=True)
    text = (f"pair: {spec.name} ({spec.where})\nfixed: {spec.fixed}\nmoving: {spec.moving}\n"
            f"attempts: {row.get('attempts')}\nworker: {row.get('worker')}\n"
            f"error: {row.get('error')}\n\n{row.get('traceback') or ''}")
    _write_atomic(path, text)
    return path


def _forget_failure(out: Path, name: str) -> None:
    path = _failure_file(out, name)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty


def _parameter_note(cfg: SAMConvexConfig, folder: Path) -> str | None:
    """A note when a skipped pair was made with other parameters than asked now."""
    try:
        report = json.loads((folder / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    made = report.get("parameters")
    if not isinstance(made, dict):
        return None
    wanted = json.loads(json.dumps(cfg.to_dict()))
    changed = sorted(k for k in set(made) | set(wanted) if made.get(k) != wanted.get(k))
    if not changed:
        return None
    return (f"kept outputs made with different parameters ({', '.join(changed[:5])}"
            f"{', ...' if len(changed) > 5 else ''}); use overwrite to redo")


def _killed_row(task: PairTask, error: BaseException, tb: str) -> dict[str, Any]:
    from distributed.scheduler import KilledWorker

    spec = task.spec
    row: dict[str, Any] = {"name": spec.name, "status": "failed", "fixed": spec.fixed,
                           "moving": spec.moving, "traceback": tb}
    if isinstance(error, KilledWorker):
        row.update(error=("KilledWorker: the worker process died every time it ran this pair "
                          "(e.g. killed for exceeding its memory limit); raise --memory-limit, "
                          "run fewer pairs per worker, or raise working_spacing_mm"),
                   worker=getattr(getattr(error, "last_worker", None), "address", None),
                   transient=True)
    else:
        message = " ".join(str(error).split())
        row.update(error=f"{type(error).__name__}: {message}", transient=False)
    return row


def register_many(
    pairs: str | os.PathLike | Sequence[Mapping[str, Any] | PairSpec],
    client: Any = None,
    *,
    output_dir: str | os.PathLike,
    config: SAMConvexConfig | str | os.PathLike | None = None,
    preset: str = "default",
    parameters: Mapping[str, Any] | None = None,
    base_dir: str | os.PathLike | None = None,
    initial_transform: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    pairs_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard_address: str | None = ":8787",
    retries: int = 0,
    overwrite: bool = False,
    qc: bool = True,
    check_files: bool = True,
    progress: bool = True,
    pair_hook: PairHook | None = None,
) -> BatchSummary:
    """Register many pairs on Dask distributed; resumable, one failure never stops the rest.

    Every pair writes what ``samconvex register`` writes into ``output_dir/<name>/``
    (transform fixed->moving in LPS mm, field on the fixed grid, warped image and labels,
    QC figure, report), atomically; pairs already complete there are skipped.

    Args:
        pairs: a manifest path (CSV/JSON, see :mod:`itk_samconvex.batch_manifest`), or a
            sequence of mappings with the manifest keys, or of :class:`PairSpec`.
        client: a ``distributed.Client`` to run on (e.g. connected to a cluster); None starts
            a ``LocalCluster`` of ``workers`` processes, closed at the end.
        output_dir: ``OUT``; created if needed.
        config: base parameters (a :class:`SAMConvexConfig` or TOML path); replaces
            ``preset``.
        preset: ``"default"``, ``"paper"`` or ``"fast"``.
        parameters: overrides of config fields for every pair (per-pair values win).
        base_dir: folder for relative paths when ``pairs`` are Python objects.
        initial_transform: for pairs without one: a transform file or ``"elastix-affine"``.
        workers: local cluster size (default: cores // threads_per_worker, at most the
            number of pairs to run). Ignored with ``client``.
        threads_per_worker: threads (and torch threads) per local worker.
        pairs_per_worker: pairs a worker runs at once (default 1: bounded memory).
        memory_limit: local worker memory limit (Dask syntax, e.g. ``"4GB"``; ``"auto"``
            shares the RAM). A worker over it is restarted and its pair retried.
        dashboard_address: local cluster dashboard (``":0"`` any free port, None off).
        retries: extra attempts for pairs that failed for possibly transient reasons
            (memory, lost worker, I/O); input errors are not retried.
        overwrite: redo every pair, replacing complete outputs.
        qc: write ``qc.png`` per pair.
        check_files: check that the input files exist before starting.
        progress: show a progress bar and the dashboard link on stderr.
        pair_hook: see :class:`PairTask` (instrumentation / fault injection).

    Returns:
        The :class:`BatchSummary` (also written to ``OUT/summary.csv`` and ``summary.json``).

    Raises:
        ManifestError: every problem of the manifest, with row numbers, before anything runs.
        SAMConvexError: another batch is writing into ``output_dir``.
    """
    from ..edge.registration import build_config

    start = time.perf_counter()
    base = build_config(preset, config, **dict(parameters or {}))
    specs = load_pairs(pairs, base, base_dir, check_files, initial_transform)
    if retries < 0 or pairs_per_worker < 1 or threads_per_worker < 1:
        raise InputError("retries must be >= 0 and pairs_per_worker, threads_per_worker >= 1.")
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(rows=[], output_dir=out)
    with _OutputLock(out):
        _remove_tmp(out)  # attempts of killed runs; no task of ours can be running now
        rows: dict[str, dict[str, Any]] = {}
        todo: list[PairTask] = []
        for spec in specs:
            cfg = spec.config(base)
            final = out / spec.name
            rows[spec.name] = {"name": spec.name, "status": "pending", "attempts": 0,
                               "output": str(final), "fixed": spec.fixed,
                               "moving": spec.moving}
            if not overwrite and is_complete(final):
                _forget_failure(out, spec.name)
                rows[spec.name].update(status="skipped", note=_parameter_note(cfg, final),
                                       **_stats_of(final))
                continue
            todo.append(PairTask(spec=spec, config=cfg, output_dir=str(out),
                                 overwrite=overwrite, qc=qc,
                                 reset_peak=pairs_per_worker == 1, hook=pair_hook))
        summary.rows = [rows[s.name] for s in specs]
        logger.info("%d pair(s): %d to register, %d already done", len(specs), len(todo),
                    len(specs) - len(todo))
        try:
            if todo:
                _execute(todo, rows, summary, client, retries, progress, workers,
                         threads_per_worker, pairs_per_worker, memory_limit,
                         dashboard_address, start)
        finally:
            _remove_tmp(out)
            summary.seconds = time.perf_counter() - start
            summary.write()
    return summary


def _execute(todo: list[PairTask], rows: dict[str, dict[str, Any]], summary: BatchSummary,
             client: Any, retries: int, progress: bool, workers: int | None,
             threads_per_worker: int, pairs_per_worker: int,
             memory_limit: str | float | None, dashboard_address: str | None,
             start: float) -> None:
    try:
        from distributed import as_completed
    except ImportError as error:
        raise ResourceError("samconvex batch needs Dask distributed, which is not installed; "
                            "pip install 'dask[distributed]'.") from error
    from tqdm import tqdm

    cluster = None
    own = client is None
    if own:
        n = min(workers or _default_workers(len(todo), threads_per_worker), len(todo))
        client, cluster = _local_client(n, threads_per_worker, pairs_per_worker, memory_limit,
                                        dashboard_address)
        torch_threads: int | None = max(1, threads_per_worker // pairs_per_worker)
    else:
        torch_threads = None  # each worker's own threads / pairs_per_worker
    bar = None
    try:
        summary.dashboard = _dashboard(client)
        summary.workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        client.register_plugin(BatchWorkerSetup(pairs_per_worker, torch_threads))
        if progress:
            bar = tqdm(total=len(todo), desc="pairs", unit="pair", file=sys.stderr)
            if summary.dashboard:
                bar.write(f"dask dashboard: {summary.dashboard}", file=sys.stderr)
        logger.info("dask dashboard: %s", summary.dashboard or "not available (needs bokeh)")
        token = uuid.uuid4().hex[:8]
        running: dict[str, PairTask] = {}

        def submit(task: PairTask) -> Any:
            task.attempt += 1
            task.torch_threads = torch_threads
            future = client.submit(run_pair, task, key=f"samconvex-{token}-{task.spec.name}-"
                                   f"{task.attempt}", resources={RESOURCE: 1}, pure=False)
            running[future.key] = task
            return future

        futures = as_completed([submit(task) for task in todo])
        last_write = time.perf_counter()
        for future in futures:
            task = running.pop(future.key)
            row = _outcome(future, task)
            future.release()
            if row["status"] == "failed" and row.get("transient") and task.attempt <= retries:
                logger.warning("pair %s failed (%s); retrying (attempt %d of %d)",
                               task.spec.name, row["error"], task.attempt + 1, retries + 1)
                futures.add(submit(task))
                continue
            row["attempts"] = task.attempt
            if row["status"] == "failed":
                row["error_file"] = str(_write_failure(summary.output_dir, task.spec, row))
                logger.warning("pair %s failed: %s", task.spec.name, row["error"])
            else:
                _forget_failure(summary.output_dir, task.spec.name)
            rows[task.spec.name].update(row)
            if bar is not None:
                bar.update(1)
                counts = summary.counts
                bar.set_postfix_str(f"{counts['done']} done, {counts['failed']} failed")
            if time.perf_counter() - last_write > _SUMMARY_EVERY_S:
                summary.seconds = time.perf_counter() - start
                summary.write()
                last_write = time.perf_counter()
    except BaseException:
        if running and client is not None and not own:
            with contextlib.suppress(Exception):
                client.cancel(list(running))
        raise
    finally:
        if bar is not None:
            bar.close()
        if own:
            # workers holding ITK and torch can take longer than the nanny's 4 s to exit;
            # they are killed then, which is harmless here (every pair is committed)
            nanny_log = logging.getLogger("distributed.nanny")
            level = nanny_log.level
            nanny_log.setLevel(logging.ERROR)
            try:
                client.close()
                cluster.close()
            finally:
                nanny_log.setLevel(level)


def _outcome(future: Any, task: PairTask) -> dict[str, Any]:
    """The row a finished future gives, or a failed row for a lost / cancelled task."""
    if future.status == "cancelled":
        return _killed_row(task, RuntimeError("the task was cancelled (cluster shut down?)"), "")
    try:
        return future.result()
    except Exception as error:  # KilledWorker, or a result that cannot be received
        return _killed_row(task, error, traceback.format_exc())


# ==========================================================================================
# command line


_EPILOG = """\
manifest (CSV with a header, or JSON list of objects / {"pairs": [...], "defaults": {...}}):
  fixed,moving                      required image paths (relative to the manifest's folder)
  fixed_labels,moving_labels        label maps: warped labels; with both, Dice before/after
  fixed_mask,moving_mask            masks on their image's grid
  initial_transform                 fixed->moving transform file, or elastix-affine
  fixed_landmarks,moving_landmarks  CSV files of x,y,z (LPS mm), row i corresponds: TRE
  output                            folder name of the pair (default fixed__moving stems)
  <parameter>                       any registration parameter (see `samconvex config`),
                                    e.g. io_iterations, per pair

example:
  fixed,moving,moving_labels,io_iterations
  ct/pt4.nii.gz,ct/pt13.nii.gz,labels/pt13.nii.gz,30

outputs: OUT/<name>/{transform.h5,field.nii.gz,warped.nii.gz,warped_labels.nii.gz,qc.png,
report.json} (as `samconvex register`), OUT/summary.csv and OUT/summary.json, and
OUT/failures/<name>.error.txt with the traceback of each failed pair. Running the same
command again skips finished pairs and redoes the rest. Exit code 1 when a pair failed.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; use 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``samconvex batch`` options to ``parser``."""
    from ..cli import _add_registration_options

    parser.description = (
        "Register every pair of a manifest on Dask distributed: a local cluster of worker\n"
        "processes by default, or an existing cluster with --scheduler. Each pair writes what\n"
        "`samconvex register` writes into OUT/<name>/ atomically; finished pairs are skipped\n"
        "on a re-run; a failing pair is recorded and never stops the others.")
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("manifest", help="pairs: CSV or JSON manifest (format below)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (one sub-folder per pair)")
    run = parser.add_argument_group("execution")
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="local worker processes (default: cores / threads per worker)")
    run.add_argument("--threads-per-worker", type=_positive_int, default=1, metavar="M",
                     help="threads per local worker, used by torch (default: %(default)s)")
    run.add_argument("--pairs-per-worker", type=_positive_int, default=1, metavar="K",
                     help="pairs a worker runs at once (default: %(default)s; more uses more "
                          "memory)")
    run.add_argument("--memory-limit", default="auto", metavar="SIZE",
                     help="memory per local worker, e.g. 4GB (default: RAM / workers); a "
                          "worker over it is restarted and its pair retried")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on an existing Dask cluster (e.g. tcp://host:8786) instead of "
                          "a local one; the workers must see the same file paths")
    run.add_argument("--dashboard-address", default=":8787", metavar="ADDR",
                     help="local cluster dashboard address (default: %(default)s; needs "
                          "bokeh)")
    run.add_argument("--retries", type=_count, default=0, metavar="N",
                     help="extra attempts for pairs failing for transient reasons (memory, "
                          "lost worker, I/O); bad inputs are never retried (default: 0)")
    run.add_argument("--overwrite", action="store_true",
                     help="redo every pair, replacing finished outputs")
    run.add_argument("--no-qc", action="store_true", help="skip qc.png")
    run.add_argument("--elastix-affine", action="store_true",
                     help="itk-elastix affine pre-alignment for pairs without "
                          "initial_transform (needs itk-elastix)")
    run.add_argument("--no-file-check", action="store_true",
                     help="do not check that input files exist before starting (when only "
                          "the remote workers see them)")
    _add_registration_options(parser)


def run(args: argparse.Namespace) -> int:
    """``samconvex batch``: exit code 0 when every pair is done or skipped, 1 otherwise."""
    from ..cli import EXIT_FAILURE, EXIT_OK, _config_from_args

    cfg = _config_from_args(args)
    manifest = Path(args.manifest)
    specs = load_pairs(manifest, cfg, check_files=not args.no_file_check,
                       default_initial_transform=ELASTIX_AFFINE if args.elastix_affine
                       else None)
    client = None
    if args.scheduler:
        if args.workers:
            logger.warning("--workers is ignored with --scheduler (the cluster has its own)")
        client = _connect(args.scheduler)
    try:
        summary = register_many(
            specs, client, output_dir=args.output, config=cfg, workers=args.workers,
            threads_per_worker=args.threads_per_worker, pairs_per_worker=args.pairs_per_worker,
            memory_limit=args.memory_limit, dashboard_address=args.dashboard_address,
            retries=args.retries, overwrite=args.overwrite, qc=not args.no_qc,
            check_files=not args.no_file_check, progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
    if not args.quiet:
        counts = summary.counts
        rate = summary.pairs_per_minute
        print(f"batch: {counts['done']} done, {counts['skipped']} skipped, "
              f"{counts['failed']} failed in {summary.seconds:.1f} s"
              + (f" ({rate:.1f} pairs/min)" if rate else "")
              + f"; summary in {summary.csv_path}")
        for row in summary.rows:
            if row["status"] == "failed":
                print(f"  failed {row['name']}: {row['error']} (see {row.get('error_file')})")
    return EXIT_OK if summary.ok else EXIT_FAILURE


def _connect(address: str) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout="15s")
    except (OSError, TimeoutError) as error:
        raise SAMConvexError(
            f"cannot connect to the Dask scheduler {address} ({error}); check the address "
            "(e.g. tcp://host:8786) and that `dask scheduler` is running there.") from error


__all__ = ["SUMMARY_COLUMNS", "BatchSummary", "BatchWorkerSetup", "ManifestError", "PairSpec",
           "PairTask", "add_arguments", "cached_extractor", "commit_attempt", "is_complete",
           "register_many", "report_stats", "run", "run_pair"]
