"""A simulated inhale/exhale lung pair with a known, physiologically shaped deformation.

The thoracic CT in ``../shared/data`` is a single scan, so TRE cannot be measured on it
directly. This module turns it into a pair with an exact truth:

* ``moving`` is the source scan itself (exhale-like);
* ``fixed(x) = source(x + u(x))`` (inhale-like) on a sub-grid of the source grid, with the
  known displacement ``u`` (LPS mm, fixed grid), so ``T(x) = x + u(x)`` maps fixed points to
  moving points exactly as ITK registration transforms do.

The deformation ``u`` (all numbers are defaults of :class:`SimulationParameters`):

* Lung mask of the source: HU < -400, one binary opening, connected components whose
  median HU is above -950 (ambient air, trachea and bowel gas are about -1000) and at least
  10 % of the largest one, two closings, holes filled per axial slice (scipy.ndimage).
* Inside the lungs: superior-inferior (SI) motion of the diaphragm. The fixed image is the
  inhaled state, so moving points lie superior (+z): ``u_z = a(x, y) s(z)`` with ``a`` the
  amplitude map over the lung's axial footprint (at most ``diaphragm_mm`` = 20 mm, larger
  posteriorly, seeded smooth modulation) and ``s`` = 1 at and below the lung base of that
  column, decaying linearly (smoothed) to 0 at a virtual apex ``apex_margin_mm`` above the
  highest lung voxel (the scan is cropped below the apex).
* Everywhere: a smaller anterior-posterior (AP) chest-wall expansion: ``u_y`` from ``B`` mm
  (posterior, i.e. the exhaled chest wall moves back) at the anterior edge of the field of
  view to 0 at its posterior edge; ``B`` is seeded in ``ap_range_mm``.
* Outside the lungs: the same SI motion, scaled by a "core" weight of the axial column (1
  deep inside the lung's axial footprint, 0 at its edge and beyond) and, below the lung
  base of the column, fading downwards (``exp(-depth / abdomen_decay_mm)``). So under the
  diaphragm domes the liver follows the lung base (the normal motion is continuous there,
  and the diaphragm moves in the image), masses and mediastinum enclosed by lung move with
  it, while the chest wall at the footprint's edge does not move with the lung: the
  tangential (SI) component jumps across the lateral, anterior and posterior lung surfaces
  (sliding).
* Each region's field is defined on the whole grid and Gaussian-smoothed separately, then
  the field of the region a voxel belongs to is used. The regions are those of the *fixed*
  image: the lung region is iterated to ``{x : x + u(x) in source lung}``. Both fields
  have ``u_x = 0``, ``u_y`` a function of y and ``d u_z / d z > -1``, so their Jacobian
  determinants are positive by construction (and checked).
* The fixed grid is the source grid cropped so that every ``x + u(x)`` lies inside the
  source scan (so the whole truth is observable); the fixed image is sampled with cubic
  B-spline interpolation.

Landmarks: ``n_landmarks`` fixed voxel centres inside the fixed lungs (at least 4 mm from
their surface) on distinctive structure (top 20 % of the local intensity standard deviation),
picked in seeded random order at least ``landmark_spacing_mm`` apart; their moving positions
are ``x + u(x)`` exactly. Written as two landmark files in the package's convention
(``fixed_landmarks.csv``, ``moving_landmarks.csv``: ``x,y,z`` LPS mm, row ``i`` matches), so
``samconvex register``/``evaluate`` read them as they are.

CLI::

    python benchmarks/simulated_lung.py --out results/simulated_lung [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from common import DEFAULT_DATA

logger = logging.getLogger("benchmark.simulated_lung")

DEFAULT_SOURCE = DEFAULT_DATA / "unlabeled" / "ibsi_pat1_lung_ct.nii.gz"


@dataclass(frozen=True)
class SimulationParameters:
    """Shape of the simulated breathing deformation (lengths in mm)."""

    diaphragm_mm: float = 20.0  # largest SI displacement (at the lung base)
    apex_margin_mm: float = 40.0  # SI motion reaches 0 this far above the highest lung voxel
    abdomen_decay_mm: float = 50.0  # decay length of the carried-over motion outside the lungs
    ap_range_mm: tuple[float, float] = (4.0, 6.0)  # seeded AP expansion at the anterior edge
    amplitude_variation: float = 0.15  # seeded relative modulation of the amplitude map
    smoothing_mm: float = 4.0  # Gaussian sigma applied to each region's field
    partition_iterations: int = 3
    n_landmarks: int = 300
    landmark_spacing_mm: float = 8.0
    landmark_margin_mm: float = 4.0  # landmarks at least this deep inside the fixed lungs


@dataclass
class SimulatedLungPair:
    """A simulated pair and its truth.

    Attributes:
        fixed: inhale-like ``itk.Image[itk.F, 3]`` (HU) on the cropped fixed grid.
        moving: the source scan as ``itk.Image[itk.F, 3]`` (HU).
        fixed_labels, moving_labels: ``itk.Image[itk.UC, 3]`` lung masks (label 1); the
            fixed one is the source lung mask pulled back through ``x + u(x)``.
        truth: (Z, Y, X, 3) float32 ``u`` in LPS mm on the fixed grid:
            ``fixed(x) = moving(x + u(x))``.
        body_mask: (Z, Y, X) bool on the fixed grid: inside the patient (lungs included).
        lung_region: (Z, Y, X) bool on the fixed grid: voxels moving with the lung field
            (equal to the fixed lung mask except at a few boundary voxels where the sliding
            motion leaves no consistent choice).
        fixed_points, moving_points: (N, 3) landmark pairs, LPS mm.
        info: parameters, seed and checks (JSON-ready).
    """

    fixed: Any
    moving: Any
    fixed_labels: Any
    moving_labels: Any
    truth: np.ndarray
    body_mask: np.ndarray
    lung_region: np.ndarray
    fixed_points: np.ndarray
    moving_points: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- masks


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Binary hole filling in every axial slice (array axis 0)."""
    return np.stack([ndimage.binary_fill_holes(plane) for plane in mask])


