"""Solver fields as ITK fields and transforms; warping images through a transform.

Every transform here maps **fixed physical points to moving physical points** (LPS mm),
the ITK registration convention: ``warped(x) = moving(T(x))``. Reading and writing
transform files is ``io.transforms``; turning what a user passes into a transform is
``initial``.
"""

from __future__ import annotations

from typing import Any

import itk
import numpy as np
import torch

from . import itk_classes
from .space import (
    Grid,
    dense_field_of,
    field_to_grid,
    linear_displacement,
    linear_parts,
    sample_image,
    scalar_image,
    vector_image,
)

Tensor = torch.Tensor


def deformable_field(field_vox: Tensor, working: Grid, target: Grid) -> np.ndarray:
    """u(x) in LPS mm on ``target`` (Z, Y, X, 3) from a voxel field on ``working``."""
    return field_to_grid(field_vox, working, target)


def baked_field(field_vox: Tensor, working: Grid, target: Grid, initial: Any) -> np.ndarray:
    """``A(x + u(x)) - x`` in LPS mm on ``target``: the initial transform baked in.

    Linear ``A`` is applied in closed form; any other transform through ITK's
    TransformToDisplacementFieldFilter on the composite ``A o (id + u)``.
    """
    parts = linear_parts(initial)
    if parts is not None:
        m, t = parts
        return field_to_grid(
            field_vox, working, target, linear_map=m, index_affine=linear_displacement(m, t, target)
        )
    u = deformable_field(field_vox, working, target)
    composite = itk_classes.composite_transform().New()
    composite.AddTransform(initial)
    composite.AddTransform(displacement_transform(u, target))
    return dense_field_of(composite, target)


def displacement_transform(field_mm: np.ndarray, grid: Grid) -> Any:
    """``itk.DisplacementFieldTransform[itk.D, 3]`` with ``T(x) = x + u(x)``.

    ``field_mm`` is (Z, Y, X, 3) LPS mm on ``grid``. The transform owns a float64 copy, as
    ITK's resampler only accepts double-precision transforms.
    """
    transform = itk_classes.displacement_field_transform().New()
    transform.SetDisplacementField(vector_image(field_mm.astype(np.float64), grid, "D"))
    return transform


def transform_field_image(transform: Any) -> Any:
    """The displacement field image of a DisplacementFieldTransform (float32 copy)."""
    field = transform.GetDisplacementField()
    array = np.asarray(itk_classes.array_view_from_image(field), dtype=np.float32)
    return vector_image(array, Grid.of(field), "F")


def warp_image(
    moving: Any,
    transform: Any,
    reference: Any,
    nearest: bool = False,
    default_value: float | None = None,
) -> Any:
    """Resample ``moving`` onto ``reference``'s grid through ``transform`` (fixed->moving).

    Linear interpolation, or nearest neighbour for label maps. Outside the moving image the
    value is ``default_value`` (default: the moving image's minimum, i.e. air for CT).
    """
    if default_value is None:
        default_value = np.min(itk_classes.array_view_from_image(moving)).item()
    code = itk_classes.pixel_code(moving)
    fast = _warp_in_torch(moving, transform, reference, nearest, default_value, code)
    if fast is not None:
        return fast
    return _warp_with_itk(moving, transform, reference, nearest, default_value, code)


def _warp_with_itk(
    moving: Any, transform: Any, reference: Any, nearest: bool, default_value: float, code: Any
) -> Any:
    """:func:`warp_image` by ITK's ResampleImageFilter (loads its wrapping module)."""
    if code is None:  # a pixel type without a direct class: ITK's functional filter
        kwargs = {
            "transform": transform,
            "use_reference_image": True,
            "reference_image": reference,
            "default_pixel_value": default_value,
        }
        if nearest:
            kwargs["interpolator"] = itk.NearestNeighborInterpolateImageFunction.New(moving)
        return itk.resample_image_filter(moving, **kwargs)
    if np.issubdtype(itk_classes.array_view_from_image(moving).dtype, np.integer):
        # SetDefaultPixelValue takes the pixel type
        default_value = int(default_value)
    resampler = itk_classes.resample_filter(code).New()
    resampler.SetInput(moving)
    resampler.SetTransform(transform)
    resampler.SetUseReferenceImage(True)
    resampler.SetReferenceImage(reference)
    resampler.SetDefaultPixelValue(default_value)
    resampler.SetInterpolator(itk_classes.interpolator(code, nearest).New())
    resampler.Update()
    return resampler.GetOutput()


#: pixel codes whose values float32 holds exactly (sample_image samples in float32)
_EXACT_IN_FLOAT32 = ("UC", "SC", "US", "SS", "F")


def _own_field(transform: Any, grid: Grid) -> np.ndarray | None:
    """``T(x) - x`` on ``grid`` when ``transform`` is a displacement field transform whose
    field lies on ``grid`` (e.g. a registration result on its fixed grid), else None."""
    get_field = getattr(transform, "GetDisplacementField", None)
    if get_field is None:
        return None
    field = get_field()
    if field is None or not Grid.of(field).same_as(grid):
        return None
    return itk_classes.array_view_from_image(field)


def _warp_in_torch(
    moving: Any, transform: Any, reference: Any, nearest: bool, default_value: float, code: Any
) -> Any:
    """:func:`warp_image` by ``space.sample_image`` (no ITK filter module to load) where it
    computes what ITK's resampler does: linear transforms and displacement fields on the
    reference grid, pixel types float32 holds exactly. Else None.

    The values are ITK's (:func:`_warp_with_itk`) up to float round-off, which can move an
    integer image's truncated value by one, and ``sample_image``'s slack: samples within
    ``SAMPLING_SLACK`` voxels outside the moving image's extent count as inside, and
    nearest-neighbour ties within it go to the higher index.
    """
    if code not in _EXACT_IN_FLOAT32:
        return None
    grid = Grid.of(reference)
    linear = linear_parts(transform) is not None
    dense = None if linear else _own_field(transform, grid)
    if not linear and dense is None:
        return None
    values, inside = sample_image(
        moving, grid, transform if linear else None, nearest, displacement_mm=dense
    )
    dtype = itk_classes.array_view_from_image(moving).dtype
    if np.issubdtype(dtype, np.integer):  # ITK clamps to the type's range, then truncates
        limits = np.iinfo(dtype)
        values = values.clamp(float(limits.min), float(limits.max)).trunc()
        default_value = int(default_value)
    array = torch.where(inside, values, float(default_value)).numpy()
    return scalar_image(array.astype(dtype), grid, code)


def identity() -> Any:
    """``itk.IdentityTransform[itk.D, 3]``."""
    return itk_classes.identity_transform().New()


__all__ = [
    "baked_field",
    "deformable_field",
    "displacement_transform",
    "identity",
    "transform_field_image",
    "warp_image",
]
