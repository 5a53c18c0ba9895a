"""Command line: ``samconvex register | demo | batch | evaluate | export | train-sam | config``.

One module per command, each with ``add_arguments(parser)`` and ``run(args) -> exit code``
and only standard-library imports at its top, so building the parser (``--help``) and
reporting argument or path errors take a fraction of a second. Every command is
``main(argv) -> exit code`` so it can be tested in-process. Bad input exits with code 2 and
a one-line message naming the input, the problem and the fix; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_verbosity, report_error

logger = logging.getLogger("itk_samconvex")

#: (command, module, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("register", "register", "register MOVING to FIXED and write the outputs"),
    ("demo", "demo", "register a synthetic CT-like pair with a known deformation"),
    ("batch", "batch", "register many pairs from a manifest on Dask (resumable)"),
    ("evaluate", "evaluate", "score a registration: Dice, HD95, TRE, SDlogJ, folding"),
    ("export", "export", "export the solver as an AOTInductor package for the C++ filter"),
    ("train-sam", "train_sam", "train the SAM embedding self-supervised on CT images"),
    ("config", "config", "print a preset's parameters as TOML"),
)


def _module(name: str):
    return importlib.import_module(f".{name}", __name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samconvex",
        description=(
            "SAMConvex CT deformable registration for ITK. Transforms map fixed physical "
            "points to moving physical points (LPS mm), so warped(x) = moving(T(x))."
        ),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    add_verbosity(parser, argparse.SUPPRESS)
    parser.set_defaults(quiet=False, verbose=0)
    common = argparse.ArgumentParser(add_help=False)
    add_verbosity(common, argparse.SUPPRESS)  # also accepted after the command
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, summary in COMMANDS:
        command = sub.add_parser(name, parents=[common], help=summary, description=summary)
        _module(module).add_arguments(command)
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


#: Commands whose process ends with ``os._exit`` once its outputs are written: the normal
#: interpreter teardown (torch, ITK and numpy objects freed one by one) costs about 0.7 s of
#: a 13 s ``samconvex register`` on a 2-core machine. Commands that start worker processes
#: (``batch``) keep the normal exit, whose atexit handlers stop them.
FAST_EXIT_COMMANDS = frozenset({"register", "demo"})


def console_main() -> None:
    """The ``samconvex`` executable: :func:`main`, then the process exit."""
    argv = sys.argv[1:]
    code = main(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in FAST_EXIT_COMMANDS:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``samconvex`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ..version import __version__

        print(f"itk-samconvex {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    saved = (list(logger.handlers), logger.level, logger.propagate)
    _configure_logging(args)
    module = next(m for name, m, _ in COMMANDS if name == args.command)
    from ..errors import SAMConvexError

    try:
        return _module(module).run(args)
    except (
        SAMConvexError,
        FileExistsError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        TypeError,
    ) as error:
        report_error(error)
        return EXIT_USAGE
    except MemoryError as error:
        report_error(
            MemoryError(
                f"out of memory ({error}); raise working_spacing_mm or lower max_working_voxels "
                "(--set max_working_voxels=1500000)."
            )
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("samconvex: interrupted", file=sys.stderr)
        return 130
    finally:  # leave the process's logging as it was (main() is also called in-process)
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


__all__ = ["COMMANDS", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
