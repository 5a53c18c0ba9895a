"""Tests of itk_samconvex.metrics against analytic values and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from itk_samconvex import metrics
from itk_samconvex.errors import InputError
from itk_samconvex.metrics import (
    dice_per_label,
    hd95,
    jacobian_determinant,
    jacobian_stats,
    mean_dice,
    sample_field,
    tre,
    tre_identity,
)

SPACING = (0.7, 0.7, 2.5)  # ITK order (x, y, z), mm
ORIGIN = (-12.3, 45.6, 7.8)  # LPS mm


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(degrees)
    return np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx


DIRECTION = _rotation((1.0, 2.0, 3.0), 25.0)  # oblique: no index axis along a physical axis


def _physical_grid(shape_zyx, spacing, origin, direction) -> np.ndarray:
    """(Z, Y, X, 3) LPS positions (x, y, z) mm of the voxel centres."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape_zyx), indexing="ij")
    index_xyz = np.stack([i, j, k], axis=-1).astype(np.float64)
    a = np.asarray(direction) @ np.diag(spacing)
    return np.asarray(origin) + index_xyz @ a.T


# ---------------------------------------------------------------------------------------------
# Dice
# ---------------------------------------------------------------------------------------------


def test_dice_shifted_cube_and_missing_labels():
    fixed = np.zeros((20, 20, 20), dtype=np.int16)
    warped = np.zeros_like(fixed)
    fixed[5:15, 5:15, 5:15] = 1
    warped[5:15, 5:15, 7:17] = 1  # shifted by 2 voxels along x (last array axis)
    fixed[0:2, 0:2, 0:2] = 3  # label 3 only in the fixed image
    per = dice_per_label(fixed, warped, labels=[1, 2, 3])
    assert per[1] == pytest.approx(2 * 8 * 10 * 10 / (2 * 1000), abs=1e-15)  # 0.8
    assert math.isnan(per[2])  # absent in both: kept as NaN
    assert per[3] == 0.0
    assert mean_dice(per) == pytest.approx(0.4)
    # Default labels: union of the non-zero ids present in either image.
    assert sorted(dice_per_label(fixed, warped)) == [1, 3]


def test_dice_identical_and_mean_of_all_nan():
    labels = np.arange(27).reshape(3, 3, 3) % 4
    assert dice_per_label(labels, labels) == {1: 1.0, 2: 1.0, 3: 1.0}
    assert math.isnan(mean_dice({5: float("nan")}))
    assert math.isnan(mean_dice({}))
    with pytest.raises(InputError):
        dice_per_label(labels, labels[:2])


# ---------------------------------------------------------------------------------------------
# HD95
# ---------------------------------------------------------------------------------------------


def _brute_hd95(a: np.ndarray, b: np.ndarray, spacing_xyz) -> float:
    """Reference: explicit 6-neighbour surfaces and all pairwise distances."""

    def surface(m):
        p = np.pad(m, 1, constant_values=False)
        inside = np.ones_like(m)
        for ax in range(3):
            for s in (-1, 1):
                inside &= np.roll(p, s, axis=ax)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inside) * np.asarray(spacing_xyz)[::-1]

    sa, sb = surface(a), surface(b)
    d = np.linalg.norm(sa[:, None, :] - sb[None, :, :], axis=-1)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


def test_hd95_parallel_planes_anisotropic():
    # Single full-extent slices: every voxel is surface and every distance is k * 2.5 mm.
    k = 3
    fixed = np.zeros((12, 6, 7), dtype=np.uint8)
    warped = np.zeros_like(fixed)
    fixed[2] = 1
    warped[2 + k] = 1
    assert hd95(fixed, warped, SPACING)[1] == pytest.approx(k * 2.5, abs=1e-12)
    # Shifted along x instead: only the x spacing (0.7 mm) matters.
    fixed = np.zeros((6, 6, 12), dtype=np.uint8)
    warped = np.zeros_like(fixed)
    fixed[:, :, 4] = 1
    warped[:, :, 4 + k] = 1
    assert hd95(fixed, warped, SPACING)[1] == pytest.approx(k * 0.7, abs=1e-12)


def test_hd95_shifted_cubes_match_brute_force():
    fixed = np.zeros((10, 12, 11), dtype=np.int32)
    warped = np.zeros_like(fixed)
    fixed[2:6, 3:8, 2:7] = 1
    warped[4:8, 3:8, 2:7] = 1  # shifted by 2 voxels along z (2.5 mm spacing)
    fixed[0:3, 0:4, 6:11] = 2  # touches the array border (border counts as outside)
    warped[0:4, 1:4, 7:11] = 2
    out = hd95(fixed, warped, SPACING)
    for label in (1, 2):
        ref = _brute_hd95(fixed == label, warped == label, SPACING)
        assert out[label] == pytest.approx(ref, abs=1e-9)
    assert out[1] > 0


