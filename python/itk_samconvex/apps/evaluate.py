"""Score a registration: Dice and HD95 per label, landmark TRE, Jacobian statistics.

Python::

    from itk_samconvex.evaluate import evaluate

    result = evaluate(fixed, transform, fixed_labels=fl, moving_labels=ml,
                      fixed_points="fixed.csv", moving_points="moving.csv")
    print(result.summary())
    result.to_dict()   # JSON-ready nested dict (NaN -> None)
    result.to_rows()   # flat rows for a CSV: metric, item, before, after, unit

Command line (see ``samconvex evaluate --help``)::

    samconvex evaluate FIXED TRANSFORM --fixed-labels F --moving-labels M \\
        --fixed-landmarks F.csv --moving-landmarks M.csv -o results/pair01

Conventions (the package's, see ``metrics.py``):

* ``transform`` maps **fixed physical points to moving physical points** (LPS mm), so
  ``warped(x) = moving(T(x))``. A displacement field ``u`` (a 3-component vector image, LPS
  mm, on any grid) means ``T(x) = x + u(x)``.
* "before" numbers use the identity transform (the moving data taken as they are, in physical
  space); "after" numbers use ``transform``.
* The Jacobian statistics are computed on ``T(x) - x`` sampled on the **fixed image grid**.

Landmark files (``read_landmarks``): text files, one landmark per line, row ``i`` of the fixed
file corresponds to row ``i`` of the moving file; coordinates are LPS physical millimetres.
The delimiter is ``,`` (or ``;``, tab, or whitespace, detected from the first data line).
Blank lines and ``#`` comments are skipped. The first line is a header when it has fewer
numeric cells than the second. The coordinate columns are the ones named ``x``, ``y``, ``z``
in the header (case-insensitive, an ``mm`` / ``(mm)`` / ``_mm`` suffix allowed), otherwise the
**last three columns that are numeric in every row** (so a leading index or name column, or a
trailing name column, is ignored). A comment ``# columns = ...`` (3D Slicer ``.fcsv``) serves
as the header, and ``# CoordinateSystem = RAS`` (or ``0``) converts RAS to LPS by negating x
and y.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import itk
import numpy as np

from ..errors import InputError, SAMConvexError
from .metrics import (
    dice_per_label,
    hd95,
    jacobian_determinant,
    jacobian_stats,
    mean_dice,
    sample_field,
    tre,
    tre_identity,
)
from ..edge.space import Grid, check_image

logger = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "add_arguments", "evaluate", "read_landmarks", "run",
           "write_results"]

EXIT_OK, EXIT_USAGE = 0, 2

FIELD_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat", ".xfm")
CONVENTION = ("transform maps fixed physical points to moving points (LPS mm), "
              "warped(x) = moving(T(x)); before = identity transform, after = transform; "
              "Jacobian of T(x) = x + u(x) on the fixed image grid")
L2R_NOTE = ("sdlogj = std(log(det)); sdlogj_l2r = std(log(det + 3)), the Learn2Reg "
            "evaluation v2.0 convention (only comparable with Learn2Reg leaderboards)")
TRE_STATISTICS = ("mean", "std", "median", "p95", "max")
CSV_COLUMNS = ("metric", "item", "before", "after", "unit")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, keys -> str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in list(value)]
    if isinstance(value, np.integer | bool | np.bool_):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _tre_statistics(distances_mm: np.ndarray) -> dict[str, float]:
    """mean, std (population), median, 95th percentile and max of distances in mm."""
    d = np.asarray(distances_mm, dtype=np.float64)
    return {"mean": float(d.mean()), "std": float(d.std()), "median": float(np.median(d)),
            "p95": float(np.percentile(d, 95)), "max": float(d.max())}


@dataclass
class EvaluationResult:
    """Scores of one registration; every distance in millimetres.

    Sections that were not requested are None (labels, landmarks).

    Attributes:
        transform: how the transform was interpreted (kind and class).
        label_ids: label ids scored (None without label maps).
        dice_before, dice_after: ``{label: Dice}`` with the identity / the transform.
        hd95_before_mm, hd95_after_mm: ``{label: HD95 in mm}`` (NaN when a label is empty in
            either map).
        tre_before_mm, tre_after_mm: (N,) per-landmark distances in mm,
            ``|p_fixed - p_moving|`` and ``|T(p_fixed) - p_moving|``.
        landmarks_outside_field: fixed landmarks outside the displacement field's grid (their
            displacement was extrapolated by border replication); 0 for other transforms.
        jacobian: ``metrics.jacobian_stats`` of ``det(dT/dx)`` on the fixed grid: ``sdlogj``
            (std of log det), ``sdlogj_l2r`` (std of log(det + 3), Learn2Reg v2.0),
            ``percent_nonpositive`` (% voxels with det <= 0), ``min``, ``max``, ``mean``.
        jacobian_voxels: number of voxels in the Jacobian statistics.
        jacobian_region: "fixed grid" or a description of the mask.
        inputs: free-form provenance (file names), copied into ``to_dict``.
    """

    transform: str
    jacobian: dict[str, float]
    jacobian_voxels: int
    jacobian_region: str
    label_ids: list[int] | None = None
    dice_before: dict[int, float] | None = None
    dice_after: dict[int, float] | None = None
    hd95_before_mm: dict[int, float] | None = None
    hd95_after_mm: dict[int, float] | None = None
    tre_before_mm: np.ndarray | None = None
    tre_after_mm: np.ndarray | None = None
    landmarks_outside_field: int = 0
    inputs: dict[str, str] = field(default_factory=dict)

    # -- derived values -----------------------------------------------------------------------

    @property
    def has_labels(self) -> bool:
        return self.label_ids is not None

    @property
    def has_landmarks(self) -> bool:
        return self.tre_after_mm is not None

    @property
    def mean_dice_before(self) -> float:
        """Mean Dice over the labels with the identity transform (NaN-ignoring)."""
        return mean_dice(self.dice_before) if self.dice_before is not None else float("nan")

    @property
    def mean_dice_after(self) -> float:
        """Mean Dice over the labels with the transform (NaN-ignoring)."""
        return mean_dice(self.dice_after) if self.dice_after is not None else float("nan")

    @property
    def mean_hd95_before_mm(self) -> float:
        """Mean HD95 (mm) over the labels where it is defined, identity transform."""
        return _nanmean(self.hd95_before_mm.values()) if self.hd95_before_mm else float("nan")

    @property
    def mean_hd95_after_mm(self) -> float:
        """Mean HD95 (mm) over the labels where it is defined, with the transform."""
        return _nanmean(self.hd95_after_mm.values()) if self.hd95_after_mm else float("nan")

    def tre_stats(self, which: str = "after") -> dict[str, float] | None:
        """TRE summary in mm: mean, std, median, p95, max ("before" or "after")."""
        values = {"before": self.tre_before_mm, "after": self.tre_after_mm}[which]
        return None if values is None else _tre_statistics(values)

    # -- exports -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Nested, JSON-ready dict (NaN and inf become None)."""
        out: dict[str, Any] = {"convention": CONVENTION, "inputs": dict(self.inputs),
                               "transform": self.transform, "labels": None, "landmarks": None}
        if self.has_labels:
            per_label = {
                str(label): {"dice_before": self.dice_before[label],
                             "dice_after": self.dice_after[label],
                             "hd95_mm_before": self.hd95_before_mm[label],
                             "hd95_mm_after": self.hd95_after_mm[label]}
                for label in self.label_ids}
            out["labels"] = {
                "ids": list(self.label_ids),
                "per_label": per_label,
                "mean": {"dice_before": self.mean_dice_before,
                         "dice_after": self.mean_dice_after,
                         "hd95_mm_before": self.mean_hd95_before_mm,
                         "hd95_mm_after": self.mean_hd95_after_mm},
                "note": "moving labels resampled onto the fixed grid with nearest neighbour; "
                        "means ignore labels absent from both maps (Dice) or empty in either "
                        "(HD95)",
            }
        if self.has_landmarks:
            out["landmarks"] = {
                "count": int(self.tre_after_mm.size),
                "tre_mm_before": self.tre_stats("before"),
                "tre_mm_after": self.tre_stats("after"),
                "per_landmark_mm": {"before": self.tre_before_mm.tolist(),
                                    "after": self.tre_after_mm.tolist()},
                "outside_field": int(self.landmarks_outside_field),
            }
        out["jacobian"] = {**self.jacobian, "voxels": int(self.jacobian_voxels),
                           "region": self.jacobian_region, "note": L2R_NOTE}
        return _clean(out)

    def to_rows(self) -> list[dict[str, Any]]:
        """Flat rows ``{metric, item, before, after, unit}`` for a CSV (None = not defined)."""
        rows: list[dict[str, Any]] = []

        def add(metric: str, item: Any, before: Any, after: Any, unit: str) -> None:
            rows.append({"metric": metric, "item": str(item), "before": _clean(before),
                         "after": _clean(after), "unit": unit})

        if self.has_labels:
            for label in self.label_ids:
                add("dice", label, self.dice_before[label], self.dice_after[label], "")
            add("dice", "mean", self.mean_dice_before, self.mean_dice_after, "")
            for label in self.label_ids:
                add("hd95", label, self.hd95_before_mm[label], self.hd95_after_mm[label], "mm")
            add("hd95", "mean", self.mean_hd95_before_mm, self.mean_hd95_after_mm, "mm")
        if self.has_landmarks:
            before, after = self.tre_stats("before"), self.tre_stats("after")
            for name in TRE_STATISTICS:
                add("tre", name, before[name], after[name], "mm")
            add("tre", "count", self.tre_after_mm.size, self.tre_after_mm.size, "landmarks")
        jac = self.jacobian
        add("jacobian", "sdlogj", None, jac["sdlogj"], "std log(det)")
        add("jacobian", "sdlogj_l2r", None, jac["sdlogj_l2r"], "std log(det+3) Learn2Reg")
        add("jacobian", "percent_nonpositive", None, jac["percent_nonpositive"], "%")
        for name in ("min", "max", "mean"):
            add("jacobian", name, None, jac[name], "det")
        add("jacobian", "voxels", None, self.jacobian_voxels, "voxels")
        return rows

    def summary(self) -> str:
        """One line: mean Dice, mean HD95, mean TRE (before -> after), SDlogJ and folding."""
        parts = []
        if self.has_labels:
            parts.append(f"Dice {self.mean_dice_before:.3f} -> {self.mean_dice_after:.3f} "
                         f"({len(self.label_ids)} labels)")
            parts.append(f"HD95 {self.mean_hd95_before_mm:.2f} -> "
                         f"{self.mean_hd95_after_mm:.2f} mm")
        if self.has_landmarks:
            parts.append(f"TRE {self.tre_stats('before')['mean']:.2f} -> "
                         f"{self.tre_stats('after')['mean']:.2f} mm (n={self.tre_after_mm.size})")
        jac = self.jacobian
        parts.append(f"SDlogJ {jac['sdlogj']:.4f} (Learn2Reg log(det+3): "
                     f"{jac['sdlogj_l2r']:.4f})")
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

        lines = [f"transform: {self.transform}", f"{'':36s}{'before':>12s}{'after':>12s}"]
        for row in self.to_rows():
            metric, item = row["metric"], row["item"]
            if metric == "dice":
                name, digits = ("Dice mean" if item == "mean" else f"Dice label {item}"), 4
            elif metric == "hd95":
                name = "HD95 mean (mm)" if item == "mean" else f"HD95 label {item} (mm)"
                digits = 3
            elif metric == "tre":
                name, digits = (f"TRE {item}" + ("" if item == "count" else " (mm)")), 3
            else:
                continue
            lines.append(f"{name:36s}{fmt(row['before'], digits):>12s}"
                         f"{fmt(row['after'], digits):>12s}")
        jac = self.jacobian
        lines.append(f"Jacobian on {self.jacobian_region} ({self.jacobian_voxels} voxels):")
        lines.append(f"  {'SDlogJ, std log(det)':34s}{'':12s}{fmt(jac['sdlogj'], 4):>12s}")
        lines.append(f"  {'SDlogJ Learn2Reg, std log(det+3)':34s}{'':12s}"
                     f"{fmt(jac['sdlogj_l2r'], 4):>12s}")
        lines.append(f"  {'det <= 0 (% voxels)':34s}{'':12s}"
                     f"{fmt(jac['percent_nonpositive'], 4):>12s}")
        lines.append(f"  {'det min / max':34s}{'':12s}"
                     f"{fmt(jac['min'], 3) + ' / ' + fmt(jac['max'], 3):>12s}")
        if self.landmarks_outside_field:
            lines.append(f"note: {self.landmarks_outside_field} fixed landmark(s) outside the "
                         "displacement field's grid (border values used)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _read_image(path: PathLike, what: str):
    """Read an image file, with errors naming ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
    try:
        return itk.imread(str(path))
    except Exception as error:
        raise InputError(f"{what} {path} cannot be read as an image ({error}); use a format "
                         "ITK reads (.nii.gz, .nii, .mha, .nrrd).") from error


def _image(value, what: str):
    """An itk.Image from an image or a path."""
    if isinstance(value, str | os.PathLike):
        return _read_image(value, what)
    return value


def _is_field_path(path: Path) -> bool:
    return path.name.lower().endswith(FIELD_SUFFIXES)


@dataclass
class _Mapping:
    """The transform under evaluation, in the forms the metrics need.

    ``field``/``field_grid`` are set for displacement fields (``T(x) = x + field``, LPS mm);
    ``transform`` is an ITK double-precision transform (built lazily from the field).
    """

    description: str
    transform: Any = None
    field: np.ndarray | None = None
    field_grid: Grid | None = None
    field_image: Any = None  # keeps the ITK buffer behind ``field`` (a view) alive

    def itk_transform(self):
        """A Transform[D, 3] usable by ITK's resampler."""
        if self.transform is None:
            from ..edge.transforms import displacement_transform

            self.transform = displacement_transform(np.asarray(self.field), self.field_grid)
        return self.transform


def _field_mapping(image, what: str) -> _Mapping:
    """A displacement field image (3 components, LPS mm) as a mapping."""
    try:
        _, (_, dimension) = itk.template(image)
    except Exception as error:
        raise TypeError(f"{what} must be an itk transform, a displacement field image or a "
                        f"path to one; got {type(image).__name__}.") from error
    components = int(image.GetNumberOfComponentsPerPixel())
    if dimension != 3 or components != 3:
        raise InputError(
            f"{what} is a {dimension}-D image with {components} component(s) per voxel; a "
            "displacement field must be a 3-D image of 3-component vectors (LPS mm, "
            "T(x) = x + u(x)). Pass the field (e.g. field.nii.gz) or the transform file.")
    grid = Grid.of(image)
    array = np.asarray(itk.array_view_from_image(image))
    if array.shape != (*grid.shape, 3):
        raise InputError(f"{what} has array shape {array.shape}; expected {(*grid.shape, 3)}.")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{what} contains {bad} NaN or infinite values; a displacement field "
                         "must be finite everywhere (re-export it from the registration).")
    return _Mapping(description=f"displacement field {grid.size[0]}x{grid.size[1]}x"
                                f"{grid.size[2]} voxels, spacing "
                                f"{', '.join(f'{s:g}' for s in grid.spacing)} mm",
                    field=array, field_grid=grid, field_image=image)


