"""The field at the faces of a shared field of view (``solver.boundary``, ``fov_anchor``)."""

from __future__ import annotations

import itk
import numpy as np
import pytest
import torch

from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.edge.registration import register
from itk_samconvex.edge.space import Grid, faces_in, level_grid, working_grid
from itk_samconvex.solver.boundary import anchor_at_faces
from itk_samconvex.solver.config import preset_config

SPACING_MM = 2.0
SHAPE = (20, 12, 10)
BOX = ([-0.5, -0.5, -0.5], [19.5, 11.5, 9.5])  # the faces on the outer voxel boundaries


def _uniform(z: float = 0.0, y: float = 0.0, x: float = 0.0) -> torch.Tensor:
    field = torch.zeros((1, 3, *SHAPE))
    for channel, value in enumerate((z, y, x)):
        field[:, channel] = value
    return field


def test_displacement_leaving_the_box_is_ramped_to_zero_over_the_strain_band():
    field = _uniform(z=2.0)  # 2 voxels = 4 mm towards the upper z face
    anchored, bands = anchor_at_faces(field, *BOX, SPACING_MM, max_strain=0.25, min_band_mm=4.0)
    # the band is 4 mm / 0.25 = 16 mm at the upper z face; nothing leaves elsewhere
    assert bands == [(0.0, 16.0), (0.0, 0.0), (0.0, 0.0)]
    uz = anchored[0, 0, :, 0, 0].numpy()
    distance_mm = (BOX[1][0] - np.arange(SHAPE[0])) * SPACING_MM
    expected = np.where(distance_mm < 16.0, 2.0 * distance_mm / 16.0, 2.0)
    expected[: SHAPE[0] // 2] = 2.0  # the lower half is near the lower face: inward, untouched
    np.testing.assert_allclose(uz, expected, atol=1e-6)
    # every voxel's counterpart stays inside the box, and the ramp folds nothing: the mapping
    # z + u(z) is increasing with a slope of at least 1 - max_strain
    position = np.arange(SHAPE[0]) + uz
    assert position.max() <= BOX[1][0] + 1e-6
    assert np.diff(position).min() >= 1 - 0.25 - 1e-6
    # the other components are untouched
    assert torch.equal(anchored[:, 1:], field[:, 1:])


def test_only_the_outward_component_is_anchored():
    field = _uniform(y=-1.0, x=0.5)  # leaves through the lower y face and the upper x face
    anchored, bands = anchor_at_faces(field, *BOX, SPACING_MM, max_strain=0.5, min_band_mm=4.0)
    assert bands[0] == (0.0, 0.0)
    assert bands[1] == (4.0, 0.0)  # 2 mm / 0.5 = 4 mm, the minimum
    assert bands[2] == (0.0, 4.0)  # 1 mm / 0.5 = 2 mm, raised to the minimum
    uy = anchored[0, 1, 0, :, 0].numpy()
    assert uy[0] == pytest.approx(-1.0 * (0.5 * SPACING_MM) / 4.0)
    assert uy[SHAPE[1] - 1] == -1.0  # near the upper y face the motion points inwards
    ux = anchored[0, 2, 0, 0, :].numpy()
    assert ux[0] == 0.5 and ux[-1] == pytest.approx(0.5 * (0.5 * SPACING_MM) / 4.0)


def test_a_field_that_stays_inside_is_unchanged():
    field = torch.zeros((1, 3, *SHAPE))
    field[:, 0, : SHAPE[0] // 2] = 1.5  # moves inwards from the lower face
    field[:, 0, SHAPE[0] // 2 :] = -1.5  # and from the upper face
    anchored, bands = anchor_at_faces(field, *BOX, SPACING_MM)
    assert torch.equal(anchored, field)
    assert bands == [(0.0, 0.0)] * 3


def test_the_band_never_exceeds_half_the_box():
    field = _uniform(z=8.0)  # 16 mm out of a 40 mm box: 64 mm band, capped at 20 mm
    _, bands = anchor_at_faces(field, *BOX, SPACING_MM, max_strain=0.25)
    assert bands[0] == (0.0, 20.0)


def test_faces_of_an_oblique_anisotropic_offset_image_on_its_working_grid():
    angle = np.deg2rad(23.0)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]]
    )
    fixed = Grid(
        size=(50, 40, 30),
        spacing=(0.8, 0.9, 3.0),
        origin=(-12.0, 40.5, 7.25),
        direction=tuple(direction.ravel()),
    )
    grid = level_grid(working_grid(fixed, 2.0, multiple=8), 2)
    lower, upper = faces_in(fixed, grid)
    # the faces are the fixed voxels' outer boundaries, expressed as grid indices (z, y, x)
    to_index = np.linalg.inv(grid.direction_matrix @ np.diag(grid.spacing))
    for corner, expected in (((-0.5,) * 3, lower), (np.asarray(fixed.size) - 0.5, upper)):
        point = np.asarray(fixed.origin) + fixed.direction_matrix @ (
            np.asarray(corner) * np.asarray(fixed.spacing)
        )
        np.testing.assert_allclose(
            (to_index @ (point - np.asarray(grid.origin)))[::-1], expected, atol=1e-9
        )
    # the working grid covers the image with a margin: its voxel centres 0 .. n-1 straddle it
    extent = np.asarray(upper) - np.asarray(lower)
    np.testing.assert_allclose(
        extent * grid.spacing[0], (np.asarray(fixed.size) * fixed.spacing)[::-1], atol=1e-9
    )
    assert all(lo > -1.0 for lo in lower) and all(
        hi < n for hi, n in zip(upper, grid.shape, strict=True)
    )


