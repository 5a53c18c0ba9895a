"""Tests of itk_samconvex.edge.space on oblique, anisotropic, offset geometries."""

from __future__ import annotations

import itertools

import itk
import numpy as np
import pytest
import torch

from helpers import (
    index_to_point,
    make_grid,
    make_image,
    point_to_index,
    rotation,
    voxel_points,
)
from itk_samconvex.edge.space import (
    SAMPLING_SLACK,
    Grid,
    check_image,
    check_mask,
    field_to_grid,
    foreground_box,
    index_displacement_matrix,
    level_grid,
    sample_image,
    vector_image,
    working_grid,
)
from itk_samconvex.errors import InputError

COEFFS = np.array([0.31, -0.27, 0.43])  # f(p) = COEFFS . p + OFFSET, p in LPS mm
OFFSET = 12.5


def _linear_values(points: np.ndarray) -> np.ndarray:
    return points @ COEFFS + OFFSET


def _linear_image(grid: Grid):
    return make_image(_linear_values(voxel_points(grid)).astype(np.float32), grid)


def _in_extent(index_xyz: np.ndarray, size) -> np.ndarray:
    """Mask of continuous indices within the voxel extent [-0.5, size - 0.5] on every axis,
    widened by ``SAMPLING_SLACK`` voxels as ``sample_image`` does."""
    upper = np.asarray(size, dtype=np.float64) - 0.5 + SAMPLING_SLACK
    return np.all((index_xyz > -0.5 - SAMPLING_SLACK) & (index_xyz < upper), axis=-1)


def _inside(index_xyz: np.ndarray, size, margin: float = 1e-6) -> np.ndarray:
    """Mask of continuous indices within [0, size-1] on every axis (linear interpolation)."""
    upper = np.asarray(size, dtype=np.float64) - 1
    return np.all((index_xyz >= -margin) & (index_xyz <= upper + margin), axis=-1)


# ---------------------------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------------------------


def test_grid_of_reads_image_geometry(oblique_grid):
    direction = oblique_grid.direction_matrix
    image = itk.image_from_array(np.zeros(oblique_grid.shape, dtype=np.float32))
    image.SetSpacing([0.7, 0.7, 2.5])
    image.SetOrigin([-31.7, 12.4, 57.3])
    image.SetDirection(itk.matrix_from_array(direction.copy()))
    grid = Grid.of(image)
    assert grid.size == (24, 20, 12)
    assert grid.shape == (12, 20, 24)
    assert grid.spacing == pytest.approx((0.7, 0.7, 2.5), abs=1e-12)
    assert grid.origin == pytest.approx((-31.7, 12.4, 57.3), abs=1e-12)
    np.testing.assert_allclose(grid.direction_matrix, direction, rtol=0, atol=1e-12)
    assert grid.num_voxels == 24 * 20 * 12
    # index_to_physical agrees with ITK's own TransformIndexToPhysicalPoint
    for index in [(0, 0, 0), (23, 0, 5), (7, 19, 11)]:
        itk_point = np.asarray(image.TransformIndexToPhysicalPoint(index))
        ours = grid.index_to_physical @ np.array([*index, 1.0])
        np.testing.assert_allclose(ours[:3], itk_point, rtol=0, atol=1e-9)


def test_grid_apply_to_round_trip(oblique_grid):
    image = make_image(np.zeros(oblique_grid.shape, dtype=np.float32), oblique_grid)
    assert Grid.of(image).same_as(oblique_grid)
    np.testing.assert_allclose(
        np.asarray(image.TransformIndexToPhysicalPoint((3, 4, 5))),
        index_to_point(oblique_grid, (3, 4, 5)),
        rtol=0,
        atol=1e-9,
    )


def test_grid_same_as_tolerances(oblique_grid):
    g = oblique_grid
    tol = 1e-6 * 2.5  # ITK coordinate tolerance relative to the (largest) spacing
    near_origin = make_grid(
        g.size, g.spacing, np.add(g.origin, [0.4 * tol, -0.4 * tol, 0]), g.direction_matrix
    )
    far_origin = make_grid(g.size, g.spacing, np.add(g.origin, [0, 3 * tol, 0]), g.direction_matrix)
    assert g.same_as(near_origin)
    assert not g.same_as(far_origin)
    near_spacing = make_grid(
        g.size, np.add(g.spacing, [0, 0, 0.5 * tol]), g.origin, g.direction_matrix
    )
    far_spacing = make_grid(
        g.size, np.add(g.spacing, [0, 0, 4 * tol]), g.origin, g.direction_matrix
    )
    assert g.same_as(near_spacing)
    assert not g.same_as(far_spacing)
    near_dir = make_grid(g.size, g.spacing, g.origin, g.direction_matrix + 5e-7)
    far_dir = make_grid(g.size, g.spacing, g.origin, rotation((0, 0, 1), 1e-3) @ g.direction_matrix)
    assert g.same_as(near_dir)
    assert not g.same_as(far_dir)
    other_size = make_grid((24, 20, 13), g.spacing, g.origin, g.direction_matrix)
    assert not g.same_as(other_size)


