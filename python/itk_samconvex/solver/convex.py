"""Coupled convex optimisation of a discrete displacement field (ConvexAdam / SAMConvex).

Alternates two convex sub-problems: a point-wise argmin over labels of
``cost(p, l) + theta * |s * (l - u_bar(p))|^2`` and a smoothing of the chosen labels into
``u_bar``, with ``theta`` rising through ``weights``. ``s`` converts level voxels into the
units the coupling is measured in: 1 for voxel units, ``2 / (n - 1)`` per axis for the
official code's normalised units (where the coupling barely acts; see notes/algorithm.md).

Expanding the square, ``theta |s (l - u)|^2 = theta |s l|^2 - 2 theta (s^2 l) . u + const``, so
the coupled cost of a slab is one fused ``addmm`` of the stored costs with a (4 x L) label
matrix, followed by a contiguous argmin over each voxel's labels.
"""

from __future__ import annotations

import torch

from .cost import label_offsets
from .warp import box_smooth, export_friendly, normalised_units_scale

Tensor = torch.Tensor

TIE_BREAK = 1e-4  # cost units per squared level voxel; only decides (near-)ties


def _subvoxel_offsets(total: Tensor, best: Tensor, k: int) -> Tensor:
    """Parabolic refinement of the argmin along each label axis.

    For the chosen label and its two neighbours along an axis with costs (c-, c0, c+), the
    vertex of the interpolating parabola lies at ``(c- - c+) / (2 (c- - 2 c0 + c+))``,
    clipped to [-0.5, 0.5]; no refinement at the edge of the window or without curvature.

    Args:
        total: (N, L) coupled costs; best: (N,) argmin; k: labels per axis (2r + 1).

    Returns:
        (N, 3) offsets (z, y, x) in level voxels.
    """
    num_labels = total.shape[1]
    out = torch.zeros((best.shape[0], 3), device=total.device)
    c0 = total.gather(1, best[:, None])[:, 0]
    for axis, step in enumerate((k * k, k, 1)):
        position = (best // step) % k
        usable = (position > 0) & (position < k - 1)
        lower = total.gather(1, (best - step).clamp(0, num_labels - 1)[:, None])[:, 0]
        upper = total.gather(1, (best + step).clamp(0, num_labels - 1)[:, None])[:, 0]
        curvature = lower - 2 * c0 + upper
        offset = 0.5 * (lower - upper) / curvature.clamp_min(1e-12)
        out[:, axis] = torch.where(
            usable & (curvature > 1e-12), offset.clamp(-0.5, 0.5), torch.zeros_like(offset)
        )
    return out


def coupled_argmin(
    cost: Tensor,
    offsets: Tensor,
    field: Tensor,
    weight: float,
    axis_scale: Tensor,
    chunk_voxels: int = 1 << 14,
    subvoxel: bool = False,
) -> Tensor:
    """Displacement minimising ``cost(p, l) + weight * |axis_scale * (l - field(p))|^2``.

    Args:
        cost: (Z, Y, X, L) costs; offsets: (L, 3); field: (1, 3, Z, Y, X) level voxels;
        axis_scale: (3,) unit conversion per axis; subvoxel: refine the label by a parabola
            through its neighbours' costs (see ``_subvoxel_offsets``).

    Returns:
        (1, 3, Z, Y, X) displacement in level voxels (integer labels unless ``subvoxel``).
    """
    nz, ny, nx, num_labels = cost.shape
    k = round(num_labels ** (1 / 3))
    flat_cost = cost.view(-1, num_labels)
    s2 = axis_scale * axis_scale
    # rows: [-2 w s^2 l_z, -2 w s^2 l_y, -2 w s^2 l_x, w |s l|^2] -> (4, L)
    label_matrix = torch.cat(
        [
            (-2.0 * weight * s2).view(3, 1) * offsets.t(),
            (weight * (offsets * offsets * s2).sum(1)).view(1, -1),
        ],
        0,
    )
    flat_field = field[0].reshape(3, -1)
    if export_friendly():  # one chunk: no loop whose trip count depends on the size
        out = _argmin_rows(flat_cost, flat_field, label_matrix, offsets, k, subvoxel)
        return out.t().reshape(1, 3, nz, ny, nx)
    out = torch.empty((flat_cost.shape[0], 3), device=cost.device)
    for n0 in range(0, flat_cost.shape[0], chunk_voxels):
        n1 = min(flat_cost.shape[0], n0 + chunk_voxels)
        out[n0:n1] = _argmin_rows(
            flat_cost[n0:n1], flat_field[:, n0:n1], label_matrix, offsets, k, subvoxel
        )
    return out.t().reshape(1, 3, nz, ny, nx)


def _argmin_rows(
    cost: Tensor, field: Tensor, label_matrix: Tensor, offsets: Tensor, k: int, subvoxel: bool
) -> Tensor:
    """Coupled argmin of the voxels (rows) of ``cost`` (N, L) given ``field`` (3, N).

    Returns (N, 3) displacements in level voxels.
    """
    u = torch.cat([field, torch.ones_like(field[:1])], 0)
    total = torch.addmm(cost, u.t(), label_matrix)
    best = total.argmin(dim=1)
    out = offsets[best]
    if subvoxel:
        out = out + _subvoxel_offsets(total, best, k)
    return out


def coupled_convex(
    cost: Tensor,
    radius: int,
    weights: tuple[float, ...],
    units: str = "voxel",
    coupling_scale: float = 1.0,
    initial_smoothing_passes: int = 1,
    smoothing_passes: int = 1,
    padding: str = "replicate",
    chunk_voxels: int = 1 << 14,
    subvoxel: bool = False,
) -> Tensor:
    """Regularised discrete displacement from a cost volume.

    Args:
        cost: (Z, Y, X, L) costs of the labels ``label_offsets(radius)``.
        radius: search radius r (L = (2r+1)^3).
        weights: rising coupling weights theta, one iteration each.
        units: ``"voxel"`` or ``"normalized"`` (see module docstring).
        coupling_scale: multiplies every theta.
        initial_smoothing_passes: 3^3 box passes applied to the raw argmin field.
        smoothing_passes: box passes after each coupled argmin.
        padding: box-filter border handling (``"replicate"`` or ``"zeros"``).
        subvoxel: parabolic sub-label refinement of every argmin (not in the official code).

    Returns:
        (1, 3, Z, Y, X) displacement in level-grid voxels, channel order (z, y, x).
    """
    nz, ny, nx, num_labels = cost.shape
    if num_labels != (2 * radius + 1) ** 3:
        raise ValueError(
            f"cost has {num_labels} labels, radius {radius} needs {(2 * radius + 1) ** 3}"
        )
    offsets = label_offsets(radius, cost.device)
    if units == "normalized":
        scale = normalised_units_scale((nz, ny, nx)).to(cost.device)
    else:
        scale = torch.ones(3, device=cost.device)
    field = torch.zeros((1, 3, nz, ny, nx), device=cost.device)
    # The first pass is the plain argmin; a tiny pull towards zero (in voxel units) breaks
    # ties such as flat costs in air or masked regions in favour of no motion.
    schedule = [(TIE_BREAK, torch.ones(3, device=cost.device), initial_smoothing_passes)]
    schedule += [(float(t) * coupling_scale, scale, smoothing_passes) for t in weights]
    for weight, axis_scale, passes in schedule:
        chosen = coupled_argmin(cost, offsets, field, weight, axis_scale, chunk_voxels, subvoxel)
        field = box_smooth(chosen, passes, padding)
    return field
