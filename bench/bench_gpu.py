"""GPU figures: deepgeom on CUDA against deepgeom on the same machine's CPU threads and the anchors.

    python bench/bench_gpu.py [--quick] [--no-large] [--out DIR]

Runs only where ``torch.cuda.is_available()``; the tests never need it. Same data, same run:

* ceilings: float32 matmul on the GPU (TF32 off, as deepgeom's exact search requires), float64
  matmul, and the float32 matmul of the host CPU threads;
* TwoNN at N = 10,000, D = 128 and D = 4,096 (the curved 10-dim manifold of ``bench_id.py``):
  deepgeom ``twonn(X, device=DEV)`` and ``knn`` on CUDA, deepgeom on the CPU (all threads), and
  scikit-dimension's ``TwoNN`` (float64, CPU) where it is installed; estimates and the largest
  neighbour-distance difference between CUDA and CPU are printed;
* the N = 100,000, D = 128 search, and N = 5,000, D = 262,144 streamed from a disk memmap on CUDA;
* the all-pairs minibatch CKA heatmap of the 23 × 21-layer model pair of ``bench_cka.py`` at
  N = 10,000: deepgeom on CUDA and on the CPU, torch-cka on CUDA where it is installed.

GPU times are wall-clock after a warm-up, with the results back on the host (so synchronised),
best of 3. GPU memory = ``torch.cuda.max_memory_allocated`` over the call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import PeakMemory, print_table  # noqa: E402
from bench_cka import BATCH, data, models, run_torch_cka  # noqa: E402
from bench_id import make_manifold  # noqa: E402

DEV = "cuda"  #: ``--device cpu`` runs the same script on the CPU, to check it without a GPU


def best_of(fn, repeat: int = 3):
    """(best wall seconds, last result) after one untimed warm-up call."""
    import torch

    out = fn()
    times = []
    for _ in range(repeat):
        if DEV == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if DEV == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times), out


def gpu_peak_mib(fn) -> float:
    import torch

    if DEV != "cuda":
        return float("nan")
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def ceilings() -> dict:
    import torch

    def rate(dev: str, dtype, n: int, reps: int) -> float:
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        t, _ = best_of(lambda: [a @ b for _ in range(reps)], 3)
        return 2 * n**3 * reps / t / 1e9

    torch.backends.cuda.matmul.allow_tf32 = False
    return {
        "gpu": torch.cuda.get_device_name(0) if DEV == "cuda" else "none (--device cpu)",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "gpu_fp32_gflops": rate(DEV, torch.float32, 8192 if DEV == "cuda" else 1024, 10),
        "gpu_fp64_gflops": rate(DEV, torch.float64, 8192 if DEV == "cuda" else 1024, 5),
        "cpu_fp32_gflops": rate("cpu", torch.float32, 2048, 3),
    }


def bench_id(work: Path, quick: bool) -> list[dict]:
    import torch

    import deepgeom
    from deepgeom.functional.neighbors import knn

    try:
        import skdim
    except ImportError:
        skdim = None
    rows = []
    n = 3000 if quick else 10_000
    for d in (128, 4096):
        X = np.load(make_manifold(work / f"m{d}.npy", n, d).filename)
        flops = n * n * d  # each unordered pair once, 2·D flops
        t_knn, nb_gpu = best_of(lambda X=X: knn(X, 2, device=DEV))
        t_gpu, r_gpu = best_of(lambda X=X: deepgeom.twonn(X, device=DEV))
        mem = gpu_peak_mib(lambda X=X: deepgeom.twonn(X, device=DEV))
        t_cpu, r_cpu = best_of(lambda X=X: deepgeom.twonn(X), 2)
        nb_cpu = knn(X, 2)
        diff = float(np.max(np.abs(nb_gpu.distances - nb_cpu.distances) / nb_cpu.distances))
        same_idx = bool((nb_gpu.indices == nb_cpu.indices).all())
        case = f"N={n:,} D={d:,}"
        rows.append(dict(case=case, method="deepgeom twonn cuda", time_s=t_gpu, knn_s=t_knn, id=r_gpu.id,
                         gflops=flops / t_knn / 1e9, gpu_MiB=mem, note=f"max rel dist diff vs CPU {diff:.1e}; "
                         f"indices equal {same_idx}; fallback {nb_gpu.n_fallback}"))
        rows.append(dict(case=case, method=f"deepgeom twonn cpu ({torch.get_num_threads()} thr)", time_s=t_cpu,
                         id=r_cpu.id, speedup=t_cpu / t_gpu))
        if skdim is not None:
            X64 = X.astype(np.float64)
            t_sk, est = best_of(lambda X64=X64: skdim.id.TwoNN().fit(X64).dimension_, 1)
            rows.append(dict(case=case, method="scikit-dimension (cpu)", time_s=t_sk, id=float(est),
                             speedup=t_sk / t_gpu))
        print(f"  done {case}", flush=True)
    if not quick:
        X = np.load(make_manifold(work / "m128_100k.npy", 100_000, 128).filename)
        t, nb = best_of(lambda: knn(X, 2, device=DEV), 2)
        mem = gpu_peak_mib(lambda: knn(X, 2, device=DEV))
        rows.append(dict(case="N=100,000 D=128", method="deepgeom knn(k=2) cuda", time_s=t,
                         gflops=1e10 * 128 / t / 1e9, gpu_MiB=mem, note=f"fallback {nb.n_fallback}"))
        print("  done N=100,000", flush=True)
    return rows


def bench_large(work: Path, quick: bool) -> list[dict]:
    import deepgeom

    rows = []
    n_l, d_l = (1000, 65536) if quick else (5000, 262_144)
    path = work / "large.npy"
    make_manifold(path, n_l, d_l)
    mm = np.load(path, mmap_mode="r")
    t0 = time.perf_counter()
    with PeakMemory() as pk:
        r = deepgeom.twonn(mm, device=DEV)
    t = time.perf_counter() - t0
    rows.append(dict(case=f"N={n_l:,} D={d_l:,} (memmap)", method="deepgeom twonn cuda", time_s=t, id=r.id,
                     gflops=n_l * n_l * d_l / t / 1e9, note=f"streamed over feature blocks, one run; host peak {pk.peak_mb:.0f} MiB"))
    print("  done large", flush=True)
    return rows


def bench_cka(quick: bool) -> list[dict]:
    import torch

    from deepgeom.analysis.similarity import cka_matrix

    a, b, la, lb = models(scale=True, act="relu")
    x = data(2048 if quick else 10_000)

    def ours(dev: str):
        aa, bb = a.to(dev), b.to(dev)
        return np.asarray(cka_matrix(aa, bb, x, layers_a=la, layers_b=lb, batch_size=BATCH, device=dev,
                                     progress=False).matrix)

    rows = []
    t_gpu, M_gpu = best_of(lambda: ours(DEV))
    mem = gpu_peak_mib(lambda: ours(DEV))
    t_cpu, M_cpu = best_of(lambda: ours("cpu"), 1)
    case = f"{len(la)}x{len(lb)} layers N={x.shape[0]:,}"
    rows.append(dict(case=case, method="deepgeom cka_matrix cuda", time_s=t_gpu, gpu_MiB=mem,
                     note=f"max |diff| vs CPU {np.abs(M_gpu - M_cpu).max():.1e}"))
    rows.append(dict(case=case, method=f"deepgeom cka_matrix cpu ({torch.get_num_threads()} thr)", time_s=t_cpu,
                     speedup=t_cpu / t_gpu))
    try:
        import torch_cka
    except ImportError:
        torch_cka = None
    if torch_cka is not None:
        import torch_cka.cka as tc

        orig = tc.CKA.__init__

        def on_cuda(self, *args, **kw):  # same comparison as bench_cka.py, on the GPU
            kw["device"] = DEV
            orig(self, *args, **kw)

        tc.CKA.__init__ = on_cuda
        try:
            a.to(DEV), b.to(DEV)
            t_tc, M_tc = best_of(lambda: run_torch_cka(a, b, la, lb, x), 1)
        finally:
            tc.CKA.__init__ = orig
        finite = np.isfinite(M_tc)
        rows.append(dict(case=case, method="torch-cka cuda", time_s=t_tc, speedup=t_tc / t_gpu,
                         note=f"max |diff| vs deepgeom {np.abs(M_tc - M_cpu)[finite].max():.1e}; NaN {(~finite).sum()}"))
    print("  done CKA", flush=True)
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    ap.add_argument("--no-large", action="store_true", help="skip the D=262,144 memmap case")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="write gpu.json here (default $OUT)")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    info = ceilings()
    print(json.dumps(info), flush=True)
    cols = ["case", "method", "time_s", "knn_s", "speedup", "id", "gflops", "gpu_MiB", "note"]
    rows: list[dict] = []

    def report() -> None:  # after each part, so a run cut short still leaves its numbers
        print_table(rows, cols)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "gpu.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_id(Path(tmp), args.quick)
        rows += bench_cka(args.quick)
        report()
        if not args.no_large:
            rows += bench_large(Path(tmp), args.quick)
            report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
