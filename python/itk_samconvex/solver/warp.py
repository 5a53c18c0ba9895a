"""Sampling, smoothing, composition and grid changes of tensors on regular grids.

Conventions used by every solver module:

* Volumes are ``(N, C, Z, Y, X)`` float tensors in the working grid's tensor (z, y, x) order.
* A displacement field ``u`` is ``(N, 3, Z, Y, X)``; channel ``i`` is the displacement along
  tensor axis ``i`` (z, y, x), in voxels of the grid it lives on. ``warp(m, u)(p) = m(p + u(p))``.
* A *level grid* with factor ``f`` has voxel ``j`` centred on working-grid index
  ``f * j + (f - 1) / 2`` (the centre of the ``f``-voxel block it pools). Working-grid shapes are
  multiples of the coarsest factor, so pooled grids tile the working grid exactly.

Grids are built with ``arange`` (never ``linspace``/``affine_grid``) so that the code exports
with dynamic shapes. Functions that chunk work for eager speed and memory, or read tensor
values on the host, have an export-friendly form selected by :func:`export_friendly`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

_FORCE_EXPORT_FRIENDLY = False


def export_friendly() -> bool:
    """True while ``torch.export`` traces the solver, or inside :func:`export_friendly_paths`.

    Solver functions then take their export-friendly forms: no Python loops whose trip count
    depends on tensor sizes (the eager forms chunk work to stay in cache and bound memory),
    and no host reads of tensor values (``float(tensor)``), which would freeze data into the
    exported program. Both forms compute the same values up to float round-off; the eager
    forms stay the default because they are faster and leaner without a compiler.
    """
    return _FORCE_EXPORT_FRIENDLY or torch.compiler.is_exporting()


@contextlib.contextmanager
def export_friendly_paths(enabled: bool = True) -> Iterator[None]:
    """Run the export-friendly forms eagerly (to test them against the chunked forms)."""
    global _FORCE_EXPORT_FRIENDLY
    previous, _FORCE_EXPORT_FRIENDLY = _FORCE_EXPORT_FRIENDLY, enabled
    try:
        yield
    finally:
        _FORCE_EXPORT_FRIENDLY = previous


def box_taps(passes: int) -> tuple[float, ...]:
    """Integer weights of ``passes`` 3-tap sums along one axis (``passes`` >= 1).

    Row ``passes`` of the trinomial triangle: ``(1, 1, 1)``, ``(1, 2, 3, 2, 1)``,
    ``(1, 3, 6, 7, 6, 3, 1)``, ... (length ``2 * passes + 1``, sum ``3 ** passes``). Exact in
    float32 for any practical ``passes``.
    """
    taps = [1]
    for _ in range(passes):
        taps = [sum(taps[max(0, i - 2) : i + 1]) for i in range(len(taps) + 2)]
    return tuple(float(t) for t in taps)


def _taps_along(y: Tensor, dim: int, taps: tuple[float, ...], n: int) -> Tensor:
    """Valid-mode weighted sum of ``len(taps)`` neighbours along ``dim`` (output length ``n``).

    The taps are symmetric; each tap is one in-place add on a shifted view of ``y``, so the
    whole filter allocates one output and no temporaries.
    """
    half = len(taps) // 2
    out = y.narrow(dim, half, n) * taps[half]
    for k in range(half):
        out.add_(y.narrow(dim, k, n), alpha=taps[k]).add_(
            y.narrow(dim, 2 * half - k, n), alpha=taps[k]
        )
    return out


def box_smooth(x: Tensor, passes: int = 1, padding: str = "replicate") -> Tensor:
    """Apply ``passes`` 3x3x3 mean filters (separable) to ``x`` of shape (N, C, Z, Y, X).

    ``padding="replicate"`` extends the input once by ``passes`` border voxels and filters
    in valid mode (no damping at the border): the ``passes`` filters are then one
    ``2 * passes + 1``-tap filter per axis (:func:`box_taps`), applied in one sweep per axis.
    ``padding="zeros"`` zero-pads every pass, which reproduces ``avg_pool3d(x, 3, 1, 1)``
    with ``count_include_pad=True`` repeated (values fade towards the border, as in the
    official code).
    """
    if passes <= 0:
        return x
    if padding == "replicate":
        taps = box_taps(passes)
        y = F.pad(x, (passes,) * 6, mode="replicate")
        for dim in (2, 3, 4):
            y = _taps_along(y, dim, taps, y.shape[dim] - 2 * passes)
        return y.mul_(1.0 / 27.0**passes)
    for _ in range(passes):
        x = _valid_box3(F.pad(x, (1,) * 6)) * (1.0 / 27.0)
    return x


def box_smooth_adjoint(g: Tensor, passes: int = 1, padding: str = "replicate") -> Tensor:
    """Adjoint (transpose) of :func:`box_smooth`: ``<S x, g> == <x, S^T g>``.

    Zero padding gives a symmetric operator. For replicate padding, per axis, the valid-mode
    filter is transposed into a full-mode one (zero padding by ``2 * passes``; the taps are
    symmetric) and the replicated border is folded back onto the edge voxel.
    """
    if passes <= 0:
        return g
    if padding != "replicate":
        return box_smooth(g, passes, padding)
    taps = box_taps(passes)
    y = g * (1.0 / 27.0**passes)
    for dim in (4, 3, 2):
        n = y.shape[dim]
        widths = [0] * 6
        widths[2 * (4 - dim)] = widths[2 * (4 - dim) + 1] = 2 * passes
        full = _taps_along(F.pad(y, widths), dim, taps, n + 2 * passes)
        core = full.narrow(dim, passes, n)
        core.narrow(dim, 0, 1).add_(full.narrow(dim, 0, passes).sum(dim, keepdim=True))
        core.narrow(dim, n - 1, 1).add_(full.narrow(dim, passes + n, passes).sum(dim, keepdim=True))
        y = core
    return y.contiguous()


def _valid_box3(y: Tensor) -> Tensor:
    """Unnormalised 3-tap sums along z, y, x in valid mode (each axis shrinks by 2)."""
    y = y[:, :, :-2] + y[:, :, 1:-1] + y[:, :, 2:]
    y = y[:, :, :, :-2] + y[:, :, :, 1:-1] + y[:, :, :, 2:]
    return y[..., :-2] + y[..., 1:-1] + y[..., 2:]


def pool(x: Tensor, factor: int) -> Tensor:
    """Average ``factor``^3 blocks: working grid -> level grid with that factor."""
    if factor == 1:
        return x
    return F.avg_pool3d(x, factor, stride=factor, ceil_mode=True)


def linear_along(x: Tensor, dim: int, coords: Tensor) -> Tensor:
    """Linearly interpolate ``x`` along ``dim`` at 1-D continuous indices ``coords``.

    Coordinates outside ``[0, n-1]`` are clamped (border replication).
    """
    n = x.shape[dim]
    coords = coords.to(device=x.device, dtype=torch.float32).clamp(0, n - 1)
    lo = coords.floor().long().clamp(max=max(n - 2, 0))
    hi = (lo + 1).clamp(max=n - 1)
    w = (coords - lo.to(coords.dtype)).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = -1
    w = w.view(shape)
    a = x.index_select(dim, lo)
    b = x.index_select(dim, hi)
    return a + (b - a) * w


def resample_separable(x: Tensor, coords_zyx: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Trilinear resampling of (N, C, Z, Y, X) at a separable (z, y, x) coordinate lattice."""
    for dim, coords in zip((2, 3, 4), coords_zyx, strict=True):
        x = linear_along(x, dim, coords)
    return x


