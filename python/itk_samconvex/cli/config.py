"""``samconvex config``: print a preset's parameters as TOML (edit it, pass it to --config)."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, PRESET_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the parameters as TOML (edit and pass to --config)."
    parser.add_argument("--preset", default="default", choices=PRESET_CHOICES)


def run(args: argparse.Namespace) -> int:
    from ..solver.config import preset_config

    sys.stdout.write(preset_config(args.preset).to_toml())
    return EXIT_OK


__all__ = ["add_arguments", "run"]
