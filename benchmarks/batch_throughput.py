"""Benchmark: ``register_many`` throughput with 1 and 2 Dask workers on the same cores.

Runs the head-neck pairs of ``../shared/data/MANIFEST.json`` (fixed, moving and both label
maps; no initial transform unless ``--elastix-affine``) through
:func:`itk_samconvex.apps.batch.register_many` on a fresh ``LocalCluster`` per setting:

* 1 worker x ``--cores`` threads, and
* ``--cores`` workers x 1 thread (default ``--cores 2``: both settings use 2 cores).

For each setting it reports:

* **cold** time: start of the cluster until every worker finished one small warm-up
  registration (process start, imports and ITK's lazy module loading, paid once per worker);
* **pairs per minute** over the timed batch (``register_many`` on the warm cluster, outputs
  written exactly as ``samconvex batch`` writes them);
* **peak memory per worker**: the kernel's high-water mark of each worker process (VmHWM,
  from the batch summary) and the largest resident size seen by a 0.2 s sampling thread.

Usage::

    python benchmarks/batch_throughput.py                   # all head-neck pairs
    python benchmarks/batch_throughput.py --limit 2         # quick check
    python benchmarks/batch_throughput.py --json results/batch_throughput.json

Logs a markdown table; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
logger = logging.getLogger("benchmark")


def head_neck_pairs(data: Path, limit: int | None) -> list[dict[str, Any]]:
    """Manifest rows (absolute paths) of the head-neck cases of ``data/MANIFEST.json``."""
    manifest = json.loads((data / "MANIFEST.json").read_text(encoding="utf-8"))
    rows = []
    for case in manifest["cases"]:
        if case.get("kind") != "headneck" or not case.get("moving"):
            continue
        row = {"output": case["id"]}
        for key in ("fixed", "moving", "fixed_labels", "moving_labels"):
            if case.get(key):
                row[key] = str(data / case[key])
        rows.append(row)
    return rows[:limit] if limit else rows


def _warm_up() -> float:
    """One tiny registration in this worker (imports, ITK lazy loading); seconds taken."""
    start = time.perf_counter()
    from itk_samconvex.apps.phantom import make_phantom_pair
    from itk_samconvex.edge.registration import register
    from itk_samconvex.edge.transforms import warp_image
    from itk_samconvex.solver.config import build_config

    pair = make_phantom_pair(size=(24, 24, 24), spacing=(10.0, 10.0, 10.0))
    result = register(
        pair.fixed, pair.moving, build_config("fast", working_spacing_mm=10.0, io_iterations=2)
    )
    warp_image(pair.moving, result.transform, pair.fixed)
    return time.perf_counter() - start


class RSSSampler:
    """Polls the resident memory of a set of local processes (MB) every ``interval`` s."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.pids, self.interval = pids, interval
        self.peak_mb = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            for worker, pid in self.pids.items():
                try:
                    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                        rss = int(handle.read().split()[1]) * page / 2**20
                except (OSError, ValueError, IndexError):
                    continue  # worker restarting
                self.peak_mb[worker] = max(self.peak_mb[worker], rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_setting(
    pairs: list[dict[str, Any]],
    workers: int,
    threads: int,
    out: Path,
    preset: str,
    overrides: dict[str, Any],
    initial: str | None,
) -> dict[str, Any]:
    """Time one (workers, threads) setting on a fresh local cluster."""
    from distributed import Client, LocalCluster

    from itk_samconvex.apps.batch import RESOURCE, register_many

    env = {
        name: str(threads)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        resources={RESOURCE: 1},
        dashboard_address=None,
        env=env,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        warm = client.run(_warm_up)
        cold = time.perf_counter() - start
        pids = client.run(os.getpid)
        with RSSSampler(pids) as sampler:
            tick = time.perf_counter()
            summary = register_many(
                pairs,
                client,
                output_dir=out,
                preset=preset,
                parameters=overrides,
                initial_transform=initial,
                overwrite=True,
                progress=False,
            )
            wall = time.perf_counter() - tick
    finally:
        client.close()
        cluster.close()
    done = [row for row in summary.rows if row["status"] == "done"]
    hwm: dict[str, float] = {}
    for row in summary.rows:
        if row.get("worker") and row.get("worker_peak_rss_mb"):
            hwm[row["worker"]] = max(hwm.get(row["worker"], 0.0), row["worker_peak_rss_mb"])
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "pairs": len(pairs),
        "done": len(done),
        "failed": [(r["name"], r.get("error")) for r in summary.rows if r["status"] == "failed"],
        "cold_start_s": cold,
        "warm_up_s": warm,
        "batch_s": wall,
        "pairs_per_minute": 60.0 * len(done) / wall if wall > 0 else None,
        "mean_pair_s": sum(r["seconds"] for r in done) / len(done) if done else None,
        "peak_rss_mb_per_worker_hwm": hwm,
        "peak_rss_mb_per_worker_sampled": sampler.peak_mb,
        "mean_dice_after": (
            sum(r["dice_mean_after"] for r in done) / len(done)
            if done and all(r.get("dice_mean_after") is not None for r in done)
            else None
        ),
    }


def _parse_set(items: list[str]) -> dict[str, Any]:
    from itk_samconvex.solver.config import parse_toml_value as _parse_value

    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name.strip()] = _parse_value(value.strip())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SAMCONVEX_SHARED_DATA", DEFAULT_DATA)),
        help="shared data folder (MANIFEST.json)",
    )
    parser.add_argument("--limit", type=int, help="use only the first N head-neck pairs")
    parser.add_argument(
        "--cores",
        type=int,
        default=2,
        help="cores per setting: 1 x CORES threads vs CORES x 1 (default 2)",
    )
    parser.add_argument("--preset", default="default", choices=("default", "paper", "fast"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="registration parameter override (repeatable)",
    )
    parser.add_argument(
        "--elastix-affine",
        action="store_true",
        help="itk-elastix affine pre-alignment per pair (default: none)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    pairs = head_neck_pairs(args.data, args.limit)
    if not pairs:
        raise SystemExit(f"no head-neck pairs in {args.data / 'MANIFEST.json'}")
    overrides = _parse_set(args.set)
    initial = "elastix-affine" if args.elastix_affine else None
    results = []
    with tempfile.TemporaryDirectory(prefix="samconvex-batch-bench-") as scratch:
        root = args.out or Path(scratch)
        for workers, threads in ((1, args.cores), (args.cores, 1)):
            logger.info(
                "running %d pair(s) on %d worker(s) x %d thread(s) ...",
                len(pairs),
                workers,
                threads,
            )
            results.append(
                run_setting(
                    pairs, workers, threads, root / f"w{workers}", args.preset, overrides, initial
                )
            )
    logger.info(
        "\n| workers x threads | pairs done | batch s | pairs/min | mean s/pair | "
        "cold start s | peak RSS per worker MB (HWM) | peak RSS sampled MB |"
    )
    logger.info("|---|---|---|---|---|---|---|---|")
    for r in results:
        hwm = ", ".join(f"{v:.0f}" for v in r["peak_rss_mb_per_worker_hwm"].values())
        sampled = ", ".join(f"{v:.0f}" for v in r["peak_rss_mb_per_worker_sampled"].values())
        logger.info(
            "| %d x %d | %d/%d | %.1f | %.2f | %.1f | %.1f | %s | %s |",
            r["workers"],
            r["threads_per_worker"],
            r["done"],
            r["pairs"],
            r["batch_s"],
            r["pairs_per_minute"] or 0.0,
            r["mean_pair_s"] or 0.0,
            r["cold_start_s"],
            hwm,
            sampled,
        )
        for name, error in r["failed"]:
            logger.info("  failed %s: %s", name, error)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "preset": args.preset,
                    "overrides": overrides,
                    "elastix_affine": args.elastix_affine,
                    "results": results,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
