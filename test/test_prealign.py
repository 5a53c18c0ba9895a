"""Initial alignment: translation search and the search-initialised elastix affine.

The phantom is moved into an unrelated frame by shifting the moving image's origin (its
content moves with it), so the true transform is a known translation ``T(x) = x + d``.
"""

from __future__ import annotations

import itk
import numpy as np
import pytest

from helpers import OBLIQUE_AXIS, rotation
from itk_samconvex import InputError
from itk_samconvex.apps.phantom import centred_grid, grid_points_mm, phantom_hu
from itk_samconvex.edge.prealign import (
    IDENTITY_DIRECTION,
    CoarseImage,
    affine_from_matrix,
    alignment_score,
    coarse_image,
    plausible_affine,
    search_translation,
    shift_scores,
    smoothed_for,
)
from itk_samconvex.edge.space import Grid, linear_parts, scalar_image

FRAME_SHIFT = np.array([37.0, -52.0, 640.0])  # LPS mm between the two "scanners"


def phantom_image(size, spacing, direction=None, centre=(0.0, 0.0, 0.0), shift=(0, 0, 0)):
    """The phantom sampled on a grid centred at ``centre``, its content moved by ``shift``."""
    grid = centred_grid(size, spacing, direction, centre_mm=centre)
    hu = phantom_hu(grid_points_mm(grid).reshape(-1, 3)).reshape(grid.shape)
    moved = Grid(grid.size, grid.spacing, tuple(np.asarray(grid.origin) + shift), grid.direction)
    return scalar_image(hu.astype(np.float32), moved, itk.F)


@pytest.fixture(scope="module")
def oblique_fixed():
    direction = rotation(OBLIQUE_AXIS, 20.0)
    return phantom_image((110, 100, 48), (2.9, 2.9, 6.5), direction)


def test_search_recovers_a_frame_shift_across_oblique_anisotropic_grids(oblique_fixed):
    moving = phantom_image((80, 70, 90), (4.0, 4.0, 3.0), shift=FRAME_SHIFT)
    result = search_translation(oblique_fixed, moving, spacing_mm=6.0)
    error = np.linalg.norm(result.translation_mm - FRAME_SHIFT)
    assert error < 6.0, result  # one coarse voxel
    assert result.correlation > 0.8
    point = [10.0, -20.0, 30.0]
    mapped = np.asarray(result.transform().TransformPoint(point))
    np.testing.assert_allclose(mapped, np.asarray(point) + result.translation_mm, atol=1e-9)


def test_search_finds_a_thin_slab_far_from_the_fixed_centre(oblique_fixed):
    # 42 mm of anatomy from 50 mm above the body centre, in another scanner frame
    slab = phantom_image((100, 90, 12), (3.5, 3.5, 3.5), centre=(0.0, 0.0, 50.0), shift=FRAME_SHIFT)
    result = search_translation(oblique_fixed, slab, spacing_mm=6.0)
    assert np.linalg.norm(result.translation_mm - FRAME_SHIFT) < 9.0, result


def test_search_errors_name_the_input_and_the_fix(oblique_fixed):
    air = scalar_image(
        np.full((10, 10, 10), -1000.0, np.float32),
        centred_grid((10, 10, 10), (2.0, 2.0, 2.0)),
        itk.F,
    )
    with pytest.raises(
        InputError,
        match=r"moving image has no voxel above -500 HU.*initial "
        r"transform",
    ):
        search_translation(oblique_fixed, air)
    with pytest.raises(
        InputError,
        match=r"min_overlap \(least overlapping body volume, as a "
        r"fraction of the smaller body\) must be in \(0, 1\]",
    ):
        search_translation(oblique_fixed, oblique_fixed, min_overlap=0.0)
    coarse = coarse_image(oblique_fixed, 8.0, "fixed image")
    with pytest.raises(
        InputError,
        match=r"coarse_fixed has spacing 8\.0 mm; the search runs at "
        r"6\.0 mm",
    ):
        search_translation(oblique_fixed, oblique_fixed, coarse_fixed=coarse)


def test_alignment_score_prefers_the_true_translation(oblique_fixed):
    moving = phantom_image((80, 70, 90), (4.0, 4.0, 3.0), shift=FRAME_SHIFT)
    coarse = coarse_image(oblique_fixed, 6.0, "fixed image")
    true = affine_from_matrix(np.eye(3), FRAME_SHIFT)
    off = affine_from_matrix(np.eye(3), FRAME_SHIFT + np.array([0.0, 0.0, 30.0]))
    smooth = smoothed_for(coarse, moving)
    good, bad = alignment_score(coarse, smooth, true), alignment_score(coarse, smooth, off)
    assert good.correlation > 0.85
    assert good.correlation > bad.correlation + 0.05
    # the moving scan ends before the oblique fixed one does
    assert 0.7 < good.fixed_body_covered < 0.9


def test_affine_from_matrix_and_plausibility():
    matrix = rotation((0.0, 0.0, 1.0), 10.0) @ np.diag([1.1, 0.95, 1.0])
    transform = affine_from_matrix(matrix, np.array([1.0, -2.0, 3.0]))
    m, t = linear_parts(transform)
    np.testing.assert_allclose(m, matrix, atol=1e-12)
    np.testing.assert_allclose(t, [1.0, -2.0, 3.0], atol=1e-12)
    assert plausible_affine(matrix)
    assert not plausible_affine(np.diag([2.5, 1.0, 1.0]))  # a runaway stretch
    assert not plausible_affine(np.diag([1.0, 1.0, -1.0]))  # a flip


