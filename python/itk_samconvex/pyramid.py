"""Coarse-to-fine driver: features -> per-level cost + coupled convex -> composition -> IO.

Everything here works on working-grid tensors (see ``warp`` for the conventions) and knows
nothing about ITK. ``register_tensors`` is the whole solver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .config import SAMConvexConfig
from .convex import coupled_convex
from .cost import cost_volume, smooth_cost
from .features import FeatureExtractor, FeatureMap, to_level_grid
from .instance import instance_optimization
from .warp import box_smooth, change_level, compose, pool, warp

Tensor = torch.Tensor
Progress = Callable[[str], None]
logger = logging.getLogger(__name__)


@dataclass
class SolverResult:
    """Output of :func:`register_tensors`.

    Attributes:
        field: (1, 3, Z', Y', X') displacement on the level grid ``factor`` (the instance
            optimisation grid), in voxels of that grid, channels (z, y, x): level voxel ``j``
            (centred on working index ``factor * j + (factor - 1) / 2``) corresponds to the
            moving position ``j + field(j)``.
        factor: the level grid's spacing in working-grid voxels.
        discrete_field: the field before instance optimisation, same grid and units.
        timings: seconds per stage.
    """

    field: Tensor
    factor: int
    discrete_field: Tensor
    timings: dict[str, float] = field(default_factory=dict)


def level_shape(working_shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    return tuple(-(-n // factor) for n in working_shape)  # type: ignore[return-value]


def stage_names(cfg: SAMConvexConfig) -> list[str]:
    """The progress stages :func:`register_tensors` reports, in order."""
    names = ["features"] + [f"level {i + 1}/{len(cfg.levels)}" for i in range(len(cfg.levels))]
    if cfg.instance_optimization and cfg.io_iterations > 0:
        names.append("instance optimisation")
    return names


def estimate_peak_bytes(working_shape: tuple[int, int, int], cfg: SAMConvexConfig,
                        channels: int = 12) -> int:
    """Rough upper bound of the solver's peak memory in bytes (float32 tensors)."""
    n = working_shape[0] * working_shape[1] * working_shape[2]
    features = 4 * n * channels * 3  # fixed + moving maps + one temporary
    costs = max(
        (2 * lv.search_radius + 1) ** 3 * -(-n // lv.grid_factor**3) for lv in cfg.levels
    ) * 4 * 2  # cost volume + coupled slab temporaries
    io = 4 * -(-n // cfg.io_grid_factor**3) * (3 * channels + 30)
    images = 4 * n * 6
    return int(features + max(costs, io) + images)


def _level_weight(mask: Tensor | None, factor: int, shape: tuple[int, int, int]) -> Tensor | None:
    if mask is None:
        return None
    return change_level(mask, 1, factor, shape)


def register_tensors(
    fixed: Tensor,
    moving: Tensor,
    cfg: SAMConvexConfig,
    extractor: FeatureExtractor,
    fixed_mask: Tensor | None = None,
    moving_mask: Tensor | None = None,
    progress: Progress | None = None,
) -> SolverResult:
    """Register two CT tensors on the same working grid.

    Args:
        fixed, moving: (1, 1, Z, Y, X) Hounsfield units on the working grid (the moving image
            already resampled through the initial transform); Z, Y, X multiples of
            ``cfg.coarsest_factor``.
        cfg: parameters.
        extractor: feature backend.
        fixed_mask, moving_mask: optional (1, 1, Z, Y, X) float {0, 1} data-term masks.
        progress: called with a stage name when that stage finishes.

    Returns:
        :class:`SolverResult` with the field in working-grid voxels.
    """
    timings: dict[str, float] = {}
    working = tuple(fixed.shape[2:])
    tick = time.perf_counter()

    def done(stage: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - tick
        tick = now
        if progress is not None:
            progress(stage)

    per_level = cfg.feature_extraction == "per_level"
    fixed_cache: dict[int, list[FeatureMap]] = {}

    def fixed_maps(image_factor: int) -> list[FeatureMap]:
        if image_factor not in fixed_cache:
            fixed_cache[image_factor] = extractor(pool(fixed, image_factor))
        return fixed_cache[image_factor]

    moving_maps_once = None if per_level else extractor(moving)
    if not per_level:
        fixed_maps(1)
    done("features")

    total: Tensor | None = None
    prev_factor = None
    for index, level in enumerate(cfg.levels):
        f, r = level.grid_factor, level.search_radius
        shape = level_shape(working, f)
        prior = None
        if total is not None:
            prior = change_level(total, prev_factor, f, shape, is_field=True)
            prior = box_smooth(prior, cfg.level_smoothing_passes, cfg.padding)
        if per_level:
            g = max(f // 2, 1)
            g_shape = level_shape(working, g)
            image = pool(moving, g)
            if prior is not None:
                image = warp(image, change_level(prior, f, g, g_shape, is_field=True))
            feats_f = to_level_grid(fixed_maps(g), g, f, shape, level.use_global_features)
            feats_m = to_level_grid(extractor(image), g, f, shape, level.use_global_features)
        else:
            feats_f = to_level_grid(fixed_maps(1), 1, f, shape, level.use_global_features)
            feats_m = to_level_grid(moving_maps_once, 1, f, shape, level.use_global_features)
            if prior is not None:
                feats_m = warp(feats_m, prior)
        wf = _level_weight(fixed_mask, f, shape)
        wm = _level_weight(moving_mask, f, shape)
        if wm is not None and prior is not None:
            wm = warp(wm, prior)
        cost = cost_volume(feats_f, feats_m, r, wf, wm)
        cost = smooth_cost(cost, cfg.cost_smoothing_passes, cfg.padding)
        step = coupled_convex(
            cost, r, cfg.coupling_weights, cfg.coupling_units, cfg.coupling_scale,
            cfg.initial_smoothing_passes, cfg.convex_smoothing_passes, cfg.padding,
            cfg.chunk_voxels,
        )
        del cost
        total = step if prior is None else compose(prior, step)
        prev_factor = f
        logger.debug("level %d (factor %d, r %d): grid %s, max |u| %.2f level voxels",
                     index + 1, f, r, shape, float(total.abs().max()))
        done(f"level {index + 1}/{len(cfg.levels)}")

    assert total is not None and prev_factor is not None
    io_factor = cfg.io_grid_factor
    io_shape = level_shape(working, io_factor)
    discrete = change_level(total, prev_factor, io_factor, io_shape, is_field=True)
    field_io = discrete
    if cfg.instance_optimization and cfg.io_iterations > 0:
        field_io = _run_instance_optimization(
            discrete, fixed, moving, fixed_maps, moving_maps_once, extractor, cfg,
            fixed_mask, moving_mask, io_shape,
        )
        done("instance optimisation")
    field_io = box_smooth(field_io, cfg.final_smoothing_passes, cfg.padding)
    return SolverResult(field=field_io, factor=io_factor, discrete_field=discrete,
                        timings=timings)


def _run_instance_optimization(
    field_io: Tensor,
    fixed: Tensor,
    moving: Tensor,
    fixed_maps: Callable[[int], list[FeatureMap]],
    moving_maps_once: list[FeatureMap] | None,
    extractor: FeatureExtractor,
    cfg: SAMConvexConfig,
    fixed_mask: Tensor | None,
    moving_mask: Tensor | None,
    io_shape: tuple[int, int, int],
) -> Tensor:
    """IO on the ``io_grid_factor`` grid with local features only."""
    f = cfg.io_grid_factor
    feats_f = to_level_grid(fixed_maps(1), 1, f, io_shape, use_global=False)
    if moving_maps_once is not None:
        feats_m = to_level_grid(moving_maps_once, 1, f, io_shape, use_global=False)
        parameterization = cfg.io_parameterization
        init = field_io
    else:
        # per-level parity: features of the moving image warped by the discrete result
        full = change_level(field_io, f, 1, tuple(moving.shape[2:]), is_field=True)
        warped = warp(moving, full)
        feats_m = to_level_grid(extractor(warped), 1, f, io_shape, use_global=False)
        if cfg.io_parameterization == "increment":
            increment = instance_optimization(
                feats_f, feats_m, torch.zeros_like(field_io), **_io_kwargs(cfg, fixed_mask,
                moving_mask, io_shape, pre_warp=field_io),
            )
            return compose(field_io, increment)
        feats_m = to_level_grid(extractor(moving), 1, f, io_shape, use_global=False)
        parameterization = "total"
        init = field_io
    kwargs = _io_kwargs(cfg, fixed_mask, moving_mask, io_shape, pre_warp=None)
    kwargs["parameterization"] = parameterization
    return instance_optimization(feats_f, feats_m, init, **kwargs)


def _io_kwargs(cfg: SAMConvexConfig, fixed_mask: Tensor | None, moving_mask: Tensor | None,
               io_shape: tuple[int, int, int], pre_warp: Tensor | None) -> dict:
    f = cfg.io_grid_factor
    wf = _level_weight(fixed_mask, f, io_shape)
    wm = _level_weight(moving_mask, f, io_shape)
    if wm is not None and pre_warp is not None:
        wm = warp(wm, pre_warp)
    return {
        "iterations": cfg.io_iterations,
        "learning_rate": cfg.io_learning_rate,
        "regularization": cfg.io_regularization,
        "smoothing_passes": cfg.io_smoothing_passes,
        "relinearize_every": cfg.io_relinearize_every,
        "parameterization": "total" if pre_warp is not None else cfg.io_parameterization,
        "return_smoothed": cfg.io_return_smoothed,
        "units": cfg.coupling_units,
        "padding": cfg.padding,
        "fixed_weight": wf,
        "moving_weight": wm,
    }
