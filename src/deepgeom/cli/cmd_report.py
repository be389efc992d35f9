"""``deepgeom report DIR``: build the static HTML report of a finished study directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="build the HTML report (index.html + PNG/SVG figures) of a study directory",
        description="Read a study directory written by `deepgeom study`/`deepgeom demo` and write "
        "DIR/report/index.html with its figures next to it.",
    )
    p.add_argument("study_dir", help="a study output directory (holds study.json and tables/)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..errors import InputError
    from ..report import build_report

    meta = Path(args.study_dir) / "study.json"
    if meta.is_file():
        try:
            json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise InputError(f"{meta} is not valid JSON ({exc}); rerun `deepgeom study` to rewrite it") from exc

    print(build_report(args.study_dir))
    return 0
