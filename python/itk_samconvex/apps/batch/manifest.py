"""Batch manifests: which pairs ``samconvex batch`` registers, checked before anything runs.

A manifest is a CSV file with a header row, or a JSON file holding a list of objects (or
``{"pairs": [...], "defaults": {...}}``, where ``defaults`` fills keys a pair leaves out).
Keys per pair:

* ``fixed``, ``moving`` (required): 3-D images ITK can read.
* ``fixed_labels``, ``moving_labels``: label maps; the moving one is warped with
  nearest-neighbour interpolation, both together add Dice before/after to the report.
* ``fixed_mask``, ``moving_mask``: masks on their image's grid (restrict the data term).
* ``initial_transform``: fixed->moving pre-alignment file (ITK transform or elastix
  ``TransformParameters.*.txt``), or the word ``elastix-affine`` to run an itk-elastix affine
  registration first.
* ``fixed_landmarks``, ``moving_landmarks``: landmark files of corresponding points (the one
  reader, ``edge.io.landmarks``: ``x,y,z`` in LPS mm, row ``i`` of one file matches row ``i``
  of the other). Adds the target registration error to the report.
* ``label_names``: a label id -> name table (JSON or CSV) for the report and the QC.
* ``output``: the pair's folder name inside the output folder (default
  ``<fixed stem>__<moving stem>``); names must be unique.
* any :class:`~itk_samconvex.config.SAMConvexConfig` field (e.g. ``io_iterations``): a
  per-pair override of the registration parameters. CSV cells are parsed as TOML scalars
  (``5``, ``2.5``, ``true``, ``"text"``, ``[1, 2]``); ``true``/``false`` are case-insensitive.
* ``notes``, ``comment``: ignored.

Empty cells (CSV) and ``null`` (JSON) mean "not given". Relative paths are relative to the
manifest's folder (or to ``base_dir`` for pairs given as Python objects).
"""

from __future__ import annotations

import csv
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ...edge.io import read_landmarks
from ...errors import InputError
from ...solver.config import SAMConvexConfig, parse_toml_value, preset_config
from ..files import ELASTIX_AFFINE, PairFiles

#: Keys holding paths, in the order they are reported (the fields of ``PairFiles``).
PATH_KEYS = tuple(f.name for f in fields(PairFiles))
#: Keys that are neither paths nor registration parameters.
OTHER_KEYS = ("output",)
#: Columns accepted and ignored (free text for the user).
IGNORED_KEYS = ("notes", "comment")
#: Names a pair's output folder may not take (used by the batch runner itself).
RESERVED_NAMES = ("failures", "summary.csv", "summary.json")

