"""Landmark files: the one reader (``samconvex evaluate``, ``register`` and ``batch`` use it).

Format: text files, one landmark per line, row ``i`` of the fixed
file corresponds to row ``i`` of the moving file; coordinates are LPS physical millimetres.
The delimiter is ``,`` (or ``;``, tab, or whitespace, detected from the first data line).
Blank lines and ``#`` comments are skipped. The first line is a header when it has fewer
numeric cells than the second. The coordinate columns are the ones named ``x``, ``y``, ``z``
in the header (case-insensitive, an ``mm`` / ``(mm)`` / ``_mm`` suffix allowed), otherwise the
**last three columns that are numeric in every row** (so a leading index or name column, or a
trailing name column, is ignored). A comment ``# columns = ...`` (3D Slicer ``.fcsv``) serves
as the header, and ``# CoordinateSystem = RAS`` (or ``0``) converts RAS to LPS by negating x
and y.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np

from ...errors import InputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

_MM_SUFFIX = re.compile(r"[\s_]*(\(mm\)|\[mm\]|mm)$")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [c.strip().strip("\"'").strip() for c in next(csv.reader([line], delimiter=delimiter))]


def read_landmarks(path: PathLike) -> np.ndarray:
    """Read a landmark file into an (N, 3) float64 array of LPS (x, y, z) mm.

    The format rules are in this module's docstring: delimiter detected, optional header,
    columns named x/y/z or else the last three all-numeric columns, ``#`` comments skipped,
    3D Slicer ``# CoordinateSystem = RAS`` converted to LPS.

    Args:
        path: text/CSV file, one landmark per line.

    Returns:
        (N, 3) float64 array of physical points, LPS mm.

    Raises:
        FileNotFoundError: the file does not exist.
        InputError: no landmark, inconsistent or too few columns, non-numeric or non-finite
            coordinates, or an unsupported coordinate system; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file {path} does not exist; check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"landmark file {path} cannot be read as text ({error}); pass a CSV of x,y,z in LPS mm."
        ) from error
    header: list[str] | None = None
    system = "LPS"
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            key = key.strip().lower()
            if key == "columns":
                header = [c.strip() for c in value.split(",")]
            elif key == "coordinatesystem":
                system = value.strip().upper()
            continue
        lines.append((number, line))
    if not lines:
        raise InputError(
            f"landmark file {path} holds no landmark; write one line per "
            "landmark with x,y,z in LPS mm."
        )
    first = lines[0][1]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    rows = [(number, _split(line, delimiter)) for number, line in lines]

    def numeric(cells: list[str]) -> int:
        return sum(_is_number(c) for c in cells)

    first_is_header = (
        numeric(rows[0][1]) < numeric(rows[1][1]) if len(rows) > 1 else numeric(rows[0][1]) < 3
    )
    if first_is_header:
        header = rows[0][1]
        rows = rows[1:]
    if not rows:
        raise InputError(
            f"landmark file {path} has a header but no landmark line; add one "
            "line per landmark with x,y,z in LPS mm."
        )
    width = len(rows[0][1])
    for number, cells in rows:
        if len(cells) != width:
            raise InputError(
                f"landmark file {path} line {number} has {len(cells)} columns but "
                f"the first landmark line has {width}; every line needs the same "
                "columns (x,y,z in LPS mm, plus optional index/name columns)."
            )
    columns = _coordinate_columns(path, header, rows, width)
    points = np.empty((len(rows), 3), dtype=np.float64)
    for r, (number, cells) in enumerate(rows):
        for c, column in enumerate(columns):
            try:
                points[r, c] = float(cells[column])
            except ValueError:
                raise InputError(
                    f"landmark file {path} line {number}: {cells[column]!r} in "
                    f"column {column + 1} is not a number; coordinates must be "
                    "numbers in LPS mm."
                ) from None
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        number = rows[int(np.flatnonzero(bad)[0])][0]
        raise InputError(
            f"landmark file {path} line {number} has a NaN or infinite "
            "coordinate; remove the landmark from both files or fix its value."
        )
    if system in ("RAS", "0"):
        logger.info("landmark file %s is in RAS: negating x and y to get LPS", path)
        points[:, :2] *= -1.0
    elif system not in ("LPS", "1"):
        raise InputError(
            f"landmark file {path} declares CoordinateSystem = {system}; only LPS "
            "or RAS physical millimetres are supported (convert voxel indices to "
            "physical points first)."
        )
    logger.debug(
        "read %d landmarks from %s (columns %s)", len(points), path, [c + 1 for c in columns]
    )
    return points


def _coordinate_columns(
    path: Path, header: list[str] | None, rows: list[tuple[int, list[str]]], width: int
) -> list[int]:
    """Indices of the x, y, z columns (see the module docstring for the rule)."""
    if header is not None and len(header) == width:
        names = [_MM_SUFFIX.sub("", h.strip().lower()) for h in header]
        if all(names.count(axis) == 1 for axis in "xyz"):
            return [names.index(axis) for axis in "xyz"]
    numeric = [c for c in range(width) if all(_is_number(cells[c]) for _, cells in rows)]
    if len(numeric) < 3:
        raise InputError(
            f"landmark file {path} has {len(numeric)} numeric column(s) ({width} "
            "in all); it needs three columns x,y,z in LPS mm (name them x,y,z in "
            "a header line when there are other numeric columns)."
        )
    return numeric[-3:]


def landmark_points(value, what: str) -> tuple[np.ndarray, str]:
    """Landmarks from a path or an (N, 3) array of LPS mm; also a name for messages."""
    if isinstance(value, str | os.PathLike):
        return read_landmarks(value), f"{what} file {value}"
    p = np.asarray(value, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise InputError(
            f"{what} must be an (N, 3) array of LPS (x, y, z) mm with N >= 1 or a "
            f"landmark file path; got shape {p.shape}."
        )
    if not np.isfinite(p).all():
        raise InputError(f"{what} has NaN or infinite coordinates; remove those landmarks.")
    return p, what


__all__ = ["landmark_points", "read_landmarks"]
