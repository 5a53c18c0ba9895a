"""Benchmark: MIND vs SAM vs SAM+MIND features on the head-neck pairs, one process, one run.

Every pair gets the same itk-elastix affine (computed once here, or read from
``--affines`` where a previous benchmark wrote ``<case>_affine.h5``). For each feature backend
the registration is timed alone (after a warm-up), and scored like the other benchmarks:
mean organ Dice (labels warped once, nearest neighbour), SDlogJ and % det <= 0 of the
deformable field. Also reports the SAM embedding time per volume on the working grid.

Usage::

    python benchmarks/sam_features.py --checkpoint sam.pt [--cases four|all] [--preset default]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOUR = [
    "headneck_okbp_pt4_vs_pt13",
    "headneck_okbp_pt4_vs_pt17",
    "headneck_okbp_pt17_vs_pt22",
    "headneck_okbp_pt13_vs_pt22",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="SAM weights")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cases", default="four", choices=("four", "all"))
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "--affines", type=Path, default=None, help="folder with <case>_affine.h5 files to reuse"
    )
    parser.add_argument("--out", type=Path, default=Path("results/sam_features"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("sam_features")

    import itk
    import torch

    from itk_samconvex import preset_config, register, warp_image
    from itk_samconvex.apps.phantom import make_phantom_pair
    from itk_samconvex.edge.elastix import elastix_affine
    from itk_samconvex.edge.io import read_transform, write_transform
    from itk_samconvex.edge.space import Grid
    from itk_samconvex.metrics import dice_per_label, jacobian_determinant, jacobian_stats
    from itk_samconvex.solver.features import make_extractor

    manifest = json.loads((args.data / "MANIFEST.json").read_text())
    cases = [c for c in manifest["cases"] if c["kind"] == "headneck"]
    if args.cases == "four":
        cases = [c for c in cases if c["id"] in FOUR]
    args.out.mkdir(parents=True, exist_ok=True)
    backends = {
        "mind": {},
        "sam": {"sam_checkpoint": args.checkpoint},
        "sam+mind": {"sam_checkpoint": args.checkpoint},
    }
    # warm-up (imports, ITK lazy loading, the SAM weights) on a small pair: 48^3 at 2 mm
    warm = make_phantom_pair(size=(24, 24, 24), spacing=(4.0, 4.0, 4.0))
    for name, extra in backends.items():
        register(warm.fixed, warm.moving, preset_config(args.preset, features=name, **extra))
    rows = []
    for case in cases:

        def read(key, case=case):
            return itk.imread(str(args.data / case[key]))

        fixed, moving = read("fixed"), read("moving")
        fixed_labels, moving_labels = read("fixed_labels"), read("moving_labels")
        cached = args.affines / f"{case['id']}_affine.h5" if args.affines else None
        if cached is not None and cached.is_file():
            affine = read_transform(cached)
        else:
            affine = elastix_affine(fixed, moving)
            write_transform(affine, args.out / f"{case['id']}_affine.h5", overwrite=True)
        row = {"case": case["id"]}
        for name, extra in backends.items():
            cfg = preset_config(args.preset, features=name, **extra)
            start = time.perf_counter()
            result = register(fixed, moving, cfg, initial_transform=affine)
            seconds = time.perf_counter() - start
            warped = warp_image(
                moving_labels, result.transform, fixed_labels, nearest=True, default_value=0
            )
            dice = dice_per_label(
                itk.array_view_from_image(fixed_labels),
                itk.array_view_from_image(warped),
                range(1, 8),
            )
            grid = Grid.of(result.deformable_field)
            det = jacobian_determinant(
                itk.array_view_from_image(result.deformable_field),
                grid.spacing,
                grid.direction_matrix,
            )
            stats = jacobian_stats(det)
            row[name] = {
                "mean_dice": float(np.nanmean(list(dice.values()))),
                "sdlogj": stats["sdlogj"],
                "percent_nonpositive": stats["percent_nonpositive"],
                "seconds": seconds,
                "features_s": result.timings.get("features", 0.0),
                "working_grid": list(result.working_grid.size),
            }
            log.info(
                "%s %-9s Dice %.3f SDlogJ %.3f fold %.3f%% %.2f s (features %.2f s)",
                case["id"],
                name,
                row[name]["mean_dice"],
                stats["sdlogj"],
                stats["percent_nonpositive"],
                seconds,
                row[name]["features_s"],
            )
        rows.append(row)
    # SAM embedding time for one volume on a typical working grid
    from itk_samconvex.solver.features.sam import SAMNetwork, embed

    shape = (
        tuple(int(v) for v in reversed(rows[0]["sam"]["working_grid"])) if rows else (96, 120, 200)
    )
    volume = torch.randn(1, 1, *shape) * 300
    timing = {}
    trained = make_extractor(
        preset_config(args.preset, features="sam", sam_checkpoint=args.checkpoint)
    )
    for label, network in (
        ("trained", trained.network),
        ("published width 64 (random)", SAMNetwork(64).eval()),
    ):
        embed(network, volume[:, :, :16], tile_z=None)
        start = time.perf_counter()
        embed(network, volume, tile_z=64)
        timing[label] = time.perf_counter() - start
        log.info("SAM %s: %.2f s per volume of %s voxels", label, timing[label], shape)
    table = [
        "| case | MIND Dice | SAM Dice | SAM+MIND Dice | MIND SDlogJ | SAM SDlogJ | "
        "SAM+MIND SDlogJ | MIND s | SAM s | SAM+MIND s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [
        *rows,
        {
            "case": "**mean**",
            **{
                k: {
                    m: float(np.mean([r[k][m] for r in rows]))
                    for m in rows[0][k]
                    if m != "working_grid"
                }
                for k in backends
            },
        },
    ]:
        cells = [row["case"]]
        for metric, fmt in (("mean_dice", "{:.3f}"), ("sdlogj", "{:.3f}"), ("seconds", "{:.2f}")):
            cells += [fmt.format(row[k][metric]) for k in backends]
        table.append("| " + " | ".join(cells) + " |")
    text = "\n".join(table)
    print(text)
    print(
        f"\nSAM embedding time per volume {shape} (z, y, x): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in timing.items())
    )
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"rows": rows, "sam_embedding_s": timing, "shape_zyx": shape}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
