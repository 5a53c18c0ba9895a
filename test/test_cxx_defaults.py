"""The C++ filter's defaults come from config.py: include/itkSAMConvexDefaults.h is generated
by ``python -m itk_samconvex.apps.cxx_header`` and must match what the generator writes now
(fast; no compiler, no ITK C++)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from itk_samconvex.apps import cxx_header
from itk_samconvex.solver.config import GRID_GROWTH_STEP, SAMConvexConfig

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "include" / "itkSAMConvexDefaults.h"
FILTER = (
    ROOT / "include" / "itkSAMConvexRegistrationFilter.h",
    ROOT / "include" / "itkSAMConvexRegistrationFilter.hxx",
)
REGENERATE = "python -m itk_samconvex.apps.cxx_header include/itkSAMConvexDefaults.h"


def _constants(text: str) -> dict[str, str]:
    return dict(re.findall(r"^constexpr .*?(\w+) = (.+?);", text, flags=re.MULTILINE))


def test_checked_in_header_is_current():
    assert HEADER.read_text(encoding="utf-8") == cxx_header.render(), (
        f"{HEADER.relative_to(ROOT)} is stale (config.py changed): run `{REGENERATE}` and "
        "commit the result"
    )


def test_header_carries_the_config_defaults():
    cfg = SAMConvexConfig()
    values = _constants(cxx_header.render())
    assert float(values["WorkingSpacing"]) == cfg.working_spacing_mm
    assert int(values["MaximumWorkingVoxels"]) == (cfg.max_working_voxels or 0)
    assert values["CropToForeground"] == str(cfg.crop_to_foreground).lower()
    assert float(values["ForegroundThreshold"]) == cfg.foreground_threshold_hu
    assert float(values["CropMargin"]) == cfg.crop_margin_mm
    assert values["Antialias"] == str(cfg.antialias).lower()
    assert values["Device"] == f'"{cfg.device}"'
    assert int(values["NumberOfSolverThreads"]) == (cfg.num_threads or 0)
    assert float(values["GridGrowthStep"]) == GRID_GROWTH_STEP
    assert "do not edit" in cxx_header.render()


def test_filter_uses_the_generated_constants():
    source = "\n".join(p.read_text(encoding="utf-8") for p in FILTER)
    assert '#include "itkSAMConvexDefaults.h"' in source
    for name in _constants(cxx_header.render()):
        assert f"SAMConvexDefaults::{name}" in source, f"the filter does not use {name}"
    # the values themselves are not retyped in the filter
    for literal in ("2500000", "1.02", "-500.0", "16.0"):
        assert literal not in source, f"{literal} is retyped in the C++ filter"


def test_cli_writes_atomically_and_checks(tmp_path, capsys):
    out = tmp_path / "itkSAMConvexDefaults.h"
    assert cxx_header.main(["--check", str(out)]) == 1  # missing
    assert cxx_header.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == cxx_header.render()
    assert "written" in capsys.readouterr().out
    assert cxx_header.main([str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cxx_header.main(["--check", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("= 2.0;", "= 3.0;"), encoding="utf-8")
    assert cxx_header.main(["--check", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary files left


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_defaults_are_refused(value):
    with pytest.raises(ValueError):
        cxx_header._double(value)
