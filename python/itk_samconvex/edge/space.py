"""The one bridge between ITK physical space and the solver's tensors.

Frames and orders used here:

* ITK physical space: LPS, millimetres. ``x = origin + D @ diag(spacing) @ index`` with the
  index in ITK order (i, j, k) = (x, y, z); column ``a`` of ``D`` is index axis ``a``.
* Tensors and numpy arrays of images are in (z, y, x) order (``itk.array_view_from_image``).
* Solver displacement fields are (1, 3, Z, Y, X) in working-grid voxels with channels in
  tensor order (z, y, x). ITK fields are (Z, Y, X, 3) arrays of physical (x, y, z) mm.

The *working grid* has the fixed image's direction, isotropic spacing, and covers the fixed
image's extent (optionally cropped to its foreground), extended to a multiple of the coarsest
pyramid factor so that every level grid tiles it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import itk
import numpy as np
import torch

from ..errors import InputError
from ..solver.config import GRID_GROWTH_STEP
from ..solver.warp import linear_along
from . import itk_classes

Tensor = torch.Tensor

COORDINATE_TOLERANCE = 1e-6  # ITK's default, relative to the spacing
DIRECTION_TOLERANCE = 1e-6
# Voxels of slack in sample_image's "inside" test and nearest-neighbour tie-break. Working
# voxel centres often fall exactly on a source voxel's boundary (e.g. 2 mm working voxels on
# 3 mm slices); without slack float32 round-off decides those, and the C++ filter (double
# precision) would decide some of them the other way. Larger than float32 round-off of the
# coordinates (< 1e-4 voxels up to 1000 voxels), far below anything geometric.
SAMPLING_SLACK = 1e-3


@dataclass(frozen=True)
class Grid:
    """A 3-D voxel grid in ITK physical space.

    Attributes:
        size: voxels per index axis, ITK order (x, y, z).
        spacing: mm per index axis, ITK order (x, y, z).
        origin: LPS position (mm) of the centre of voxel (0, 0, 0).
        direction: 3x3 direction matrix, row-major; column ``a`` is index axis ``a``.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def index_to_physical(self) -> np.ndarray:
        """4x4 homogeneous matrix taking (i, j, k, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    def apply_to(self, image) -> None:
        """Set this grid's origin, spacing and direction on an ITK image."""
        image.SetOrigin([float(v) for v in self.origin])
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetDirection(itk_classes.direction_matrix(self.direction_matrix))

    @classmethod
    def of(cls, image) -> Grid:
        """The grid of an ITK image."""
        region = image.GetLargestPossibleRegion()
        return cls(
            size=tuple(int(v) for v in region.GetSize()),
            spacing=tuple(float(v) for v in image.GetSpacing()),
            origin=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(matrix_values(image.GetDirection()).ravel()),
        )

    def same_as(self, other: Grid) -> bool:
        """Equal within ITK's coordinate and direction tolerances."""
        if self.size != other.size:
            return False
        tol = COORDINATE_TOLERANCE * max(self.spacing)
        return (
            np.allclose(self.spacing, other.spacing, rtol=0, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tol)
            and np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_TOLERANCE)
        )


def matrix_values(matrix) -> np.ndarray:
    """An ``itk.Matrix`` (3x3) as a float64 array (without ``itk.array_from_matrix``, which
    needs the lazy loader's type registry; see ``itk_classes``)."""
    vnl = matrix.GetVnlMatrix()
    return np.array([[vnl.get(i, j) for j in range(3)] for i in range(3)], dtype=np.float64)


def matrix_like(template, values: np.ndarray):
    """A new ``itk.Matrix`` of ``template``'s type (3x3) holding ``values`` (the vnl matrix
    an ``itk.Matrix`` returns is a copy, so it is filled and wrapped again)."""
    vnl = template.GetVnlMatrix()
    for i in range(3):
        for j in range(3):
            vnl.put(i, j, float(values[i, j]))
    return type(template)(vnl)