# ---------------------------------------------------------------------------------------------
# working grid, level grid, foreground box
# ---------------------------------------------------------------------------------------------


def _extent_corners(grid: Grid) -> np.ndarray:
    """LPS mm of the 8 outer corners of the voxel extent (indices -0.5 and size-0.5)."""
    bounds = [(-0.5, n - 0.5) for n in grid.size]
    return index_to_point(grid, np.array(list(itertools.product(*bounds))))


def _centre(grid: Grid) -> np.ndarray:
    return index_to_point(grid, (np.asarray(grid.size) - 1) / 2.0)


@pytest.mark.parametrize(
    ("spacing", "multiple", "size"),
    [(2.0, 4, (12, 8, 16)), (2.0, 8, (16, 8, 16)), (1.1, 2, (16, 14, 28))],
)
def test_working_grid_geometry(oblique_grid, spacing, multiple, size):
    # extent of the fixed voxels: (24*0.7, 20*0.7, 12*2.5) = (16.8, 14, 30) mm
    w = working_grid(oblique_grid, spacing, multiple)
    assert w.size == size
    assert all(n % multiple == 0 for n in w.size)
    assert w.spacing == (spacing, spacing, spacing)
    np.testing.assert_allclose(w.direction_matrix, oblique_grid.direction_matrix, atol=1e-15)
    np.testing.assert_allclose(_centre(w), _centre(oblique_grid), rtol=0, atol=1e-9)
    corners = point_to_index(w, _extent_corners(oblique_grid))
    assert np.all(corners >= -0.5 - 1e-9)
    assert np.all(corners <= np.asarray(w.size) - 0.5 + 1e-9)


def test_working_grid_on_a_box(oblique_grid):
    low = np.array([2.0, 3.0, 4.5])
    high = np.array([9.0, 8.0, 21.0])  # mm from the fixed origin along its index axes
    w = working_grid(oblique_grid, 1.5, 4, box_mm=(low, high))
    # extents (7, 5, 16.5) / 1.5 -> ceil (5, 4, 11) -> multiples of 4 (8, 4, 12)
    assert w.size == (8, 4, 12)
    box_centre = np.asarray(oblique_grid.origin) + oblique_grid.direction_matrix @ (
        0.5 * (low + high)
    )
    np.testing.assert_allclose(_centre(w), box_centre, rtol=0, atol=1e-9)
    # the box corners are inside the working extent
    d = oblique_grid.direction_matrix
    for corner in itertools.product(*zip(low, high, strict=True)):
        p = np.asarray(oblique_grid.origin) + d @ np.asarray(corner)
        idx = point_to_index(w, p)
        assert np.all(idx >= -0.5 - 1e-9)
        assert np.all(idx <= np.asarray(w.size) - 0.5 + 1e-9)


