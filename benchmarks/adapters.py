"""One adapter per registration method, all behind one interface.

Every adapter turns the same inputs into the same output: a deformable field ``u`` as a
float32 array (Z, Y, X, 3) on the **fixed image grid** holding physical (x, y, z)
displacements in **LPS millimetres**, such that the full registration maps a fixed point
``x`` to the moving point ``T(x) = A(x + u(x))`` with ``A`` the shared affine pre-alignment
(fixed -> moving, ITK convention; identity when ``A`` is None). Equivalently ``u`` maps fixed
points into the *pre-aligned* moving image ``moving_prealigned(x) = moving(A(x))``, which is
what every peer registers against.

The work is split in three so that the benchmark can time the registration call alone:

* ``prepare(inputs)``: untimed set-up (array copies, temporary files, parameter objects);
* ``run(prepared)``: the registration call, timed, with its peak memory sampled;
* ``to_field(native, inputs)``: untimed conversion of the method's native output to ``u``.

``register(inputs)`` chains the three. How each native output is converted:

* ours (``itk_samconvex.register``): ``RegistrationResult.deformable_field`` is already
  ``u`` (fixed grid, LPS mm); we pass the original moving image with
  ``initial_transform=A`` (our resampling through ``A`` is part of our timed call).
* identity: ``u = 0``.
* ConvexAdam (``convex_adam_pt``): returns voxel displacements (Z, Y, X, 3) along the array
  axes (z, y, x) of the fixed array, with ``warped[i] = moving[i + d(i)]``; reversed to
  (x, y, z) index order and mapped to LPS mm by ``D diag(spacing)`` of the fixed image.
* elastix B-spline (itk-elastix): registers fixed vs the pre-aligned moving image; the
  B-spline transform maps fixed to moving points in physical LPS mm, so its dense field
  from ``itk.transformix_deformation_field`` on the fixed grid is ``u`` as it is.
* ANTs SyN (antspyx, SyN stage only, ``[so]``: no linear stages, identity initial
  transform): the forward transform's ``*Warp.nii.gz`` is a displacement field on the fixed
  grid mapping fixed points to moving points; ITK reads it as physical LPS mm, which is
  ``u``.
* NiftyReg f3d (``reg_f3d`` from the PyPI ``niftyreg`` package, built from source):
  ``reg_transform -disp`` turns the control-point grid into a displacement field on the
  reference (fixed) grid, in NiftyReg's world frame (the NIfTI qform/sform frame, RAS mm).
  ITK reads that NIfTI vector image without changing the components, so we negate x and y
  (RAS -> LPS).

All of these conventions are checked against a known synthetic warp in
``test/test_bench_adapters.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger("benchmark.adapters")

# peers: third-party methods we compare with; ours and identity are not peers
PEERS = ("convexadam", "elastix-bspline", "ants-syn", "niftyreg-f3d")
OURS = ("ours-default", "ours-default-noio", "ours-paper", "ours-paper-noio")
ALL_METHODS = (*OURS, *PEERS, "identity")
HEADLINE = "ours-default"  # the variant compared against the peers in the summaries


@dataclass
class PairInputs:
    """The inputs every method receives.

    Attributes:
        fixed: fixed image, ``itk.Image[itk.F, 3]`` (HU), any geometry.
        moving: moving image, ``itk.Image[itk.F, 3]`` (HU), its own grid.
        affine: shared pre-alignment ``A`` (ITK transform, fixed -> moving) or None.
        moving_prealigned: ``moving(A(x))`` resampled on the fixed grid (linear, -1024 HU
            outside the moving image), ``itk.Image[itk.F, 3]``.
        workdir: an empty scratch folder for file-based tools.
    """

    fixed: Any
    moving: Any
    affine: Any
    moving_prealigned: Any
    workdir: Path


def prealign(fixed, moving, affine):
    """``moving(A(x))`` on the fixed grid (linear, -1024 HU outside), ``Image[F, 3]``."""
    import itk

    from itk_samconvex import warp_image

    if affine is None:
        affine = itk.IdentityTransform[itk.D, 3].New()
    return warp_image(moving, affine, fixed, default_value=-1024.0)


def _array(image) -> np.ndarray:
    """A float32 copy of an ITK image's voxels, (z, y, x)."""
    import itk

    return np.array(itk.array_view_from_image(image), dtype=np.float32, copy=True)