class _ImageBuffer:
    """An image's buffer with the image attached: the base of :func:`array_view`'s array."""

    def __init__(self, view: np.ndarray, image) -> None:
        self.__array_interface__ = view.__array_interface__
        self._view, self._image = view, image


def array_view(image) -> np.ndarray:
    """The voxels of an ITK image as a numpy view: (Z, Y, X) or (Z, Y, X, components).

    The view shares the image's buffer and keeps the image alive (``itk.array_view_from_image``
    alone does not: a view of a temporary image would read freed memory).
    """
    return np.asarray(_ImageBuffer(itk_classes.array_view_from_image(image), image))


# ------------------------------------------------------------------------------------------
# validation


def check_image(image, name: str, *, allow_integer_only: bool = False) -> Grid:
    """Validate a 3-D scalar ITK image; return its grid. Raises TypeError/InputError."""
    if isinstance(image, np.ndarray) or torch.is_tensor(image):
        raise TypeError(
            f"{name} is a {type(image).__name__} without physical geometry; pass an itk.Image "
            "(e.g. itk.imread(path) or itk.image_from_array(array) followed by SetSpacing, "
            "SetOrigin and SetDirection)."
        )
    if not hasattr(image, "GetLargestPossibleRegion"):
        raise TypeError(f"{name} must be an itk.Image, got {type(image).__name__}.")
    try:  # not itk.template(): it needs the lazy loader's registry (see itk_classes)
        dimension = int(image.GetImageDimension())
    except Exception as error:
        raise TypeError(f"{name} must be an itk.Image, got {type(image).__name__}.") from error
    if dimension != 3:
        raise InputError(
            f"{name} is {dimension}-D; SAMConvex registers 3-D volumes. Pass a 3-D image "
            "(stack the slices of a 2-D series into a volume first)."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per pixel; pass a "
            "scalar CT image (one value per voxel), e.g. extract one component first."
        )
    grid = Grid.of(image)
    if min(grid.size) < 2:
        raise InputError(f"{name} has size {grid.size}; every axis needs at least 2 voxels.")
    if not all(math.isfinite(v) for v in grid.spacing) or min(grid.spacing) <= 0:
        raise InputError(
            f"{name} has spacing {grid.spacing}; every voxel size must be a "
            "positive number of mm: fix its header."
        )
    if not all(math.isfinite(v) for v in grid.origin):
        raise InputError(f"{name} has a non-finite origin {grid.origin}; fix its header.")
    direction = grid.direction_matrix
    gram_error = float(np.abs(direction.T @ direction - np.eye(3)).max())
    if not math.isfinite(gram_error) or gram_error > 1e-3:
        raise InputError(
            f"{name} has a direction matrix that is not orthonormal (|D^T D - I| up to "
            f"{gram_error:.3g}); fix the image header (re-orthonormalise the direction cosines)."
        )
    if not allow_integer_only:
        values = itk_classes.array_view_from_image(image)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise InputError(
                f"{name} contains {bad} NaN or infinite voxel values; replace them (for CT, with "
                "-1024 HU air) before registering."
            )
    return grid


def check_mask(mask, name: str, image_grid: Grid, image_name: str) -> Grid:
    """A mask must be on its image's grid (ITK tolerance) and contain at least one voxel."""
    grid = check_image(mask, name, allow_integer_only=True)
    if not grid.same_as(image_grid):
        raise InputError(
            f"{name} is not on the grid of {image_name} (mask size/spacing/origin {grid.size}/"
            f"{_fmt(grid.spacing)}/{_fmt(grid.origin)} vs image {image_grid.size}/"
            f"{_fmt(image_grid.spacing)}/{_fmt(image_grid.origin)}); resample the mask onto the "
            "image with nearest-neighbour interpolation first."
        )
    if not np.any(itk_classes.array_view_from_image(mask)):
        raise InputError(
            f"{name} is empty (no non-zero voxel); pass a mask that covers the "
            "region to register, or no mask."
        )
    return grid


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


