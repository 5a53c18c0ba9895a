"""One registration of two ITK images: :func:`register` and its :class:`RegistrationResult`.

Validate the ITK inputs (``space``, ``checks``), build the working grid (``space``), decide
what the images decide (lungs), run the tensor solver (``solver.pyramid``), and hand back ITK
fields and transforms (``transforms``). The public ITK-style API over it is ``edge.api``.
Nothing here writes files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..solver.boundary import anchor_at_faces
from ..solver.config import (
    SAMConvexConfig,
    preset_config,
)
from ..solver.device import check_memory, resolve_device, torch_threads
from ..solver.features import make_extractor
from ..solver.lungs import lung_mask, lung_share
from ..solver.pyramid import estimate_peak_bytes, register_sliding, register_tensors
from . import itk_classes
from .checks import check_ct, size_warning
from .initial import as_transform
from .io.images import as_itk_image
from .space import (
    Grid,
    antialias,
    check_image,
    check_mask,
    faces_in,
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
        threads: torch CPU threads of the solver (fewer than the cores when other processes
            kept some busy and the user set none).
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
    threads: int | None = None

    @property
    def deformable_transform(self) -> Any:
        """``DisplacementFieldTransform[D, 3]`` of ``u`` alone (no initial transform)."""
        array = np.asarray(itk_classes.array_view_from_image(self.deformable_field))
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


def _fov_anchor(
    cfg: SAMConvexConfig,
    field: torch.Tensor,
    field_grid: Grid,
    fixed_grid: Grid,
    moving_grid: Grid,
    initial: Any,
) -> tuple[torch.Tensor, dict[str, str]]:
    """The solver field anchored at the fixed image's faces (``solver.boundary``) when
    ``cfg.fov_anchor`` asks for it or, with ``"auto"``, when both images cover the same box
    and no initial transform moves one; and the choice made, for the report."""
    if cfg.fov_anchor == "off":
        return field, {}
    if cfg.fov_anchor == "auto" and initial is not None:
        return field, {"fov_anchor": "off: an initial transform moves the moving image"}
    if cfg.fov_anchor == "auto" and not fixed_grid.same_as(moving_grid):
        return field, {"fov_anchor": "off: the moving image covers another box than the fixed"}
    lower, upper = faces_in(fixed_grid, field_grid)
    anchored, bands = anchor_at_faces(
        field,
        lower,
        upper,
        field_grid.spacing[0],
        cfg.fov_anchor_max_strain,
        cfg.fov_anchor_min_band_mm,
    )
    why = "asked" if cfg.fov_anchor == "on" else "both images cover the same box"
    widest = max(max(pair) for pair in bands)
    detail = (
        f"displacement leaving the box ramped to zero within {widest:.0f} mm of its faces"
        if widest > 0
        else "no displacement leaves the box"
    )
    return anchored, {"fov_anchor": f"on: {why}; {detail}"}


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
    hu = _working_image(fixed, grid, cfg, None, torch.device("cpu"))[0]
    return lung_share(hu[None, None], grid.spacing[0])[1]


def _working_image(
    image: Any, grid: Grid, cfg: SAMConvexConfig, transform: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (anti-aliased for the grid's spacing when ``cfg.antialias``) sampled on the
    working grid through ``transform``: (HU tensor (Z, Y, X), inside-the-image mask)."""
    source = antialias(image, grid.spacing[0]) if cfg.antialias else image
    return sample_image(source, grid, transform, device=device)


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
        check_ct(
            itk_classes.array_view_from_image(image),
            name,
            cfg.foreground_threshold_hu,
            cfg.ct_check,
        )
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

    fixed_t, fixed_inside = _working_image(fixed, grid, cfg, None, device)
    moving_t, moving_inside = _working_image(moving, grid, cfg, initial, device)
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
        torch_threads(cfg.num_threads, device) as threads,
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
    ):
        torch.manual_seed(cfg.seed)
        with torch.no_grad():
            fixed_b, moving_b = fixed_t[None, None], moving_t[None, None]
            run_cfg, lungs, choices = _lung_choices(cfg, fixed_b, moving_b, spacing)
            images = (fixed_b, moving_b, run_cfg, extractor)
            rest = (fixed_weight, moving_weight, progress)
            if lungs is None:
                solved = register_tensors(*images, *rest)
            else:
                solved = register_sliding(*images, *lungs, *rest)
    timings.update(solved.timings)

    tick = time.perf_counter()
    field_grid = level_grid(grid, solved.factor)
    field_vox, anchor_choice = _fov_anchor(
        run_cfg, solved.field, field_grid, fixed_grid, Grid.of(moving), initial
    )
    choices.update(anchor_choice)
    u_mm = deformable_field(field_vox, field_grid, fixed_grid)
    total_mm = u_mm if initial is None else baked_field(field_vox, field_grid, fixed_grid, initial)
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
        threads=threads,
    )
    timings["output"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    if progress is not None:
        progress("output")
    logger.info("registration took %.2f s", timings["total"])
    return result


__all__ = [
    "Progress",
    "RegistrationResult",
    "check_inputs",
    "fixed_lung_share",
    "register",
    "working_grid",
]