def _resolve_transform(transform, fixed) -> _Mapping:
    """Interpret the user's ``transform`` argument (object, field image or path)."""
    from ..edge.transforms import as_transform, read_transform

    if transform is None:
        raise InputError("transform is None; pass the registration's transform (fixed -> "
                         "moving), a displacement field or a path to one.")
    if isinstance(transform, str | os.PathLike):
        path = Path(transform)
        if not path.is_file():
            raise FileNotFoundError(f"transform {path} does not exist; check the path.")
        if _is_field_path(path):
            mapping = _field_mapping(_read_image(path, "displacement field"),
                                     f"displacement field {path}")
            mapping.description += f" ({path.name})"
            return mapping
        if path.suffix.lower() not in TRANSFORM_SUFFIXES:
            raise InputError(
                f"transform {path} has an unknown suffix; pass an ITK transform file "
                f"({', '.join(TRANSFORM_SUFFIXES)}), an elastix TransformParameters.*.txt file "
                f"or a displacement field image ({', '.join(FIELD_SUFFIXES)}).")
        return _transform_mapping(read_transform(path, fixed), f"transform {path}",
                                  f"{path.name}: ")
    if isinstance(transform, np.ndarray):
        raise TypeError("transform is a numpy array without geometry; wrap the (Z, Y, X, 3) "
                        "LPS-mm field as an image on its grid (itk_samconvex.space."
                        "vector_image) or pass a DisplacementFieldTransform.")
    if hasattr(transform, "GetLargestPossibleRegion"):
        return _field_mapping(transform, "transform image")
    if hasattr(transform, "TransformPoint") and hasattr(transform, "GetNumberOfParameters"):
        return _transform_mapping(transform, "transform", "")
    name = type(transform).__name__
    if "ElastixRegistrationMethod" in name or "ParameterObject" in name:
        return _transform_mapping(as_transform(transform, fixed), "transform", "elastix: ")
    raise TypeError(f"transform must be an itk transform, an itk-elastix registration or "
                    f"parameter object, a displacement field image or a path; got {name}.")


