"""Tests of itk_samconvex.edge.transforms and itk_samconvex.edge.elastix.

Ground truth is ITK's own point mapping (TransformPoint) and, for elastix files, itk-elastix's
CombinationTransform (ConvertToItkTransform) or transformix, on tiny oblique images.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

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
    transform_point,
    voxel_points,
)
from itk_samconvex.edge import elastix
from itk_samconvex.edge.initial import as_transform
from itk_samconvex.edge.io import read_transform, write_image, write_transform
from itk_samconvex.edge.space import (
    Grid,
    dense_field_of,
    index_displacement_matrix,
    linear_parts,
    scalar_image,
    working_grid,
)
from itk_samconvex.edge.transforms import baked_field, displacement_transform, transform_field_image
from itk_samconvex.errors import InputError

RNG_SEED = 1234


def _affine(matrix, translation, centre):
    t = itk.AffineTransform[itk.D, 3].New()
    t.SetMatrix(itk.matrix_from_array(np.asarray(matrix, dtype=np.float64)))
    t.SetCenter([float(v) for v in centre])
    t.SetTranslation([float(v) for v in translation])
    return t


def _euler(angles, translation, centre):
    t = itk.Euler3DTransform[itk.D].New()
    t.SetCenter([float(v) for v in centre])
    t.SetRotation(*[float(a) for a in angles])
    t.SetTranslation([float(v) for v in translation])
    return t


def _translation(offset):
    t = itk.TranslationTransform[itk.D, 3].New()
    t.SetOffset([float(v) for v in offset])
    return t


AFFINE_M = rotation((1, -2, 0.5), 12.0) @ np.array(
    [[1.08, 0.03, -0.02], [0.01, 0.93, 0.04], [-0.03, 0.02, 1.01]]
)
AFFINE_T = np.array([2.5, -4.0, 1.75])
AFFINE_C = np.array([-20.0, 18.0, 60.0])
EULER_ANGLES = (0.12, -0.2, 0.3)  # radians about x, y, z
EULER_T = np.array([-1.5, 3.0, 0.5])
EULER_C = np.array([5.0, -7.0, 40.0])
TRANSLATION = np.array([3.25, -1.5, 7.0])

SAMPLE_POINTS = np.array(
    [[0.0, 0.0, 0.0], [-25.0, 14.0, 61.0], [12.5, -3.0, 44.0], [100.0, 50.0, -30.0]]
)


def _euler_matrix(ax, ay, az):
    """ITK Euler3DTransform (ComputeZYX off): R = Rz @ Rx @ Ry."""
    rx = rotation((1, 0, 0), math.degrees(ax))
    ry = rotation((0, 1, 0), math.degrees(ay))
    rz = rotation((0, 0, 1), math.degrees(az))
    return rz @ rx @ ry


def _assert_maps_like(ours, reference, points, atol=1e-6):
    for p in points:
        np.testing.assert_allclose(
            transform_point(ours, p), transform_point(reference, p), rtol=0, atol=atol
        )


# ---------------------------------------------------------------------------------------------
# linear_parts
# ---------------------------------------------------------------------------------------------


def test_linear_parts_affine_with_centre():
    m, t = linear_parts(_affine(AFFINE_M, AFFINE_T, AFFINE_C))
    np.testing.assert_allclose(m, AFFINE_M, rtol=0, atol=1e-12)
    # T(x) = M (x - c) + c + t
    np.testing.assert_allclose(t, AFFINE_T + AFFINE_C - AFFINE_M @ AFFINE_C, rtol=0, atol=1e-10)


def test_linear_parts_euler_with_centre():
    m, t = linear_parts(_euler(EULER_ANGLES, EULER_T, EULER_C))
    r = _euler_matrix(*EULER_ANGLES)
    np.testing.assert_allclose(m, r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t, EULER_T + EULER_C - r @ EULER_C, rtol=0, atol=1e-10)


def test_linear_parts_similarity():
    s = itk.Similarity3DTransform[itk.D].New()
    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    s.SetRotation(itk.Vector[itk.D, 3]([float(v) for v in axis]), math.radians(20.0))
    s.SetScale(1.15)
    s.SetCenter([4.0, -2.0, 30.0])
    s.SetTranslation([0.5, 1.0, -2.0])
    m, t = linear_parts(s)
    expected_m = 1.15 * rotation((1, 2, 3), 20.0)
    np.testing.assert_allclose(m, expected_m, rtol=0, atol=1e-12)
    c = np.array([4.0, -2.0, 30.0])
    np.testing.assert_allclose(
        t, np.array([0.5, 1.0, -2.0]) + c - expected_m @ c, rtol=0, atol=1e-10
    )


def test_linear_parts_translation_and_none():
    m, t = linear_parts(_translation(TRANSLATION))
    np.testing.assert_array_equal(m, np.eye(3))
    np.testing.assert_allclose(t, TRANSLATION, rtol=0, atol=1e-14)
    m, t = linear_parts(None)
    np.testing.assert_array_equal(m, np.eye(3))
    np.testing.assert_array_equal(t, np.zeros(3))


def test_linear_parts_composite():
    composite = itk.CompositeTransform[itk.D, 3].New()
    composite.AddTransform(_euler(EULER_ANGLES, EULER_T, EULER_C))
    composite.AddTransform(_translation(TRANSLATION))  # added last: applied first
    m, t = linear_parts(composite)
    r = _euler_matrix(*EULER_ANGLES)
    np.testing.assert_allclose(m, r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        t, r @ TRANSLATION + EULER_T + EULER_C - r @ EULER_C, rtol=0, atol=1e-10
    )


def _smooth_field(grid: Grid, amplitude=(1.2, -0.8, 0.6)) -> np.ndarray:
    """A smooth (Z, Y, X, 3) mm field on ``grid``."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in grid.shape), indexing="ij")
    base = np.sin(0.3 * i + 0.2 * j) * np.cos(0.25 * k)
    return np.stack([a * base for a in amplitude], axis=-1)


