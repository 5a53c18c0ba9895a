"""What every ``samconvex`` command shares: options, config, exit codes, timings.

Light by design: this module and every command module import only the standard library at
their top, so ``samconvex --help``, argument errors and missing-file errors answer before
torch and ITK are loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PRESET_CHOICES = ("default", "paper", "fast", "lung")
FEATURE_CHOICES = ("mind", "sam", "sam+mind")


def process_seconds() -> float:
    """Seconds since this process started (interpreter start-up included, from /proc);
    falls back to the time since this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def command_timings() -> Any:
    """A :class:`~itk_samconvex.apps.timings.Timings` that started with the process, with the
    start-up so far recorded as ``startup``."""
    from ..apps.timings import Timings

    elapsed = process_seconds()
    timings = Timings(start=time.perf_counter() - elapsed)
    timings.steps["startup"] = round(elapsed, 3)
    return timings


def prepare_one_shot_process() -> None:
    """Process-wide settings for a single-pair command whose process ends with the command
    (``register``, ``demo``); the library (``itk.samconvex_registration``) never does this.

    * :func:`keep_freed_memory`;
    * ITK's NumPy bridge is kept from importing Dask's ``distributed``. When the bridge
      loads, it registers Dask serializers for its array views if ``distributed.protocol``
      imports, which costs about 0.4 s on a 2-core machine. Marking the module as absent
      (``None`` in ``sys.modules``: importing it raises ``ImportError``, which ITK expects)
      skips that. A process that has already imported ``distributed`` is left as it is.
    """
    keep_freed_memory()
    if "distributed" not in sys.modules:
        sys.modules.setdefault("distributed.protocol", None)


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of handing them back to the kernel.

    By default every block above 32 MB (a few feature maps of a CT pair) is a fresh ``mmap``
    that is unmapped when freed, so each solver step page-faults (and zeroes) its buffers
    anew: 0.7 s of an 8.3 s ``samconvex register`` on a 2-core machine (system time 2.0 s
    -> 0.6 s). With ``mmap`` off and the heap never trimmed, freed buffers are reused; the
    peak resident memory grows by about 5 %. Returns whether the setting took (glibc only; other
    C libraries are left as they are). ``SAMCONVEX_KEEP_FREED_MEMORY=0`` turns it off.
    """
    if os.environ.get("SAMCONVEX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, ValueError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def parse_value(text: str) -> Any:
    """Parse ``--set`` values (see :func:`~itk_samconvex.solver.config.parse_toml_value`)."""
    from ..solver.config import parse_toml_value

    return parse_toml_value(text)


def parse_assignments(
    items: list[str], option: str, form: str, example: str, error: type[Exception]
) -> dict[str, Any]:
    """``NAME=VALUE`` command-line items as a dict (values parsed by :func:`parse_value`)."""
    parsed: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise error(f"{option} {item!r} must look like {form} (e.g. {example}).")
        name, value = item.split("=", 1)
        parsed[name.strip()] = parse_value(value.strip())
    return parsed


def add_verbosity(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress bar, no logs"
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=default, help="log more (-v info, -vv debug)"
    )


def add_registration_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the registration parameters (same in every command)."""
    group = parser.add_argument_group("registration")
    group.add_argument(
        "--preset",
        default="default",
        choices=PRESET_CHOICES,
        help="parameter preset (default: %(default)s)",
    )
    group.add_argument(
        "--config",
        metavar="TOML",
        help="parameter file (see `samconvex config`); replaces --preset",
    )
    group.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="override one parameter, e.g. --set io_iterations=30 (repeatable)",
    )
    group.add_argument(
        "--features", choices=FEATURE_CHOICES, help="feature backend (default: the preset's)"
    )
    group.add_argument(
        "--no-instance-optimization",
        action="store_true",
        help="skip the Adam refinement after the discrete stage",
    )
    group.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: every core this process may use)",
    )
    group.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    group.add_argument(
        "--no-ct-check",
        action="store_true",
        help="register images that do not look like CT in HU (a label map, "
        "a normalised volume); refused by default",
    )


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`SAMConvexConfig` the registration options ask for."""
    from ..errors import InputError
    from ..solver.config import build_config

    overrides = parse_assignments(args.set, "--set", "NAME=VALUE", "io_iterations=30", InputError)
    if args.features:
        overrides["features"] = args.features
    if args.no_instance_optimization:
        overrides["instance_optimization"] = False
    if args.device:
        overrides["device"] = args.device
    if args.seed is not None:
        overrides["seed"] = args.seed
    if getattr(args, "threads", None):
        overrides["num_threads"] = args.threads
    if getattr(args, "no_ct_check", False):
        overrides["ct_check"] = False
    return build_config(args.preset, args.config, **overrides)


def check_inputs_exist(
    items: Iterable[tuple[str, str | None]],
    *,
    folders: tuple[str, ...] = ("fixed image", "moving image"),
) -> None:
    """FileNotFoundError for the first missing input (before anything heavy is imported).

    ``items`` are ``(what, path)``; a folder is accepted only for the kinds in ``folders``
    (a DICOM series).
    """
    from ..errors import InputError

    for what, path in items:
        if path is None:
            continue
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
        if p.is_dir() and what not in folders:
            raise InputError(f"{what} {path} is a folder; pass a file.")


def report_error(error: BaseException) -> None:
    """Print a one-line error for the user (no traceback)."""
    message = " ".join(str(error).split()) if "\n" not in str(error).strip() else str(error)
    print(f"samconvex: error: {message}", file=sys.stderr)


__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "FEATURE_CHOICES",
    "PRESET_CHOICES",
    "add_registration_options",
    "add_verbosity",
    "check_inputs_exist",
    "command_timings",
    "config_from_args",
    "parse_assignments",
    "parse_value",
    "process_seconds",
    "report_error",
]
