"""What one registered pair writes, for ``samconvex register``, ``demo`` and ``batch``.

Files (in the output folder; names in :data:`OUTPUT_NAMES`):

* ``transform.h5``: the ``DisplacementFieldTransform`` (fixed -> moving, LPS mm, initial
  transform baked in); it holds the field, so this is the one copy of it by default;
* ``warped.nii.gz``: the moving image resampled onto the fixed grid through it;
* ``warped_labels.nii.gz``: the moving labels likewise (nearest neighbour), with labels;
* ``affine.h5``: the pre-alignment alone, when one was computed or given;
* ``qc.png`` and ``qc.html``: the QC report (``apps.qc``);
* ``field.nii.gz``: the displacement field as an image (opt-in: ``field=True``, CLI
  ``--write-field``), for tools that want a deformation image (3D Slicer, ANTs);
* ``report.json``: scores (the scorer's, ``apps.evaluate``), parameters, timings of the whole
  command, the pre-alignment record, warnings and versions. Written last: its presence marks
  a complete folder.

Every file is written atomically (``edge.io``); inputs are never overwritten.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..edge.io import write_image, write_json, write_transform
from ..edge.itk_classes import itk_version
from ..edge.registration import RegistrationResult
from ..edge.space import Grid, array_view, scalar_image
from ..edge.transforms import identity, warp_image
from ..metrics import jacobian_determinant
from ..version import __version__
from .evaluate import EvaluationResult, evaluate
from .timings import Timings

logger = logging.getLogger(__name__)

OUTPUT_NAMES = {
    "transform": "transform.h5",
    "warped": "warped.nii.gz",
    "warped_labels": "warped_labels.nii.gz",
    "affine": "affine.h5",
    "field": "field.nii.gz",
    "qc": "qc.png",
    "qc_html": "qc.html",
    "fixed": "fixed.nii.gz",
    "moving": "moving.nii.gz",
    "report": "report.json",
}
CONVENTION = (
    "transform maps fixed physical points to moving points (LPS mm); "
    "warped(x) = moving(T(x)); T(x) = A(x + u(x)) with the pre-alignment A baked in"
)


def output_paths(
    folder: Path,
    *,
    labels: bool,
    qc: bool = True,
    write_field: bool = False,
    affine: bool = False,
    inputs_copy: bool = False,
) -> dict[str, Path]:
    """The files a pair writes into ``folder``, by key of :data:`OUTPUT_NAMES`."""
    keys = ["transform", "warped", "report"]
    if labels:
        keys.append("warped_labels")
    if affine:
        keys.append("affine")
    if write_field:
        keys.append("field")
    if qc:
        keys += ["qc", "qc_html"]
    if inputs_copy:
        keys += ["fixed", "moving"]
    return {key: folder / OUTPUT_NAMES[key] for key in keys}


def refuse_existing(paths: Mapping[str, Path], overwrite: bool) -> None:
    """FileExistsError listing every output that exists (unless ``overwrite``)."""
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output(s) {', '.join(existing)} exist; pass --overwrite to "
            "replace them or choose another -o folder."
        )


def _inside_mask(moving: Any, transform: Any, fixed: Any) -> np.ndarray:
    """Where ``transform`` maps fixed voxels inside the moving image's field of view."""
    ones = scalar_image(np.ones(Grid.of(moving).shape, dtype=np.uint8), Grid.of(moving), "UC")
    return (
        np.asarray(array_view(warp_image(ones, transform, fixed, nearest=True, default_value=0)))
        > 0
    )


def _dice_pairs(evaluation: EvaluationResult) -> dict[int, tuple[float, float]]:
    if not evaluation.has_labels:
        return {}
    before = evaluation.before
    return {
        label: (evaluation.dice[before][label], evaluation.dice["after"][label])
        for label in evaluation.label_ids
    }


