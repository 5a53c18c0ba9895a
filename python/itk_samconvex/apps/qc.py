"""The quality-control report of a registration: one PNG and a one-page HTML beside it.

What a physicist checks at a glance, on three planes through the labelled anatomy (or the
body centre):

* **before** and **after** rows: a colour fusion of the fixed image (green) and the moving
  image (magenta) through the initial transform only, then through the registration; grey
  where they agree. Fixed-label contours are solid, moving-label contours dashed.
* **difference** rows, before and after: ``|moving - fixed|`` in HU, only inside the body and
  inside the moving field of view (outside it the moving image has no data, and the edge
  bands would dominate the picture).
* **Jacobian** row: the determinant of the *deformable part alone* (the affine's uniform
  volume change left out), inside the fixed body, on a diverging scale centred at 1 (log2:
  blue shrinks, red grows, white keeps volume); folds (det <= 0) in yellow.
* a header with the pair, the timings, folding, the pre-alignment used (and its fallback),
  and the per-organ Dice table with organ names.

Every panel is cropped to the fixed body (plus a margin) and keeps its physical aspect ratio;
slices are named by their LPS position in mm and the image edges carry orientation letters
(R/L, A/P, S/I), derived from the image's direction matrix. Only numpy and matplotlib's Agg
canvas are used (no pyplot state, no ITK).
"""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..edge.io import atomic_write, write_text

logger = logging.getLogger(__name__)

PLANES = ("axial", "coronal", "sagittal")
BODY_HU = -500.0
DIFF_MAX_HU = 400.0
CT_WINDOW = (-1000.0, 400.0)
CROP_MARGIN_MM = 10.0
_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # negative, positive end of LPS x, y, z


@dataclass
class QCData:
    """Everything the report shows, on the fixed grid (arrays (Z, Y, X)).

    Attributes:
        fixed: fixed image (HU).
        before: moving image through the initial transform only (HU).
        after: moving image through the registration (HU).
        before_inside, after_inside: where the moving image had data (its field of view).
        jacobian: determinant of the deformable part alone.
        spacing, origin, direction: the fixed grid (ITK order, LPS mm; direction 3x3).
        fixed_labels, before_labels, after_labels: optional label maps (ids).
        label_names: ``{id: name}``.
        dice: ``{id: (before, after)}`` from the scorer (before = the initial transform).
        header: lines for the header (pair, timings, pre-alignment, folding...).
        tables: extra ``(title, rows)`` for the HTML page (rows of cells).
    """

    fixed: np.ndarray
    before: np.ndarray
    after: np.ndarray
    before_inside: np.ndarray
    after_inside: np.ndarray
    jacobian: np.ndarray
    spacing: Sequence[float]
    origin: Sequence[float]
    direction: np.ndarray
    fixed_labels: np.ndarray | None = None
    before_labels: np.ndarray | None = None
    after_labels: np.ndarray | None = None
    label_names: Mapping[int, str] = field(default_factory=dict)
    dice: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[list[str]]]] = field(default_factory=list)
    title: str = "registration QC"

    def __post_init__(self) -> None:
        shape = np.shape(self.fixed)
        for name in (
            "before",
            "after",
            "before_inside",
            "after_inside",
            "jacobian",
            "fixed_labels",
            "before_labels",
            "after_labels",
        ):
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise ValueError(
                    f"QCData.{name} has shape {np.shape(value)}; every array must "
                    f"have the fixed image's shape {shape} (Z, Y, X)"
                )
        if len(shape) != 3:
            raise ValueError(f"QCData.fixed must be (Z, Y, X); got shape {shape}")


# ---------------------------------------------------------------------------------------------
# geometry of the display


def axis_letters(direction: np.ndarray) -> list[tuple[str, str]]:
    """(letter at the negative end, letter at the positive end) of each index axis (x, y, z):
    the anatomical direction its column of ``direction`` points to most."""
    out = []
    for a in range(3):
        column = np.asarray(direction)[:, a]
        dominant = int(np.argmax(np.abs(column)))
        negative, positive = _LETTERS[dominant]
        out.append((negative, positive) if column[dominant] > 0 else (positive, negative))
    return out


def _plane(volume: np.ndarray, plane: str, index: Sequence[int]) -> np.ndarray:
    """2-D slice for display with ``origin="upper"``.

    axial (index k): rows j, columns i; coronal (j): rows k flipped, columns i;
    sagittal (i): rows k flipped, columns j. For an LPS-aligned image: axial anterior at the
    top and patient left on the right (radiological view), coronal and sagittal superior at
    the top.
    """
    k, j, i = index
    if plane == "axial":
        return volume[k]
    if plane == "coronal":
        return volume[:, j, :][::-1]
    return volume[:, :, i][::-1]


