"""``itk_samconvex.apps.evaluate`` and ``samconvex evaluate`` against hand-computable cases.

Every case uses the oblique (20 deg about (1, 2, 3)), anisotropic (0.7 x 0.7 x 2.5 mm),
offset grid of the ``oblique_grid`` fixture (24 x 20 x 12 voxels), so that any mix-up of
index and physical space, of axis order or of spacing changes the numbers.
"""

from __future__ import annotations

import csv
import json
import math

import itk
import numpy as np
import pytest

from helpers import index_to_point, make_grid, make_image, voxel_points
from itk_samconvex.apps.evaluate import EvaluationResult, evaluate
from itk_samconvex.cli import main
from itk_samconvex.edge.io import read_landmarks
from itk_samconvex.edge.space import Grid, vector_image
from itk_samconvex.edge.transforms import displacement_transform
from itk_samconvex.errors import InputError

SHIFT_VOXELS = 2  # moving structures sit 2 voxels further along index axis x


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _boxes(shift: int = 0) -> np.ndarray:
    """Two label boxes (z, y, x) every voxel of which is a surface voxel.

    Label 1: 8 (x) x 2 (y) x 2 (z) voxels; label 2: 2 (x) x 6 (y) x 2 (z) voxels; both moved
    by ``shift`` voxels along index axis x.
    """
    a = np.zeros((12, 20, 24), dtype=np.uint8)
    a[3:5, 3:5, 4 + shift : 12 + shift] = 1
    a[7:9, 10:16, 15 + shift : 17 + shift] = 2
    return a


def _blank(grid: Grid):
    return make_image(np.zeros(grid.shape, dtype=np.float32), grid)


def _shift_mm(grid: Grid) -> np.ndarray:
    """Physical vector (LPS mm) of SHIFT_VOXELS steps along index axis x."""
    return SHIFT_VOXELS * grid.spacing[0] * grid.direction_matrix[:, 0]


def _translation(offset) -> itk.TranslationTransform:
    t = itk.TranslationTransform[itk.D, 3].New()
    t.SetOffset([float(v) for v in offset])
    return t


