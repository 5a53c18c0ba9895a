"""All registration parameters in one dataclass, with presets and TOML load/save.

Units: ``*_mm`` fields are millimetres (``working_spacing_mm`` is the finest working spacing:
it grows when the working grid would exceed ``max_working_voxels``, which bounds run time and
memory whatever the field of view); ``grid_factor`` and ``search_radius`` are in voxels
(of the working grid and of the level grid respectively); coupling weights act on squared
displacements in level-grid voxels (``coupling_units="voxel"``) or in the official code's
normalised [-1, 1] units (``"normalized"``, paper parity).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

from ..errors import InputError

Preset = Literal["default", "paper", "fast", "lung"]
Features = Literal["mind", "sam", "sam+mind"]
FeatureExtraction = Literal["once", "pyramid", "per_level"]
CouplingUnits = Literal["voxel", "normalized"]
Padding = Literal["replicate", "zeros"]
IOParameterization = Literal["total", "increment"]
Sliding = Literal["off", "on", "auto"]
LungSettings = Literal["auto", "on", "off"]
FovAnchor = Literal["auto", "on", "off"]

PRESETS: tuple[str, ...] = get_args(Preset)
#: When the working grid exceeds ``max_working_voxels`` its spacing first grows by the cube
#: root of the excess, then by this factor until the grid (sizes rounded up to the coarsest
#: factor) fits. The C++ filter applies the same rule (its defaults are generated from here).
GRID_GROWTH_STEP = 1.02
FEATURES: tuple[str, ...] = get_args(Features)


@dataclass(frozen=True)
class LevelConfig:
    """One level of the coarse-to-fine discrete search.

    Attributes:
        grid_factor: spacing of this level's cost grid in working-grid voxels (a power of 2).
        search_radius: the labels are the integer offsets in ``[-r, r]^3`` of the level grid.
        use_global_features: add the global (context) embedding at this level (SAM only).
    """

    grid_factor: int
    search_radius: int
    use_global_features: bool = True


@dataclass(frozen=True)
class SAMConvexConfig:
    """Every parameter of a registration. Build one with :func:`preset_config`."""

    # --- working grid -------------------------------------------------------------------
    working_spacing_mm: float = 2.0
    max_working_voxels: int | None = 2_500_000
    crop_to_foreground: bool = True
    foreground_threshold_hu: float = -500.0
    crop_margin_mm: float = 16.0
    antialias: bool = True
    hu_min: float = -1024.0
    hu_max: float = 3071.0
    # refuse inputs that do not look like CT in HU (a label map, a normalised volume)
    ct_check: bool = True
    # --- features -----------------------------------------------------------------------
    features: Features = "mind"
    sam_checkpoint: str | None = None
    sam_tile_z: int | None = 64  # SAM inference in overlapping z-slabs (None: whole volume)
    sam_channels: int | None = 8  # SAM maps projected on a per-pair PCA basis (None: all)
    sam_weight: float = 1.0  # weight of the SAM maps' cost against MIND's
    mind_radius: int = 1
    mind_dilation: int = 2
    feature_extraction: FeatureExtraction = "once"  # see pyramid.LevelFeatures
    # --- discrete coupled convex pyramid --------------------------------------------------
    levels: tuple[LevelConfig, ...] = (
        LevelConfig(8, 2),
        LevelConfig(4, 3),
        LevelConfig(2, 1, use_global_features=False),
    )
    coupling_weights: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    coupling_units: CouplingUnits = "voxel"
    coupling_scale: float = 1.0
    cost_smoothing_passes: int = 0
    subvoxel: bool = False
    initial_smoothing_passes: int = 1
    convex_smoothing_passes: int = 1
    level_smoothing_passes: int = 1
    final_smoothing_passes: int = 1
    padding: Padding = "replicate"  # box filters; "zeros" is the official behaviour
    # --- lungs: decided from the fixed image (the report's ``automatic_choices``) ----------
    # "auto": when the lungs fill at least ``lung_body_fraction`` of the fixed body, the
    # instance optimisation runs with the ``lung_io_*`` values (finer grid, weaker
    # regulariser: breathing detail is fine and the pair is intra-patient); "on"/"off" force it
    lung_settings: LungSettings = "auto"
    lung_body_fraction: float = 0.2
    lung_io_grid_factor: int = 1
    lung_io_regularization: float = 0.5
    # register lungs and the rest separately so the field can break at the pleura; "auto":
    # when the lungs fill at least ``lung_body_fraction`` of the fixed body
    sliding: Sliding = "off"
    sliding_smoothing_passes: int = 0  # box passes over the combined field (softens the break)
    # --- faces of a shared field of view (see solver.boundary) -----------------------------
    # ramp the displacement that leaves the fixed image's box to zero at its faces, so that
    # every fixed voxel keeps a counterpart in the moving image; "auto": when both images
    # cover the same box and no initial transform is given (e.g. two phases of one 4DCT)
    fov_anchor: FovAnchor = "auto"
    fov_anchor_max_strain: float = 0.25  # the ramp strains the tissue by at most this
    fov_anchor_min_band_mm: float = 4.0
    # --- instance optimisation ------------------------------------------------------------
    instance_optimization: bool = True
    io_iterations: int = 50
    io_learning_rate: float = 0.25
    io_adam_eps: float = 1e-2
    io_regularization: float = 1.0
    io_grid_factor: int = 2
    io_smoothing_passes: int = 3
    io_relinearize_every: int = 5
    io_parameterization: IOParameterization = "total"  # official: "increment" from 0
    io_return_smoothed: bool = True
    # --- runtime --------------------------------------------------------------------------
    device: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    memory_limit_gb: float | None = None
    chunk_voxels: int = 1 << 14

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> SAMConvexConfig:
        """Return a copy with ``changes`` applied (names must be config fields)."""
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise InputError(unknown_parameter_message(unknown))
        if "levels" in changes:
            changes["levels"] = _coerce_levels(changes["levels"])
        if changes.get("max_working_voxels") == 0:
            changes["max_working_voxels"] = None  # 0 means no limit (TOML has no null)
        for name in ("coupling_weights",):
            if name in changes:
                changes[name] = tuple(float(v) for v in changes[name])
        return replace(self, **changes)

    @property
    def finest_factor(self) -> int:
        return min(level.grid_factor for level in self.levels)

    @property
    def coarsest_factor(self) -> int:
        return max(max(level.grid_factor for level in self.levels), self.io_grid_factor)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (TOML/JSON friendly).

        TOML has no null: ``max_working_voxels=None`` (no limit) is written as 0 and other
        ``None`` values (defaults in every preset) are dropped.
        """
        data = dataclasses.asdict(self)
        data["levels"] = [dataclasses.asdict(level) for level in self.levels]
        data["coupling_weights"] = list(self.coupling_weights)
        if data["max_working_voxels"] is None:
            data["max_working_voxels"] = 0
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: SAMConvexConfig | None = None):
        """Build from plain data; missing fields come from ``base`` (default preset)."""
        data = dict(data)
        preset = data.pop("preset", None)
        if base is None:
            base = preset_config(preset or "default")
        return base.replace(**data)

    def to_toml(self) -> str:
        """This config as TOML text (write it with ``edge.io.write_text``)."""
        return dumps_toml(self.to_dict())

    @classmethod
    def load_toml(cls, path: str | os.PathLike) -> SAMConvexConfig:
        """Read a TOML file written from :meth:`to_toml` (or by hand).

        A top-level ``preset = "paper"`` key starts from that preset; other keys override it.
        """
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise InputError(
                f"Config file {path} is not valid TOML ({error}); fix the syntax."
            ) from error
        except OSError as error:
            raise InputError(f"Cannot read config file {path}: {error.strerror}.") from error
        return cls.from_dict(data)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SAMConvexConfig))


