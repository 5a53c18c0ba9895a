"""Command line: ``samconvex register | demo | config``.

Every command is ``main(argv) -> exit code`` so it can be tested in-process. Bad input exits
with code 2 and a one-line message naming the input, the problem and the fix.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import SAMConvexError

logger = logging.getLogger("itk_samconvex")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Subcommands implemented in their own modules: each module provides
# ``add_arguments(parser)`` and ``run(args) -> exit code``.
PLUGGABLE: list[tuple[str, str, str]] = [
    ("batch", "itk_samconvex.apps.batch", "register many pairs from a manifest on Dask (resumable)"),
    ("evaluate", "itk_samconvex.apps.evaluate", "score a registration: Dice, HD95, TRE, SDlogJ, folding"),
    ("train-sam", "itk_samconvex.apps.training.train", "train the SAM embedding self-supervised on CT images"),
    ("export", "itk_samconvex.apps.export", "export the solver as an AOTInductor package for the C++ filter"),
]


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None

OUTPUT_NAMES = {
    "transform": "transform.h5",
    "field": "field.nii.gz",
    "warped": "warped.nii.gz",
    "warped_labels": "warped_labels.nii.gz",
    "qc": "qc.png",
    "report": "report.json",
}


def _parse_value(text: str) -> Any:
    """Parse ``--set`` values: TOML scalars and arrays (``3``, ``2.5``, ``true``, ``"x"``)."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _add_registration_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registration")
    group.add_argument("--preset", default="default", choices=("default", "paper", "fast"),
                       help="parameter preset (default: %(default)s)")
    group.add_argument("--config", metavar="TOML",
                       help="parameter file (see `samconvex config`); replaces --preset")
    group.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                       help="override one parameter, e.g. --set io_iterations=30 (repeatable)")
    group.add_argument("--features", choices=("mind", "sam", "sam+mind"),
                       help="feature backend (default: mind)")
    group.add_argument("--no-instance-optimization", action="store_true",
                       help="skip the Adam refinement after the discrete stage")
    group.add_argument("--device", default=None,
                       help="auto (default), cpu, cuda or cuda:N")
    group.add_argument("--seed", type=int, default=None, help="random seed (default 0)")


def parse_assignments(items: list[str], option: str, form: str, example: str,
                      error: type[Exception]) -> dict[str, Any]:
    """``NAME=VALUE`` command-line items as a dict (values parsed by ``_parse_value``)."""
    parsed: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise error(f"{option} {item!r} must look like {form} (e.g. {example}).")
        name, value = item.split("=", 1)
        parsed[name.strip()] = _parse_value(value.strip())
    return parsed


def _config_from_args(args: argparse.Namespace):
    from ..edge.registration import build_config

    overrides = parse_assignments(args.set, "--set", "NAME=VALUE", "io_iterations=30",
                                  SAMConvexError)
    if args.features:
        overrides["features"] = args.features
    if args.no_instance_optimization:
        overrides["instance_optimization"] = False
    if args.device:
        overrides["device"] = args.device
    if args.seed is not None:
        overrides["seed"] = args.seed
    return build_config(args.preset, args.config, **overrides)


def _add_verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="no progress bar, no logs")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="log more (-v info, -vv debug)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samconvex",
        description=(
            "SAMConvex CT deformable registration for ITK. Transforms map fixed physical "
            "points to moving physical points (LPS mm), so warped(x) = moving(T(x))."
        ),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    _add_verbosity(parser, argparse.SUPPRESS)
    parser.set_defaults(quiet=False, verbose=0)
    common = argparse.ArgumentParser(add_help=False)
    _add_verbosity(common, argparse.SUPPRESS)  # also accepted after the command
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    reg = sub.add_parser(
        "register", parents=[common], help="register MOVING to FIXED and write the outputs",
        description=(
            "Register MOVING onto FIXED. Writes OUT/transform.h5 (DisplacementFieldTransform, "
            "initial transform baked in), field.nii.gz (T(x)-x, LPS mm, fixed grid), "
            "warped.nii.gz, qc.png, report.json, and warped_labels.nii.gz with --labels."
        ),
    )
    reg.add_argument("fixed", help="fixed image (any ITK-readable 3-D CT)")
    reg.add_argument("moving", help="moving image")
    reg.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    reg.add_argument("--labels", metavar="MOVING_LABELS",
                     help="moving label map to warp with nearest-neighbour interpolation")
    reg.add_argument("--fixed-labels", metavar="FIXED_LABELS",
                     help="fixed label map: adds Dice before/after to the report")
    reg.add_argument("--fixed-mask", metavar="MASK", help="fixed mask (restricts the data term)")
    reg.add_argument("--moving-mask", metavar="MASK", help="moving mask")
    init = reg.add_mutually_exclusive_group()
    init.add_argument("--initial-transform", metavar="FILE",
                      help="fixed->moving pre-alignment: ITK transform file (.h5 .tfm .txt .mat) "
                           "or elastix TransformParameters.*.txt")
    init.add_argument("--elastix-affine", action="store_true",
                      help="run an itk-elastix affine registration first (needs itk-elastix)")
    reg.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    reg.add_argument("--no-qc", action="store_true", help="skip qc.png")
    _add_registration_options(reg)

    demo = sub.add_parser(
        "demo", parents=[common], help="register a synthetic CT-like pair with a known deformation",
        description=(
            "Builds a CT-like phantom pair with a known breathing-like deformation, registers "
            "it, writes the outputs like `register`, and prints the error against the truth."
        ),
    )
    demo.add_argument("-o", "--output", default="samconvex-demo", metavar="OUT",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--amplitude", type=float, default=12.0,
                      help="maximum displacement of the phantom deformation in mm")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _add_registration_options(demo)

    for name, module, summary in PLUGGABLE:
        if not _available(module):
            continue
        command = sub.add_parser(name, parents=[common], help=summary, description=summary)
        importlib.import_module(module).add_arguments(command)

    cfg = sub.add_parser("config", help="print a preset's parameters as TOML",
                         description="Print the parameters as TOML (edit and pass to --config).")
    cfg.add_argument("--preset", default="default", choices=("default", "paper", "fast"))
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING
    if args.quiet:
        level = logging.ERROR
    elif args.verbose == 1:
        level = logging.INFO
    elif args.verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``samconvex`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__

        print(f"itk-samconvex {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    saved = (list(logger.handlers), logger.level, logger.propagate)
    _configure_logging(args)
    try:
        if args.command == "config":
            from ..solver.config import dumps_toml, preset_config

            sys.stdout.write(dumps_toml(preset_config(args.preset).to_dict()))
            return EXIT_OK
        for name, module, _ in PLUGGABLE:
            if args.command == name:
                return importlib.import_module(module).run(args)
        from .run import run_demo, run_register

        if args.command == "register":
            return run_register(args, _config_from_args(args))
        return run_demo(args, _config_from_args(args))
    except (SAMConvexError, FileExistsError, FileNotFoundError, TypeError) as error:
        print(f"samconvex: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as error:
        print(f"samconvex: error: out of memory ({error}); raise working_spacing_mm or lower "
              "max_working_voxels (--set max_working_voxels=1500000).", file=sys.stderr)
        return EXIT_FAILURE
    finally:  # leave the process's logging as it was (main() is also called in-process)
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def dump_json(data: dict, path: Path) -> None:
    """Write JSON atomically."""
    import os
    import tempfile

    from ..edge.transforms import default_file_mode

    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=".json", delete=False, encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=float)
        handle.write("\n")
    os.chmod(handle.name, default_file_mode())
    os.replace(handle.name, path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