# ------------------------------------------------------------------------------------------
# working grid


def working_grid(
    fixed: Grid,
    spacing_mm: float,
    multiple: int = 8,
    box_mm: tuple[np.ndarray, np.ndarray] | None = None,
) -> Grid:
    """Isotropic grid with the fixed image's direction covering ``box_mm`` (or its extent).

    Args:
        fixed: the fixed image's grid.
        spacing_mm: isotropic working spacing.
        multiple: every axis size is rounded up to a multiple of this (coarsest factor).
        box_mm: (low, high) corners in the fixed image's axis frame, mm relative to the fixed
            origin (see ``foreground_box``); default the full extent of the fixed voxels.
    """
    sp = np.asarray(fixed.spacing)
    if box_mm is None:
        low = -0.5 * sp
        high = (np.asarray(fixed.size) - 0.5) * sp
    else:
        low, high = (np.asarray(v, dtype=np.float64) for v in box_mm)
    extent = high - low
    size = np.maximum(np.ceil(extent / spacing_mm - 1e-9).astype(int), 1)
    size = ((size + multiple - 1) // multiple) * multiple
    centre = 0.5 * (low + high)
    first = centre - 0.5 * (size - 1) * spacing_mm  # index 0 of the working grid, fixed frame
    origin = np.asarray(fixed.origin) + fixed.direction_matrix @ first
    return Grid(
        size=tuple(int(v) for v in size),
        spacing=(float(spacing_mm),) * 3,
        origin=tuple(float(v) for v in origin),
        direction=fixed.direction,
    )


def fit_working_grid(
    fixed: Grid,
    spacing_mm: float,
    multiple: int,
    box_mm: tuple[np.ndarray, np.ndarray] | None,
    max_voxels: int | None,
) -> Grid:
    """``working_grid``, its spacing grown until it holds at most ``max_voxels`` voxels.

    The rule (the C++ filter applies the same, with the step generated from config.py):
    grow the spacing by the cube root of the excess, then by ``GRID_GROWTH_STEP`` until the
    grid, whose sizes round up to ``multiple``, fits.
    """
    grid = working_grid(fixed, spacing_mm, multiple, box_mm)
    if not max_voxels or grid.num_voxels <= max_voxels:
        return grid
    spacing = spacing_mm * (grid.num_voxels / max_voxels) ** (1 / 3)
    while True:
        grid = working_grid(fixed, spacing, multiple, box_mm)
        if grid.num_voxels <= max_voxels:
            return grid
        spacing *= GRID_GROWTH_STEP


def foreground_box(
    image, grid: Grid, threshold: float, margin_mm: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounding box of voxels above ``threshold`` plus a margin, in the image's axis frame.

    Returns (low, high) in mm relative to the image origin along its index axes (x, y, z),
    clipped to the image extent, or None when nothing is above the threshold.
    """
    values = itk_classes.array_view_from_image(image)
    above = values > threshold
    if not above.any():
        return None
    sp = np.asarray(grid.spacing)
    lo_idx, hi_idx = [], []
    for axis in range(3):  # array axes are (z, y, x)
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(above.any(axis=other))
        lo_idx.append(hits[0])
        hi_idx.append(hits[-1])
    lo = np.asarray(lo_idx[::-1], dtype=np.float64)  # -> (x, y, z)
    hi = np.asarray(hi_idx[::-1], dtype=np.float64)
    low = np.maximum((lo - 0.5) * sp - margin_mm, -0.5 * sp)
    high = np.minimum((hi + 0.5) * sp + margin_mm, (np.asarray(grid.size) - 0.5) * sp)
    return low, high


# ------------------------------------------------------------------------------------------
# images onto the working grid


def as_float_image(image):
    """The image as ``itk.Image[itk.F, 3]`` (a float copy unless it already is one)."""
    if itk_classes.pixel_code(image) == "F":
        return image
    values = np.asarray(itk_classes.array_view_from_image(image), dtype=np.float32)
    return scalar_image(values, Grid.of(image), "F")


def antialias(image, target_spacing_mm: float):
    """Gaussian pre-filter for axes whose spacing is finer than the target.

    sigma_a = sqrt(target^2 - spacing_a^2) / 2.355 (mm): the blur that turns the voxel's
    resolution into the target's (FWHM matching). Axes already coarser are left alone.
    """
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    sigma = np.sqrt(np.maximum(target_spacing_mm**2 - spacing**2, 0.0)) / 2.3548
    if np.all(sigma < 0.25 * spacing):
        return image
    # recursive Gaussian ignores sigma <= 0 badly; keep a tiny positive value on coarse axes
    sigma = np.maximum(sigma, 1e-3 * spacing)
    smoother_class = itk_classes.smoothing_filter()
    smoother = smoother_class.New(as_float_image(image))
    smoother.SetSigmaArray([float(s) for s in sigma])
    smoother.Update()
    return smoother.GetOutput()


# ------------------------------------------------------------------------------------------
# transforms at grid points


def linear_parts(transform) -> tuple[np.ndarray, np.ndarray] | None:
    """(M, t) with ``T(x) = M x + t`` when ``transform`` is linear, else None.

    Read by probing the transform at the origin and the unit points, which is exact for
    every ITK linear transform (affine, Euler, similarity, versor, translation, composites
    of those) whatever its centre or parameterisation.
    """
    if transform is None:
        return np.eye(3), np.zeros(3)
    try:
        linear = bool(transform.IsLinear())
    except AttributeError:
        return None
    if not linear:
        return None
    t = np.asarray(transform.TransformPoint([0.0, 0.0, 0.0]), dtype=np.float64)
    m = np.empty((3, 3))
    for axis in range(3):
        e = [0.0, 0.0, 0.0]
        e[axis] = 1.0
        m[:, axis] = np.asarray(transform.TransformPoint(e), dtype=np.float64) - t
    return m, t


def linear_displacement(m: np.ndarray, t: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """``(c0, W)`` with ``T(x) - x = c0 + W @ (i, j, k)`` (mm) at the voxels of ``grid`` for
    the linear map ``T(x) = m x + t``: the one closed form of an affine's displacement."""
    delta = m - np.eye(3)
    c0 = delta @ np.asarray(grid.origin) + t
    return c0, delta @ grid.direction_matrix @ np.diag(grid.spacing)


def dense_field_of(transform, grid: Grid, dtype=np.float32) -> np.ndarray:
    """``T(x) - x`` of any ITK transform at the voxels of ``grid``: (Z, Y, X, 3) LPS mm.

    Linear transforms in closed form (float64 arithmetic); others through ITK's
    TransformToDisplacementFieldFilter.
    """
    parts = linear_parts(transform)
    if parts is not None:
        c0, w = linear_displacement(*parts, grid)
        k, j, i = (np.arange(n, dtype=np.float64) for n in grid.shape)
        u = (
            c0
            + i[None, None, :, None] * w[:, 0]
            + j[None, :, None, None] * w[:, 1]
            + k[:, None, None, None] * w[:, 2]
        )
        return u.astype(dtype, copy=False)
    reference = itk_classes.image_class("UC").New()
    region = itk_classes.image_region()
    region.SetSize([int(v) for v in grid.size])
    reference.SetRegions(region)
    grid.apply_to(reference)
    filt = itk_classes.transform_to_field_filter().New()
    filt.SetTransform(transform)
    filt.SetUseReferenceImage(True)
    filt.SetReferenceImage(reference)
    filt.Update()
    return np.asarray(itk_classes.array_view_from_image(filt.GetOutput()), dtype=np.float32).copy()


def sample_image(
    image,
    grid: Grid,
    transform=None,
    nearest: bool = False,
    device: torch.device | str = "cpu",
    chunk_planes: int = 32,
    displacement_mm: np.ndarray | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample ``image`` at ``transform(x)`` for the voxel centres ``x`` of ``grid``.

    Unlike ITK's resampler this extrapolates by replicating the image border (so a field of
    view ending inside the body does not create an artificial air edge) and reports which
    samples fall inside the image, so that the data term can ignore the others. Samples on
    a voxel boundary (within ``SAMPLING_SLACK`` voxels) count as inside, and nearest-neighbour
    ties go to the higher index, so that float32 round-off decides nothing (the C++ filter
    computes the same in double precision).

    Args:
        image: 3-D scalar ITK image.
        grid: where to sample (the working grid).
        transform: ITK transform from ``grid`` points to ``image`` points (None = identity).
            Linear transforms are applied in closed form, others via a dense ITK field.
        nearest: nearest-neighbour sampling (labels, masks) with zeros outside the voxel
            extent, instead of trilinear with border replication.
        displacement_mm: instead of ``transform``, a dense ``T(x) - x`` on ``grid``
            ((Z, Y, X, 3) LPS mm), e.g. a displacement field transform's own field.

    Returns:
        values: (Z, Y, X) float32 tensor on ``device``.
        inside: (Z, Y, X) bool tensor: sample within the image's voxel extent.
    """
    src = Grid.of(image)
    volume = torch.from_numpy(
        np.asarray(itk_classes.array_view_from_image(image), dtype=np.float32)
    )
    volume = volume.to(device)[None, None]
    to_index = np.linalg.inv(src.direction_matrix @ np.diag(src.spacing))  # mm -> (i, j, k)
    if displacement_mm is not None:
        parts, dense = None, displacement_mm
    else:
        parts = linear_parts(transform)
        dense = None if parts is not None else dense_field_of(transform, grid)
    m, t = parts if parts is not None else (np.eye(3), np.zeros(3))
    # continuous source index of working voxel (i, j, k): c = Q @ (i, j, k) + q
    q_mat = to_index @ m @ grid.direction_matrix @ np.diag(grid.spacing)
    q_vec = to_index @ (m @ np.asarray(grid.origin) + t - np.asarray(src.origin))
    size = torch.tensor(src.size, dtype=torch.float32, device=device)
    scale = 2.0 / (size - 1).clamp_min(1.0)
    q_mat_t = torch.as_tensor(q_mat, dtype=torch.float32, device=device)
    to_index_t = torch.as_tensor(to_index, dtype=torch.float32, device=device)
    nz, ny, nx = grid.shape
    jj = torch.arange(ny, dtype=torch.float32, device=device).view(1, ny, 1, 1)
    ii = torch.arange(nx, dtype=torch.float32, device=device).view(1, 1, nx, 1)
    values = torch.empty((nz, ny, nx), dtype=torch.float32, device=device)
    inside = torch.empty((nz, ny, nx), dtype=torch.bool, device=device)
    flat_volume = volume.reshape(-1)
    strides = torch.tensor([1, src.size[0], src.size[0] * src.size[1]], device=device)
    for z0 in range(0, nz, chunk_planes):
        z1 = min(nz, z0 + chunk_planes)
        kk = torch.arange(z0, z1, dtype=torch.float32, device=device).view(-1, 1, 1, 1)
        coords = (
            ii * q_mat_t[:, 0]
            + jj * q_mat_t[:, 1]
            + kk * q_mat_t[:, 2]
            + torch.as_tensor(q_vec, dtype=torch.float32, device=device)
        )
        if dense is not None:
            step = torch.from_numpy(np.asarray(dense[z0:z1], dtype=np.float32))
            coords = coords + step.to(device) @ to_index_t.T
        inside[z0:z1] = (
            (coords > -0.5 - SAMPLING_SLACK) & (coords < size - 0.5 + SAMPLING_SLACK)
        ).all(-1)
        if nearest:  # (i, j, k) of the nearest voxel; ties to the higher index
            index = torch.floor(coords + (0.5 + SAMPLING_SLACK)).long()
            valid = ((index >= 0) & (index < size.long())).all(-1)
            offset = (index.clamp_min(0).minimum(size.long() - 1) * strides).sum(-1)
            values[z0:z1] = torch.where(valid, flat_volume[offset], 0.0)
            continue
        normalised = (coords * scale - 1.0).unsqueeze(0)  # (1, z, y, x, 3) in (x, y, z) order
        values[z0:z1] = torch.nn.functional.grid_sample(
            volume, normalised, mode="bilinear", padding_mode="border", align_corners=True
        )[0, 0]
    return values, inside


# ------------------------------------------------------------------------------------------
# fields back to ITK


def index_displacement_matrix(grid: Grid) -> np.ndarray:
    """3x3 matrix taking an (x, y, z) displacement in ``grid`` voxels to LPS mm."""
    return grid.direction_matrix @ np.diag(grid.spacing)


def faces_in(box: Grid, grid: Grid) -> tuple[list[float], list[float]]:
    """The faces of ``box``'s voxel extent in ``grid``'s voxel coordinates.

    Returns (lower, upper) per tensor axis (z, y, x): the continuous index of ``grid`` at
    which ``box``'s outer voxel boundaries lie. The two grids share a direction (the working
    and level grids have the fixed image's).
    """
    corners = (-0.5 * np.ones(3), np.asarray(box.size) - 0.5)
    to_index = np.linalg.inv(grid.direction_matrix @ np.diag(grid.spacing))
    ends = [
        to_index
        @ (
            np.asarray(box.origin)
            + box.direction_matrix @ (c * np.asarray(box.spacing))
            - np.asarray(grid.origin)
        )
        for c in corners
    ]
    lower, upper = np.minimum(*ends), np.maximum(*ends)
    return [float(v) for v in lower[::-1]], [float(v) for v in upper[::-1]]


def level_grid(working: Grid, factor: int) -> Grid:
    """The level grid with spacing ``factor`` x working spacing that tiles ``working``.

    Its voxel ``j`` is centred on working index ``factor * j + (factor - 1) / 2``.
    """
    if factor == 1:
        return working
    shift = working.direction_matrix @ (
        np.full(3, (factor - 1) / 2.0) * np.asarray(working.spacing)
    )
    return Grid(
        size=tuple(-(-n // factor) for n in working.size),
        spacing=tuple(factor * s for s in working.spacing),
        origin=tuple(float(v) for v in np.asarray(working.origin) + shift),
        direction=working.direction,
    )


def field_to_grid(
    field_vox: Tensor,
    working: Grid,
    target: Grid,
    linear_map: np.ndarray | None = None,
    index_affine: tuple[np.ndarray, np.ndarray] | None = None,
    chunk_planes: int = 16,
) -> np.ndarray:
    """Resample a working-grid voxel field onto ``target`` and express it in LPS mm.

    The target must share the working grid's direction (it is the fixed image's grid), so
    the resampling is separable trilinear at exact coordinates (border values replicate).

    Args:
        field_vox: (1, 3, Z, Y, X) voxels of ``working``, channels (z, y, x).
        working: the grid the field lives on (the working grid or one of its level grids).
        target: the output grid.
        linear_map: optional 3x3 applied to the physical displacement (the matrix of an
            affine initial transform A, for ``A(x + u) - x``).
        index_affine: optional (c0 (3,), W (3, 3)) adding ``c0 + W @ (i, j, k)`` in mm per
            target voxel (the ``(A - I) x`` part of that baking).

    Returns:
        float32 array (Z_t, Y_t, X_t, 3) of LPS (x, y, z) mm displacements.
    """
    if not np.allclose(working.direction, target.direction, atol=DIRECTION_TOLERANCE):
        raise ValueError("field_to_grid() needs the target to share the working direction")
    d = working.direction_matrix
    offset = d.T @ (np.asarray(target.origin) - np.asarray(working.origin))  # target index 0
    coords = []
    for axis in (2, 1, 0):  # tensor dims z, y, x <- ITK axes 2, 1, 0
        i = np.arange(target.size[axis], dtype=np.float64)
        pos = (offset[axis] + i * target.spacing[axis]) / working.spacing[axis]
        coords.append(torch.as_tensor(pos, dtype=torch.float32))
    matrix = index_displacement_matrix(working)
    if linear_map is not None:
        matrix = linear_map @ matrix
    # channels come as (z, y, x): reorder the matrix columns instead of the tensor
    m = torch.as_tensor(matrix[:, ::-1].copy(), dtype=torch.float32, device=field_vox.device)
    zt, yt, xt = target.shape
    out = np.empty((zt, yt, xt, 3), dtype=np.float32)
    partial = linear_along(linear_along(field_vox, 3, coords[1]), 4, coords[2])
    for z0 in range(0, zt, chunk_planes):
        z1 = min(zt, z0 + chunk_planes)
        slab = linear_along(partial, 2, coords[0][z0:z1])[0]  # (3, z, y, x)
        phys = torch.einsum("ij,jzyx->zyxi", m, slab)
        if index_affine is not None:
            c0, w = (torch.as_tensor(v, dtype=torch.float32) for v in index_affine)
            kk = torch.arange(z0, z1, dtype=torch.float32).view(-1, 1, 1, 1)
            jj = torch.arange(yt, dtype=torch.float32).view(1, -1, 1, 1)
            ii = torch.arange(xt, dtype=torch.float32).view(1, 1, -1, 1)
            phys = phys.cpu() + c0 + ii * w[:, 0] + jj * w[:, 1] + kk * w[:, 2]
        out[z0:z1] = phys.cpu().numpy()
    return out


def _code(pixel) -> str:
    """A pixel code ("F", "D", "SS"...) from a code or an ``itk.F``-style type."""
    if isinstance(pixel, str):
        return pixel
    for code in itk_classes.PIXEL_CODES:
        if pixel is getattr(itk, code):
            return code
    raise TypeError(f"pixel type {pixel} is not one of {itk_classes.PIXEL_CODES}")


def vector_image(array_zyx3: np.ndarray, grid: Grid, pixel="F"):
    """An ITK-owned ``Image[Vector[pixel, 3], 3]`` on ``grid`` holding a copy of the array.

    ``pixel``: ``"F"`` or ``"D"`` (or ``itk.F`` / ``itk.D``).
    """
    if tuple(array_zyx3.shape) != (*grid.shape, 3):
        raise ValueError(f"array shape {array_zyx3.shape} does not match grid {grid.shape}")
    image = itk_classes.image_class(_code(pixel), 3).New()
    region = itk_classes.image_region()
    region.SetSize([int(v) for v in grid.size])
    image.SetRegions(region)
    grid.apply_to(image)
    image.Allocate()
    itk_classes.array_view_from_image(image)[:] = array_zyx3
    return image


def scalar_image(array_zyx: np.ndarray, grid: Grid, pixel="F"):
    """An ITK-owned scalar image on ``grid`` holding a copy of the array (``pixel``: a code
    such as ``"F"``, ``"SS"``, ``"UC"``, or an ``itk.F``-style type)."""
    image = itk_classes.image_class(_code(pixel)).New()
    region = itk_classes.image_region()
    region.SetSize([int(v) for v in grid.size])
    image.SetRegions(region)
    grid.apply_to(image)
    image.Allocate()
    itk_classes.array_view_from_image(image)[:] = array_zyx
    return image
