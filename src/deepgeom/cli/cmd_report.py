"""``deepgeom report DIR``: build the static HTML report of a finished study directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="build the HTML report (index.html + PNG figures) of a study directory",
        description="Read a study directory written by `deepgeom study`/`deepgeom demo` and write "
        "OUT/index.html (default DIR/report) with its figures next to it. Prints the page's path; "
        "progress goes to stderr. Exits 1, after writing the page and listing them, when a section or "
        "figure failed.",
    )
    p.add_argument("study_dir", help="a study output directory (holds study.json and tables/)")
    p.add_argument("--out", metavar="DIR", help="where index.html and figures/ go (default STUDY_DIR/report)")
    p.add_argument("--svg", action="store_true", help="also write an SVG copy of every figure (slower)")
    p.add_argument("--jobs", type=int, default=None,
                   help="processes drawing figures (default: the CPUs available, at most 8)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_run)


def report_and_status(study_dir, out=None, *, svg: bool = False, jobs: int | None = None,
                      progress: bool = True) -> tuple[str, int]:
    """Build the report; returns (index path, exit status) after printing any failures to stderr."""
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..report.builder import build_report_details

    res = build_report_details(study_dir, out, progress=progress, jobs=jobs, svg=svg)
    if progress:
        print(f"report: {res.n_figures} figures in {res.seconds:.1f} s", file=sys.stderr)
    if res.problems:
        print(f"deepgeom report: {len(res.problems)} part(s) of the report failed (the page was written "
              "and says which):", file=sys.stderr)
        for p in res.problems:
            print(f"  {p}", file=sys.stderr)
        return str(res.index), 1
    return str(res.index), 0


def _run(args: argparse.Namespace) -> int:
    meta = Path(args.study_dir) / "study.json"
    if meta.is_file():
        try:
            json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise InputError(f"{meta} is not valid JSON ({exc}); rerun `deepgeom study` to rewrite it") from exc
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be >= 1; got {args.jobs}")
    path, status = report_and_status(args.study_dir, args.out, svg=args.svg, jobs=args.jobs,
                                     progress=not args.quiet)
    print(path)
    return status
