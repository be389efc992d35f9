"""Intrinsic-dimension benchmark: deepgeom TwoNN vs scikit-dimension and DADApy on the same data.

    python bench/bench_id.py [--quick] [--no-large] [--no-100k] [--anchors-large] [--repeat R] [--workdir DIR]

Data: a curved 10-dimensional manifold (random Fourier features of z ~ U[0,1]^10, so the known ID is
10) embedded in D dimensions, written once to a .npy file.  Every method runs in its own fresh
subprocess on that file (same data, same run), so peak memory is measured per method:

* deepgeom ``twonn(X)`` (and its neighbour search ``knn(X, 2)`` alone, for the GFLOP/s figure);
* scikit-dimension ``skdim.id.TwoNN().fit(X)`` (this venv);
* DADApy ``Data(coordinates=X).compute_id_2NN()`` in ``.venv-dadapy`` (it pins numpy<2), with its
  default ``maxk = min(100, N-1)`` neighbours.

The anchors get the float64 array they work in (conversion not timed); deepgeom gets the float32
file. Sizes: N = 10,000 at D = 128 and D = 4,096; N = 5,000 at D = 262,144 streamed from a disk
memmap by deepgeom only (the anchors need the whole float64 array, 10.5 GB; ``--anchors-large``
runs them anyway); and deepgeom's N = 100,000, D = 128 search.

GFLOP/s of the distance computation = N²·D (every unordered pair once, 2D flops each) divided by the
whole ``knn`` time (search, refinement, proof included), compared with a float32 torch matmul of
(2048 × D')·(D' × 2048), D' = min(D, 4096), measured in the same worker just before: ``fraction`` for
the default ``search="auto"`` (bf16 products where the CPU has native bf16, int8 products on other x86 CPUs: it can exceed 1) and
``fraction32`` for ``search="float32"``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    PeakMemory,
    cpu_kind,
    loadavg,
    matmul_gflops,
    print_table,
    rss_anon_mb,
    run_worker,
    timed,
    worker_reply,
)

ROOT = HERE.parent
DADAPY_PY = ROOT / ".venv-dadapy" / "bin" / "python"
TRUE_ID = 10


def make_manifold(path: Path, n: int, d: int, intrinsic: int = TRUE_ID, seed: int = 0) -> np.memmap:
    """A curved ``intrinsic``-dim manifold in ``d`` dims: x = sqrt(2/d)·cos(zW + b), z ~ U[0,1]^m.

    Random Fourier features of a Gaussian kernel with bandwidth 1/2: locally an isometry of the
    cube (up to scale), globally curved through all d dimensions.  Written in row blocks (float32).
    """
    rng = np.random.default_rng(seed)
    W = rng.normal(scale=2.0, size=(intrinsic, d))
    b = rng.uniform(0, 2 * np.pi, size=d)
    z = rng.uniform(size=(n, intrinsic))
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rows = max(1, (64 << 20) // (8 * d))
    for s in range(0, n, rows):
        mm[s : s + rows] = (np.sqrt(2.0 / d) * np.cos(z[s : s + rows] @ W + b)).astype(np.float32)
    mm.flush()
    return mm


# ------------------------------------------------------------------------------------------ workers


def worker_deepgeom(path: str, mmap: bool, knn_only: bool, repeat: int) -> None:
    import torch

    from deepgeom.functional.neighbors import knn

    try:
        from deepgeom.functional.intrinsic_dim import twonn
    except ImportError:  # estimator module not there yet: the Facco fit inline
        twonn = None
    X = np.load(path, mmap_mode="r") if mmap else np.load(path)
    n, d = X.shape
    knn(np.asarray(X[:300]), 2)  # warm up torch (threads, allocator)
    mm = matmul_gflops(2048, min(d, 4096))
    base = rss_anon_mb()
    with PeakMemory() as pk:
        t_knn, nb = timed(lambda: knn(X, 2), repeat)
    out = dict(knn_time=t_knn, n_fallback=nb.n_fallback, matmul_gflops=mm, threads=torch.get_num_threads(),
               base_mb=base, knn_peak_mb=pk.peak_mb, gflops=n * n * d / t_knn / 1e9)
    if not mmap:  # the float32 search alone (search="auto" may use bf16 or int8 products on this CPU)
        t32, _ = timed(lambda: knn(X, 2, search="float32"), repeat)
        out.update(knn32_time=t32, gflops32=n * n * d / t32 / 1e9)
    if not knn_only:
        with PeakMemory() as pt:
            if twonn is not None:
                t_id, res = timed(lambda: twonn(X), repeat)
                est = res.id
            else:
                def inline() -> float:
                    r = knn(X, 2).distances
                    mu = np.sort(r[:, 1] / r[:, 0])
                    m = int(0.9 * len(mu))
                    x, y = np.log(mu[:m]), -np.log1p(-np.arange(1, m + 1) / len(mu))
                    return float(x @ y / (x @ x))
                t_id, est = timed(inline, repeat)
        out.update(time=t_id, id=est, peak_mb=max(pk.peak_mb, pt.peak_mb))
    worker_reply(**out)


def worker_skdim(path: str, repeat: int) -> None:
    import skdim

    X = np.load(path).astype(np.float64)
    base = rss_anon_mb()
    with PeakMemory() as pk:
        t, est = timed(lambda: skdim.id.TwoNN().fit(X).dimension_, repeat)
    worker_reply(time=t, id=float(est), base_mb=base, peak_mb=pk.peak_mb)


def worker_dadapy(path: str, repeat: int) -> None:
    from dadapy import Data

    X = np.load(path).astype(np.float64)
    base = rss_anon_mb()
    with PeakMemory() as pk:
        t, res = timed(lambda: Data(coordinates=X, verbose=False).compute_id_2NN(), repeat)
    worker_reply(time=t, id=float(res[0]), base_mb=base, peak_mb=pk.peak_mb)


# ------------------------------------------------------------------------------------------ parent


def bench_case(path: Path, n: int, d: int, *, mmap: bool, anchors: bool, knn_only: bool = False,
               skip_reason: str = "", repeat: int = 1) -> list[dict]:
    me = [sys.executable, str(Path(__file__).resolve()), "--repeat", str(repeat), "--worker"]
    rows = []
    dg = run_worker(me + ["deepgeom", str(path)] + (["--mmap"] if mmap else []) + (["--knn-only"] if knn_only else []))
    anchor_rows = []
    if anchors:
        anchor_rows.append(("scikit-dimension", run_worker(me + ["skdim", str(path)])))
        if DADAPY_PY.exists():
            anchor_rows.append(("DADApy", run_worker([str(DADAPY_PY)] + me[1:] + ["dadapy", str(path)])))
        else:
            anchor_rows.append(("DADApy", {"error": f"{DADAPY_PY} missing (run scripts/dadapy_venv.sh)"}))
    ok_times = [r["time"] for _, r in anchor_rows if "time" in r]
    fastest = min(ok_times) if ok_times else math.nan
    case = f"N={n:,} D={d:,}" + (" (memmap)" if mmap else "")
    if "error" in dg:
        rows.append(dict(case=case, method="deepgeom", note=dg["error"]))
    else:
        t = dg.get("time", dg["knn_time"])
        rows.append(dict(
            case=case, method="deepgeom twonn" if not knn_only else "deepgeom knn(k=2)", time_s=t,
            knn_s=dg["knn_time"], speedup=fastest / t if ok_times else None, id=dg.get("id"),
            peak_MiB=dg.get("peak_mb", dg["knn_peak_mb"]), knn_peak_MiB=dg["knn_peak_mb"], gflops=dg["gflops"], matmul_gflops=dg["matmul_gflops"],
            fraction=dg["gflops"] / dg["matmul_gflops"],
            knn32_s=dg.get("knn32_time"), fraction32=dg["gflops32"] / dg["matmul_gflops"] if "gflops32" in dg else None,
            note=f"fallback rows {dg['n_fallback']}",
        ))
    for name, r in anchor_rows:
        if "error" in r:
            rows.append(dict(case=case, method=name, note=r["error"]))
        else:
            rows.append(dict(case=case, method=name, time_s=r["time"], id=r["id"], peak_MiB=r["peak_mb"]))
    if not anchors and skip_reason:
        rows.append(dict(case=case, method="anchors", note=skip_reason))
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script works (~1 min)")
    ap.add_argument("--no-large", action="store_true", help="skip the D=262,144 memmap case")
    ap.add_argument("--no-100k", action="store_true", help="skip the N=100,000 search")
    ap.add_argument("--anchors-large", action="store_true", help="run the anchors on the large case too")
    ap.add_argument("--workdir", default=None, help="where the data files go (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs per method (N=10,000 cases)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--mmap", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--knn-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        kind, path = a.worker
        if kind == "deepgeom":
            worker_deepgeom(path, a.mmap, a.knn_only, a.repeat)
        elif kind == "skdim":
            worker_skdim(path, a.repeat)
        else:
            worker_dadapy(path, a.repeat)
        return 0

    import torch

    print(f"# bench_id  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  {cpu_kind()}  torch "
          f"{torch.__version__} threads={torch.get_num_threads()}  loadavg {loadavg()}", flush=True)
    small = [(2000, 128), (2000, 1024)] if a.quick else [(10_000, 128), (10_000, 4096)]
    large = (1000, 16_384) if a.quick else (5000, 262_144)
    big_n = (20_000, 64) if a.quick else (100_000, 128)
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="bench_id_"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        for n, d in small:
            p = work / f"manifold_{n}x{d}.npy"
            make_manifold(p, n, d)
            rows += bench_case(p, n, d, mmap=False, anchors=True, repeat=a.repeat)
            print(f"  done N={n} D={d}  loadavg {loadavg()}", flush=True)
        if not a.no_large:
            n, d = large
            p = work / f"manifold_{n}x{d}.npy"
            make_manifold(p, n, d)
            gb = n * d * 8 / 1e9
            rows += bench_case(p, n, d, mmap=True, anchors=a.anchors_large,
                               skip_reason=f"not run: they load the whole array as float64 ({gb:.1f} GB); "
                                           "pass --anchors-large to run them")
            p.unlink()
            print(f"  done N={n} D={d}  loadavg {loadavg()}", flush=True)
        if not a.no_100k:
            n, d = big_n
            p = work / f"manifold_{n}x{d}.npy"
            make_manifold(p, n, d)
            rows += bench_case(p, n, d, mmap=False, anchors=False)
            print(f"  done N={n} D={d}  loadavg {loadavg()}", flush=True)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, ["case", "method", "time_s", "knn_s", "speedup", "id", "peak_MiB", "knn_peak_MiB", "gflops",
                       "matmul_gflops", "fraction", "knn32_s", "fraction32", "note"],
                title=f"TwoNN (true ID {TRUE_ID}) on {cpu_kind()}; speedup = fastest anchor time / deepgeom "
                      f"time; loadavg at end {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