def qc_header(
    result: RegistrationResult,
    evaluation: EvaluationResult,
    prealignment: Mapping[str, Any] | None,
    timings: Mapping[str, float],
    pair: str,
) -> list[str]:
    """The header lines of the QC report."""
    jac = evaluation.jacobian_deformable or evaluation.jacobian
    lines = [
        f"pair: {pair}",
        f"registration {result.timings.get('total', float('nan')):.1f} s on "
        f"{result.device}; whole command {timings.get('total', float('nan')):.1f} s",
        f"deformable part: det min {jac['min']:.3f}, folding (det <= 0) "
        f"{jac['percent_nonpositive']:.3f} % of voxels, SDlogJ {jac['sdlogj']:.3f}",
    ]
    if prealignment:
        line = f"pre-alignment: {prealignment.get('method')}"
        if prealignment.get("fallback"):
            line += f" (fallback: {prealignment['fallback']})"
        lines.append(line)
    else:
        lines.append("pre-alignment: none (identity)")
    if evaluation.has_labels:
        lines.append(
            f"mean Dice {evaluation.mean_dice(evaluation.before):.3f} -> "
            f"{evaluation.mean_dice('after'):.3f} (before = {evaluation.before})"
        )
    if evaluation.has_landmarks:
        lines.append(
            f"TRE {evaluation.tre_stats(evaluation.before)['mean']:.2f} -> "
            f"{evaluation.tre_stats('after')['mean']:.2f} mm"
        )
    lines.extend(f"chosen from the images: {k} {v}" for k, v in result.choices.items())
    lines.extend(f"warning: {w}" for w in result.warnings)
    return lines


def write_outputs(
    result: RegistrationResult,
    fixed: Any,
    moving: Any,
    paths: Mapping[str, Path],
    *,
    moving_labels: Any = None,
    fixed_labels: Any = None,
    fixed_points: Any = None,
    moving_points: Any = None,
    label_names: Mapping[int, str] | None = None,
    prealignment: Mapping[str, Any] | None = None,
    timings: Timings | None = None,
    overwrite: bool = False,
    inputs: Iterable[Any] = (),
    extra: Mapping[str, Any] | None = None,
    pair: str = "",
    hd95: bool = False,
    listed_folder: Path | None = None,
) -> dict[str, Any]:
    """Score the pair, write every file of ``paths`` (report last) and return the report.

    ``listed_folder``: where the report says the outputs are (a batch writes into an attempt
    folder that is then renamed into place); default where they are written.
    """
    timings = timings or Timings()
    inputs = list(inputs)
    timings.mark("registration")
    # Without a pre-alignment the transform is its deformable part: one Jacobian, not two.
    prealigned = result.initial_transform is not None
    evaluation = evaluate(
        fixed,
        result.transform,
        initial_transform=result.initial_transform,
        deformable_transform=result.deformable_field if prealigned else None,
        fixed_labels=fixed_labels if moving_labels is not None else None,
        moving_labels=moving_labels if fixed_labels is not None else None,
        fixed_points=fixed_points if moving_points is not None else None,
        moving_points=moving_points if fixed_points is not None else None,
        label_names=label_names,
        surface_distances=hd95,
        keep_determinant="qc" in paths,
    )
    if not prealigned:
        evaluation.jacobian_deformable = dict(evaluation.jacobian)
    timings.mark("scoring")
    write_transform(result.transform, paths["transform"], overwrite=overwrite, inputs=inputs)
    if "affine" in paths and result.initial_transform is not None:
        write_transform(
            result.initial_transform, paths["affine"], overwrite=overwrite, inputs=inputs
        )
    warped = warp_image(moving, result.transform, fixed)
    write_image(warped, paths["warped"], overwrite=overwrite, inputs=inputs)
    warped_labels = None
    if moving_labels is not None and "warped_labels" in paths:
        warped_labels = warp_image(
            moving_labels, result.transform, fixed, nearest=True, default_value=0
        )
        write_image(warped_labels, paths["warped_labels"], overwrite=overwrite, inputs=inputs)
    if "field" in paths:
        write_image(result.field, paths["field"], overwrite=overwrite, inputs=inputs)
    for key, image in (("fixed", fixed), ("moving", moving)):
        if key in paths:
            write_image(image, paths[key], overwrite=overwrite, inputs=inputs)
    timings.mark("writing")
    if "qc" in paths:
        _write_qc(
            result,
            fixed,
            moving,
            warped,
            moving_labels,
            fixed_labels,
            warped_labels,
            evaluation,
            prealignment,
            timings,
            paths,
            overwrite,
            inputs,
            pair,
        )
        timings.mark("qc")
    report: dict[str, Any] = {
        "convention": CONVENTION,
        "outputs": {
            k: str(v if listed_folder is None else listed_folder / v.name) for k, v in paths.items()
        },
        "evaluation": evaluation.to_dict(),
        "prealignment": dict(prealignment) if prealignment else {"method": "none"},
        "warnings": list(result.warnings),
        "automatic_choices": dict(result.choices),
        **dict(extra or {}),
        **provenance(result),
    }
    report["timings_s"] = {
        **timings.to_dict(),
        "registration_stages": {k: round(v, 3) for k, v in result.timings.items()},
    }
    write_json(paths["report"], report, overwrite=overwrite, inputs=inputs)
    return report