def _edge_letters(plane: str, letters: list[tuple[str, str]]) -> dict[str, str]:
    """Orientation letters at the top, bottom, left and right of a displayed plane."""
    x, y, z = letters
    if plane == "axial":
        return {"top": y[0], "bottom": y[1], "left": x[0], "right": x[1]}
    if plane == "coronal":
        return {"top": z[1], "bottom": z[0], "left": x[0], "right": x[1]}
    return {"top": z[1], "bottom": z[0], "left": y[0], "right": y[1]}


def _aspect(plane: str, spacing: Sequence[float]) -> float:
    """Height/width of a displayed pixel: row spacing over column spacing (mm)."""
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[plane]


def _crop_box(fixed: np.ndarray, spacing: Sequence[float]) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the fixed body's bounding box plus a margin (whole image if none)."""
    body = fixed > BODY_HU
    if not body.any():
        return (slice(None),) * 3  # type: ignore[return-value]
    margins = [int(np.ceil(CROP_MARGIN_MM / s)) for s in (spacing[2], spacing[1], spacing[0])]
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(body.any(axis=other))
        out.append(
            slice(
                max(0, hits[0] - margins[axis]),
                min(fixed.shape[axis], hits[-1] + 1 + margins[axis]),
            )
        )
    return tuple(out)  # type: ignore[return-value]


def body_mask(image: np.ndarray) -> np.ndarray:
    """The body: everything but the ambient air, i.e. the air regions (below ``BODY_HU``)
    that touch the image border and are as dark as air (median below -950 HU). Lungs and
    bowel gas stay inside (lung parenchyma is about -850 HU), also when a cropped field of
    view cuts through them."""
    from scipy import ndimage

    labels, count = ndimage.label(image <= BODY_HU)
    if count == 0:
        return np.ones(image.shape, dtype=bool)
    border = set()
    for axis in range(3):
        for index in (0, -1):
            border.update(np.unique(np.take(labels, index, axis=axis)).tolist())
    border.discard(0)
    if not border:
        return np.ones(image.shape, dtype=bool)
    ids = sorted(border)
    medians = ndimage.median(image, labels, ids)
    ambient = [i for i, m in zip(ids, np.atleast_1d(medians), strict=True) if m < -950.0]
    return ~np.isin(labels, ambient)