def _points_inside(grid: Grid, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random LPS points strictly inside the voxel-centre box of ``grid``."""
    rng = np.random.default_rng(seed)
    index = rng.uniform(0.0, 1.0, size=(n, 3)) * (np.asarray(grid.size) - 1)
    return index_to_point(grid, index)


def _write_csv(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------
# two cubes: Dice and HD95
# ---------------------------------------------------------------------------------------------
#
# Hand computation for a shift of 2 voxels (1.4 mm) along index x:
#   label 1 (8 voxels long along x): overlap 6 of 8 columns -> Dice = 2*6/(8+8) = 0.75.
#   label 2 (2 voxels long along x): no overlap -> Dice 0; mean Dice 0.375.
#   HD95: every voxel is a surface voxel. Label 1, per (y, z) column pair, distances fixed ->
#   moving are 1.4, 0.7, 0 x 6 and moving -> fixed the same: pooled 64 values = 48 zeros,
#   8 x 0.7, 8 x 1.4; the 95th percentile (position 0.95 * 63 = 59.85, sorted) is 1.4 mm.
#   Label 2: pooled values half 0.7, half 1.4 -> 1.4 mm.


@pytest.fixture
def cube_images(oblique_grid):
    """Fixed and moving label maps (same grid), moving boxes shifted by 2 voxels along x."""
    return (
        make_image(_boxes(), oblique_grid, itk.UC),
        make_image(_boxes(SHIFT_VOXELS), oblique_grid, itk.UC),
    )


def test_two_cubes_identity_gives_hand_dice_and_hd95(oblique_grid, cube_images):
    fixed_labels, moving_labels = cube_images
    identity = itk.IdentityTransform[itk.D, 3].New()
    result = evaluate(
        _blank(oblique_grid), identity, fixed_labels=fixed_labels, moving_labels=moving_labels
    )
    assert result.label_ids == [1, 2]
    for scores in (result.dice["before_identity"], result.dice["after"]):
        assert scores == {1: 0.75, 2: 0.0}
    assert result.mean_dice("before_identity") == 0.375
    assert result.mean_dice("after") == 0.375
    for distances in (result.hd95_mm["before_identity"], result.hd95_mm["after"]):
        assert distances[1] == pytest.approx(1.4, abs=1e-12)
        assert distances[2] == pytest.approx(1.4, abs=1e-12)
    assert result.jacobian["min"] == 1.0 and result.jacobian["max"] == 1.0
    assert result.jacobian["sdlogj"] == 0.0
    assert result.jacobian_voxels == 24 * 20 * 12


@pytest.mark.parametrize("layout", ["shifted array", "shifted origin"])
def test_two_cubes_translation_undoes_the_shift(oblique_grid, cube_images, layout):
    fixed_labels, moving_labels = cube_images
    t = _shift_mm(oblique_grid)
    if layout == "shifted origin":
        # Same array as the fixed labels, but the moving image sits t further in LPS space:
        # only physical-space resampling can see the shift.
        moved = make_grid(
            oblique_grid.size,
            oblique_grid.spacing,
            np.asarray(oblique_grid.origin) + t,
            oblique_grid.direction_matrix,
        )
        moving_labels = make_image(_boxes(), moved, itk.UC)
    result = evaluate(
        _blank(oblique_grid),
        _translation(t),
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
    )
    assert result.dice["before_identity"] == {1: 0.75, 2: 0.0}
    assert result.dice["after"] == {1: 1.0, 2: 1.0}
    assert result.mean_dice("after") == 1.0
    assert result.hd95_mm["after"] == {1: 0.0, 2: 0.0}
    assert result.mean_hd95_mm("before_identity") == pytest.approx(1.4, abs=1e-12)
    assert result.mean_hd95_mm("after") == 0.0
    assert result.jacobian["percent_nonpositive"] == 0.0


def test_requested_label_absent_everywhere_is_nan_and_null(oblique_grid, cube_images):
    fixed_labels, moving_labels = cube_images
    result = evaluate(
        _blank(oblique_grid),
        _translation(_shift_mm(oblique_grid)),
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        label_ids=[1, 7],
    )
    assert result.label_ids == [1, 7]
    assert result.dice["after"][1] == 1.0 and math.isnan(result.dice["after"][7])
    assert result.mean_dice("after") == 1.0  # NaN ignored
    as_dict = result.to_dict()
    assert as_dict["labels"]["per_label"]["7"]["dice_after"] is None
    json.dumps(as_dict, allow_nan=False)  # strict JSON


# ---------------------------------------------------------------------------------------------
# known translation: TRE
# ---------------------------------------------------------------------------------------------

T_MM = np.array([3.0, -4.0, 12.0])  # |t| = 13 mm, exactly representable in float32


def test_translation_tre_is_zero_after_and_norm_t_before(oblique_grid):
    fixed_points = _points_inside(oblique_grid, 40)
    moving_points = fixed_points + T_MM
    result = evaluate(
        _blank(oblique_grid),
        _translation(T_MM),
        fixed_points=fixed_points,
        moving_points=moving_points,
    )
    assert result.tre_mm["after"].shape == (40,)
    assert result.tre_mm["after"].max() < 1e-9
    np.testing.assert_allclose(result.tre_mm["before_identity"], 13.0, rtol=0, atol=1e-12)
    before = result.tre_stats("before_identity")
    for name in ("mean", "median", "p95", "max"):
        assert before[name] == pytest.approx(13.0, abs=1e-12)
    assert before["std"] < 1e-12
    assert result.to_dict()["landmarks"]["count"] == 40


def test_constant_field_transform_on_oblique_grid(oblique_grid):
    field = np.broadcast_to(T_MM, (*oblique_grid.shape, 3)).copy()
    transform = displacement_transform(field, oblique_grid)
    fixed_points = _points_inside(oblique_grid, 30, seed=1)
    result = evaluate(
        _blank(oblique_grid),
        transform,
        fixed_points=fixed_points,
        moving_points=fixed_points + T_MM,
    )
    assert result.tre_mm["after"].max() < 1e-6
    assert result.tre_stats("before_identity")["mean"] == pytest.approx(13.0, abs=1e-12)
    assert result.landmarks_outside_field == 0
    assert result.jacobian["min"] == pytest.approx(1.0, abs=1e-12)
    assert result.jacobian["max"] == pytest.approx(1.0, abs=1e-12)
    assert "field on the fixed grid" in result.transform


def test_landmark_outside_the_field_is_counted(oblique_grid):
    field = np.broadcast_to(T_MM, (*oblique_grid.shape, 3)).copy()
    outside = index_to_point(oblique_grid, [[-3.0, 5.0, 5.0]])
    points = np.vstack([_points_inside(oblique_grid, 4), outside])
    result = evaluate(
        _blank(oblique_grid),
        vector_image(field, oblique_grid),
        fixed_points=points,
        moving_points=points + T_MM,
    )
    assert result.landmarks_outside_field == 1
    assert result.tre_mm["after"].max() < 1e-6  # border value replicated: still t


def test_single_precision_field_transform_is_used_through_its_field(oblique_grid):
    field = np.broadcast_to(T_MM, (*oblique_grid.shape, 3)).astype(np.float32)
    transform = itk.DisplacementFieldTransform[itk.F, 3].New()
    transform.SetDisplacementField(vector_image(field, oblique_grid, itk.F))
    points = _points_inside(oblique_grid, 5, seed=6)
    result = evaluate(
        _blank(oblique_grid), transform, fixed_points=points, moving_points=points + T_MM
    )
    assert result.tre_mm["after"].max() < 1e-6


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_field_file_on_disk(oblique_grid, tmp_path, suffix):
    field = np.broadcast_to(T_MM, (*oblique_grid.shape, 3)).astype(np.float32)
    path = tmp_path / f"field{suffix}"
    itk.imwrite(vector_image(field, oblique_grid), str(path), compression=True)
    fixed_points = _points_inside(oblique_grid, 20, seed=2)
    result = evaluate(
        _blank(oblique_grid), path, fixed_points=fixed_points, moving_points=fixed_points + T_MM
    )
    assert result.tre_mm["after"].max() < 1e-6
    assert result.tre_stats("before_identity")["max"] == pytest.approx(13.0, abs=1e-12)
    assert abs(result.jacobian["min"] - 1.0) < 1e-6
    assert result.jacobian["percent_nonpositive"] == 0.0


# ---------------------------------------------------------------------------------------------
# known Jacobian
# ---------------------------------------------------------------------------------------------

# Upper triangular: det(M) = 1.2 * 0.9 * 1.1 = 1.188 by hand.
M = np.array([[1.2, 0.1, 0.05], [0.0, 0.9, 0.2], [0.0, 0.0, 1.1]])
DET_M = 1.188
CENTRE = np.array([-20.0, 20.0, 70.0])
TRANSLATION = np.array([1.5, -2.5, 4.0])


def _affine() -> itk.AffineTransform:
    affine = itk.AffineTransform[itk.D, 3].New()
    affine.SetCenter([float(v) for v in CENTRE])
    affine.SetMatrix(itk.matrix_from_array(M))
    affine.SetTranslation([float(v) for v in TRANSLATION])
    return affine


def _affine_map(points: np.ndarray) -> np.ndarray:
    """T(p) = M (p - c) + c + t, the affine above by hand."""
    return (points - CENTRE) @ M.T + CENTRE + TRANSLATION


def _assert_all_det_m(result: EvaluationResult, tolerance: float) -> None:
    jac = result.jacobian
    assert abs(jac["min"] - DET_M) < tolerance
    assert abs(jac["max"] - DET_M) < tolerance
    assert jac["sdlogj"] < tolerance
    assert jac["sdlogj_l2r"] < tolerance
    assert jac["percent_nonpositive"] == 0.0


def test_affine_jacobian_is_det_m_everywhere(oblique_grid):
    fixed_points = _points_inside(oblique_grid, 25, seed=3)
    result = evaluate(
        _blank(oblique_grid),
        _affine(),
        fixed_points=fixed_points,
        moving_points=_affine_map(fixed_points),
    )
    _assert_all_det_m(result, 1e-12)
    assert result.tre_mm["after"].max() < 1e-9
    assert "linear transform in closed form" in result.transform


def test_dense_affine_field_jacobian_is_det_m(oblique_grid):
    points = voxel_points(oblique_grid)
    field = _affine_map(points) - points  # float64, LPS mm, on the fixed grid
    transform = displacement_transform(field, oblique_grid)
    fixed_points = _points_inside(oblique_grid, 25, seed=4)
    result = evaluate(
        _blank(oblique_grid),
        transform,
        fixed_points=fixed_points,
        moving_points=_affine_map(fixed_points),
    )
    _assert_all_det_m(result, 1e-9)
    # trilinear interpolation reproduces an affine field exactly
    assert result.tre_mm["after"].max() < 1e-9


def test_affine_field_on_another_grid_is_resampled(oblique_grid):
    # A coarser, differently rotated field grid that covers the fixed grid with a margin:
    # ITK's linear interpolation of an affine field is exact, up to float32 rounding.
    direction = np.linalg.qr(np.array([[1.0, 0.2, 0.0], [-0.1, 1.0, 0.3], [0.0, -0.2, 1.0]]))[0]
    centre = voxel_points(oblique_grid).reshape(-1, 3).mean(axis=0)
    size = (40, 40, 40)
    spacing = (1.5, 1.5, 1.5)
    origin = centre - direction @ (0.5 * (np.asarray(size) - 1) * np.asarray(spacing))
    field_grid = make_grid(size, spacing, origin, direction)
    points = voxel_points(field_grid)
    transform = displacement_transform(_affine_map(points) - points, field_grid)
    result = evaluate(_blank(oblique_grid), transform)
    _assert_all_det_m(result, 1e-4)
    assert "densified" in result.transform


# The fold: u = 0.7 mm * g(i) * (index-x direction), g = 0 for i <= 9 and -3 voxels for
# i >= 10. Central differences give g' = -1.5 at i = 9 and 10 and 0 elsewhere, and
# det(I + g' d d^T) = 1 + g' (|d| = 1): det = -0.5 on 2 of the 24 x-columns, 1 elsewhere.
FOLD_FRACTION = 2 / 24


def _fold_field(grid: Grid) -> np.ndarray:
    g = np.where(np.arange(grid.size[0]) >= 10, -3.0, 0.0)
    u = g[None, None, :, None] * grid.spacing[0] * grid.direction_matrix[:, 0]
    return np.broadcast_to(u, (*grid.shape, 3)).copy()


def test_fold_gives_hand_computed_fraction(oblique_grid):
    field = vector_image(_fold_field(oblique_grid), oblique_grid, itk.D)
    result = evaluate(_blank(oblique_grid), field)
    jac = result.jacobian
    assert jac["percent_nonpositive"] == pytest.approx(100 * FOLD_FRACTION, abs=1e-12)
    assert jac["min"] == pytest.approx(-0.5, abs=1e-12)
    assert jac["max"] == pytest.approx(1.0, abs=1e-12)
    # plain: log clips det at 1e-9; Learn2Reg: log(det + 3) = log 2.5 vs log 4
    spread = math.sqrt(FOLD_FRACTION * (1 - FOLD_FRACTION))
    assert jac["sdlogj"] == pytest.approx(-math.log(1e-9) * spread, rel=1e-9)
    assert jac["sdlogj_l2r"] == pytest.approx(math.log(4 / 2.5) * spread, rel=1e-9)


def test_mask_restricts_the_jacobian_statistics(oblique_grid, tmp_path):
    mask = np.zeros(oblique_grid.shape, dtype=np.uint8)
    mask[:, :, 8:12] = 1  # columns 8..11: two of them fold
    path = tmp_path / "mask.mha"
    itk.imwrite(make_image(mask, oblique_grid, itk.UC), str(path))
    transform = displacement_transform(_fold_field(oblique_grid), oblique_grid)
    result = evaluate(_blank(oblique_grid), transform, mask=path)
    assert result.jacobian_voxels == 4 * 20 * 12
    assert result.jacobian["percent_nonpositive"] == 50.0
    assert result.jacobian_region == "mask"


# ---------------------------------------------------------------------------------------------
# landmark files
# ---------------------------------------------------------------------------------------------

POINTS = np.array([[1.5, -2.0, 3.25], [10.0, 20.0, -30.5], [-7.0, 0.0, 2.0]])


@pytest.mark.parametrize(
    "lines",
    [
        ["x,y,z", "1.5,-2.0,3.25", "10,20,-30.5", "-7,0,2"],
        ["index,x,y,z", "0,1.5,-2.0,3.25", "1,10,20,-30.5", "2,-7,0,2"],
        ["1.5 -2.0 3.25", "10 20 -30.5", "", "# a comment", "-7 0 2"],
        ["p1;1.5;-2.0;3.25", "p2;10;20;-30.5", "p3;-7;0;2"],
        ["X (mm),Y (mm),Z (mm),radius", "1.5,-2.0,3.25,4", "10,20,-30.5,4", "-7,0,2,4"],
        [
            "# CoordinateSystem = RAS",
            "# columns = id,x,y,z,label",
            "a,-1.5,2.0,3.25,F-1",
            "b,-10,-20,-30.5,F-2",
            "c,7,0,2,F-3",
        ],
    ],
    ids=["header", "index column", "whitespace", "names", "named columns", "slicer ras"],
)
def test_read_landmarks_formats(tmp_path, lines):
    points = read_landmarks(_write_csv(tmp_path / "points.csv", lines))
    np.testing.assert_array_equal(points, POINTS)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["1.0,2.0", "3.0,4.0"], "2 numeric column"),
        (["1,2,3", "4,5"], "line 2 has 2 columns"),
        (["1,2,3", "4,nan,6"], "NaN or infinite"),
        (["x,y,z"], "no landmark line"),
        (["# only a comment"], "holds no landmark"),
    ],
)
def test_read_landmarks_errors_name_the_file(tmp_path, lines, problem):
    path = _write_csv(tmp_path / "bad.csv", lines)
    with pytest.raises(InputError, match=problem) as error:
        read_landmarks(path)
    assert path in str(error.value)


def test_landmark_count_mismatch_names_both_files(oblique_grid, tmp_path):
    fixed = _write_csv(tmp_path / "f.csv", ["1,2,3", "4,5,6"])
    moving = _write_csv(tmp_path / "m.csv", ["1,2,3"])
    with pytest.raises(InputError, match="has 2 landmarks but") as error:
        evaluate(_blank(oblique_grid), _translation(T_MM), fixed_points=fixed, moving_points=moving)
    assert fixed in str(error.value) and moving in str(error.value)


# ---------------------------------------------------------------------------------------------
# other input errors
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(oblique_grid, cube_images, tmp_path):
    fixed = _blank(oblique_grid)
    identity = itk.IdentityTransform[itk.D, 3].New()
    fixed_labels, moving_labels = cube_images
    with pytest.raises(TypeError, match="numpy array without geometry"):
        evaluate(fixed, np.zeros((*oblique_grid.shape, 3)))
    with pytest.raises(InputError, match="1 component"):
        evaluate(fixed, fixed)
    with pytest.raises(InputError, match="single-precision"):
        evaluate(fixed, itk.AffineTransform[itk.F, 3].New())
    with pytest.raises(InputError, match="fixed_labels given alone"):
        evaluate(fixed, identity, fixed_labels=fixed_labels)
    with pytest.raises(InputError, match="moving_points given alone"):
        evaluate(fixed, identity, moving_points=POINTS)
    other = make_grid((24, 20, 12), (1.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    with pytest.raises(InputError, match="fixed label map is not on the fixed image's grid"):
        evaluate(
            fixed,
            identity,
            fixed_labels=make_image(_boxes(), other, itk.UC),
            moving_labels=moving_labels,
        )
    with pytest.raises(InputError, match="mask is empty"):
        evaluate(
            fixed,
            identity,
            mask=make_image(np.zeros(oblique_grid.shape, np.uint8), oblique_grid, itk.UC),
        )
    with pytest.raises(FileNotFoundError, match=r"missing\.h5"):
        evaluate(fixed, tmp_path / "missing.h5")
    with pytest.raises(InputError, match="unknown suffix"):
        evaluate(fixed, _write_csv(tmp_path / "transform.csv", ["1,2,3"]))


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli_files(oblique_grid, tmp_path):
    """Fixed image, label maps, a translation file and landmark CSVs on disk."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    t = _shift_mm(oblique_grid)
    paths = {name: folder / f"{name}.nii.gz" for name in ("fixed", "fixed_labels", "moving_labels")}
    itk.imwrite(_blank(oblique_grid), str(paths["fixed"]), compression=True)
    itk.imwrite(make_image(_boxes(), oblique_grid, itk.UC), str(paths["fixed_labels"]))
    itk.imwrite(make_image(_boxes(SHIFT_VOXELS), oblique_grid, itk.UC), str(paths["moving_labels"]))
    paths["transform"] = folder / "shift.h5"
    itk.transformwrite([_translation(t)], str(paths["transform"]))
    fixed_points = _points_inside(oblique_grid, 6, seed=5)
    paths["fixed_landmarks"] = folder / "fixed.csv"
    _write_csv(
        paths["fixed_landmarks"],
        ["index,x,y,z"]
        + [f"{i},{p[0]:.17g},{p[1]:.17g},{p[2]:.17g}" for i, p in enumerate(fixed_points)],
    )
    paths["moving_landmarks"] = folder / "moving.csv"
    _write_csv(
        paths["moving_landmarks"],
        [f"{p[0]:.17g} {p[1]:.17g} {p[2]:.17g}" for p in fixed_points + t],
    )
    return {name: str(path) for name, path in paths.items()}


def _argv(files: dict[str, str], *extra: str) -> list[str]:
    return [
        "evaluate",
        files["fixed"],
        files["transform"],
        "--fixed-labels",
        files["fixed_labels"],
        "--moving-labels",
        files["moving_labels"],
        "--fixed-landmarks",
        files["fixed_landmarks"],
        "--moving-landmarks",
        files["moving_landmarks"],
        *extra,
    ]


def test_cli_writes_json_and_csv(cli_files, tmp_path, capsys):
    prefix = tmp_path / "out" / "pair01"
    assert main(_argv(cli_files, "-o", str(prefix))) == 0
    out = capsys.readouterr().out
    assert "Dice mean" in out and "SDlogJ Learn2Reg" in out and "pair01.csv" in out
    report = json.loads((tmp_path / "out" / "pair01.json").read_text())
    assert report["labels"]["mean"]["dice_before_identity"] == 0.375
    assert report["labels"]["mean"]["dice_after"] == 1.0
    assert report["labels"]["per_label"]["1"]["hd95_mm_before_identity"] == pytest.approx(
        1.4, abs=1e-6
    )
    assert report["landmarks"]["count"] == 6
    assert report["landmarks"]["tre_mm_before_identity"]["mean"] == pytest.approx(1.4, abs=1e-9)
    assert report["landmarks"]["tre_mm_after"]["max"] < 1e-9
    assert report["jacobian"]["sdlogj"] == 0.0
    assert report["inputs"]["transform"] == cli_files["transform"]
    with open(tmp_path / "out" / "pair01.csv", newline="", encoding="utf-8") as handle:
        rows = {(r["metric"], r["item"], r["state"]): r["value"] for r in csv.DictReader(handle)}
    assert float(rows["dice", "label 1", "before_identity"]) == 0.75
    assert float(rows["dice", "mean", "after"]) == 1.0
    assert float(rows["tre", "mean", "before_identity"]) == pytest.approx(1.4, abs=1e-9)
    assert ("jacobian", "sdlogj_l2r", "before_identity") not in rows
    assert float(rows["jacobian", "percent_nonpositive", "after"]) == 0.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pair01.csv", "pair01.json"]


def test_cli_refuses_to_overwrite(cli_files, tmp_path, capsys):
    prefix = str(tmp_path / "result")
    assert main(_argv(cli_files, "-o", prefix, "-q")) == 0
    assert capsys.readouterr().out == ""
    before = (tmp_path / "result.json").read_text()
    assert main(_argv(cli_files, "-o", prefix, "-q")) == 2
    err = capsys.readouterr().err
    assert err.startswith("samconvex: error: ") and "--overwrite" in err
    assert "result.json" in err
    assert (tmp_path / "result.json").read_text() == before
    assert main(_argv(cli_files, "-o", prefix, "-q", "--overwrite")) == 0


@pytest.mark.parametrize(
    ("moving_lines", "problem"),
    [
        (["1.0,2.0", "3.0,4.0"], "numeric column"),
        (["1,2,3"], "has 6 landmarks but"),
    ],
)
def test_cli_bad_landmark_file_exits_2_naming_it(
    cli_files, tmp_path, capsys, moving_lines, problem
):
    bad = _write_csv(tmp_path / "bad_moving.csv", moving_lines)
    files = {**cli_files, "moving_landmarks": bad}
    assert main(_argv(files, "-q")) == 2
    err = capsys.readouterr().err
    assert err.startswith("samconvex: error: ") and bad in err and problem in err
    assert err.count("\n") == 1  # one line


def test_cli_missing_input_exits_2(cli_files, tmp_path, capsys):
    missing = str(tmp_path / "nope.h5")
    assert main(["evaluate", cli_files["fixed"], missing, "-q"]) == 2
    err = capsys.readouterr().err
    assert missing in err and "does not exist" in err
