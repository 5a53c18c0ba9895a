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
(R/L, A/P, S/I), derived from the image's direction matrix. Drawn with numpy and Pillow
(:mod:`.qc_draw`; no matplotlib, no ITK).
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
from . import qc_draw

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


def _label_colours(ids: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    colours = qc_draw.LABEL_COLOURS
    return {label: colours[n % len(colours)] for n, label in enumerate(ids)}


# Layout of the figure, in pixels.
FIGURE_WIDTH = 900
_ROW_LABEL_WIDTH = 26
_COLUMN_WIDTH = (FIGURE_WIDTH - _ROW_LABEL_WIDTH - 6) // 3
_IMAGE_BOX = (228, 232)  # width, height available to one panel's image
_TITLE_HEIGHT = 18
_ROW_GAP = 12
_BAR_WIDTH = 10
_ROW_TITLES = (
    "before: fixed (green) vs moving, initial transform",
    "after: fixed (green) vs warped moving",
    "|moving - fixed| before (HU)",
    "|warped - fixed| after (HU)",
    "Jacobian of the deformable part",
)
_DIFF_TICKS = ((0.0, "0"), (0.5, f"{DIFF_MAX_HU / 2:.0f}"), (1.0, f"{DIFF_MAX_HU:.0f}"))
_JACOBIAN_TICKS = ((0.0, "0.5"), (0.5, "1"), (1.0, "2"))


@dataclass
class Figure:
    """The composed QC figure: the RGB image and where each panel's image lies in it.

    ``panels[(row, plane)]`` is the (left, top, right, bottom) pixel box of the image of
    that panel (rows 0-4: before, after, difference before, difference after, Jacobian).
    """

    image: Any
    panels: dict[tuple[int, str], tuple[int, int, int, int]]


def _header_lines(data: QCData) -> list[tuple[str, int]]:
    return [(data.title, 15)] + [(line, 12) for line in data.header]


_DICE_COLUMNS = (FIGURE_WIDTH - 124, FIGURE_WIDTH - 65, FIGURE_WIDTH - 10)  # right edges
_DICE_NAME_WIDTH = 140


def _draw_header(draw: Any, data: QCData) -> None:
    """Title and header lines on the left (cut to fit), the Dice table on the right."""
    text_right = _DICE_COLUMNS[0] - _DICE_NAME_WIDTH - 10 if data.dice else FIGURE_WIDTH - 10
    y = 8
    for line, size in _header_lines(data):
        qc_draw.draw_text(draw, (10, y), qc_draw.fit(line, size, text_right - 10), size)
        y += size + 5
    if not data.dice:
        return
    rows = [("organ", "before", "after")] + [
        (str(data.label_names.get(label, label)), f"{b:.3f}", f"{a:.3f}")
        for label, (b, a) in data.dice.items()
    ]
    for n, cells in enumerate(rows):
        for right, cell in zip(_DICE_COLUMNS, cells, strict=True):
            if right == _DICE_COLUMNS[0]:
                cell = qc_draw.fit(cell, 12, _DICE_NAME_WIDTH)
            qc_draw.draw_text(draw, (right, 8 + 16 * n), cell, 12, anchor="ra")


def _header_height(data: QCData) -> int:
    lines = sum(size + 5 for _, size in _header_lines(data))
    table = 16 * (len(data.dice) + 1) if data.dice else 0
    return 16 + max(lines, table)


def _place_panel(
    canvas: Any,
    rgb: np.ndarray,
    left: int,
    top: int,
    title: str,
    edges: dict[str, str],
) -> tuple[int, int, int, int]:
    """Paste a panel's image with its title above and orientation letters on its edges."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(canvas)
    rows, columns = rgb.shape[:2]
    qc_draw.draw_text(draw, (left + columns / 2, top), title, 11, anchor="ma")
    image_top = top + _TITLE_HEIGHT
    canvas.paste(Image.fromarray(qc_draw.to_uint8(rgb)), (left, image_top))
    box = (left, image_top, left + columns, image_top + rows)
    letter = {"size": 12, "fill": qc_draw.LETTER_COLOUR, "outlined": True}
    qc_draw.draw_text(
        draw, (left + columns / 2, image_top + 2), edges["top"], anchor="ma", **letter
    )
    qc_draw.draw_text(
        draw, (left + columns / 2, box[3] - 2), edges["bottom"], anchor="md", **letter
    )
    qc_draw.draw_text(draw, (left + 3, image_top + rows / 2), edges["left"], anchor="lm", **letter)
    qc_draw.draw_text(
        draw, (box[2] - 3, image_top + rows / 2), edges["right"], anchor="rm", **letter
    )
    return box


def compose_figure(data: QCData) -> Figure:
    """The QC figure (5 rows x 3 planes under a header) as an RGB image, with its panels'
    positions."""
    from PIL import Image, ImageDraw

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

    sizes = {
        plane: qc_draw.display_size(
            _plane(fixed, plane, local).shape, _aspect(plane, data.spacing), *_IMAGE_BOX
        )
        for plane in PLANES
    }
    row_height = _TITLE_HEIGHT + max(rows for rows, _ in sizes.values()) + _ROW_GAP
    header = _header_height(data)
    canvas = Image.new("RGB", (FIGURE_WIDTH, header + 5 * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    _draw_header(draw, data)
    for row, title in enumerate(_ROW_TITLES):
        strip = qc_draw.vertical_text(title, 11, row_height - _ROW_GAP)
        canvas.paste(strip, (2, header + row * row_height + (row_height - strip.height) // 2))

    panels: dict[tuple[int, str], tuple[int, int, int, int]] = {}
    for col, plane in enumerate(PLANES):
        size = sizes[plane]
        edges = _edge_letters(plane, letters)
        left = _ROW_LABEL_WIDTH + col * _COLUMN_WIDTH
        tops = [header + row * row_height for row in range(5)]

        def shown(volume: np.ndarray, plane: str = plane, size: tuple[int, int] = size):
            return qc_draw.resize_nearest(_plane(volume, plane, local), size)

        f2 = shown(fixed)
        base = qc_draw.grey(_window(f2))
        name = _slice_name(plane, centre, data, letters)
        for row, (moving, state) in enumerate(((before, "before"), (after, "after"))):
            m2 = _window(shown(moving))
            rgb = np.stack([m2, _window(f2), m2], axis=-1)
            if labels["fixed"] is not None:
                qc_draw.draw_contours(rgb, shown(labels["fixed"]), colours, "solid")
                if labels[state] is not None:
                    qc_draw.draw_contours(rgb, shown(labels[state]), colours, "dashed")
            panels[(row, plane)] = _place_panel(canvas, rgb, left, tops[row], name, edges)
        for row, (moving, valid) in enumerate(((before, before_valid), (after, after_valid)), 2):
            diff = np.abs(_plane(moving, plane, local) - _plane(fixed, plane, local))
            inside = diff[_plane(valid, plane, local)]
            rgb = base.copy()
            v2 = shown(valid)
            rgb[v2] = qc_draw.ramp(
                qc_draw.resize_nearest(diff, size)[v2] / DIFF_MAX_HU, qc_draw.HEAT
            )
            title = f"mean {inside.mean():.0f} HU in the body" if inside.size else ""
            box = _place_panel(canvas, rgb, left, tops[row], title, edges)
            _bar(canvas, box, qc_draw.HEAT, _DIFF_TICKS, "HU")
            panels[(row, plane)] = box
        j_plane, b_plane = _plane(jac, plane, local), _plane(body, plane, local)
        j2, b2 = shown(jac), shown(body)
        rgb = base.copy()
        log_det = np.log2(np.clip(j2, 1e-3, None))
        rgb[b2] = qc_draw.ramp((log_det[b2] + 1.0) / 2.0, qc_draw.DIVERGING)
        rgb[b2 & (j2 <= 0)] = qc_draw.FOLD_COLOUR
        folds_here = int(np.count_nonzero(b_plane & (j_plane <= 0)))
        title = f"folds (det <= 0) in this slice: {folds_here}"
        box = _place_panel(canvas, rgb, left, tops[4], title, edges)
        _bar(canvas, box, qc_draw.DIVERGING, _JACOBIAN_TICKS, "det")
        panels[(4, plane)] = box
    return Figure(image=canvas, panels=panels)


def _bar(canvas: Any, box: tuple[int, int, int, int], stops: Any, ticks: Any, unit: str) -> None:
    left = box[2] + 6
    qc_draw.colour_bar(
        canvas, (left, box[1] + 4, left + _BAR_WIDTH, box[3] - 14), stops, ticks, unit
    )


def render_png(data: QCData) -> bytes:
    """The QC figure as PNG bytes (5 rows x 3 planes, and a header)."""
    buffer = io.BytesIO()
    compose_figure(data).image.save(buffer, format="PNG", compress_level=3)
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
