"""``samconvex export``: the solver as one torch.export + AOTInductor package for C++.

The C++ filter ``itk::SAMConvexRegistrationFilter`` (``include/``) runs the *same* solver as
the Python path: this module traces :func:`pyramid.register_tensors` (MIND-SSC features, the
coarse-to-fine cost volumes with the coupled convex optimisation, instance optimisation) with
``torch.export`` on working-grid tensors with dynamic spatial sizes, compiles it ahead of time
with AOTInductor, and checks the compiled package on two different shapes against eager
execution before writing it. The solver functions take their export-friendly forms while
traced (``warp.export_friendly``); nothing is re-implemented here.

Package contract (model name ``"model"``, ``samconvex.format`` 1):

* inputs, four float32 tensors (1, 1, Z, Y, X) on the working grid, on the package's device:
  ``fixed`` and ``moving`` in Hounsfield units (the moving image already resampled through the
  initial transform, as ``space.sample_image`` does), ``fixed_weight`` and ``moving_weight``,
  the data-term weights in [0, 1] (mask times field-of-view coverage; all ones where the
  Python path passes ``None``, which gives the same result up to float round-off).
* sizes: Z, Y, X are multiples of ``samconvex.multiple`` (the coarsest pyramid factor, 8) in
  ``[samconvex.min_size, samconvex.max_size]``. The minimum (40 voxels for the presets) keeps
  a whole search window inside the coarsest level, which keeps the program free of shape
  guards. **The compiled package does not check sizes** (AOTInductor skips the exported
  guards): callers must, as the C++ filter does.
* output: (1, 3, Z/f, Y/f, X/f) float32 with f = ``samconvex.output_factor`` (the
  instance-optimisation grid, ``SolverResult.field``): displacement in voxels of that grid,
  channels (z, y, x); level voxel ``j`` is centred on working index ``f * j + (f - 1) / 2``.
* metadata (strings, ``AOTIModelPackageLoader::get_metadata()`` in C++): the keys above and
  ``samconvex.config`` (all parameters as JSON), ``samconvex.device``, ``samconvex.version``,
  ``samconvex.torch``, ``samconvex.fingerprint`` (hash of the config, the solver sources,
  the torch version and the compiler options: a package with the current fingerprint need
  not be rebuilt), ``samconvex.compiler_options`` (JSON), and
  ``samconvex.grid.<name>`` for the working-grid parameters (``working_spacing_mm``,
  ``max_working_voxels`` (0: no limit), ``crop_to_foreground``, ``foreground_threshold_hu``,
  ``crop_margin_mm``, ``antialias``; decimal strings, booleans as 0/1), which the C++ filter
  applies around the package and uses as its defaults.

The compiled code targets the exporting machine's CPU (AOTInductor compiles with
``-march=native``): export on the machine, or the kind of machine, that runs the package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..edge.io import atomic_write
from ..errors import InputError
from ..solver.config import SAMConvexConfig
from ..solver.features import make_extractor
from ..solver.pyramid import register_tensors
from .export_defaults import DEFAULT_MAX_SIZE, DEFAULT_TOLERANCE_VOXELS

Tensor = torch.Tensor
Progress = Callable[[str], None]
logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"
MODEL_NAME = "model"
INPUT_NAMES = ("fixed", "moving", "fixed_weight", "moving_weight")
# modules whose source the exported program is traced from (part of the fingerprint)
_SOLVER_MODULES = (
    "solver/config.py",
    "solver/pyramid.py",
    "solver/cost.py",
    "solver/convex.py",
    "solver/instance.py",
    "solver/warp.py",
    "solver/features/base.py",
    "solver/features/mind.py",
    "apps/export.py",
)


@dataclass(frozen=True)
class ShapeLimits:
    """Working-grid sizes an exported solver accepts (each of Z, Y, X).

    Attributes:
        multiple: sizes are multiples of this (the coarsest pyramid factor).
        min_size: smallest size; a multiple of ``multiple``.
        max_size: largest size; a multiple of ``multiple``.
    """

    multiple: int
    min_size: int
    max_size: int

    def check(self, shape: Sequence[int], name: str = "working grid") -> None:
        """Raise :class:`InputError` unless every size of ``shape`` (z, y, x) is accepted."""
        for axis, n in zip("zyx", shape, strict=True):
            if n % self.multiple or not self.min_size <= n <= self.max_size:
                raise InputError(
                    f"{name} has {n} voxels along {axis}; the exported solver needs a multiple "
                    f"of {self.multiple} in [{self.min_size}, {self.max_size}] (the coarsest "
                    "level must hold a whole search window); change working_spacing_mm or the "
                    "crop, or export with other levels."
                )


def shape_limits(cfg: SAMConvexConfig, max_size: int = DEFAULT_MAX_SIZE) -> ShapeLimits:
    """The sizes the solver exported with ``cfg`` accepts.

    Every level's grid must be at least one search window (2r + 1 voxels) wide: below that,
    the traced program's memory layouts depend on the size, which torch.export records as
    guards the compiled package would not check.
    """
    m = cfg.coarsest_factor
    need = max(max(lv.grid_factor * (2 * lv.search_radius + 1) for lv in cfg.levels), 2 * m)
    min_size = -(-need // m) * m
    return ShapeLimits(multiple=m, min_size=min_size, max_size=max(max_size // m * m, min_size))


class SolverModule(torch.nn.Module):
    """:func:`register_tensors` with ``cfg`` as a module of the four package inputs.

    ``forward(fixed, moving, fixed_weight, moving_weight)`` returns ``SolverResult.field``:
    (1, 3, Z/f, Y/f, X/f) voxels of the output grid, channels (z, y, x).
    """

    def __init__(self, cfg: SAMConvexConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        check_exportable(cfg)
        self.cfg = cfg
        self.extractor = make_extractor(cfg, device)

    def forward(
        self, fixed: Tensor, moving: Tensor, fixed_weight: Tensor, moving_weight: Tensor
    ) -> Tensor:
        return register_tensors(
            fixed, moving, self.cfg, self.extractor, fixed_weight, moving_weight
        ).field


def check_exportable(cfg: SAMConvexConfig) -> None:
    """Raise :class:`InputError` for parameters the exported solver cannot represent."""
    if cfg.features != "mind":
        raise InputError(
            f"features={cfg.features!r} cannot be exported yet: the SAM network runs in "
            "z-tiles whose number depends on the image size and loads its checkpoint at run "
            "time; export with features='mind' (--features mind)."
        )


def output_factor(cfg: SAMConvexConfig) -> int:
    """Grid factor of the package output (the instance-optimisation grid)."""
    return cfg.io_grid_factor


def example_inputs(
    shape: Sequence[int], device: torch.device | str = "cpu", seed: int = 0, masked: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A CT-like synthetic pair on a working grid of ``shape`` (z, y, x) with weights.

    Smooth random tissue (HU) and the same moved by a known smooth displacement plus noise;
    with ``masked`` the weights exclude a few border planes (as a field-of-view gap or a mask
    would), otherwise they are ones.
    """
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(n) for n in shape)

    def smooth(scale: int) -> Tensor:
        coarse = torch.randn(1, 1, *[n // scale + 2 for n in shape], generator=g)
        return torch.nn.functional.interpolate(
            coarse, size=shape, mode="trilinear", align_corners=True
        )

    fixed = 300.0 * (smooth(4) + smooth(8))
    disp = torch.cat([1.5 * smooth(16), 1.0 * smooth(16), -1.2 * smooth(16)], 1)
    from ..solver.warp import warp

    moving = warp(fixed, disp) + 5.0 * torch.randn(1, 1, *shape, generator=g)
    fixed_weight = torch.ones(1, 1, *shape)
    moving_weight = torch.ones(1, 1, *shape)
    if masked:
        fixed_weight[:, :, :2] = 0
        moving_weight[:, :, :, -3:] = 0
    return tuple(t.to(device) for t in (fixed, moving, fixed_weight, moving_weight))  # type: ignore[return-value]


def export_program(
    cfg: SAMConvexConfig, device: torch.device | str = "cpu", limits: ShapeLimits | None = None
) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`SolverModule` with dynamic Z, Y, X (multiples of 8).

    Raises RuntimeError if the traced program narrowed the size ranges (a shape guard the
    compiled package would silently ignore).
    """
    limits = limits or shape_limits(cfg)
    m = limits.multiple
    module = SolverModule(cfg, device).eval()
    # distinct sizes so that no two axes are traced as equal
    shape = (limits.min_size, limits.min_size + m, limits.min_size + 2 * m)
    inputs = example_inputs(shape, device, masked=True)
    dims = [
        torch.export.Dim(f"{axis}_blocks", min=limits.min_size // m, max=limits.max_size // m)
        for axis in "zyx"
    ]
    spec = {2: m * dims[0], 3: m * dims[1], 4: m * dims[2]}
    with torch.no_grad():
        program = torch.export.export(
            module, inputs, dynamic_shapes=(spec,) * len(inputs), strict=False
        )
    expected = (limits.min_size // m, limits.max_size // m)
    for symbol, bounds in program.range_constraints.items():
        if not getattr(symbol, "is_Symbol", False):
            continue
        if (int(bounds.lower), int(bounds.upper)) != expected:
            raise RuntimeError(
                f"torch.export narrowed a working-grid size range to {m}*[{bounds.lower}, "
                f"{bounds.upper}] instead of {m}*[{expected[0]}, {expected[1]}]; the compiled "
                "package would not check this, so it is not written. Report this with the "
                "configuration used."
            )
    return program


def eager_field(cfg: SAMConvexConfig, inputs: Sequence[Tensor]) -> Tensor:
    """The Python path's result for the four package inputs (chunked eager solver)."""
    module = SolverModule(cfg, inputs[0].device)
    with torch.no_grad():
        return module(*inputs)


def compare_with_eager(
    run: Callable[..., Any],
    cfg: SAMConvexConfig,
    shapes: Sequence[Sequence[int]],
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Run ``run`` (a compiled package or exported module) and eager on each shape.

    Returns one row per shape: ``shape``, ``max_abs_diff`` and ``mean_abs_diff`` in output-grid
    voxels, ``max_abs_field`` and the ``seconds`` of both runs.
    """
    rows = []
    for index, shape in enumerate(shapes):
        inputs = example_inputs(shape, device, seed=index + 1, masked=index % 2 == 0)
        tick = time.perf_counter()
        reference = eager_field(cfg, inputs)
        eager_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        with torch.no_grad():
            out = run(*inputs)
        run_seconds = time.perf_counter() - tick
        if isinstance(out, list | tuple):
            out = out[0]
        if tuple(out.shape) != tuple(reference.shape):
            raise RuntimeError(
                f"compiled solver returned shape {tuple(out.shape)} for input "
                f"{tuple(shape)}, eager {tuple(reference.shape)}"
            )
        diff = (out.float() - reference).abs()
        rows.append(
            {
                "shape": [int(n) for n in shape],
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "max_abs_field": float(reference.abs().max()),
                "eager_seconds": eager_seconds,
                "compiled_seconds": run_seconds,
            }
        )
    return rows


def default_check_shapes(limits: ShapeLimits) -> list[tuple[int, int, int]]:
    """Two shapes different from each other and from the traced one (z, y, x)."""
    lo, m = limits.min_size, limits.multiple
    return [(lo + m, lo + 2 * m, lo), (lo + 2 * m, lo, lo + m)]


def fingerprint(
    cfg: SAMConvexConfig,
    device: str,
    limits: ShapeLimits,
    compiler_options: dict[str, Any] | None = None,
) -> str:
    """Hash of what the package depends on: config, solver sources, torch, device, sizes,
    and the AOTInductor options."""
    from ..version import __version__

    digest = hashlib.sha256()
    digest.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    digest.update(json.dumps(compiler_options or {}, sort_keys=True).encode())
    digest.update(f"{device}|{torch.__version__}|{__version__}|{FORMAT_VERSION}|{limits}".encode())
    root = Path(__file__).resolve().parents[1]  # the package
    for name in _SOLVER_MODULES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:32]


def package_metadata(
    cfg: SAMConvexConfig,
    device: str,
    limits: ShapeLimits,
    compiler_options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The string metadata stored in the package (see the module docstring)."""
    from ..version import __version__

    return {
        "samconvex.format": FORMAT_VERSION,
        "samconvex.version": __version__,
        "samconvex.torch": torch.__version__,
        "samconvex.device": device,
        "samconvex.inputs": ",".join(INPUT_NAMES),
        "samconvex.multiple": str(limits.multiple),
        "samconvex.min_size": str(limits.min_size),
        "samconvex.max_size": str(limits.max_size),
        "samconvex.output_factor": str(output_factor(cfg)),
        "samconvex.config": json.dumps(cfg.to_dict(), sort_keys=True),
        "samconvex.compiler_options": json.dumps(compiler_options or {}, sort_keys=True),
        "samconvex.fingerprint": fingerprint(cfg, device, limits, compiler_options),
        **grid_metadata(cfg),
    }


# working-grid parameters the C++ filter reads as its defaults (``samconvex.grid.<name>``)
GRID_PARAMETERS = (
    "working_spacing_mm",
    "max_working_voxels",
    "crop_to_foreground",
    "foreground_threshold_hu",
    "crop_margin_mm",
    "antialias",
)


def grid_metadata(cfg: SAMConvexConfig) -> dict[str, str]:
    """``samconvex.grid.<name>`` -> value as a decimal string (booleans 0/1, no limit 0).

    These parameters act outside the exported program (ITK resampling onto the working
    grid), so the C++ filter applies them itself; they default to the exported values.
    """
    out = {}
    for name in GRID_PARAMETERS:
        value = getattr(cfg, name)
        if value is None:  # max_working_voxels=None: no limit
            value = 0
        out[f"samconvex.grid.{name}"] = repr(float(value))
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an exported package (loads it)."""
    runner = torch._inductor.aoti_load_package(str(path))
    return dict(runner.get_metadata())


def is_current(
    path: str | os.PathLike,
    cfg: SAMConvexConfig,
    device: str = "cpu",
    max_size: int = DEFAULT_MAX_SIZE,
    compiler_options: dict[str, Any] | None = None,
) -> bool:
    """True when ``path`` holds a package exported from the current sources with ``cfg``
    (and the same device, size limit and compiler options)."""
    if not Path(path).is_file():
        return False
    try:
        meta = read_metadata(path)
    except Exception:  # unreadable or from another torch: rebuild
        return False
    return meta.get("samconvex.fingerprint") == fingerprint(
        cfg, device, shape_limits(cfg, max_size), compiler_options
    )


@dataclass
class ExportReport:
    """What :func:`export_package` did.

    Attributes:
        path: the package written.
        metadata: its metadata.
        export_seconds, compile_seconds, check_seconds: time of each step.
        checks: rows of :func:`compare_with_eager` for the compiled package.
        tolerance: the limit ``max_abs_diff`` had to meet (output-grid voxels).
    """

    path: Path
    metadata: dict[str, str]
    export_seconds: float = 0.0
    compile_seconds: float = 0.0
    check_seconds: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE_VOXELS

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "export_seconds": self.export_seconds,
            "compile_seconds": self.compile_seconds,
            "check_seconds": self.check_seconds,
            "tolerance_voxels": self.tolerance,
            "checks": self.checks,
            "metadata": {k: v for k, v in self.metadata.items() if k != "samconvex.config"},
        }


def export_package(
    path: str | os.PathLike,
    cfg: SAMConvexConfig,
    device: torch.device | str = "cpu",
    *,
    check: bool = True,
    check_shapes: Sequence[Sequence[int]] | None = None,
    tolerance: float = DEFAULT_TOLERANCE_VOXELS,
    max_size: int = DEFAULT_MAX_SIZE,
    overwrite: bool = False,
    progress: Progress | None = None,
    compiler_options: dict[str, Any] | None = None,
) -> ExportReport:
    """Export, compile, check and write the solver package for ``cfg``.

    Args:
        path: the ``.pt2`` file to write (atomically: temp file + rename).
        cfg: the parameters (the preset and overrides; ``features`` must be ``"mind"``).
        device: where the package runs (``"cpu"`` or ``"cuda[:N]"``, from the export).
        check: run the compiled package on ``check_shapes`` (default two shapes unlike each
            other and the traced one) and compare with the eager solver; a difference above
            ``tolerance`` (output-grid voxels) raises RuntimeError and nothing is written.
        max_size: largest working-grid size per axis the package accepts.
        overwrite: replace an existing file.
        progress: called with a message before each step.
        compiler_options: extra ``torch._inductor.config`` options for the compile, e.g.
            ``{"cpp.simdlen": 1}`` (no explicit vectorisation: compiles several times
            faster, runs somewhat slower); stored in the metadata and the fingerprint.

    Returns:
        :class:`ExportReport`.
    """
    from ..solver.device import resolve_device

    path = Path(path)
    if path.suffix != ".pt2":
        raise InputError(f"{path} must end in .pt2 (the AOTInductor package format).")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    if not path.parent.is_dir():
        raise InputError(f"the folder of {path} does not exist; create it first.")
    check_exportable(cfg)
    dev = resolve_device(str(device))
    device_name = str(dev)
    limits = shape_limits(cfg, max_size)
    options = dict(compiler_options or {})
    if "aot_inductor.metadata" in options:
        raise InputError(
            "compiler option 'aot_inductor.metadata' is reserved for the "
            "package metadata; remove it."
        )
    report = ExportReport(
        path=path, metadata=package_metadata(cfg, device_name, limits, options), tolerance=tolerance
    )
    shapes = [
        tuple(int(n) for n in shape) for shape in check_shapes or default_check_shapes(limits)
    ]
    for shape in shapes:
        limits.check(shape, f"check shape {shape}")

    def step(message: str) -> None:
        logger.info(message)
        if progress is not None:
            progress(message)

    step("exporting the solver with torch.export")
    tick = time.perf_counter()
    program = export_program(cfg, dev, limits)
    report.export_seconds = time.perf_counter() - tick

    step("compiling with AOTInductor (minutes)")

    def compile_to(temp: Path) -> None:
        tick = time.perf_counter()
        torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(temp),
            inductor_configs={**options, "aot_inductor.metadata": report.metadata},
        )
        report.compile_seconds = time.perf_counter() - tick
        if check:
            step("checking the compiled solver against eager execution on two shapes")
            tick = time.perf_counter()
            runner = torch._inductor.aoti_load_package(str(temp))
            report.checks = compare_with_eager(runner, cfg, shapes, dev)
            report.check_seconds = time.perf_counter() - tick
            worst = max(row["max_abs_diff"] for row in report.checks)
            if worst > tolerance:
                raise RuntimeError(
                    f"the compiled solver differs from eager execution by {worst:.3g} voxels "
                    f"(tolerance {tolerance:g}) on {report.checks}; the package is not written."
                )

    atomic_write(path, compile_to, overwrite=True)
    return report


__all__ = [
    "DEFAULT_TOLERANCE_VOXELS",
    "FORMAT_VERSION",
    "GRID_PARAMETERS",
    "INPUT_NAMES",
    "MODEL_NAME",
    "ExportReport",
    "ShapeLimits",
    "SolverModule",
    "compare_with_eager",
    "example_inputs",
    "export_package",
    "export_program",
    "fingerprint",
    "grid_metadata",
    "is_current",
    "package_metadata",
    "read_metadata",
    "shape_limits",
]
