"""``deepgeom study CONFIG --out DIR``: run a config-driven sweep (resumable) and write tidy tables."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "study",
        help="run a study config (sweep × analyses), resumable; writes tables/*.csv|parquet",
        description="Train every run of a YAML/JSON study config and run its analyses. Finished units are "
        "skipped on a rerun (resume after a crash); --no-resume recomputes everything. "
        "Schema: docs/studies.md.",
    )
    p.add_argument("config", help="study config (.yaml, .yml or .json)")
    p.add_argument("--out", required=True, help="output directory (runs/, tables/, study.json)")
    p.add_argument("--no-resume", action="store_true", help="recompute units already finished in --out")
    p.add_argument("--keep-going", action="store_true", help="record a failing unit and carry on")
    p.add_argument("--report", action="store_true", help="build the HTML report when done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads inside every unit (default: the config's resources.threads, 1)")
    p.add_argument("--executor", choices=["serial", "local", "ray"], default="serial",
                   help="serial: units one after another here (default); local: --workers processes on "
                   "this machine; ray: Ray tasks on the cluster at --address (docs/studies.md)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes for --executor local (default: the CPU count); for ray, at most "
                   "this many units in flight")
    p.add_argument("--address", default=None,
                   help="Ray cluster for --executor ray: 'auto' or HOST:PORT of its head (default: start a "
                   "local Ray instance)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from ..studies import run_study

    res = run_study(
        args.config,
        args.out,
        progress=not args.quiet,
        resume=not args.no_resume,
        on_error="continue" if args.keep_going else "raise",
        threads=args.threads,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
    )
    print(f"study {res.config.name!r}: {res.n_computed} units computed, {res.n_skipped} skipped, "
          f"{len(res.failed)} failed; tables in {res.out_dir / 'tables'}")
    for u in res.failed:
        where = f" (traceback: {u.error_file})" if u.error_file else ""
        print(f"  {u.status}: {u.label}: {u.error}{where}")
    if args.report:
        # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
        from ..report import build_report

        print(f"report: {build_report(args.out)}")
    return 1 if res.failed else 0
