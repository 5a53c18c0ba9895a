"""The Python filter speaks the C++ filter's vocabulary, keeps one output object and reports
progress like ITK filters do."""

from __future__ import annotations

import itk
import itkConfig
import numpy as np
import pytest

from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.edge.api import CXX_SETTERS, SAMConvexRegistrationFilter
from itk_samconvex.solver.config import FIELD_NAMES

QUICK = {"preset": "fast", "io_iterations": 2}


@pytest.fixture(scope="module")
def pair():
    return make_phantom_pair(size=(40, 36, 32), spacing=(8.0, 8.0, 8.0))


def test_cxx_setter_names_map_onto_config_fields(pair):
    assert set(CXX_SETTERS.values()) <= set(FIELD_NAMES)
    reg = SAMConvexRegistrationFilter.New(
        pair.fixed,
        pair.moving,
        working_spacing=8.0,
        maximum_working_voxels=100_000,
        crop_margin=12.0,
        foreground_threshold=-400.0,
        number_of_solver_threads=1,
    )
    cfg = reg.GetConfig()
    assert (
        cfg.working_spacing_mm,
        cfg.max_working_voxels,
        cfg.crop_margin_mm,
        cfg.foreground_threshold_hu,
        cfg.num_threads,
    ) == (8.0, 100_000, 12.0, -400.0, 1)
    reg.SetCropToForeground(False)
    reg.SetAntialias(False)
    reg.SetWorkingSpacing(6.0)
    assert reg.GetWorkingSpacing() == 6.0 and reg.GetParameter("working_spacing_mm") == 6.0
    assert reg.GetConfig().crop_to_foreground is False and reg.GetAntialias() is False
    assert reg.GetIoIterations() == 50  # every config field has a Get/Set pair too
    with pytest.raises(AttributeError, match="no attribute 'SetNoSuchThing'"):
        reg.SetNoSuchThing(1)


def test_output_is_one_object_across_updates(pair):
    reg = SAMConvexRegistrationFilter.New(pair.fixed, pair.moving, working_spacing=8.0, **QUICK)
    reg.Update()
    output = reg.GetOutput()
    first = np.asarray(itk.array_view_from_image(output)).copy()
    mtime = output.GetMTime()
    downstream = itk.VectorIndexSelectionCastImageFilter[type(output), itk.Image[itk.F, 3]].New(
        output, index=0
    )
    downstream.Update()
    reg.SetWorkingSpacing(6.0)
    reg.Update()
    assert reg.GetOutput() is output  # the same object: downstream filters stay connected
    assert output.GetMTime() > mtime
    second = np.asarray(itk.array_view_from_image(output))
    assert np.abs(second - first).max() > 1e-3
    downstream.Update()  # sees the modified output and re-executes
    np.testing.assert_allclose(itk.array_view_from_image(downstream.GetOutput()), second[..., 0])
    np.testing.assert_array_equal(
        itk.array_view_from_image(reg.GetTransform().GetDisplacementField()).astype(np.float32),
        second,
    )


def test_progress_events_and_auto_progress(pair, monkeypatch):
    events: list[tuple[str, float]] = []
    reg = SAMConvexRegistrationFilter.New(pair.fixed, pair.moving, working_spacing=8.0, **QUICK)
    reg.AddObserver(itk.StartEvent(), lambda: events.append(("start", reg.GetProgress())))
    reg.AddObserver(itk.ProgressEvent(), lambda: events.append(("progress", reg.GetProgress())))
    reg.AddObserver(itk.EndEvent(), lambda: events.append(("end", reg.GetProgress())))
    reg.Update()
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end"
    progress = [value for name, value in events if name == "progress"]
    assert len(progress) == 6  # features, 3 levels, instance optimisation, output
    assert progress == sorted(progress) and progress[-1] == 1.0 and progress[0] > 0
    calls: list[tuple[str, float]] = []
    monkeypatch.setattr(itkConfig, "ProgressCallback", lambda name, p: calls.append((name, p)))
    auto = SAMConvexRegistrationFilter.New(pair.fixed, pair.moving, working_spacing=8.0, **QUICK)
    auto.Update()
    assert calls and calls[-1] == ("SAMConvexRegistrationFilter", 1.0)
