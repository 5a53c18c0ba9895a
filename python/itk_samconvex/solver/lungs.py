"""Lungs on the working grid: detection, and sliding registration at the pleura.

Breathing moves the lungs along the chest wall: the displacement is continuous inside the
lungs and inside the rest of the body, but its tangential component jumps at the pleura. A
single smooth field averages the two motions there. :func:`register_sliding` registers the
lungs and the rest separately (each run's data term restricted to its region; the regulariser
of each run never sees the other region's data) and takes each voxel's displacement from the
run of its region in the fixed image, so the field can break at the pleura.

All tensors are (1, 1, Z, Y, X) on the working grid, z first; HU for images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .warp import change_level

Tensor = torch.Tensor

#: Lung parenchyma: below this in HU (tissue, vessels and the chest wall are above)...
LUNG_HU = -400.0
#: ... and, averaged over the neighbourhood, above this (ambient air is about -1000 HU).
AIR_HU = -960.0
NEIGHBOURHOOD_MM = 10.0


def _box_mean(x: Tensor, size: int) -> Tensor:
    pad = size // 2
    x = F.pad(x, (pad,) * 6, mode="replicate")
    return F.avg_pool3d(x, size, stride=1)


def lung_mask(hu: Tensor, spacing_mm: float) -> Tensor:
    """Lungs (with the vessels and airways inside them) of a CT on an isotropic grid.

    A voxel is lung when the mean HU of its ~10 mm neighbourhood lies between ambient air and
    ``LUNG_HU``: parenchyma and the vessels embedded in it qualify, the chest wall, the
    mediastinum and the abdomen (tissue) and the air outside the body (about -1000 HU on
    average) do not.

    Returns:
        (1, 1, Z, Y, X) float mask in {0, 1}.
    """
    size = max(3, round(NEIGHBOURHOOD_MM / spacing_mm) | 1)
    local = _box_mean(hu, size)
    lung = (local < LUNG_HU) & (local > AIR_HU)
    # a closing of one voxel: small vessels and fissures at the lung surface stay inside
    closed = -F.max_pool3d(-F.max_pool3d(lung.float(), 3, 1, 1), 3, 1, 1)
    return closed


def lung_fraction(mask: Tensor, body: Tensor) -> float:
    """The lungs' share of the body (0..1)."""
    total = float(body.sum())
    return float((mask * body).sum()) / total if total else 0.0


def combine_by_region(inside: Tensor, outside: Tensor, region: Tensor, factor: int) -> Tensor:
    """A field on a level grid taking ``inside`` where ``region`` (working grid) covers at
    least half of a level voxel, ``outside`` elsewhere.

    Args:
        inside, outside: (1, 3, Z', Y', X') fields on the level grid ``factor`` (voxels).
        region: (1, 1, Z, Y, X) working-grid mask in {0, 1}.
    """
    weight = change_level(region, 1, factor, tuple(inside.shape[2:])) >= 0.5
    return torch.where(weight, inside, outside)


__all__ = ["AIR_HU", "LUNG_HU", "combine_by_region", "lung_fraction", "lung_mask"]
