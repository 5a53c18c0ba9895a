"""Affine pre-alignment: elastix from the geometric centres vs from the translation search.

For every manifest case whose images come from different scanner frames (every kind but
``lung``), runs ``itk_samconvex.edge.elastix.elastix_affine`` with ``initialization="geometric-
centre"`` (elastix's own start, the earlier default) and ``"search"`` (the translation search
of ``itk_samconvex.edge.prealign`` first), and scores the affine alone: mean Dice of the moving
labels warped through it (nearest neighbour), and the wall time. A failed run is reported
with its error and scores the identity.

Usage::

    python benchmarks/prealignment.py [--out benchmarks/results/prealignment] [--cases ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import DEFAULT_MANIFEST, Reference, machine_info, machine_line, warp_labels

logger = logging.getLogger("benchmark.prealignment")
INITIALIZATIONS = ("geometric-centre", "search")  # table column order (old start first)


def affine_dice(reference: Reference) -> float:
    """Mean Dice of the moving labels through ``reference.affine`` alone (u = 0), NaN-ignoring
    like the suite's ``mean_dice``."""
    import itk

    from itk_samconvex.metrics import dice_per_label

    shape = tuple(reference.fixed.GetLargestPossibleRegion().GetSize())[::-1]
    warped = warp_labels(reference, np.zeros((*shape, 3), np.float32))
    fixed_labels = np.asarray(itk.array_view_from_image(reference.fixed_labels))
    return float(np.nanmean(list(dice_per_label(fixed_labels, warped, reference.labels).values())))


def run_case(entry: dict[str, Any], root: Path) -> dict[str, Any]:
    """Both initialisations on one manifest case: time, mean Dice, error."""
    import itk

    from itk_samconvex.edge.elastix import elastix_affine

    fixed = itk.imread(str(root / entry["fixed"]), itk.F)
    moving = itk.imread(str(root / entry["moving"]), itk.F)
    reference = Reference(
        fixed=fixed,
        fixed_labels=itk.imread(str(root / entry["fixed_labels"])),
        moving_labels=itk.imread(str(root / entry["moving_labels"])),
    )
    fixed_ids = set(np.unique(itk.array_view_from_image(reference.fixed_labels)).tolist())
    moving_ids = set(np.unique(itk.array_view_from_image(reference.moving_labels)).tolist())
    reference.labels = sorted(int(v) for v in fixed_ids & moving_ids if v != 0)
    row: dict[str, Any] = {"case": entry["id"], "identity_dice": affine_dice(reference)}
    for initialization in INITIALIZATIONS:
        tick = time.perf_counter()
        try:
            reference.affine = elastix_affine(fixed, moving, initialization=initialization)
            error = None
        except Exception as failure:  # a failed start is a result here
            reference.affine = None
            error = f"{type(failure).__name__}: {str(failure).strip().splitlines()[-1]}"
        row[initialization] = {
            "seconds": time.perf_counter() - tick,
            "dice": affine_dice(reference),
            "error": error,
            "transform": type(reference.affine).__name__,
        }
        logger.info(
            "%s %s: Dice %.3f (%s)",
            entry["id"],
            initialization,
            row[initialization]["dice"],
            error or "ok",
        )
    return row


def render(rows: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "# Affine pre-alignment: geometric-centre start vs translation search",
        "",
        f"Machine: {machine}",
        "",
        "Mean Dice of the moving labels through the affine alone (no deformable stage).",
        "",
        "| case | identity | geometric centre | s | search | s | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        centre, search = row["geometric-centre"], row["search"]
        note = "; ".join(f"{k}: {row[k]['error']}" for k in INITIALIZATIONS if row[k]["error"])
        lines.append(
            f"| {row['case']} | {row['identity_dice']:.3f} | {centre['dice']:.3f} | "
            f"{centre['seconds']:.1f} | {search['dice']:.3f} | {search['seconds']:.1f} "
            f"| {note} |"
        )
    mean = {k: float(np.mean([r[k]["dice"] for r in rows])) for k in INITIALIZATIONS}
    seconds = {k: float(np.mean([r[k]["seconds"] for r in rows])) for k in INITIALIZATIONS}
    lines.append(
        f"| **mean** | {np.mean([r['identity_dice'] for r in rows]):.3f} | "
        f"**{mean['geometric-centre']:.3f}** | {seconds['geometric-centre']:.1f} | "
        f"**{mean['search']:.3f}** | {seconds['search']:.1f} | |"
    )
    better = sum(r["search"]["dice"] > r["geometric-centre"]["dice"] + 1e-3 for r in rows)
    worse = sum(r["search"]["dice"] < r["geometric-centre"]["dice"] - 1e-3 for r in rows)
    lines += ["", f"Search better on {better}, worse on {worse} of {len(rows)} cases."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, default=Path("results/prealignment"))
    parser.add_argument("--cases", nargs="*", default=None, help="case ids (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    manifest = json.loads(args.manifest.read_text())
    root = args.manifest.parent
    entries = [
        c
        for c in manifest["cases"]
        if c.get("moving")
        and c.get("moving_labels")
        and c["kind"] != "lung"
        and (not args.cases or c["id"] in args.cases)
    ]
    rows = [run_case(entry, root) for entry in entries]
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    (args.out / "prealignment.json").write_text(
        json.dumps({"machine": info, "rows": rows}, indent=1)
    )
    text = render(rows, machine_line(info))
    (args.out / "prealignment.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
