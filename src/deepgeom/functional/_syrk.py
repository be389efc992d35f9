r"""Symmetric products :math:`AA^\top` at half the flops (BLAS ``?syrk``), from the MKL inside torch.

torch has no ``syrk``: ``A @ A.T`` pays for both triangles. Its x86 CPU builds link Intel MKL, whose
BLAS entry points ``mkl_blas_ssyrk``/``mkl_blas_dsyrk`` (the Fortran ``?syrk`` interface) the library
exports; they are called here through ctypes on the tensors' memory. Nothing else is loaded: no
second BLAS with its own thread pool beside torch's (scipy's OpenBLAS ``ssyrk`` was measured and
rejected for that). Where the symbols are missing (ARM, macOS, other BLAS builds), a first call's
self-check fails, or ``DEEPGEOM_NO_SYRK=1`` is set, :func:`syrk_available` is False and callers
use full products.

With several CPU threads, :func:`run_per_thread` spreads per-layer work (one product per layer) over
the calling thread and a small pool, each with its OpenMP team cut to one thread: at a minibatch's size (n = 256
rows) MKL's multi-threaded ``syrk`` is barely faster than one thread (0.48 against 0.53 ms at
256 × 512), while two layers at once each on their own core nearly halve the time
(bench/BENCHMARKS_cka.md).
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

__all__ = ["syrk_available", "syrk_lower", "run_per_thread"]

_lock = threading.Lock()
_bound: dict[str, Any] | None = None  # set once, whole (threads read it without the lock)
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _library() -> ctypes.CDLL | None:
    """torch's CPU library (which carries MKL), or None."""
    if os.environ.get("DEEPGEOM_NO_SYRK") or not torch.backends.mkl.is_available():
        return None
    libdir = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        if (libdir / name).exists():
            try:
                return ctypes.CDLL(str(libdir / name))
            except OSError:
                return None
    return None


def _bind() -> dict[str, Any]:
    """Resolve the entry points once and check them on a small product (a wrong binding gives wrong
    numbers there, and the pure-torch route is used instead)."""
    global _bound
    if _bound is not None:  # no lock on the hot path (workers call this per layer)
        return _bound
    with _lock:
        if _bound is not None:
            return _bound
        lib = _library()
        fns = {}
        for dtype, sym in ((torch.float32, "mkl_blas_ssyrk"), (torch.float64, "mkl_blas_dsyrk")):
            fn = getattr(lib, sym, None) if lib is not None else None
            if fn is None:
                continue
            fn.restype = None
            A = torch.arange(1.0, 22.0, dtype=dtype).reshape(7, 3).cos()
            C = torch.zeros(7, 7, dtype=dtype)
            _call(fn, A, C)
            if torch.allclose(C, (A @ A.T).tril(), rtol=1e-5, atol=1e-6):
                fns[dtype] = fn
        # one thread for a worker's OpenMP team (torch's ops and MKL's) and for MKL's own count
        _bound = {"fns": fns,
                  "omp": getattr(lib, "omp_set_num_threads", None) if lib is not None else None,
                  "mkl_local": getattr(lib, "MKL_Set_Num_Threads_Local", None) if lib is not None else None}
        return _bound


def _call(fn: Any, A: torch.Tensor, C: torch.Tensor) -> None:
    # A row-major (n, k) is column-major (k, n): Fortran C := Aᵀ·A with trans = "T", "U" (its upper
    # triangle, column-major) — the lower triangle of the row-major C. 64-bit integers: right for an
    # ILP64 MKL, and an LP64 one reads their low halves (little-endian).
    n, k = A.shape
    N, K = ctypes.c_int64(n), ctypes.c_int64(k)
    one, zero = (ctypes.c_float(1.0), ctypes.c_float(0.0)) if A.dtype == torch.float32 else (
        ctypes.c_double(1.0), ctypes.c_double(0.0))
    fn(b"U", b"T", ctypes.byref(N), ctypes.byref(K), ctypes.byref(one), ctypes.c_void_p(A.data_ptr()),
       ctypes.byref(K), ctypes.byref(zero), ctypes.c_void_p(C.data_ptr()), ctypes.byref(N))


