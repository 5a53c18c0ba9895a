"""Tests of itk_samconvex.solver.config: presets, TOML round trips, validation messages."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from itk_samconvex.edge.io import write_text
from itk_samconvex.errors import InputError
from itk_samconvex.solver.config import (
    FEATURES,
    PRESETS,
    LevelConfig,
    SAMConvexConfig,
    dumps_toml,
    preset_config,
)

FIELD_NAMES = [f.name for f in dataclasses.fields(SAMConvexConfig)]


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------


def test_presets_exist():
    assert PRESETS == ("default", "paper", "fast", "lung")
    from itk_samconvex.cli.common import PRESET_CHOICES  # spelt out for a fast --help

    assert PRESET_CHOICES == PRESETS
    assert FEATURES == ("mind", "sam", "sam+mind")
    for name in PRESETS:
        assert isinstance(preset_config(name), SAMConvexConfig)
    assert preset_config() == SAMConvexConfig()
    with pytest.raises(
        InputError,
        match=r"Unknown preset 'papers' \(did you mean 'paper'\?\); use one of \('default', ",
    ):
        preset_config("papers")


def test_paper_preset_values():
    cfg = preset_config("paper")
    assert [(lv.grid_factor, lv.search_radius) for lv in cfg.levels] == [(8, 2), (4, 3), (2, 3)]
    assert [lv.use_global_features for lv in cfg.levels] == [True, True, False]
    assert cfg.coupling_units == "normalized"
    assert cfg.padding == "zeros"
    assert cfg.feature_extraction == "per_level"
    assert cfg.io_iterations == 50
    assert cfg.io_learning_rate == 0.05
    assert cfg.io_parameterization == "increment"
    assert cfg.io_return_smoothed is False
    assert cfg.io_adam_eps == 1e-4
    assert cfg.io_regularization == 1000.0
    assert cfg.io_relinearize_every == 1
    assert (
        cfg.initial_smoothing_passes,
        cfg.convex_smoothing_passes,
        cfg.level_smoothing_passes,
        cfg.final_smoothing_passes,
    ) == (1, 3, 3, 3)
    assert cfg.max_working_voxels is None
    assert cfg.crop_to_foreground is False
    assert (cfg.finest_factor, cfg.coarsest_factor) == (2, 8)


def test_default_and_fast_preset_values():
    cfg = preset_config("default")
    assert [(lv.grid_factor, lv.search_radius) for lv in cfg.levels] == [(8, 2), (4, 3), (2, 1)]
    assert cfg.coupling_units == "voxel"
    assert cfg.padding == "replicate"
    assert cfg.feature_extraction == "once"
    assert cfg.io_parameterization == "total"
    assert cfg.max_working_voxels == 2_500_000
    fast = preset_config("fast")
    assert [(lv.grid_factor, lv.search_radius) for lv in fast.levels] == [(8, 2), (4, 2), (2, 1)]
    assert fast.coupling_weights == (0.01, 0.1, 1.0)
    assert fast.io_iterations == 20
    assert fast.io_iterations < cfg.io_iterations


def test_preset_overrides():
    cfg = preset_config("paper", features="sam", working_spacing_mm=1.5)
    assert cfg.features == "sam"
    assert cfg.working_spacing_mm == 1.5
    assert cfg.padding == "zeros"  # the rest of the preset is kept


def test_coarsest_factor_includes_io_grid_factor():
    cfg = preset_config("default", levels=[(2, 2)], io_grid_factor=4)
    assert cfg.levels == (LevelConfig(2, 2),)
    assert (cfg.finest_factor, cfg.coarsest_factor) == (2, 4)


# ---------------------------------------------------------------------------------------------
# TOML
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "paper",
        "fast",
    ],
)
def test_toml_round_trip(tmp_path, name):
    cfg = preset_config(name)
    path = tmp_path / f"{name}.toml"
    write_text(path, cfg.to_toml())
    loaded = SAMConvexConfig.load_toml(path)
    assert isinstance(loaded.levels, tuple)
    assert all(isinstance(lv, LevelConfig) for lv in loaded.levels)
    assert loaded.levels == cfg.levels
    assert loaded == cfg
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.toml"]  # no temp file left


def test_toml_round_trip_of_custom_values(tmp_path):
    cfg = preset_config(
        "default",
        features="sam+mind",
        sam_checkpoint='C:\\models\\sam "v2".pth',
        levels=(LevelConfig(16, 1), LevelConfig(4, 4, False), LevelConfig(1, 0)),
        coupling_weights=(0.5, 2.0),
        io_adam_eps=1e-8,
        hu_min=-1000.0,
        hu_max=2000.5,
        num_threads=2,
    )
    path = tmp_path / "custom.toml"
    write_text(path, cfg.to_toml())
    assert SAMConvexConfig.load_toml(path) == cfg


def test_dumps_toml_is_valid_toml():
    text = dumps_toml(preset_config("paper").to_dict())
    data = tomllib.loads(text)
    assert data["levels"] == [
        {"grid_factor": 8, "search_radius": 2, "use_global_features": True},
        {"grid_factor": 4, "search_radius": 3, "use_global_features": True},
        {"grid_factor": 2, "search_radius": 3, "use_global_features": False},
    ]
    assert data["io_adam_eps"] == 1e-4
    assert data["padding"] == "zeros"
    assert data["max_working_voxels"] == 0  # None (no limit) is written as 0: TOML has no null
    assert text.index("[[levels]]") > text.index("padding = ")  # tables come after scalars


def test_load_toml_preset_with_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'preset = "paper"\n'
        "working_spacing_mm = 1.25\n"
        "io_iterations = 10\n"
        "\n[[levels]]\ngrid_factor = 4\nsearch_radius = 2\n"
        "\n[[levels]]\ngrid_factor = 2\nsearch_radius = 1\nuse_global_features = false\n"
    )
    cfg = SAMConvexConfig.load_toml(path)
    expected = preset_config(
        "paper",
        working_spacing_mm=1.25,
        io_iterations=10,
        levels=(LevelConfig(4, 2), LevelConfig(2, 1, False)),
    )
    assert cfg == expected
    assert cfg.padding == "zeros"
    assert cfg.io_learning_rate == 0.05
    assert cfg.max_working_voxels is None


def test_load_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("working_spacing_mm = = 2\n")
    with pytest.raises(InputError, match=r"Config file .*bad\.toml is not valid TOML"):
        SAMConvexConfig.load_toml(bad)
    with pytest.raises(InputError, match=r"Cannot read config file .*missing\.toml"):
        SAMConvexConfig.load_toml(tmp_path / "missing.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("working_spacing = 2.0\n")
    with pytest.raises(
        InputError,
        match=r"unknown registration parameter 'working_spacing' "
        r"\(did you mean 'working_spacing_mm'\?\)",
    ):
        SAMConvexConfig.load_toml(unknown)
    invalid = tmp_path / "invalid.toml"
    invalid.write_text('preset = "fast"\nhu_min = 100.0\nhu_max = 50.0\n')
    with pytest.raises(InputError, match="Parameter 'hu_max'"):
        SAMConvexConfig.load_toml(invalid)


# ---------------------------------------------------------------------------------------------
# replace and validation
# ---------------------------------------------------------------------------------------------


def test_replace_unknown_names_suggest_the_closest_valid_name():
    with pytest.raises(InputError) as info:
        preset_config().replace(io_iteration=30, radius=3, zzz=1)
    message = str(info.value)
    assert "'io_iteration' (did you mean 'io_iterations'?)" in message
    assert "'radius' (did you mean 'mind_radius'?)" in message
    assert "'zzz';" in message and "'zzz' (did you mean" not in message
    assert "`samconvex config` lists them" in message


def test_replace_coerces_levels_and_weights():
    cfg = preset_config().replace(
        levels=[{"grid_factor": 4, "search_radius": 1}, (2, 2, False)], coupling_weights=[1, 2]
    )
    assert cfg.levels == (LevelConfig(4, 1), LevelConfig(2, 2, False))
    assert cfg.coupling_weights == (1.0, 2.0)
    assert all(isinstance(w, float) for w in cfg.coupling_weights)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"working_spacing_mm": 0.0}, r"Parameter 'working_spacing_mm' is 0\.0"),
        ({"working_spacing_mm": -1.5}, r"Parameter 'working_spacing_mm' is -1\.5"),
        ({"working_spacing_mm": float("nan")}, r"Parameter 'working_spacing_mm' is nan"),
        ({"features": "sift"}, r"Parameter 'features' is 'sift'; use one of \('mind'"),
        ({"feature_extraction": "twice"}, r"Parameter 'feature_extraction' is 'twice'"),
        ({"coupling_units": "mm"}, r"Parameter 'coupling_units' is 'mm'"),
        ({"padding": "reflect"}, r"Parameter 'padding' is 'reflect'"),
        ({"io_parameterization": "delta"}, r"Parameter 'io_parameterization' is 'delta'"),
        ({"levels": []}, r"Parameter 'levels' is empty"),
        (
            {"levels": [(2, 2), (4, 2)]},
            r"Parameter 'levels' have grid factors \[2, 4\]; order "
            r"them coarse to fine",
        ),
        ({"levels": [(6, 2), (2, 2)]}, r"Parameter 'grid_factor' 6 is not a power of two"),
        ({"levels": [(8, 2), (0, 2)]}, r"Parameter 'grid_factor' 0 is not a power of two"),
        ({"io_grid_factor": 3}, r"Parameter 'grid_factor' 3 is not a power of two"),
        ({"levels": [(8, 9)]}, r"Parameter 'search_radius' is 9; use 0\.\.8"),
        ({"levels": [(8, -1)]}, r"Parameter 'search_radius' is -1"),
        (
            {"hu_min": 100.0, "hu_max": 100.0},
            r"Parameter 'hu_max' \(100\.0\) is not above "
            r"hu_min \(100\.0\)",
        ),
        ({"cost_smoothing_passes": -1}, r"Parameter 'cost_smoothing_passes' is negative"),
        ({"final_smoothing_passes": -2}, r"Parameter 'final_smoothing_passes' is negative"),
        ({"io_smoothing_passes": -1}, r"Parameter 'io_smoothing_passes' is negative"),
        ({"max_working_voxels": 4095}, r"Parameter 'max_working_voxels' is 4095; use None"),
        ({"io_iterations": -1}, r"Parameter 'io_iterations/io_relinearize_every'"),
        ({"io_relinearize_every": 0}, r"Parameter 'io_iterations/io_relinearize_every'"),
    ],
)
def test_validation_names_the_parameter(changes, pattern):
    with pytest.raises(InputError, match=pattern):
        preset_config().replace(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_working_voxels": 4096},
        {"max_working_voxels": None},
        {"levels": [(16, 0), (1, 8)]},
        {"hu_min": -1.0, "hu_max": -0.5},
        {"cost_smoothing_passes": 0, "io_smoothing_passes": 0},
    ],
)
def test_validation_accepts_limits(changes):
    preset_config().replace(**changes)


def test_validation_runs_on_direct_construction():
    with pytest.raises(InputError, match="Parameter 'max_working_voxels' is 10"):
        SAMConvexConfig(max_working_voxels=10)
    with pytest.raises(InputError, match="Parameter 'features' is 'MIND'"):
        SAMConvexConfig(features="MIND")


def test_to_dict_is_plain_data():
    data = preset_config("fast").to_dict()
    assert data["levels"] == [
        {"grid_factor": 8, "search_radius": 2, "use_global_features": True},
        {"grid_factor": 4, "search_radius": 2, "use_global_features": True},
        {"grid_factor": 2, "search_radius": 1, "use_global_features": False},
    ]
    assert data["coupling_weights"] == [0.01, 0.1, 1.0]
    assert "sam_checkpoint" not in data  # None dropped
    assert set(data) <= set(FIELD_NAMES)
    assert SAMConvexConfig.from_dict({**data, "preset": "fast"}) == preset_config("fast")
