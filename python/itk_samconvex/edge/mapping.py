"""A transform under evaluation, in the forms the scorer needs.

The scorer (``apps.evaluate``) accepts whatever a user has: an ITK transform (any 3-D,
double-precision one; a DisplacementFieldTransform of either precision), an itk-elastix
result, a transform file, an elastix ``TransformParameters`` file, or a displacement field
``u`` as an image or a file (``T(x) = x + u(x)``, LPS mm, on any grid). :func:`resolve` turns
it into a :class:`Mapping` that gives ``T(x) - x`` on a grid, ``T(p)`` at points and an ITK
transform for resampling. Every transform maps fixed physical points to moving physical
points (LPS mm).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..metrics import sample_field
from . import itk_classes
from .initial import as_transform, checked_transform
from .io.images import read_image
from .io.transforms import TRANSFORM_SUFFIXES, read_transform
from .space import Grid, dense_field_of, linear_parts
from .transforms import displacement_transform

logger = logging.getLogger(__name__)

FIELD_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass
class Mapping:
    """One transform, fixed -> moving.

    ``field``/``field_grid`` are set for displacement fields (``T(x) = x + field``, LPS mm);
    ``transform`` is an ITK double-precision transform (built lazily from the field).
    """

    description: str
    transform: Any = None
    field: np.ndarray | None = None
    field_grid: Grid | None = None
    field_image: Any = None  # keeps the ITK buffer behind ``field`` (a view) alive

    def itk_transform(self) -> Any:
        """A Transform[D, 3] usable by ITK's resampler."""
        if self.transform is None:
            self.transform = displacement_transform(np.asarray(self.field), self.field_grid)
        return self.transform

    def field_on(self, grid: Grid) -> tuple[np.ndarray, str]:
        """``T(x) - x`` (Z, Y, X, 3) LPS mm at the voxels of ``grid``, and how it was got.

        A field already on ``grid`` is used as it is; a linear transform in closed form
        (float64); anything else is densified by ITK.
        """
        if self.field is not None and self.field_grid.same_as(grid):
            return self.field, "field on the fixed grid"
        if self.field is None and linear_parts(self.transform) is not None:
            return (
                dense_field_of(self.transform, grid, np.float64),
                "linear transform in closed form",
            )
        return dense_field_of(self.itk_transform(), grid), "transform densified on the grid"

    def points_outside_field(self, points: np.ndarray) -> int:
        """How many points lie outside the field's grid (0 for non-field transforms)."""
        if self.field is None:
            return 0
        g = self.field_grid
        index = (points - np.asarray(g.origin)) @ np.linalg.inv(
            g.direction_matrix @ np.diag(g.spacing)
        ).T
        return int((~((index > -0.5) & (index < np.asarray(g.size) - 0.5)).all(axis=1)).sum())

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """``T(p)`` for (N, 3) LPS mm points (fields: trilinear, border values replicate)."""
        if self.field is not None:
            g = self.field_grid
            return points + sample_field(
                self.field, g.spacing, g.origin, g.direction_matrix, points
            )
        transform = self.transform
        return np.array(
            [
                np.asarray(transform.TransformPoint([float(v) for v in p]), dtype=np.float64)
                for p in points
            ]
        ).reshape(-1, 3)


def _field_mapping(image: Any, what: str) -> Mapping:
    """A displacement field image (3 components, LPS mm) as a mapping."""
    try:
        dimension = int(image.GetImageDimension())
    except Exception as error:
        raise TypeError(
            f"{what} must be an itk transform, a displacement field image or a "
            f"path to one; got {type(image).__name__}."
        ) from error
    components = int(image.GetNumberOfComponentsPerPixel())
    if dimension != 3 or components != 3:
        raise InputError(
            f"{what} is a {dimension}-D image with {components} component(s) per voxel; a "
            "displacement field must be a 3-D image of 3-component vectors (LPS mm, "
            "T(x) = x + u(x)). Pass the field (e.g. field.nii.gz) or the transform file."
        )
    grid = Grid.of(image)
    array = np.asarray(itk_classes.array_view_from_image(image))
    if array.shape != (*grid.shape, 3):
        raise InputError(f"{what} has array shape {array.shape}; expected {(*grid.shape, 3)}.")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(
            f"{what} contains {bad} NaN or infinite values; a displacement field "
            "must be finite everywhere (re-export it from the registration)."
        )
    return Mapping(
        description=f"displacement field {grid.size[0]}x{grid.size[1]}x"
        f"{grid.size[2]} voxels, spacing "
        f"{', '.join(f'{s:g}' for s in grid.spacing)} mm",
        field=array,
        field_grid=grid,
        field_image=image,
    )


def _transform_mapping(transform: Any, what: str, prefix: str) -> Mapping:
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
    return Mapping(description=f"{prefix}{name}", transform=checked_transform(transform, what))


def resolve(transform: Any, fixed: Any, what: str = "transform") -> Mapping:
    """Interpret the user's transform argument (object, field image or path)."""
    if transform is None:
        raise InputError(
            f"{what} is None; pass the registration's transform (fixed -> "
            "moving), a displacement field or a path to one."
        )
    if isinstance(transform, str | os.PathLike):
        path = Path(transform)
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
        if path.name.lower().endswith(FIELD_SUFFIXES):
            field = read_image(path, "displacement field", scalar=False)
            mapping = _field_mapping(field, f"displacement field {path}")
            mapping.description += f" ({path.name})"
            return mapping
        if path.suffix.lower() not in TRANSFORM_SUFFIXES:
            raise InputError(
                f"{what} {path} has an unknown suffix; pass an ITK transform file "
                f"({', '.join(TRANSFORM_SUFFIXES)}), an elastix TransformParameters.*.txt file "
                f"or a displacement field image ({', '.join(FIELD_SUFFIXES)})."
            )
        return _transform_mapping(
            read_transform(path, fixed, what), f"{what} {path}", f"{path.name}: "
        )
    if isinstance(transform, np.ndarray):
        raise TypeError(
            f"{what} is a numpy array without geometry; wrap the (Z, Y, X, 3) "
            "LPS-mm field as an image on its grid (itk_samconvex.edge.space."
            "vector_image) or pass a DisplacementFieldTransform."
        )
    if hasattr(transform, "GetLargestPossibleRegion"):
        return _field_mapping(transform, f"{what} image")
    if hasattr(transform, "TransformPoint") and hasattr(transform, "GetNumberOfParameters"):
        return _transform_mapping(transform, what, "")
    name = type(transform).__name__
    if "ElastixRegistrationMethod" in name or "ParameterObject" in name:
        return _transform_mapping(as_transform(transform, fixed), what, "elastix: ")
    raise TypeError(
        f"{what} must be an itk transform, an itk-elastix registration or "
        f"parameter object, a displacement field image or a path; got {name}."
    )


__all__ = ["FIELD_SUFFIXES", "Mapping", "resolve"]
