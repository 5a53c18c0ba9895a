"""Write ``include/itkSAMConvexDefaults.h``: the C++ filter's defaults, taken from config.py.

The C++ ``itk::SAMConvexRegistrationFilter`` and the Python front end share one parameter
vocabulary (the :class:`~itk_samconvex.solver.config.SAMConvexConfig` field names, with the
C++ setters mapped onto them; see docs/cxx.md). So that the C++ defaults are never retyped,
this module renders them from ``SAMConvexConfig()`` and the module constants of config.py
into a header of ``constexpr`` values. The header is checked in (an ITK ``Modules/Remote``
build has no Python); CMake checks it at configure time when a Python is at hand, and
``test/test_cxx_defaults.py`` fails when the checked-in copy is stale.

Usage::

    python -m itk_samconvex.apps.cxx_header include/itkSAMConvexDefaults.h   # (re)write
    python -m itk_samconvex.apps.cxx_header --check include/itkSAMConvexDefaults.h

``--check`` needs only the standard library and config.py (no itk, no torch, no compiler), so
CMake runs it from the source tree at configure time.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ..solver.config import GRID_GROWTH_STEP, SAMConvexConfig

GUARD = "itkSAMConvexDefaults_h"
HEADER_NAME = "itkSAMConvexDefaults.h"


def _double(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite default {value!r} as a C++ constant")
    text = repr(value)
    return text if any(c in text for c in ".eE") else text + ".0"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def constants() -> list[tuple[str, str, str, str]]:
    """``(C++ type, C++ name, literal, comment)`` of each generated constant."""
    cfg = SAMConvexConfig()
    max_voxels = 0 if cfg.max_working_voxels is None else int(cfg.max_working_voxels)
    threads = 0 if cfg.num_threads is None else int(cfg.num_threads)
    return [
        ("double", "WorkingSpacing", _double(cfg.working_spacing_mm), "working_spacing_mm (mm)"),
        (
            "SizeValueType",
            "MaximumWorkingVoxels",
            f"{max_voxels}",
            "max_working_voxels (None -> 0: no limit)",
        ),
        ("bool", "CropToForeground", _bool(cfg.crop_to_foreground), "crop_to_foreground"),
        (
            "double",
            "ForegroundThreshold",
            _double(cfg.foreground_threshold_hu),
            "foreground_threshold_hu (HU)",
        ),
        ("double", "CropMargin", _double(cfg.crop_margin_mm), "crop_margin_mm (mm)"),
        ("bool", "Antialias", _bool(cfg.antialias), "antialias"),
        ("const char *", "Device", _string(cfg.device), 'device ("auto": the package\'s device)'),
        (
            "int",
            "NumberOfSolverThreads",
            f"{threads}",
            "num_threads (None -> 0: libtorch's setting)",
        ),
        (
            "double",
            "GridGrowthStep",
            _double(GRID_GROWTH_STEP),
            "GRID_GROWTH_STEP (spacing factor per step)",
        ),
    ]


def render() -> str:
    """The header text (deterministic: the same config gives the same bytes)."""
    rows = constants()
    width_type = max(len(t) for t, *_ in rows)
    decls = [f"{name} = {literal};" for _, name, literal, _ in rows]
    width_decl = max(len(d) for d in decls)
    body = []
    for (ctype, _, _, comment), decl in zip(rows, decls, strict=True):
        body.append(f"constexpr {ctype.ljust(width_type)} {decl.ljust(width_decl)} // {comment}")
    lines = [
        f"// {HEADER_NAME}: defaults of itk::SAMConvexRegistrationFilter.",
        "//",
        "// GENERATED from python/itk_samconvex/solver/config.py (SAMConvexConfig() defaults and",
        "// GRID_GROWTH_STEP) by `python -m itk_samconvex.apps.cxx_header` -- do not edit.",
        "// Change config.py and regenerate (CMake does it at configure time when SAMCONVEX_PYTHON",
        "// is set; test/test_cxx_defaults.py fails while this copy is stale).",
        "// Each comment names the config field; docs/cxx.md maps the C++ setters onto them.",
        f"#ifndef {GUARD}",
        f"#define {GUARD}",
        "",
        '#include "itkIntTypes.h"',
        "",
        "namespace itk",
        "{",
        "namespace SAMConvexDefaults",
        "{",
        *body,
        "} // namespace SAMConvexDefaults",
        "} // namespace itk",
        "",
        f"#endif // {GUARD}",
        "",
    ]
    return "\n".join(lines)


def write(path: str | os.PathLike) -> bool:
    """Write the header to ``path`` atomically (``edge.io``); False when it is unchanged."""
    from ..edge.io.atomic import write_text

    path = Path(path)
    text = render()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except OSError:
        pass
    write_text(path, text, overwrite=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m itk_samconvex.apps.cxx_header",
        description="Write the C++ filter's defaults header from config.py.",
    )
    parser.add_argument("out", help=f"header to write, e.g. include/{HEADER_NAME}")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when OUT differs from the generated text",
    )
    args = parser.parse_args(argv)
    if args.check:
        try:
            current = Path(args.out).read_text(encoding="utf-8")
        except OSError as error:
            print(f"{args.out}: cannot read ({error.strerror})", file=sys.stderr)
            return 1
        if current != render():
            print(
                f"{args.out} is stale: regenerate it with "
                f"`python -m itk_samconvex.apps.cxx_header {args.out}`",
                file=sys.stderr,
            )
            return 1
        return 0
    changed = write(args.out)
    print(f"{args.out}: {'written' if changed else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
