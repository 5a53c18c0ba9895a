"""Lungs decided from the images: the lung mask, its share of the body, and what the default
preset does with it (``lung_settings``, ``sliding``), reported in ``RegistrationResult.choices``.
"""

from __future__ import annotations

import json

import itk
import numpy as np
import pytest
import torch

from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.edge.registration import fixed_lung_share, register
from itk_samconvex.solver.config import preset_config
from itk_samconvex.solver.lungs import _window_any, lung_share

SPACING_MM = 2.0


def _ball(shape, centre, radii) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    c, r = centre, radii
    return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1.0


def _torso(with_lungs: bool) -> tuple[torch.Tensor, float]:
    """A 2 mm (Z, Y, X) = (60, 80, 100) volume: air, an elliptic body at 30 HU, two lungs at
    -850 HU with 60 HU vessels; returns the HU tensor and the true lung share of the body."""
    shape = (60, 80, 100)
    hu = np.full(shape, -1000.0)
    body = _ball(shape, (30, 40, 50), (40, 32, 44))
    hu[body] = 30.0
    lungs = np.zeros(shape, bool)
    if with_lungs:
        for x in (32, 68):
            lungs |= _ball(shape, (30, 40, x), (24, 20, 14))
        hu[lungs] = -850.0
        vessels = lungs & (np.arange(shape[2])[None, None, :] % 7 == 0)
        hu[vessels] = 60.0
    return torch.from_numpy(hu).float()[None, None], float(lungs.sum() / body.sum())


def test_lung_share_measures_the_lungs_and_not_the_skin():
    hu, truth = _torso(with_lungs=True)
    mask, share = lung_share(hu, SPACING_MM)
    assert truth > 0.2
    assert abs(share - truth) < 0.04, (share, truth)
    assert mask.shape == hu.shape
    # without lungs: the skin's shell (half air, half tissue on average) is not lung
    _, share = lung_share(_torso(with_lungs=False)[0], SPACING_MM)
    assert share < 0.01


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8])
def test_window_any_is_a_box_dilation_and_erosion(radius):
    """The doubling-window or equals the max over the (2r+1)^3 box (max_pool3d, which
    ignores the outside), for dilation and, on the complement, erosion; odd sizes, and a
    box longer than an axis."""
    torch.manual_seed(radius)
    mask = torch.rand(1, 1, 9, 14, 6) > 0.85
    box = 2 * radius + 1
    dilated = torch.nn.functional.max_pool3d(mask.float(), box, stride=1, padding=radius) > 0
    eroded = -torch.nn.functional.max_pool3d(-mask.float(), box, stride=1, padding=radius) > 0
    assert torch.equal(_window_any(mask, radius, empty=False), dilated)
    assert torch.equal(_window_any(mask, radius, empty=True), eroded)
    assert _window_any(mask, radius, empty=False).sum() > mask.sum()


def _shared_ct(shared_data, kind: str) -> list:
    manifest = json.loads((shared_data / "MANIFEST.json").read_text())
    paths = sorted(
        {c[k] for c in manifest["cases"] if c["kind"] == kind for k in ("fixed", "moving")}
    )
    if not paths:
        pytest.skip(f"no {kind} case in {shared_data / 'MANIFEST.json'}")
    return [shared_data / p for p in paths]


def test_the_lung_rule_fires_on_the_4dct_pair_and_on_no_headneck_ct(shared_data):
    threshold = preset_config("default").lung_body_fraction
    lung = {p.name: fixed_lung_share(itk.imread(str(p))) for p in _shared_ct(shared_data, "lung")}
    headneck = {
        p.name: fixed_lung_share(itk.imread(str(p))) for p in _shared_ct(shared_data, "headneck")
    }
    # both breathing phases: inhale (~0.30) and exhale (~0.24), so both directions qualify
    assert min(lung.values()) >= threshold, lung
    # head-neck CTs hold the trachea, sinuses and sometimes the lung apices: at most ~0.15
    assert max(headneck.values()) < threshold, headneck