def _index_to_mm(fixed) -> np.ndarray:
    """3x3 ``D diag(spacing)``: (x, y, z) voxel displacement -> LPS mm on the fixed grid."""
    import itk

    return itk.array_from_matrix(fixed.GetDirection()) @ np.diag(np.asarray(fixed.GetSpacing()))


def same_grid(a, b, tolerance: float = 1e-4) -> bool:
    """Grids equal up to ``tolerance`` (relative to the spacing; direction cosines absolute).

    Looser than ITK's 1e-6 because NIfTI stores the geometry in single precision.
    """
    if a.size != b.size:
        return False
    scale = tolerance * max(a.spacing)
    return (
        np.allclose(a.spacing, b.spacing, rtol=0, atol=scale)
        and np.allclose(a.origin, b.origin, rtol=0, atol=scale)
        and np.allclose(a.direction, b.direction, rtol=0, atol=tolerance)
    )


def _field_on_fixed_grid(field_image, fixed) -> np.ndarray:
    """A displacement-field image as (Z, Y, X, 3) float32 on the fixed grid (resampled if not)."""
    from itk_samconvex.edge.space import Grid, dense_field_of
    from itk_samconvex.edge.transforms import displacement_transform

    grid, target = Grid.of(field_image), Grid.of(fixed)
    array = _array(field_image)
    if same_grid(grid, target):
        return array
    logger.info("resampling a %s field onto the fixed grid %s", grid.size, target.size)
    return dense_field_of(displacement_transform(array, grid), target)


class Adapter:
    """Base class: see the module docstring for the contract."""

    name = "base"
    label = "base"
    peer = False
    spawns_processes = False  # run() starts executables: sample their memory too
    # per-case time limit (s) of the suite: a few times the expected time on a quiet
    # 2-core machine, so that only a hung or runaway run is stopped
    timeout_s = 600.0
    # warm-up phantom: (x, y, z) voxels and isotropic spacing (mm); small in mm too, because
    # presets without a voxel cap work at 2 mm over the whole extent
    warm_up_size: tuple[int, int, int] = (24, 20, 16)
    warm_up_spacing_mm = 6.0

    def __init__(self, quick: bool = False, threads: int | None = None) -> None:
        self.quick = quick
        self.threads = threads

    def unavailable(self) -> str | None:
        """None when the method can run here, else why not (and how to install it)."""
        return None

    def describe(self) -> str:
        """Settings in one line (for the results table)."""
        return ""

    def warm_up(self) -> None:
        """A tiny registration so that imports and lazy loading stay out of the timing."""
        from itk_samconvex.apps.phantom import make_phantom_pair

        pair = make_phantom_pair(size=self.warm_up_size, spacing=(self.warm_up_spacing_mm,) * 3)
        with tempfile.TemporaryDirectory(prefix="bench-warmup-") as scratch:
            inputs = PairInputs(pair.fixed, pair.moving, None, pair.moving, Path(scratch))
            self.register(inputs)

    def prepare(self, inputs: PairInputs) -> Any:
        return inputs

    def run(self, prepared: Any) -> Any:
        raise NotImplementedError

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        raise NotImplementedError

    def register(self, inputs: PairInputs) -> np.ndarray:
        """``u`` (Z, Y, X, 3) float32, LPS mm, fixed grid: ``T(x) = A(x + u(x))``."""
        return self.to_field(self.run(self.prepare(inputs)), inputs)


# ------------------------------------------------------------------------------- ours