def lung_and_body_masks(hu: np.ndarray, voxel_ml: float) -> tuple[np.ndarray, np.ndarray]:
    """Lung and body masks of a CT array (z, y, x) in HU; see the module docstring.

    Returns:
        lung: bool (Z, Y, X). body: bool (Z, Y, X), everything but the ambient air (the
        large air components with a median below -950 HU that touch the array border).
    """
    air = ndimage.binary_opening(hu < -400.0, iterations=1)
    labels, count = ndimage.label(air)
    if count == 0:
        raise ValueError("no voxel below -400 HU: is this a CT of the chest in HU?")
    ids = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(air, labels, ids)
    medians = ndimage.median(hu, labels, ids)
    border = np.zeros(count + 1, bool)
    for axis in range(3):
        for index in (0, -1):
            border[np.unique(np.take(labels, index, axis=axis))] = True
    tissue_air = [(i, s) for i, s, m in zip(ids, sizes, medians, strict=True) if m >= -950.0]
    if not tissue_air:
        raise ValueError("no lung-like air component (median HU >= -950) found")
    largest = max(s for _, s in tissue_air)
    keep = [i for i, s in tissue_air if s >= 0.1 * largest and s * voxel_ml >= 5.0]
    lung = ndimage.binary_closing(np.isin(labels, keep), iterations=2, border_value=0)
    lung = _fill_slices(lung | np.isin(labels, keep))
    ambient = np.isin(
        labels, [i for i, m in zip(ids, medians, strict=True) if m < -950.0 and border[i]]
    )
    body = ~ndimage.binary_dilation(ambient, iterations=1)
    return lung, body | lung


# ------------------------------------------------------------------------------- fields


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _soft_clip01(t: np.ndarray, width: float = 0.05) -> np.ndarray:
    """A smooth version of clip(t, 0, 1) (softplus corners of the given width)."""
    low = width * np.logaddexp(0.0, t / width)
    return 1.0 - width * np.logaddexp(0.0, (1.0 - low) / width)


@dataclass
class _Geometry:
    spacing_zyx: np.ndarray  # mm per array axis (z, y, x)
    x: np.ndarray  # physical coordinate of each array index, per axis (LPS mm)
    y: np.ndarray
    z: np.ndarray