def _checked(transform, what: str):
    """Refuse transforms that ITK's resampler cannot use (not 3-D, or single precision)."""
    dims = (int(transform.GetInputSpaceDimension()), int(transform.GetOutputSpaceDimension()))
    if dims != (3, 3):
        raise InputError(f"{what} maps {dims[0]}-D to {dims[1]}-D points "
                         f"({transform.GetNameOfClass()}); pass a 3-D transform.")
    probe = transform.TransformPoint([0.0, 0.0, 0.0])
    if "itkPointF" in type(probe).__name__:
        raise InputError(f"{what} is a single-precision transform "
                         f"({transform.GetNameOfClass()}); build it as itk.<Type>[itk.D, 3] "
                         "(ITK's resampler needs double precision).")
    return transform


def _transform_mapping(transform, what: str, prefix: str) -> _Mapping:
    """An ITK transform as a mapping; a DisplacementFieldTransform becomes its field (so a
    single-precision one works too); other transforms must be 3-D and double precision."""
    name = transform.GetNameOfClass()
    if name.endswith("DisplacementFieldTransform"):
        image = transform.GetDisplacementField()
        if image is None or Grid.of(image).num_voxels == 0:
            raise InputError(f"{prefix}{name} has no displacement field; set one first.")
        mapping = _field_mapping(image, f"{prefix}{name} field")
        mapping.description = f"{prefix}{name} ({mapping.description})"
        return mapping
    return _Mapping(description=f"{prefix}{name}", transform=_checked(transform, what))


