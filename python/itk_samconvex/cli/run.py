"""What the ``register`` and ``demo`` commands do: read, register, write, report.

Outputs are written atomically and never over existing files unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import itk
import numpy as np

from . import EXIT_OK, OUTPUT_NAMES, dump_json
from ..solver.config import SAMConvexConfig
from ..errors import InputError
from ..edge.registration import RegistrationResult, register, warp_image
from ..edge.space import Grid

logger = logging.getLogger(__name__)


def check_gzip(path: str | None, what: str) -> None:
    """Decompress a ``.gz`` input to its end: ITK reads truncated gzip files without error.

    Raises:
        InputError: the gzip stream is damaged or ends early.
    """
    import gzip
    import zlib

    if path is None or not str(path).lower().endswith(".gz") or not Path(path).is_file():
        return
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"{what} {path} is a damaged or truncated gzip file ({error}); copy "
                         "or export it again.") from error


def read_image(path: str | None, what: str):
    """Read an input image (None for None) with clear errors for missing or damaged files."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
    check_gzip(path, what)
    try:
        return itk.imread(str(path))
    except Exception as error:
        raise InputError(f"{what} {path} cannot be read as an image ({error}); use a format "
                         "ITK reads (.nii.gz, .nii, .mha, .nrrd, DICOM folder).") from error


def prepare_output(out: Path, names: list[str], overwrite: bool) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / OUTPUT_NAMES[name] for name in names}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output(s) {', '.join(existing)} exist; pass --overwrite to "
                              "replace them or choose another -o folder.")
    return paths


class _ProgressBar:
    """tqdm bar over the solver's stages (silent with ``quiet``)."""

    def __init__(self, cfg: SAMConvexConfig, quiet: bool) -> None:
        from ..solver.pyramid import stage_names

        self.stages = [*stage_names(cfg), "output"]
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.stages), desc="registering", unit="stage",
                            file=sys.stderr, leave=False)

    def __call__(self, stage: str) -> None:
        if self.bar is not None and stage in self.stages:
            self.bar.set_postfix_str(stage)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _jacobian_report(field_image) -> tuple[dict[str, float], np.ndarray]:
    from ..apps.metrics import jacobian_determinant, jacobian_stats

    grid = Grid.of(field_image)
    det = jacobian_determinant(itk.array_view_from_image(field_image), grid.spacing,
                               grid.direction_matrix)
    return jacobian_stats(det), det