def syrk_available(dtype: torch.dtype) -> bool:
    """Whether :func:`syrk_lower` runs for CPU tensors of ``dtype`` (float32/float64 with MKL)."""
    return dtype in _bind()["fns"]


def syrk_lower(A: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out``'s lower triangle (diagonal included) ← that of A Aᵀ; its strict upper triangle is not
    touched. A (n, k) and out (n, n): contiguous CPU tensors of one dtype with
    :func:`syrk_available`. n·(n+1)·k flops instead of the full product's 2·n²·k."""
    if not (A.is_contiguous() and out.is_contiguous() and out.shape == (A.shape[0], A.shape[0])):
        raise ValueError("syrk_lower needs a contiguous (n, k) A and (n, n) out")
    if A.shape[1] == 0:
        out.tril_().zero_()  # no features: a zero product (BLAS would leave out untouched)
        return out
    _call(_bind()["fns"][A.dtype], A, out)
    return out


def _pool(workers: int) -> ThreadPoolExecutor | None:
    """``workers`` threads whose OpenMP teams have one thread, re-made after a fork or a new count."""
    if _bind()["omp"] is None:
        return None
    key = (os.getpid(), workers)
    with _lock:
        if key not in _pools:
            for old in _pools.values():  # a parent's (after a fork: no threads here) or another size
                old.shutdown(wait=False)
            _pools.clear()
            _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="deepgeom-syrk",
                                             initializer=_one_thread_worker)
        return _pools[key]


def _one_thread_worker() -> None:
    """A pool thread's set-up: torch's own per-thread initialisation first (its first parallel op in
    a new thread sets that thread's OpenMP team back to torch's global count, and MKL's with it), then
    one thread. Without the first step a torch op in a job undid the second, and that layer's product
    ran multi-threaded — different last bits from the same layer on another thread."""
    torch.ones(2).sum()
    _set_threads(1)


def _set_threads(n: int) -> None:
    """This thread's OpenMP team size (torch's ops and MKL's) and MKL's own count (0: MKL's global)."""
    _bind()["omp"](ctypes.c_int(max(n, 1)))
    if _bind()["mkl_local"] is not None:
        _bind()["mkl_local"](ctypes.c_int(n if n == 1 else 0))


def run_per_thread(jobs: Sequence[Callable[[], None]], costs: Sequence[float]) -> None:
    """Run the ``jobs`` (each one layer's work: torch and BLAS calls, which release the GIL) on torch's
    CPU threads, one thread each: the calling thread (its OpenMP team cut to itself meanwhile, so that
    no team of torch's competes with the workers) and T − 1 pool threads take jobs from one queue,
    largest ``costs`` first, so a thread slowed by others on its core takes fewer. In order on the
    calling thread when torch has one thread, or there is one job, or no OpenMP control was found."""
    threads = min(torch.get_num_threads(), len(jobs))
    pool = _pool(threads - 1) if threads > 1 else None
    if pool is None:
        for job in jobs:
            job()
        return
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in sorted(range(len(jobs)), key=lambda i: -costs[i]):
        todo.put(jobs[i])

    def work(pool_thread: bool = False) -> None:
        if pool_thread:
            _set_threads(1)  # again: found needed (a torch op in an earlier job, or torch's thread
            # count changing since the pool began, left some products multi-threaded without it)
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            job()

    futures = [pool.submit(work, True) for _ in range(threads - 1)]
    before = torch.get_num_threads()
    _set_threads(1)
    try:
        work()
    finally:
        _set_threads(before)
        for f in futures:
            f.result()  # waits for every worker; re-raises a worker's exception here