def _field_on_grid(mapping: _Mapping, grid: Grid) -> tuple[np.ndarray, str]:
    """``T(x) - x`` (Z, Y, X, 3) LPS mm at the voxels of ``grid``, and how it was obtained."""
    from ..edge.transforms import dense_field_of, linear_parts

    if mapping.field is not None and mapping.field_grid.same_as(grid):
        return mapping.field, "field on the fixed grid"
    if mapping.field is None:
        parts = linear_parts(mapping.transform)
        if parts is not None:
            # Closed form in float64: u(x) = (M - I) x + t with x = origin + A @ index.
            m, t = parts
            delta = m - np.eye(3)
            a = grid.direction_matrix @ np.diag(grid.spacing)
            c0 = delta @ np.asarray(grid.origin) + t
            w = delta @ a  # column a: change of u per step along index axis a
            k, j, i = (np.arange(n, dtype=np.float64) for n in grid.shape)
            u = (c0 + i[None, None, :, None] * w[:, 0] + j[None, :, None, None] * w[:, 1]
                 + k[:, None, None, None] * w[:, 2])
            return u, "linear transform in closed form"
    return (dense_field_of(mapping.itk_transform(), grid),
            "transform densified on the fixed grid")


def _check_on_grid(image, what: str, grid: Grid) -> None:
    """Refuse an image that is not on the fixed image's grid (ITK tolerance)."""
    other = check_image(image, what, allow_integer_only=True)
    if not other.same_as(grid):
        raise InputError(
            f"{what} is not on the fixed image's grid (size/spacing/origin {other.size}/"
            f"{_fmt(other.spacing)}/{_fmt(other.origin)} vs {grid.size}/{_fmt(grid.spacing)}/"
            f"{_fmt(grid.origin)}); resample it onto the fixed image with nearest-neighbour "
            "interpolation first.")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