def _write_qc(
    result: RegistrationResult,
    fixed: Any,
    moving: Any,
    warped: Any,
    moving_labels: Any,
    fixed_labels: Any,
    warped_labels: Any,
    evaluation: EvaluationResult,
    prealignment: Mapping[str, Any] | None,
    timings: Timings,
    paths: Mapping[str, Path],
    overwrite: bool,
    inputs: list[Any],
    pair: str,
) -> None:
    from .qc import QCData, write_report

    grid = Grid.of(fixed)
    initial = result.initial_transform or identity()
    before = warp_image(moving, initial, fixed)
    det = evaluation.deformable_determinant
    if det is None:
        deformable = np.asarray(array_view(result.deformable_field))
        det = jacobian_determinant(deformable, grid.spacing, grid.direction_matrix)
    before_labels = None
    if moving_labels is not None:
        before_labels = np.asarray(
            array_view(warp_image(moving_labels, initial, fixed, nearest=True, default_value=0))
        )

    def arr(image: Any) -> np.ndarray | None:
        return None if image is None else np.asarray(array_view(image))

    data = QCData(
        fixed=np.asarray(array_view(fixed), dtype=np.float32),
        before=np.asarray(array_view(before), dtype=np.float32),
        after=np.asarray(array_view(warped), dtype=np.float32),
        before_inside=_inside_mask(moving, initial, fixed),
        after_inside=_inside_mask(moving, result.transform, fixed),
        jacobian=det,
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction_matrix,
        fixed_labels=arr(fixed_labels) if moving_labels is not None else None,
        before_labels=before_labels,
        after_labels=arr(warped_labels),
        label_names={label: evaluation.name(label) for label in (evaluation.label_ids or [])},
        dice=_dice_pairs(evaluation),
        header=qc_header(result, evaluation, prealignment, timings.to_dict(), pair),
        title=f"SAMConvex registration QC: {pair}" if pair else "SAMConvex registration QC",
    )
    jac = evaluation.jacobian_deformable or evaluation.jacobian
    data.tables.append(
        (
            "Deformable part",
            [
                ["det min", f"{jac['min']:.3f}"],
                ["det max", f"{jac['max']:.3f}"],
                ["% det <= 0", f"{jac['percent_nonpositive']:.4f}"],
                ["SDlogJ", f"{jac['sdlogj']:.4f}"],
            ],
        )
    )
    if evaluation.has_landmarks:
        rows = [["state", "mean TRE (mm)", "max (mm)"]]
        for state in evaluation.states:
            stats = evaluation.tre_stats(state)
            rows.append([state, f"{stats['mean']:.2f}", f"{stats['max']:.2f}"])
        data.tables.append(("Landmarks", rows))
    write_report(data, paths["qc"], paths.get("qc_html"), overwrite=overwrite, inputs=inputs)


def provenance(result: RegistrationResult) -> dict[str, Any]:
    """Parameters, working grid, device and versions of a registration."""
    import torch

    grid = result.working_grid
    return {
        "parameters": result.config.to_dict(),
        "working_grid": {
            "size_xyz": list(grid.size),
            "spacing_mm": grid.spacing[0],
            "origin": list(grid.origin),
            "direction": list(grid.direction),
        },
        "device": result.device,
        "torch_threads": result.threads,
        "versions": {
            "itk-samconvex": __version__,
            "itk": itk_version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


__all__ = [
    "OUTPUT_NAMES",
    "Timings",
    "output_paths",
    "provenance",
    "qc_header",
    "refuse_existing",
    "write_outputs",
]
