"""Public API: ``samconvex_registration`` and ``SAMConvexRegistrationFilter``.

Thin by design: validate the ITK inputs (``space``, ``checks``), build the working grid
(``space``), run the tensor solver (``solver.pyramid``), and hand back ITK fields and
transforms (``transforms``). Nothing here writes files.
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

from ..errors import InputError
from ..solver.config import (
    FIELD_NAMES,
    SAMConvexConfig,
    build_config,
    preset_config,
    unknown_parameter_message,
)
from ..solver.device import check_memory, resolve_device, torch_threads
from ..solver.features import make_extractor
from ..solver.lungs import lung_mask, lung_share
from ..solver.pyramid import estimate_peak_bytes, register_sliding, register_tensors, stage_names
from .checks import check_ct, size_warning
from .initial import as_transform
from .io.images import as_itk_image
from .space import (
    Grid,
    antialias,
    check_image,
    check_mask,
    fit_working_grid,
    foreground_box,
    level_grid,
    sample_image,
    vector_image,
)
from .transforms import baked_field, deformable_field, displacement_transform

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
        warnings: messages about the inputs worth a look (also logged), e.g. a small image.
        choices: what was decided from the images themselves (e.g. sliding at the lungs),
            with the figures that decided it.
    """

    transform: Any
    field: Any
    deformable_field: Any
    initial_transform: Any
    working_grid: Grid
    config: SAMConvexConfig
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)

    @property
    def deformable_transform(self) -> Any:
        """``DisplacementFieldTransform[D, 3]`` of ``u`` alone (no initial transform)."""
        array = np.asarray(itk.array_view_from_image(self.deformable_field))
        return displacement_transform(array, Grid.of(self.deformable_field))


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


def _lung_choices(
    cfg: SAMConvexConfig, fixed: torch.Tensor, moving: torch.Tensor, spacing: float
) -> tuple[SAMConvexConfig, tuple[torch.Tensor, torch.Tensor] | None, dict[str, str]]:
    """What the lungs decide: the config to run, lung masks for sliding (or None) and the
    choices made, for the report. The lungs' share of the fixed body drives both ``auto``s.
    """
    if cfg.lung_settings == "off" and cfg.sliding == "off":
        return cfg, None, {}
    fixed_lung, fraction = lung_share(fixed, spacing)
    share = f"lungs fill {100 * fraction:.0f} % of the fixed body"
    threshold = f"{100 * cfg.lung_body_fraction:.0f} %"
    mostly_lung = fraction >= cfg.lung_body_fraction
    choices: dict[str, str] = {}

    if cfg.lung_settings == "on" or (cfg.lung_settings == "auto" and mostly_lung):
        why = "asked" if cfg.lung_settings == "on" else f"{share} (at least {threshold})"
        cfg = cfg.replace(
            io_grid_factor=cfg.lung_io_grid_factor, io_regularization=cfg.lung_io_regularization
        )
        choices["lung_settings"] = (
            f"on: {why}; instance optimisation on a {cfg.io_grid_factor}-voxel grid with "
            f"io_regularization {cfg.io_regularization:g}"
        )
    elif cfg.lung_settings == "auto":
        choices["lung_settings"] = f"off: {share} (below {threshold})"

    lungs = None
    if cfg.sliding == "on" or (cfg.sliding == "auto" and mostly_lung):
        lungs = (fixed_lung, lung_mask(moving, spacing))
        why = "asked" if cfg.sliding == "on" else f"{share} (at least {threshold})"
        choices["sliding"] = f"on: {why}, so the field may break at the pleura"
    elif cfg.sliding == "auto":
        choices["sliding"] = f"off: {share} (below {threshold})"
    return cfg, lungs, choices


def working_grid(fixed: Any, fixed_grid: Grid, cfg: SAMConvexConfig) -> Grid:
    """The isotropic grid the solver runs on: the fixed image's frame, cropped to its body
    (``crop_to_foreground``) and coarsened to fit ``max_working_voxels``."""
    box = None
    if cfg.crop_to_foreground:
        box = foreground_box(fixed, fixed_grid, cfg.foreground_threshold_hu, cfg.crop_margin_mm)
    return fit_working_grid(
        fixed_grid, cfg.working_spacing_mm, cfg.coarsest_factor, box, cfg.max_working_voxels
    )


