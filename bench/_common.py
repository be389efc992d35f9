"""Shared helpers for the benchmark scripts: timing, peak memory, matmul throughput, tables, workers.

Only the standard library and numpy are imported at module level, so the same file runs inside the
anchors' own environments (e.g. DADApy's venv, which pins numpy<2 and has no torch).

Typical use in a ``bench_*.py``: the parent process writes the data to disk once, then runs each
method in a fresh worker subprocess (``run_worker``) so that peak memory is measured per method and
no method benefits from another's warm caches; the worker reports JSON on its last stdout line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "loadavg",
    "rss_anon_mb",
    "PeakMemory",
    "timed",
    "matmul_gflops",
    "run_worker",
    "worker_reply",
    "print_table",
    "fmt",
]


def loadavg() -> str:
    """The 1/5/15-minute load averages (``/proc/loadavg``), to record how busy the machine was."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _status_kb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def rss_anon_mb() -> float:
    """Current anonymous resident memory of this process in MiB (excludes file-backed/memmap pages)."""
    return _status_kb("RssAnon") / 1024.0


class PeakMemory:
    """Context manager sampling anonymous RSS every ``interval`` s; ``.peak_mb`` is the maximum seen.

    Anonymous RSS is the working memory a method allocates; pages of a memmapped file are page cache
    (reclaimable, shared) and are reported separately by the OS, so they are not counted here.
    ``.maxrss_mb`` is the kernel's lifetime peak RSS (file pages included) for reference.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_mb = rss_anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_anon_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_anon_mb())
        self.maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls of ``fn`` (seconds) and the last call's return value."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_gflops(n: int = 2048, d: int = 4096, repeat: int = 3, dtype: str = "float32") -> float:
    """This machine's dense matmul throughput now: best GFLOP/s of an (n×d)·(d×n) torch product."""
    import torch

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g, dtype=dt)
    b = torch.randn(n, d, generator=g, dtype=dt)
    a @ b.T  # warm up threads and caches
    t, _ = timed(lambda: a @ b.T, repeat)
    return 2.0 * n * n * d / t / 1e9


def run_worker(argv: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Run a worker command; return the JSON object on its last stdout line (or an ``error`` dict)."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON reply: " + lines[-1][:200]}


def worker_reply(**fields: Any) -> None:
    """Print the worker's result as one JSON line (the last line of stdout)."""
    print(json.dumps(fields), flush=True)
    sys.stdout.flush()


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for tables: floats with ``digits`` significant digits, None/NaN as '-'."""
    if x is None:
        return "-"
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "-"
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"
    return str(x)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> str:
    """Print rows (dicts) as a GitHub-markdown table with the given columns; returns the text."""
    header = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    text = "\n".join(([f"\n{title}\n"] if title else []) + [header, sep, *body])
    print(text, flush=True)
    return text


def cpu_info() -> str:
    """CPU count and model name, for the benchmark header."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def cpu_flags() -> dict:
    """Whether this CPU has native bfloat16 / AVX-512 arithmetic (issue 17: tables state it)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"avx512f": "avx512f" in flags, "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
            "amx": "amx_tile" in flags}


def cpu_kind() -> str:
    """One line naming the CPU kind a benchmark table belongs to (BENCHMARKS.md keeps one per kind)."""
    f = cpu_flags()
    return (f"{cpu_info()}; AVX-512 {'yes' if f['avx512f'] else 'no'}, native bfloat16 "
            f"{'yes' if f['bf16'] else 'no'}{', AMX' if f['amx'] else ''}")
