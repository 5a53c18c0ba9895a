"""The client side of a batch: :func:`register_many` schedules the pairs on Dask.

Guarantees (with ``commit`` and ``worker``):

* **Atomic per pair** and **resumable**: see :mod:`.commit`; a re-run skips complete pairs.
* **Failure-isolated.** Any error of a pair is recorded with its message, and its traceback
  goes to ``OUT/failures/<name>.error.txt``; the other pairs go on. A worker that dies while
  running a pair is replaced by its nanny and Dask reruns the pair elsewhere; the summary
  counts the lost attempt and says why the pair was retried. ``retries`` reruns pairs that
  failed for reasons that may be transient (memory, I/O, lost workers), never bad inputs.
* **Inputs are sacred.** A pair whose input lies inside its own output folder is refused
  before anything runs (a commit replaces that folder as a whole).
* **Bounded memory.** By default each worker runs one pair at a time (a worker resource),
  with ``torch`` using the worker's threads, so ``workers x threads`` matches the cores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...edge.io import make_output_folder, write_text
from ...errors import InputError, ResourceError
from ...solver.config import SAMConvexConfig, build_config
from ..files import ELASTIX_AFFINE
from ..outputs import OUTPUT_NAMES
from .commit import OutputLock, is_complete, remove_attempts
from .manifest import ManifestError, PairSpec, load_pairs
from .summary import BatchSummary, folder_stats
from .worker import RESOURCE, BatchWorkerSetup, PairHook, PairTask, run_pair

logger = logging.getLogger(__name__)

#: Folder of the per-pair error files.
FAILURES_DIR = "failures"
_SUMMARY_EVERY_S = 2.0


def refuse_inputs_in_outputs(specs: Sequence[PairSpec], out: Path) -> None:
    """ManifestError when an input file lies inside a pair's output folder (``OUT/<name>``),
    which a commit or an overwrite replaces as a whole."""
    problems = []
    for spec in specs:
        folder = (out / spec.name).resolve()
        for key, value in spec.files.to_dict().items():
            if value == ELASTIX_AFFINE:
                continue
            path = Path(value).resolve()
            if path == folder or folder in path.parents:
                problems.append(
                    f"{spec.where}: {key} {value} lies inside the pair's output "
                    f"folder {folder}, which the batch replaces as a whole; move the "
                    "input elsewhere or choose another -o folder"
                )
    if problems:
        raise ManifestError("(output folder check)", problems)


def _default_workers(pairs: int, threads_per_worker: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(pairs, cores // max(1, threads_per_worker)))


def _local_client(
    workers: int,
    threads_per_worker: int,
    pairs_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str | None,
):
    """A ``LocalCluster`` of worker processes (one nanny each, restarted if they die)."""
    from distributed import Client, LocalCluster

    torch_threads = max(1, threads_per_worker // pairs_per_worker)
    env = {
        name: str(torch_threads)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        resources={RESOURCE: pairs_per_worker},
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
        env=env,
    )
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
    text = (
        f"pair: {spec.name} ({spec.where})\n"
        f"fixed: {spec.files.fixed}\nmoving: {spec.files.moving}\n"
        f"attempts: {row.get('attempts')}\nworker: {row.get('worker')}\n"
        f"error: {row.get('error')}\n\n{row.get('traceback') or ''}"
    )
    write_text(path, text, overwrite=True)
    return path


def _forget_failure(out: Path, name: str) -> None:
    path = _failure_file(out, name)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty


def _parameter_note(cfg: SAMConvexConfig, folder: Path) -> str | None:
    """A note when a skipped pair was made with other parameters than asked now."""
    try:
        report = json.loads((folder / OUTPUT_NAMES["report"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    made = report.get("parameters")
    if not isinstance(made, dict):
        return None
    wanted = json.loads(json.dumps(cfg.to_dict()))
    changed = sorted(k for k in set(made) | set(wanted) if made.get(k) != wanted.get(k))
    if not changed:
        return None
    return (
        f"kept outputs made with different parameters ({', '.join(changed[:5])}"
        f"{', ...' if len(changed) > 5 else ''}); use overwrite to redo"
    )


def _killed_row(task: PairTask, error: BaseException, tb: str) -> dict[str, Any]:
    from distributed.scheduler import KilledWorker

    spec = task.spec
    row: dict[str, Any] = {
        "name": spec.name,
        "status": "failed",
        "fixed": spec.files.fixed,
        "moving": spec.files.moving,
        "traceback": tb,
    }
    if isinstance(error, KilledWorker):
        row.update(
            error=(
                "KilledWorker: the worker process died every time it ran this pair "
                "(e.g. killed for exceeding its memory limit); raise --memory-limit, "
                "run fewer pairs per worker, or raise working_spacing_mm"
            ),
            worker=getattr(getattr(error, "last_worker", None), "address", None),
            transient=True,
        )
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
    write_field: bool = False,
    hd95: bool = False,
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
        qc: write the QC report (``qc.png``, ``qc.html``) per pair.
        write_field: also write ``field.nii.gz`` per pair.
        hd95: add HD95 per label to the reports.
        check_files: check that the input files exist before starting.
        progress: show a progress bar and the dashboard link on stderr.
        pair_hook: see :class:`PairTask` (instrumentation / fault injection).

    Returns:
        The :class:`BatchSummary` (also written to ``OUT/summary.csv`` and ``summary.json``).

    Raises:
        ManifestError: every problem of the manifest, with row numbers, before anything runs.
        SAMConvexError: another batch is writing into ``output_dir``.
    """
    start = time.perf_counter()
    base = build_config(preset, config, **dict(parameters or {}))
    specs = load_pairs(pairs, base, base_dir, check_files, initial_transform)
    if retries < 0 or pairs_per_worker < 1 or threads_per_worker < 1:
        raise InputError("retries must be >= 0 and pairs_per_worker, threads_per_worker >= 1.")
    out = Path(output_dir).resolve()
    refuse_inputs_in_outputs(specs, out)
    make_output_folder(out)
    summary = BatchSummary(rows=[], output_dir=out)
    with OutputLock(out):
        remove_attempts(out)  # attempts of killed runs; no task of ours can be running now
        rows: dict[str, dict[str, Any]] = {}
        todo: list[PairTask] = []
        for spec in specs:
            cfg = spec.config(base)
            final = out / spec.name
            rows[spec.name] = {
                "name": spec.name,
                "status": "pending",
                "attempts": 0,
                "output": str(final),
                "fixed": spec.files.fixed,
                "moving": spec.files.moving,
            }
            if not overwrite and is_complete(final):
                _forget_failure(out, spec.name)
                rows[spec.name].update(
                    status="skipped", note=_parameter_note(cfg, final), **folder_stats(final)
                )
                continue
            todo.append(
                PairTask(
                    spec=spec,
                    config=cfg,
                    output_dir=str(out),
                    overwrite=overwrite,
                    qc=qc,
                    write_field=write_field,
                    hd95=hd95,
                    reset_peak=pairs_per_worker == 1,
                    hook=pair_hook,
                )
            )
        summary.rows = [rows[s.name] for s in specs]
        logger.info(
            "%d pair(s): %d to register, %d already done",
            len(specs),
            len(todo),
            len(specs) - len(todo),
        )
        try:
            if todo:
                _execute(
                    todo,
                    rows,
                    summary,
                    client,
                    retries,
                    progress,
                    workers,
                    threads_per_worker,
                    pairs_per_worker,
                    memory_limit,
                    dashboard_address,
                    start,
                )
        finally:
            remove_attempts(out)
            summary.seconds = time.perf_counter() - start
            summary.write()
    return summary


