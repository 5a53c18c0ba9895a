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
    """Mean over a ``size``^3 box (odd size; replicate padding), one axis at a time."""
    pad = size // 2
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = size
        pads = [0] * 6
        pads[2 * (2 - axis)] = pads[2 * (2 - axis) + 1] = pad
        x = F.avg_pool3d(F.pad(x, pads, mode="replicate"), tuple(kernel), stride=1)
    return x


def _window_any(mask: Tensor, radius: int, empty: bool) -> Tensor:
    """For a bool (1, 1, Z, Y, X) mask: whether any voxel of the (2 radius + 1)^3 box is
    set (``empty=False``: a dilation) or, with ``empty=True``, whether every voxel is (an
    erosion, computed as the dilation of the complement). Voxels outside the volume never
    count, as with ``max_pool3d``'s padding.

    One axis at a time, by doubling windows: the window is grown from 1 to ``2 r + 1`` with
    ``O(log r)`` ors of shifted views (a ``max_pool3d`` with a 1 x 1 x k kernel is an order of
    magnitude slower on CPU).
    """
    x = ~mask if empty else mask
    for dim in (2, 3, 4):
        x = _window_any_along(x, dim, radius)
    return ~x if empty else x


def _window_any_along(x: Tensor, dim: int, radius: int) -> Tensor:
    """Or over the ``2 radius + 1`` neighbours along ``dim`` (zero padding; same shape)."""
    n, width = x.shape[dim], 2 * radius + 1
    pads = [0] * 6
    pads[2 * (4 - dim)] = pads[2 * (4 - dim) + 1] = radius
    y = F.pad(x.to(torch.uint8), pads).bool()
    # y_w[i] = or of y[i : i + w]; grow w by doubling up to the largest power of two <= width
    w = 1
    while 2 * w <= width:
        m = y.shape[dim] - w
        y = y.narrow(dim, 0, m) | y.narrow(dim, w, m)
        w *= 2
    # two overlapping windows of w cover width (w <= width < 2 w)
    return y.narrow(dim, 0, n) | y.narrow(dim, width - w, n)


def lung_mask(hu: Tensor, spacing_mm: float) -> Tensor:
    """Lungs (with the vessels and airways inside them) of a CT on an isotropic grid.

    A voxel is lung when the mean HU of its ~10 mm neighbourhood is below ``LUNG_HU`` and no
    ambient air lies within that distance. Ambient air is where the neighbourhood mean is
    below ``AIR_HU`` (about -1000 HU: the air around the body, and large air spaces such as
    the trachea or the sinuses); lung parenchyma averages -700 to -900 HU. Without that
    exclusion the skin's shell (half air, half tissue) would count as lung.

    Returns:
        (1, 1, Z, Y, X) float mask in {0, 1}.
    """
    size = max(3, round(NEIGHBOURHOOD_MM / spacing_mm) | 1)
    local = _box_mean(hu, size)
    near_ambient = _window_any(local < AIR_HU, size, empty=False)
    lung = (local < LUNG_HU) & ~near_ambient
    # a closing of one voxel: small vessels and fissures at the lung surface stay inside
    closed = _window_any(_window_any(lung, 1, empty=False), 1, empty=True)
    return closed.to(hu.dtype)


def lung_fraction(mask: Tensor, body: Tensor) -> float:
    """The lungs' share of the body (0..1)."""
    total = float(body.sum())
    return float((mask * body).sum()) / total if total else 0.0


def lung_share(hu: Tensor, spacing_mm: float) -> tuple[Tensor, float]:
    """The lung mask of a CT (see :func:`lung_mask`) and the lungs' share of its body.

    The body is every voxel above -500 HU plus the lungs themselves.

    Returns:
        ((1, 1, Z, Y, X) mask in {0, 1}, share in 0..1).
    """
    mask = lung_mask(hu, spacing_mm)
    return mask, lung_fraction(mask, ((hu > -500.0) | (mask > 0)).float())


def combine_by_region(inside: Tensor, outside: Tensor, region: Tensor, factor: int) -> Tensor:
    """A field on a level grid taking ``inside`` where ``region`` (working grid) covers at
    least half of a level voxel, ``outside`` elsewhere.

    Args:
        inside, outside: (1, 3, Z', Y', X') fields on the level grid ``factor`` (voxels).
        region: (1, 1, Z, Y, X) working-grid mask in {0, 1}.
    """
    weight = change_level(region, 1, factor, tuple(inside.shape[2:])) >= 0.5
    return torch.where(weight, inside, outside)


__all__ = ["AIR_HU", "LUNG_HU", "combine_by_region", "lung_fraction", "lung_mask", "lung_share"]
