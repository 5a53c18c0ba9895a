"""Registration quality metrics on plain numpy arrays: overlap, surface distance, Jacobian, TRE.

Everything here is pure numpy/scipy; geometry is passed explicitly rather than read from ITK
images, so the metrics can be used on arrays from any source.

Conventions:

* Image and label arrays are in (z, y, x) order, as ``itk.array_view_from_image`` gives.
* ``spacing`` is a length-3 sequence in ITK order (x, y, z), millimetres.
* ``origin`` is the LPS position (mm) of the centre of voxel (0, 0, 0), ITK order (x, y, z).
* ``direction`` is a 3x3 matrix (or 9 numbers, row-major); column ``a`` is the direction of
  ITK index axis ``a`` (x, y, z order). A physical point is
  ``p = origin + direction @ diag(spacing) @ (i, j, k)`` with (i, j, k) the index in x, y, z.
* Displacement fields are arrays of shape (Z, Y, X, 3) on the fixed image grid whose last axis
  holds the physical displacement (x, y, z) in LPS mm; ``T(p) = p + u(p)`` maps fixed physical
  points to moving physical points (ITK's convention).
* Point sets are (N, 3) arrays of LPS physical coordinates (x, y, z) in mm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .errors import InputError

__all__ = [
    "dice_per_label",
    "hd95",
    "jacobian_determinant",
    "jacobian_stats",
    "mean_dice",
    "sample_field",
    "tre",
    "tre_identity",
]

# Voxels per slab when computing Jacobian determinants, to bound the float64 temporaries
# (each slab needs about 30 float64 values per voxel; slabs of a few MB are reused by the
# allocator, where 1 << 20 voxels cost 0.6 s of page faults on a first call).
_JACOBIAN_SLAB_VOXELS = 1 << 18
_LOG_CLIP = (1e-9, 1e9)
# Offset added to the determinant by the Learn2Reg evaluation (v2.0) before taking the log.
_L2R_OFFSET = 3.0


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _as_label_array(arr: ArrayLike, name: str) -> np.ndarray:
    """Return ``arr`` as an integer array, rejecting non-integral values."""
    a = np.asarray(arr)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            raise InputError(
                f"{name}: label arrays must hold integer ids; got non-integral "
                "values. Pass an integer label map (nearest-neighbour warped)."
            )
        return a.astype(np.int64)
    raise InputError(f"{name}: unsupported label array dtype {a.dtype}; pass integer ids.")


def _label_pair(fixed_labels: ArrayLike, warped_labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    f = _as_label_array(fixed_labels, "fixed_labels")
    w = _as_label_array(warped_labels, "warped_labels")
    if f.shape != w.shape:
        raise InputError(
            f"fixed_labels has shape {f.shape} but warped_labels has shape "
            f"{w.shape}; resample the warped labels onto the fixed grid first."
        )
    return f, w


def _label_ids(f: np.ndarray, w: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    """Requested label ids, or the sorted union of the non-zero ids present in either array."""
    if labels is not None:
        return [int(label) for label in labels]
    present = np.union1d(np.unique(f), np.unique(w))
    return [int(v) for v in present if v != 0]


def _spacing3(spacing: Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(
            f"spacing must be 3 positive numbers in ITK order (x, y, z) mm; got {spacing!r}."
        )
    return s


def _direction3(direction: ArrayLike | None) -> np.ndarray:
    if direction is None:
        return np.eye(3)
    d = np.asarray(direction, dtype=np.float64)
    if d.size != 9:
        raise InputError(
            f"direction must be a 3x3 matrix (or 9 numbers, row-major); got shape {d.shape}."
        )
    d = d.reshape(3, 3)
    if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-12:
        raise InputError("direction must be a finite, invertible 3x3 matrix.")
    return d


def _field_array(field_mm: ArrayLike) -> np.ndarray:
    u = np.asarray(field_mm)
    if u.ndim != 4 or u.shape[-1] != 3:
        raise InputError(
            f"field_mm must have shape (Z, Y, X, 3) (physical x, y, z mm per voxel); got {u.shape}."
        )
    return u


def _points(points: ArrayLike, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1 and p.shape == (3,):
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{name} must have shape (N, 3) of LPS (x, y, z) mm; got {p.shape}.")
    return p


# ---------------------------------------------------------------------------------------------
# Overlap
# ---------------------------------------------------------------------------------------------


def dice_per_label(
    fixed_labels: ArrayLike, warped_labels: ArrayLike, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """Dice overlap ``2 |F ∩ W| / (|F| + |W|)`` per label id.

    Args:
        fixed_labels: integer label map of the fixed image, any shape (usually (Z, Y, X)).
        warped_labels: integer label map of the moving image warped onto the fixed grid; same
            shape as ``fixed_labels``.
        labels: label ids to evaluate. Default: the sorted union of the non-zero ids present in
            either array (0 is background).

    Returns:
        ``{label: dice}`` in [0, 1]. A label absent from both arrays gives NaN (and is kept);
        a label present in only one gives 0.0.

    Raises:
        InputError: shapes differ or the arrays do not hold integer ids.
    """
    f, w = _label_pair(fixed_labels, warped_labels)
    ids = _label_ids(f, w, labels)
    # One pass of counting instead of one comparison per label.
    f_vals, f_counts = np.unique(f, return_counts=True)
    w_vals, w_counts = np.unique(w, return_counts=True)
    i_vals, i_counts = np.unique(f[f == w], return_counts=True)
    f_n = dict(zip(f_vals.tolist(), f_counts.tolist(), strict=True))
    w_n = dict(zip(w_vals.tolist(), w_counts.tolist(), strict=True))
    i_n = dict(zip(i_vals.tolist(), i_counts.tolist(), strict=True))
    out: dict[int, float] = {}
    for label in ids:
        denom = f_n.get(label, 0) + w_n.get(label, 0)
        out[label] = float("nan") if denom == 0 else 2.0 * i_n.get(label, 0) / denom
    return out


def mean_dice(per_label: Mapping[int, float]) -> float:
    """Mean of the per-label values ignoring NaN (labels absent from both images).

    Args:
        per_label: ``{label: value}``, e.g. from :func:`dice_per_label`.

    Returns:
        The NaN-ignoring mean; NaN if the mapping is empty or every value is NaN.
    """
    values = np.asarray(list(per_label.values()), dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


# ---------------------------------------------------------------------------------------------
# Surface distance
# ---------------------------------------------------------------------------------------------

_SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one 6-neighbour outside it (array border = outside)."""
    eroded = ndimage.binary_erosion(mask, structure=_SIX_CONNECTED, border_value=0)
    return mask & ~eroded


