"""The ITK shortcuts of edge/itk_classes: the same objects and values as ITK's own names,
without the lazy loader's whole-module imports."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import itk
import numpy as np
import pytest

from helpers import rotation
from itk_samconvex.edge import itk_classes


@pytest.mark.parametrize(
    ("dtype", "components"),
    [
        (np.uint8, 1),
        (np.int16, 1),
        (np.uint16, 1),
        (np.float32, 1),
        (np.float64, 1),
        (np.float32, 3),
        (np.float64, 3),
    ],
)
def test_array_view_is_itks_view_of_the_same_buffer(dtype, components):
    shape = (4, 5, 6) + ((3,) if components > 1 else ())
    values = (np.arange(np.prod(shape)) % 120).astype(dtype).reshape(shape)
    image = itk.image_from_array(values, is_vector=components > 1)
    ours = itk_classes.array_view_from_image(image)
    theirs = itk.array_view_from_image(image)
    assert ours.shape == theirs.shape == shape and ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, values)
    assert ours.__array_interface__["data"][0] == theirs.__array_interface__["data"][0]
    ours[1, 2, 3] = 7  # a view, not a copy
    assert theirs[1, 2, 3].flat[0] == 7


def test_array_view_keeps_its_image_alive():
    def temporary_view():
        return itk_classes.array_view_from_image(
            itk.image_from_array(np.full((8, 9, 10), 3.5, np.float32))
        )

    view = temporary_view()
    gc.collect()
    np.testing.assert_array_equal(view, 3.5)


def test_array_view_of_another_image_type_falls_back_to_itk():
    image = itk.image_from_array(np.ones((5, 6), np.float32))  # 2-D: not a shortcut
    np.testing.assert_array_equal(itk_classes.array_view_from_image(image), np.ones((5, 6)))


def test_direction_matrix_round_trips_an_oblique_direction():
    direction = rotation((0.3, -0.5, 0.8), 23.0) @ np.diag([1.0, -1.0, 1.0])
    image = itk.image_from_array(np.zeros((3, 4, 5), np.float32))
    image.SetDirection(itk_classes.direction_matrix(direction))
    np.testing.assert_allclose(itk.array_from_matrix(image.GetDirection()), direction, atol=0)
    region = itk_classes.image_region()
    region.SetSize([5, 4, 3])
    assert [int(v) for v in region.GetSize()] == [5, 4, 3]


def test_read_register_warp_write_load_no_itk_wrapping_module_lazily():
    # Every ITK class and array view of a registration and its outputs comes from its own
    # SWIG submodule: a lazy name (itk.<Name>) would import whole wrapping modules (ITKCommon
    # alone: 0.4-0.6 s of a one-shot register; docs/process_time.md).
    code = textwrap.dedent(
        """
        import pathlib, sys, tempfile
        import itk.support.base as base
        loaded = []
        original = base.itk_load_swig_module
        def spy(name, namespace=None):
            loaded.append(name)
            return original(name, namespace)
        base.itk_load_swig_module = spy
        from itk_samconvex.apps.phantom import make_phantom_pair
        from itk_samconvex.edge.io import read_image, write_image, write_transform
        from itk_samconvex.edge.registration import register
        from itk_samconvex.edge.transforms import warp_image
        from itk_samconvex.solver.config import preset_config
        pair = make_phantom_pair(size=(32, 28, 24))
        out = pathlib.Path(tempfile.mkdtemp())
        write_image(pair.fixed, out / "f.nii.gz")
        write_image(pair.moving, out / "m.nii.gz")
        fixed = read_image(out / "f.nii.gz", "fixed")
        moving = read_image(out / "m.nii.gz", "moving")
        result = register(fixed, moving, preset_config("fast", io_iterations=2))
        write_image(warp_image(moving, result.transform, fixed), out / "w.nii.gz")
        write_transform(result.transform, out / "t.h5")
        print("LOADED", sorted(set(loaded)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout.splitlines(), done.stdout[-500:]