QUICK = {"working_spacing_mm": 4.0, "io_iterations": 5}


@pytest.fixture(scope="module")
def cut_phantom():
    """The breathing phantom cut by its field of view: the lower z face runs through the body,
    where the motion points out of the box."""
    return make_phantom_pair(size=(80, 70, 40), spacing=(3.2, 3.2, 3.2), amplitude_mm=12.0)


def test_same_box_pairs_are_anchored_and_the_choice_is_reported(cut_phantom):
    result = register(cut_phantom.fixed, cut_phantom.moving, preset_config("default", **QUICK))
    choice = result.choices["fov_anchor"]
    assert choice.startswith("on: both images cover the same box"), choice
    off = register(
        cut_phantom.fixed, cut_phantom.moving, preset_config("default", fov_anchor="off", **QUICK)
    )
    assert "fov_anchor" not in off.choices
    grid = Grid.of(cut_phantom.fixed)

    def outside_share(result) -> float:
        """Share of the fixed voxels whose counterpart lies outside the moving image."""
        field = np.asarray(itk.array_view_from_image(result.field), dtype=np.float64)
        index = np.stack(np.indices(grid.shape)[::-1], -1).astype(np.float64)  # (x, y, z)
        to_index = np.linalg.inv(grid.direction_matrix @ np.diag(grid.spacing))
        moved = index + field @ to_index.T
        size = np.asarray(grid.size)
        return float(((moved < -0.5) | (moved > size - 0.5)).any(-1).mean())

    print(
        f"outside the moving image: anchored {outside_share(result):.4f}, "
        f"extrapolated {outside_share(off):.4f}"
    )
    assert outside_share(off) > 0.01  # the motion leaves the cut box without the anchor
    assert outside_share(result) < 0.1 * outside_share(off)


def test_pairs_on_different_boxes_are_not_anchored(cut_phantom):
    other = make_phantom_pair(size=(80, 70, 40), moving_size=(80, 70, 44))
    result = register(other.fixed, other.moving, preset_config("default", **QUICK))
    assert result.choices["fov_anchor"].startswith("off: the moving image covers another box")
    affine = itk.TranslationTransform[itk.D, 3].New()
    affine.SetOffset([1.0, 0.0, 0.0])
    result = register(
        cut_phantom.fixed,
        cut_phantom.moving,
        preset_config("default", **QUICK),
        initial_transform=affine,
    )
    assert result.choices["fov_anchor"].startswith(
        "off: an initial transform moves the moving image"
    )


def test_bad_fov_anchor_values_name_the_field():
    with pytest.raises(Exception, match="fov_anchor"):
        preset_config("default", fov_anchor="sometimes")
    with pytest.raises(Exception, match="fov_anchor_max_strain"):
        preset_config("default", fov_anchor_max_strain=1.5)
    with pytest.raises(Exception, match="fov_anchor_min_band_mm"):
        preset_config("default", fov_anchor_min_band_mm=0.0)
