"""``deepgeom demo --out DIR [--quick]``: the main job — train small models on bundled data, run the three
papers' analyses (ID profiles, CKA, feature-kernel spectra) and write the HTML report."""

from __future__ import annotations

import argparse
import time

from .cmd_report import report_and_status


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the packaged demo study on offline data and build its HTML report",
        description="Runs the packaged demo study (deepgeom/studies/demo.yaml; configs/demo.yaml is a copy) "
        "on bundled offline data, then builds DIR/report/index.html. Resumable: rerun to finish an "
        "interrupted demo.",
    )
    p.add_argument("--out", default="results/demo", help="output directory (default results/demo)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster study (smoke test)")
    p.add_argument("--no-resume", action="store_true", help="recompute everything")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the demo's small models train fastest on one)")
    p.add_argument("--executor", choices=["serial", "local", "ray"], default="serial",
                   help="where units run (see `deepgeom study --help`); default serial")
    p.add_argument("--workers", type=int, default=None, help="worker processes for --executor local")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..studies import default_config_path, run_study

    t0 = time.perf_counter()
    res = run_study(default_config_path(args.quick), args.out, progress=not args.quiet,
                    resume=not args.no_resume, threads=args.threads, executor=args.executor, workers=args.workers)
    print(f"demo study: {res.n_computed} units computed, {res.n_skipped} reused, "
          f"{time.perf_counter() - t0:.0f} s")
    path, status = report_and_status(args.out, progress=not args.quiet)
    print(f"report: {path}")
    return status