_IMAGE_SUFFIXES = (
    ".nii.gz",
    ".nii",
    ".mha",
    ".mhd",
    ".nrrd",
    ".nhdr",
    ".hdr",
    ".img",
    ".img.gz",
    ".tif",
    ".tiff",
    ".dcm",
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_CONFIG_FIELDS = {f.name for f in fields(SAMConvexConfig)}


@dataclass(frozen=True)
class PairSpec:
    """One pair of a batch: its input files (absolute paths), name and parameters.

    Attributes:
        name: output folder name (unique within the batch).
        files: the input files, as ``register`` takes them (``initial_transform`` may be
            ``"elastix-affine"``).
        overrides: per-pair :class:`SAMConvexConfig` field values.
        where: where the pair came from, for messages (``"line 3"``, ``"pairs[2]"``).
    """

    name: str
    files: PairFiles
    overrides: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    def config(self, base: SAMConvexConfig) -> SAMConvexConfig:
        """``base`` with this pair's overrides applied."""
        return base.replace(**self.overrides) if self.overrides else base


class ManifestError(InputError):
    """One or more problems in a batch manifest, all reported at once.

    Attributes:
        problems: one message per problem, each starting with where it is.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"manifest {source} has {len(self.problems)} problem(s); fix them and "
            f"run again:\n{lines}"
        )


# ------------------------------------------------------------------------------------------
# reading


def read_manifest_rows(
    path: str | os.PathLike,
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Raw rows of a CSV or JSON manifest.

    Args:
        path: the manifest file (``.csv``, or ``.json``; other suffixes are sniffed).

    Returns:
        ``(rows, problems)``: rows as ``(where, mapping)`` with defaults already merged, and
        file-level problems (unreadable file, missing required column, bad JSON shape).
    """
    path = Path(path)
    if not path.is_file():
        return [], [f"the file does not exist; check the path {path}"]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        return [], [f"the file cannot be read as UTF-8 text ({error})"]
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        return _json_rows(text)
    return _csv_rows(text)


def _csv_rows(text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    rows: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for line_number, cells in enumerate(reader, start=1):
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            missing = [c for c in ("fixed", "moving") if c not in header]
            if missing:
                problems.append(
                    f"line {line_number} (header): missing required column(s) "
                    f"{', '.join(repr(c) for c in missing)}; the header must name at least "
                    "'fixed,moving' (optional: "
                    + ", ".join(PATH_KEYS[2:] + OTHER_KEYS)
                    + ", and registration parameters)"
                )
            duplicated = sorted({c for c in header if header.count(c) > 1})
            if duplicated:
                problems.append(
                    f"line {line_number} (header): column(s) {duplicated} appear "
                    "more than once; keep one of each"
                )
            continue
        if len(cells) > len(header):
            problems.append(
                f"line {line_number}: {len(cells)} cells but the header has "
                f"{len(header)} columns; quote cells that contain commas"
            )
            continue
        row = {key: cell.strip() for key, cell in zip(header, cells, strict=False)}
        rows.append((f"line {line_number}", {k: v for k, v in row.items() if v != ""}))
    if header is None:
        problems.append(
            "the file is empty; write a header line 'fixed,moving' and one line per pair"
        )
    return rows, problems


def _json_rows(text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return [], [f"the file is not valid JSON ({error}); fix the syntax"]
    defaults: dict[str, Any] = {}
    if isinstance(data, dict):
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            return [], ["'defaults' must be an object of keys shared by every pair"]
        unknown = sorted(set(data) - {"pairs", "defaults"})
        if unknown or "pairs" not in data:
            return [], [
                'a JSON object manifest must look like {"pairs": [...], '
                '"defaults": {...}}'
                + (f"; unknown key(s) {unknown}" if unknown else "; 'pairs' is missing")
            ]
        data = data["pairs"]
    if not isinstance(data, list):
        return [], ['the JSON manifest must be a list of pair objects (or {"pairs": [...]})']
    rows: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            problems.append(
                f"pairs[{index}]: is {type(item).__name__}, not an object with 'fixed' and 'moving'"
            )
            continue
        merged = {**defaults, **item}
        rows.append((f"pairs[{index}]", {k: v for k, v in merged.items() if v is not None}))
    return rows, problems


# ------------------------------------------------------------------------------------------
# values


def parse_cell(text: str) -> Any:
    """Parse a CSV cell holding a parameter value (TOML scalar or array; case-free bools)."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if lowered in ("none", "null"):
        return None
    return parse_toml_value(text.strip())


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, list | tuple)
    return True


def _coerce_override(name: str, value: Any) -> Any:
    """Check a per-pair parameter against its config field type; ints become floats."""
    if isinstance(value, str):
        value = parse_cell(value)
    hint = typing.get_type_hints(SAMConvexConfig)[name]
    if not _type_ok(value, hint):
        shown = getattr(hint, "__name__", str(hint))
        raise InputError(f"parameter {name}={value!r} has the wrong type (expected {shown})")
    if hint is float and isinstance(value, int):
        value = float(value)
    return value


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in sorted(_IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def default_name(fixed: str, moving: str) -> str:
    """Output folder name derived from the file names: ``<fixed stem>__<moving stem>``."""
    raw = f"{_stem(fixed)}__{_stem(moving)}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", raw).lstrip("._-") or "pair"


# ------------------------------------------------------------------------------------------
# validation


def load_pairs(
    source: str | os.PathLike | Sequence[Mapping[str, Any] | PairSpec],
    base_config: SAMConvexConfig | None = None,
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    default_initial_transform: str | None = None,
) -> list[PairSpec]:
    """Read and validate a manifest (or pair objects); report every problem at once.

    Args:
        source: a manifest path (CSV/JSON), or a sequence of mappings with the manifest keys,
            or of :class:`PairSpec`.
        base_config: the configuration per-pair overrides apply to (default preset if None);
            every pair's resulting configuration is validated here.
        base_dir: folder relative paths are resolved against when ``source`` is not a file
            (default: the current directory).
        check_files: check that every input file exists (turn off when the files are only
            visible to remote workers).
        default_initial_transform: ``initial_transform`` for pairs that give none (a path or
            ``"elastix-affine"``).

    Returns:
        The pairs, in manifest order, with absolute paths.

    Raises:
        ManifestError: listing every problem with its row (``line N`` of a CSV, ``pairs[i]``
            of JSON or of a Python sequence).
    """
    base_config = base_config or preset_config("default")
    if isinstance(source, str | os.PathLike):
        label = str(source)
        rows, problems = read_manifest_rows(source)
        folder = Path(source).resolve().parent
    else:
        label = "(pairs given in Python)"
        rows, problems = [], []
        for index, item in enumerate(source):
            where = f"pairs[{index}]"
            if isinstance(item, PairSpec):
                where = item.where or where
                item = {
                    **item.files.to_dict(),
                    "output": item.name,
                    **item.overrides,
                }
            if not isinstance(item, Mapping):
                problems.append(f"{where}: is {type(item).__name__}, not a mapping or PairSpec")
                continue
            rows.append((where, {k: v for k, v in item.items() if v is not None}))
        folder = Path(base_dir or os.getcwd()).resolve()
    if not rows and not problems:
        problems.append("lists no pairs; add one row per pair (fixed, moving)")
    pairs: list[PairSpec] = []
    for where, row in rows:
        pair = _check_row(
            where, row, folder, base_config, check_files, default_initial_transform, problems
        )
        if pair is not None:
            pairs.append(pair)
    seen: dict[str, list[str]] = {}
    for pair in pairs:
        seen.setdefault(pair.name.lower(), []).append(pair.where)
    for pair in pairs:
        where = seen.get(pair.name.lower(), [])
        if len(where) > 1:
            problems.append(
                f"{', '.join(where)}: output name {pair.name!r} is used by "
                f"{len(where)} pairs (names are compared ignoring case); give each "
                "pair a unique 'output' value"
            )
            seen.pop(pair.name.lower())
    if problems:
        raise ManifestError(label, problems)
    return pairs


def _check_row(
    where: str,
    row: dict[str, Any],
    folder: Path,
    base: SAMConvexConfig,
    check_files: bool,
    default_initial: str | None,
    problems: list[str],
) -> PairSpec | None:
    start = len(problems)
    known = set(PATH_KEYS) | set(OTHER_KEYS) | set(IGNORED_KEYS) | _CONFIG_FIELDS
    unknown = sorted(set(row) - known)
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {unknown}: neither a pair field ({', '.join(PATH_KEYS)}, "
            "output) nor a registration parameter (see `samconvex config`); fix the spelling "
            "or remove them"
        )
    if default_initial and "initial_transform" not in row:
        row = {**row, "initial_transform": default_initial}
    paths: dict[str, str] = {}
    for key in PATH_KEYS:
        if key not in row:
            continue
        value = row[key]
        if not isinstance(value, str | os.PathLike):
            problems.append(f"{where}: {key} is {value!r}; give a file path")
            continue
        text = os.fspath(value).strip()
        if key == "initial_transform" and text.lower() == ELASTIX_AFFINE:
            paths[key] = ELASTIX_AFFINE
            continue
        path = Path(text).expanduser()
        path = path if path.is_absolute() else folder / path
        paths[key] = str(path)
        if check_files and not path.is_file():
            problems.append(
                f"{where}: {key} file {path} does not exist; check the path "
                f"(relative paths are relative to {folder})"
            )
    for key in ("fixed", "moving"):
        if key not in row:
            problems.append(
                f"{where}: '{key}' is missing; every pair needs a fixed and a moving image"
            )
    if ("fixed_landmarks" in paths) != ("moving_landmarks" in paths):
        problems.append(
            f"{where}: landmarks need both fixed_landmarks and moving_landmarks "
            "(corresponding rows); give both or neither"
        )
    elif "fixed_landmarks" in paths and check_files and len(problems) == start:
        try:
            count_f = len(read_landmarks(paths["fixed_landmarks"]))
            count_m = len(read_landmarks(paths["moving_landmarks"]))
            if count_f != count_m:
                problems.append(
                    f"{where}: fixed_landmarks has {count_f} points but "
                    f"moving_landmarks has {count_m}; row i of one must match row "
                    "i of the other"
                )
        except InputError as error:
            problems.append(f"{where}: {error}")
    overrides: dict[str, Any] = {}
    for key in sorted(set(row) & _CONFIG_FIELDS):
        try:
            overrides[key] = _coerce_override(key, row[key])
        except InputError as error:
            problems.append(
                f"{where}: {error}; use a value like the preset's ({getattr(base, key)!r})"
            )
    if overrides and len(problems) == start:
        try:
            base.replace(**overrides)
        except (InputError, TypeError, ValueError) as error:
            problems.append(f"{where}: {error}")
    name = row.get("output")
    if name is None and "fixed" in paths and "moving" in paths:
        name = default_name(paths["fixed"], paths["moving"])
    elif name is not None:
        name = str(name).strip()
        if not _SAFE_NAME.match(name) or name in (".", ".."):
            problems.append(
                f"{where}: output {name!r} is not a plain folder name; use letters, "
                "digits and . _ + - (no slashes, not starting with a dot)"
            )
    if name is not None and name.lower() in RESERVED_NAMES:
        problems.append(
            f"{where}: output {name!r} is reserved for the batch runner; choose "
            "another 'output' value"
        )
    if len(problems) > start:
        return None
    return PairSpec(name=name, files=PairFiles(**paths), overrides=overrides, where=where)


__all__ = [
    "ELASTIX_AFFINE",
    "ManifestError",
    "PairSpec",
    "default_name",
    "load_pairs",
    "parse_cell",
    "read_manifest_rows",
]