@pytest.fixture(scope="module")
def phantom():
    """The phantom's chest (lungs about a quarter of the body: z = -30..102 mm, the domes
    and the lungs above them) on an anisotropic, offset grid."""
    return make_phantom_pair(
        size=(64, 48, 22),
        spacing=(4.5, 4.5, 6.0),
        origin=(-141.75, -105.75, -30.0),
        amplitude_mm=8.0,
        seed=2,
    )


QUICK = {"working_spacing_mm": 4.0, "io_iterations": 5}


def test_lung_settings_auto_are_chosen_from_the_fixed_image_and_reported(phantom):
    result = register(phantom.fixed, phantom.moving, preset_config("default", **QUICK))
    default = preset_config("default")
    choice = result.choices["lung_settings"]
    assert choice.startswith("on: lungs fill "), choice
    assert "io_regularization 0.5" in choice
    # the config reported is the one that ran
    assert result.config.io_grid_factor == default.lung_io_grid_factor == 1
    assert result.config.io_regularization == default.lung_io_regularization == 0.5
    assert "sliding" not in result.choices  # sliding is off by default: not decided


def test_lung_settings_off_and_on_are_obeyed(phantom):
    off = register(
        phantom.fixed, phantom.moving, preset_config("default", lung_settings="off", **QUICK)
    )
    assert "lung_settings" not in off.choices and "sliding" not in off.choices
    assert off.config.io_grid_factor == 2 and off.config.io_regularization == 1.0
    forced = preset_config("default", lung_settings="on", lung_body_fraction=1.0, **QUICK)
    on = register(phantom.fixed, phantom.moving, forced)
    assert on.choices["lung_settings"].startswith("on: asked")
    assert on.config.io_grid_factor == 1 and on.config.io_regularization == 0.5


def test_the_lung_preset_holds_the_lung_settings_as_values():
    lung, default = preset_config("lung"), preset_config("default")
    assert lung.lung_settings == "off"  # nothing left to decide: also what C++ exports
    assert (lung.io_grid_factor, lung.io_regularization) == (
        default.lung_io_grid_factor,
        default.lung_io_regularization,
    )


def test_sliding_runs_and_reports_its_choice(phantom):
    cfg = preset_config("default", sliding="auto", **QUICK)
    result = register(phantom.fixed, phantom.moving, cfg)
    assert result.choices["sliding"].startswith("on: lungs fill ")
    field = np.asarray(itk.array_view_from_image(result.field))
    assert np.isfinite(field).all()
    # inside the lungs (label 1) the breathing motion is recovered about as well as by one
    # smooth field (this 8 mm phantom has no real sliding layer: no gain is expected)
    lungs = np.asarray(itk.array_view_from_image(phantom.fixed_labels)) == 1
    plain = register(phantom.fixed, phantom.moving, preset_config("default", **QUICK))
    smooth = np.asarray(itk.array_view_from_image(plain.field))

    def error(u):
        return float(np.linalg.norm(u - phantom.truth, axis=-1)[lungs].mean())

    before = error(0.0)
    print(
        f"lung EPE: before {before:.2f}, one field {error(smooth):.2f}, sliding {error(field):.2f}"
    )
    assert error(field) < 0.6 * before
    assert error(field) < 1.25 * error(smooth)


def test_sliding_off_below_the_threshold_is_reported(phantom):
    cfg = preset_config("default", sliding="auto", lung_body_fraction=0.99, **QUICK)
    result = register(phantom.fixed, phantom.moving, cfg)
    assert result.choices["sliding"].startswith("off: lungs fill ")
    assert result.choices["lung_settings"].startswith("off: lungs fill ")


def test_bad_lung_settings_name_the_field():
    with pytest.raises(Exception, match="lung_settings"):
        preset_config("default", lung_settings="maybe")
    with pytest.raises(Exception, match="lung_body_fraction"):
        preset_config("default", lung_body_fraction=1.5)