class Ours(Adapter):
    """itk-samconvex with a preset, with or without instance optimisation (MIND features)."""

    def __init__(
        self,
        preset: str,
        instance_optimization: bool,
        quick: bool = False,
        threads: int | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(quick, threads)
        self.preset = preset
        self.instance_optimization = instance_optimization
        self.overrides = overrides
        suffix = "" if instance_optimization else "-noio"
        self.name = f"ours-{preset}{suffix}"
        # expected on a quiet 2-core machine (head-neck): default ~4 s; paper ~30-60 s (no
        # voxel cap: 2 mm over the whole 500 mm field of view)
        self.timeout_s = 600.0 if preset == "paper" else 120.0
        self.label = f"ours ({preset}{', no IO' if not instance_optimization else ''})"

    def config(self):
        from itk_samconvex.solver.config import preset_config

        extra: dict[str, Any] = {"device": "cpu", **self.overrides}
        if self.threads:
            extra["num_threads"] = self.threads
        return preset_config(self.preset, instance_optimization=self.instance_optimization, **extra)

    def describe(self) -> str:
        return (
            f"preset={self.preset}, instance_optimization={self.instance_optimization}, "
            "features=mind, device=cpu"
        )

    def prepare(self, inputs: PairInputs) -> Any:
        return inputs, self.config()

    def run(self, prepared: Any) -> Any:
        from itk_samconvex.edge.registration import register

        inputs, config = prepared
        return register(inputs.fixed, inputs.moving, config, initial_transform=inputs.affine)

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        return _array(native.deformable_field)


# ------------------------------------------------------------------------------- identity


class Identity(Adapter):
    """No deformable registration: ``u = 0`` (the affine pre-alignment alone)."""

    name = "identity"
    label = "identity (affine only)"
    timeout_s = 60.0

    def warm_up(self) -> None:
        return None

    def describe(self) -> str:
        return "u = 0"

    def run(self, prepared: Any) -> Any:
        return None

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        size = inputs.fixed.GetLargestPossibleRegion().GetSize()
        return np.zeros((int(size[2]), int(size[1]), int(size[0]), 3), np.float32)


# ------------------------------------------------------------------------------- ConvexAdam


class ConvexAdam(Adapter):
    """ConvexAdam (PyPI ``convexadam``), its default settings, on the pre-aligned moving array."""

    name = "convexadam"
    label = "ConvexAdam"
    peer = True
    # ConvexAdam pools by 6 voxels then applies 3-voxel kernels: needs >= 18 voxels per axis
    warm_up_size = (40, 36, 32)
    timeout_s = 240.0  # expected ~16 s per head-neck case

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("convexAdam") is None:
            return "not installed (pip install convexadam==0.2.0)"
        return None

    def settings(self) -> dict[str, Any]:
        return {"selected_niter": 20} if self.quick else {}

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return "convex_adam_pt defaults (MIND, grid_sp 6, disp_hw 4, 80 Adam steps)" + (
            f"; {extra}" if extra else ""
        )

    def prepare(self, inputs: PairInputs) -> Any:
        return _array(inputs.fixed), _array(inputs.moving_prealigned)

    def run(self, prepared: Any) -> Any:
        import torch
        from convexAdam.convex_adam_MIND import convex_adam_pt

        if self.threads:
            torch.set_num_threads(self.threads)
        fixed, moving = prepared
        return convex_adam_pt(fixed, moving, device=torch.device("cpu"), **self.settings())

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        # voxels along the array axes (z, y, x) -> index order (x, y, z) -> LPS mm
        index_xyz = np.asarray(native, np.float64)[..., ::-1]
        return (index_xyz @ _index_to_mm(inputs.fixed).T).astype(np.float32)


# ------------------------------------------------------------------------------- elastix


class ElastixBSpline(Adapter):
    """elastix B-spline (itk-elastix default "bspline" map) on the pre-aligned moving image.

    Default map: 3 resolutions, 10 mm final grid, Mattes MI + bending energy, adaptive
    stochastic gradient descent, 256 iterations per resolution, 2048 random samples.
    """

    name = "elastix-bspline"
    label = "elastix B-spline"
    peer = True
    timeout_s = 600.0  # expected ~70 s per head-neck case

    def __init__(
        self, quick: bool = False, threads: int | None = None, iterations: int | None = None
    ) -> None:
        super().__init__(quick, threads)
        self.iterations = iterations or (64 if quick else 256)

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("itk.ElastixPython") is None:
            return "not installed (pip install itk-elastix)"
        return None

    def describe(self) -> str:
        return (
            f"default 'bspline' map: 3 resolutions, 10 mm grid, AdvancedMattesMI + bending "
            f"energy, {self.iterations} iterations/resolution"
        )

    def parameter_object(self):
        import itk

        parameter_object = itk.ParameterObject.New()
        params = parameter_object.GetDefaultParameterMap("bspline", 3, 10.0)
        params["MaximumNumberOfIterations"] = [str(self.iterations)]
        params["WriteResultImage"] = ["false"]
        parameter_object.AddParameterMap(params)
        return parameter_object

    def prepare(self, inputs: PairInputs) -> Any:
        return inputs, self.parameter_object()

    def run(self, prepared: Any) -> Any:
        import itk

        inputs, parameter_object = prepared
        method = itk.ElastixRegistrationMethod[itk.Image[itk.F, 3], itk.Image[itk.F, 3]].New(
            inputs.fixed,
            inputs.moving_prealigned,
            parameter_object=parameter_object,
            log_to_console=False,
        )
        if self.threads:
            method.SetNumberOfThreads(int(self.threads))
        method.Update()
        return method.GetTransformParameterObject()

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        import itk

        scratch = inputs.workdir / "transformix"
        scratch.mkdir(parents=True, exist_ok=True)
        field = itk.transformix_deformation_field(
            inputs.fixed, native, output_directory=str(scratch)
        )
        return _field_on_fixed_grid(field, inputs.fixed)


# ------------------------------------------------------------------------------- ANTs


class AntsSyN(Adapter):
    """ANTs SyN (antspyx ``ants.registration``), deformable stage only, fixed random seed.

    The shared affine is already applied, so only ANTs' SyN stage runs (no rigid/affine
    stages of its own, identity initial transform). ``variant`` picks the settings
    (``VARIANTS``); ``quick`` (smoke tests) uses the antspyx ``SyNOnly`` defaults with half
    the iterations.
    """

    name = "ants-syn"
    label = "ANTs SyN"
    peer = True
    # variant -> (antspyx type_of_transform, reg_iterations or None, description)
    VARIANTS: ClassVar[dict[str, tuple[str, tuple[int, ...] | None, str]]] = {
        "quick": (
            "antsRegistrationSyNQuick[so]",
            None,
            "antsRegistrationSyNQuick.sh settings, SyN stage only: SyN[0.2,3,0], MI 32 "
            "bins, 100x70x50x0 iterations at shrink 8x4x2x1, smoothing 3x2x1x0 vox",
        ),
        "full": (
            "antsRegistrationSyN[so]",
            None,
            "antsRegistrationSyN settings, SyN stage only: SyN[0.2,3,0], CC radius 2, "
            "100x70x50x20 iterations at shrink 8x4x2x1, smoothing 3x2x1x0 vox",
        ),
        "antspy": (
            "SyNOnly",
            (40, 20, 0),
            "antspyx registration() defaults: SyNOnly, Mattes MI 32 bins, SyN[0.2,3,0], "
            "(40, 20, 0) iterations at shrink 4x2x1, smoothing 2x1x0 vox",
        ),
    }
    DEFAULT_VARIANT = "quick"
    timeout_s = 600.0  # expected ~40 s per head-neck case ("quick")

    def __init__(
        self,
        quick: bool = False,
        threads: int | None = None,
        seed: int = 1,
        variant: str | None = None,
    ) -> None:
        super().__init__(quick, threads)
        self.seed = seed
        self.variant = variant or self.DEFAULT_VARIANT
        if self.variant not in self.VARIANTS:
            raise ValueError(
                f"unknown ANTs variant {self.variant!r}; use one of {', '.join(self.VARIANTS)}"
            )

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("ants") is None:
            return "not installed (pip install antspyx; see benchmarks/README.md)"
        return None

    def settings(self) -> tuple[str, tuple[int, ...] | None, str]:
        """(type_of_transform, reg_iterations or None, description) actually used."""
        if self.quick:
            return (
                "SyNOnly",
                (20, 10, 0),
                ("smoke-test settings: SyNOnly, Mattes MI, (20, 10, 0) iterations at shrink 4x2x1"),
            )
        return self.VARIANTS[self.variant]

    def describe(self) -> str:
        return self.settings()[2] + f"; random seed {self.seed}"

    def prepare(self, inputs: PairInputs) -> Any:
        import ants
        import itk

        folder = inputs.workdir / "ants"
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "fixed.nii.gz", folder / "moving.nii.gz"
        itk.imwrite(inputs.fixed, str(paths[0]))
        itk.imwrite(inputs.moving_prealigned, str(paths[1]))
        return ants.image_read(str(paths[0])), ants.image_read(str(paths[1])), folder

    def run(self, prepared: Any) -> Any:
        import ants

        fixed, moving, folder = prepared
        ants.config.set_ants_deterministic(False, seed_value=self.seed)  # seed, all threads
        if self.threads:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(self.threads)
        kind, iterations, _ = self.settings()
        extra = {"reg_iterations": iterations} if iterations else {}
        result = ants.registration(
            fixed, moving, type_of_transform=kind, outprefix=str(folder / "syn_"), **extra
        )
        return result["fwdtransforms"]

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        import itk

        from itk_samconvex.edge.space import Grid, dense_field_of, linear_parts
        from itk_samconvex.edge.transforms import displacement_transform

        # fwdtransforms lists [warp, initial affine]: antsApplyTransforms (like ITK's
        # CompositeTransform with the transforms added in that order) applies the last one
        # first. With the SyN stage alone ([so], SyNOnly) it is the identity initial transform.
        transforms = []
        for path in native:
            if str(path).endswith("Warp.nii.gz"):
                warp = itk.imread(str(path), itk.Vector[itk.F, 3])
                transforms.append(("warp", _array(warp), Grid.of(warp)))
            else:
                transforms.append(("linear", itk.transformread(str(path))[0], None))
        linear = [t for kind, t, _ in transforms if kind == "linear"]
        warps = [(a, g) for kind, a, g in transforms if kind == "warp"]
        identity = all(
            np.allclose(linear_parts(t)[0], np.eye(3), atol=1e-6)
            and np.allclose(linear_parts(t)[1], 0.0, atol=1e-6)
            for t in linear
        )
        if len(warps) == 1 and identity:
            array, grid = warps[0]
            if same_grid(grid, Grid.of(inputs.fixed)):
                return array
        composite = itk.CompositeTransform[itk.D, 3].New()
        for kind, item, grid in transforms:
            composite.AddTransform(displacement_transform(item, grid) if kind == "warp" else item)
        return dense_field_of(composite, Grid.of(inputs.fixed))


# ------------------------------------------------------------------------------- NiftyReg


def niftyreg_binary(name: str) -> Path | None:
    """Path of a NiftyReg executable: from the ``niftyreg`` Python package, else the PATH."""
    if importlib.util.find_spec("niftyreg") is not None:
        import niftyreg

        candidate = Path(niftyreg.bin_path) / name
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


class NiftyRegF3D(Adapter):
    """NiftyReg ``reg_f3d`` (cubic B-spline FFD), its default settings, on the pre-aligned image.

    Defaults (``reg_f3d --help`` of NiftyReg 1.5.70): NMI (64 bins), 5-voxel final
    control-point spacing, bending energy 0.001, first-order (linear elastic) penalty 0.01,
    3 levels, at most 150 iterations at the final level.
    """

    name = "niftyreg-f3d"
    label = "NiftyReg f3d"
    peer = True
    spawns_processes = True
    timeout_s = 300.0  # expected ~16 s per head-neck case

    def unavailable(self) -> str | None:
        if niftyreg_binary("reg_f3d") is None or niftyreg_binary("reg_transform") is None:
            return (
                "reg_f3d not found (not in Debian 12; pip install niftyreg builds it from "
                "source, see benchmarks/README.md)"
            )
        return None

    def describe(self) -> str:
        maxit = 50 if self.quick else 150
        return (
            f"reg_f3d defaults: NMI 64 bins, -sx 5 voxels, -be 0.001, -le 0.01, -ln 3, "
            f"-maxit {maxit}"
        )

    def prepare(self, inputs: PairInputs) -> Any:
        import itk

        folder = inputs.workdir / "niftyreg"
        folder.mkdir(parents=True, exist_ok=True)
        fixed, moving = folder / "fixed.nii.gz", folder / "moving.nii.gz"
        itk.imwrite(inputs.fixed, str(fixed))
        itk.imwrite(inputs.moving_prealigned, str(moving))
        command = [
            str(niftyreg_binary("reg_f3d")),
            "-ref",
            str(fixed),
            "-flo",
            str(moving),
            "-cpp",
            str(folder / "cpp.nii.gz"),
            "-res",
            str(folder / "warped.nii.gz"),
            "-voff",
        ]
        if self.quick:
            command += ["-maxit", "50"]
        if self.threads:
            command += ["-omp", str(self.threads)]
        return command, folder

    def run(self, prepared: Any) -> Any:
        command, folder = prepared
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"reg_f3d failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
            )
        return folder

    def to_field(self, native: Any, inputs: PairInputs) -> np.ndarray:
        import itk

        folder = native
        disp = folder / "disp.nii.gz"
        command = [
            str(niftyreg_binary("reg_transform")),
            "-ref",
            str(folder / "fixed.nii.gz"),
            "-disp",
            str(folder / "cpp.nii.gz"),
            str(disp),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"reg_transform -disp failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        field = itk.imread(str(disp), itk.Vector[itk.F, 3])
        array = _field_on_fixed_grid(field, inputs.fixed)
        array[..., 0] *= -1.0  # RAS -> LPS
        array[..., 1] *= -1.0
        return array


# ------------------------------------------------------------------------------- registry


def make_adapter(name: str, quick: bool = False, threads: int | None = None) -> Adapter:
    """The adapter called ``name`` (one of ``ALL_METHODS``)."""
    if name.startswith("ours-"):
        parts = name.split("-")
        preset = parts[1]
        if (
            preset not in ("default", "paper", "fast")
            or len(parts) > 3
            or (len(parts) == 3 and parts[2] != "noio")
        ):
            raise ValueError(f"unknown method {name!r}; ours is ours-PRESET[-noio]")
        return Ours(preset, instance_optimization=len(parts) == 2, quick=quick, threads=threads)
    classes: dict[str, type[Adapter]] = {
        "identity": Identity,
        "convexadam": ConvexAdam,
        "elastix-bspline": ElastixBSpline,
        "ants-syn": AntsSyN,
        "niftyreg-f3d": NiftyRegF3D,
    }
    if name not in classes:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")
    return classes[name](quick=quick, threads=threads)


__all__ = [
    "ALL_METHODS",
    "HEADLINE",
    "OURS",
    "PEERS",
    "Adapter",
    "AntsSyN",
    "ConvexAdam",
    "ElastixBSpline",
    "Identity",
    "NiftyRegF3D",
    "Ours",
    "PairInputs",
    "make_adapter",
    "niftyreg_binary",
    "prealign",
    "same_grid",
]