def test_hd95_label_filling_the_array():
    # The array border counts as outside, so a label covering everything still has a surface.
    fixed = np.ones((4, 5, 6), dtype=np.uint8)
    assert hd95(fixed, fixed, SPACING)[1] == 0.0
    warped = fixed.copy()
    warped[:, :, 4:] = 0
    ref = _brute_hd95(fixed == 1, warped == 1, SPACING)
    assert hd95(fixed, warped, SPACING)[1] == pytest.approx(ref, abs=1e-9)
    assert ref > 0


def test_hd95_identical_and_empty():
    fixed = np.zeros((6, 6, 6), dtype=np.uint8)
    fixed[1:4, 1:4, 1:4] = 1
    fixed[5, 5, 5] = 2
    warped = np.where(fixed == 2, 0, fixed)
    out = hd95(fixed, warped, SPACING, labels=[1, 2, 7])
    assert out[1] == 0.0
    assert math.isnan(out[2]) and math.isnan(out[7])


# ---------------------------------------------------------------------------------------------
# Jacobian
# ---------------------------------------------------------------------------------------------


def test_jacobian_affine_on_oblique_anisotropic_offset_grid():
    m = np.array([[1.10, 0.05, -0.03], [0.02, 0.95, 0.04], [-0.01, 0.03, 1.20]])
    t = np.array([3.0, -1.5, 7.0])
    x = _physical_grid((7, 8, 9), SPACING, ORIGIN, DIRECTION)
    field = x @ (m - np.eye(3)).T + t
    det = jacobian_determinant(field, SPACING, DIRECTION)
    assert det.shape == (7, 8, 9)
    np.testing.assert_allclose(det, np.linalg.det(m), rtol=1e-6)
    # Ignoring the direction (or swapping the spacing order) must give a different answer.
    assert not np.allclose(jacobian_determinant(field, SPACING), np.linalg.det(m), rtol=1e-3)
    assert not np.allclose(
        jacobian_determinant(field, SPACING[::-1], DIRECTION), np.linalg.det(m), rtol=1e-3
    )


def test_jacobian_translation_is_exactly_one():
    field = np.broadcast_to(np.array([1.25, -3.0, 0.5]), (5, 6, 7, 3)).astype(np.float32)
    det = jacobian_determinant(field, SPACING, DIRECTION.ravel())
    assert det.dtype == np.float64
    assert np.array_equal(det, np.ones((5, 6, 7)))


