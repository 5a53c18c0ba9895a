"""Inputs and Python reference results for the C++ filter's ctest tests.

``python make_reference.py --package solver.pt2 --case oblique --out DIR`` builds a phantom
pair (``itk_samconvex.apps.phantom``: CT-like, with a known breathing-like motion), registers it
with the Python front end using exactly the parameters baked into the package (its
``samconvex.config`` metadata), and writes into DIR what the C++ test reads:

* ``fixed.mha``, ``moving.mha`` (float HU), and for some cases ``initial.h5`` (an affine
  initial transform, fixed -> moving) and ``fixed_mask.mha`` (uchar);
* ``field_python.mha``: the Python result ``T(x) - x`` (Vector<float, 3>, LPS mm, fixed grid);
* ``working_grid.txt``: the Python working grid (``size``/``spacing``/``origin`` lines, ITK
  x, y, z order, mm);
* ``reference.json``: case description, Python timings (s), the error against the phantom's
  truth (mm) and the largest displacement (mm).

Cases (both with different fixed and moving grids, so the C++ resampling is exercised):

* ``oblique``: fixed 144 x 128 x 40 voxels of 0.7 x 0.7 x 2.5 mm, rotated 20 degrees about
  (1, 2, 3), off-centre origin; moving 100 x 90 x 50 voxels of 1 x 1 x 2 mm, axis-aligned.
* ``second-size``: another image size (fixed 100 x 132 x 30 voxels of 0.9 x 0.9 x 3 mm,
  moving 96 x 96 x 44 of 1.1 x 1.1 x 2.5 mm), hence another working-grid shape, plus an
  affine initial transform and a fixed mask.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import itk
import numpy as np

from itk_samconvex.apps.export import read_metadata
from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.edge.registration import register
from itk_samconvex.edge.space import Grid, scalar_image
from itk_samconvex.solver.config import SAMConvexConfig


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about ``axis`` (Rodrigues' formula)."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * kx + (1.0 - np.cos(t)) * kx @ kx


# phantom region: the right lung base and the liver dome, where the motion is largest
REGION_CENTRE_MM = (-60.0, 10.0, -20.0)

CASES = {
    "oblique": {
        "size": (144, 128, 40),
        "spacing": (0.7, 0.7, 2.5),
        "direction": rotation((1.0, 2.0, 3.0), 20.0),
        "moving_size": (100, 90, 50),
        "moving_spacing": (1.0, 1.0, 2.0),
        "moving_direction": np.eye(3),
        "initial_transform": False,
        "fixed_mask": False,
    },
    "second-size": {
        "size": (100, 132, 30),
        "spacing": (0.9, 0.9, 3.0),
        "direction": rotation((0.0, 0.3, 1.0), -12.0),
        "moving_size": (96, 96, 44),
        "moving_spacing": (1.1, 1.1, 2.5),
        "moving_direction": np.eye(3),
        "initial_transform": True,
        "fixed_mask": True,
    },
}


def initial_affine():
    """A small affine pre-alignment (fixed -> moving): 3 degree rotation, 2.5 mm shift."""
    affine = itk.AffineTransform[itk.D, 3].New()
    affine.SetCenter([float(v) for v in REGION_CENTRE_MM])
    affine.SetMatrix(
        itk.matrix_from_array(rotation((0.2, 1.0, 0.4), 3.0) @ np.diag([1.02, 0.99, 1.0]))
    )
    affine.SetTranslation([2.5, -1.5, 1.0])
    return affine


def make_case(name: str, out: Path, package: Path) -> dict:
    """Write the inputs and the Python reference of case ``name`` into ``out``."""
    spec = CASES[name]
    meta = read_metadata(package)
    # the C++ filter runs the exported program as it is: it makes no choice from the images
    # (lung settings, sliding, the field-of-view anchor), so neither does its Python reference
    cfg = SAMConvexConfig.from_dict(json.loads(meta["samconvex.config"])).replace(
        device="cpu", lung_settings="off", sliding="off", fov_anchor="off"
    )
    pair = _pair(spec)
    initial = initial_affine() if spec["initial_transform"] else None
    mask = None
    if spec["fixed_mask"]:
        body = np.asarray(itk.array_view_from_image(pair.fixed)) > -900.0
        mask = scalar_image(body.astype(np.uint8), pair.fixed_grid, itk.UC)
    tick = time.perf_counter()
    result = register(pair.fixed, pair.moving, cfg, initial_transform=initial, fixed_mask=mask)
    seconds = time.perf_counter() - tick

    out.mkdir(parents=True, exist_ok=True)
    itk.imwrite(pair.fixed, str(out / "fixed.mha"))
    itk.imwrite(pair.moving, str(out / "moving.mha"))
    if initial is not None:
        itk.transformwrite([initial], str(out / "initial.h5"))
    if mask is not None:
        itk.imwrite(mask, str(out / "fixed_mask.mha"))
    itk.imwrite(result.field, str(out / "field_python.mha"))
    grid: Grid = result.working_grid
    (out / "working_grid.txt").write_text(
        "size "
        + " ".join(str(v) for v in grid.size)
        + "\n"
        + "spacing "
        + " ".join(repr(v) for v in grid.spacing)
        + "\n"
        + "origin "
        + " ".join(repr(v) for v in grid.origin)
        + "\n"
    )
    field = np.asarray(itk.array_view_from_image(result.deformable_field))
    error = np.linalg.norm(field - pair.truth, axis=-1) if initial is None else None
    report = {
        "case": name,
        "fixed_size": list(spec["size"]),
        "fixed_spacing_mm": list(spec["spacing"]),
        "moving_size": list(spec["moving_size"]),
        "moving_spacing_mm": list(spec["moving_spacing"]),
        "initial_transform": initial is not None,
        "fixed_mask": mask is not None,
        "working_grid": list(grid.size),
        "working_spacing_mm": grid.spacing[0],
        "python_seconds": seconds,
        "python_timings": result.timings,
        "max_displacement_mm": float(
            np.linalg.norm(np.asarray(itk.array_view_from_image(result.field)), axis=-1).max()
        ),
        "max_truth_mm": float(np.linalg.norm(pair.truth, axis=-1).max()),
        "mean_error_vs_truth_mm": None if error is None else float(error.mean()),
        "config": cfg.to_dict(),
    }
    (out / "reference.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _pair(spec: dict):
    """The phantom pair of a case, centred on ``REGION_CENTRE_MM``."""
    return make_phantom_pair(
        size=spec["size"],
        spacing=spec["spacing"],
        direction=spec["direction"],
        moving_size=spec["moving_size"],
        moving_spacing=spec["moving_spacing"],
        moving_direction=spec["moving_direction"],
        amplitude_mm=12.0,
        seed=1,
        centre_mm=(0.0, 0.0, 0.0),
        origin=_origin(spec),
    )


def _origin(spec: dict) -> tuple[float, float, float]:
    """Fixed origin putting the grid centre on ``REGION_CENTRE_MM``."""
    half = 0.5 * (np.asarray(spec["size"]) - 1) * np.asarray(spec["spacing"])
    return tuple(float(v) for v in np.asarray(REGION_CENTRE_MM) - spec["direction"] @ half)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", required=True, type=Path, help="solver package (.pt2)")
    parser.add_argument("--case", required=True, choices=sorted(CASES))
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    args = parser.parse_args(argv)
    report = make_case(args.case, args.out, args.package)
    print(
        f"{args.case}: working grid {'x'.join(map(str, report['working_grid']))} at "
        f"{report['working_spacing_mm']:g} mm, Python registration "
        f"{report['python_seconds']:.1f} s, max displacement "
        f"{report['max_displacement_mm']:.2f} mm -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