def level_coordinates(dst_size: int, dst_factor: int, src_factor: int) -> Tensor:
    """Continuous source-level indices of the voxel centres of a destination level grid."""
    j = torch.arange(dst_size, dtype=torch.float32)
    working = dst_factor * j + (dst_factor - 1) / 2.0
    return (working - (src_factor - 1) / 2.0) / src_factor


Factor = int | tuple[int, int, int]


def _triple(f: Factor) -> tuple[int, int, int]:
    return (f, f, f) if isinstance(f, int) else tuple(f)  # type: ignore[return-value]


def change_level(
    x: Tensor,
    src_factor: Factor,
    dst_factor: Factor,
    dst_shape: tuple[int, int, int],
    is_field: bool = False,
) -> Tensor:
    """Move ``x`` from the level grid ``src_factor`` to the level grid ``dst_factor``.

    Factors are per axis (z, y, x) or one int. Fine-to-coarse with one integer ratio on all
    axes is block averaging; anything else is trilinear at exact voxel-centre coordinates
    (clamped at the border). Fields (``is_field``) are rescaled to destination voxel units.
    """
    src, dst = _triple(src_factor), _triple(dst_factor)
    if src == dst and tuple(x.shape[2:]) == tuple(dst_shape):
        return x
    ratios = {d // s if d % s == 0 else 0 for s, d in zip(src, dst, strict=True)}
    if len(ratios) == 1 and (ratio := ratios.pop()) >= 2:
        out = pool(x, ratio)[..., : dst_shape[0], : dst_shape[1], : dst_shape[2]]
    else:
        coords = tuple(
            level_coordinates(n, d, s) for n, d, s in zip(dst_shape, dst, src, strict=True)
        )
        out = resample_separable(x, coords)  # type: ignore[arg-type]
    if is_field:
        scale = torch.tensor(
            [s / d for s, d in zip(src, dst, strict=True)], dtype=out.dtype, device=out.device
        )
        out = out * scale.view(1, 3, 1, 1, 1)
    return out


def _normalised_grid(disp: Tensor) -> Tensor:
    """grid_sample grid (N, Z, Y, X, 3) in (x, y, z) order for positions p + disp(p)."""
    _n, _, nz, ny, nx = disp.shape
    dev, dt = disp.device, disp.dtype
    axes = []
    for size in (nz, ny, nx):
        idx = torch.arange(size, device=dev, dtype=dt)
        axes.append(idx)
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)
    pos = base + disp
    scale = torch.tensor(
        [2.0 / max(nz - 1, 1), 2.0 / max(ny - 1, 1), 2.0 / max(nx - 1, 1)], device=dev, dtype=dt
    ).view(1, 3, 1, 1, 1)
    norm = pos * scale - 1.0
    return norm.flip(1).permute(0, 2, 3, 4, 1)


def warp(x: Tensor, disp: Tensor, mode: str = "bilinear", padding_mode: str = "border") -> Tensor:
    """Backward warp: ``out(p) = x(p + disp(p))``; ``x`` and ``disp`` share one grid."""
    grid = _normalised_grid(disp.to(x.dtype) if x.dtype.is_floating_point else disp)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def compose(outer: Tensor, inner: Tensor) -> Tensor:
    """Displacement of ``(id + outer) o (id + inner)``: ``inner + outer(p + inner(p))``."""
    return inner + warp(outer, inner, padding_mode="border")


def normalised_units_scale(shape: tuple[int, int, int]) -> Tensor:
    """Per-axis factors (z, y, x) turning voxel displacements into [-1, 1] grid units."""
    return torch.tensor([2.0 / max(n - 1, 1) for n in shape], dtype=torch.float32)