def _lung_shape_maps(
    lung: np.ndarray, geo: _Geometry, params: SimulationParameters, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per axial column (Y, X): lung base height (mm), lung amplitude (mm), outside amplitude.

    Also returns the virtual apex height (mm). The outside amplitude is the lung amplitude
    times a "core" weight that is 1 deep inside the lung's axial footprint (under the domes,
    the mediastinum and masses enclosed by lung) and 0 at and beyond its edge (chest wall).
    """
    has = lung.any(axis=0)
    if not has.any():
        raise ValueError("the lung mask is empty")
    first = np.argmax(lung, axis=0)  # lowest (most inferior) lung index per column
    base = geo.z[first]
    # extend the base height to columns without lung (nearest column), then smooth
    _, (iy, ix) = ndimage.distance_transform_edt(
        ~has, sampling=geo.spacing_zyx[1:], return_indices=True
    )
    base = ndimage.gaussian_filter(base[iy, ix], 10.0 / geo.spacing_zyx[1:], mode="nearest")
    footprint = ndimage.gaussian_filter(
        has.astype(np.float64), 15.0 / geo.spacing_zyx[1:], mode="nearest"
    )
    weight = _smoothstep((footprint - 0.1) / 0.5)
    core = _smoothstep((footprint - 0.5) / 0.4)
    span = geo.y[-1] - geo.y[0]
    posterior = 0.75 + 0.25 * (geo.y - geo.y[0]) / span  # y increases posteriorly (LPS)
    noise = ndimage.gaussian_filter(
        rng.standard_normal(has.shape), 30.0 / geo.spacing_zyx[1:], mode="wrap"
    )
    noise /= max(float(np.abs(noise).max()), 1e-12)
    amplitude = weight * posterior[:, None] * (1.0 + params.amplitude_variation * noise)
    amplitude = np.clip(amplitude, 0.0, None)
    amplitude *= params.diaphragm_mm / float(amplitude[has].max())
    apex = float(geo.z[np.flatnonzero(lung.any(axis=(1, 2)))[-1]]) + params.apex_margin_mm
    return base, amplitude, amplitude * core, apex


def _region_fields(
    base: np.ndarray,
    amplitude: np.ndarray,
    amplitude_out: np.ndarray,
    apex: float,
    ap_mm: float,
    geo: _Geometry,
    params: SimulationParameters,
) -> tuple[np.ndarray, np.ndarray]:
    """(u_in, u_out): each region's field on the whole grid, (Z, Y, X, 3) LPS mm.

    ``u_x = 0``; ``u_y`` (AP) depends on y only and ``u_z`` (SI) has
    ``d u_z / d z >= -diaphragm_mm / (apex - base) > -1``, so
    ``det(I + grad u) = (1 + d u_y/d y)(1 + d u_z/d z) > 0`` for both fields, and Gaussian
    smoothing (an average of shifted copies) keeps that bound.
    """
    z = geo.z[:, None, None]
    height = apex - base[None]
    t = (z - base[None]) / height
    s_in = 1.0 - _soft_clip01(t)  # 1 at and below the base, 0 at the virtual apex
    # outside: like the lung above the base; below it the motion fades downwards
    below = np.exp(np.clip(z - base[None], None, 0.0) / params.abdomen_decay_mm)
    s_out = np.where(z >= base[None], s_in, below * s_in)
    ap = ap_mm * (geo.y[-1] - geo.y) / (geo.y[-1] - geo.y[0])  # posterior at the anterior edge
    shape = (len(geo.z), len(geo.y), len(geo.x))
    u_in = np.zeros((*shape, 3))
    u_in[..., 1] = ap[None, :, None]
    u_out = u_in.copy()
    u_in[..., 2] = amplitude[None] * s_in
    u_out[..., 2] = amplitude_out[None] * s_out
    sigma = params.smoothing_mm / geo.spacing_zyx
    for u in (u_in, u_out):
        u[..., 2] = ndimage.gaussian_filter(u[..., 2], sigma, mode="nearest")
    return u_in, u_out


def _source_index(u: np.ndarray, geo: _Geometry) -> np.ndarray:
    """Continuous (z, y, x) source indices of x + u(x) for every voxel, (3, Z, Y, X)."""
    shape = u.shape[:3]
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return np.stack(
        [
            k + u[..., 2] / geo.spacing_zyx[0],
            j + u[..., 1] / geo.spacing_zyx[1],
            i + u[..., 0] / geo.spacing_zyx[2],
        ]
    )


def _crop_box(valid: np.ndarray) -> tuple[slice, slice, slice]:
    """Greedily drop the border plane with the largest share of invalid voxels until none."""
    lo, hi = [0, 0, 0], list(valid.shape)
    while True:
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        bad = ~valid[box]
        if not bad.any():
            return box
        best, share = None, -1.0
        for axis in range(3):
            for side in (0, -1):
                plane = np.take(bad, side, axis=axis)
                if plane.mean() > share:
                    best, share = (axis, side), float(plane.mean())
        axis, side = best
        if side == 0:
            lo[axis] += 1
        else:
            hi[axis] -= 1
        if hi[axis] - lo[axis] < 8:
            raise ValueError("cropping the fixed grid to the observable region left nothing")


def _landmarks(
    fixed_hu: np.ndarray,
    region: np.ndarray,
    geo: _Geometry,
    params: SimulationParameters,
    rng: np.random.Generator,
) -> np.ndarray:
    """Landmark voxel indices (N, 3) in (z, y, x) order on the fixed grid."""
    depth = ndimage.distance_transform_edt(region, sampling=geo.spacing_zyx)
    eligible = depth >= params.landmark_margin_mm
    window = (3, 7, 7)
    mean = ndimage.uniform_filter(fixed_hu, window)
    square = ndimage.uniform_filter(fixed_hu * fixed_hu, window)
    local_std = np.sqrt(np.clip(square - mean * mean, 0.0, None))
    values = local_std[eligible]
    if values.size == 0:
        raise ValueError("no voxel deep enough inside the lungs for landmarks")
    threshold = np.percentile(values, 80.0)
    candidates = np.argwhere(eligible & (local_std >= threshold))
    candidates = candidates[rng.permutation(len(candidates))]
    mm = candidates * geo.spacing_zyx
    chosen: list[int] = []
    chosen_mm = np.empty((0, 3))
    for index, point in enumerate(mm):
        if (
            chosen_mm.size
            and np.min(np.sum((chosen_mm - point) ** 2, axis=1)) < params.landmark_spacing_mm**2
        ):
            continue
        chosen.append(index)
        chosen_mm = np.vstack([chosen_mm, point])
        if len(chosen) == params.n_landmarks:
            break
    return candidates[chosen]


def simulate_lung_pair(
    source, seed: int = 0, params: SimulationParameters | None = None
) -> SimulatedLungPair:
    """Build the simulated pair from a thoracic CT (see the module docstring).

    Args:
        source: thoracic CT, ``itk.Image`` in HU with an axis-aligned identity direction
            (array axes z, y, x = inferior->superior, anterior->posterior, right->left).
        seed: seeds the amplitude modulation, the AP amplitude and the landmark choice.
        params: the deformation's shape; default :class:`SimulationParameters`.

    Returns:
        The :class:`SimulatedLungPair` (fixed on a sub-grid of the source grid).
    """
    import itk

    from itk_samconvex.edge.space import Grid, scalar_image
    from itk_samconvex.metrics import jacobian_determinant

    params = params or SimulationParameters()
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    grid = Grid.of(source)
    if not np.allclose(grid.direction_matrix, np.eye(3), atol=1e-4):
        raise ValueError(
            "simulate_lung_pair needs an identity-direction (axial LPS) source; resample it first"
        )
    hu = np.asarray(itk.array_view_from_image(source), dtype=np.float64)
    spacing_zyx = np.asarray(grid.spacing[::-1], dtype=np.float64)
    geo = _Geometry(
        spacing_zyx, *(grid.origin[a] + grid.spacing[a] * np.arange(grid.size[a]) for a in range(3))
    )
    lung, body = lung_and_body_masks(hu, float(np.prod(spacing_zyx)) / 1000.0)
    base, amplitude, amplitude_out, apex = _lung_shape_maps(lung, geo, params, rng)
    ap_mm = float(rng.uniform(*params.ap_range_mm))

    u_in, u_out = _region_fields(base, amplitude, amplitude_out, apex, ap_mm, geo, params)
    region = lung.copy()
    changed = 0
    for _ in range(params.partition_iterations):
        u = np.where(region[..., None], u_in, u_out)
        target = _source_index(u, geo)
        new_region = ndimage.map_coordinates(
            lung.astype(np.uint8), target, order=0, mode="nearest"
        ).astype(bool)
        changed = int((new_region != region).sum())
        region = new_region
    u = np.where(region[..., None], u_in, u_out)
    target = _source_index(u, geo)
    consistent = ndimage.map_coordinates(
        lung.astype(np.uint8), target, order=0, mode="nearest"
    ).astype(bool)
    mismatch = float(np.sum(consistent != region) / max(int(region.sum()), 1))

    det_in = jacobian_determinant(u_in, grid.spacing)
    det_out = jacobian_determinant(u_out, grid.spacing)
    det_min = (float(det_in[region].min()), float(det_out[~region].min()))
    if min(det_min) <= 0.0:
        raise RuntimeError(f"simulated field folds (min det inside/outside lungs {det_min})")

    upper = np.asarray(hu.shape, dtype=np.float64)[:, None, None, None] - 1.0
    valid = np.all((target >= 0.0) & (target <= upper), axis=0)
    box = _crop_box(valid)
    u_fixed = u[box]
    fixed_hu = ndimage.map_coordinates(
        hu, target[(slice(None), *box)], order=3, mode="nearest"
    ).astype(np.float32)
    body_fixed = ndimage.map_coordinates(
        body.astype(np.uint8), target[(slice(None), *box)], order=0, mode="nearest"
    ).astype(bool)
    region_fixed = region[box]
    lung_fixed = consistent[box]  # the source lung pulled back: the fixed image's lungs
    offset = np.array([box[2].start, box[1].start, box[0].start], dtype=np.float64)
    fixed_grid = Grid(
        size=(box[2].stop - box[2].start, box[1].stop - box[1].start, box[0].stop - box[0].start),
        spacing=grid.spacing,
        origin=tuple(float(v) for v in np.asarray(grid.origin) + offset * np.asarray(grid.spacing)),
        direction=grid.direction,
    )

    fixed_geo = _Geometry(spacing_zyx, geo.x[box[2]], geo.y[box[1]], geo.z[box[0]])
    picks = _landmarks(
        fixed_hu.astype(np.float64), region_fixed & lung_fixed, fixed_geo, params, rng
    )
    fixed_points = np.stack(
        [fixed_geo.x[picks[:, 2]], fixed_geo.y[picks[:, 1]], fixed_geo.z[picks[:, 0]]], axis=1
    )
    moving_points = fixed_points + u_fixed[picks[:, 0], picks[:, 1], picks[:, 2]]

    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    info = {
        "seed": seed,
        "parameters": asdict(params),
        "ap_expansion_mm": ap_mm,
        "virtual_apex_z_mm": apex,
        "max_si_mm": float(u_fixed[..., 2].max()),
        "max_displacement_mm": float(np.linalg.norm(u_fixed, axis=-1).max()),
        "mean_displacement_lung_mm": float(np.linalg.norm(u_fixed, axis=-1)[region_fixed].mean()),
        "min_det_lung_field_in_lungs": det_min[0],
        "min_det_outside_field_outside_lungs": det_min[1],
        "partition_changed_last_iteration_voxels": changed,
        "partition_mismatch_fraction_of_lung": mismatch,
        "crop_zyx": [[s.start, s.stop] for s in box],
        "source_size_xyz": list(grid.size),
        "fixed_size_xyz": list(fixed_grid.size),
        "lung_ml_fixed": float(lung_fixed.sum() * voxel_ml),
        "lung_ml_source": float(lung.sum() * voxel_ml),
        "landmarks": len(picks),
        "landmark_initial_tre_mm": float(
            np.linalg.norm(moving_points - fixed_points, axis=1).mean()
        ),
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "simulated lung pair: %d landmarks, max SI %.1f mm, min det %.3f/%.3f, %.1f s",
        len(picks),
        info["max_si_mm"],
        *det_min,
        info["seconds"],
    )
    return SimulatedLungPair(
        fixed=scalar_image(fixed_hu, fixed_grid, itk.F),
        moving=scalar_image(hu.astype(np.float32), grid, itk.F),
        fixed_labels=scalar_image(lung_fixed.astype(np.uint8), fixed_grid, itk.UC),
        moving_labels=scalar_image(lung.astype(np.uint8), grid, itk.UC),
        truth=u_fixed.astype(np.float32),
        body_mask=body_fixed,
        lung_region=region_fixed,
        fixed_points=fixed_points,
        moving_points=moving_points,
        info=info,
    )


def reversed_pair(pair: SimulatedLungPair, iterations: int = 30) -> SimulatedLungPair:
    """The same motion the other way: fixed = the source scan (exhale-like), moving = the
    simulated inhale-like image.

    The truth is the inverse displacement on the source grid, ``v(y)`` with
    ``y + v(y) = x`` where ``x + u(x) = y``, found by the fixed-point iteration
    ``v <- -u(y + v)`` (trilinear samples of ``u``). Where ``y + v(y)`` leaves the simulated
    image's grid (the source beyond its crop) there is no truth: the body mask excludes it.
    Landmarks swap roles.
    """
    from itk_samconvex.edge.space import Grid, array_view
    from itk_samconvex.metrics import sample_field

    fixed_grid, source_grid = Grid.of(pair.fixed), Grid.of(pair.moving)
    hu = np.asarray(array_view(pair.moving), dtype=np.float64)
    matrix = source_grid.index_to_physical
    k, j, i = np.meshgrid(
        *(np.arange(n, dtype=np.float64) for n in source_grid.shape), indexing="ij"
    )
    points = (np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4) @ matrix.T)[:, :3]
    v = np.zeros_like(points)
    for _ in range(iterations):
        v = -sample_field(
            pair.truth,
            fixed_grid.spacing,
            fixed_grid.origin,
            fixed_grid.direction_matrix,
            points + v,
        )
    # y + v(y) + u(y + v(y)) - y: zero where the inverse is exact
    residual = v + sample_field(
        pair.truth, fixed_grid.spacing, fixed_grid.origin, fixed_grid.direction_matrix, points + v
    )
    inverse = v.reshape(*source_grid.shape, 3).astype(np.float32)
    index = (points + v - np.asarray(fixed_grid.origin)) / np.asarray(fixed_grid.spacing)
    inside = np.all((index > 0) & (index < np.asarray(fixed_grid.size) - 1), axis=1)
    converged = np.linalg.norm(residual, axis=1) < 0.05
    _, body = lung_and_body_masks(hu, float(np.prod(source_grid.spacing)) / 1000.0)
    valid = (inside & converged).reshape(source_grid.shape)
    info = {
        **pair.info,
        "direction": "fixed exhale (source), moving inhale (simulated)",
        "inverse_valid_fraction_of_body": float(valid[body].mean()),
        "inverse_iterations": iterations,
    }
    return SimulatedLungPair(
        fixed=pair.moving,
        moving=pair.fixed,
        fixed_labels=pair.moving_labels,
        moving_labels=pair.fixed_labels,
        truth=inverse,
        body_mask=body & valid,
        lung_region=np.asarray(array_view(pair.moving_labels)) > 0,
        fixed_points=pair.moving_points,
        moving_points=pair.fixed_points,
        info=info,
    )


# ------------------------------------------------------------------------------- files

FILES = {
    "fixed": "fixed.nii.gz",
    "moving": "moving.nii.gz",
    "fixed_labels": "fixed_lungmask.nii.gz",
    "moving_labels": "moving_lungmask.nii.gz",
    "truth": "truth_field.nii.gz",
    "body_mask": "fixed_bodymask.nii.gz",
    "fixed_landmarks": "fixed_landmarks.csv",
    "moving_landmarks": "moving_landmarks.csv",
    "info": "info.json",
}


def write_points_csv(path: Path, points: np.ndarray) -> None:
    """Landmarks in the package's convention (``edge.io.landmarks``): ``x,y,z`` LPS mm per
    line, row ``i`` of the fixed file matching row ``i`` of the moving file."""
    lines = ["x,y,z", *(",".join(f"{v:.17g}" for v in p) for p in points)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_pair(pair: SimulatedLungPair, folder: str | Path) -> Path:
    """Write the pair: images/masks/truth as .nii.gz, the landmark files, info.json."""
    import itk

    from itk_samconvex.edge.space import Grid, scalar_image, vector_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    grid = Grid.of(pair.fixed)
    itk.imwrite(pair.fixed, str(folder / FILES["fixed"]), compression=True)
    itk.imwrite(pair.moving, str(folder / FILES["moving"]), compression=True)
    itk.imwrite(pair.fixed_labels, str(folder / FILES["fixed_labels"]), compression=True)
    itk.imwrite(pair.moving_labels, str(folder / FILES["moving_labels"]), compression=True)
    itk.imwrite(
        vector_image(pair.truth, grid, itk.F), str(folder / FILES["truth"]), compression=True
    )
    itk.imwrite(
        scalar_image(pair.body_mask.astype(np.uint8), grid, itk.UC),
        str(folder / FILES["body_mask"]),
        compression=True,
    )
    write_points_csv(folder / FILES["fixed_landmarks"], pair.fixed_points)
    write_points_csv(folder / FILES["moving_landmarks"], pair.moving_points)
    (folder / FILES["info"]).write_text(json.dumps(pair.info, indent=2) + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="thoracic CT (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--landmarks", type=int, default=SimulationParameters.n_landmarks)
    parser.add_argument("--diaphragm-mm", type=float, default=SimulationParameters.diaphragm_mm)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import itk

    params = SimulationParameters(diaphragm_mm=args.diaphragm_mm, n_landmarks=args.landmarks)
    pair = simulate_lung_pair(itk.imread(str(args.source), itk.F), args.seed, params)
    write_pair(pair, args.out)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