def hd95(
    fixed_labels: ArrayLike,
    warped_labels: ArrayLike,
    spacing: Sequence[float],
    labels: Iterable[int] | None = None,
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance (mm) per label, from surface voxels.

    Definition used here:

    * The surface of a label is the set of its voxels that have at least one 6-neighbour
      outside the label; voxels on the array border count as having an outside neighbour.
    * Directed distances: for every surface voxel of the fixed label, the Euclidean distance
      (mm, voxel centre to voxel centre, anisotropic spacing honoured) to the nearest surface
      voxel of the warped label; and the same from the warped surface to the fixed surface.
    * HD95 = the 95th percentile (numpy's default linear interpolation) of the two directed
      distance sets pooled together (not the max of the two directed percentiles).

    Args:
        fixed_labels: integer label map of the fixed image, shape (Z, Y, X).
        warped_labels: warped moving label map on the fixed grid, shape (Z, Y, X).
        spacing: voxel spacing in ITK order (x, y, z), mm. Directions do not matter: distances
            are computed in the (orthogonal) voxel frame.
        labels: label ids to evaluate. Default: the sorted union of the non-zero ids present in
            either array.

    Returns:
        ``{label: hd95_mm}``; NaN where the label is empty in either image.

    Raises:
        InputError: shapes differ, arrays are not 3-D integer label maps, or bad spacing.
    """
    f, w = _label_pair(fixed_labels, warped_labels)
    if f.ndim != 3:
        raise InputError(f"hd95 needs 3-D (Z, Y, X) label maps; got shape {f.shape}.")
    sampling = _spacing3(spacing)[::-1]  # (z, y, x) order for the arrays
    out: dict[int, float] = {}
    for label in _label_ids(f, w, labels):
        fm = f == label
        wm = w == label
        if not fm.any() or not wm.any():
            out[label] = float("nan")
            continue
        # Restrict to the bounding box of both masks plus one voxel (clipped to the array):
        # the padding is outside both labels, and a clipped side is the true array border, so
        # surfaces and nearest-surface distances are exactly those of the full array.
        nz = np.nonzero(fm | wm)
        box = tuple(
            slice(max(int(idx.min()) - 1, 0), min(int(idx.max()) + 2, n))
            for idx, n in zip(nz, f.shape, strict=True)
        )
        sf = _surface(fm[box])
        sw = _surface(wm[box])
        d_to_w = ndimage.distance_transform_edt(~sw, sampling=sampling)
        d_to_f = ndimage.distance_transform_edt(~sf, sampling=sampling)
        pooled = np.concatenate([d_to_w[sf], d_to_f[sw]])
        out[label] = float(np.percentile(pooled, 95))
    return out


# ---------------------------------------------------------------------------------------------
# Jacobian
# ---------------------------------------------------------------------------------------------


def _index_gradients(u: np.ndarray, inner: slice) -> list[np.ndarray]:
    """``[d u / d index_x, d u / d index_y, d u / d index_z]`` of a (3, z', Y, X) block, on
    its planes ``inner`` (the planes around them give the z differences).

    Component first, so every array is contiguous. Central differences inside, one-sided at
    the block's ends (``np.gradient``, unit step); a singleton axis has zero derivative.
    """
    planes = u[:, inner]
    out = []
    for array_axis in (3, 2):  # index axis x, y -> array axis
        if u.shape[array_axis] > 1:
            out.append(np.gradient(planes, axis=array_axis))
        else:
            out.append(np.zeros_like(planes))
    out.append(np.gradient(u, axis=1)[:, inner] if u.shape[1] > 1 else np.zeros_like(planes))
    return out


def _det3(m: list[list[np.ndarray]]) -> np.ndarray:
    """Determinants of 3x3 matrices given entry-wise (``m[r][c]`` arrays), by cofactors."""
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def jacobian_determinant(
    field_mm: ArrayLike, spacing: Sequence[float], direction: ArrayLike | None = None
) -> np.ndarray:
    """Determinant of the Jacobian of ``T(p) = p + u(p)`` in physical space, per voxel.

    Derivatives of ``u`` along the index axes use central differences inside and one-sided
    differences at the borders (as ``np.gradient``); they are converted to physical
    derivatives with ``du/dp = (du/d index) @ inv(direction @ diag(spacing))``, so the result
    is exact (to rounding) for affine fields on any oblique, anisotropic grid. The origin does
    not matter. An axis of length 1 contributes a zero derivative.

    Args:
        field_mm: displacement field, shape (Z, Y, X, 3); last axis is the physical
            displacement (x, y, z) in LPS mm on the fixed grid.
        spacing: voxel spacing, ITK order (x, y, z), mm.
        direction: 3x3 direction matrix (column ``a`` = index axis ``a``); default identity.

    Returns:
        float64 array of shape (Z, Y, X): ``det(I + du/dp)`` (dimensionless; 1 = volume
        preserved, <= 0 = folding).

    Raises:
        InputError: bad field shape, spacing or direction.
    """
    u = _field_array(field_mm)
    a_inv = np.linalg.inv(_direction3(direction) @ np.diag(_spacing3(spacing)))
    nz, ny, nx, _ = u.shape
    det = np.empty((nz, ny, nx), dtype=np.float64)
    step = max(1, _JACOBIAN_SLAB_VOXELS // max(1, ny * nx))
    for z0 in range(0, nz, step):
        z1 = min(z0 + step, nz)
        # One extra plane each side (where available) makes the z differences inside the
        # slab identical to those of the whole field.
        lo, hi = max(z0 - 1, 0), min(z1 + 1, nz)
        # component first: the gradients and the 3x3 entries are contiguous arrays
        block = np.ascontiguousarray(np.moveaxis(u[lo:hi], -1, 0), dtype=np.float64)
        inner = slice(z0 - lo, z0 - lo + (z1 - z0))
        grads = _index_gradients(block, inner)
        # jac[c][b] = delta_cb + d u_c / d p_b, where the physical derivative along LPS axis b
        # is the sum over index axes a of a_inv[a, b] * d u_c / d index_a
        jac = []
        for c in range(3):
            row = []
            for b in range(3):
                entry = np.full(grads[0].shape[1:], 1.0 if b == c else 0.0)
                for a in range(3):
                    if a_inv[a, b] != 0.0:
                        entry += a_inv[a, b] * grads[a][c]
                row.append(entry)
            jac.append(row)
        det[z0:z1] = _det3(jac)
    return det


def jacobian_stats(
    det: ArrayLike, mask: ArrayLike | None = None, crop: int = 0
) -> dict[str, float]:
    """Summary statistics of a Jacobian determinant map.

    Args:
        det: Jacobian determinants, shape (Z, Y, X) (e.g. from :func:`jacobian_determinant`).
        mask: optional boolean array of the same shape; only voxels where it is True count.
        crop: number of voxels removed from every border (of ``det`` and ``mask``) before the
            statistics; the Learn2Reg evaluation uses 2.

    Returns:
        A dict of floats (every value NaN when no voxel is selected):

        * ``"sdlogj"``: std (population, ddof=0) of ``log(clip(det, 1e-9, 1e9))``: the plain
          standard deviation of the log-Jacobian.
        * ``"sdlogj_l2r"``: std of ``log(clip(det + 3, 1e-9, 1e9))``. This is the **Learn2Reg
          evaluation v2.0 convention**, which adds 3 to the determinant before the log; it is
          much smaller than ``"sdlogj"`` and only comparable with Learn2Reg leaderboards.
        * ``"percent_nonpositive"``: ``100 * mean(det <= 0)``, percent of folding voxels.
        * ``"min"``, ``"max"``, ``"mean"``: of ``det`` over the selected voxels.

    Raises:
        InputError: mask shape differs from ``det`` or ``crop`` removes everything.
    """
    d = np.asarray(det, dtype=np.float64)
    m = None
    if mask is not None:
        m = np.asarray(mask).astype(bool, copy=False)
        if m.shape != d.shape:
            raise InputError(f"mask has shape {m.shape} but det has shape {d.shape}.")
    crop = int(crop)
    if crop < 0:
        raise InputError(f"crop must be >= 0 voxels; got {crop}.")
    if crop:
        if any(n <= 2 * crop for n in d.shape):
            raise InputError(f"crop={crop} removes every voxel of an array of shape {d.shape}.")
        box = tuple(slice(crop, n - crop) for n in d.shape)
        d = d[box]
        m = None if m is None else m[box]
    values = d.reshape(-1) if m is None else d[m]
    if values.size == 0:
        nan = float("nan")
        return {
            "sdlogj": nan,
            "sdlogj_l2r": nan,
            "percent_nonpositive": nan,
            "min": nan,
            "max": nan,
            "mean": nan,
        }
    return {
        "sdlogj": float(np.log(np.clip(values, *_LOG_CLIP)).std()),
        "sdlogj_l2r": float(np.log(np.clip(values + _L2R_OFFSET, *_LOG_CLIP)).std()),
        "percent_nonpositive": float(100.0 * np.mean(values <= 0)),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


# ---------------------------------------------------------------------------------------------
# Landmarks
# ---------------------------------------------------------------------------------------------


def tre(
    fixed_points_mm: ArrayLike,
    moving_points_mm: ArrayLike,
    transform_points: Callable[[np.ndarray], ArrayLike],
) -> np.ndarray:
    """Target registration error per landmark pair, mm.

    Args:
        fixed_points_mm: (N, 3) landmarks in the fixed image, LPS (x, y, z) mm.
        moving_points_mm: (N, 3) corresponding landmarks in the moving image, LPS mm.
        transform_points: maps an (N, 3) float64 array of fixed physical points to their
            (N, 3) positions in moving physical space (the registration's ``T``). For a
            displacement field: ``lambda p: p + sample_field(field, spacing, origin,
            direction, p)``.

    Returns:
        (N,) float64 array of ``|| T(p_fixed) - p_moving ||`` in mm.

    Raises:
        InputError: point arrays are not (N, 3) with equal N, or ``transform_points`` returns
            the wrong shape.
    """
    pf = _points(fixed_points_mm, "fixed_points_mm")
    pm = _points(moving_points_mm, "moving_points_mm")
    if pf.shape != pm.shape:
        raise InputError(
            f"fixed_points_mm {pf.shape} and moving_points_mm {pm.shape} must "
            "have the same number of landmarks."
        )
    mapped = np.asarray(transform_points(pf.copy()), dtype=np.float64)
    if mapped.shape != pf.shape:
        raise InputError(f"transform_points returned shape {mapped.shape}; expected {pf.shape}.")
    return np.linalg.norm(mapped - pm, axis=1)


def tre_identity(fixed_points_mm: ArrayLike, moving_points_mm: ArrayLike) -> np.ndarray:
    """Landmark distance before registration: ``|| p_fixed - p_moving ||`` per pair, mm.

    Args:
        fixed_points_mm: (N, 3) fixed landmarks, LPS (x, y, z) mm.
        moving_points_mm: (N, 3) corresponding moving landmarks, LPS mm.

    Returns:
        (N,) float64 array of distances in mm.
    """
    return tre(fixed_points_mm, moving_points_mm, lambda p: p)


def sample_field(
    field_mm: ArrayLike,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: ArrayLike | None,
    points_mm: ArrayLike,
) -> np.ndarray:
    """Trilinear interpolation of a displacement field at physical points.

    The continuous index of a point is ``inv(direction @ diag(spacing)) @ (p - origin)`` in
    ITK order (x, y, z); the field array is indexed (z, y, x). Points outside the grid take
    the value of the nearest border voxel (``mode="nearest"``), so the field is extended by
    replication, not by zero.

    Args:
        field_mm: displacement field, shape (Z, Y, X, 3), physical (x, y, z) mm components.
        spacing: voxel spacing, ITK order (x, y, z), mm.
        origin: LPS position (mm) of voxel (0, 0, 0), ITK order (x, y, z).
        direction: 3x3 direction matrix (column ``a`` = index axis ``a``); None = identity.
        points_mm: (N, 3) physical points, LPS (x, y, z) mm.

    Returns:
        (N, 3) float64 displacements (x, y, z) in mm at the points.

    Raises:
        InputError: bad field, geometry or point shapes.
    """
    u = _field_array(field_mm)
    a = _direction3(direction) @ np.diag(_spacing3(spacing))
    o = np.asarray(origin, dtype=np.float64).reshape(-1)
    if o.shape != (3,):
        raise InputError(f"origin must be 3 numbers (x, y, z) mm; got {origin!r}.")
    p = _points(points_mm, "points_mm")
    index_xyz = np.linalg.solve(a, (p - o).T)  # (3, N), rows i, j, k
    coords = index_xyz[::-1]  # rows k, j, i -> array axes (z, y, x)
    out = np.empty((p.shape[0], 3), dtype=np.float64)
    for c in range(3):
        out[:, c] = ndimage.map_coordinates(
            np.asarray(u[..., c], dtype=np.float64), coords, order=1, mode="nearest"
        )
    return out
