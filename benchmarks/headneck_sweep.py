"""Head-neck parameter sweep: settings of our registration on the OpenKBP validation pairs.

The choosing half of "train on train, choose on validation, report on the evaluation pairs":
pairs among the ``validation``-split patients of ``shared/data/corpus/openkbp`` (the same pairs
as ``sam_decision.py``, disjoint from the evaluation pairs), each with the project's default
pre-alignment (``elastix_prealignment``, cached in ``--work``). Each setting is a set of
``SAMConvexConfig`` overrides on a preset; every setting runs on every pair, warm, in this
process, and is scored by the package's scorer (``common.score``: Dice over the OARs both
patients have, SDlogJ and % det <= 0 of the deformable part). The reported comparison with the
peers stays ``suite.py`` on the evaluation pairs.

Usage::

    python benchmarks/headneck_sweep.py --out benchmarks/results/headneck_sweep \\
        --setting default --setting io_iterations=25 [--pairs 16] [--preset default]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import DEFAULT_DATA, Reference, machine_info, machine_line, score
from lung_sweep import parse_setting
from sam_decision import validation_pairs

logger = logging.getLogger("benchmark.headneck_sweep")


def prealigned(pair: dict[str, Any], fixed: Any, moving: Any, work: Path) -> Any:
    """The pair's default pre-alignment, computed once and cached under ``work``."""
    from itk_samconvex.edge.elastix import elastix_prealignment
    from itk_samconvex.edge.io import read_transform, write_transform

    cached = work / f"{pair['id']}_affine.h5"
    if not cached.is_file():
        result = elastix_prealignment(fixed, moving, pair=pair["id"])
        write_transform(result.transform, cached, overwrite=True)
        cached.with_suffix(".json").write_text(json.dumps(result.to_dict()))
    return read_transform(cached)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/headneck_sweep"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None, help="pre-alignment cache")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        help="'default' or NAME=VALUE[;NAME=VALUE...] (repeatable)",
    )
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import itk

    from itk_samconvex.edge.registration import register
    from itk_samconvex.solver.config import preset_config

    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = [parse_setting(s) for s in (args.setting or ["default"])]
    configs = {name: preset_config(args.preset, device="cpu", **o) for name, o in settings}
    pairs = validation_pairs(args.data, args.pairs)
    rows: list[dict[str, Any]] = []
    warmed = False
    for pair in pairs:
        fixed = itk.imread(str(args.data / pair["fixed"]), itk.F)
        moving = itk.imread(str(args.data / pair["moving"]), itk.F)
        reference = Reference(
            fixed=fixed,
            affine=prealigned(pair, fixed, moving, work),
            fixed_labels=itk.imread(str(args.data / pair["fixed_labels"])),
            moving_labels=itk.imread(str(args.data / pair["moving_labels"])),
            labels=pair["labels"],
        )
        if not warmed:  # imports, ITK module loading, first-time torch paths
            register(
                fixed, moving, next(iter(configs.values())), initial_transform=reference.affine
            )
            warmed = True
        for name, cfg in configs.items():
            tick = time.perf_counter()
            result = register(fixed, moving, cfg, initial_transform=reference.affine)
            seconds = time.perf_counter() - tick
            field = np.asarray(itk.array_view_from_image(result.deformable_field))
            s = score(reference, field)
            rows.append(
                {
                    "setting": name,
                    "pair": pair["id"],
                    "dice": s["mean_dice"],
                    "sdlogj": s["sdlogj"],
                    "folding": s["percent_nonpositive"],
                    "seconds": seconds,
                    "io_seconds": result.timings.get("instance optimisation"),
                }
            )
            logger.info(
                "%-30s %-34s Dice %.4f SDlogJ %.3f fold %.4f %.2f s",
                name[:30],
                pair["id"],
                s["mean_dice"],
                s["sdlogj"],
                s["percent_nonpositive"],
                seconds,
            )
    summary = {}
    baseline = settings[0][0]
    base_dice = {r["pair"]: r["dice"] for r in rows if r["setting"] == baseline}
    for name, _ in settings:
        mine = [r for r in rows if r["setting"] == name]
        gains = [r["dice"] - base_dice[r["pair"]] for r in mine]
        summary[name] = {
            "dice_mean": float(np.mean([r["dice"] for r in mine])),
            "dice_vs_first_mean": float(np.mean(gains)),
            "dice_vs_first_worst": float(np.min(gains)),
            "sdlogj_mean": float(np.mean([r["sdlogj"] for r in mine])),
            "folding_max": float(max(r["folding"] for r in mine)),
            "seconds_median": float(np.median([r["seconds"] for r in mine])),
            "io_seconds_median": float(np.median([r["io_seconds"] or 0.0 for r in mine])),
        }
    results = {"machine": machine_info(), "pairs": len(pairs), "rows": rows, "summary": summary}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# Head-neck sweep: {len(pairs)} OpenKBP validation pairs, preset {args.preset}",
        "",
        f"Machine: {machine_line(results['machine'])}",
        "",
        f"| setting | mean Dice | Dice vs {baseline}: mean / worst pair | SDlogJ | "
        "max % det<=0 | warm s (median) | IO s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['dice_mean']:.4f} | {s['dice_vs_first_mean']:+.4f} / "
            f"{s['dice_vs_first_worst']:+.4f} | {s['sdlogj_mean']:.3f} | {s['folding_max']:.4f} "
            f"| {s['seconds_median']:.2f} | {s['io_seconds_median']:.2f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
