"""Public API: ``samconvex_registration`` and ``SAMConvexRegistrationFilter``.

Thin by design: validate ITK inputs, build the working grid (``space``), run the tensor
solver (``pyramid``), and hand back ITK fields and transforms (``transforms``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import itk
import numpy as np
import torch

from ..solver.config import GRID_GROWTH_STEP, SAMConvexConfig, preset_config
from ..errors import InputError, ResourceError
from ..solver.features import make_extractor
from ..solver.pyramid import estimate_peak_bytes, register_tensors
from .space import (
    Grid,
    antialias,
    check_image,
    check_mask,
    foreground_box,
    level_grid,
    sample_image,
    vector_image,
    working_grid,
)
from .transforms import as_transform, baked_field, deformable_field, displacement_transform

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class RegistrationResult:
    """Everything one registration produces.

    Attributes:
        transform: ``DisplacementFieldTransform[D, 3]`` mapping fixed to moving points,
            ``T(x) = A(x + u(x))`` with the initial transform ``A`` baked in.
        field: the same displacement ``T(x) - x`` as ``Image[Vector[F, 3], 3]`` on the fixed
            grid, LPS mm.
        deformable_field: ``u(x)`` alone (fixed grid, LPS mm): maps fixed points into the
            moving image pre-aligned by ``A``.
        initial_transform: ``A`` as an ITK transform (None for identity).
        working_grid: the isotropic grid the solver ran on.
        config: the parameters used.
        device: the torch device used.
        timings: seconds per stage (and ``total``).
    """

    transform: Any
    field: Any
    deformable_field: Any
    initial_transform: Any
    working_grid: Grid
    config: SAMConvexConfig
    device: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def deformable_transform(self):
        """``DisplacementFieldTransform[D, 3]`` of ``u`` alone (no initial transform)."""
        array = np.asarray(itk.array_view_from_image(self.deformable_field))
        return displacement_transform(array, Grid.of(self.deformable_field))


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` picks CUDA when torch sees a GPU, else the CPU; others are checked."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ResourceError(
                f"device={device!r} was requested but torch {torch.__version__} sees no CUDA "
                "device; use device='cpu' (or 'auto'), or install a CUDA build of torch."
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ResourceError(
                f"device={device!r} does not exist: torch sees {torch.cuda.device_count()} CUDA "
                f"device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
        return dev
    raise InputError(f"device={device!r} is not understood; use 'auto', 'cpu', 'cuda' or "
                     "'cuda:N'.")


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory of the device (CUDA) or available RAM (CPU, from /proc/meminfo)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(shape: tuple[int, int, int], cfg: SAMConvexConfig, device: torch.device,
                  spacing: float) -> None:
    need = estimate_peak_bytes(shape, cfg)
    limit = cfg.memory_limit_gb * 1e9 if cfg.memory_limit_gb else available_memory_bytes(device)
    if limit is not None and need > limit:
        raise ResourceError(
            f"registering on a {shape[2]}x{shape[1]}x{shape[0]} working grid at {spacing:g} mm "
            f"needs about {need / 1e9:.1f} GB but {limit / 1e9:.1f} GB is available on "
            f"{device}; raise working_spacing_mm (e.g. {spacing * 1.5:g}), keep "
            "crop_to_foreground on, lower the finest search_radius, or raise memory_limit_gb."
        )


def _check_overlap(inside: torch.Tensor) -> None:
    fraction = float(inside.float().mean())
    if fraction < 0.01:
        raise InputError(
            "the moving image does not overlap the fixed image in physical space after the "
            f"initial transform ({100 * fraction:.2f}% of the fixed region maps inside the "
            "moving image); pass an initial_transform that aligns them (e.g. "
            "itk_samconvex.elastix_affine(fixed, moving), or CLI --elastix-affine)."
        )


def _weight(inside: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Data-term weight (1, 1, Z, Y, X): inside the image and the mask; None if all ones."""
    keep = inside if mask is None else inside & (mask != 0)
    if bool(keep.all()):
        return None
    return keep.float()[None, None]