# ---------------------------------------------------------------------------------------------
# Landmarks
# ---------------------------------------------------------------------------------------------

_MM_SUFFIX = re.compile(r"[\s_]*(\(mm\)|\[mm\]|mm)$")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [c.strip().strip("\"'").strip() for c in next(csv.reader([line],
                                                                      delimiter=delimiter))]


def read_landmarks(path: PathLike) -> np.ndarray:
    """Read a landmark file into an (N, 3) float64 array of LPS (x, y, z) mm.

    The format rules are in this module's docstring: delimiter detected, optional header,
    columns named x/y/z or else the last three all-numeric columns, ``#`` comments skipped,
    3D Slicer ``# CoordinateSystem = RAS`` converted to LPS.

    Args:
        path: text/CSV file, one landmark per line.

    Returns:
        (N, 3) float64 array of physical points, LPS mm.

    Raises:
        FileNotFoundError: the file does not exist.
        InputError: no landmark, inconsistent or too few columns, non-numeric or non-finite
            coordinates, or an unsupported coordinate system; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file {path} does not exist; check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"landmark file {path} cannot be read as text ({error}); pass a CSV "
                         "of x,y,z in LPS mm.") from error
    header: list[str] | None = None
    system = "LPS"
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            key = key.strip().lower()
            if key == "columns":
                header = [c.strip() for c in value.split(",")]
            elif key == "coordinatesystem":
                system = value.strip().upper()
            continue
        lines.append((number, line))
    if not lines:
        raise InputError(f"landmark file {path} holds no landmark; write one line per "
                         "landmark with x,y,z in LPS mm.")
    first = lines[0][1]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    rows = [(number, _split(line, delimiter)) for number, line in lines]

    def numeric(cells: list[str]) -> int:
        return sum(_is_number(c) for c in cells)

    first_is_header = (numeric(rows[0][1]) < numeric(rows[1][1]) if len(rows) > 1
                       else numeric(rows[0][1]) < 3)
    if first_is_header:
        header = rows[0][1]
        rows = rows[1:]
    if not rows:
        raise InputError(f"landmark file {path} has a header but no landmark line; add one "
                         "line per landmark with x,y,z in LPS mm.")
    width = len(rows[0][1])
    for number, cells in rows:
        if len(cells) != width:
            raise InputError(f"landmark file {path} line {number} has {len(cells)} columns but "
                             f"the first landmark line has {width}; every line needs the same "
                             "columns (x,y,z in LPS mm, plus optional index/name columns).")
    columns = _coordinate_columns(path, header, rows, width)
    points = np.empty((len(rows), 3), dtype=np.float64)
    for r, (number, cells) in enumerate(rows):
        for c, column in enumerate(columns):
            try:
                points[r, c] = float(cells[column])
            except ValueError:
                raise InputError(f"landmark file {path} line {number}: {cells[column]!r} in "
                                 f"column {column + 1} is not a number; coordinates must be "
                                 "numbers in LPS mm.") from None
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        number = rows[int(np.flatnonzero(bad)[0])][0]
        raise InputError(f"landmark file {path} line {number} has a NaN or infinite "
                         "coordinate; remove the landmark from both files or fix its value.")
    if system in ("RAS", "0"):
        logger.info("landmark file %s is in RAS: negating x and y to get LPS", path)
        points[:, :2] *= -1.0
    elif system not in ("LPS", "1"):
        raise InputError(f"landmark file {path} declares CoordinateSystem = {system}; only LPS "
                         "or RAS physical millimetres are supported (convert voxel indices to "
                         "physical points first).")
    logger.debug("read %d landmarks from %s (columns %s)", len(points), path,
                 [c + 1 for c in columns])
    return points


def _coordinate_columns(path: Path, header: list[str] | None,
                        rows: list[tuple[int, list[str]]], width: int) -> list[int]:
    """Indices of the x, y, z columns (see the module docstring for the rule)."""
    if header is not None and len(header) == width:
        names = [_MM_SUFFIX.sub("", h.strip().lower()) for h in header]
        if all(names.count(axis) == 1 for axis in "xyz"):
            return [names.index(axis) for axis in "xyz"]
    numeric = [c for c in range(width) if all(_is_number(cells[c]) for _, cells in rows)]
    if len(numeric) < 3:
        raise InputError(f"landmark file {path} has {len(numeric)} numeric column(s) ({width} "
                         "in all); it needs three columns x,y,z in LPS mm (name them x,y,z in "
                         "a header line when there are other numeric columns).")
    return numeric[-3:]


def _points(value, what: str) -> tuple[np.ndarray, str]:
    """Landmarks from a path or an (N, 3) array; also a name for messages."""
    if isinstance(value, str | os.PathLike):
        return read_landmarks(value), f"{what} file {value}"
    p = np.asarray(value, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise InputError(f"{what} must be an (N, 3) array of LPS (x, y, z) mm with N >= 1 or a "
                         f"landmark file path; got shape {p.shape}.")
    if not np.isfinite(p).all():
        raise InputError(f"{what} has NaN or infinite coordinates; remove those landmarks.")
    return p, what


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(
    fixed,
    transform,
    *,
    fixed_labels=None,
    moving_labels=None,
    fixed_points=None,
    moving_points=None,
    labels: Iterable[int] | None = None,
    mask=None,
) -> EvaluationResult:
    """Score a registration with the package's metrics.

    Args:
        fixed: fixed image (itk.Image, or a path): defines the grid of the label and
            Jacobian evaluation.
        transform: the registration, mapping fixed physical points to moving physical points
            (LPS mm): any 3-D double-precision ITK transform (DisplacementFieldTransform,
            affine, CompositeTransform, ...), an itk-elastix result, a path to an ITK
            transform file or an elastix ``TransformParameters.*.txt`` file, or a displacement
            field ``u`` (3-component vector image in LPS mm on any grid, ``T(x) = x + u(x)``)
            or a path to one (.nii.gz, .nii, .mha, .nrrd).
        fixed_labels: integer label map of the fixed image on the fixed grid (image or path).
        moving_labels: label map of the moving image (any grid; image or path). Warped onto
            the fixed grid with nearest neighbour (0 outside the moving image).
        fixed_points: (N, 3) LPS mm landmarks in the fixed image, or a landmark file (see
            :func:`read_landmarks`).
        moving_points: the corresponding (N, 3) moving landmarks (row i matches row i).
        labels: label ids to score; default every non-zero id in either label map.
        mask: optional mask on the fixed grid (image or path; non-zero = inside) restricting
            the Jacobian statistics, e.g. a body mask.

    Returns:
        An :class:`EvaluationResult`. Dice/HD95 (mm) per label before (identity transform)
        and after; TRE (mm) before ``|p_f - p_m|`` and after ``|T(p_f) - p_m|``; Jacobian
        statistics of ``T`` on the fixed grid.

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
        raise InputError(f"{given} given alone; Dice and HD95 need both fixed_labels and "
                         "moving_labels (CLI: --fixed-labels and --moving-labels).")
    if (fixed_points is None) != (moving_points is None):
        given = "fixed_points" if fixed_points is not None else "moving_points"
        raise InputError(f"{given} given alone; TRE needs both fixed and moving landmarks "
                         "(CLI: --fixed-landmarks and --moving-landmarks).")
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
        mask_array = np.asarray(itk.array_view_from_image(mask)) != 0
        if not mask_array.any():
            raise InputError("mask is empty (no non-zero voxel); pass a mask covering the "
                             "region to score (e.g. the body), or no mask.")
        region = "mask"
    points = None
    if fixed_points is not None:
        pf, f_name = _points(fixed_points, "fixed landmarks")
        pm, m_name = _points(moving_points, "moving landmarks")
        if pf.shape != pm.shape:
            raise InputError(f"{f_name} has {len(pf)} landmarks but {m_name} has {len(pm)}; "
                             "row i of one must correspond to row i of the other, so give both "
                             "files the same landmarks in the same order.")
        points = (pf, pm)
    mapping = _resolve_transform(transform, fixed)
    logger.info("evaluating %s on the fixed grid %s", mapping.description, grid.size)

    # Jacobian of T on the fixed grid.
    u, how = _field_on_grid(mapping, grid)
    det = jacobian_determinant(u, grid.spacing, grid.direction_matrix)
    del u
    stats = jacobian_stats(det, mask_array)
    voxels = int(det.size if mask_array is None else mask_array.sum())
    logger.debug("Jacobian from %s: %s", how, stats)
    result = EvaluationResult(transform=f"{mapping.description}; Jacobian from {how}",
                              jacobian=stats, jacobian_voxels=voxels, jacobian_region=region)

    if fixed_labels is not None:
        _score_labels(result, fixed_labels, moving_labels, mapping, labels)
    if points is not None:
        _score_landmarks(result, *points, mapping)
    logger.info("evaluation done in %.2f s: %s", time.perf_counter() - tick, result.summary())
    return result


