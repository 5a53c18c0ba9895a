"""The feature-extractor interface shared by MIND-SSC and SAM.

An extractor maps a CT tensor on some grid to one or more feature maps, each with its stride
relative to that grid. The pyramid moves every map onto each level's grid and concatenates
them (``to_level_grid``), so an extractor never needs to know about levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..warp import change_level, resample_separable

Tensor = torch.Tensor


@dataclass(frozen=True)
class FeatureMap:
    """One feature map.

    Attributes:
        values: (1, C, Z', Y', X') features; voxel ``j`` is centred on input index
            ``stride * j + offset`` per axis.
        stride: (z, y, x) integer stride relative to the input grid of the extractor.
        kind: ``"local"`` (detail) or ``"global"`` (context); levels may drop global maps.
        normalized: True when every feature vector has unit L2 norm (cosine features).
        offset: (z, y, x) centre of voxel 0 in input voxels; None means the centre of the
            first ``stride`` block, ``(stride - 1) / 2`` (pooling-like maps).
        source: which backend made it (``"mind"``, ``"sam"``), for per-pair post-processing
            (``harmonize``).
    """

    values: Tensor
    stride: tuple[int, int, int]
    kind: str = "local"
    normalized: bool = False
    offset: tuple[float, float, float] | None = None
    source: str = ""


class FeatureExtractor(Protocol):
    """What the registration needs from a feature backend."""

    name: str

    def __call__(self, image: Tensor) -> list[FeatureMap]:
        """Features of ``image``: (1, 1, Z, Y, X) Hounsfield units on an isotropic grid."""
        ...


def harmonize(
    extractor: FeatureExtractor, fixed: list[FeatureMap], moving: list[FeatureMap]
) -> tuple[list[FeatureMap], list[FeatureMap]]:
    """A backend's per-pair step on both images' maps (e.g. SAM's shared PCA), if it has one."""
    step = getattr(extractor, "harmonize", None)
    return (fixed, moving) if step is None else step(fixed, moving)


def to_level_grid(
    maps: list[FeatureMap],
    input_factor: int,
    level_factor: int,
    level_shape: tuple[int, int, int],
    use_global: bool = True,
) -> Tensor:
    """Concatenate ``maps`` (extracted on the grid ``input_factor``) on the level grid.

    Maps finer than the level are block-averaged, coarser maps are interpolated at exact
    voxel-centre coordinates; unit-norm maps are re-normalised after resampling.
    Returns (1, C_total, *level_shape).
    """
    parts = []
    for fmap in maps:
        if fmap.kind == "global" and not use_global:
            continue
        src = tuple(input_factor * s for s in fmap.stride)
        if fmap.offset is None:
            values = change_level(fmap.values, src, (level_factor,) * 3, level_shape)
        else:
            # working index of map voxel j: g * (s j + o) + (g - 1) / 2
            coords = []
            for n, s, o in zip(level_shape, fmap.stride, fmap.offset, strict=True):
                working = (
                    level_factor * torch.arange(n, dtype=torch.float32) + (level_factor - 1) / 2.0
                )
                origin = input_factor * o + (input_factor - 1) / 2.0
                coords.append((working - origin) / (input_factor * s))
            values = resample_separable(fmap.values, tuple(coords))  # type: ignore[arg-type]
        if fmap.normalized:
            values = torch.nn.functional.normalize(values, dim=1, eps=1e-6)
        parts.append(values)
    if not parts:
        raise ValueError("no feature map is used at this level (all maps are global)")
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
