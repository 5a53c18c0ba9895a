"""Feature backends: ``"mind"`` (MIND-SSC, weight-free); SAM plugs into the same interface."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from .base import FeatureExtractor, FeatureMap, harmonize, to_level_grid
from .mind import MINDExtractor, mind_ssc

if TYPE_CHECKING:
    from ..config import SAMConvexConfig


def make_extractor(
    cfg: SAMConvexConfig,
    device: torch.device | str = "cpu",
    working_spacing_mm: float | None = None,
) -> FeatureExtractor:
    """The feature backend named by ``cfg.features`` (SAM networks are cached per process).

    ``working_spacing_mm``: the working grid's actual spacing (it may have grown to fit the
    voxel budget), which decides how SAM's input is pooled; default the configured one.
    """
    working_spacing_mm = working_spacing_mm or cfg.working_spacing_mm
    mind = MINDExtractor(cfg.mind_radius, cfg.mind_dilation, cfg.hu_min, cfg.hu_max)
    if cfg.features == "mind":
        return mind
    from .sam import SAMExtractor
    from .sam_checkpoint import resolve_checkpoint_path

    path = resolve_checkpoint_path(cfg.sam_checkpoint)
    network = _cached_network(str(path), path.stat().st_mtime_ns, str(device))
    return SAMExtractor(
        network,
        device,
        tile_z=cfg.sam_tile_z,
        with_mind=cfg.features == "sam+mind",
        mind=mind,
        working_spacing_mm=working_spacing_mm,
        channels=cfg.sam_channels,
        weight=cfg.sam_weight,
    )


@functools.lru_cache(maxsize=2)
def _cached_network(path: str, mtime_ns: int, device: str):
    """Load a SAM checkpoint once per process (keyed by path, mtime and device)."""
    from .sam_checkpoint import load_sam

    del mtime_ns  # part of the cache key only
    return load_sam(path).to(device)


__all__ = [
    "FeatureExtractor",
    "FeatureMap",
    "MINDExtractor",
    "harmonize",
    "make_extractor",
    "mind_ssc",
    "to_level_grid",
]
