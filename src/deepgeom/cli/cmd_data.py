"""``deepgeom data list`` / ``deepgeom data info NAME``: what datasets exist and what one holds."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from .._io import atomic_write_text
from ..errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="list the offline datasets, or describe one (sizes, shapes, classes, options)",
        description="List the datasets deepgeom.data.load accepts, or load one and print its sizes, input "
        "shape, class counts and options. NAME may also be a .npy/.npz/.pt/.safetensors file.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list dataset names with a one-line description",
                        description="List dataset names, their description and options with defaults.")
    ls.add_argument("--json", action="store_true", help="print JSON instead of text")
    ls.set_defaults(func=_list)
    info = sub.add_parser("info", help="load one dataset and describe it",
                          description="Load NAME (with --option KEY=VALUE options) and print its summary.")
    info.add_argument("name", help="dataset name (see `deepgeom data list`) or a data file path")
    info.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    info.add_argument("--shuffle-fraction", type=float, default=0.0,
                      help="share of training labels to shuffle, in [0, 1] (default 0)")
    info.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                      help="a dataset option, e.g. -o n_train=500 or -o d=3 (repeatable)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)


def _parse_options(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option must look like KEY=VALUE; got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


#: ``[describe(name) for name in available()]`` written out, so that ``data list`` answers without
#: importing torch; ``tests/test_cli_fast.py`` checks it against the live registry.
CATALOGUE = Path(__file__).with_name("datasets.json")


def catalogue() -> list[dict]:
    """The built-in datasets as :func:`deepgeom.data.describe` gives them (read from ``datasets.json``)."""
    return json.loads(CATALOGUE.read_text())


def write_catalogue() -> Path:
    """Regenerate ``datasets.json`` from the live registry (after adding or changing a dataset)."""
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..data import available, describe

    atomic_write_text(CATALOGUE, json.dumps([describe(n) for n in available()], indent=2, ensure_ascii=False) + "\n")
    return CATALOGUE


def _list(args: argparse.Namespace) -> int:
    rows = catalogue()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            opts = ", ".join(f"{k}={v!r}" for k, v in r["options"].items())
            print(f"{r['name']:<16} {r['description']}\n{'':<16} options: {opts or '(none)'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..data import load

    ds = load(args.name, seed=args.seed, shuffle_fraction=args.shuffle_fraction, **_parse_options(args.option))
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:<20} {v}")
    return 0