def test_jacobian_matches_reference_and_slabs(monkeypatch):
    rng = np.random.default_rng(0)
    field = rng.normal(scale=0.8, size=(6, 5, 4, 3))
    # Reference on an axis-aligned grid: np.gradient with the spacing, full 3x3 determinant.
    grads = np.gradient(field, *SPACING[::-1], axis=(0, 1, 2))  # d/dz, d/dy, d/dx
    jac = np.stack(grads[::-1], axis=-1) + np.eye(3)  # [..., component, x/y/z derivative]
    ref = np.linalg.det(jac)
    np.testing.assert_allclose(jacobian_determinant(field, SPACING), ref, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(metrics, "_JACOBIAN_SLAB_VOXELS", 1)  # one z plane per slab
    np.testing.assert_allclose(jacobian_determinant(field, SPACING), ref, rtol=1e-12, atol=1e-12)


def test_fold_fraction():
    shape = (8, 6, 5)
    x = _physical_grid(shape, SPACING, ORIGIN, np.eye(3))
    field = np.zeros((*shape, 3))
    field[:3, ..., 0] = -2.0 * x[:3, ..., 0]  # u_x = -2 x in the first 3 of 8 z planes
    det = jacobian_determinant(field, SPACING)
    # Rows y and z of the Jacobian stay (0,1,0), (0,0,1), so det = 1 + du_x/dx exactly.
    np.testing.assert_allclose(det[:3], -1.0, atol=1e-12)
    np.testing.assert_allclose(det[3:], 1.0, atol=1e-12)
    stats = jacobian_stats(det)
    assert stats["percent_nonpositive"] == pytest.approx(100 * 3 / 8)
    assert stats["min"] == pytest.approx(-1.0) and stats["max"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Jacobian statistics
# ---------------------------------------------------------------------------------------------


def test_jacobian_stats_constant_and_hand_made():
    const = jacobian_stats(np.full((4, 4, 4), 1.7))
    assert abs(const["sdlogj"]) < 1e-12 and abs(const["sdlogj_l2r"]) < 1e-12
    assert const["percent_nonpositive"] == 0.0 and const["mean"] == pytest.approx(1.7)

    # det = 1 and e^2: log values 0 and 2 -> population std exactly 1.
    two = jacobian_stats(np.array([1.0, math.exp(2.0)]).reshape(1, 1, 2))
    assert two["sdlogj"] == pytest.approx(1.0, abs=1e-12)
    l2r = abs(math.log(4.0) - math.log(math.exp(2.0) + 3.0)) / 2
    assert two["sdlogj_l2r"] == pytest.approx(l2r, abs=1e-12)
    assert two["sdlogj_l2r"] < two["sdlogj"]

    det = np.array([0.5, 1.0, 2.0, 4.0, -1.0, 0.0]).reshape(1, 2, 3)
    s = jacobian_stats(det)
    assert s["sdlogj"] == pytest.approx(np.std(np.log(np.clip(det, 1e-9, 1e9))), abs=1e-12)
    assert s["sdlogj_l2r"] == pytest.approx(np.std(np.log(det + 3)), abs=1e-12)
    assert s["sdlogj_l2r"] != pytest.approx(s["sdlogj"])
    assert s["percent_nonpositive"] == pytest.approx(100 * 2 / 6)
    assert (s["min"], s["max"]) == (-1.0, 4.0)
    assert s["mean"] == pytest.approx(6.5 / 6)


def test_jacobian_stats_mask_and_crop():
    rng = np.random.default_rng(1)
    det = rng.uniform(-0.5, 2.0, size=(7, 8, 9))
    mask = rng.random(det.shape) > 0.3
    s = jacobian_stats(det, mask=mask, crop=2)
    inner = (slice(2, -2),) * 3
    v = det[inner][mask[inner]]
    assert s["mean"] == pytest.approx(v.mean())
    assert s["min"] == pytest.approx(v.min()) and s["max"] == pytest.approx(v.max())
    assert s["percent_nonpositive"] == pytest.approx(100 * np.mean(v <= 0))
    assert s["sdlogj_l2r"] == pytest.approx(np.log(v + 3).std())
    empty = jacobian_stats(det, mask=np.zeros(det.shape, dtype=bool))
    assert all(math.isnan(x) for x in empty.values())
    with pytest.raises(InputError):
        jacobian_stats(det, crop=4)


# ---------------------------------------------------------------------------------------------
# TRE and field sampling
# ---------------------------------------------------------------------------------------------


def test_tre_known_translation():
    rng = np.random.default_rng(2)
    t = np.array([1.5, -2.0, 3.0])
    fixed = rng.uniform(-50, 50, size=(10, 3))
    moving = fixed + t
    np.testing.assert_allclose(tre(fixed, moving, lambda p: p + t), 0.0, atol=1e-12)
    np.testing.assert_allclose(tre_identity(fixed, moving), math.sqrt(15.25), rtol=1e-12)
    with pytest.raises(InputError):
        tre(fixed, moving[:5], lambda p: p)


def test_sample_field_linear_on_oblique_grid():
    rng = np.random.default_rng(3)
    shape = (6, 7, 8)  # (Z, Y, X)
    b = rng.normal(scale=0.1, size=(3, 3))
    c = np.array([0.3, -4.0, 2.2])
    field = _physical_grid(shape, SPACING, ORIGIN, DIRECTION) @ b.T + c
    index_xyz = rng.uniform(0, 1, size=(50, 3)) * (np.array(shape[::-1]) - 1)
    points = np.asarray(ORIGIN) + index_xyz @ (DIRECTION @ np.diag(SPACING)).T
    got = sample_field(field, SPACING, ORIGIN, DIRECTION, points)
    np.testing.assert_allclose(got, points @ b.T + c, atol=1e-5)

    # Outside the grid the border value is replicated ('nearest').
    beyond = np.asarray(ORIGIN) + DIRECTION @ np.diag(SPACING) @ np.array([-3.0, 2.0, 4.0])
    np.testing.assert_allclose(
        sample_field(field, SPACING, ORIGIN, DIRECTION, beyond[None]),
        field[4, 2, 0][None],
        atol=1e-9,
    )

    # TRE through a field: a constant field is a translation.
    t = np.array([2.0, 1.0, -0.5])
    const = np.broadcast_to(t, (*shape, 3))
    moving = points + t
    err = tre(points, moving, lambda p: p + sample_field(const, SPACING, ORIGIN, DIRECTION, p))
    np.testing.assert_allclose(err, 0.0, atol=1e-12)
