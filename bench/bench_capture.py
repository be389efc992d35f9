"""Capture a layer far larger than the memory budget: peak RSS and time (issue 2, point 5).

The full case is the issue's: a (5,000 × 262,144) float32 layer, 5.2 GB, captured with a 256 MB budget,
so it streams to an ``.npy`` on disk. Each case runs in a fresh subprocess so ``ru_maxrss`` is its own;
the anchor in the same run is the naive route — one forward pass per batch, ``torch.cat`` of the
outputs, ``np.save`` — whose peak is the whole array (run only where it fits: ``--quick`` or
``--naive``). Prints one line per case and the ratios.

    python bench/bench_capture.py            # 5000 × 262144 (writes 5.2 GB under bench/out/)
    python bench/bench_capture.py --quick    # 2000 × 65536 (524 MB), with the naive anchor
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, torch
    from torch import nn
    mode, n, d, out, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, d))
    x = torch.randn(n, 16)
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    with torch.no_grad():
        model(x[:2])
    before = rss()
    t = time.perf_counter()
    if mode == "deepgeom":
        from deepgeom.capture import capture
        cap = capture(model, x, "0", batch_size=128, memory_budget=budget, spill_dir=out, progress=False)
        cap.save(out)
        spilled = "0" in cap.spilled
    else:
        with torch.no_grad():
            a = torch.cat([model(x[i:i + 128]) for i in range(0, n, 128)]).numpy()
        np.save(out + "/naive.npy", a)
        spilled = False
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "seconds": secs, "peak_increase": peak - before, "spilled": spilled}))
""")


def run_case(mode: str, n: int, d: int, out: Path, budget: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(n), str(d), str(out), budget],
                         capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(f"{mode} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2000 × 65536 instead of 5000 × 262144")
    ap.add_argument("--naive", action="store_true", help="also run the naive in-RAM anchor at full size")
    ap.add_argument("--budget", default="256MB", help="memory budget (default 256MB)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "capture"))
    args = ap.parse_args(argv)
    n, d = (2000, 65536) if args.quick else (5000, 262144)
    size = n * d * 4
    out = Path(args.out)
    print(f"layer {n} × {d} float32 = {size / 1e9:.2f} GB, budget {args.budget}")
    try:
        r = run_case("deepgeom", n, d, out / "deepgeom", args.budget)
        print(f"deepgeom.capture: {r['seconds']:.1f} s, {size / 1e6 / r['seconds']:.0f} MB/s, peak RSS increase "
              f"{r['peak_increase'] / 1e6:.0f} MB = {r['peak_increase'] / size:.1%} of the layer, "
              f"spilled={r['spilled']}")
        if args.quick or args.naive:
            a = run_case("naive", n, d, out / "naive", args.budget)
            print(f"naive cat+np.save: {a['seconds']:.1f} s, peak RSS increase {a['peak_increase'] / 1e6:.0f} MB "
                  f"= {a['peak_increase'] / size:.1%} of the layer")
            print(f"ratios deepgeom/naive: time {r['seconds'] / a['seconds']:.2f}, "
                  f"peak RSS {r['peak_increase'] / a['peak_increase']:.2f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