def register(
    fixed,
    moving,
    config: SAMConvexConfig | None = None,
    initial_transform=None,
    fixed_mask=None,
    moving_mask=None,
    progress: Progress | None = None,
    extractor=None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``; see :func:`samconvex_registration` for the inputs.

    ``extractor`` reuses a feature backend built earlier (e.g. a batch worker's cached SAM
    network); by default one is made from ``config``.
    """
    start = time.perf_counter()
    cfg = config or preset_config("default")
    fixed_grid = check_image(fixed, "fixed image")
    check_image(moving, "moving image")
    if fixed_mask is not None:
        check_mask(fixed_mask, "fixed_mask", fixed_grid, "the fixed image")
    if moving_mask is not None:
        check_mask(moving_mask, "moving_mask", Grid.of(moving), "the moving image")
    initial = as_transform(initial_transform, fixed)
    device = resolve_device(cfg.device)
    timings: dict[str, float] = {}

    box = None
    if cfg.crop_to_foreground:
        box = foreground_box(fixed, fixed_grid, cfg.foreground_threshold_hu, cfg.crop_margin_mm)
    grid = working_grid(fixed_grid, cfg.working_spacing_mm, cfg.coarsest_factor, box)
    if cfg.max_working_voxels and grid.num_voxels > cfg.max_working_voxels:
        # grow the spacing until the grid fits the voxel budget (sizes round up to 8s)
        spacing = cfg.working_spacing_mm * (grid.num_voxels / cfg.max_working_voxels) ** (1 / 3)
        while True:
            grid = working_grid(fixed_grid, spacing, cfg.coarsest_factor, box)
            if grid.num_voxels <= cfg.max_working_voxels:
                break
            spacing *= GRID_GROWTH_STEP
    spacing = grid.spacing[0]
    _check_memory(grid.shape, cfg, device, spacing)
    logger.info("working grid %s voxels at %g mm on %s", "x".join(map(str, grid.size)), spacing,
                device)

    fixed_src = antialias(fixed, spacing) if cfg.antialias else fixed
    moving_src = antialias(moving, spacing) if cfg.antialias else moving
    fixed_t, fixed_inside = sample_image(fixed_src, grid, None, device=device)
    moving_t, moving_inside = sample_image(moving_src, grid, initial, device=device)
    _check_overlap(moving_inside)
    fixed_mask_t = moving_mask_t = None
    if fixed_mask is not None:
        fixed_mask_t = sample_image(fixed_mask, grid, None, nearest=True, device=device)[0]
    if moving_mask is not None:
        moving_mask_t = sample_image(moving_mask, grid, initial, nearest=True, device=device)[0]
    fixed_weight = _weight(fixed_inside, fixed_mask_t)
    moving_weight = _weight(moving_inside, moving_mask_t)
    timings["resampling"] = time.perf_counter() - start
    if extractor is None:
        extractor = make_extractor(cfg, device)
    threads_before = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            with torch.no_grad():
                solved = register_tensors(
                    fixed_t[None, None], moving_t[None, None], cfg, extractor,
                    fixed_weight, moving_weight, progress,
                )
    finally:
        torch.set_num_threads(threads_before)
    timings.update(solved.timings)

    tick = time.perf_counter()
    field_grid = level_grid(grid, solved.factor)
    u_mm = deformable_field(solved.field, field_grid, fixed_grid)
    total_mm = u_mm if initial is None else baked_field(solved.field, field_grid, fixed_grid,
                                                         initial)
    transform = displacement_transform(total_mm, fixed_grid)
    result = RegistrationResult(
        transform=transform,
        field=vector_image(total_mm, fixed_grid, itk.F),
        deformable_field=vector_image(u_mm, fixed_grid, itk.F),
        initial_transform=initial,
        working_grid=grid,
        config=cfg,
        device=str(device),
        timings=timings,
    )
    timings["output"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    if progress is not None:
        progress("output")
    logger.info("registration took %.2f s", timings["total"])
    return result


def build_config(
    preset: str = "default",
    config: SAMConvexConfig | str | os.PathLike | None = None,
    **parameters: Any,
) -> SAMConvexConfig:
    """A config from a preset or a config object/TOML path, with parameter overrides."""
    if config is None:
        base = preset_config(preset)
    elif isinstance(config, SAMConvexConfig):
        base = config
    else:
        base = SAMConvexConfig.load_toml(config)
    overrides = {k: v for k, v in parameters.items() if v is not None}
    return base.replace(**overrides) if overrides else base


def samconvex_registration(
    fixed,
    moving,
    *,
    initial_transform=None,
    fixed_mask=None,
    moving_mask=None,
    features: str = "mind",
    sam_checkpoint: str | os.PathLike | None = None,
    preset: str = "default",
    instance_optimization: bool = True,
    device: str = "auto",
    config: SAMConvexConfig | str | os.PathLike | None = None,
    progress: Progress | None = None,
    **parameters: Any,
):
    """Register two 3-D CT images; return ``itk.DisplacementFieldTransform[itk.D, 3]``.

    The transform maps fixed physical points to moving physical points (LPS mm),
    ``T(x) = A(x + u(x))`` with the initial transform ``A`` baked into its one field, so
    ``itk.resample_image_filter(moving, transform=T, use_reference_image=True,
    reference_image=fixed)`` warps the moving image onto the fixed one.

    Args:
        fixed, moving: 3-D scalar ``itk.Image`` of any pixel type, spacing, origin, direction.
        initial_transform: fixed->moving pre-alignment: any ITK transform, an itk-elastix
            registration or parameter object, or a transform / TransformParameters file.
        fixed_mask, moving_mask: optional masks on their image's grid; only voxels inside
            them drive the data term.
        features: ``"mind"`` (weight-free), ``"sam"`` or ``"sam+mind"``.
        sam_checkpoint: SAM weights path (or env ``SAMCONVEX_SAM_CHECKPOINT``).
        preset: ``"default"``, ``"paper"`` (official-code parity) or ``"fast"``.
        instance_optimization: run the Adam refinement after the discrete stage.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        config: a :class:`SAMConvexConfig` or a TOML file; replaces ``preset``.
        progress: callable receiving each finished stage's name.
        **parameters: any other :class:`SAMConvexConfig` field, e.g. ``io_iterations=30``.
    """
    reg = SAMConvexRegistrationFilter.New(
        fixed, moving, initial_transform=initial_transform, fixed_mask=fixed_mask,
        moving_mask=moving_mask, features=features, sam_checkpoint=sam_checkpoint,
        preset=preset, instance_optimization=instance_optimization, device=device,
        config=config, progress=progress, **parameters,
    )
    reg.Update()
    return reg.GetTransform()


class SAMConvexRegistrationFilter:
    """ITK-style registration filter (pure Python).

    ``New(fixed, moving, **kwargs)`` sets the inputs; every keyword is the snake_case form of
    a ``Set*`` method below or a :class:`SAMConvexConfig` field. ``Update()`` pulls the
    input pipelines and re-runs only when an input or parameter changed. ``GetOutput()`` is
    the displacement field ``Image[Vector[F, 3], 3]`` (LPS mm, fixed grid), ``GetTransform()``
    the ``DisplacementFieldTransform[D, 3]``; both include the initial transform.
    """

    _KEYWORDS = ("fixed_image", "moving_image", "initial_transform", "fixed_mask",
                 "moving_mask", "preset", "config", "progress")

    def __init__(self) -> None:
        self._inputs: dict[str, Any] = {"fixed_image": None, "moving_image": None,
                                        "initial_transform": None, "fixed_mask": None,
                                        "moving_mask": None}
        self._preset = "default"
        self._config: SAMConvexConfig | str | os.PathLike | None = None
        self._parameters: dict[str, Any] = {}
        self._progress: Progress | None = None
        self._modified = 0
        self._last_key: tuple | None = None
        self._result: RegistrationResult | None = None

    # --- construction ------------------------------------------------------------------
    @classmethod
    def New(cls, *args: Any, **kwargs: Any) -> SAMConvexRegistrationFilter:
        """``New(fixed, moving, **kwargs)``, like ITK's filters."""
        obj = cls()
        if len(args) > 2:
            raise TypeError("SAMConvexRegistrationFilter.New() takes at most two inputs "
                            "(fixed, moving); pass the rest as keywords.")
        for setter, arg in zip((obj.SetFixedImage, obj.SetMovingImage), args, strict=False):
            setter(itk.output(arg))
        for key, value in kwargs.items():
            obj.SetParameter(key, value)
        return obj

    def SetParameter(self, name: str, value: Any) -> None:
        """Set one keyword: an input, a filter option or a :class:`SAMConvexConfig` field."""
        camel = "Set" + "".join(part.capitalize() for part in name.split("_"))
        if name in self._KEYWORDS:
            getattr(self, camel)(value)
            return
        valid = set(SAMConvexConfig.__dataclass_fields__)
        if name not in valid:
            raise InputError(
                f"unknown registration parameter {name!r}; valid keywords are "
                f"{', '.join(self._KEYWORDS)} and the SAMConvexConfig fields: "
                f"{', '.join(sorted(valid))}."
            )
        if name == "sam_checkpoint" and value is not None:
            value = str(value)
        self._parameters[name] = value
        self._modified += 1

    def GetParameter(self, name: str) -> Any:
        return getattr(self.GetConfig(), name)

    # --- inputs -------------------------------------------------------------------------
    def _set_input(self, key: str, value: Any) -> None:
        self._inputs[key] = value
        self._modified += 1

    def SetFixedImage(self, image) -> None:
        self._set_input("fixed_image", image)

    def GetFixedImage(self):
        return self._inputs["fixed_image"]

    def SetMovingImage(self, image) -> None:
        self._set_input("moving_image", image)

    def GetMovingImage(self):
        return self._inputs["moving_image"]

    SetInput1 = SetFixedImage
    SetInput2 = SetMovingImage

    def SetInitialTransform(self, transform) -> None:
        self._set_input("initial_transform", transform)

    def GetInitialTransform(self):
        return self._inputs["initial_transform"]

    def SetFixedMask(self, mask) -> None:
        self._set_input("fixed_mask", mask)

    def SetMovingMask(self, mask) -> None:
        self._set_input("moving_mask", mask)

    # --- options ------------------------------------------------------------------------
    def SetPreset(self, preset: str) -> None:
        preset_config(preset)  # validates the name now rather than at Update()
        self._preset = preset
        self._modified += 1

    def SetConfig(self, config) -> None:
        self._config = config
        self._modified += 1

    def SetFeatures(self, features: str) -> None:
        """``"mind"``, ``"sam"`` or ``"sam+mind"``."""
        self.SetParameter("features", features)

    def SetSamCheckpoint(self, path) -> None:
        self.SetParameter("sam_checkpoint", path)

    def SetInstanceOptimization(self, enabled: bool) -> None:
        self.SetParameter("instance_optimization", bool(enabled))

    def SetDevice(self, device: str) -> None:
        self.SetParameter("device", str(device))

    def SetProgress(self, callback: Progress | None) -> None:
        self._progress = callback

    def GetConfig(self) -> SAMConvexConfig:
        """The effective parameters (preset or config, then keyword overrides)."""
        return build_config(self._preset, self._config, **self._parameters)

    # --- execution ----------------------------------------------------------------------
    def _input_key(self) -> tuple:
        key = [self._modified]
        for name in ("fixed_image", "moving_image", "initial_transform", "fixed_mask",
                     "moving_mask"):
            value = self._inputs[name]
            if value is None or isinstance(value, str | os.PathLike):
                key.append(value)
                continue
            if hasattr(value, "Update") and hasattr(value, "GetLargestPossibleRegion"):
                value.Update()  # pull the upstream pipeline
            mtime = value.GetMTime() if hasattr(value, "GetMTime") else 0
            key.append((id(value), mtime))
        return tuple(key)

    def Update(self) -> None:
        """Run the registration if an input or a parameter changed since the last run."""
        if self._inputs["fixed_image"] is None or self._inputs["moving_image"] is None:
            raise InputError("SAMConvexRegistrationFilter needs both inputs: call "
                             "SetFixedImage(fixed) and SetMovingImage(moving) (or New(fixed, "
                             "moving)).")
        key = self._input_key()
        if key == self._last_key and self._result is not None:
            return
        self._result = register(
            self._inputs["fixed_image"], self._inputs["moving_image"], self.GetConfig(),
            self._inputs["initial_transform"], self._inputs["fixed_mask"],
            self._inputs["moving_mask"], self._progress,
        )
        self._last_key = key

    UpdateLargestPossibleRegion = Update

    def _require(self) -> RegistrationResult:
        if self._result is None:
            raise RuntimeError("call Update() before reading the outputs")
        return self._result

    def GetOutput(self):
        """Displacement field ``T(x) - x``: ``Image[Vector[F, 3], 3]``, LPS mm, fixed grid."""
        return self._require().field

    def GetTransform(self):
        """``DisplacementFieldTransform[D, 3]``, fixed -> moving, initial transform baked in."""
        return self._require().transform

    def GetDeformableField(self):
        """``u(x)`` without the initial transform (fixed grid, LPS mm)."""
        return self._require().deformable_field

    def GetDeformableTransform(self):
        """``x + u(x)`` without the initial transform."""
        return self._require().deformable_transform

    def GetResult(self) -> RegistrationResult:
        """The full :class:`RegistrationResult` (timings, working grid, config)."""
        return self._require()

    def GetTimings(self) -> dict[str, float]:
        return dict(self._require().timings)

    def __repr__(self) -> str:
        state = "updated" if self._result is not None else "not updated"
        return f"<SAMConvexRegistrationFilter preset={self._preset!r} {state}>"


def warp_image(moving, transform, reference, nearest: bool = False, default_value=None):
    """Resample ``moving`` onto ``reference``'s grid through ``transform`` (fixed->moving).

    Linear interpolation, or nearest neighbour for label maps. Outside the moving image the
    value is ``default_value`` (default: the moving image's minimum, i.e. air for CT).
    """
    values = itk.array_view_from_image(moving)
    if default_value is None:
        default_value = np.min(values).item()
    if np.issubdtype(values.dtype, np.integer):  # SetDefaultPixelValue takes the pixel type
        default_value = int(default_value)
    kwargs = {"transform": transform, "use_reference_image": True, "reference_image": reference,
              "default_pixel_value": default_value}
    if nearest:
        kwargs["interpolator"] = itk.NearestNeighborInterpolateImageFunction.New(moving)
    return itk.resample_image_filter(moving, **kwargs)


__all__ = ["RegistrationResult", "SAMConvexRegistrationFilter", "build_config", "register",
           "resolve_device", "samconvex_registration", "warp_image"]
