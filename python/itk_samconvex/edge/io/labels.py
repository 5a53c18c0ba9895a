"""Label-name tables: ``{id: name}`` from JSON or CSV, for reports, QC and summaries.

Accepted forms:

* JSON object ``{"1": "Brainstem", "2": "SpinalCord"}`` (the ``shared/data/labels`` tables),
  or a list of ``{"id": 1, "name": "Brainstem"}`` objects;
* CSV or TSV with two columns ``id,name`` (a header line is allowed; ``#`` comments and
  blank lines are skipped). ITK-SNAP label description files (``id R G B A VIS MSH "name"``)
  are read too: the first number is the id and the quoted text the name.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from ...errors import InputError

PathLike = str | os.PathLike
_SNAP_LINE = re.compile(r'^\s*(\d+)\s+.*"(.*)"\s*$')


def _bad(path: Path, problem: str) -> InputError:
    return InputError(
        f'label-name file {path} {problem}; write JSON {{"1": "Brainstem", '
        "...}} or CSV lines id,name."
    )


def _from_json(path: Path, text: str) -> dict[int, str]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise _bad(path, f"is not valid JSON ({error})") from error
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        try:
            items = [(entry["id"], entry["name"]) for entry in data]
        except (TypeError, KeyError) as error:
            raise _bad(path, "is a list without 'id' and 'name' in every entry") from error
    else:
        raise _bad(path, f"holds a {type(data).__name__}")
    names: dict[int, str] = {}
    for key, value in items:
        try:
            names[int(key)] = str(value)
        except (TypeError, ValueError):
            raise _bad(path, f"has the key {key!r}, which is not an integer label id") from None
    return names


def _from_table(path: Path, text: str) -> dict[int, str]:
    names: dict[int, str] = {}
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    delimiter = "\t" if lines and "\t" in lines[0] else ","
    for number, line in enumerate(lines, start=1):
        snap = _SNAP_LINE.match(line)
        if snap:
            names[int(snap.group(1))] = snap.group(2)
            continue
        cells = [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
        if len(cells) < 2:
            raise _bad(path, f"line {number} has {len(cells)} column(s), not id,name")
        try:
            names[int(cells[0])] = cells[1]
        except ValueError:
            if number == 1:
                continue  # header
            raise _bad(path, f"line {number} starts with {cells[0]!r}, not a label id") from None
    return names


def read_label_names(path: PathLike) -> dict[int, str]:
    """``{label id: name}`` from a JSON or CSV/TSV file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label-name file {path} does not exist; check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise _bad(path, f"cannot be read as text ({error})") from error
    names = _from_json(path, text) if text.lstrip()[:1] in "{[" else _from_table(path, text)
    if not names:
        raise _bad(path, "holds no label")
    return names


def label_name(label: int, names: dict[int, str] | None) -> str:
    """The name of ``label`` (or ``"label <id>"`` without a table entry)."""
    if names and label in names:
        return names[label]
    return f"label {label}"


__all__ = ["label_name", "read_label_names"]