def _execute(
    todo: list[PairTask],
    rows: dict[str, dict[str, Any]],
    summary: BatchSummary,
    client: Any,
    retries: int,
    progress: bool,
    workers: int | None,
    threads_per_worker: int,
    pairs_per_worker: int,
    memory_limit: str | float | None,
    dashboard_address: str | None,
    start: float,
) -> None:
    try:
        from distributed import as_completed
    except ImportError as error:
        raise ResourceError(
            "samconvex batch needs Dask distributed, which is not installed; "
            "pip install 'dask[distributed]'."
        ) from error
    from tqdm import tqdm

    cluster = None
    own = client is None
    if own:
        n = min(workers or _default_workers(len(todo), threads_per_worker), len(todo))
        client, cluster = _local_client(
            n, threads_per_worker, pairs_per_worker, memory_limit, dashboard_address
        )
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
            future = client.submit(
                run_pair,
                task,
                key=f"samconvex-{token}-{task.spec.name}-{task.attempt}",
                resources={RESOURCE: 1},
                pure=False,
            )
            running[future.key] = task
            return future

        futures = as_completed([submit(task) for task in todo])
        last_write = time.perf_counter()
        for future in futures:
            task = running.pop(future.key)
            row = _outcome(future, task)
            future.release()
            if row["status"] == "failed" and row.get("transient") and task.attempt <= retries:
                logger.warning(
                    "pair %s failed (%s); retrying (attempt %d of %d)",
                    task.spec.name,
                    row["error"],
                    task.attempt + 1,
                    retries + 1,
                )
                task.reasons.append(f"submission {task.attempt} failed: {row['error']}")
                futures.add(submit(task))
                continue
            lost = row.pop("lost_attempts", None) or []
            task.reasons.extend(lost)
            row["attempts"] = task.attempt + len(lost)
            if task.reasons:
                row["retried_because"] = "; ".join(task.reasons)
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


__all__ = ["FAILURES_DIR", "refuse_inputs_in_outputs", "register_many"]
