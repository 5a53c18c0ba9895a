"""The public ITK API: ``samconvex_registration`` and ``SAMConvexRegistrationFilter``.

Both are thin over :func:`edge.registration.register`: the function builds a filter and
returns its transform; the filter adds ITK's vocabulary (``New``, ``Set*``/``Get*``, the C++
setter names, pipelines, observers, a persistent output). Nothing here writes files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import itk

from ..errors import InputError
from ..solver.config import (
    FIELD_NAMES,
    SAMConvexConfig,
    build_config,
    preset_config,
    unknown_parameter_message,
)
from ..solver.pyramid import stage_names
from . import itk_classes
from .io.images import as_itk_image
from .registration import Progress, RegistrationResult, register

logger = logging.getLogger(__name__)


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
        itk_classes.array_view_from_image(self._output)[:] = itk_classes.array_view_from_image(
            field_image
        )
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


__all__ = ["CXX_SETTERS", "SAMConvexRegistrationFilter", "samconvex_registration"]