def did_you_mean(name: str, choices: tuple[str, ...] | list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_parameter_message(names: list[str], extra: tuple[str, ...] = ()) -> str:
    """The error for misspelt parameter names: each with its closest valid name."""
    valid = (*extra, *FIELD_NAMES)
    parts = [f"{name!r}{did_you_mean(name, valid)}" for name in names]
    return (
        f"unknown registration parameter {', '.join(parts)}; the valid names are the "
        "fields of SAMConvexConfig (`samconvex config` lists them with their values)."
    )


def parse_toml_value(text: str) -> Any:
    """A parameter value written as text (command line ``--set``, manifest cells): a TOML
    scalar or array (``3``, ``2.5``, ``true``, ``"x"``, ``[1, 2]``); anything else stays a
    string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build_config(
    preset: str = "default",
    config: SAMConvexConfig | str | os.PathLike | None = None,
    **parameters: Any,
) -> SAMConvexConfig:
    """A config from a preset, or a config object / TOML path, with parameter overrides
    (``None`` values are ignored)."""
    if config is None:
        base = preset_config(preset)
    elif isinstance(config, SAMConvexConfig):
        base = config
    else:
        base = SAMConvexConfig.load_toml(config)
    overrides = {k: v for k, v in parameters.items() if v is not None}
    return base.replace(**overrides) if overrides else base


def _coerce_levels(levels: Any) -> tuple[LevelConfig, ...]:
    out = []
    for level in levels:
        if isinstance(level, LevelConfig):
            out.append(level)
        elif isinstance(level, dict):
            out.append(LevelConfig(**level))
        else:
            out.append(LevelConfig(*level))
    return tuple(out)


def _validate(cfg: SAMConvexConfig) -> None:
    def bad(name: str, problem: str, fix: str) -> InputError:
        return InputError(f"Parameter '{name}' {problem}; {fix}.")

    if cfg.max_working_voxels is not None and cfg.max_working_voxels < 4096:
        raise bad(
            "max_working_voxels",
            f"is {cfg.max_working_voxels}",
            "use None (no limit) or at least 4096",
        )
    if not cfg.working_spacing_mm > 0:
        raise bad(
            "working_spacing_mm", f"is {cfg.working_spacing_mm}", "use a positive value in mm"
        )
    if cfg.features not in FEATURES:
        raise bad(
            "features",
            f"is {cfg.features!r}{did_you_mean(str(cfg.features), FEATURES)}",
            f"use one of {FEATURES}",
        )
    if cfg.feature_extraction not in ("once", "pyramid", "per_level"):
        raise bad(
            "feature_extraction",
            f"is {cfg.feature_extraction!r}",
            "use 'once', 'pyramid' or 'per_level'",
        )
    if cfg.coupling_units not in ("voxel", "normalized"):
        raise bad("coupling_units", f"is {cfg.coupling_units!r}", "use 'voxel' or 'normalized'")
    if cfg.sliding not in ("off", "on", "auto"):
        raise bad("sliding", f"is {cfg.sliding!r}", "use 'off', 'on' or 'auto'")
    if cfg.lung_settings not in ("auto", "on", "off"):
        raise bad("lung_settings", f"is {cfg.lung_settings!r}", "use 'auto', 'on' or 'off'")
    if cfg.fov_anchor not in ("auto", "on", "off"):
        raise bad("fov_anchor", f"is {cfg.fov_anchor!r}", "use 'auto', 'on' or 'off'")
    if not 0.0 < cfg.fov_anchor_max_strain < 1.0:
        raise bad(
            "fov_anchor_max_strain", f"is {cfg.fov_anchor_max_strain}", "use a strain in (0, 1)"
        )
    if not cfg.fov_anchor_min_band_mm > 0:
        raise bad(
            "fov_anchor_min_band_mm",
            f"is {cfg.fov_anchor_min_band_mm}",
            "use a positive width in mm",
        )
    if not 0.0 <= cfg.lung_body_fraction <= 1.0:
        raise bad("lung_body_fraction", f"is {cfg.lung_body_fraction}", "use a share in 0..1")
    if cfg.padding not in ("replicate", "zeros"):
        raise bad("padding", f"is {cfg.padding!r}", "use 'replicate' or 'zeros'")
    if cfg.io_parameterization not in ("total", "increment"):
        raise bad(
            "io_parameterization", f"is {cfg.io_parameterization!r}", "use 'total' or 'increment'"
        )
    if not cfg.levels:
        raise bad("levels", "is empty", "give at least one LevelConfig")
    factors = [level.grid_factor for level in cfg.levels]
    for f in [*factors, cfg.io_grid_factor, cfg.lung_io_grid_factor]:
        if f < 1 or f & (f - 1):
            raise bad("grid_factor", f"{f} is not a power of two", "use 1, 2, 4, 8 or 16")
    if factors != sorted(factors, reverse=True):
        raise bad("levels", f"have grid factors {factors}", "order them coarse to fine")
    for level in cfg.levels:
        if not 0 <= level.search_radius <= 8:
            raise bad("search_radius", f"is {level.search_radius}", "use 0..8 level voxels")
    if cfg.io_iterations < 0 or cfg.io_relinearize_every < 1:
        raise bad("io_iterations/io_relinearize_every", "are out of range", "use >=0 and >=1")
    if cfg.hu_max <= cfg.hu_min:
        raise bad("hu_max", f"({cfg.hu_max}) is not above hu_min ({cfg.hu_min})", "swap them")
    for name in (
        "initial_smoothing_passes",
        "convex_smoothing_passes",
        "level_smoothing_passes",
        "final_smoothing_passes",
        "io_smoothing_passes",
        "sliding_smoothing_passes",
        "cost_smoothing_passes",
    ):
        if getattr(cfg, name) < 0:
            raise bad(name, "is negative", "use 0 or more passes")


def preset_config(name: str = "default", **overrides: Any) -> SAMConvexConfig:
    """Return the named preset, with ``overrides`` (config field names) applied.

    * ``default``: our choice, measured on the shared CT pairs (see README "Presets").
    * ``paper``: the official SAMConvex code's scheme (notes/algorithm.md §1) with the
      features chosen by ``features``: radii 2/3/3 on 16/8/4 mm grids, coupling in normalised
      units, three zero-padded box passes everywhere, features re-extracted per level,
      50 Adam steps lr 0.05 on a zero-initialised increment, raw parameter returned.
    * ``fast``: fewer labels and iterations for quick previews.
    * ``lung``: the default with the lung settings as fixed values (what the default
      chooses by itself when the fixed image is mostly lung; for ``samconvex export``).
    """
    if name not in PRESETS:
        raise InputError(
            f"Unknown preset {name!r}{did_you_mean(name, PRESETS)}; use one of {PRESETS}."
        )
    base = SAMConvexConfig()
    if name == "paper":
        base = base.replace(
            max_working_voxels=None,
            crop_to_foreground=False,
            feature_extraction="per_level",
            levels=(LevelConfig(8, 2), LevelConfig(4, 3), LevelConfig(2, 3, False)),
            coupling_units="normalized",
            subvoxel=False,
            initial_smoothing_passes=1,
            convex_smoothing_passes=3,
            level_smoothing_passes=3,
            final_smoothing_passes=3,
            padding="zeros",
            io_iterations=50,
            io_learning_rate=0.05,
            io_adam_eps=1e-4,
            io_regularization=1000.0,
            io_relinearize_every=1,
            io_parameterization="increment",
            io_return_smoothed=False,
            fov_anchor="off",
        )
    elif name == "lung":
        base = base.replace(
            lung_settings="off",
            io_grid_factor=base.lung_io_grid_factor,
            io_regularization=base.lung_io_regularization,
        )
    elif name == "fast":
        base = base.replace(
            levels=(LevelConfig(8, 2), LevelConfig(4, 2), LevelConfig(2, 1, False)),
            coupling_weights=(0.01, 0.1, 1.0),
            io_iterations=20,
        )
    return base.replace(**overrides) if overrides else base


def dumps_toml(data: dict[str, Any]) -> str:
    """Serialise the config's plain data as TOML (scalars, lists, array of tables)."""
    lines: list[str] = []
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, rows in tables:
        for row in rows:
            lines.append("")
            lines.append(f"[[{key}]]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


__all__ = [
    "FEATURES",
    "FIELD_NAMES",
    "GRID_GROWTH_STEP",
    "PRESETS",
    "Features",
    "LevelConfig",
    "Preset",
    "SAMConvexConfig",
    "build_config",
    "did_you_mean",
    "dumps_toml",
    "parse_toml_value",
    "preset_config",
    "unknown_parameter_message",
]
