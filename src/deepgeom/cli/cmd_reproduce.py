"""``deepgeom reproduce PAPER --out DIR [--quick]``: run a paper's bundled studies and judge its claims."""

from __future__ import annotations

import argparse
from pathlib import Path

PAPERS = ("ansuini2019", "nam2024", "nguyen2021")  # kept in step with deepgeom/reproduce/specs/*.yaml (a test checks)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce a paper's findings: pre-registered claims, computed verdicts, report",
        description="Run the bundled study configs of a paper (resumable), judge each pre-registered claim "
        "from its 95%% interval (holds / fails / inconclusive) and write DIR/claims.csv|parquet, "
        "DIR/report/index.html and DIR/REPRODUCTION.md. --quick runs tiny settings that test the "
        "machinery in a few minutes; its verdicts are not a reproduction.",
    )
    p.add_argument("paper", choices=[*PAPERS, "all"], help="which paper ('all': every bundled one)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="tiny settings (machinery check, ~2 minutes)")
    p.add_argument("--workers", type=int, default=2, help="studies run side by side (default 2)")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also splice this run's sections into FILE (e.g. the repository's REPRODUCTION.md)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where trainings run (auto: the GPU when torch sees one); use separate --out folders")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..reproduce import reproduce
    from ..reproduce.report import splice_markdown

    claims = reproduce(args.paper, args.out, quick=args.quick, workers=args.workers, progress=not args.quiet,
                       device=args.device)
    for r in claims.itertuples():
        print(f"{r.claim_id:>4}  {r.verdict:<12}  {r.measured:9.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}] n={r.n}  {r.claim}")
    out = Path(args.out)
    print(f"claims: {out / 'claims.csv'}\nreport: {out / 'report' / 'index.html'}")
    if args.markdown:
        print(f"updated: {splice_markdown(Path(args.markdown), out)}")
    return 0
