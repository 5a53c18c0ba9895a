"""Input sanity: what does not look like CT is refused (with the switch to allow it), real CT
never is; paths and SimpleITK images are accepted; misspelt keywords get a suggestion."""

from __future__ import annotations

import json
import logging

import itk
import numpy as np
import pytest

from helpers import make_grid
from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.edge.api import SAMConvexRegistrationFilter, samconvex_registration
from itk_samconvex.edge.checks import check_ct, ct_problem, size_warning, summarize
from itk_samconvex.edge.io import read_image
from itk_samconvex.edge.registration import check_inputs
from itk_samconvex.edge.space import array_view, scalar_image
from itk_samconvex.errors import InputError
from itk_samconvex.solver.config import preset_config

QUICK = {"working_spacing_mm": 8.0, "io_iterations": 2, "preset": "fast"}


@pytest.fixture(scope="module")
def pair():
    return make_phantom_pair(size=(40, 36, 32), spacing=(8.0, 8.0, 8.0))


def test_every_ct_of_the_shared_data_passes(shared_data):
    """No real CT of ../shared/data triggers the check; every label map and mask does."""
    volumes = json.loads((shared_data / "MANIFEST.json").read_text())["volumes"]
    corpus = sorted((shared_data / "corpus" / "openkbp").glob("*_ct.nii.gz"))[::8]
    cts = [shared_data / v["path"] for v in volumes if v["path"].endswith("_ct.nii.gz")]
    labels = [shared_data / v["path"] for v in volumes if not v["path"].endswith("_ct.nii.gz")]
    assert len(cts) >= 19 and len(labels) >= 10
    for path in [*cts, *corpus]:
        values = np.asarray(array_view(read_image(path)))
        problem = ct_problem(summarize(values))
        assert problem is None, f"{path.name}: {problem}"
        check_ct(values, path.name, -500.0)
    for path in labels:
        assert "label map or a mask" in ct_problem(
            summarize(np.asarray(array_view(read_image(path))))
        ), path.name


def test_label_map_as_the_moving_image_is_refused_with_the_switch(pair):
    with pytest.raises(InputError) as info:
        samconvex_registration(pair.fixed, pair.moving_labels, **QUICK)
    message = str(info.value)
    assert message.startswith("moving image does not look like a CT: it holds only 8 distinct")
    assert "--moving-labels" in message and "ct_check=False" in message
    assert "--no-ct-check" in message
    # the switch lets it through (a rare legitimate case), with a logged warning
    transform = samconvex_registration(pair.fixed, pair.moving_labels, ct_check=False, **QUICK)
    assert transform.GetNameOfClass() == "DisplacementFieldTransform"


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (lambda r: (r > 0.5).astype(np.float32), "distinct integer values"),
        (lambda r: r.astype(np.float32), "span only"),  # intensities normalised to [0, 1]
        (lambda r: (r * 2000.0 + 1024.0).astype(np.float32), "1st percentile is"),  # HU+1024
    ],
)
def test_not_hu_intensities_are_named(values, problem):
    rng = np.random.default_rng(0)
    array = values(rng.random((20, 20, 20)))
    assert problem in ct_problem(summarize(array))
    with pytest.raises(InputError, match="does not look like a CT"):
        check_ct(array, "fixed image", float(array.min()) - 1.0)


def test_constant_and_bodyless_images_are_refused_even_without_the_ct_check():
    grid = make_grid((16, 16, 16), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), np.eye(3))
    constant = np.full(grid.shape, -1000.0, np.float32)
    with pytest.raises(InputError, match=r"fixed image is constant \(every voxel is -1000\)"):
        check_ct(constant, "fixed image", -500.0, ct_check=False)
    air = constant + np.random.default_rng(1).normal(0, 20, grid.shape).astype(np.float32)
    with pytest.raises(InputError, match=r"no voxel above -500 HU .* lower foreground_thresh"):
        check_ct(air, "moving image", -500.0, ct_check=False)


def test_tiny_image_gives_a_warning_in_the_result(pair, caplog):
    tiny = scalar_image(
        np.asarray(array_view(pair.fixed))[10:16, 10:16, 10:16].copy(),
        make_grid((6, 6, 6), (8.0, 8.0, 8.0), (0.0, 0.0, 0.0), np.eye(3)),
    )
    assert "is small (6x6x6 voxels, 48 x 48 x 48 mm)" in size_warning(
        (6, 6, 6), (8.0,) * 3, "fixed image"
    )
    with caplog.at_level(logging.WARNING):
        _, warnings = check_inputs(tiny, pair.moving, preset_config("fast"))
    assert len(warnings) == 1 and warnings[0].startswith("fixed image is small")
    assert "fixed image is small" in caplog.text


def test_paths_and_simpleitk_images_are_accepted(pair, tmp_path, caplog):
    fixed_path, moving_path = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    itk.imwrite(pair.fixed, str(fixed_path))
    itk.imwrite(pair.moving, str(moving_path))
    with caplog.at_level(logging.INFO, logger="itk_samconvex"):
        from_paths = samconvex_registration(str(fixed_path), moving_path, **QUICK)
    assert "fixed image given as a path: reading" in caplog.text
    reference = samconvex_registration(pair.fixed, pair.moving, **QUICK)
    difference = np.abs(
        np.asarray(array_view(from_paths.GetDisplacementField()))
        - np.asarray(array_view(reference.GetDisplacementField()))
    ).max()
    assert difference < 1e-4
    sitk = pytest.importorskip("SimpleITK")
    fixed_sitk = sitk.ReadImage(str(fixed_path))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="itk_samconvex"):
        from_sitk = samconvex_registration(fixed_sitk, pair.moving, **QUICK)
    assert "fixed image is a SimpleITK image: copied into an itk.Image" in caplog.text
    difference = np.abs(
        np.asarray(array_view(from_sitk.GetDisplacementField()))
        - np.asarray(array_view(reference.GetDisplacementField()))
    ).max()
    assert difference < 1e-4


def test_misspelt_keywords_get_a_suggestion(pair):
    with pytest.raises(InputError, match=r"'io_iteration' \(did you mean 'io_iterations'\?\)"):
        samconvex_registration(pair.fixed, pair.moving, io_iteration=3)
    with pytest.raises(InputError, match=r"'fixed_msk' \(did you mean 'fixed_mask'\?\)"):
        SAMConvexRegistrationFilter.New(pair.fixed, pair.moving, fixed_msk=None)
    with pytest.raises(InputError, match=r"'working_spacng' \(did you mean 'working_spacing'"):
        SAMConvexRegistrationFilter.New(pair.fixed, pair.moving, working_spacng=4.0)