def test_linear_parts_none_for_nonlinear(oblique_grid):
    field = displacement_transform(_smooth_field(oblique_grid), oblique_grid)
    assert linear_parts(field) is None
    assert linear_parts(_bspline(oblique_grid)) is None


# ---------------------------------------------------------------------------------------------
# displacement fields and transforms
# ---------------------------------------------------------------------------------------------


def test_displacement_transform_maps_x_plus_u(oblique_grid):
    u = _smooth_field(oblique_grid)
    transform = displacement_transform(u.astype(np.float32), oblique_grid)
    points = voxel_points(oblique_grid)
    for idx in [(0, 0, 0), (3, 7, 11), (11, 19, 23), (6, 2, 15)]:
        np.testing.assert_allclose(
            transform_point(transform, points[idx]), points[idx] + u[idx], rtol=0, atol=1e-5
        )
    # between voxels the field is linearly interpolated: exact for a linear field
    k, j, i = np.meshgrid(
        *(np.arange(n, dtype=np.float64) for n in oblique_grid.shape), indexing="ij"
    )
    lin = np.stack([0.1 * i - 0.2 * k, 0.05 * j + 0.3, -0.1 * i + 0.07 * j], axis=-1)
    transform = displacement_transform(lin, oblique_grid)
    index = np.array([4.3, 7.6, 5.25])
    p = index_to_point(oblique_grid, index)
    i0, j0, k0 = index
    expected = p + np.array([0.1 * i0 - 0.2 * k0, 0.05 * j0 + 0.3, -0.1 * i0 + 0.07 * j0])
    np.testing.assert_allclose(transform_point(transform, p), expected, rtol=0, atol=1e-9)


def test_transform_field_image_is_a_float_copy(oblique_grid):
    u = _smooth_field(oblique_grid)
    transform = displacement_transform(u, oblique_grid)
    image = transform_field_image(transform)
    assert Grid.of(image).same_as(oblique_grid)
    array = itk.array_from_image(image)
    assert array.dtype == np.float32
    np.testing.assert_allclose(array, u, rtol=0, atol=1e-6)


def test_dense_field_of_affine(oblique_grid):
    affine = _affine(AFFINE_M, AFFINE_T, AFFINE_C)
    field = dense_field_of(affine, oblique_grid)
    x = voxel_points(oblique_grid)
    m, t = linear_parts(affine)
    np.testing.assert_allclose(field, x @ m.T + t - x, rtol=0, atol=1e-4)


def _working_setup(fixed: Grid):
    """A working grid on ``fixed`` and a (1, 3, Z, Y, X) voxel field linear in its index."""
    w = working_grid(fixed, 1.5, 4)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in w.shape), indexing="ij")
    cz = 0.03 * i - 0.02 * j + 0.04 * k - 0.2
    cy = -0.02 * i + 0.03 * j + 0.01 * k + 0.4
    cx = 0.01 * i + 0.04 * j - 0.03 * k + 0.1
    field = torch.as_tensor(np.stack([cz, cy, cx])[None], dtype=torch.float32)

    def u_mm(point):
        ii, jj, kk = point_to_index(w, point)
        vox_xyz = np.array(
            [
                0.01 * ii + 0.04 * jj - 0.03 * kk + 0.1,
                -0.02 * ii + 0.03 * jj + 0.01 * kk + 0.4,
                0.03 * ii - 0.02 * jj + 0.04 * kk - 0.2,
            ]
        )
        return index_displacement_matrix(w) @ vox_xyz

    return w, field, u_mm


def _sample_indices(grid: Grid, count: int = 25):
    rng = np.random.default_rng(RNG_SEED)
    return [tuple(int(rng.integers(0, n)) for n in grid.shape) for _ in range(count)]


def _check_baked(out, fixed, u_mm, initial, atol):
    assert out.shape == (*fixed.shape, 3)
    points = voxel_points(fixed)
    for idx in _sample_indices(fixed):
        x = points[idx]
        expected = transform_point(initial, x + u_mm(x)) - x
        np.testing.assert_allclose(out[idx], expected, rtol=0, atol=atol, err_msg=str(idx))


