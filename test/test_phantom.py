"""The analytic phantom pair: consistency with its truth, anatomy, geometry and seeding."""

from __future__ import annotations

import time

import itk
import numpy as np
import pytest

from itk_samconvex.apps.phantom import (
    BODY_CENTRE_MM,
    LABELS,
    PhantomPair,
    breathing_displacement,
    centred_grid,
    grid_points_mm,
    make_phantom_pair,
    organ_labels,
    phantom_hu,
)
from itk_samconvex.edge.space import Grid

SMALL = {"size": (48, 40, 40), "spacing": (6.0, 6.0, 6.0)}


@pytest.fixture(scope="module")
def clean_pair() -> PhantomPair:
    return make_phantom_pair(**SMALL, noise_hu=0.0)


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix about ``axis``."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _random_voxels(grid: Grid, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ITK indices (count, 3) of ``grid`` and their LPS centres (count, 3) in mm."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, np.asarray(grid.size), size=(count, 3))
    homogeneous = np.concatenate([index, np.ones((count, 1))], axis=1)
    return index, (grid.index_to_physical @ homogeneous.T)[:3].T


def _at(image, index: np.ndarray) -> np.ndarray:
    """Voxel values of an ITK image at ITK indices (count, 3)."""
    return itk.array_view_from_image(image)[index[:, 2], index[:, 1], index[:, 0]]


def _assert_consistent(pair: PhantomPair, amplitude_mm: float, count: int = 300) -> None:
    """fixed(x) = phantom(x + u(x)), truth = u, moving(y) = phantom(y), labels likewise."""
    index, x = _random_voxels(pair.fixed_grid, count, seed=1)
    u = breathing_displacement(x, amplitude_mm)
    np.testing.assert_allclose(_at(pair.fixed, index), phantom_hu(x + u), rtol=0, atol=1e-3)
    np.testing.assert_array_equal(_at(pair.fixed_labels, index), organ_labels(x + u))
    truth = pair.truth[index[:, 2], index[:, 1], index[:, 0]]
    np.testing.assert_allclose(truth, u, rtol=0, atol=1e-5)
    index, y = _random_voxels(pair.moving_grid, count, seed=2)
    np.testing.assert_allclose(_at(pair.moving, index), phantom_hu(y), rtol=0, atol=1e-3)
    np.testing.assert_array_equal(_at(pair.moving_labels, index), organ_labels(y))
    # the samples really cover the structures (not just air)
    assert np.ptp(phantom_hu(x + u)) > 500


def test_fixed_is_moving_at_truth(clean_pair: PhantomPair) -> None:
    _assert_consistent(clean_pair, 12.0)
    assert clean_pair.truth.dtype == np.float32
    assert clean_pair.truth.shape == (*clean_pair.fixed_grid.shape, 3)


def test_truth_amplitude(clean_pair: PhantomPair) -> None:
    peak = np.linalg.norm(clean_pair.truth, axis=-1).max()
    assert 0.9 * 12.0 <= peak <= 1.1 * 12.0
    pair = make_phantom_pair(**SMALL, amplitude_mm=5.0, noise_hu=0.0)
    assert 4.5 <= np.linalg.norm(pair.truth, axis=-1).max() <= 5.5
    # mostly superior-inferior, inferior (-z) motion from exhale (fixed) to inhale (moving)
    largest = np.unravel_index(
        np.argmax(np.linalg.norm(clean_pair.truth, axis=-1)), clean_pair.truth.shape[:3]
    )
    assert clean_pair.truth[largest][2] < -0.9 * peak


