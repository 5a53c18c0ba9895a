"""``samconvex register FIXED MOVING -o OUT``: read, pre-align, register, score, write.

The order is chosen so that mistakes cost nothing: arguments, then the input paths, then the
output folder (existing outputs, outputs that are inputs) are checked before torch and ITK are
imported; image headers (dimension, size against free memory, NIfTI geometry) before any voxel
is read. ``report.json`` times every step of the whole command (``timings_s``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .common import (
    EXIT_OK,
    add_registration_options,
    check_inputs_exist,
    command_timings,
    config_from_args,
    prepare_one_shot_process,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Register MOVING onto FIXED. Writes OUT/transform.h5 (DisplacementFieldTransform, "
        "fixed -> moving, LPS mm, pre-alignment baked in), warped.nii.gz, qc.png + qc.html "
        "and report.json; warped_labels.nii.gz with --moving-labels, affine.h5 with "
        "--elastix-affine, field.nii.gz with --write-field. FIXED and MOVING are image files "
        "or DICOM series folders."
    )
    parser.add_argument("fixed", help="fixed image (any ITK-readable 3-D CT, or a DICOM folder)")
    parser.add_argument("moving", help="moving image")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    data = parser.add_argument_group("labels, masks and landmarks")
    data.add_argument(
        "--moving-labels",
        "--labels",
        dest="moving_labels",
        metavar="MOVING_LABELS",
        help="moving label map, warped with nearest neighbour (--labels: alias)",
    )
    data.add_argument(
        "--fixed-labels",
        metavar="FIXED_LABELS",
        help="fixed label map: adds Dice per label (before/after) to the report",
    )
    data.add_argument(
        "--label-names",
        metavar="FILE",
        help='label id -> name table (JSON {"1": "Brainstem"} or CSV id,name)',
    )
    data.add_argument("--fixed-landmarks", metavar="CSV", help="fixed landmarks, LPS mm")
    data.add_argument(
        "--moving-landmarks",
        metavar="CSV",
        help="corresponding moving landmarks: adds TRE to the report",
    )
    data.add_argument("--fixed-mask", metavar="MASK", help="fixed mask (restricts the data term)")
    data.add_argument("--moving-mask", metavar="MASK", help="moving mask")
    init = parser.add_argument_group("pre-alignment").add_mutually_exclusive_group()
    init.add_argument(
        "--initial-transform",
        metavar="FILE",
        help="fixed->moving pre-alignment: ITK transform file (.h5 .tfm .txt .mat) "
        "or elastix TransformParameters.*.txt",
    )
    init.add_argument(
        "--elastix-affine",
        action="store_true",
        help="search + itk-elastix affine pre-alignment first (needs itk-elastix); "
        "saved as affine.h5",
    )
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input)"
    )
    out.add_argument("--no-qc", action="store_true", help="skip qc.png and qc.html")
    out.add_argument(
        "--write-field",
        action="store_true",
        help="also write field.nii.gz (the displacement as an image; the "
        "transform already holds it)",
    )
    out.add_argument(
        "--hd95", action="store_true", help="add HD95 per label to the report (a few seconds more)"
    )
    add_registration_options(parser)


def pair_files(args: argparse.Namespace) -> Any:
    """The command's input files (``apps.files.PairFiles``)."""
    from ..apps.files import ELASTIX_AFFINE, PairFiles

    initial = ELASTIX_AFFINE if args.elastix_affine else args.initial_transform
    return PairFiles(
        fixed=args.fixed,
        moving=args.moving,
        fixed_labels=args.fixed_labels,
        moving_labels=args.moving_labels,
        fixed_mask=args.fixed_mask,
        moving_mask=args.moving_mask,
        initial_transform=initial,
        fixed_landmarks=args.fixed_landmarks,
        moving_landmarks=args.moving_landmarks,
        label_names=args.label_names,
    )