def test_baked_field_affine(oblique_grid):
    w, field, u_mm = _working_setup(oblique_grid)
    affine = _affine(AFFINE_M, AFFINE_T, AFFINE_C)
    out = baked_field(field, w, oblique_grid, affine)
    _check_baked(out, oblique_grid, u_mm, affine, atol=1e-3)


def test_baked_field_linear_composite(oblique_grid):
    w, field, u_mm = _working_setup(oblique_grid)
    composite = itk.CompositeTransform[itk.D, 3].New()
    composite.AddTransform(_affine(AFFINE_M, AFFINE_T, AFFINE_C))
    composite.AddTransform(_euler(EULER_ANGLES, EULER_T, EULER_C))
    out = baked_field(field, w, oblique_grid, composite)
    _check_baked(out, oblique_grid, u_mm, composite, atol=1e-3)


def test_baked_field_without_initial_is_the_plain_field(oblique_grid):
    w, field, u_mm = _working_setup(oblique_grid)
    out = baked_field(field, w, oblique_grid, None)
    points = voxel_points(oblique_grid)
    for idx in _sample_indices(oblique_grid):
        np.testing.assert_allclose(out[idx], u_mm(points[idx]), rtol=0, atol=1e-4)


def test_baked_field_displacement_field_initial(oblique_grid):
    w, field, u_mm = _working_setup(oblique_grid)
    # the initial field lives on its own (coarser, other-origin) grid covering the fixed one
    init_grid = make_grid(
        (14, 12, 12),
        (2.0, 2.0, 3.0),
        index_to_point(oblique_grid, (-3, -3, -2)),
        oblique_grid.direction_matrix @ rotation((0, 0, 1), 4.0),
    )
    initial = displacement_transform(_smooth_field(init_grid, (2.0, -1.5, 1.0)), init_grid)
    out = baked_field(field, w, oblique_grid, initial)
    _check_baked(out, oblique_grid, u_mm, initial, atol=1e-4)


def _bspline(grid: Grid):
    transform = itk.BSplineTransform[itk.D, 3, 3].New()
    transform.SetTransformDomainOrigin([float(v) for v in index_to_point(grid, (-1, -1, -1))])
    transform.SetTransformDomainDirection(itk.matrix_from_array(grid.direction_matrix.copy()))
    physical = [(n + 1) * s for n, s in zip(grid.size, grid.spacing, strict=True)]
    transform.SetTransformDomainPhysicalDimensions(physical)
    transform.SetTransformDomainMeshSize([3, 3, 2])
    rng = np.random.default_rng(7)
    params = rng.normal(0.0, 1.5, transform.GetNumberOfParameters())
    transform.SetParameters(itk.OptimizerParameters[itk.D](params.tolist()))
    return transform


def test_baked_field_bspline_initial(oblique_grid):
    w, field, u_mm = _working_setup(oblique_grid)
    initial = _bspline(oblique_grid)
    # the B-spline really deforms
    p = voxel_points(oblique_grid)[6, 10, 12]
    assert np.linalg.norm(transform_point(initial, p) - p) > 0.1
    out = baked_field(field, w, oblique_grid, initial)
    _check_baked(out, oblique_grid, u_mm, initial, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# transform file IO
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".h5", ".tfm", ".mat", ".txt"])
def test_read_transform_formats(tmp_path, suffix):
    affine = _affine(AFFINE_M, AFFINE_T, AFFINE_C)
    path = tmp_path / f"affine{suffix}"
    itk.transformwrite([affine], str(path))
    ours = read_transform(path)
    _assert_maps_like(ours, affine, SAMPLE_POINTS, atol=1e-9)
    m, _ = linear_parts(ours)
    np.testing.assert_allclose(m, AFFINE_M, atol=1e-12)


@pytest.mark.parametrize("suffix", [".h5", ".tfm"])
def test_read_transform_composes_a_list(tmp_path, suffix):
    euler = _euler(EULER_ANGLES, EULER_T, EULER_C)
    shift = _translation(TRANSLATION)
    path = tmp_path / f"two{suffix}"
    itk.transformwrite([euler, shift], str(path))
    ours = read_transform(path)
    # the last transform in the file is applied first: euler(shift(x))
    for p in SAMPLE_POINTS:
        expected = transform_point(euler, transform_point(shift, p))
        np.testing.assert_allclose(transform_point(ours, p), expected, rtol=0, atol=1e-9)
    # a written CompositeTransform comes back as the same composite
    composite = itk.CompositeTransform[itk.D, 3].New()
    composite.AddTransform(euler)
    composite.AddTransform(shift)
    path2 = tmp_path / f"composite{suffix}"
    itk.transformwrite([composite], str(path2))
    _assert_maps_like(read_transform(path2), composite, SAMPLE_POINTS, atol=1e-9)


def test_read_transform_displacement_field(tmp_path, oblique_grid):
    transform = displacement_transform(_smooth_field(oblique_grid), oblique_grid)
    path = tmp_path / "field.h5"
    itk.transformwrite([transform], str(path))
    ours = read_transform(path)
    points = voxel_points(oblique_grid)
    _assert_maps_like(ours, transform, [points[1, 2, 3], points[8, 15, 20]], atol=1e-9)