def _score_labels(result: EvaluationResult, fixed_labels, moving_labels, mapping: _Mapping,
                  labels: Iterable[int] | None) -> None:
    """Dice and HD95 before (identity) and after (the transform), per label."""
    from ..edge.registration import warp_image

    fixed_arr = np.asarray(itk.array_view_from_image(fixed_labels))
    moving_arr = np.asarray(itk.array_view_from_image(moving_labels))
    if labels is None:
        ids = np.union1d(np.unique(fixed_arr), np.unique(moving_arr))
        label_ids = [int(v) for v in ids if v != 0]
        if not label_ids:
            raise InputError("fixed and moving label maps hold no non-zero label; pass label "
                             "maps with the structures to score (0 is background).")
    else:
        label_ids = [int(v) for v in labels]
        if not label_ids:
            raise InputError("labels is empty; pass the label ids to score or None for all.")
    spacing = Grid.of(fixed_labels).spacing
    identity = itk.IdentityTransform[itk.D, 3].New()
    scores = {}
    for which, transform in (("before", identity), ("after", mapping.itk_transform())):
        warped = warp_image(moving_labels, transform, fixed_labels, nearest=True,
                            default_value=0)
        warped_arr = itk.array_view_from_image(warped)
        scores[which] = (dice_per_label(fixed_arr, warped_arr, label_ids),
                         hd95(fixed_arr, warped_arr, spacing, label_ids))
    result.label_ids = label_ids
    result.dice_before, result.hd95_before_mm = scores["before"]
    result.dice_after, result.hd95_after_mm = scores["after"]


