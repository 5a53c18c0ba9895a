"""Feature backends: ``"mind"`` (MIND-SSC, weight-free); SAM plugs into the same interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError
from .base import FeatureExtractor, FeatureMap, to_level_grid
from .mind import MINDExtractor, mind_ssc

if TYPE_CHECKING:
    from ..config import SAMConvexConfig


def make_extractor(cfg: SAMConvexConfig) -> FeatureExtractor:
    """The feature backend named by ``cfg.features``."""
    if cfg.features == "mind":
        return MINDExtractor(cfg.mind_radius, cfg.mind_dilation, cfg.hu_min, cfg.hu_max)
    raise InputError(
        f"features={cfg.features!r} needs the SAM network, which this version does not include "
        "yet; use features='mind' (the weight-free default)."
    )


__all__ = ["FeatureExtractor", "FeatureMap", "MINDExtractor", "make_extractor", "mind_ssc",
           "to_level_grid"]
