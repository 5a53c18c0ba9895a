"""``samconvex batch MANIFEST -o OUT``: many pairs on Dask, resumable, failure-isolated."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_registration_options,
    check_inputs_exist,
    config_from_args,
)

logger = logging.getLogger(__name__)

_EPILOG = """\
manifest (CSV with a header, or JSON list of objects / {"pairs": [...], "defaults": {...}}):
  fixed,moving                      required image paths (relative to the manifest's folder)
  fixed_labels,moving_labels        label maps: warped labels; with both, Dice before/after
  fixed_mask,moving_mask            masks on their image's grid
  initial_transform                 fixed->moving transform file, or elastix-affine
  fixed_landmarks,moving_landmarks  landmark files, x,y,z (LPS mm), row i corresponds: TRE
  label_names                       label id -> name table (JSON or CSV id,name)
  output                            folder name of the pair (default fixed__moving stems)
  <parameter>                       any registration parameter (see `samconvex config`),
                                    e.g. io_iterations, per pair

example:
  fixed,moving,moving_labels,io_iterations
  ct/pt4.nii.gz,ct/pt13.nii.gz,labels/pt13.nii.gz,30

outputs: OUT/<name>/{transform.h5,warped.nii.gz,warped_labels.nii.gz,affine.h5,qc.png,
qc.html,report.json} (as `samconvex register`), OUT/summary.csv and OUT/summary.json, and
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
    parser.description = (
        "Register every pair of a manifest on Dask distributed: a local cluster of worker\n"
        "processes by default, or an existing cluster with --scheduler. Each pair writes what\n"
        "`samconvex register` writes into OUT/<name>/ atomically; finished pairs are skipped\n"
        "on a re-run; a failing pair is recorded and never stops the others."
    )
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("manifest", help="pairs: CSV or JSON manifest (format below)")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder (one sub-folder per pair)",
    )
    run = parser.add_argument_group("execution")
    run.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="local worker processes (default: cores / threads per worker)",
    )
    run.add_argument(
        "--threads-per-worker",
        type=_positive_int,
        default=1,
        metavar="M",
        help="threads per local worker, used by torch (default: %(default)s)",
    )
    run.add_argument(
        "--pairs-per-worker",
        type=_positive_int,
        default=1,
        metavar="K",
        help="pairs a worker runs at once (default: %(default)s; more uses more memory)",
    )
    run.add_argument(
        "--memory-limit",
        default="auto",
        metavar="SIZE",
        help="memory per local worker, e.g. 4GB (default: RAM / workers); a "
        "worker over it is restarted and its pair retried",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask cluster (e.g. tcp://host:8786) instead of "
        "a local one; the workers must see the same file paths",
    )
    run.add_argument(
        "--dashboard-address",
        default=":8787",
        metavar="ADDR",
        help="local cluster dashboard address (default: %(default)s; needs bokeh)",
    )
    run.add_argument(
        "--retries",
        type=_count,
        default=0,
        metavar="N",
        help="extra attempts for pairs failing for transient reasons (memory, "
        "lost worker, I/O); bad inputs are never retried (default: 0)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="redo every pair, replacing finished outputs"
    )
    run.add_argument("--no-qc", action="store_true", help="skip qc.png and qc.html")
    run.add_argument("--write-field", action="store_true", help="also write field.nii.gz per pair")
    run.add_argument("--hd95", action="store_true", help="add HD95 per label to the reports")
    run.add_argument(
        "--elastix-affine",
        action="store_true",
        help="itk-elastix affine pre-alignment for pairs without "
        "initial_transform (needs itk-elastix)",
    )
    run.add_argument(
        "--no-file-check",
        action="store_true",
        help="do not check that input files exist before starting (when only "
        "the remote workers see them)",
    )
    add_registration_options(parser)


def run(args: argparse.Namespace) -> int:
    """``samconvex batch``: exit code 0 when every pair is done or skipped, 1 otherwise."""
    from ..apps.batch import load_pairs, register_many
    from ..apps.files import ELASTIX_AFFINE

    cfg = config_from_args(args)
    manifest = Path(args.manifest)
    check_inputs_exist([("manifest", args.manifest)])
    specs = load_pairs(
        manifest,
        cfg,
        check_files=not args.no_file_check,
        default_initial_transform=ELASTIX_AFFINE if args.elastix_affine else None,
    )
    client = None
    if args.scheduler:
        if args.workers:
            logger.warning("--workers is ignored with --scheduler (the cluster has its own)")
        client = _connect(args.scheduler)
    try:
        summary = register_many(
            specs,
            client,
            output_dir=args.output,
            config=cfg,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            pairs_per_worker=args.pairs_per_worker,
            memory_limit=args.memory_limit,
            dashboard_address=args.dashboard_address,
            retries=args.retries,
            overwrite=args.overwrite,
            qc=not args.no_qc,
            write_field=args.write_field,
            hd95=args.hd95,
            check_files=not args.no_file_check,
            progress=not args.quiet,
        )
    finally:
        if client is not None:
            client.close()
    if not args.quiet:
        counts = summary.counts
        rate = summary.pairs_per_minute
        print(
            f"batch: {counts['done']} done, {counts['skipped']} skipped, "
            f"{counts['failed']} failed in {summary.seconds:.1f} s"
            + (f" ({rate:.1f} pairs/min)" if rate else "")
            + f"; summary in {summary.csv_path}"
        )
        for row in summary.rows:
            if row["status"] == "failed":
                print(f"  failed {row['name']}: {row['error']} (see {row.get('error_file')})")
    return EXIT_OK if summary.ok else EXIT_FAILURE


def _connect(address: str) -> Any:
    from distributed import Client

    from ..errors import SAMConvexError

    try:
        return Client(address, timeout="15s")
    except (OSError, TimeoutError) as error:
        raise SAMConvexError(
            f"cannot connect to the Dask scheduler {address} ({error}); check the address "
            "(e.g. tcp://host:8786) and that `dask scheduler` is running there."
        ) from error


__all__ = ["add_arguments", "run"]
