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
from .features import FeatureExtractor, FeatureMap, harmonize, to_level_grid
from .instance import instance_optimization
from .lungs import combine_by_region
from .warp import box_smooth, change_level, compose, export_friendly, pool, warp

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


def estimate_peak_bytes(
    working_shape: tuple[int, int, int], cfg: SAMConvexConfig, channels: int = 12
) -> int:
    """Rough upper bound of the solver's peak memory in bytes (float32 tensors)."""
    n = working_shape[0] * working_shape[1] * working_shape[2]
    features = 4 * n * channels * 3  # fixed + moving maps + one temporary
    costs = (
        max((2 * lv.search_radius + 1) ** 3 * -(-n // lv.grid_factor**3) for lv in cfg.levels)
        * 4
        * 2
    )  # cost volume + coupled slab temporaries
    io = 4 * -(-n // cfg.io_grid_factor**3) * (3 * channels + 30)
    images = 4 * n * 6
    return int(features + max(costs, io) + images)


def _level_weight(mask: Tensor | None, factor: int, shape: tuple[int, int, int]) -> Tensor | None:
    """A working-grid weight on a level grid: level voxels at least half inside count."""
    if mask is None:
        return None
    return (change_level(mask, 1, factor, shape) >= 0.5).float()


class LevelFeatures:
    """Feature maps of both images on any level grid, per ``cfg.feature_extraction``.

    * ``"once"``: the extractor runs once per image on the working grid; levels pool it.
    * ``"pyramid"``: it runs once per image and level on the image block-averaged to half the
      level's grid factor (a multi-scale descriptor, as SAM's stride-2 output at each level
      of the paper); the moving maps are warped by the current field.
    * ``"per_level"``: like ``"pyramid"`` but the moving image is warped first and its
      features re-extracted at every level (the official code's scheme).

    Fixed-image features are computed once per image factor and cached.
    """

    def __init__(
        self, fixed: Tensor, moving: Tensor, extractor: FeatureExtractor, mode: str
    ) -> None:
        self.fixed_image, self.moving_image = fixed, moving
        self.extractor, self.mode = extractor, mode
        self.working = tuple(fixed.shape[2:])
        self._cache: dict[tuple[str, int], list[FeatureMap]] = {}

    def image_factor(self, level_factor: int) -> int:
        return 1 if self.mode == "once" else max(level_factor // 2, 1)

    def maps(self, which: str, image_factor: int) -> list[FeatureMap]:
        """Both images' maps at an image factor, extracted once and harmonised together
        (e.g. SAM's shared PCA basis, ``features.harmonize``)."""
        key = (which, image_factor)
        if key not in self._cache:
            fixed = self.extractor(pool(self.fixed_image, image_factor))
            moving = self.extractor(pool(self.moving_image, image_factor))
            fixed, moving = harmonize(self.extractor, fixed, moving)
            self._cache[("fixed", image_factor)] = fixed
            self._cache[("moving", image_factor)] = moving
        return self._cache[key]

    def fixed(self, factor: int, shape: tuple[int, int, int], use_global: bool) -> Tensor:
        g = self.image_factor(factor)
        return to_level_grid(self.maps("fixed", g), g, factor, shape, use_global)

    def moving(
        self, factor: int, shape: tuple[int, int, int], use_global: bool, field: Tensor | None
    ) -> Tensor:
        """Moving features on the level grid, warped by ``field`` (level voxels) if given."""
        g = self.image_factor(factor)
        if self.mode == "per_level" and field is not None:
            image = pool(self.moving_image, g)
            image = warp(
                image, change_level(field, factor, g, level_shape(self.working, g), is_field=True)
            )
            _, maps = harmonize(
                self.extractor, self.extractor(pool(self.fixed_image, g)), self.extractor(image)
            )
            return to_level_grid(maps, g, factor, shape, use_global)
        values = to_level_grid(self.maps("moving", g), g, factor, shape, use_global)
        return values if field is None else warp(values, field)


def register_tensors(
    fixed: Tensor,
    moving: Tensor,
    cfg: SAMConvexConfig,
    extractor: FeatureExtractor,
    fixed_mask: Tensor | None = None,
    moving_mask: Tensor | None = None,
    progress: Progress | None = None,
    features: LevelFeatures | None = None,
) -> SolverResult:
    """Register two CT tensors on the same working grid.

    Args:
        fixed, moving: (1, 1, Z, Y, X) Hounsfield units on the working grid (the moving image
            already resampled through the initial transform); Z, Y, X multiples of
            ``cfg.coarsest_factor``.
        cfg: parameters.
        extractor: feature backend.
        fixed_mask, moving_mask: optional (1, 1, Z, Y, X) data-term weights in [0, 1]
            (masks times field-of-view coverage).
        progress: called with a stage name when that stage finishes.
        features: feature maps of these two images computed before (reused, not recomputed).

    Returns:
        :class:`SolverResult` with the field on the instance-optimisation grid.
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

    if features is None:
        features = LevelFeatures(fixed, moving, extractor, cfg.feature_extraction)
    if cfg.feature_extraction != "per_level":
        for factor in sorted({lv.grid_factor for lv in cfg.levels} | {cfg.io_grid_factor}):
            features.maps("fixed", features.image_factor(factor))
            features.maps("moving", features.image_factor(factor))
    done("features")

    total: Tensor | None = None
    prev_factor = 1
    for index, level in enumerate(cfg.levels):
        f, r = level.grid_factor, level.search_radius
        shape = level_shape(working, f)
        prior = None
        if total is not None:
            prior = change_level(total, prev_factor, f, shape, is_field=True)
            prior = box_smooth(prior, cfg.level_smoothing_passes, cfg.padding)
        feats_f = features.fixed(f, shape, level.use_global_features)
        feats_m = features.moving(f, shape, level.use_global_features, prior)
        wf = _level_weight(fixed_mask, f, shape)
        wm = _level_weight(moving_mask, f, shape)
        if wm is not None and prior is not None:
            wm = (warp(wm, prior) >= 0.5).float()
        cost = cost_volume(feats_f, feats_m, r, wf, wm)
        cost = smooth_cost(cost, cfg.cost_smoothing_passes, cfg.padding)
        step = coupled_convex(
            cost,
            r,
            cfg.coupling_weights,
            cfg.coupling_units,
            cfg.coupling_scale,
            cfg.initial_smoothing_passes,
            cfg.convex_smoothing_passes,
            cfg.padding,
            cfg.chunk_voxels,
            cfg.subvoxel,
        )
        del cost
        total = step if prior is None else compose(prior, step)
        prev_factor = f
        if logger.isEnabledFor(logging.DEBUG) and not export_friendly():
            logger.debug(
                "level %d (factor %d, r %d): grid %s, max |u| %.2f level voxels",
                index + 1,
                f,
                r,
                shape,
                float(total.abs().max()),
            )
        done(f"level {index + 1}/{len(cfg.levels)}")

    assert total is not None
    io_factor = cfg.io_grid_factor
    io_shape = level_shape(working, io_factor)
    discrete = change_level(total, prev_factor, io_factor, io_shape, is_field=True)
    field_io = discrete
    if cfg.instance_optimization and cfg.io_iterations > 0:
        field_io = _run_instance_optimization(
            discrete, features, cfg, fixed_mask, moving_mask, io_shape
        )
        done("instance optimisation")
    field_io = box_smooth(field_io, cfg.final_smoothing_passes, cfg.padding)
    return SolverResult(field=field_io, factor=io_factor, discrete_field=discrete, timings=timings)


def _run_instance_optimization(
    discrete: Tensor,
    features: LevelFeatures,
    cfg: SAMConvexConfig,
    fixed_mask: Tensor | None,
    moving_mask: Tensor | None,
    io_shape: tuple[int, int, int],
) -> Tensor:
    """IO on the ``io_grid_factor`` grid with local features only.

    In ``per_level`` mode (official parity) the moving features are re-extracted on the image
    warped by the discrete field and an increment is optimised from zero; otherwise the
    features are warped and ``cfg.io_parameterization`` decides.
    """
    f = cfg.io_grid_factor
    feats_f = features.fixed(f, io_shape, use_global=False)
    wf = _level_weight(fixed_mask, f, io_shape)
    wm = _level_weight(moving_mask, f, io_shape)
    kwargs = {
        "iterations": cfg.io_iterations,
        "learning_rate": cfg.io_learning_rate,
        "regularization": cfg.io_regularization,
        "adam_eps": cfg.io_adam_eps,
        "smoothing_passes": cfg.io_smoothing_passes,
        "relinearize_every": cfg.io_relinearize_every,
        "return_smoothed": cfg.io_return_smoothed,
        "units": cfg.coupling_units,
        "padding": cfg.padding,
        "fixed_weight": wf,
    }
    if cfg.feature_extraction == "per_level":
        feats_m = features.moving(f, io_shape, use_global=False, field=discrete)
        moved_weight = None if wm is None else warp(wm, discrete)
        increment = instance_optimization(
            feats_f,
            feats_m,
            torch.zeros_like(discrete),
            parameterization="total",
            moving_weight=moved_weight,
            **kwargs,
        )
        return compose(discrete, increment)
    feats_m = features.moving(f, io_shape, use_global=False, field=None)
    return instance_optimization(
        feats_f,
        feats_m,
        discrete,
        parameterization=cfg.io_parameterization,
        moving_weight=wm,
        **kwargs,
    )


def _product(a: Tensor | None, b: Tensor) -> Tensor:
    return b if a is None else a * b


def register_sliding(
    fixed: Tensor,
    moving: Tensor,
    cfg: SAMConvexConfig,
    extractor: FeatureExtractor,
    fixed_lung: Tensor,
    moving_lung: Tensor,
    fixed_mask: Tensor | None = None,
    moving_mask: Tensor | None = None,
    progress: Progress | None = None,
) -> SolverResult:
    """:func:`register_tensors` with the field free to break at the lung surface.

    The lungs and the rest of the body are registered separately, each with its data term
    restricted to its own region (``fixed_lung``/``moving_lung``, (1, 1, Z, Y, X) in {0, 1}
    on the working grid, e.g. ``lungs.lung_mask``); each voxel then takes the displacement of
    its region in the fixed image. Feature maps are computed once for both runs. The
    timings add up the two runs.
    """
    features = LevelFeatures(fixed, moving, extractor, cfg.feature_extraction)
    inside = register_tensors(
        fixed,
        moving,
        cfg,
        extractor,
        _product(fixed_mask, fixed_lung),
        _product(moving_mask, moving_lung),
        None,
        features,
    )
    outside = register_tensors(
        fixed,
        moving,
        cfg,
        extractor,
        _product(fixed_mask, 1.0 - fixed_lung),
        _product(moving_mask, 1.0 - moving_lung),
        progress,
        features,
    )
    factor = inside.factor
    timings = {
        k: inside.timings.get(k, 0.0) + outside.timings.get(k, 0.0)
        for k in set(inside.timings) | set(outside.timings)
    }
    combined = combine_by_region(inside.field, outside.field, fixed_lung, factor)
    return SolverResult(
        field=box_smooth(combined, cfg.sliding_smoothing_passes, cfg.padding),
        factor=factor,
        discrete_field=combine_by_region(
            inside.discrete_field, outside.discrete_field, fixed_lung, factor
        ),
        timings=timings,
    )