def test_read_transform_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"transform file .*nothere\.h5 does not exist"):
        read_transform(tmp_path / "nothere.h5")
    json_path = tmp_path / "transform.json"
    json_path.write_text("{}")
    with pytest.raises(InputError, match=r"has an unknown suffix; use one of \.h5"):
        read_transform(json_path)
    garbage = tmp_path / "garbage.tfm"
    garbage.write_text("this is not a transform\n")
    with pytest.raises(InputError, match=r"cannot read transform file .*garbage\.tfm"):
        read_transform(garbage)


def _no_temp_files(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_write_transform_overwrite_rules(tmp_path):
    path = tmp_path / "out.h5"
    first = _affine(AFFINE_M, AFFINE_T, AFFINE_C)
    assert write_transform(first, path) == path
    _assert_maps_like(read_transform(path), first, SAMPLE_POINTS, atol=1e-9)
    second = _translation(TRANSLATION)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        write_transform(second, path)
    _assert_maps_like(read_transform(path), first, SAMPLE_POINTS, atol=1e-9)  # untouched
    write_transform(second, path, overwrite=True)
    _assert_maps_like(read_transform(path), second, SAMPLE_POINTS, atol=1e-9)
    assert _no_temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


@pytest.mark.parametrize("name", ["image.nii.gz", "image.nrrd", "image.mha"])
def test_write_image_overwrite_rules(tmp_path, oblique_grid, name):
    values = np.arange(np.prod(oblique_grid.shape), dtype=np.float32).reshape(oblique_grid.shape)
    image = make_image(values, oblique_grid)
    path = tmp_path / name
    write_image(image, path)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        write_image(make_image(values * 0, oblique_grid), path)
    np.testing.assert_array_equal(itk.array_from_image(itk.imread(str(path))), values)
    write_image(make_image(values + 1, oblique_grid), path, overwrite=True)
    back = itk.imread(str(path))
    np.testing.assert_array_equal(itk.array_from_image(back), values + 1)
    assert Grid.of(back).same_as(oblique_grid)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_write_image_refuses_two_file_formats(tmp_path, oblique_grid):
    """.mhd + .raw cannot be renamed atomically: refused with the formats that work."""
    image = make_image(np.ones(oblique_grid.shape, np.float32), oblique_grid)
    with pytest.raises(
        InputError,
        match=r"image\.mhd: use a single-file image format "
        r"\(\.nii\.gz, \.nii, \.mha, \.nrrd\)",
    ):
        write_image(image, tmp_path / "image.mhd")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# as_transform
# ---------------------------------------------------------------------------------------------


def test_as_transform_objects_and_paths(tmp_path):
    assert as_transform(None) is None
    affine = _affine(AFFINE_M, AFFINE_T, AFFINE_C)
    assert as_transform(affine) is affine
    path = tmp_path / "affine.tfm"
    itk.transformwrite([affine], str(path))
    _assert_maps_like(as_transform(path), affine, SAMPLE_POINTS, atol=1e-9)
    _assert_maps_like(as_transform(str(path)), affine, SAMPLE_POINTS, atol=1e-9)


def test_as_transform_rejects_single_precision_and_other_types():
    with pytest.raises(InputError, match="single-precision transform"):
        as_transform(itk.AffineTransform[itk.F, 3].New())
    with pytest.raises(TypeError, match=r"initial_transform must be an itk\.Transform"):
        as_transform(np.eye(4))


def test_as_transform_rejects_a_2d_transform():
    with pytest.raises(InputError, match=r"maps 2-D to 2-D points .*pass a 3-D transform"):
        as_transform(itk.AffineTransform[itk.D, 2].New())


# ---------------------------------------------------------------------------------------------
# elastix: parameter text
# ---------------------------------------------------------------------------------------------

SAMPLE_TEXT = """
// elastix TransformParameters file, hand written
(Transform "EulerTransform")   // trailing comment
(NumberOfParameters 6)
(TransformParameters 0.1 -0.2 0.3 1.5 -2.5 3e-1)
(CenterOfRotationPoint 10 -20.5 30.25)
(InitialTransformParameterFileName "NoInitialTransform")
(HowToCombineTransforms "Compose")
(ComputeZYX "false")
(ResultImageFormat "nii.gz")
(Name "with space" "two")
(Empty)
  (  Indented   1 2  )
not a parameter line
// (Commented 1)
"""


def test_parse_parameter_text():
    params = elastix.parse_parameter_text(SAMPLE_TEXT)
    assert params["Transform"] == ["EulerTransform"]
    assert params["NumberOfParameters"] == ["6"]
    assert params["TransformParameters"] == ["0.1", "-0.2", "0.3", "1.5", "-2.5", "3e-1"]
    assert params["CenterOfRotationPoint"] == ["10", "-20.5", "30.25"]
    assert params["ComputeZYX"] == ["false"]
    assert params["ResultImageFormat"] == ["nii.gz"]
    assert params["Name"] == ["with space", "two"]
    assert params["Empty"] == []
    assert params["Indented"] == ["1", "2"]
    assert "Commented" not in params
    assert len(params) == 11


def test_transform_from_hand_written_euler_map():
    params = elastix.parse_parameter_text(SAMPLE_TEXT)
    transform = elastix.transform_from_map(params)
    m, t = linear_parts(transform)
    r = _euler_matrix(0.1, -0.2, 0.3)
    c = np.array([10.0, -20.5, 30.25])
    np.testing.assert_allclose(m, r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(t, np.array([1.5, -2.5, 0.3]) + c - r @ c, rtol=0, atol=1e-10)


def test_transform_from_map_errors():
    with pytest.raises(InputError, match=r"lack \(CenterOfRotationPoint"):
        elastix.transform_from_map(
            {"Transform": ["AffineTransform"], "TransformParameters": ["0"] * 12}
        )
    with pytest.raises(
        InputError, match=r"\(TransformParameters \.\.\.\) has 5 values, expected 6"
    ):
        elastix.transform_from_map(
            {
                "Transform": ["EulerTransform"],
                "CenterOfRotationPoint": ["0", "0", "0"],
                "TransformParameters": ["0"] * 5,
            }
        )
    with pytest.raises(InputError, match="is 2-D"):
        elastix.transform_from_map(
            {
                "Transform": ["TranslationTransform"],
                "FixedImageDimension": ["2"],
                "TransformParameters": ["0", "0"],
            }
        )
    with pytest.raises(InputError, match="'BSplineTransform' has no closed form"):
        elastix.transform_from_map(
            {"Transform": ["BSplineTransform"], "CenterOfRotationPoint": ["0", "0", "0"]}
        )


# ---------------------------------------------------------------------------------------------
# elastix: real (tiny) registrations as ground truth
# ---------------------------------------------------------------------------------------------

needs_elastix = pytest.mark.skipif(
    not hasattr(itk, "ElastixRegistrationMethod"), reason="itk-elastix is not installed"
)

ELASTIX_GRID = make_grid(
    (24, 24, 20), (1.4, 1.4, 2.0), (-20.0, 15.0, 40.0), rotation((1, 2, 3), 20.0)
)


def _blob_image(angle_deg: float = 0.0, shift=(0.0, 0.0, 0.0)):
    points = voxel_points(ELASTIX_GRID)
    centre = points[10, 12, 12]
    p = (points - centre) @ rotation((0.3, -0.5, 1.0), angle_deg).T + np.asarray(shift)

    def gauss(c, s):
        return np.exp(-(((p - np.asarray(c)) / np.asarray(s)) ** 2).sum(-1))

    values = 100 * gauss((0, 0, 0), (7, 5, 6)) + 60 * gauss((6, -4, 2), (3, 3, 3))
    values += 40 * gauss((-5, 3, -4), (4, 2, 3))
    return make_image(values.astype(np.float32), ELASTIX_GRID)


class ElastixRuns:
    """Runs tiny elastix registrations once per module and caches them by stage list."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fixed = _blob_image()
        self.moving = _blob_image(8.0, (1.5, -1.0, 2.0))
        self.cache: dict[tuple[str, ...], tuple[object, Path]] = {}

    def run(self, *stages: str, iterations: int = 30):
        key = (*stages, str(iterations))
        if key not in self.cache:
            parameter_object = itk.ParameterObject.New()
            for stage in stages:
                default = "rigid" if stage == "similarity" else stage
                params = parameter_object.GetDefaultParameterMap(default, 1)
                if stage == "similarity":
                    params["Transform"] = ["SimilarityTransform"]
                params["MaximumNumberOfIterations"] = [str(iterations)]
                parameter_object.AddParameterMap(params)
            out = self.folder / "_".join(key)
            out.mkdir()
            method = itk.ElastixRegistrationMethod.New(
                self.fixed,
                self.moving,
                parameter_object=parameter_object,
                log_to_console=False,
                output_directory=str(out),
            )
            method.SetNumberOfThreads(1)
            method.Update()
            self.cache[key] = (method, out)
        return self.cache[key]


@pytest.fixture(scope="module")
def elastix_runs(tmp_path_factory):
    if not hasattr(itk, "ElastixRegistrationMethod"):
        pytest.skip("itk-elastix is not installed")
    return ElastixRuns(tmp_path_factory.mktemp("elastix"))


def _combination(method):
    return method.ConvertToItkTransform(method.GetCombinationTransform())


def _probe_points():
    points = voxel_points(ELASTIX_GRID)
    return [
        points[0, 0, 0],
        points[10, 12, 12],
        points[19, 23, 23],
        points[4, 20, 7],
        points[10, 12, 12] + np.array([0.37, -0.61, 0.45]),
    ]


def _assert_matches_elastix(ours, reference):
    for p in _probe_points():
        expected = transform_point(reference, p)
        tol = 1e-6 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(transform_point(ours, p), expected, rtol=0, atol=tol)


@needs_elastix
@pytest.mark.parametrize(
    ("stage", "kind"),
    [
        ("translation", "TranslationTransform"),
        ("rigid", "EulerTransform"),
        ("similarity", "SimilarityTransform"),
        ("affine", "AffineTransform"),
    ],
)
def test_read_parameter_file_single_stage(elastix_runs, stage, kind):
    method, out = elastix_runs.run(stage)
    path = out / "TransformParameters.0.txt"
    params = elastix.parse_parameter_text(path.read_text())
    assert params["Transform"] == [kind]
    reference = _combination(method)
    # the registration did move things (the test is not about an identity)
    p = _probe_points()[1]
    assert np.linalg.norm(transform_point(reference, p) - p) > 0.5
    _assert_matches_elastix(elastix.read_parameter_file(path), reference)
    _assert_matches_elastix(read_transform(path), reference)
    _assert_matches_elastix(as_transform(path), reference)
    _assert_matches_elastix(as_transform(str(path)), reference)
    _assert_matches_elastix(
        elastix.from_parameter_object(method.GetTransformParameterObject()), reference
    )
    _assert_matches_elastix(as_transform(method.GetTransformParameterObject()), reference)
    _assert_matches_elastix(as_transform(method), reference)
    _assert_matches_elastix(elastix.from_registration_method(method), reference)


def _transformix_check(elastix_runs, params: dict):
    """Our transform of one map vs the transformix deformation field at voxel centres."""
    parameter_object = itk.ParameterObject.New()
    parameter_object.AddParameterMap(params)
    field = itk.array_from_image(
        itk.transformix_deformation_field(elastix_runs.fixed, parameter_object)
    )
    ours = elastix.from_parameter_object(parameter_object)
    points = voxel_points(ELASTIX_GRID)
    for idx in [(0, 0, 0), (10, 12, 12), (19, 23, 23), (3, 17, 5)]:
        np.testing.assert_allclose(
            transform_point(ours, points[idx]) - points[idx],
            field[idx],
            rtol=0,
            atol=1e-4,
            err_msg=str(idx),
        )
    return field


@needs_elastix
def test_euler_compute_zyx_matches_transformix(elastix_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # transformix writes deformationField.nii into the cwd
    method, _ = elastix_runs.run("rigid")
    params = {
        k: list(v) for k, v in method.GetTransformParameterObject().GetParameterMap(0).items()
    }
    params["TransformParameters"] = ["0.3", "-0.2", "0.25", "1.5", "-2.0", "3.0"]
    params["ComputeZYX"] = ["false"]
    field_xyz = _transformix_check(elastix_runs, params)
    params["ComputeZYX"] = ["true"]
    field_zyx = _transformix_check(elastix_runs, params)
    assert np.abs(field_xyz - field_zyx).max() > 0.5  # the flag matters at these angles


@needs_elastix
def test_two_stage_parameter_file_matches_elastix(elastix_runs):
    method, out = elastix_runs.run("rigid", "affine")
    reference = _combination(method)
    _assert_matches_elastix(
        elastix.read_parameter_file(out / "TransformParameters.1.txt"), reference
    )


@needs_elastix
def test_two_stage_parameter_object_matches_elastix(elastix_runs):
    method, _ = elastix_runs.run("rigid", "affine")
    reference = _combination(method)
    _assert_matches_elastix(
        elastix.from_parameter_object(method.GetTransformParameterObject()), reference
    )


@needs_elastix
def test_two_stage_elastix_order_is_initial_first(elastix_runs):
    """Pins elastix's own convention the package must follow: T1(T0(x)), T0 = stage .0."""
    method, out = elastix_runs.run("rigid", "affine")
    reference = _combination(method)
    t0 = elastix.read_parameter_file(out / "TransformParameters.0.txt")
    t1 = elastix.transform_from_map(
        elastix.parse_parameter_text((out / "TransformParameters.1.txt").read_text())
    )
    for p in _probe_points():
        np.testing.assert_allclose(
            transform_point(t1, transform_point(t0, p)),
            transform_point(reference, p),
            rtol=0,
            atol=1e-6,
        )
    # and the other order is measurably different for this run
    p = _probe_points()[0]
    other = transform_point(t0, transform_point(t1, p))
    assert np.abs(other - transform_point(reference, p)).max() > 0.05


@needs_elastix
def test_two_stage_chain_is_followed_from_another_folder(elastix_runs, tmp_path):
    _, out = elastix_runs.run("rigid", "affine")
    for name in ("TransformParameters.0.txt", "TransformParameters.1.txt"):
        shutil.copy(out / name, tmp_path / name)
    text = (tmp_path / "TransformParameters.1.txt").read_text()
    assert str(out / "TransformParameters.0.txt") in text  # chains by absolute path
    moved = elastix.read_parameter_file(tmp_path / "TransformParameters.1.txt")
    original = elastix.read_parameter_file(out / "TransformParameters.1.txt")
    # the copy chains to the same (relative fallback) stage: identical mapping
    (tmp_path / "TransformParameters.1.txt").write_text(
        text.replace(str(out / "TransformParameters.0.txt"), "elsewhere/TransformParameters.0.txt")
    )
    relative = elastix.read_parameter_file(tmp_path / "TransformParameters.1.txt")
    for p in _probe_points():
        np.testing.assert_allclose(
            transform_point(moved, p), transform_point(original, p), rtol=0, atol=1e-12
        )
        np.testing.assert_allclose(
            transform_point(relative, p), transform_point(original, p), rtol=0, atol=1e-12
        )
    # two stages really are composed (not only the last map)
    last = elastix.transform_from_map(elastix.parse_parameter_text(text))
    p = _probe_points()[0]
    assert np.abs(transform_point(relative, p) - transform_point(last, p)).max() > 0.05


@needs_elastix
def test_parameter_file_errors(elastix_runs, tmp_path):
    _, out = elastix_runs.run("rigid", "affine")
    text = (out / "TransformParameters.1.txt").read_text()
    missing = tmp_path / "TransformParameters.1.txt"
    # neither the chained path nor tmp_path/TransformParameters.0.txt exists
    missing.write_text(
        text.replace(
            str(out / "TransformParameters.0.txt"),
            str(tmp_path / "gone" / "TransformParameters.0.txt"),
        )
    )
    with pytest.raises(
        InputError,
        match=r"chains to initial transform .*gone.* which does not "
        r"exist; keep the TransformParameters files",
    ):
        elastix.read_parameter_file(missing)

    not_elastix = tmp_path / "notes.txt"
    not_elastix.write_text("(Foo 1)\n(Bar 2)\n")
    with pytest.raises(
        InputError,
        match=r"is not an elastix TransformParameters file \(no "
        r"\(Transform \.\.\.\) entry\)",
    ):
        elastix.read_parameter_file(not_elastix)

    shutil.copy(out / "TransformParameters.0.txt", tmp_path / "TransformParameters.0.txt")
    add = tmp_path / "add.txt"
    add.write_text(
        text.replace(
            '(HowToCombineTransforms "Compose")', '(HowToCombineTransforms "Add")'
        ).replace(
            str(out / "TransformParameters.0.txt"), str(tmp_path / "TransformParameters.0.txt")
        )
    )
    with pytest.raises(InputError, match="HowToCombineTransforms 'Add' is not supported"):
        elastix.read_parameter_file(add)

    loop = tmp_path / "loop.txt"
    loop.write_text(text.replace(str(out / "TransformParameters.0.txt"), str(loop)))
    with pytest.raises(InputError, match="chain loops"):
        elastix.read_parameter_file(loop)

    empty = itk.ParameterObject.New()
    with pytest.raises(InputError, match="holds no parameter map"):
        elastix.from_parameter_object(empty)


@needs_elastix
def test_registration_method_that_has_not_run(elastix_runs):
    parameter_object = itk.ParameterObject.New()
    parameter_object.AddParameterMap(parameter_object.GetDefaultParameterMap("rigid", 1))
    method = itk.ElastixRegistrationMethod.New(
        elastix_runs.fixed,
        elastix_runs.moving,
        parameter_object=parameter_object,
        log_to_console=False,
    )
    with pytest.raises(InputError, match="has no transform; call Update"):
        as_transform(method)


@needs_elastix
def test_bspline_parameter_file_is_densified_on_the_fixed_grid(elastix_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    method, out = elastix_runs.run("bspline", iterations=15)
    reference = _combination(method)
    path = out / "TransformParameters.0.txt"
    with pytest.raises(
        InputError,
        match=r"\['BSplineTransform'\] have no closed form; pass the "
        "fixed image",
    ):
        elastix.read_parameter_file(path)
    ours = elastix.read_parameter_file(path, elastix_runs.fixed)
    assert linear_parts(ours) is None
    assert Grid.of(ours.GetDisplacementField()).same_as(ELASTIX_GRID)
    points = voxel_points(ELASTIX_GRID)
    moved = 0.0
    for idx in [(0, 0, 0), (10, 12, 12), (19, 23, 23), (3, 17, 5), (12, 4, 20)]:
        expected = transform_point(reference, points[idx])
        moved = max(moved, float(np.linalg.norm(expected - points[idx])))
        np.testing.assert_allclose(
            transform_point(ours, points[idx]), expected, rtol=0, atol=1e-3, err_msg=str(idx)
        )
    assert moved > 0.5
    # also through as_transform with the fixed image and from the parameter object
    via_path = as_transform(path, elastix_runs.fixed)
    via_object = as_transform(method.GetTransformParameterObject(), elastix_runs.fixed)
    for transform in (via_path, via_object):
        np.testing.assert_allclose(
            transform_point(transform, points[10, 12, 12]),
            transform_point(reference, points[10, 12, 12]),
            rtol=0,
            atol=1e-3,
        )


@needs_elastix
def test_densifying_writes_nothing_to_the_working_directory(elastix_runs, tmp_path, monkeypatch):
    _, out = elastix_runs.run("bspline", iterations=15)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    elastix.read_parameter_file(out / "TransformParameters.0.txt", elastix_runs.fixed)
    assert sorted(p.name for p in work.iterdir()) == []


@pytest.mark.parametrize("kind", ["field", "affine"])
def test_warp_image_without_the_itk_resampler_computes_what_it_does(kind):
    """warp_image samples with torch for our displacement fields and for linear transforms;
    on an oblique, anisotropic, offset pair it agrees with ITK's ResampleImageFilter except
    within sample_image's slack (1e-3 voxels) of the moving extent or of a nearest tie."""
    from itk_samconvex.apps.phantom import make_phantom_pair
    from itk_samconvex.edge.space import SAMPLING_SLACK
    from itk_samconvex.edge.transforms import _warp_in_torch, _warp_with_itk, warp_image

    turn = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
    pair = make_phantom_pair(
        size=(40, 36, 30),
        spacing=(2.5, 3.0, 4.0),
        direction=turn,
        moving_size=(44, 40, 28),
        moving_spacing=(2.0, 2.7, 4.5),
        moving_origin=(-61.0, -48.5, -55.0),
    )
    grid, moving_grid = Grid.of(pair.fixed), Grid.of(pair.moving)
    u = np.random.default_rng(0).normal(0.0, 3.0, (*grid.shape, 3))
    if kind == "field":
        transform = displacement_transform(u, grid)
        points_mm = u
    else:
        transform = itk.AffineTransform[itk.D, 3].New()
        transform.SetMatrix(itk.matrix_from_array(rotation([1, 2, 3], 9.0)))
        transform.SetTranslation([4.0, -3.0, 6.0])
        points_mm = None
    index = np.stack(np.indices(grid.shape)[::-1], -1).astype(np.float64)
    points = np.asarray(grid.origin) + index @ (grid.direction_matrix @ np.diag(grid.spacing)).T
    if points_mm is not None:
        points = points + points_mm
    else:
        m, t = linear_parts(transform)
        points = points @ m.T + t
    to_moving = np.linalg.inv(moving_grid.direction_matrix @ np.diag(moving_grid.spacing))
    continuous = (points - np.asarray(moving_grid.origin)) @ to_moving.T
    size = np.asarray(moving_grid.size)
    near_edge = (np.abs(continuous + 0.5) < 2 * SAMPLING_SLACK) | (
        np.abs(continuous - (size - 0.5)) < 2 * SAMPLING_SLACK
    )
    near_tie = np.abs(continuous - np.floor(continuous) - 0.5) < 2 * SAMPLING_SLACK
    as_short = itk.cast_image_filter(pair.moving, ttype=(type(pair.moving), itk.Image[itk.SS, 3]))
    cases = ((pair.moving, False, "F"), (as_short, False, "SS"), (pair.moving_labels, True, "UC"))
    for image, nearest, code in cases:
        default = 0 if nearest else (-1000 if code == "SS" else -1000.0)
        assert _warp_in_torch(image, transform, pair.fixed, nearest, default, code) is not None
        ours = itk.array_from_image(warp_image(image, transform, pair.fixed, nearest, default))
        itks = itk.array_from_image(
            _warp_with_itk(image, transform, pair.fixed, nearest, default, code)
        )
        assert ours.dtype == itks.dtype
        # float round-off may move a truncated integer by one
        tolerance = {"F": 1e-2, "SS": 1.0, "UC": 0.0}[code]
        differs = np.abs(ours.astype(np.float64) - itks) > tolerance
        allowed = near_edge.any(-1) | (near_tie.any(-1) if nearest else False)
        assert not (differs & ~allowed).any(), (kind, nearest, int((differs & ~allowed).sum()))
        assert differs.mean() < 1e-3
        if code != "F":  # ITK's cast (clamp, truncate) is reproduced, not merely approached
            assert (ours != itks).mean() < 1e-3
        outside = ((continuous < -0.5 - 1e-2) | (continuous > size - 0.5 + 1e-2)).any(-1)
        assert outside.any() and (ours[outside] == default).all()


def test_warp_image_falls_back_to_itk_for_other_transforms_and_pixel_types(oblique_grid):
    """A B-spline transform, or a pixel type float32 cannot hold exactly, goes through ITK's
    resampler."""
    from itk_samconvex.edge.transforms import _warp_in_torch

    image = scalar_image(np.ones(oblique_grid.shape, np.int16), oblique_grid, "SS")
    identity = itk.IdentityTransform[itk.D, 3].New()
    assert _warp_in_torch(image, identity, image, False, 0.0, "SS") is not None
    as_int = scalar_image(np.ones(oblique_grid.shape, np.int32), oblique_grid, "SI")
    assert _warp_in_torch(as_int, identity, as_int, False, 0.0, "SI") is None  # not exact
    bspline = itk.BSplineTransform[itk.D, 3, 3].New()
    as_float = scalar_image(np.zeros(oblique_grid.shape, np.float32), oblique_grid, "F")
    assert _warp_in_torch(as_float, bspline, as_float, False, 0.0, "F") is None