@pytest.mark.parametrize("amplitude_mm", [12.0, 25.0])
def test_no_folding(amplitude_mm: float) -> None:
    h = 4.0  # mm; the field varies over tens of mm
    axes = [np.arange(-164.0, 164.1, h), np.arange(-124.0, 124.1, h), np.arange(-152.0, 152.1, h)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (x, y, z) ordered axes
    u = breathing_displacement(points.reshape(-1, 3), amplitude_mm).reshape(points.shape)
    jac = np.empty((*points.shape[:3], 3, 3))
    for c in range(3):
        for a, grad in enumerate(np.gradient(u[..., c], h)):
            jac[..., c, a] = grad + (c == a)
    det = np.linalg.det(jac)
    assert det.min() > 0.5
    assert det.max() < 2.0


def test_hounsfield_statistics(clean_pair: PhantomPair) -> None:
    for image, labels in (
        (clean_pair.fixed, clean_pair.fixed_labels),
        (clean_pair.moving, clean_pair.moving_labels),
    ):
        hu = itk.array_view_from_image(image)
        lab = itk.array_view_from_image(labels)
        assert -900 <= hu[lab == 1].mean() <= -750  # lungs
        assert hu[lab == 6].mean() > 300  # spine
        assert 30 <= hu[lab == 2].mean() <= 100  # liver
        corners = hu[:: hu.shape[0] - 1, :: hu.shape[1] - 1, :: hu.shape[2] - 1]
        np.testing.assert_allclose(corners, -1000.0, atol=0.5)
    far = np.array([[0.0, 200.0, 0.0], [-200.0, 0.0, 50.0], [0.0, -150.0, -100.0]])
    np.testing.assert_allclose(phantom_hu(far), -1000.0, atol=1e-3)
    assert np.all(organ_labels(far) == 0)
    # soft tissue, fat and lung structure are present
    inside = phantom_hu(np.array([[0.0, 0.0, -100.0], [0.0, -100.0, 0.0]]))
    assert -20 < inside[0] < 120 and -150 < inside[1] < -50


def test_labels_present_and_moved(clean_pair: PhantomPair) -> None:
    fixed = itk.array_view_from_image(clean_pair.fixed_labels)
    moving = itk.array_view_from_image(clean_pair.moving_labels)
    assert set(np.unique(fixed)) == set(np.unique(moving)) == {0, *LABELS}
    for label in LABELS:
        assert np.count_nonzero(fixed == label) != np.count_nonzero(moving == label), label
    # inhale (moving) lungs are larger than exhale (fixed) lungs
    assert np.count_nonzero(moving == 1) > 1.05 * np.count_nonzero(fixed == 1)


def test_oblique_anisotropic_offset_grids() -> None:
    direction = _rotation((1.0, 2.0, 3.0), 20.0)
    default = centred_grid((40, 34, 24), (4.0, 4.0, 7.0), direction)
    origin = np.add(default.origin, [13.5, -7.25, 21.0])
    pair = make_phantom_pair(
        size=(40, 34, 24),
        spacing=(4.0, 4.0, 7.0),
        direction=direction,
        origin=origin,
        noise_hu=0.0,
        amplitude_mm=9.0,
        moving_size=(30, 30, 30),
        moving_spacing=(5.0, 4.5, 5.5),
        moving_direction=_rotation((0.0, 1.0, 0.0), -15.0).ravel(),
    )
    assert Grid.of(pair.fixed).same_as(pair.fixed_grid)
    assert Grid.of(pair.moving).same_as(pair.moving_grid)
    assert Grid.of(pair.fixed_labels).same_as(pair.fixed_grid)
    np.testing.assert_allclose(pair.fixed_grid.direction_matrix, direction, atol=1e-12)
    np.testing.assert_allclose(pair.fixed_grid.origin, origin, atol=1e-9)
    assert pair.moving_grid.spacing == (5.0, 4.5, 5.5)
    # the moving grid is centred on the fixed grid's centre
    fixed_centre = pair.fixed_grid.index_to_physical @ np.append(
        0.5 * (np.asarray(pair.fixed_grid.size) - 1), 1.0
    )
    moving_centre = pair.moving_grid.index_to_physical @ np.append(
        0.5 * (np.asarray(pair.moving_grid.size) - 1), 1.0
    )
    np.testing.assert_allclose(moving_centre, fixed_centre, atol=1e-9)
    # our voxel centres are ITK's physical points
    points = grid_points_mm(pair.fixed_grid)
    for i, j, k in [(0, 0, 0), (39, 0, 5), (7, 33, 23), (20, 17, 12)]:
        itk_point = pair.fixed.TransformIndexToPhysicalPoint([i, j, k])
        np.testing.assert_allclose(points[k, j, i], list(itk_point), atol=1e-9)
    _assert_consistent(pair, 9.0)


def test_default_pair_is_centred_and_fast() -> None:
    start = time.perf_counter()
    pair = make_phantom_pair()
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0  # about 0.7 s on two cores
    assert pair.fixed_grid.size == (96, 80, 80) and pair.moving_grid is pair.fixed_grid
    centre = pair.fixed_grid.index_to_physical @ np.array([47.5, 39.5, 39.5, 1.0])
    np.testing.assert_allclose(centre[:3], BODY_CENTRE_MM, atol=1e-9)
    assert itk.template(pair.fixed)[1] == (itk.F, 3)
    assert itk.template(pair.fixed_labels)[1] == (itk.UC, 3)


def test_seeds(clean_pair: PhantomPair) -> None:
    a = make_phantom_pair(**SMALL, seed=3)
    b = make_phantom_pair(**SMALL, seed=3)
    c = make_phantom_pair(**SMALL, seed=4)
    for name in ("fixed", "moving"):
        arr_a = itk.array_from_image(getattr(a, name))
        np.testing.assert_array_equal(arr_a, itk.array_from_image(getattr(b, name)))
        assert not np.array_equal(arr_a, itk.array_from_image(getattr(c, name)))
        noise = arr_a - itk.array_from_image(getattr(clean_pair, name))
        assert abs(noise.mean()) < 0.2 and 9.5 < noise.std() < 10.5
    np.testing.assert_array_equal(a.truth, c.truth)
    np.testing.assert_array_equal(
        itk.array_from_image(a.fixed_labels), itk.array_from_image(c.fixed_labels)
    )
    # the two images get independent noise
    noise_f = itk.array_from_image(a.fixed) - itk.array_from_image(clean_pair.fixed)
    noise_m = itk.array_from_image(a.moving) - itk.array_from_image(clean_pair.moving)
    assert abs(np.corrcoef(noise_f.ravel(), noise_m.ravel())[0, 1]) < 0.05


def test_batch_independence() -> None:
    """A point's value does not depend on the other points evaluated with it."""
    rng = np.random.default_rng(7)
    points = rng.uniform([-150, -110, -120], [150, 110, 120], size=(5000, 3))
    together = phantom_hu(points)
    alone = np.array([phantom_hu(p[None])[0] for p in points[:50]])
    np.testing.assert_allclose(alone, together[:50], rtol=0, atol=1e-4)
    np.testing.assert_allclose(phantom_hu(points[::-1])[::-1], together, rtol=0, atol=1e-4)
