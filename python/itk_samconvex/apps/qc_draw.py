"""Raster drawing for the QC figure: colour ramps, panel scaling, contours, text (Pillow).

The QC picture is drawn pixel by pixel with numpy and Pillow, not with matplotlib: a
matplotlib figure of the same 15 panels cost about 2 s of a ``samconvex register`` (its
import, 25 axes and the Agg draw), this about 0.2 s. Arrays are ``(rows, columns)`` for one
displayed plane; colours are float RGB in [0, 1] until :func:`to_uint8`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np

RGB = tuple[float, float, float]

#: |difference| ramp: black (agreement) through purple and orange to pale yellow.
HEAT: tuple[tuple[float, RGB], ...] = (
    (0.0, (0.0, 0.0, 0.0)),
    (0.35, (0.50, 0.05, 0.55)),
    (0.70, (0.98, 0.45, 0.10)),
    (1.0, (1.0, 1.0, 0.78)),
)
#: Diverging ramp for log2 of the Jacobian determinant: blue shrinks, white keeps, red grows.
DIVERGING: tuple[tuple[float, RGB], ...] = (
    (0.0, (0.10, 0.25, 0.62)),
    (0.25, (0.45, 0.62, 0.85)),
    (0.5, (1.0, 1.0, 1.0)),
    (0.75, (0.90, 0.52, 0.45)),
    (1.0, (0.65, 0.05, 0.12)),
)
FOLD_COLOUR: RGB = (1.0, 1.0, 0.0)
LETTER_COLOUR = (255, 230, 0)
#: Label contour colours, cycled by label order.
LABEL_COLOURS: tuple[RGB, ...] = (
    (0.20, 0.45, 0.85),
    (1.00, 0.50, 0.05),
    (0.15, 0.65, 0.20),
    (0.85, 0.15, 0.15),
    (0.60, 0.40, 0.80),
    (0.55, 0.35, 0.25),
    (0.95, 0.45, 0.75),
    (0.50, 0.50, 0.50),
    (0.75, 0.75, 0.10),
    (0.10, 0.75, 0.80),
)


def ramp(values: np.ndarray, stops: Sequence[tuple[float, RGB]]) -> np.ndarray:
    """Colours (..., 3) of ``values`` in [0, 1] (clipped), linear between the ``stops``."""
    v = np.clip(values, 0.0, 1.0)
    positions = [p for p, _ in stops]
    return np.stack(
        [np.interp(v, positions, [c[channel] for _, c in stops]) for channel in range(3)], -1
    )


def grey(values: np.ndarray) -> np.ndarray:
    """(..., 3) grey levels of ``values`` in [0, 1]."""
    return np.repeat(np.asarray(values, dtype=np.float64)[..., None], 3, axis=-1)


def display_size(shape: tuple[int, int], aspect: float, width: int, height: int) -> tuple[int, int]:
    """(rows, columns) of a ``shape`` plane shown in a ``width`` x ``height`` box, keeping
    ``aspect`` (the height / width of one pixel in mm)."""
    rows, columns = shape
    scale = min(width / columns, height / (rows * aspect))
    return max(1, round(rows * aspect * scale)), max(1, round(columns * scale))


def resize_nearest(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``plane`` (rows, columns, ...) resampled to ``size`` by nearest pixel centres."""
    rows = np.minimum((np.arange(size[0]) + 0.5) * plane.shape[0] / size[0], plane.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) + 0.5) * plane.shape[1] / size[1], plane.shape[1] - 1)
    return plane[rows.astype(np.intp)][:, cols.astype(np.intp)]


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~interior


def draw_contours(
    rgb: np.ndarray,
    labels: np.ndarray | None,
    colours: dict[int, RGB],
    style: Literal["solid", "dashed"],
) -> None:
    """Draw each label's outline into ``rgb`` (display resolution, in place).

    ``labels`` is already resized to ``rgb``'s rows and columns. Dashed outlines keep every
    other run of 4 pixels along the diagonals.
    """
    if labels is None:
        return
    rows, columns = np.indices(labels.shape)
    keep = ((rows + columns) // 4) % 2 == 0 if style == "dashed" else True
    for label, colour in colours.items():
        mask = labels == label
        if mask.any() and not mask.all():
            rgb[outline(mask) & keep] = colour


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@lru_cache(maxsize=8)
def font(size: int) -> Any:
    """Pillow's bundled scalable font at ``size`` pixels."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_width(text: str, size: int) -> float:
    return font(size).getlength(text)


def fit(text: str, size: int, width: float) -> str:
    """``text``, cut and ended with "..." if it is wider than ``width`` pixels at ``size``."""
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "...", size) > width:
        text = text[:-1]
    return text + "..."


def draw_text(
    draw: Any,
    xy: tuple[float, float],
    text: str,
    size: int = 12,
    fill: tuple[int, int, int] = (0, 0, 0),
    anchor: str = "la",
    outlined: bool = False,
) -> None:
    """Text at ``xy`` (Pillow anchors: "la" left-top, "ma" centre-top, "ra", "lm"...);
    ``outlined`` adds a black rim, for letters on top of an image."""
    extra = {"stroke_width": 2, "stroke_fill": (0, 0, 0)} if outlined else {}
    draw.text(xy, text, fill=fill, font=font(size), anchor=anchor, **extra)


def vertical_text(text: str, size: int, height: int) -> Any:
    """``text`` rotated to read bottom-up, as an RGB image at most ``height`` tall."""
    from PIL import Image, ImageDraw

    width = int(np.ceil(text_width(text, size))) + 4
    strip = Image.new("RGB", (width, size + 6), (255, 255, 255))
    draw_text(ImageDraw.Draw(strip), (2, 2), text, size)
    strip = strip.rotate(90, expand=True)
    if strip.height > height:
        strip = strip.crop((0, strip.height - height, strip.width, strip.height))
    return strip


def colour_bar(
    canvas: Any,
    box: tuple[int, int, int, int],
    stops: Sequence[tuple[float, RGB]],
    ticks: Sequence[tuple[float, str]],
    unit: str,
) -> None:
    """A vertical colour bar in ``box`` (left, top, right, bottom) with tick labels at the
    given fractions (0 = bottom) and the unit under it."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = box
    height = bottom - top
    values = np.linspace(1.0, 0.0, height)[:, None].repeat(right - left, axis=1)
    canvas.paste(Image.fromarray(to_uint8(ramp(values, stops))), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(0, 0, 0))
    for fraction, label in ticks:
        y = bottom - 1 - fraction * (height - 1)
        draw.line((right, y, right + 3, y), fill=(0, 0, 0))
        draw_text(draw, (right + 5, y), label, 10, anchor="lm")
    draw_text(draw, ((left + right) / 2, bottom + 2), unit, 10, anchor="ma")