def _score_landmarks(result: EvaluationResult, fixed_points: np.ndarray,
                     moving_points: np.ndarray, mapping: _Mapping) -> None:
    """TRE before (identity) and after (the transform)."""
    if mapping.field is not None:
        g = mapping.field_grid
        index = (fixed_points - np.asarray(g.origin)) @ np.linalg.inv(
            g.direction_matrix @ np.diag(g.spacing)).T
        outside = ~((index > -0.5) & (index < np.asarray(g.size) - 0.5)).all(axis=1)
        result.landmarks_outside_field = int(outside.sum())
        if outside.any():
            logger.warning("%d of %d fixed landmarks lie outside the displacement field's grid; "
                           "their displacement is the nearest border value", int(outside.sum()),
                           len(fixed_points))

        def transform_points(p: np.ndarray) -> np.ndarray:
            return p + sample_field(mapping.field, g.spacing, g.origin, g.direction_matrix, p)
    else:
        itk_transform = mapping.transform

        def transform_points(p: np.ndarray) -> np.ndarray:
            return np.array([np.asarray(itk_transform.TransformPoint([float(v) for v in q]),
                                        dtype=np.float64) for q in p])
    result.tre_before_mm = tre_identity(fixed_points, moving_points)
    result.tre_after_mm = tre(fixed_points, moving_points, transform_points)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _output_paths(prefix: PathLike) -> tuple[Path, Path]:
    """``PREFIX.json`` and ``PREFIX.csv`` (a .json/.csv suffix on the prefix is dropped)."""
    prefix = Path(prefix)
    if prefix.suffix.lower() in (".json", ".csv"):
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".csv")


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output(s) {', '.join(existing)} exist; pass --overwrite "
                              "(overwrite=True) to replace them or choose another -o prefix.")


