"""The one scorer: Dice and HD95 per label, landmark TRE, Jacobian statistics.

``samconvex evaluate``, ``samconvex register``, ``samconvex batch``, the QC report and the
benchmarks all score through :func:`evaluate`, so a pair gets the same numbers everywhere.

Python::

    from itk_samconvex.apps.evaluate import evaluate

    result = evaluate(fixed, transform, initial_transform=affine,
                      fixed_labels=fl, moving_labels=ml, label_names={1: "Brainstem"},
                      fixed_points="fixed.csv", moving_points="moving.csv")
    print(result.summary())
    result.to_dict()   # JSON-ready nested dict (NaN -> None)
    result.to_rows()   # flat rows for a CSV: metric, item, state, value, unit

Conventions:

* ``transform`` maps **fixed physical points to moving physical points** (LPS mm), so
  ``warped(x) = moving(T(x))``. A displacement field ``u`` (a 3-component vector image, LPS
  mm, on any grid) means ``T(x) = x + u(x)``.
* Three states are scored: ``before_identity`` (the moving data as they are, in physical
  space), ``before_initial`` (through ``initial_transform``, the pre-alignment; only when one
  is given) and ``after`` (through ``transform``).
* The Jacobian statistics are computed on ``T(x) - x`` sampled on the **fixed image grid**;
  with ``deformable_transform`` also on the deformable part alone.
* Landmarks: see :mod:`itk_samconvex.edge.io.landmarks` (LPS mm, row ``i`` matches row ``i``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..edge.io import (
    json_safe,
    label_name,
    landmark_points,
    read_image,
    read_label_names,
    write_text,
)
from ..edge.mapping import Mapping as TransformMapping
from ..edge.mapping import resolve
from ..edge.space import Grid, array_view, check_image
from ..edge.transforms import identity, warp_image
from ..errors import InputError
from ..metrics import (
    dice_per_label,
    hd95,
    jacobian_determinant,
    jacobian_stats,
    mean_dice,
    tre,
    tre_identity,
)

logger = logging.getLogger(__name__)

__all__ = ["STATES", "EvaluationResult", "evaluate", "write_results"]

State = Literal["before_identity", "before_initial", "after"]
STATES: tuple[str, ...] = ("before_identity", "before_initial", "after")
CONVENTION = (
    "transform maps fixed physical points to moving points (LPS mm), "
    "warped(x) = moving(T(x)); before_identity = moving data as they are, "
    "before_initial = through the initial transform (pre-alignment), after = "
    "through the transform; Jacobian of T(x) = x + u(x) on the fixed image grid"
)
L2R_NOTE = (
    "sdlogj = std(log(det)); sdlogj_l2r = std(log(det + 3)), the Learn2Reg "
    "evaluation v2.0 convention (only comparable with Learn2Reg leaderboards)"
)
TRE_STATISTICS = ("mean", "std", "median", "p95", "max")
CSV_COLUMNS = ("metric", "item", "state", "value", "unit")

PathLike = str | os.PathLike


def _nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _tre_statistics(distances_mm: np.ndarray) -> dict[str, float]:
    """mean, std (population), median, 95th percentile and max of distances in mm."""
    d = np.asarray(distances_mm, dtype=np.float64)
    return {
        "mean": float(d.mean()),
        "std": float(d.std()),
        "median": float(np.median(d)),
        "p95": float(np.percentile(d, 95)),
        "max": float(d.max()),
    }


@dataclass
class EvaluationResult:
    """Scores of one registration; every distance in millimetres.

    Sections that were not requested are None (labels, landmarks, HD95).

    Attributes:
        transform: how the transform was interpreted (kind and class).
        states: the states scored, in order (``before_identity``, ``before_initial`` when an
            initial transform was given, ``after``).
        jacobian: ``metrics.jacobian_stats`` of ``det(dT/dx)`` on the fixed grid: ``sdlogj``,
            ``sdlogj_l2r`` (Learn2Reg v2.0), ``percent_nonpositive``, ``min``, ``max``,
            ``mean``.
        jacobian_deformable: the same for the deformable part alone (when given).
        label_ids: label ids scored (None without label maps).
        label_names: ``{id: name}`` used in reports (ids without a name: ``label <id>``).
        dice: ``{state: {label: Dice}}``.
        hd95_mm: ``{state: {label: HD95 mm}}`` (NaN when a label is empty in either map).
        tre_mm: ``{state: (N,) distances}``, ``|T_state(p_fixed) - p_moving|``.
        landmarks_outside_field: fixed landmarks outside a displacement field's grid (their
            displacement was extrapolated by border replication).
        inputs: free-form provenance (file names), copied into ``to_dict``.
        deformable_determinant: the (Z, Y, X) float32 determinant map behind
            ``jacobian_deformable`` (else ``jacobian``), kept only when ``evaluate`` was asked
            to (``keep_determinant=True``, for the QC picture); never exported.
    """

    transform: str
    states: tuple[str, ...]
    jacobian: dict[str, float]
    jacobian_voxels: int
    jacobian_region: str
    jacobian_deformable: dict[str, float] | None = None
    label_ids: list[int] | None = None
    label_names: dict[int, str] | None = None
    dice: dict[str, dict[int, float]] | None = None
    hd95_mm: dict[str, dict[int, float]] | None = None
    tre_mm: dict[str, np.ndarray] | None = None
    landmarks_outside_field: int = 0
    seconds: float = 0.0
    inputs: dict[str, str] = field(default_factory=dict)
    deformable_determinant: np.ndarray | None = field(default=None, repr=False)

    # -- derived values -----------------------------------------------------------------------

    @property
    def has_labels(self) -> bool:
        return self.label_ids is not None

    @property
    def has_landmarks(self) -> bool:
        return self.tre_mm is not None

    @property
    def before(self) -> str:
        """The state a registration is judged against: the pre-alignment when there was
        one, else the identity."""
        return "before_initial" if "before_initial" in self.states else "before_identity"

    def mean_dice(self, state: str = "after") -> float:
        """Mean Dice over the labels in ``state`` (NaN-ignoring)."""
        return mean_dice(self.dice[state]) if self.dice is not None else float("nan")

    def mean_hd95_mm(self, state: str = "after") -> float:
        """Mean HD95 (mm) over the labels where it is defined, in ``state``."""
        return _nanmean(self.hd95_mm[state].values()) if self.hd95_mm else float("nan")

    def tre_stats(self, state: str = "after") -> dict[str, float] | None:
        """TRE summary in mm: mean, std, median, p95, max."""
        return None if self.tre_mm is None else _tre_statistics(self.tre_mm[state])

    def name(self, label: int) -> str:
        return label_name(label, self.label_names)

    # -- exports -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Nested, JSON-ready dict (NaN and inf become None)."""
        out: dict[str, Any] = {
            "convention": CONVENTION,
            "inputs": dict(self.inputs),
            "transform": self.transform,
            "states": list(self.states),
            "labels": None,
            "landmarks": None,
        }
        if self.has_labels:
            per_label = {}
            for label in self.label_ids:
                entry: dict[str, Any] = {"name": self.name(label)}
                for state in self.states:
                    entry[f"dice_{state}"] = self.dice[state][label]
                    if self.hd95_mm is not None:
                        entry[f"hd95_mm_{state}"] = self.hd95_mm[state][label]
                per_label[str(label)] = entry
            mean: dict[str, Any] = {}
            for state in self.states:
                mean[f"dice_{state}"] = self.mean_dice(state)
                if self.hd95_mm is not None:
                    mean[f"hd95_mm_{state}"] = self.mean_hd95_mm(state)
            out["labels"] = {
                "ids": list(self.label_ids),
                "per_label": per_label,
                "mean": mean,
                "note": "moving labels resampled onto the fixed grid with nearest neighbour; "
                "means ignore labels absent from both maps (Dice) or empty in either "
                "(HD95)",
            }
        if self.has_landmarks:
            out["landmarks"] = {
                "count": int(self.tre_mm["after"].size),
                **{f"tre_mm_{state}": self.tre_stats(state) for state in self.states},
                "per_landmark_mm": {state: self.tre_mm[state].tolist() for state in self.states},
                "outside_field": int(self.landmarks_outside_field),
            }
        out["jacobian"] = {
            **self.jacobian,
            "voxels": int(self.jacobian_voxels),
            "region": self.jacobian_region,
            "note": L2R_NOTE,
        }
        if self.jacobian_deformable is not None:
            out["jacobian_deformable"] = dict(self.jacobian_deformable)
        return json_safe(out)

    def to_rows(self) -> list[dict[str, Any]]:
        """Flat rows ``{metric, item, state, value, unit}`` for a CSV (None = not defined)."""
        rows: list[dict[str, Any]] = []

        def add(metric: str, item: Any, state: str, value: Any, unit: str) -> None:
            rows.append(
                {
                    "metric": metric,
                    "item": str(item),
                    "state": state,
                    "value": json_safe(value),
                    "unit": unit,
                }
            )

        if self.has_labels:
            for state in self.states:
                for label in self.label_ids:
                    add("dice", self.name(label), state, self.dice[state][label], "")
                add("dice", "mean", state, self.mean_dice(state), "")
                if self.hd95_mm is not None:
                    for label in self.label_ids:
                        add("hd95", self.name(label), state, self.hd95_mm[state][label], "mm")
                    add("hd95", "mean", state, self.mean_hd95_mm(state), "mm")
        if self.has_landmarks:
            for state in self.states:
                stats = self.tre_stats(state)
                for name in TRE_STATISTICS:
                    add("tre", name, state, stats[name], "mm")
            add("tre", "count", "after", self.tre_mm["after"].size, "landmarks")
        for part, stats in (
            ("jacobian", self.jacobian),
            ("jacobian_deformable", self.jacobian_deformable),
        ):
            if stats is None:
                continue
            add(part, "sdlogj", "after", stats["sdlogj"], "std log(det)")
            add(part, "sdlogj_l2r", "after", stats["sdlogj_l2r"], "std log(det+3) Learn2Reg")
            add(part, "percent_nonpositive", "after", stats["percent_nonpositive"], "%")
            for name in ("min", "max", "mean"):
                add(part, name, "after", stats[name], "det")
        add("jacobian", "voxels", "after", self.jacobian_voxels, "voxels")
        return rows

    def summary(self) -> str:
        """One line: mean Dice, mean HD95, mean TRE (before -> after), SDlogJ and folding."""
        before = self.before
        parts = []
        if self.has_labels:
            parts.append(
                f"Dice {self.mean_dice(before):.3f} -> {self.mean_dice('after'):.3f} "
                f"({len(self.label_ids)} labels, before = {before})"
            )
            if self.hd95_mm is not None:
                parts.append(
                    f"HD95 {self.mean_hd95_mm(before):.2f} -> {self.mean_hd95_mm('after'):.2f} mm"
                )
        if self.has_landmarks:
            parts.append(
                f"TRE {self.tre_stats(before)['mean']:.2f} -> "
                f"{self.tre_stats('after')['mean']:.2f} mm "
                f"(n={self.tre_mm['after'].size})"
            )
        jac = self.jacobian
        parts.append(f"SDlogJ {jac['sdlogj']:.4f} (Learn2Reg log(det+3): {jac['sdlogj_l2r']:.4f})")
        parts.append(f"det<=0 {jac['percent_nonpositive']:.3f}%")
        return "; ".join(parts)

    def table(self) -> str:
        """A readable multi-line table of every score (what the CLI prints)."""

        def fmt(value: Any, digits: int) -> str:
            if value is None:
                return "-"
            if isinstance(value, int):
                return str(value)
            return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"

        short = {"before_identity": "identity", "before_initial": "initial", "after": "after"}
        width = 28
        lines = [
            f"transform: {self.transform}",
            f"{'':{width}s}" + "".join(f"{short[s]:>11s}" for s in self.states),
        ]

        def line(name: str, values: list[Any], digits: int) -> None:
            lines.append(f"{name:{width}s}" + "".join(f"{fmt(v, digits):>11s}" for v in values))

        if self.has_labels:
            for label in self.label_ids:
                line(
                    f"Dice {self.name(label)}"[:width],
                    [self.dice[s][label] for s in self.states],
                    4,
                )
            line("Dice mean", [self.mean_dice(s) for s in self.states], 4)
            if self.hd95_mm is not None:
                for label in self.label_ids:
                    line(
                        f"HD95 {self.name(label)} (mm)"[:width],
                        [self.hd95_mm[s][label] for s in self.states],
                        3,
                    )
                line("HD95 mean (mm)", [self.mean_hd95_mm(s) for s in self.states], 3)
        if self.has_landmarks:
            for name in TRE_STATISTICS:
                line(f"TRE {name} (mm)", [self.tre_stats(s)[name] for s in self.states], 3)
            line("TRE count", [self.tre_mm[s].size for s in self.states], 0)
        jac = self.jacobian
        lines.append(f"Jacobian on {self.jacobian_region} ({self.jacobian_voxels} voxels):")
        lines.append(f"  {'SDlogJ, std log(det)':34s}{fmt(jac['sdlogj'], 4):>12s}")
        lines.append(f"  {'SDlogJ Learn2Reg, std log(det+3)':34s}{fmt(jac['sdlogj_l2r'], 4):>12s}")
        lines.append(f"  {'det <= 0 (% voxels)':34s}{fmt(jac['percent_nonpositive'], 4):>12s}")
        lines.append(
            f"  {'det min / max':34s}{fmt(jac['min'], 3) + ' / ' + fmt(jac['max'], 3):>12s}"
        )
        if self.landmarks_outside_field:
            lines.append(
                f"note: {self.landmarks_outside_field} fixed landmark(s) outside the "
                "displacement field's grid (border values used)"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _image(value: Any, what: str) -> Any:
    """An itk.Image from an image or a path."""
    if isinstance(value, str | os.PathLike):
        return read_image(value, what)
    return value


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _check_on_grid(image: Any, what: str, grid: Grid) -> None:
    """Refuse an image that is not on the fixed image's grid (ITK tolerance)."""
    other = check_image(image, what, allow_integer_only=True)
    if not other.same_as(grid):
        raise InputError(
            f"{what} is not on the fixed image's grid (size/spacing/origin {other.size}/"
            f"{_fmt(other.spacing)}/{_fmt(other.origin)} vs {grid.size}/{_fmt(grid.spacing)}/"
            f"{_fmt(grid.origin)}); resample it onto the fixed image with nearest-neighbour "
            "interpolation first."
        )


def _names(label_names: Mapping[int, str] | PathLike | None) -> dict[int, str] | None:
    if label_names is None:
        return None
    if isinstance(label_names, str | os.PathLike):
        return read_label_names(label_names)
    return {int(k): str(v) for k, v in label_names.items()}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(
    fixed: Any,
    transform: Any,
    *,
    initial_transform: Any = None,
    deformable_transform: Any = None,
    fixed_labels: Any = None,
    moving_labels: Any = None,
    fixed_points: Any = None,
    moving_points: Any = None,
    label_ids: Iterable[int] | None = None,
    label_names: Mapping[int, str] | PathLike | None = None,
    mask: Any = None,
    surface_distances: bool = True,
    keep_determinant: bool = False,
) -> EvaluationResult:
    """Score a registration with the package's metrics.

    Args:
        fixed: fixed image (itk.Image, or a path): defines the grid of the label and
            Jacobian evaluation.
        transform: the registration, fixed -> moving (LPS mm): any 3-D double-precision ITK
            transform, an itk-elastix result, a transform file or an elastix
            ``TransformParameters.*.txt`` file, or a displacement field ``u`` (vector image
            in LPS mm on any grid, ``T(x) = x + u(x)``) or a path to one.
        initial_transform: the pre-alignment the registration started from (same kinds as
            ``transform``); adds the ``before_initial`` state.
        deformable_transform: the deformable part alone (e.g.
            ``RegistrationResult.deformable_field``); adds ``jacobian_deformable``.
        fixed_labels: integer label map of the fixed image on the fixed grid (image or path).
        moving_labels: label map of the moving image (any grid; image or path). Warped onto
            the fixed grid with nearest neighbour (0 outside the moving image).
        fixed_points: (N, 3) LPS mm landmarks in the fixed image, or a landmark file.
        moving_points: the corresponding (N, 3) moving landmarks (row i matches row i).
        label_ids: label ids to score; default every non-zero id in either label map.
        label_names: ``{id: name}`` or a label-name file (JSON or CSV) for reports.
        mask: optional mask on the fixed grid (image or path; non-zero = inside) restricting
            the Jacobian statistics, e.g. a body mask.
        surface_distances: also compute HD95 per label (costs a distance transform per label
            and state).
        keep_determinant: keep the determinant map of the deformable part (of ``transform``
            without one) as ``deformable_determinant``.

    Raises:
        InputError: an input cannot be used (the message names it and the fix).
        FileNotFoundError: a path does not exist.
        TypeError: an argument of the wrong kind (e.g. a numpy array instead of an image).
    """
    tick = time.perf_counter()
    fixed = _image(fixed, "fixed image")
    grid = check_image(fixed, "fixed image", allow_integer_only=True)
    if (fixed_labels is None) != (moving_labels is None):
        given = "fixed_labels" if fixed_labels is not None else "moving_labels"
        raise InputError(
            f"{given} given alone; Dice and HD95 need both fixed_labels and "
            "moving_labels (CLI: --fixed-labels and --moving-labels)."
        )
    if (fixed_points is None) != (moving_points is None):
        given = "fixed_points" if fixed_points is not None else "moving_points"
        raise InputError(
            f"{given} given alone; TRE needs both fixed and moving landmarks "
            "(CLI: --fixed-landmarks and --moving-landmarks)."
        )
    # Read and validate every input before the expensive work.
    if fixed_labels is not None:
        fixed_labels = _image(fixed_labels, "fixed label map")
        _check_on_grid(fixed_labels, "fixed label map", grid)
        moving_labels = _image(moving_labels, "moving label map")
        check_image(moving_labels, "moving label map", allow_integer_only=True)
    mask_array = None
    region = "fixed grid"
    if mask is not None:
        mask = _image(mask, "mask")
        _check_on_grid(mask, "mask", grid)
        mask_array = np.asarray(array_view(mask)) != 0
        if not mask_array.any():
            raise InputError(
                "mask is empty (no non-zero voxel); pass a mask covering the "
                "region to score (e.g. the body), or no mask."
            )
        region = "mask"
    points = None
    if fixed_points is not None:
        pf, f_name = landmark_points(fixed_points, "fixed landmarks")
        pm, m_name = landmark_points(moving_points, "moving landmarks")
        if pf.shape != pm.shape:
            raise InputError(
                f"{f_name} has {len(pf)} landmarks but {m_name} has {len(pm)}; "
                "row i of one must correspond to row i of the other, so give both "
                "files the same landmarks in the same order."
            )
        points = (pf, pm)
    mapping = resolve(transform, fixed, "transform")
    mappings: dict[str, TransformMapping | None] = {"before_identity": None}
    if initial_transform is not None:
        mappings["before_initial"] = resolve(initial_transform, fixed, "initial transform")
    mappings["after"] = mapping
    states = tuple(mappings)
    names = _names(label_names)
    logger.info("evaluating %s on the fixed grid %s", mapping.description, grid.size)

    def jacobian_of(m: TransformMapping) -> tuple[dict[str, float], str, np.ndarray]:
        u, how = m.field_on(grid)
        det = jacobian_determinant(u, grid.spacing, grid.direction_matrix)
        return jacobian_stats(det, mask_array), how, det

    stats, how, det = jacobian_of(mapping)
    voxels = int(np.prod(grid.shape) if mask_array is None else mask_array.sum())
    result = EvaluationResult(
        transform=f"{mapping.description}; Jacobian from {how}",
        states=states,
        jacobian=stats,
        jacobian_voxels=voxels,
        jacobian_region=region,
        label_names=names,
    )
    if deformable_transform is not None:
        result.jacobian_deformable, _, det = jacobian_of(
            resolve(deformable_transform, fixed, "deformable transform")
        )
    if keep_determinant:
        result.deformable_determinant = det.astype(np.float32)
    del det
    if fixed_labels is not None:
        _score_labels(result, fixed_labels, moving_labels, mappings, label_ids, surface_distances)
    if points is not None:
        _score_landmarks(result, *points, mappings)
    result.seconds = time.perf_counter() - tick
    logger.info("evaluation done in %.2f s: %s", result.seconds, result.summary())
    return result


def _score_labels(
    result: EvaluationResult,
    fixed_labels: Any,
    moving_labels: Any,
    mappings: dict[str, TransformMapping | None],
    label_ids: Iterable[int] | None,
    surface_distances: bool,
) -> None:
    """Dice (and HD95) per label in every state."""
    fixed_arr = np.asarray(array_view(fixed_labels))
    moving_arr = np.asarray(array_view(moving_labels))
    if label_ids is None:
        ids = np.union1d(np.unique(fixed_arr), np.unique(moving_arr))
        ids_list = [int(v) for v in ids if v != 0]
        if not ids_list:
            raise InputError(
                "fixed and moving label maps hold no non-zero label; pass label "
                "maps with the structures to score (0 is background)."
            )
    else:
        ids_list = [int(v) for v in label_ids]
        if not ids_list:
            raise InputError("label_ids is empty; pass the label ids to score or None for all.")
    spacing = Grid.of(fixed_labels).spacing
    result.label_ids = ids_list
    result.dice, result.hd95_mm = {}, ({} if surface_distances else None)
    for state, mapping in mappings.items():
        transform = identity() if mapping is None else mapping.itk_transform()
        warped = warp_image(moving_labels, transform, fixed_labels, nearest=True, default_value=0)
        warped_arr = array_view(warped)
        result.dice[state] = dice_per_label(fixed_arr, warped_arr, ids_list)
        if result.hd95_mm is not None:
            result.hd95_mm[state] = hd95(fixed_arr, warped_arr, spacing, ids_list)


def _score_landmarks(
    result: EvaluationResult,
    fixed_points: np.ndarray,
    moving_points: np.ndarray,
    mappings: dict[str, TransformMapping | None],
) -> None:
    """TRE in every state."""
    after = mappings["after"]
    result.landmarks_outside_field = after.points_outside_field(fixed_points)
    if result.landmarks_outside_field:
        logger.warning(
            "%d of %d fixed landmarks lie outside the displacement field's grid; "
            "their displacement is the nearest border value",
            result.landmarks_outside_field,
            len(fixed_points),
        )
    result.tre_mm = {}
    for state, mapping in mappings.items():
        if mapping is None:
            result.tre_mm[state] = tre_identity(fixed_points, moving_points)
        else:
            result.tre_mm[state] = tre(fixed_points, moving_points, mapping.transform_points)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def output_paths(prefix: PathLike) -> tuple[Path, Path]:
    """``PREFIX.json`` and ``PREFIX.csv`` (a .json/.csv suffix on the prefix is dropped)."""
    prefix = Path(prefix)
    if prefix.suffix.lower() in (".json", ".csv"):
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".csv")


def write_results(
    result: EvaluationResult,
    prefix: PathLike,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` (``to_dict``) and ``PREFIX.csv`` (``to_rows``) atomically.

    Args:
        result: the evaluation to write.
        prefix: output path without suffix; its folder must exist.
        overwrite: replace existing files (otherwise FileExistsError).
        inputs: input paths the outputs must not be.
    """
    import json

    json_path, csv_path = output_paths(prefix)
    existing = [str(p) for p in (json_path, csv_path) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output(s) {', '.join(existing)} exist; pass --overwrite "
            "(overwrite=True) to replace them or choose another -o prefix."
        )
    inputs = list(inputs)
    write_text(
        json_path,
        json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n",
        overwrite=overwrite,
        inputs=inputs,
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result.to_rows():
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(csv_path, buffer.getvalue(), overwrite=overwrite, inputs=inputs)
    return json_path, csv_path