def fixed_lung_share(fixed: Any, config: SAMConvexConfig | None = None) -> float:
    """The lungs' share of the fixed image's body on the working grid: what
    ``lung_settings="auto"`` and ``sliding="auto"`` compare with ``lung_body_fraction``."""
    cfg = config or preset_config("default")
    fixed = as_itk_image(fixed, "fixed image")
    grid = working_grid(fixed, check_image(fixed, "fixed image"), cfg)
    source = antialias(fixed, grid.spacing[0]) if cfg.antialias else fixed
    hu = sample_image(source, grid, None, device=torch.device("cpu"))[0]
    return lung_share(hu[None, None], grid.spacing[0])[1]


def check_inputs(
    fixed: Any, moving: Any, cfg: SAMConvexConfig, fixed_mask: Any = None, moving_mask: Any = None
) -> tuple[Grid, list[str]]:
    """Every check of the inputs; returns the fixed grid and warnings (e.g. small images).

    Raises:
        TypeError, InputError: an input cannot be used (the message names it and the fix).
    """
    fixed_grid = check_image(fixed, "fixed image")
    moving_grid = check_image(moving, "moving image")
    for image, name in ((fixed, "fixed image"), (moving, "moving image")):
        check_ct(itk.array_view_from_image(image), name, cfg.foreground_threshold_hu, cfg.ct_check)
    if fixed_mask is not None:
        check_mask(fixed_mask, "fixed_mask", fixed_grid, "the fixed image")
    if moving_mask is not None:
        check_mask(moving_mask, "moving_mask", moving_grid, "the moving image")
    warnings = [
        w
        for w in (
            size_warning(g.size, g.spacing, n)
            for g, n in ((fixed_grid, "fixed image"), (moving_grid, "moving image"))
        )
        if w
    ]
    for message in warnings:
        logger.warning(message)
    return fixed_grid, warnings


