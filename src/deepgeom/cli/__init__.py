"""The ``deepgeom`` command line: it only parses arguments and calls library functions.

Each subcommand lives in its own module ``deepgeom.cli.cmd_<name>`` exposing
``register(subparsers)``; they are discovered here, so adding a command touches no shared file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import pkgutil
import sys
import zipfile

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


def _normalize(argv: list[str]) -> list[str]:
    """Let a subcommand module rewrite its own arguments before parsing (``normalize_argv(rest)``),
    e.g. to keep an old spelling working; only the chosen subcommand's module is consulted."""
    i = next((k for k, a in enumerate(argv) if not a.startswith("-")), None)
    if i is None or not argv[i].isidentifier():
        return argv
    try:
        mod = importlib.import_module(f"{__name__}.cmd_{argv[i]}")
    except ImportError:
        return argv
    fix = getattr(mod, "normalize_argv", None)
    return argv if fix is None else [*argv[: i + 1], *fix(argv[i + 1:])]


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand's ``func(args)``."""
    argv = _normalize(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepgeomError as exc:
        print(f"deepgeom {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`deepgeom ... | head`): not an error of ours, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"deepgeom {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # The safety net: the loaders turn broken inputs into InputError, but a failure they did not
        # foresee is still one line, never a traceback (DEEPGEOM_TRACEBACK=1 shows it). Reading and
        # decoding errors are the input's fault (status 2); anything else is reported as internal (1).
        if os.environ.get("DEEPGEOM_TRACEBACK"):
            raise
        inputs = isinstance(exc, _INPUT_FAILURES)
        what = "error" if inputs else "internal error"
        print(f"deepgeom {args.command}: {what}: {type(exc).__name__}: {_one_line(exc)}"
              + ("" if inputs else " (set DEEPGEOM_TRACEBACK=1 for the traceback and report it)"), file=sys.stderr)
        return 2 if inputs else 1


def _input_failures() -> tuple[type[BaseException], ...]:
    return (OSError, EOFError, ValueError, UnicodeError, KeyError, IndexError, pickle.UnpicklingError,
            zipfile.BadZipFile, json.JSONDecodeError)


_INPUT_FAILURES = _input_failures()


def _one_line(exc: BaseException) -> str:
    """The message on one line: multi-line messages (torch's, PyYAML's) joined."""
    return " ".join(str(exc).split()) or type(exc).__name__