def _centre(fixed: np.ndarray, labels: np.ndarray | None) -> tuple[int, int, int]:
    """(z, y, x) through which the planes pass: the labels' centroid, else the body's."""
    target = labels > 0 if labels is not None and np.any(labels) else fixed > BODY_HU
    points = np.argwhere(target)
    if len(points) == 0:
        return tuple(n // 2 for n in fixed.shape)  # type: ignore[return-value]
    return tuple(round(float(v)) for v in points.mean(axis=0))  # type: ignore[return-value]


def _slice_name(
    plane: str, index: Sequence[int], data: QCData, letters: list[tuple[str, str]]
) -> str:
    """``"axial, S 12.5 mm"``: the plane and its LPS position along its normal's axis."""
    k, j, i = index
    axis = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    point = np.asarray(data.origin) + np.asarray(data.direction) @ (
        np.asarray(data.spacing) * np.array([i, j, k], dtype=np.float64)
    )
    column = np.asarray(data.direction)[:, axis]
    dominant = int(np.argmax(np.abs(column)))
    value = float(point[dominant])
    name = "xyz"[dominant]
    side = _LETTERS[dominant][1 if value >= 0 else 0]
    return f"{plane}, {name} = {value:+.1f} mm ({side})"


# ---------------------------------------------------------------------------------------------
# drawing


def _window(image: np.ndarray) -> np.ndarray:
    lo, hi = CT_WINDOW
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def _label_colours(ids: Sequence[int]) -> dict[int, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(n % 10) for n, label in enumerate(ids)}


def _contours(ax: Any, labels: np.ndarray | None, colours: dict[int, Any], style: str) -> None:
    if labels is None:
        return
    for label, colour in colours.items():
        mask = labels == label
        if mask.any() and not mask.all():
            ax.contour(
                mask.astype(np.float32),
                levels=[0.5],
                colors=[colour],
                linewidths=1.0,
                linestyles=style,
            )


def _decorate(ax: Any, plane: str, letters: list[tuple[str, str]], shape: tuple[int, int]) -> None:
    edges = _edge_letters(plane, letters)
    h, w = shape
    style = {"color": "yellow", "fontsize": 8, "fontweight": "bold"}
    ax.text(w / 2, 0, edges["top"], ha="center", va="top", **style)
    ax.text(w / 2, h - 1, edges["bottom"], ha="center", va="bottom", **style)
    ax.text(0, h / 2, edges["left"], ha="left", va="center", **style)
    ax.text(w - 1, h / 2, edges["right"], ha="right", va="center", **style)
    ax.set_xticks([])
    ax.set_yticks([])


def render_png(data: QCData) -> bytes:
    """The QC figure as PNG bytes (5 rows x 3 planes, and a header)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    crop = _crop_box(data.fixed, data.spacing)
    centre = _centre(data.fixed, data.fixed_labels)
    local = tuple(
        int(np.clip(c - (s.start or 0), 0, (s.stop or n) - (s.start or 0) - 1))
        for c, s, n in zip(centre, crop, data.fixed.shape, strict=True)
    )

    def cut(volume: np.ndarray | None) -> np.ndarray | None:
        return None if volume is None else volume[crop]

    fixed, before, after = cut(data.fixed), cut(data.before), cut(data.after)
    body = body_mask(fixed)
    before_valid = cut(data.before_inside) & (body | body_mask(before))
    after_valid = cut(data.after_inside) & (body | body_mask(after))
    jac = cut(data.jacobian)
    labels = {
        "fixed": cut(data.fixed_labels),
        "before": cut(data.before_labels),
        "after": cut(data.after_labels),
    }
    ids = (
        sorted(int(v) for v in np.unique(data.fixed_labels) if v != 0)
        if data.fixed_labels is not None
        else []
    )
    colours = _label_colours(ids)
    letters = axis_letters(data.direction)
    folds = ListedColormap([(1.0, 1.0, 0.0, 1.0)])

    # A fixed layout: matplotlib's constrained layout cost 0.7 s of a 2 s picture.
    fig = Figure(figsize=(12.5, 19.0), dpi=72)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        6,
        3,
        height_ratios=[0.55, 1, 1, 1, 1, 1],
        left=0.05,
        right=0.98,
        top=0.99,
        bottom=0.01,
        wspace=0.12,
        hspace=0.22,
    )
    head = fig.add_subplot(grid[0, :])
    head.axis("off")
    head.text(
        0.0,
        1.0,
        "\n".join([data.title, *data.header]),
        va="top",
        ha="left",
        fontsize=10,
        family="monospace",
        transform=head.transAxes,
    )
    if data.dice:
        rows = [f"{'organ':18s} before  after"]
        for label, (b, a) in data.dice.items():
            rows.append(f"{str(data.label_names.get(label, label))[:18]:18s} {b:6.3f} {a:6.3f}")
        head.text(
            1.0,
            1.0,
            "\n".join(rows),
            va="top",
            ha="right",
            fontsize=9,
            family="monospace",
            transform=head.transAxes,
        )

    row_titles = [
        "before: fixed (green) vs moving, initial transform",
        "after: fixed (green) vs warped moving",
        "|moving - fixed| before (HU)",
        "|warped - fixed| after (HU)",
        "Jacobian of the deformable part",
    ]
    for col, plane in enumerate(PLANES):
        aspect = _aspect(plane, data.spacing)
        f2 = _plane(fixed, plane, local)
        for row, (moving, state) in enumerate(((before, "before"), (after, "after"))):
            ax = fig.add_subplot(grid[1 + row, col])
            m2 = _plane(moving, plane, local)
            fusion = np.stack([_window(m2), _window(f2), _window(m2)], axis=-1)
            ax.imshow(fusion, aspect=aspect, interpolation="nearest")
            if labels["fixed"] is not None:
                _contours(ax, _plane(labels["fixed"], plane, local), colours, "solid")
                _contours(
                    ax,
                    None if labels[state] is None else _plane(labels[state], plane, local),
                    colours,
                    "dashed",
                )
            _decorate(ax, plane, letters, f2.shape)
            ax.set_title(_slice_name(plane, centre, data, letters), fontsize=9)
            if col == 0:
                ax.set_ylabel(row_titles[row], fontsize=9)
        for row, (moving, valid) in enumerate(((before, before_valid), (after, after_valid))):
            ax = fig.add_subplot(grid[3 + row, col])
            diff = np.abs(_plane(moving, plane, local) - f2)
            shown = np.ma.masked_where(~_plane(valid, plane, local), diff)
            ax.imshow(_window(f2), cmap="gray", aspect=aspect, interpolation="nearest")
            im = ax.imshow(
                shown,
                cmap="magma",
                vmin=0.0,
                vmax=DIFF_MAX_HU,
                aspect=aspect,
                interpolation="nearest",
            )
            bar = fig.colorbar(im, ax=ax, shrink=0.8)
            bar.set_label("HU", fontsize=8)
            _decorate(ax, plane, letters, f2.shape)
            inside = diff[_plane(valid, plane, local)]
            ax.set_title(
                f"mean {inside.mean():.0f} HU in the body" if inside.size else "", fontsize=9
            )
            if col == 0:
                ax.set_ylabel(row_titles[2 + row], fontsize=9)
        ax = fig.add_subplot(grid[5, col])
        j2 = _plane(jac, plane, local)
        b2 = _plane(body, plane, local)
        log_det = np.log2(np.clip(j2, 1e-3, None))
        ax.imshow(_window(f2), cmap="gray", aspect=aspect, interpolation="nearest")
        im = ax.imshow(
            np.ma.masked_where(~b2, log_det),
            cmap="RdBu_r",
            vmin=-1.0,
            vmax=1.0,
            aspect=aspect,
            interpolation="nearest",
        )
        ax.imshow(
            np.ma.masked_where(~(b2 & (j2 <= 0)), np.ones_like(j2)),
            cmap=folds,
            vmin=0,
            vmax=1,
            aspect=aspect,
            interpolation="nearest",
        )
        bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=[-1, 0, 1])
        bar.ax.set_yticklabels(["0.5", "1", "2"])
        bar.set_label("det", fontsize=8)
        _decorate(ax, plane, letters, f2.shape)
        folds_here = int(np.count_nonzero(b2 & (j2 <= 0)))
        ax.set_title(f"folds (det <= 0) in this slice: {folds_here}", fontsize=9)
        if col == 0:
            ax.set_ylabel(row_titles[4], fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def render_html(data: QCData, png_name: str) -> str:
    """A one-page HTML report: header, tables and the PNG (linked by its file name)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>{esc(data.title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}"
        "table{border-collapse:collapse;margin:.5em 0 1em}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        "pre{background:#f6f6f6;padding:.6em}</style></head><body>",
        f"<h1>{esc(data.title)}</h1>",
        "<pre>" + esc("\n".join(data.header)) + "</pre>",
    ]
    if data.dice:
        parts.append(
            "<h2>Dice per organ</h2><table><tr><th>organ</th><th>id</th>"
            "<th>before</th><th>after</th><th>change</th></tr>"
        )
        for label, (b, a) in data.dice.items():
            parts.append(
                f"<tr><td>{esc(str(data.label_names.get(label, label)))}</td>"
                f"<td>{label}</td><td>{b:.3f}</td><td>{a:.3f}</td>"
                f"<td>{a - b:+.3f}</td></tr>"
            )
        parts.append("</table>")
    for title, rows in data.tables:
        parts.append(f"<h2>{esc(title)}</h2><table>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append(
        f"<h2>Images</h2><p><img src='{esc(png_name)}' style='max-width:100%' alt='QC figure'></p>"
    )
    parts.append(
        "<p>Rows: fusion before (initial transform only) and after; absolute "
        "difference in HU inside the body and the moving field of view; Jacobian "
        "determinant of the deformable part (log scale, white = volume kept, yellow "
        "= folds). Solid contours: fixed labels; dashed: moving labels.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    data: QCData,
    png_path: Path,
    html_path: Path | None = None,
    *,
    overwrite: bool = False,
    inputs: Sequence[Any] = (),
) -> list[Path]:
    """Write the QC PNG (and the HTML page beside it) atomically; return the paths."""
    png = render_png(data)

    def write_png(temp: Path) -> None:
        with open(temp, "xb") as handle:
            handle.write(png)

    written = [atomic_write(png_path, write_png, overwrite=overwrite, inputs=inputs)]
    if html_path is not None:
        written.append(
            write_text(
                html_path, render_html(data, png_path.name), overwrite=overwrite, inputs=inputs
            )
        )
    logger.info("QC report written to %s", ", ".join(str(p) for p in written))
    return written


__all__ = [
    "PLANES",
    "QCData",
    "axis_letters",
    "body_mask",
    "render_html",
    "render_png",
    "write_report",
]
