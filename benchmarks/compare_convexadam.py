"""Benchmark: itk-samconvex against ConvexAdam on the same inputs, in one run.

For every case of a manifest (default: the head-neck cases of ../shared/data/MANIFEST.json):

1. one itk-elastix affine pre-alignment A (fixed -> moving), shared by every method;
2. each method runs all cases in its own fresh process, after one small warm-up
   registration that takes one-off import and lazy-loading costs out of the timing; the
   timed call is the registration alone, and a sampling thread records the process's peak
   resident memory during it (absolute, and the increase over the resident memory before):
   * ours: ``itk.samconvex_registration(fixed, moving, initial_transform=A, preset=...)``
     (includes our resampling onto the working grid and the conversion of the field back);
   * ConvexAdam (PyPI ``convexadam`` 0.2.0, its default settings): ``convex_adam_pt`` on the
     fixed array and the moving image resampled through A onto the fixed grid (the
     resampling is done before the clock starts);
3. every method's deformable field u (fixed grid, LPS mm) is scored the same way: labels
   are warped once through ``A o (id + u)`` with nearest-neighbour interpolation; Dice per
   organ; SDlogJ and % non-positive Jacobian of x -> x + u (central differences, physical
   units, whole fixed grid).

Usage::

    python benchmarks/compare_convexadam.py [--cases four|all|ID ...] [--out results/bench]

Prints a markdown table and writes results.json and results.md into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_DATA, PeakMemory

FOUR = [
    "headneck_okbp_pt4_vs_pt13",
    "headneck_okbp_pt4_vs_pt17",
    "headneck_okbp_pt17_vs_pt22",
    "headneck_okbp_pt13_vs_pt22",
]
logger = logging.getLogger("benchmark")


# ------------------------------------------------------------------------------- children


def _warm_up(method: str, preset: str) -> None:
    """A small registration so that import/lazy-loading costs stay out of the timing."""
    import itk
    import torch

    from itk_samconvex.apps.phantom import make_phantom_pair

    pair = make_phantom_pair(size=(40, 36, 32), spacing=(8.0, 8.0, 8.0))
    if method == "samconvex":
        itk.samconvex_registration(pair.fixed, pair.moving, preset=preset)
    else:
        from convexAdam.convex_adam_MIND import convex_adam_pt

        array = itk.array_from_image(pair.fixed)
        convex_adam_pt(array, itk.array_from_image(pair.moving), device=torch.device("cpu"))


def _run_one(method: str, preset: str, fixed, moving, affine):
    """Time one registration; returns (seconds, field (Z, Y, X, 3) LPS mm on fixed grid)."""
    import itk
    import torch

    if method == "samconvex":
        start = time.perf_counter()
        reg = itk.SAMConvexRegistrationFilter.New(
            fixed, moving, initial_transform=affine, preset=preset
        )
        reg.Update()
        seconds = time.perf_counter() - start
        # copy: a numpy view of an ITK buffer does not keep the ITK image alive
        return seconds, np.array(
            itk.array_view_from_image(reg.GetDeformableField()), np.float32, copy=True
        )
    from convexAdam.convex_adam_MIND import convex_adam_pt

    from itk_samconvex import warp_image

    moving_on_fixed = warp_image(moving, affine, fixed, default_value=-1024.0)
    fixed_array = np.asarray(itk.array_view_from_image(fixed), np.float32)
    moving_array = np.asarray(itk.array_view_from_image(moving_on_fixed), np.float32)
    start = time.perf_counter()
    disp = convex_adam_pt(fixed_array, moving_array, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    # voxel displacement along the array axes (z, y, x) -> LPS mm (x, y, z)
    direction = itk.array_from_matrix(fixed.GetDirection())
    to_mm = direction @ np.diag(np.asarray(fixed.GetSpacing()))
    field = (np.asarray(disp, np.float64)[..., ::-1] @ to_mm.T).astype(np.float32)
    return seconds, field


def _child(method: str, preset: str, jobs: list[tuple[str, str, str]], queue) -> None:
    """Run one method on every case in this fresh process; one result per case."""
    import itk

    logging.disable(logging.WARNING)
    _warm_up(method, preset)
    for fixed_path, moving_path, affine_path in jobs:
        fixed = itk.imread(fixed_path, itk.F)
        moving = itk.imread(moving_path, itk.F)
        affine = itk.transformread(affine_path)[0]
        with PeakMemory() as memory:
            seconds, field = _run_one(method, preset, fixed, moving, affine)
        queue.put((seconds, memory.peak / 2**20, (memory.peak - memory.baseline) / 2**20, field))


def run_method(method: str, preset: str, jobs: list[tuple[Path, Path, Path]]):
    """Yield (seconds, peak RSS MB, peak increase MB, field) per job from one process."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_child, args=(method, preset, [tuple(str(p) for p in job) for job in jobs], queue)
    )
    process.start()
    for _ in jobs:
        yield queue.get()
    process.join()


# ------------------------------------------------------------------------------- scoring


def score(fixed, fixed_labels, moving_labels, affine, field_mm: np.ndarray, labels) -> dict:
    import itk

    from itk_samconvex import warp_image
    from itk_samconvex.edge.space import Grid
    from itk_samconvex.edge.transforms import displacement_transform
    from itk_samconvex.metrics import dice_per_label, jacobian_determinant, jacobian_stats

    grid = Grid.of(fixed)
    composite = itk.CompositeTransform[itk.D, 3].New()
    composite.AddTransform(affine)
    composite.AddTransform(displacement_transform(field_mm, grid))
    warped = warp_image(moving_labels, composite, fixed_labels, nearest=True, default_value=0)
    dice = dice_per_label(
        itk.array_view_from_image(fixed_labels), itk.array_view_from_image(warped), labels
    )
    det = jacobian_determinant(field_mm, grid.spacing, grid.direction_matrix)
    stats = jacobian_stats(det)
    return {
        "dice": {int(k): float(v) for k, v in dice.items()},
        "mean_dice": float(np.nanmean(list(dice.values()))),
        "sdlogj": stats["sdlogj"],
        "percent_nonpositive": stats["percent_nonpositive"],
    }


