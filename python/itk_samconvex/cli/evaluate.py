"""``samconvex evaluate FIXED TRANSFORM``: score any registration with the package's scorer."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK, check_inputs_exist


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Score a registration. TRANSFORM maps fixed physical points to moving points (LPS "
        "mm): an ITK transform file (.h5 .tfm .txt .mat), an elastix TransformParameters.*.txt "
        "or a displacement field image (T(x) = x + u(x), LPS mm). Prints Dice and HD95 per "
        "label and landmark TRE in three states (identity; the --initial-transform "
        "pre-alignment, when given; TRANSFORM) and Jacobian statistics (SDlogJ plain and "
        "Learn2Reg log(det+3), % non-positive) on the FIXED grid."
    )
    parser.epilog = (
        "Landmark files: one landmark per line, row i of the fixed file matching row i of the "
        "moving file, x,y,z in LPS mm; an optional header; extra columns allowed (the columns "
        "named x,y,z, else the last three numeric columns)."
    )
    parser.add_argument("fixed", metavar="FIXED", help="fixed image (defines the evaluation grid)")
    parser.add_argument(
        "transform",
        metavar="TRANSFORM",
        help="transform file (fixed -> moving) or displacement field image",
    )
    parser.add_argument(
        "--initial-transform",
        metavar="FILE",
        help="the pre-alignment the registration started from: adds the before_initial state",
    )
    parser.add_argument("--fixed-labels", metavar="F", help="fixed label map (fixed grid)")
    parser.add_argument("--moving-labels", metavar="M", help="moving label map")
    parser.add_argument(
        "--label-ids",
        metavar="ID",
        type=int,
        nargs="+",
        help="label ids to score (default: every non-zero id)",
    )
    parser.add_argument(
        "--label-names", metavar="FILE", help="label id -> name table (JSON or CSV id,name)"
    )
    parser.add_argument("--fixed-landmarks", metavar="CSV", help="fixed landmarks, LPS mm")
    parser.add_argument("--moving-landmarks", metavar="CSV", help="moving landmarks, LPS mm")
    parser.add_argument(
        "--mask", metavar="MASK", help="mask on the fixed grid restricting the Jacobian statistics"
    )
    parser.add_argument("--no-hd95", action="store_true", help="skip HD95 (faster)")
    parser.add_argument(
        "-o", "--output", metavar="OUT_PREFIX", help="write OUT_PREFIX.json and OUT_PREFIX.csv"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    inputs = {
        "fixed image": args.fixed,
        "transform": args.transform,
        "initial transform": args.initial_transform,
        "fixed label map": args.fixed_labels,
        "moving label map": args.moving_labels,
        "label-name file": args.label_names,
        "fixed landmarks": args.fixed_landmarks,
        "moving landmarks": args.moving_landmarks,
        "mask": args.mask,
    }
    check_inputs_exist(inputs.items())
    from ..apps.evaluate import evaluate, output_paths, write_results
    from ..edge.io import make_output_folder, refuse_inputs

    paths = None
    if args.output:
        paths = output_paths(args.output)
        existing = [str(p) for p in paths if p.exists()]
        if existing and not args.overwrite:
            raise FileExistsError(
                f"output(s) {', '.join(existing)} exist; pass --overwrite "
                "to replace them or choose another -o prefix."
            )
        for path in paths:
            refuse_inputs(path, inputs.values())
    result = evaluate(
        args.fixed,
        args.transform,
        initial_transform=args.initial_transform,
        fixed_labels=args.fixed_labels,
        moving_labels=args.moving_labels,
        fixed_points=args.fixed_landmarks,
        moving_points=args.moving_landmarks,
        label_ids=args.label_ids,
        label_names=args.label_names,
        mask=args.mask,
        surface_distances=not args.no_hd95,
    )
    result.inputs = {k: str(v) for k, v in inputs.items() if v}
    if paths is not None:
        make_output_folder(Path(paths[0]).parent)
        write_results(result, args.output, args.overwrite, inputs.values())
    if not args.quiet:
        print(result.table())
        if paths is not None:
            print(f"wrote {paths[0]} and {paths[1]}")
    return EXIT_OK


__all__ = ["add_arguments", "run"]
