"""Quality-control figure of a registration result.

One PNG with three rows (axial, coronal, sagittal planes) and three columns: a colour
fusion of the fixed and warped moving images, their absolute difference, and the Jacobian
determinant of the transform with folds highlighted. Matplotlib is used through explicit
``Figure`` objects and the Agg canvas only, so nothing touches pyplot's global state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_PLANES = ("axial", "coronal", "sagittal")
_FOLD_CMAP = ListedColormap([(1.0, 1.0, 0.0, 1.0)])  # folds drawn in opaque yellow


def _foreground_centre(image: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(z, y, x) index of the centroid of voxels above ``threshold``; the volume centre if none."""
    above = np.argwhere(image > threshold)
    if len(above) == 0:
        return tuple(n // 2 for n in image.shape)
    return tuple(round(float(v)) for v in above.mean(axis=0))


def _plane(volume: np.ndarray, plane: str, index: tuple[int, int, int]) -> np.ndarray:
    """2-D slice for display with ``origin="upper"``.

    axial (z = k): rows y (anterior at the top), columns x (patient left on the right);
    coronal (y = j): rows z flipped (superior at the top), columns x;
    sagittal (x = i): rows z flipped (superior at the top), columns y (anterior on the left).
    """
    k, j, i = index
    if plane == "axial":
        return volume[k]
    if plane == "coronal":
        return volume[:, j, :][::-1]
    return volume[:, :, i][::-1]


def _aspect(plane: str, spacing: Sequence[float]) -> float:
    """Height/width of a displayed pixel: row spacing over column spacing (mm)."""
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[plane]


def _window(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def qc_figure(
    fixed: np.ndarray,
    warped: np.ndarray,
    jacobian: np.ndarray,
    path: str | os.PathLike[str],
    title: str | None = None,
    spacing: Sequence[float] | None = None,
    window: tuple[float, float] = (-1000.0, 400.0),
    slice_index: tuple[int, int, int] | None = None,
) -> Path:
    """Write a 3x3 quality-control PNG of a registration and return its path.

    Rows are the axial, coronal and sagittal planes through the centroid of the fixed
    image's foreground (voxels above the lower quarter of ``window``), or through
    ``slice_index``. Display conventions, exact for an identity direction (LPS axes):
    axial slices have anterior at the top and patient left on the right (radiological view);
    coronal slices superior at the top and patient left on the right; sagittal slices
    superior at the top and anterior on the left. Pixels keep their physical aspect ratio.

    Columns:
      1. colour fusion: fixed in green, warped in magenta, both windowed to ``window``;
         grey where they agree, green/magenta where one is brighter;
      2. |warped - fixed| (image units, e.g. HU), scale 0 .. a quarter of the window width;
      3. Jacobian determinant, blue-white-red over [0, 2] centred at 1; folds (det <= 0)
         drawn in yellow and counted in the title.

    Args:
        fixed: (Z, Y, X) fixed image.
        warped: (Z, Y, X) moving image warped onto the fixed grid.
        jacobian: (Z, Y, X) Jacobian determinant of the transform on the fixed grid.
        path: PNG file to write (parent folders are created); written atomically via a
            temporary file in the same folder and ``os.replace``.
        title: optional figure title.
        spacing: voxel spacing (x, y, z) in mm; default isotropic 1 mm.
        window: (low, high) display window of the images (default CT lung/soft (-1000, 400)).
        slice_index: optional (z, y, x) voxel through which the three planes pass.

    Returns:
        The written path.
    """
    fixed = np.asarray(fixed, dtype=np.float32)
    warped = np.asarray(warped, dtype=np.float32)
    jacobian = np.asarray(jacobian, dtype=np.float32)
    if fixed.ndim != 3 or fixed.shape != warped.shape or fixed.shape != jacobian.shape:
        raise ValueError(
            f"qc_figure needs three (Z, Y, X) arrays of one shape, got fixed {fixed.shape}, "
            f"warped {warped.shape}, jacobian {jacobian.shape}"
        )
    spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(v) for v in spacing)
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) with high > low, got {window}")
    if slice_index is None:
        slice_index = _foreground_centre(fixed, lo + 0.25 * (hi - lo))
    if len(slice_index) != 3:
        raise ValueError(f"slice_index must be (z, y, x), got {slice_index}")
    slice_index = tuple(
        int(np.clip(v, 0, n - 1)) for v, n in zip(slice_index, fixed.shape, strict=True))
    folds_total = int(np.count_nonzero(jacobian <= 0))

    fig = Figure(figsize=(13.0, 12.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3)
    diff_max = 0.25 * (hi - lo)
    for row, plane in enumerate(_PLANES):
        aspect = _aspect(plane, spacing)
        f2 = _plane(fixed, plane, slice_index)
        w2 = _plane(warped, plane, slice_index)
        j2 = _plane(jacobian, plane, slice_index)
        where = {"axial": f"z={slice_index[0]}", "coronal": f"y={slice_index[1]}",
                 "sagittal": f"x={slice_index[2]}"}[plane]

        fw, ww = _window(f2, (lo, hi)), _window(w2, (lo, hi))
        fusion = np.stack([ww, fw, ww], axis=-1)
        ax = axes[row, 0]
        ax.imshow(fusion, aspect=aspect, interpolation="nearest")
        ax.set_title(f"{plane} ({where}): fixed=green, warped=magenta", fontsize=10)

        ax = axes[row, 1]
        im = ax.imshow(np.abs(w2 - f2), cmap="magma", vmin=0.0, vmax=diff_max, aspect=aspect,
                       interpolation="nearest")
        ax.set_title(f"{plane}: |warped - fixed|", fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)

        ax = axes[row, 2]
        im = ax.imshow(j2, cmap="RdBu_r", vmin=0.0, vmax=2.0, aspect=aspect,
                       interpolation="nearest")
        folds = np.ma.masked_where(j2 > 0, np.ones_like(j2))
        ax.imshow(folds, cmap=_FOLD_CMAP, vmin=0.0, vmax=1.0, aspect=aspect,
                  interpolation="nearest")
        ax.set_title(f"{plane}: Jacobian det (folds here: {int(np.count_nonzero(j2 <= 0))})",
                     fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])

    finite = jacobian[np.isfinite(jacobian)]
    summary = (f"Jacobian det min {finite.min():.3g}, max {finite.max():.3g}; "
               f"folds (det <= 0): {folds_total} voxels "
               f"({100.0 * folds_total / jacobian.size:.3g} %)") if finite.size else ""
    fig.suptitle(f"{title}\n{summary}" if title else summary, fontsize=12)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a hidden, unique sibling (opened with "x" so that the umask applies), then a rename
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp_name, "xb") as stream:
            fig.savefig(stream, format="png")
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    logger.info("QC figure written to %s", path)
    return path