def write_outputs(
    result: RegistrationResult,
    fixed,
    moving,
    paths: dict[str, Path],
    moving_labels=None,
    fixed_labels=None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write transform, field, warped image(s), QC figure and report; return the report."""
    from ..edge.transforms import write_image, write_transform

    tick = time.perf_counter()
    write_transform(result.transform, paths["transform"], overwrite)
    write_image(result.field, paths["field"], overwrite)
    warped = warp_image(moving, result.transform, fixed)
    write_image(warped, paths["warped"], overwrite)
    report: dict[str, Any] = {
        "convention": "transform maps fixed physical points to moving points (LPS mm); "
                      "field = T(x) - x on the fixed grid; warped(x) = moving(T(x))",
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    stats, det = _jacobian_report(result.field)
    report["jacobian"] = stats
    if result.initial_transform is not None:
        report["jacobian_deformable_only"], _ = _jacobian_report(result.deformable_field)
    if moving_labels is not None:
        warped_labels = warp_image(moving_labels, result.transform, fixed, nearest=True,
                                   default_value=0)
        write_image(warped_labels, paths["warped_labels"], overwrite)
        if fixed_labels is not None:
            report["dice"] = _dice_report(fixed_labels, moving_labels, warped_labels, result)
    if "qc" in paths:
        from ..apps.qc import qc_figure

        qc_figure(
            np.asarray(itk.array_view_from_image(fixed), dtype=np.float32),
            np.asarray(itk.array_view_from_image(warped), dtype=np.float32),
            det, paths["qc"], title="fixed vs warped moving", spacing=Grid.of(fixed).spacing,
        )
    report.update(extra or {})
    report.update(_provenance(result))
    report["timings_s"]["writing"] = time.perf_counter() - tick
    dump_json(report, paths["report"])
    return report


def _dice_report(fixed_labels, moving_labels, warped_labels, result) -> dict[str, Any]:
    from ..apps.metrics import dice_per_label, mean_dice

    fixed_arr = itk.array_view_from_image(fixed_labels)
    before_img = warp_image(moving_labels, result.initial_transform
                            or itk.IdentityTransform[itk.D, 3].New(), fixed_labels,
                            nearest=True, default_value=0)
    before = dice_per_label(fixed_arr, itk.array_view_from_image(before_img))
    after = dice_per_label(fixed_arr, itk.array_view_from_image(warped_labels))
    return {
        "before": {str(k): v for k, v in before.items()},
        "after": {str(k): v for k, v in after.items()},
        "mean_before": mean_dice(before),
        "mean_after": mean_dice(after),
        "note": "before = initial transform only (identity when none)",
    }


def _provenance(result: RegistrationResult) -> dict[str, Any]:
    import torch

    from .. import __version__

    grid = result.working_grid
    return {
        "parameters": result.config.to_dict(),
        "working_grid": {"size_xyz": list(grid.size), "spacing_mm": grid.spacing[0],
                         "origin": list(grid.origin), "direction": list(grid.direction)},
        "device": result.device,
        "timings_s": dict(result.timings),
        "versions": {"itk-samconvex": __version__, "itk": itk.Version.GetITKVersion(),
                     "torch": torch.__version__, "python": platform.python_version()},
    }


def run_register(args: argparse.Namespace, cfg: SAMConvexConfig) -> int:
    fixed = read_image(args.fixed, "fixed image")
    moving = read_image(args.moving, "moving image")
    moving_labels = read_image(args.labels, "moving label map")
    fixed_labels = read_image(args.fixed_labels, "fixed label map")
    names = ["transform", "field", "warped", "report"]
    if not args.no_qc:
        names.append("qc")
    if moving_labels is not None:
        names.append("warped_labels")
    paths = prepare_output(Path(args.output), names, args.overwrite)
    initial = args.initial_transform
    if args.elastix_affine:
        from ..edge.elastix import elastix_affine

        logger.info("running itk-elastix affine pre-alignment")
        initial = elastix_affine(fixed, moving)
    bar = _ProgressBar(cfg, args.quiet)
    try:
        result = register(fixed, moving, cfg, initial,
                          read_image(args.fixed_mask, "fixed mask"),
                          read_image(args.moving_mask, "moving mask"), bar)
    finally:
        bar.close()
    report = write_outputs(result, fixed, moving, paths, moving_labels, fixed_labels,
                           args.overwrite, {"inputs": {"fixed": args.fixed,
                                                       "moving": args.moving}})
    if not args.quiet:
        jac = report["jacobian"]
        print(f"registered in {result.timings['total']:.1f} s on {result.device}; "
              f"Jacobian min {jac['min']:.3f}, {jac['percent_nonpositive']:.3f}% non-positive; "
              f"outputs in {args.output}")
        if "dice" in report:
            print(f"mean Dice {report['dice']['mean_before']:.3f} -> "
                  f"{report['dice']['mean_after']:.3f}")
    return EXIT_OK


def run_demo(args: argparse.Namespace, cfg: SAMConvexConfig) -> int:
    from ..apps.phantom import make_phantom_pair

    paths = prepare_output(Path(args.output), ["transform", "field", "warped", "report", "qc",
                                                "warped_labels"], args.overwrite)
    pair = make_phantom_pair(amplitude_mm=args.amplitude)
    bar = _ProgressBar(cfg, args.quiet)
    try:
        result = register(pair.fixed, pair.moving, cfg, progress=bar)
    finally:
        bar.close()
    estimate = np.asarray(itk.array_view_from_image(result.field))
    # the body: soft tissue and bone (> -500 HU) plus the lungs (label 1), where motion peaks
    body = (np.asarray(itk.array_view_from_image(pair.fixed)) > -500) | (
        np.asarray(itk.array_view_from_image(pair.fixed_labels)) == 1)
    before = np.linalg.norm(pair.truth, axis=-1)[body]
    error = np.linalg.norm(estimate - pair.truth, axis=-1)[body]
    truth_report = {
        "mean_error_mm": float(error.mean()), "p95_error_mm": float(np.percentile(error, 95)),
        "max_error_mm": float(error.max()), "mean_displacement_mm": float(before.mean()),
        "max_displacement_mm": float(np.linalg.norm(pair.truth, axis=-1).max()),
        "region": "phantom body (fixed > -500 HU, plus the lungs)",
    }
    report = write_outputs(result, pair.fixed, pair.moving, paths, pair.moving_labels,
                           pair.fixed_labels, args.overwrite, {"truth": truth_report})
    if not args.quiet:
        print(f"demo: phantom pair with a known breathing-like motion up to "
              f"{truth_report['max_displacement_mm']:.1f} mm")
        print(f"end-point error in the body: mean {error.mean():.2f} mm, 95th percentile "
              f"{np.percentile(error, 95):.2f} mm (motion before registration: mean "
              f"{before.mean():.2f} mm)")
        print(f"Jacobian: min {report['jacobian']['min']:.3f}, "
              f"{report['jacobian']['percent_nonpositive']:.3f}% non-positive; "
              f"mean Dice {report['dice']['mean_before']:.3f} -> "
              f"{report['dice']['mean_after']:.3f}")
        print(f"registered in {result.timings['total']:.1f} s on {result.device}; outputs in "
              f"{args.output}/")
    return EXIT_OK
