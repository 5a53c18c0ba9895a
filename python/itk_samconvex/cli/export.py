"""``samconvex export``: the solver as an AOTInductor package for the C++ filter."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..apps.export_defaults import DEFAULT_MAX_SIZE, DEFAULT_TOLERANCE_VOXELS
from .common import EXIT_OK, add_registration_options, config_from_args, parse_assignments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``samconvex export`` options to ``parser``."""
    parser.description = (
        "Export the registration solver (features, pyramid, convex optimisation, instance "
        "optimisation) with torch.export and compile it with AOTInductor into one .pt2 "
        "package, for the C++ filter itk::SAMConvexRegistrationFilter. Before writing, the "
        "compiled package is run on two working-grid shapes and compared with eager "
        "execution. The solver parameters (--preset, --config, --set) are baked into the "
        "package; the working-grid parameters are stored in it as the C++ filter's defaults. "
        "Needs a C++ compiler; takes minutes."
    )
    parser.add_argument(
        "--out", "-o", required=True, metavar="FILE.pt2", help="package to write (.pt2)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep FILE when it already holds a package exported from the "
        "current solver sources with the same parameters, torch version "
        "and device (its fingerprint); otherwise rebuild and replace it",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="N",
        help="largest working-grid size per axis the package accepts (default: %(default)s)",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the comparison with eager execution (not recommended)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_VOXELS,
        metavar="VOXELS",
        help="largest accepted |compiled - eager| field difference in voxels "
        "of the output grid (default: %(default)s)",
    )
    parser.add_argument("--report", metavar="JSON", help="also write the export report here")
    parser.add_argument(
        "--compiler-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a torch._inductor.config option for the compile (repeatable), "
        "e.g. cpp.simdlen=1: no explicit vectorisation, several times "
        "faster to compile, slower to run",
    )
    add_registration_options(parser)


def run(args: argparse.Namespace) -> int:
    """``samconvex export``: exit code 0 when the package is written."""
    from ..apps.export import export_package, is_current
    from ..edge.io import write_json
    from ..errors import InputError

    cfg = config_from_args(args)
    device = cfg.device if cfg.device != "auto" else "cpu"
    options = parse_assignments(
        args.compiler_option, "--compiler-option", "KEY=VALUE", "cpp.simdlen=1", InputError
    )
    if args.reuse and is_current(args.out, cfg, device, args.max_size, options):
        if not args.quiet:
            print(
                f"{args.out} is up to date (same solver sources, parameters, torch and "
                "device); kept it."
            )
        return EXIT_OK
    report = export_package(
        args.out,
        cfg,
        device,
        check=not args.no_check,
        tolerance=args.tolerance,
        max_size=args.max_size,
        overwrite=args.overwrite or args.reuse,
        compiler_options=options,
        progress=None
        if args.quiet
        else lambda message: print(f"samconvex export: {message}", flush=True),
    )
    if args.report:
        write_json(Path(args.report), report.to_dict(), overwrite=True)
    if not args.quiet:
        meta = report.metadata
        print(
            f"wrote {report.path} ({report.path.stat().st_size / 1e6:.1f} MB): export "
            f"{report.export_seconds:.0f} s, compile {report.compile_seconds:.0f} s, check "
            f"{report.check_seconds:.0f} s; sizes: multiples of {meta['samconvex.multiple']} "
            f"in [{meta['samconvex.min_size']}, {meta['samconvex.max_size']}]"
        )
        for row in report.checks:
            print(
                f"  check {'x'.join(map(str, row['shape']))}: max |compiled - eager| "
                f"{row['max_abs_diff']:.2e} voxels (tolerance {report.tolerance:g})"
            )
    return EXIT_OK


__all__ = ["add_arguments", "run"]
