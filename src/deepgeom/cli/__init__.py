"""The ``deepgeom`` command line: it only parses arguments and calls library functions.

Each subcommand lives in its own module ``deepgeom.cli.cmd_<name>`` exposing
``register(subparsers)``; they are discovered here, so adding a command touches no shared file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import DeepgeomError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepgeom",
        description="Measure the geometry of neural-network representations, layer by layer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand's ``func(args)``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepgeomError as exc:
        print(f"deepgeom {args.command}: error: {exc}", file=sys.stderr)
        return 2
