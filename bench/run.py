"""Run every benchmark in one command: ``make bench`` (or ``python bench/run.py [--quick]``).

Each ``bench/bench_*.py`` times deepgeom against its anchors *in the same run* and prints ratios, so
the numbers stay comparable whatever the machine's load; this script only runs them in turn.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(p for p in here.glob("bench_*.py"))
    only = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    failed = []
    for script in scripts:
        if only and not any(o in script.stem for o in only):
            continue
        print(f"\n=== {script.name} {' '.join(flags)} ===", flush=True)
        rc = subprocess.call([sys.executable, str(script), *flags])
        if rc:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