def test_shift_scores_find_a_known_shift_exactly():
    """A random pattern cut out at a known shift (different on every axis, both signs)."""
    rng = np.random.default_rng(3)
    pattern = rng.uniform(-200.0, 300.0, (30, 34, 38))
    fixed_part = pattern[4:24, 2:30, 9:35]
    moving_part = pattern[1:27, 7:33, 11:37]
    shift = np.array([4 - 1, 2 - 7, 9 - 11])  # fixed voxel i shows moving voxel i + (3, -5, -2)

    def coarse(values):
        ones = np.ones_like(values)
        grid = Grid(values.shape[::-1], (6.0,) * 3, (0.0, 0.0, 0.0), IDENTITY_DIRECTION)
        return CoarseImage(grid, values, ones, ones)

    ncc, _, correlate = shift_scores(coarse(fixed_part), coarse(moving_part), 0.3)
    best = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    np.testing.assert_array_equal(correlate.signed_shift(best, fixed_part.shape), shift)
    assert ncc[best] == pytest.approx(1.0, abs=1e-9)
    assert np.isfinite(ncc).sum() > 50  # many shifts were allowed, and only this one scores 1
    assert np.sort(ncc[np.isfinite(ncc)])[-2] < 0.5


def _mean_error_mm(transform, points, truth):
    mapped = np.array([transform.TransformPoint([float(v) for v in p]) for p in points])
    return float(np.linalg.norm(mapped - truth(points), axis=1).mean())


@pytest.mark.slow
def test_search_initialised_elastix_aligns_a_slab_by_its_inverse_similarity(oblique_fixed, caplog):
    if not hasattr(itk, "ElastixRegistrationMethod"):
        pytest.skip("itk-elastix is not installed")
    from itk_samconvex.edge.elastix import elastix_affine

    slab = phantom_image((100, 90, 12), (3.5, 3.5, 3.5), centre=(0.0, 0.0, 50.0), shift=FRAME_SHIFT)
    # fixed points in the slab's anatomy: where the true transform lands inside the slab
    points = np.array(
        [
            [x, y, z]
            for x in (-60.0, 0.0, 60.0)
            for y in (-40.0, 0.0, 40.0)
            for z in (40.0, 50.0, 60.0)
        ]
    )
    with caplog.at_level("INFO", logger="itk_samconvex"):
        searched = elastix_affine(oblique_fixed, slab, iterations=200)
    assert "registering moving to fixed (similarity) and inverting" in caplog.text
    assert "using the translation" not in caplog.text  # elastix's result was kept
    assert isinstance(searched, itk.AffineTransform[itk.D, 3])
    assert _mean_error_mm(searched, points, lambda p: p + FRAME_SHIFT) < 2.0


@pytest.mark.slow
def test_search_initialised_elastix_recovers_a_rotated_scaled_frame(oblique_fixed, caplog):
    """The forward path: the moving scan covers the fixed one; a rotation, a scaling and a
    frame shift between them (moving content = A(fixed content))."""
    if not hasattr(itk, "ElastixRegistrationMethod"):
        pytest.skip("itk-elastix is not installed")
    from itk_samconvex.edge.elastix import elastix_affine

    matrix = rotation((0.2, -0.3, 1.0), 7.0) @ np.diag([1.06, 0.97, 1.02])
    grid = centred_grid((90, 80, 100), (4.0, 4.0, 4.0), centre_mm=FRAME_SHIFT)
    y = grid_points_mm(grid).reshape(-1, 3)
    # moving(y) = phantom(A^-1 (y - FRAME_SHIFT)), so T(x) = A x + FRAME_SHIFT
    source = (y - FRAME_SHIFT) @ np.linalg.inv(matrix).T
    moving = scalar_image(phantom_hu(source).reshape(grid.shape).astype(np.float32), grid, itk.F)
    points = np.array(
        [
            [x, yy, z]
            for x in (-80.0, 0.0, 80.0)
            for yy in (-60.0, 0.0, 60.0)
            for z in (-80.0, 0.0, 80.0)
        ]
    )
    with caplog.at_level("INFO", logger="itk_samconvex"):
        searched = elastix_affine(oblique_fixed, moving, iterations=200)
    assert "inverting" not in caplog.text and "using the translation" not in caplog.text
    assert _mean_error_mm(searched, points, lambda p: p @ matrix.T + FRAME_SHIFT) < 2.0


def test_elastix_affine_refuses_an_unknown_initialization(oblique_fixed):
    from itk_samconvex.edge.elastix import elastix_affine

    if not hasattr(itk, "ElastixRegistrationMethod"):
        pytest.skip("itk-elastix is not installed")
    with pytest.raises(
        InputError,
        match=r"initialization must be one of \('search', "
        r"'geometric-centre'\); got 'centre'",
    ):
        elastix_affine(oblique_fixed, oblique_fixed, initialization="centre")