def _write_atomic(text: str, path: Path, overwrite: bool) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it into place."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        _refuse_existing([path], overwrite)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write_results(result: EvaluationResult, prefix: PathLike,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.json`` (``to_dict``) and ``PREFIX.csv`` (``to_rows``) atomically.

    Args:
        result: the evaluation to write.
        prefix: output path without suffix; its folder is created if needed.
        overwrite: replace existing files (otherwise FileExistsError).

    Returns:
        The JSON and CSV paths.
    """
    import json

    json_path, csv_path = _output_paths(prefix)
    _refuse_existing([json_path, csv_path], overwrite)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n", json_path,
                  overwrite)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result.to_rows():
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    _write_atomic(buffer.getvalue(), csv_path, overwrite)
    return json_path, csv_path


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``samconvex evaluate`` (the parser already has -q/-v)."""
    parser.description = (
        "Score a registration. TRANSFORM maps fixed physical points to moving points (LPS "
        "mm): an ITK transform file (.h5 .tfm .txt .mat), an elastix TransformParameters.*.txt "
        "or a displacement field image (T(x) = x + u(x), LPS mm). Prints Dice and HD95 per "
        "label, landmark TRE (before = identity, after = TRANSFORM) and Jacobian statistics "
        "(SDlogJ plain and Learn2Reg log(det+3), % non-positive) on the FIXED grid.")
    parser.epilog = (
        "Landmark files: one landmark per line, row i of the fixed file matching row i of the "
        "moving file, x,y,z in LPS mm; an optional header; extra columns allowed (the columns "
        "named x,y,z, else the last three numeric columns).")
    parser.add_argument("fixed", metavar="FIXED", help="fixed image (defines the evaluation grid)")
    parser.add_argument("transform", metavar="TRANSFORM",
                        help="transform file (fixed -> moving) or displacement field image")
    parser.add_argument("--fixed-labels", metavar="F", help="fixed label map (fixed grid)")
    parser.add_argument("--moving-labels", metavar="M", help="moving label map")
    parser.add_argument("--labels", metavar="ID", type=int, nargs="+",
                        help="label ids to score (default: every non-zero id)")
    parser.add_argument("--fixed-landmarks", metavar="CSV", help="fixed landmarks, LPS mm")
    parser.add_argument("--moving-landmarks", metavar="CSV", help="moving landmarks, LPS mm")
    parser.add_argument("--mask", metavar="MASK",
                        help="mask on the fixed grid restricting the Jacobian statistics")
    parser.add_argument("-o", "--output", metavar="OUT_PREFIX",
                        help="write OUT_PREFIX.json and OUT_PREFIX.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    """Run ``samconvex evaluate``; 0 on success, 2 on bad input (one-line message)."""
    try:
        paths = None
        if args.output:
            paths = _output_paths(args.output)
            _refuse_existing(paths, args.overwrite)
        result = evaluate(
            args.fixed, args.transform,
            fixed_labels=args.fixed_labels, moving_labels=args.moving_labels,
            fixed_points=args.fixed_landmarks, moving_points=args.moving_landmarks,
            labels=args.labels, mask=args.mask)
        result.inputs = {k: str(v) for k, v in (
            ("fixed", args.fixed), ("transform", args.transform),
            ("fixed_labels", args.fixed_labels), ("moving_labels", args.moving_labels),
            ("fixed_landmarks", args.fixed_landmarks),
            ("moving_landmarks", args.moving_landmarks), ("mask", args.mask)) if v}
        if paths is not None:
            write_results(result, args.output, args.overwrite)
        if not args.quiet:
            print(result.table())
            if paths is not None:
                print(f"wrote {paths[0]} and {paths[1]}")
    except (SAMConvexError, FileNotFoundError, FileExistsError, TypeError) as error:
        print(f"samconvex: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