def register(
    fixed: Any,
    moving: Any,
    config: SAMConvexConfig | None = None,
    initial_transform: Any = None,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    progress: Progress | None = None,
    extractor: Any = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``; see :func:`samconvex_registration` for the inputs.

    ``extractor`` reuses a feature backend built earlier (e.g. a batch worker's cached SAM
    network); by default one is made from ``config``.
    """
    start = time.perf_counter()
    cfg = config or preset_config("default")
    fixed = as_itk_image(fixed, "fixed image")
    moving = as_itk_image(moving, "moving image")
    fixed_mask = as_itk_image(fixed_mask, "fixed_mask")
    moving_mask = as_itk_image(moving_mask, "moving_mask")
    fixed_grid, warnings = check_inputs(fixed, moving, cfg, fixed_mask, moving_mask)
    initial = as_transform(initial_transform, fixed)
    device = resolve_device(cfg.device)
    timings: dict[str, float] = {}

    grid = working_grid(fixed, fixed_grid, cfg)
    spacing = grid.spacing[0]
    check_memory(
        estimate_peak_bytes(grid.shape, cfg),
        f"registering on a {grid.size[0]}x{grid.size[1]}x{grid.size[2]} working grid at "
        f"{spacing:g} mm",
        device,
        cfg.memory_limit_gb,
        f"raise working_spacing_mm (e.g. {spacing * 1.5:g}), keep crop_to_foreground on, "
        "lower max_working_voxels or the finest search_radius, or raise memory_limit_gb.",
    )
    logger.info(
        "working grid %s voxels at %g mm on %s", "x".join(map(str, grid.size)), spacing, device
    )

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
        extractor = make_extractor(cfg, device, spacing)
    elif hasattr(extractor, "set_working_spacing"):
        extractor.set_working_spacing(spacing)
    with (
        torch_threads(cfg.num_threads),
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
    ):
        torch.manual_seed(cfg.seed)
        with torch.no_grad():
            run_cfg, lungs, choices = _lung_choices(
                cfg, fixed_t[None, None], moving_t[None, None], spacing
            )
            if lungs is None:
                solved = register_tensors(
                    fixed_t[None, None],
                    moving_t[None, None],
                    run_cfg,
                    extractor,
                    fixed_weight,
                    moving_weight,
                    progress,
                )
            else:
                solved = register_sliding(
                    fixed_t[None, None],
                    moving_t[None, None],
                    run_cfg,
                    extractor,
                    *lungs,
                    fixed_weight,
                    moving_weight,
                    progress,
                )
    timings.update(solved.timings)

    tick = time.perf_counter()
    field_grid = level_grid(grid, solved.factor)
    u_mm = deformable_field(solved.field, field_grid, fixed_grid)
    total_mm = (
        u_mm if initial is None else baked_field(solved.field, field_grid, fixed_grid, initial)
    )
    result = RegistrationResult(
        transform=displacement_transform(total_mm, fixed_grid),
        field=vector_image(total_mm, fixed_grid, "F"),
        deformable_field=vector_image(u_mm, fixed_grid, "F"),
        initial_transform=initial,
        working_grid=grid,
        config=run_cfg,
        device=str(device),
        timings=timings,
        warnings=warnings,
        choices=choices,
    )
    timings["output"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    if progress is not None:
        progress("output")
    logger.info("registration took %.2f s", timings["total"])
    return result


def samconvex_registration(
    fixed: Any,
    moving: Any,
    *,
    initial_transform: Any = None,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    features: str = "mind",
    sam_checkpoint: str | os.PathLike | None = None,
    preset: str = "default",
    instance_optimization: bool = True,
    device: str = "auto",
    config: SAMConvexConfig | str | os.PathLike | None = None,
    progress: Progress | None = None,
    **parameters: Any,
) -> Any:
    """Register two 3-D CT images; return ``itk.DisplacementFieldTransform[itk.D, 3]``.

    The transform maps fixed physical points to moving physical points (LPS mm),
    ``T(x) = A(x + u(x))`` with the initial transform ``A`` baked into its one field, so
    ``itk.resample_image_filter(moving, transform=T, use_reference_image=True,
    reference_image=fixed)`` warps the moving image onto the fixed one.

    Args:
        fixed, moving: 3-D scalar ``itk.Image`` of any pixel type, spacing, origin, direction
            (a path or a SimpleITK image is read or copied, with a log line).
        initial_transform: fixed->moving pre-alignment: any ITK transform, an itk-elastix
            registration or parameter object, or a transform / TransformParameters file.
        fixed_mask, moving_mask: optional masks on their image's grid; only voxels inside
            them drive the data term.
        features: ``"mind"`` (weight-free), ``"sam"`` or ``"sam+mind"``.
        sam_checkpoint: SAM weights path (default: the packaged weights, or env
            ``SAMCONVEX_SAM_CHECKPOINT``).
        preset: ``"default"``, ``"paper"`` (official-code parity) or ``"fast"``.
        instance_optimization: run the Adam refinement after the discrete stage.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        config: a :class:`SAMConvexConfig` or a TOML file; replaces ``preset``.
        progress: callable receiving each finished stage's name.
        **parameters: any other :class:`SAMConvexConfig` field (e.g. ``io_iterations=30``)
            or C++ setter name in snake_case (e.g. ``working_spacing=2.5``).
    """
    reg = SAMConvexRegistrationFilter.New(
        fixed,
        moving,
        initial_transform=initial_transform,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        features=features,
        sam_checkpoint=sam_checkpoint,
        preset=preset,
        instance_optimization=instance_optimization,
        device=device,
        config=config,
        progress=progress,
        **parameters,
    )
    reg.Update()
    return reg.GetTransform()


#: The C++ filter's setters (snake_case) and the config fields they set: one vocabulary.
CXX_SETTERS: dict[str, str] = {
    "working_spacing": "working_spacing_mm",
    "maximum_working_voxels": "max_working_voxels",
    "crop_to_foreground": "crop_to_foreground",
    "foreground_threshold": "foreground_threshold_hu",
    "crop_margin": "crop_margin_mm",
    "antialias": "antialias",
    "device": "device",
    "number_of_solver_threads": "num_threads",
}


def _progress_event_name(event: Any) -> str:
    name = event.GetEventName() if hasattr(event, "GetEventName") else str(event)
    return str(name)


class SAMConvexRegistrationFilter:
    """ITK-style registration filter (pure Python; see ``wrapping/python/README.md``).

    ``New(fixed, moving, **kwargs)`` sets the inputs; every keyword is the snake_case form of
    a ``Set*`` method, a :class:`SAMConvexConfig` field, or a C++ setter name
    (``SetWorkingSpacing`` -> ``working_spacing_mm``, see :data:`CXX_SETTERS`). ``Update()``
    pulls the input pipelines and re-runs only when an input or parameter changed.
    ``GetOutput()`` is the displacement field ``Image[Vector[F, 3], 3]`` (LPS mm, fixed grid;
    the same object across updates, so downstream filters see its modification);
    ``GetTransform()`` the ``DisplacementFieldTransform[D, 3]``; both include the initial
    transform. ``AddObserver(itk.ProgressEvent(), callback)`` (and Start/End events) and
    ``itk.auto_progress`` report progress per solver stage.
    """

    _KEYWORDS = (
        "fixed_image",
        "moving_image",
        "initial_transform",
        "fixed_mask",
        "moving_mask",
        "preset",
        "config",
        "progress",
        "auto_progress",
    )

    def __init__(self) -> None:
        self._inputs: dict[str, Any] = {
            "fixed_image": None,
            "moving_image": None,
            "initial_transform": None,
            "fixed_mask": None,
            "moving_mask": None,
        }
        self._preset = "default"
        self._config: SAMConvexConfig | str | os.PathLike | None = None
        self._parameters: dict[str, Any] = {}
        self._progress: Progress | None = None
        self._observers: dict[int, tuple[str, Callable[[], None]]] = {}
        self._progress_value = 0.0
        self._modified = 0
        self._last_key: tuple | None = None
        self._result: RegistrationResult | None = None
        self._output: Any = None

    # --- construction ------------------------------------------------------------------
    @classmethod
    def New(cls, *args: Any, **kwargs: Any) -> SAMConvexRegistrationFilter:
        """``New(fixed, moving, **kwargs)``, like ITK's filters."""
        obj = cls()
        if len(args) > 2:
            raise TypeError(
                "SAMConvexRegistrationFilter.New() takes at most two inputs "
                "(fixed, moving); pass the rest as keywords."
            )
        for setter, arg in zip((obj.SetFixedImage, obj.SetMovingImage), args, strict=False):
            setter(arg)
        for key, value in kwargs.items():
            obj.SetParameter(key, value)
        import itkConfig

        if "auto_progress" not in kwargs and getattr(itkConfig, "ProgressCallback", None):
            obj.SetAutoProgress(True)
        return obj

    def SetParameter(self, name: str, value: Any) -> None:
        """Set one keyword: an input, a filter option, a config field or a C++ setter name."""
        name = CXX_SETTERS.get(name, name)
        if name in self._KEYWORDS:
            getattr(self, "Set" + "".join(p.capitalize() for p in name.split("_")))(value)
            return
        if name not in FIELD_NAMES:
            raise InputError(unknown_parameter_message([name], (*self._KEYWORDS, *CXX_SETTERS)))
        if name == "sam_checkpoint" and value is not None:
            value = str(value)
        self._parameters[name] = value
        self._modified += 1

    def GetParameter(self, name: str) -> Any:
        return getattr(self.GetConfig(), CXX_SETTERS.get(name, name))

    def __getattr__(self, name: str) -> Any:
        """``SetWorkingSpacing(2.5)``, ``GetCropMargin()``... for every config field and C++
        setter (``Set`` + CamelCase of the snake_case name)."""
        if name.startswith(("Set", "Get")) and len(name) > 3:
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name[3:]).lstrip("_")
            field_name = CXX_SETTERS.get(snake, snake)
            if field_name in FIELD_NAMES:
                if name.startswith("Set"):
                    return lambda value: self.SetParameter(field_name, value)
                return lambda: self.GetParameter(field_name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # --- inputs -------------------------------------------------------------------------
    def _set_input(self, key: str, value: Any, what: str, image: bool = True) -> None:
        if (
            image
            and value is not None
            and hasattr(value, "GetOutput")
            and not hasattr(value, "GetLargestPossibleRegion")
        ):
            value = itk.output(value)  # an upstream filter: its output image
        if image:
            value = as_itk_image(value, what)
        self._inputs[key] = value
        self._modified += 1

    def SetFixedImage(self, image: Any) -> None:
        self._set_input("fixed_image", image, "fixed image")

    def GetFixedImage(self) -> Any:
        return self._inputs["fixed_image"]

    def SetMovingImage(self, image: Any) -> None:
        self._set_input("moving_image", image, "moving image")

    def GetMovingImage(self) -> Any:
        return self._inputs["moving_image"]

    SetInput1 = SetFixedImage
    SetInput2 = SetMovingImage

    def SetInitialTransform(self, transform: Any) -> None:
        self._set_input("initial_transform", transform, "initial transform", image=False)

    def GetInitialTransform(self) -> Any:
        return self._inputs["initial_transform"]

    def SetFixedMask(self, mask: Any) -> None:
        self._set_input("fixed_mask", mask, "fixed_mask")

    def SetMovingMask(self, mask: Any) -> None:
        self._set_input("moving_mask", mask, "moving_mask")

    # --- options ------------------------------------------------------------------------
    def SetPreset(self, preset: str) -> None:
        preset_config(preset)  # validates the name now rather than at Update()
        self._preset = preset
        self._modified += 1

    def SetConfig(self, config: Any) -> None:
        self._config = config
        self._modified += 1

    def SetFeatures(self, features: str) -> None:
        """``"mind"``, ``"sam"`` or ``"sam+mind"``."""
        self.SetParameter("features", features)

    def SetSamCheckpoint(self, path: Any) -> None:
        self.SetParameter("sam_checkpoint", path)

    def SetInstanceOptimization(self, enabled: bool) -> None:
        self.SetParameter("instance_optimization", bool(enabled))

    def SetDevice(self, device: str) -> None:
        self.SetParameter("device", str(device))

    def SetProgress(self, callback: Progress | None) -> None:
        """A callable receiving each finished stage's name."""
        self._progress = callback

    def SetAutoProgress(self, enabled: bool) -> None:
        """Print progress like ITK filters do under ``itk.auto_progress``."""
        if not enabled:
            return

        def show() -> None:
            import itkConfig

            callback = getattr(itkConfig, "ProgressCallback", None)
            if callback is not None:
                callback("SAMConvexRegistrationFilter", self._progress_value)

        self.AddObserver("ProgressEvent", show)

    def GetConfig(self) -> SAMConvexConfig:
        """The effective parameters (preset or config, then keyword overrides)."""
        return build_config(self._preset, self._config, **self._parameters)

    # --- events -------------------------------------------------------------------------
    def AddObserver(self, event: Any, command: Callable[[], None]) -> int:
        """Call ``command()`` on ``itk.ProgressEvent()``, ``itk.StartEvent()`` or
        ``itk.EndEvent()`` (or their names as strings); returns a tag."""
        tag = len(self._observers)
        self._observers[tag] = (_progress_event_name(event), command)
        return tag

    def RemoveObserver(self, tag: int) -> None:
        self._observers.pop(tag, None)

    def GetProgress(self) -> float:
        """Fraction of the current (or last) update done, 0..1."""
        return self._progress_value

    def _invoke(self, event: str) -> None:
        for name, command in list(self._observers.values()):
            if name == event:
                command()

    # --- execution ----------------------------------------------------------------------
    def _input_key(self) -> tuple:
        key: list[Any] = [self._modified]
        for name in (
            "fixed_image",
            "moving_image",
            "initial_transform",
            "fixed_mask",
            "moving_mask",
        ):
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
            raise InputError(
                "SAMConvexRegistrationFilter needs both inputs: call "
                "SetFixedImage(fixed) and SetMovingImage(moving) (or New(fixed, "
                "moving))."
            )
        key = self._input_key()
        if key == self._last_key and self._result is not None:
            return
        cfg = self.GetConfig()
        stages = [*stage_names(cfg), "output"]
        self._progress_value = 0.0
        self._invoke("StartEvent")

        def on_stage(stage: str) -> None:
            if stage in stages:
                self._progress_value = (stages.index(stage) + 1) / len(stages)
                self._invoke("ProgressEvent")
            if self._progress is not None:
                self._progress(stage)

        self._result = register(
            self._inputs["fixed_image"],
            self._inputs["moving_image"],
            cfg,
            self._inputs["initial_transform"],
            self._inputs["fixed_mask"],
            self._inputs["moving_mask"],
            on_stage,
        )
        self._update_output(self._result.field)
        self._last_key = key
        self._progress_value = 1.0
        self._invoke("EndEvent")

    UpdateLargestPossibleRegion = Update

    def _update_output(self, field_image: Any) -> None:
        """Copy a new field into the persistent output image (same object across updates)."""
        if self._output is None:
            self._output = field_image
            return
        self._output.SetRegions(field_image.GetLargestPossibleRegion())
        self._output.CopyInformation(field_image)
        self._output.Allocate()
        itk.array_view_from_image(self._output)[:] = itk.array_view_from_image(field_image)
        self._output.Modified()
        self._result.field = self._output  # type: ignore[union-attr]

    def _require(self) -> RegistrationResult:
        if self._result is None:
            raise RuntimeError("call Update() before reading the outputs")
        return self._result

    def GetOutput(self) -> Any:
        """Displacement field ``T(x) - x``: ``Image[Vector[F, 3], 3]``, LPS mm, fixed grid."""
        self._require()
        return self._output

    def GetTransform(self) -> Any:
        """``DisplacementFieldTransform[D, 3]``, fixed -> moving, initial transform baked in."""
        return self._require().transform

    def GetDeformableField(self) -> Any:
        """``u(x)`` without the initial transform (fixed grid, LPS mm)."""
        return self._require().deformable_field

    def GetDeformableTransform(self) -> Any:
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


__all__ = [
    "CXX_SETTERS",
    "RegistrationResult",
    "SAMConvexRegistrationFilter",
    "check_inputs",
    "fixed_lung_share",
    "register",
    "samconvex_registration",
    "working_grid",
]