# ------------------------------------------------------------------------------- driver


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["all"],
        help="'four' (the first four head-neck pairs), 'all' head-neck, or ids",
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", type=Path, default=Path("results/compare_convexadam"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import itk

    from itk_samconvex import warp_image
    from itk_samconvex.edge.elastix import elastix_affine
    from itk_samconvex.metrics import dice_per_label

    manifest = json.loads((args.data / "MANIFEST.json").read_text())
    cases = [c for c in manifest["cases"] if c["kind"] == "headneck"]
    if args.cases == ["four"]:
        cases = [c for c in cases if c["id"] in FOUR]
    elif args.cases != ["all"]:
        cases = [c for c in manifest["cases"] if c["id"] in args.cases]
    args.out.mkdir(parents=True, exist_ok=True)
    rows, inputs, jobs = [], [], []
    for case in cases:
        fixed_path, moving_path = args.data / case["fixed"], args.data / case["moving"]
        fixed, moving = itk.imread(str(fixed_path), itk.F), itk.imread(str(moving_path), itk.F)
        fixed_labels = itk.imread(str(args.data / case["fixed_labels"]))
        moving_labels = itk.imread(str(args.data / case["moving_labels"]))
        labels = sorted(int(v) for v in np.unique(itk.array_view_from_image(fixed_labels)) if v > 0)
        affine_path = args.out / f"{case['id']}_affine.h5"
        tick = time.perf_counter()
        affine = elastix_affine(fixed, moving)
        itk.transformwrite([affine], str(affine_path))
        affine = itk.transformread(str(affine_path))[0]
        logger.info("%s: elastix affine %.1f s", case["id"], time.perf_counter() - tick)
        before = warp_image(moving_labels, affine, fixed_labels, nearest=True, default_value=0)
        affine_dice = dice_per_label(
            itk.array_view_from_image(fixed_labels), itk.array_view_from_image(before), labels
        )
        rows.append(
            {"case": case["id"], "affine_mean_dice": float(np.nanmean(list(affine_dice.values())))}
        )
        inputs.append((fixed, fixed_labels, moving_labels, affine, labels))
        jobs.append((fixed_path, moving_path, affine_path))
    for method in ("samconvex", "convexadam"):
        outcomes = run_method(method, args.preset, jobs)
        for row, case_inputs, outcome in zip(rows, inputs, outcomes, strict=True):
            seconds, peak_mb, increase_mb, field = outcome
            fixed, fixed_labels, moving_labels, affine, labels = case_inputs
            row[method] = {
                "seconds": seconds,
                "peak_rss_mb": peak_mb,
                "peak_increase_mb": increase_mb,
                **score(fixed, fixed_labels, moving_labels, affine, field, labels),
            }
            logger.info(
                "%s %-10s Dice %.3f  SDlogJ %.3f  fold %.3f%%  %.2f s  peak %.0f MB (+%.0f MB)",
                row["case"],
                method,
                row[method]["mean_dice"],
                row[method]["sdlogj"],
                row[method]["percent_nonpositive"],
                seconds,
                peak_mb,
                increase_mb,
            )
    table = render(rows, args.preset)
    print(table)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    (args.out / "results.json").write_text(
        json.dumps({"preset": args.preset, "machine": machine, "rows": rows}, indent=2)
    )
    (args.out / "results.md").write_text(table + "\n")
    return 0


def render(rows: list[dict], preset: str) -> str:
    lines = [
        f"| case | affine Dice | ours ({preset}) Dice | ConvexAdam Dice | ours SDlogJ | "
        "CA SDlogJ | ours % det<=0 | CA % det<=0 | ours s | CA s | time ratio | "
        "ours peak MB (+call) | CA peak MB (+call) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def line(name, rs):
        ours = [r["samconvex"] for r in rs]
        ca = [r["convexadam"] for r in rs]

        def m(values):
            return float(np.mean(values))

        return (
            f"| {name} | {m([r['affine_mean_dice'] for r in rs]):.3f} | "
            f"{m([o['mean_dice'] for o in ours]):.3f} | {m([c['mean_dice'] for c in ca]):.3f}"
            f" | {m([o['sdlogj'] for o in ours]):.3f} | {m([c['sdlogj'] for c in ca]):.3f} | "
            f"{m([o['percent_nonpositive'] for o in ours]):.3f} | "
            f"{m([c['percent_nonpositive'] for c in ca]):.3f} | "
            f"{m([o['seconds'] for o in ours]):.2f} | {m([c['seconds'] for c in ca]):.2f} | "
            f"{m([o['seconds'] for o in ours]) / m([c['seconds'] for c in ca]):.3f} | "
            f"{max(o['peak_rss_mb'] for o in ours):.0f} "
            f"(+{max(o['peak_increase_mb'] for o in ours):.0f}) | "
            f"{max(c['peak_rss_mb'] for c in ca):.0f} "
            f"(+{max(c['peak_increase_mb'] for c in ca):.0f}) |"
        )

    for row in rows:
        lines.append(line(row["case"], [row]))
    four = [r for r in rows if r["case"] in FOUR]
    if four and len(four) != len(rows):
        lines.append(line("**mean, four original pairs**", four))
    lines.append(line(f"**mean, {len(rows)} pairs**", rows))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
