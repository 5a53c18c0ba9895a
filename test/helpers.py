"""Plain helpers shared by the tests (geometry, images, reference point mappings)."""

from __future__ import annotations

import math

import itk
import numpy as np

from itk_samconvex.edge.space import Grid, scalar_image

# An oblique, anisotropic, offset geometry used throughout the physical-space tests.
OBLIQUE_AXIS = (1.0, 2.0, 3.0)
OBLIQUE_DEGREES = 20.0
ANISOTROPIC_SPACING = (0.7, 0.7, 2.5)  # ITK order (x, y, z), mm
OFFSET_ORIGIN = (-31.7, 12.4, 57.3)  # LPS mm


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about ``axis`` (Rodrigues' formula)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    t = math.radians(degrees)
    return np.eye(3) + math.sin(t) * kx + (1.0 - math.cos(t)) * kx @ kx


def make_grid(size, spacing, origin, direction) -> Grid:
    """A Grid from plain sequences (size/spacing in ITK (x, y, z) order)."""
    return Grid(
        size=tuple(int(v) for v in size),
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in np.asarray(direction, dtype=np.float64).ravel()),
    )


def make_image(array_zyx: np.ndarray, grid: Grid, pixel=itk.F):
    """An ITK image of ``pixel`` type holding ``array_zyx`` on ``grid``."""
    if tuple(array_zyx.shape) != grid.shape:
        raise ValueError(f"array shape {array_zyx.shape} does not match grid {grid.shape}")
    return scalar_image(array_zyx, grid, pixel)


def index_to_point(grid: Grid, index_xyz) -> np.ndarray:
    """LPS mm of continuous ITK indices (..., 3) in (x, y, z) order."""
    index_xyz = np.asarray(index_xyz, dtype=np.float64)
    a = grid.index_to_physical
    return index_xyz @ a[:3, :3].T + a[:3, 3]


def point_to_index(grid: Grid, point) -> np.ndarray:
    """Continuous ITK (x, y, z) indices of LPS points (..., 3)."""
    a = grid.index_to_physical
    return (np.asarray(point, dtype=np.float64) - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T


def voxel_points(grid: Grid) -> np.ndarray:
    """(Z, Y, X, 3) LPS mm of every voxel centre of ``grid``."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    return index_to_point(grid, np.stack([i, j, k], axis=-1))


def transform_point(transform, point) -> np.ndarray:
    """``transform.TransformPoint`` as a float64 numpy vector."""
    return np.asarray(transform.TransformPoint([float(v) for v in point]), dtype=np.float64)
