"""Real CT from ../shared/data: a known warp of a real scan, and real inter-patient pairs.

These read the shared data through the ``shared_data`` fixture, which skips (with the
reason) when the folder is absent, as in a user's fresh clone; CI always has it.
"""

from __future__ import annotations

import json

import itk
import numpy as np
import pytest

from itk_samconvex import register, warp_image
from itk_samconvex.apps.phantom import grid_points_mm
from itk_samconvex.edge.space import Grid, scalar_image
from itk_samconvex.edge.transforms import displacement_transform
from itk_samconvex.metrics import dice_per_label, jacobian_determinant, jacobian_stats

pytestmark = pytest.mark.slow


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(degrees)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def smooth_warp(points: np.ndarray, centre: np.ndarray, max_mm: float, seed: int) -> np.ndarray:
    """A sum of six Gaussian bumps (sigma 35-60 mm) scaled to ``max_mm`` at its largest."""
    rng = np.random.default_rng(seed)
    centres = centre + rng.uniform(-60, 60, (6, 3))
    amplitudes = rng.normal(0, 1, (6, 3))
    sigmas = rng.uniform(35, 60, 6)
    field = np.zeros_like(points)
    for c, a, s in zip(centres, amplitudes, sigmas, strict=True):
        weight = np.exp(-((points - c) ** 2).sum(-1) / (2 * s * s))
        field += weight[..., None] * a
    return field * (max_mm / np.linalg.norm(field, axis=-1).max())


@pytest.fixture(scope="module")
def known_warp(shared_data):
    """A real thoracic CT warped by a known smooth deformation (max 15 mm) onto an oblique
    (17 deg about (1, 2, 3)), anisotropic (0.7 x 0.7 x 2.5 mm), offset grid.

    fixed(x) = source(x + u(x)) with every x + u(x) inside the source scan, so the truth u is
    observable everywhere; moving = the source scan as stored.
    """
    source = itk.imread(str(shared_data / "unlabeled" / "ibsi_pat1_lung_ct.nii.gz"), itk.F)
    src = Grid.of(source)
    centre = np.asarray(src.origin) + src.direction_matrix @ (
        np.asarray(src.spacing) * (np.asarray(src.size) - 1) / 2
    )
    spacing = np.array([0.7, 0.7, 2.5])
    size = np.round(np.array([140.0, 130.0, 90.0]) / spacing).astype(int)
    direction = rotation([1, 2, 3], 17)
    origin = centre + np.array([3.0, -4.0, 5.0]) - direction @ (spacing * (size - 1) / 2)
    grid = Grid(
        tuple(int(v) for v in size), tuple(spacing), tuple(origin), tuple(direction.ravel())
    )
    points = grid_points_mm(grid)
    truth = smooth_warp(points, centre, 15.0, seed=1).astype(np.float32)
    index = (points + truth - src.origin) @ np.linalg.inv(
        src.direction_matrix @ np.diag(src.spacing)
    ).T
    assert np.all((index > -0.5) & (index < np.asarray(src.size) - 0.5)), "truth leaves the scan"
    reference = scalar_image(np.zeros(grid.shape, np.float32), grid)
    fixed = warp_image(
        source, displacement_transform(truth, grid), reference, default_value=-1024.0
    )
    return fixed, source, truth


def test_known_warp_of_a_real_ct_is_recovered(known_warp):
    fixed, moving, truth = known_warp
    result = register(fixed, moving)
    estimate = np.asarray(itk.array_view_from_image(result.field))
    body = np.asarray(itk.array_view_from_image(fixed)) > -500
    error = np.linalg.norm(estimate - truth, axis=-1)[body]
    grid = Grid.of(fixed)
    det = jacobian_determinant(estimate, grid.spacing, grid.direction_matrix)
    stats = jacobian_stats(det)
    print(
        f"\nknown warp: mean |u| {np.linalg.norm(truth, axis=-1)[body].mean():.2f} mm, "
        f"end-point error mean {error.mean():.3f} mm, p95 {np.percentile(error, 95):.3f} mm, "
        f"non-positive Jacobian {stats['percent_nonpositive']:.4f}%, "
        f"time {result.timings['total']:.1f} s"
    )
    assert error.mean() <= 1.5
    assert stats["percent_nonpositive"] < 0.5


FOUR_PAIRS = [
    "headneck_okbp_pt4_vs_pt13",
    "headneck_okbp_pt4_vs_pt17",
    "headneck_okbp_pt17_vs_pt22",
    "headneck_okbp_pt13_vs_pt22",
]


@pytest.fixture(scope="module")
def manifest(shared_data):
    return {c["id"]: c for c in json.loads((shared_data / "MANIFEST.json").read_text())["cases"]}


@pytest.mark.parametrize("case_id", FOUR_PAIRS)
def test_head_neck_pairs_gain_dice_over_the_elastix_affine(shared_data, manifest, case_id):
    from itk_samconvex.edge.elastix import elastix_affine

    case = manifest[case_id]

    def read(key):
        return itk.imread(str(shared_data / case[key]))

    fixed, moving = read("fixed"), read("moving")
    fixed_labels, moving_labels = read("fixed_labels"), read("moving_labels")
    affine = elastix_affine(fixed, moving)
    result = register(fixed, moving, initial_transform=affine)
    labels = range(1, 8)
    target = itk.array_view_from_image(fixed_labels)

    def mean_dice(transform):
        warped = warp_image(moving_labels, transform, fixed_labels, nearest=True, default_value=0)
        return float(
            np.nanmean(
                list(dice_per_label(target, itk.array_view_from_image(warped), labels).values())
            )
        )

    before, after = mean_dice(affine), mean_dice(result.transform)
    print(f"\n{case_id}: mean organ Dice {before:.3f} (affine) -> {after:.3f}")
    assert after > before + 0.08
