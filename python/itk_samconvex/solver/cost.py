"""Local cost volumes: feature dissimilarity for every integer offset in a search window.

``cost[p, l] = 0.5 * sum_c (F_c(p) - M_c(p + d_l))^2`` with the labels ``d_l`` the offsets of
``[-r, r]^3`` in level-grid voxels, ordered z slowest, x fastest (see ``label_offsets``). For
unit-norm features this is ``1 - cos``, the official SAMConvex cost up to a constant.

The result is stored labels-last, (Z, Y, X, L), so that the coupled argmin reads each
voxel's labels contiguously. Only that result is materialised: the per-offset work runs on
z-slabs small enough to stay in cache (eagerly; for ``torch.export`` one loop-free expression
over sliding-window views, which the compiler fuses, see ``warp.export_friendly``). Optional
masks make the data term neutral where they exclude it.
"""

from __future__ import annotations

import torch

from .warp import box_smooth, export_friendly

Tensor = torch.Tensor


def label_offsets(radius: int, device: torch.device | str = "cpu") -> Tensor:
    """(L, 3) integer offsets (z, y, x) of the cubic search window, z slowest."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1)
    return grid.reshape(-1, 3)


def pad_replicate(x: Tensor, radius: int) -> Tensor:
    """Replicate-pad the three spatial axes of (N, C, Z, Y, X) by ``radius``."""
    return torch.nn.functional.pad(x, (radius,) * 6, mode="replicate") if radius else x


def slab_size(plane_voxels: int, chunk_voxels: int) -> int:
    """Number of z-planes per slab so that a slab holds about ``chunk_voxels`` voxels."""
    return max(1, chunk_voxels // max(plane_voxels, 1))


def cost_volume(
    fixed: Tensor,
    moving: Tensor,
    radius: int,
    fixed_weight: Tensor | None = None,
    moving_weight: Tensor | None = None,
    chunk_elements: int = 1 << 22,
) -> Tensor:
    """Cost of every label at every voxel.

    Args:
        fixed: (1, C, Z, Y, X) fixed features on the level grid.
        moving: (1, C, Z, Y, X) moving features on the same grid, already warped by the
            current estimate (so labels are increments).
        radius: search radius r in level-grid voxels; L = (2r + 1)^3 labels.
        fixed_weight, moving_weight: optional (1, 1, Z, Y, X) weights in [0, 1] (masks and
            fields of view); excluded data is made neutral (see ``_neutralise``).
        chunk_elements: label costs per z-slab of the inner loop (cache blocking).

    Returns:
        (Z, Y, X, L) float32 costs.
    """
    if export_friendly():
        return _cost_volume_windows(fixed, moving, radius, fixed_weight, moving_weight)
    _, _, nz, ny, nx = fixed.shape
    k = 2 * radius + 1
    num_labels = k**3
    out = torch.empty((nz, ny, nx, num_labels), device=fixed.device, dtype=torch.float32)
    padded = pad_replicate(moving, radius)[0]
    fix = fixed[0]
    wm = pad_replicate(moving_weight, radius)[0, 0] if moving_weight is not None else None
    wf = fixed_weight[0, 0] if fixed_weight is not None else None
    # z-slabs holding about ``chunk_elements`` label costs, so the inner loop stays in cache
    zc = slab_size(ny * nx, chunk_elements // num_labels)
    for z0 in range(0, nz, zc):
        z1 = min(nz, z0 + zc)
        fslab = fix[:, z0:z1]
        buf = torch.empty_like(fslab)
        slab = torch.empty((num_labels, z1 - z0, ny, nx), device=fixed.device)
        for label, (dz, dy, dx) in enumerate(_window(k)):
            torch.sub(fslab, padded[:, z0 + dz : z1 + dz, dy : dy + ny, dx : dx + nx], out=buf)
            buf.square_()
            torch.sum(buf, dim=0, out=slab[label])
        slab.mul_(0.5)
        if wf is not None or wm is not None:
            _neutralise(slab, k, z0, wf, wm)
        out[z0:z1] = slab.permute(1, 2, 3, 0)
    return out


def label_windows(x: Tensor, k: int) -> Tensor:
    """Sliding ``k^3`` windows of (C, Z + k - 1, Y + k - 1, X + k - 1) as a view.

    Returns (C, Z, Y, X, k, k, k) with ``out[c, z, y, x, dz, dy, dx] = x[c, z + dz, y + dy,
    x + dx]``: the last three axes flattened are the labels in ``label_offsets`` order.
    """
    return x.unfold(1, k, 1).unfold(2, k, 1).unfold(3, k, 1)


def _cost_volume_windows(
    fixed: Tensor,
    moving: Tensor,
    radius: int,
    fixed_weight: Tensor | None,
    moving_weight: Tensor | None,
) -> Tensor:
    """Loop-free :func:`cost_volume` (same values) for ``torch.export``.

    Eagerly this would materialise C x L values per voxel; compiled, the difference, square
    and channel sum fuse into one kernel that writes only the (Z, Y, X, L) result.
    """
    _, _, nz, ny, nx = fixed.shape
    k = 2 * radius + 1
    num_labels = k**3
    windows = label_windows(pad_replicate(moving, radius)[0], k)
    diff = fixed[0][..., None, None, None] - windows
    cost = diff.square().sum(0).mul(0.5).reshape(nz, ny, nx, num_labels)
    if moving_weight is not None:
        weights = label_windows(pad_replicate(moving_weight, radius)[0], k)[0]
        weights = weights.reshape(nz, ny, nx, num_labels)
        total = weights.sum(-1, keepdim=True)
        mean = (cost * weights).sum(-1, keepdim=True) / total.clamp_min(1e-6)
        cost = cost * weights + (1 - weights) * mean
    if fixed_weight is not None:
        cost = cost * fixed_weight[0, 0].unsqueeze(-1)
    return cost


def _window(k: int):
    for dz in range(k):
        for dy in range(k):
            for dx in range(k):
                yield dz, dy, dx


def _neutralise(slab: Tensor, k: int, z0: int, wf: Tensor | None, wm: Tensor | None) -> None:
    """In place: make excluded data neutral.

    A label whose moving position is excluded (``w_m(p + d) = 0``) gets the mean cost of the
    voxel's valid labels, so it neither attracts nor repels; a voxel excluded from the fixed
    data (``w_f(p) = 0``) gets a flat cost profile, so only the regulariser moves it.
    Fractional weights blend linearly.
    """
    _, nzs, ny, nx = slab.shape
    if wm is not None:
        weights = torch.empty_like(slab)
        for label, (dz, dy, dx) in enumerate(_window(k)):
            weights[label] = wm[z0 + dz : z0 + dz + nzs, dy : dy + ny, dx : dx + nx]
        total = weights.sum(0)
        mean = (slab * weights).sum(0) / total.clamp_min(1e-6)
        slab.mul_(weights).add_((1 - weights) * mean.unsqueeze(0))
    if wf is not None:
        slab.mul_(wf[z0 : z0 + nzs].unsqueeze(0))


def smooth_cost(cost: Tensor, passes: int, padding: str = "replicate") -> Tensor:
    """Box-filter every label's cost image ``passes`` times (ConvexAdam's aggregation)."""
    if passes == 0:
        return cost
    smoothed = box_smooth(cost.permute(3, 0, 1, 2).unsqueeze(0), passes, padding)[0]
    return smoothed.permute(1, 2, 3, 0).contiguous()
