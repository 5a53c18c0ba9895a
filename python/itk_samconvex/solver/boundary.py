"""The field at the faces of a field of view that both images share.

Two phases of one 4DCT cover the same box. Beyond each face of that box neither image has
data, so the data term says nothing there and the regulariser extrapolates the motion through
the face: the outer slices of the fixed image then map outside the moving image (blank rims
in the warped image, contours lost at the crop's edge). :func:`anchor_at_faces` ramps the
*outward* component of the displacement to zero over a band at each face, so every fixed
voxel keeps a counterpart inside the moving image; the inward component (tissue entering the
box) is left alone.

The band is wide enough that the ramp strains the tissue by at most ``max_strain``: the
displacement along an axis goes from ``u`` to 0 over ``band``, a strain of ``u / band``, so
``band = max(u_face / max_strain, min_band_mm)`` with ``u_face`` the largest outward
displacement on that face. The mapping's derivative along the axis stays above
``1 - max_strain`` (no folding from the ramp).

Tensors follow ``warp``'s conventions: fields (1, 3, Z, Y, X) in voxels of their grid,
channels (z, y, x).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def _face_band(outward: Tensor, distance_mm: Tensor, spacing_mm: float) -> Tensor:
    """Largest outward displacement (mm, 0-d) over the layer of voxels at the face."""
    layer = distance_mm.abs() < spacing_mm
    if not bool(layer.any()):
        return outward.new_zeros(())
    return (outward * layer).amax()


def anchor_at_faces(
    field: Tensor,
    lower: Sequence[float],
    upper: Sequence[float],
    spacing_mm: float,
    max_strain: float = 0.25,
    min_band_mm: float = 4.0,
) -> tuple[Tensor, list[tuple[float, float]]]:
    """Ramp the displacement leaving the box ``[lower, upper]`` to zero at its faces.

    Args:
        field: (1, 3, Z, Y, X) displacement in voxels of its grid, channels (z, y, x).
        lower, upper: the box's faces along (z, y, x), in voxel coordinates of the field's
            grid (continuous; a face on a voxel boundary is at ``-0.5`` / ``n - 0.5``).
        spacing_mm: the grid's (isotropic) spacing.
        max_strain: the largest strain the ramp may impose (sets the band's width).
        min_band_mm: the narrowest band.

    Returns:
        The anchored field (a new tensor), and per axis (z, y, x) the bands in mm at the
        (lower, upper) face (0 where no displacement leaves through that face).
    """
    out = field.clone()
    bands: list[tuple[float, float]] = []
    for axis in range(3):
        n = field.shape[2 + axis]
        shape = [1, 1, 1]
        shape[axis] = n
        coord = torch.arange(n, dtype=field.dtype, device=field.device).view(1, 1, *shape)
        u = out[:, axis : axis + 1]
        extent_mm = (upper[axis] - lower[axis]) * spacing_mm
        to_lower = (coord - lower[axis]) * spacing_mm
        to_upper = (upper[axis] - coord) * spacing_mm
        near_upper = to_upper < to_lower
        axis_bands = []
        for distance, sign, side in ((to_lower, -1.0, ~near_upper), (to_upper, 1.0, near_upper)):
            outward = (u * (sign * spacing_mm)).clamp_min(0.0) * side  # mm towards this face
            face_u = float(_face_band(outward.expand_as(u), distance.expand_as(u), spacing_mm))
            if face_u == 0.0:
                axis_bands.append(0.0)
                continue
            band = min(max(face_u / max_strain, min_band_mm), 0.5 * extent_mm)
            weight = (distance / band).clamp(0.0, 1.0)
            leaving = (outward > 0) & side
            u = torch.where(leaving, u * weight, u)
            axis_bands.append(band)
        out[:, axis : axis + 1] = u
        bands.append((axis_bands[0], axis_bands[1]))
    return out, bands


__all__ = ["anchor_at_faces"]