@pytest.mark.parametrize("factor", [2, 4])
def test_level_grid_centres(oblique_grid, factor):
    w = working_grid(oblique_grid, 1.25, 4)
    lv = level_grid(w, factor)
    assert lv.size == tuple(-(-n // factor) for n in w.size)
    assert lv.spacing == pytest.approx(tuple(factor * 1.25 for _ in range(3)))
    assert lv.direction == w.direction
    for j in [(0, 0, 0), (1, 2, 3), tuple(n - 1 for n in lv.size)]:
        working_index = factor * np.asarray(j) + (factor - 1) / 2.0
        np.testing.assert_allclose(
            index_to_point(lv, j), index_to_point(w, working_index), rtol=0, atol=1e-9
        )
    assert level_grid(w, 1) is w


def test_foreground_box_finds_a_block(oblique_grid):
    values = np.zeros(oblique_grid.shape, dtype=np.float32)
    values[3:7, 5:9, 10:15] = 100.0  # z 3..6, y 5..8, x 10..14
    image = make_image(values, oblique_grid)
    low, high = foreground_box(image, oblique_grid, threshold=50.0, margin_mm=1.0)
    np.testing.assert_allclose(low, [9.5 * 0.7 - 1, 4.5 * 0.7 - 1, 2.5 * 2.5 - 1], atol=1e-12)
    np.testing.assert_allclose(high, [14.5 * 0.7 + 1, 8.5 * 0.7 + 1, 6.5 * 2.5 + 1], atol=1e-12)


def test_foreground_box_is_clipped_and_none_when_empty(oblique_grid):
    values = np.zeros(oblique_grid.shape, dtype=np.float32)
    values[0:2, 18:20, 0:3] = 1.0  # touches the low z, high y and low x borders
    image = make_image(values, oblique_grid)
    low, high = foreground_box(image, oblique_grid, threshold=0.5, margin_mm=5.0)
    np.testing.assert_allclose(low, [-0.35, 17.5 * 0.7 - 5, -1.25], atol=1e-12)
    np.testing.assert_allclose(high, [2.5 * 0.7 + 5, 19.5 * 0.7, 1.5 * 2.5 + 5], atol=1e-12)
    assert foreground_box(image, oblique_grid, threshold=1.0, margin_mm=5.0) is None


# ---------------------------------------------------------------------------------------------
# resampling onto a grid
# ---------------------------------------------------------------------------------------------


def test_sample_image_reproduces_a_linear_function(oblique_grid):
    image = _linear_image(oblique_grid)
    w = working_grid(oblique_grid, 1.0, 4)
    values, inside = sample_image(image, w)
    assert values.shape == w.shape and values.dtype == torch.float32
    points = voxel_points(w)
    index = point_to_index(oblique_grid, points)
    expected_inside = _inside(index, oblique_grid.size)
    assert expected_inside.sum() > 500
    np.testing.assert_array_equal(inside.numpy(), _in_extent(index, oblique_grid.size))
    np.testing.assert_allclose(
        values.numpy()[expected_inside], _linear_values(points[expected_inside]), rtol=0, atol=1e-3
    )
    # outside: the border value is replicated (nearest in-image index), not a default
    outside = ~expected_inside
    assert outside.sum() > 100
    clamped = np.clip(index[outside], 0, np.asarray(oblique_grid.size) - 1)
    np.testing.assert_allclose(
        values.numpy()[outside], _linear_values(index_to_point(oblique_grid, clamped)), atol=2e-3
    )


def test_sample_image_through_a_transform(oblique_grid):
    image = _linear_image(oblique_grid)
    w = working_grid(oblique_grid, 1.0, 4)
    transform = itk.Euler3DTransform[itk.D].New()
    transform.SetCenter([float(v) for v in index_to_point(oblique_grid, (12, 10, 6))])
    transform.SetRotation(0.05, -0.08, 0.1)
    transform.SetTranslation([1.3, -0.9, 2.1])
    values, inside = sample_image(image, w, transform=transform)
    points = voxel_points(w)
    m = itk.array_from_matrix(transform.GetMatrix())
    offset = np.asarray(transform.GetOffset())
    mapped = points @ m.T + offset
    for idx in [(0, 0, 0), (5, 7, 9)]:
        np.testing.assert_allclose(
            mapped[idx], np.asarray(transform.TransformPoint(points[idx])), atol=1e-9
        )
    index = point_to_index(oblique_grid, mapped)
    expected_inside = _inside(index, oblique_grid.size)
    assert expected_inside.sum() > 500
    np.testing.assert_array_equal(inside.numpy(), _in_extent(index, oblique_grid.size))
    np.testing.assert_allclose(
        values.numpy()[expected_inside], _linear_values(mapped[expected_inside]), rtol=0, atol=1e-3
    )


def test_sample_image_through_a_non_linear_transform(oblique_grid):
    """A displacement-field transform goes through the dense ITK path."""
    image = _linear_image(oblique_grid)
    w = working_grid(oblique_grid, 1.0, 4)
    shift = np.array([0.8, -0.6, 1.1])
    field = np.broadcast_to(shift, (*w.shape, 3)).astype(np.float64)
    transform = itk.DisplacementFieldTransform[itk.D, 3].New()
    transform.SetDisplacementField(vector_image(field, w, itk.D))
    values, inside = sample_image(image, w, transform=transform)
    mapped = voxel_points(w) + shift
    index = point_to_index(oblique_grid, mapped)
    expected_inside = _inside(index, oblique_grid.size)
    assert expected_inside.sum() > 500
    np.testing.assert_array_equal(inside.numpy(), _in_extent(index, oblique_grid.size))
    np.testing.assert_allclose(
        values.numpy()[expected_inside], _linear_values(mapped[expected_inside]), rtol=0, atol=2e-3
    )


def _label_image(grid: Grid, pixel=itk.UC):
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[2:6, 4:12, 5:15] = 3
    labels[6:10, 8:16, 10:20] = 7
    return labels, make_image(labels, grid, pixel)


@pytest.mark.parametrize("pixel", [itk.UC, itk.SS, itk.F], ids=["UC", "SS", "F"])
def test_sample_image_nearest_keeps_labels(oblique_grid, pixel):
    labels, image = _label_image(oblique_grid, pixel)
    w = working_grid(oblique_grid, 0.9, 2)
    values, _ = sample_image(image, w, nearest=True)
    out = values.numpy()
    assert set(np.unique(out).tolist()) == {0.0, 3.0, 7.0}
    index = point_to_index(oblique_grid, voxel_points(w))
    frac = np.abs(index - np.round(index))
    clear = _inside(index, oblique_grid.size) & np.all(frac < 0.45, axis=-1)
    assert clear.sum() > 200
    rounded = np.round(index[clear]).astype(int)
    expected = labels[rounded[:, 2], rounded[:, 1], rounded[:, 0]]
    np.testing.assert_array_equal(out[clear], expected.astype(np.float32))
    # outside the image nearest sampling gives 0, linear sampling interpolates labels
    assert np.all(out[~_inside(index, oblique_grid.size)] == 0)
    linear = sample_image(image, w)[0].numpy()
    assert np.any((linear > 0.01) & (linear < 2.99))


def test_sample_image_boundary_ties_are_decided_by_geometry_not_round_off():
    """2 mm working voxels on 3 mm slices land exactly on voxel boundaries and half indices.

    Those samples count as inside and nearest-neighbour ties go to the higher index, however
    float32 round-off falls (the C++ filter, in double precision, decides them the same way).
    """
    src = make_grid((4, 4, 6), (1.0, 1.0, 3.0), (10.0, -20.0, 30.0), np.eye(3))
    labels = np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((6, 4, 4), np.uint8)
    image = make_image(labels, src, itk.UC)
    # working z centres at slice indices -0.5, 1/6, 5/6, 1.5, ..., 5.5 (exact ties)
    work = make_grid((4, 4, 10), (1.0, 1.0, 2.0), (10.0, -20.0, 28.5), np.eye(3))
    values, inside = sample_image(image, work, nearest=True)
    k = (np.arange(10) * 2.0 - 1.5) / 3.0
    expected_inside = (k >= -0.5) & (k <= 5.5)
    np.testing.assert_array_equal(inside.numpy()[:, 0, 0], expected_inside)
    expected = np.where(k + 0.5 < 6, np.floor(k + 0.5 + 1e-9), 0)  # ties up, 0 beyond 5.5
    np.testing.assert_array_equal(values.numpy()[:, 0, 0], expected.astype(np.float32))
    assert values.numpy()[0, 0, 0] == 0.0 and values.numpy()[3, 0, 0] == 2.0  # -0.5 -> 0, 1.5 -> 2


def test_sample_image_on_its_own_grid_is_exact(oblique_grid):
    labels, image = _label_image(oblique_grid, itk.UC)
    values, inside = sample_image(image, oblique_grid, nearest=True)
    assert bool(inside.all())
    np.testing.assert_array_equal(values.numpy(), labels.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# fields back to ITK
# ---------------------------------------------------------------------------------------------


def test_index_displacement_matrix(oblique_grid):
    m = index_displacement_matrix(oblique_grid)
    for index in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2.0, -1.5, 0.5)]:
        expected = index_to_point(oblique_grid, index) - index_to_point(oblique_grid, (0, 0, 0))
        np.testing.assert_allclose(m @ np.asarray(index), expected, rtol=0, atol=1e-12)


def test_field_to_grid_constant_field_in_mm(oblique_grid):
    w = working_grid(oblique_grid, 1.5, 4)
    vox_zyx = (0.5, -1.25, 2.0)
    field = torch.tensor(vox_zyx).view(1, 3, 1, 1, 1).expand(1, 3, *w.shape).contiguous()
    out = field_to_grid(field, w, oblique_grid, chunk_planes=5)
    assert out.shape == (*oblique_grid.shape, 3)
    assert out.dtype == np.float32
    expected = oblique_grid.direction_matrix @ np.diag([1.5] * 3) @ np.array([2.0, -1.25, 0.5])
    np.testing.assert_allclose(
        out.reshape(-1, 3), np.broadcast_to(expected, (out.size // 3, 3)), rtol=0, atol=1e-5
    )


def test_field_to_grid_linear_field_is_sampled_at_target_voxels(oblique_grid):
    w = working_grid(oblique_grid, 1.5, 4)
    k, j, i = np.meshgrid(*(np.arange(n) for n in w.shape), indexing="ij")
    # channels (z, y, x) in working voxels, linear in the working index (i, j, k)
    cz = 0.02 * i - 0.03 * j + 0.05 * k + 0.1
    cy = -0.04 * i + 0.01 * j + 0.02 * k - 0.3
    cx = 0.03 * i + 0.02 * j - 0.01 * k + 0.2
    field = torch.as_tensor(np.stack([cz, cy, cx])[None], dtype=torch.float32)
    out = field_to_grid(field, w, oblique_grid)
    idx = point_to_index(w, voxel_points(oblique_grid))  # target voxels in working indices
    inside = _inside(idx, w.size)
    assert inside.mean() > 0.9
    ii, jj, kk = idx[..., 0], idx[..., 1], idx[..., 2]
    vox_xyz = np.stack(
        [
            0.03 * ii + 0.02 * jj - 0.01 * kk + 0.2,
            -0.04 * ii + 0.01 * jj + 0.02 * kk - 0.3,
            0.02 * ii - 0.03 * jj + 0.05 * kk + 0.1,
        ],
        axis=-1,
    )
    expected = vox_xyz @ index_displacement_matrix(w).T
    np.testing.assert_allclose(out[inside], expected[inside], rtol=0, atol=1e-4)


def test_field_to_grid_with_affine_baking(oblique_grid):
    w = working_grid(oblique_grid, 1.5, 4)
    vox_zyx = np.array([0.4, -0.8, 1.1])
    field = (
        torch.as_tensor(vox_zyx, dtype=torch.float32)
        .view(1, 3, 1, 1, 1)
        .expand(1, 3, *w.shape)
        .contiguous()
    )
    a = rotation((2, -1, 1), 9.0) @ np.array(
        [[1.05, 0.02, 0.0], [0.0, 0.97, 0.03], [0.01, 0.0, 1.02]]
    )
    t = np.array([3.5, -2.0, 1.25])
    target = oblique_grid
    ds = target.direction_matrix @ np.diag(target.spacing)
    delta = a - np.eye(3)
    out = field_to_grid(
        field,
        w,
        target,
        linear_map=a,
        index_affine=(delta @ np.asarray(target.origin) + t, delta @ ds),
    )
    x = voxel_points(target)
    u = index_displacement_matrix(w) @ vox_zyx[::-1]
    expected = (x + u) @ a.T + t - x
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)
    # and the baked displacement is not the plain one
    assert np.abs(expected - u).max() > 1.0


def test_field_to_grid_rejects_another_direction(oblique_grid):
    w = working_grid(oblique_grid, 1.5, 4)
    other = make_grid(oblique_grid.size, oblique_grid.spacing, oblique_grid.origin, np.eye(3))
    with pytest.raises(ValueError, match="share the working direction"):
        field_to_grid(torch.zeros(1, 3, *w.shape), w, other)


def test_vector_image_holds_the_array(oblique_grid):
    array = np.arange(np.prod(oblique_grid.shape) * 3, dtype=np.float32).reshape(
        *oblique_grid.shape, 3
    )
    image = vector_image(array, oblique_grid)
    assert Grid.of(image).same_as(oblique_grid)
    np.testing.assert_array_equal(itk.array_from_image(image), array)
    array[0, 0, 0, 0] = -1  # the image owns a copy
    assert itk.array_view_from_image(image)[0, 0, 0, 0] == 0
    with pytest.raises(ValueError, match="does not match grid"):
        vector_image(array[:-1], oblique_grid)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def test_check_image_returns_the_grid(oblique_grid):
    image = make_image(np.zeros(oblique_grid.shape, dtype=np.float32), oblique_grid)
    assert check_image(image, "fixed").same_as(oblique_grid)


@pytest.mark.parametrize("value", [np.zeros((4, 4, 4), np.float32), torch.zeros(4, 4, 4)])
def test_check_image_rejects_arrays(value):
    with pytest.raises(TypeError) as info:
        check_image(value, "moving image")
    message = str(info.value)
    assert "moving image" in message
    assert "itk.Image" in message
    assert "without physical geometry" in message


def test_check_image_rejects_other_objects():
    with pytest.raises(TypeError, match=r"fixed image must be an itk\.Image, got list"):
        check_image([1, 2, 3], "fixed image")


def test_check_image_rejects_2d():
    image = itk.image_from_array(np.zeros((5, 6), dtype=np.float32))
    with pytest.raises(InputError, match=r"fixed image is 2-D; SAMConvex registers 3-D"):
        check_image(image, "fixed image")


def test_check_image_rejects_vector_pixels(oblique_grid):
    image = vector_image(np.zeros((*oblique_grid.shape, 3), np.float32), oblique_grid)
    with pytest.raises(InputError, match="moving has 3 components per pixel"):
        check_image(image, "moving")


def test_check_image_rejects_a_single_slice():
    grid = make_grid((6, 5, 1), (1.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    image = make_image(np.zeros(grid.shape, np.float32), grid)
    with pytest.raises(InputError, match=r"fixed has size \(6, 5, 1\); every axis needs at least"):
        check_image(image, "fixed")


def test_check_image_rejects_nan(oblique_grid):
    values = np.zeros(oblique_grid.shape, dtype=np.float32)
    values[1, 2, 3] = np.nan
    values[4, 5, 6] = np.inf
    image = make_image(values, oblique_grid)
    with pytest.raises(InputError, match="moving contains 2 NaN or infinite voxel values"):
        check_image(image, "moving")
    # integer-only callers (masks) skip the value scan
    assert check_image(image, "moving", allow_integer_only=True).same_as(oblique_grid)


def test_check_image_rejects_a_scaled_direction(oblique_grid):
    image = make_image(np.zeros(oblique_grid.shape, np.float32), oblique_grid)
    image.SetDirection(itk.matrix_from_array(np.diag([1.0, 1.0, 2.0])))
    with pytest.raises(InputError) as info:
        check_image(image, "fixed")
    assert "fixed has a direction matrix that is not orthonormal" in str(info.value)
    assert "|D^T D - I| up to 3" in str(info.value)


def test_check_image_rejects_a_sheared_direction_with_unit_determinant(oblique_grid):
    image = make_image(np.zeros(oblique_grid.shape, np.float32), oblique_grid)
    shear = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # det 1
    image.SetDirection(itk.matrix_from_array(shear))
    with pytest.raises(InputError, match="orthonormal"):
        check_image(image, "fixed")


def test_check_mask_accepts_a_mask_on_the_grid(oblique_grid):
    mask = np.zeros(oblique_grid.shape, dtype=np.uint8)
    mask[3, 4, 5] = 1
    image = make_image(mask, oblique_grid, itk.UC)
    # an origin difference below ITK's tolerance is the same grid
    image.SetOrigin([float(v) + 1e-7 for v in oblique_grid.origin])
    assert check_mask(image, "fixed_mask", oblique_grid, "fixed").size == oblique_grid.size


def test_check_mask_rejects_another_grid(oblique_grid):
    mask = np.ones(oblique_grid.shape, dtype=np.uint8)
    shifted = make_grid(
        oblique_grid.size,
        oblique_grid.spacing,
        np.add(oblique_grid.origin, [0.5, 0, 0]),
        oblique_grid.direction_matrix,
    )
    image = make_image(mask, shifted, itk.UC)
    with pytest.raises(InputError) as info:
        check_mask(image, "fixed_mask", oblique_grid, "fixed image")
    message = str(info.value)
    assert "fixed_mask is not on the grid of fixed image" in message
    assert "(-31.2, 12.4, 57.3)" in message  # the mask origin
    assert "(-31.7, 12.4, 57.3)" in message  # the image origin
    assert "nearest-neighbour" in message


def test_check_mask_rejects_an_empty_mask(oblique_grid):
    image = make_image(np.zeros(oblique_grid.shape, dtype=np.uint8), oblique_grid, itk.UC)
    with pytest.raises(InputError, match=r"moving_mask is empty \(no non-zero voxel\)"):
        check_mask(image, "moving_mask", oblique_grid, "moving")


def test_check_mask_rejects_a_numpy_mask(oblique_grid):
    with pytest.raises(TypeError, match="fixed_mask is a ndarray"):
        check_mask(np.ones(oblique_grid.shape), "fixed_mask", oblique_grid, "fixed")