class ProgressBar:
    """tqdm bar over the solver's stages (silent with ``quiet``)."""

    def __init__(self, stages: list[str], quiet: bool) -> None:
        self.stages = stages
        self.bar = None
        if not quiet:
            import sys

            from tqdm import tqdm

            self.bar = tqdm(
                total=len(stages), desc="registering", unit="stage", file=sys.stderr, leave=False
            )

    def __call__(self, stage: str) -> None:
        if self.bar is not None and stage in self.stages:
            self.bar.set_postfix_str(stage)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_summary(report: dict[str, Any], output: str, device: str, seconds: float) -> None:
    evaluation = report["evaluation"]
    jac = evaluation.get("jacobian_deformable") or evaluation["jacobian"]
    print(
        f"registered in {seconds:.1f} s on {device} (whole command "
        f"{report['timings_s']['total']:.1f} s); deformable part: Jacobian min "
        f"{jac['min']:.3f}, {jac['percent_nonpositive']:.3f}% non-positive; outputs in "
        f"{output}"
    )
    pre = report.get("prealignment") or {}
    if pre.get("fallback"):
        print(f"pre-alignment: {pre['method']} ({pre['fallback']})")
    labels = evaluation.get("labels")
    if labels:
        before = "before_initial" if "before_initial" in evaluation["states"] else "before_identity"
        mean = labels["mean"]
        print(
            f"mean Dice {mean[f'dice_{before}']:.3f} -> {mean['dice_after']:.3f} "
            f"({before.replace('_', ' ')})"
        )
        for entry in labels["per_label"].values():
            b, a = entry.get(f"dice_{before}"), entry.get("dice_after")
            if b is not None and a is not None:
                print(f"  {entry['name']:20s} {b:.3f} -> {a:.3f}")
    landmarks = evaluation.get("landmarks")
    if landmarks:
        before = "before_initial" if "before_initial" in evaluation["states"] else "before_identity"
        print(
            f"TRE {landmarks[f'tre_mm_{before}']['mean']:.2f} -> "
            f"{landmarks['tre_mm_after']['mean']:.2f} mm ({landmarks['count']} landmarks)"
        )
    for name, choice in report.get("automatic_choices", {}).items():
        print(f"chosen from the images: {name} {choice}")
    for warning in report.get("warnings", []):
        print(f"warning: {warning}")


def run(args: argparse.Namespace) -> int:
    timings = command_timings()
    files = pair_files(args)
    check_inputs_exist([*files.named(), ("config file", args.config)])
    if (args.fixed_landmarks is None) != (args.moving_landmarks is None):
        from ..errors import InputError

        raise InputError(
            "--fixed-landmarks and --moving-landmarks go together (row i of one "
            "matches row i of the other)."
        )
    timings.mark("arguments")
    prepare_one_shot_process()
    import torch  # noqa: F401 - the heavy imports of the command, timed as "imports"

    from ..apps.outputs import refuse_existing
    from ..apps.pair import pair_output_paths, register_files
    from ..edge.io import output_folder, refuse_inputs, remove_stale_temps
    from ..solver.pyramid import stage_names

    timings.mark("imports")

    out = Path(args.output)
    if out.is_dir():
        remove_stale_temps(out)  # a killed run's temporaries, even if this run is refused
    paths = pair_output_paths(files, out, qc=not args.no_qc, write_field=args.write_field)
    inputs = [*files.paths(), args.config]
    refuse_existing(paths, args.overwrite)
    for path in paths.values():
        refuse_inputs(path, inputs)
    cfg = config_from_args(args)
    timings.mark("arguments")
    with output_folder(out):
        bar = ProgressBar([*stage_names(cfg), "output"], args.quiet)
        try:
            report = register_files(
                files,
                cfg,
                paths,
                timings=timings,
                overwrite=args.overwrite,
                hd95=args.hd95,
                pair=f"{Path(args.fixed).name} <- {Path(args.moving).name}",
                progress=bar,
            )
        finally:
            bar.close()
    if not args.quiet:
        print_summary(
            report,
            args.output,
            report["device"],
            report["timings_s"]["registration_stages"]["total"],
        )
    return EXIT_OK


__all__ = ["add_arguments", "pair_files", "run"]
