r"""Candidate search: the K smallest approximate squared distances per row, by blocked matrix products.

In memory the centred data are searched block pair by block pair (:func:`_symmetric_search`, each
unordered pair once); a memmap, or a set of rows searched again in a wider dtype, goes through
:func:`_slab_search` (R×N slabs accumulated over feature chunks).  The values are approximate; the
error model (:mod:`._error_model`) bounds how far, and :mod:`._refine` makes them exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..._validation import check_finite_values
from ...errors import InputError
from ..matrix import as_tensor, block_size_for
from ._error_model import _unit_scale

_FAST_BF16: bool | None = None


def _fast_bf16_cpu() -> bool:
    """Does this CPU multiply bfloat16 natively (AVX512-BF16 or AMX), so bf16 products are ~2× float32?"""
    global _FAST_BF16
    if _FAST_BF16 is None:
        flags = ""
        try:
            with open("/proc/cpuinfo") as f:
                flags = " ".join(line for line in f if line.startswith("flags"))
        except OSError:
            pass
        words = set(flags.split())
        _FAST_BF16 = bool({"avx512_bf16", "amx_bf16"} & words) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return _FAST_BF16


def _mean_and_max(src: torch.Tensor, dev: torch.device, br: int) -> tuple[torch.Tensor, float]:
    """(float64 column mean, max |x|) of in-memory rows, refusing NaN/Inf: float32 data are summed in
    float32 (pairwise, accurate to ~log N ulps, at memory speed), float64 block sums being the
    fallback when that overflows and the rule for wider types (see :func:`_centre_in_memory`)."""
    n, d = src.shape
    mean = src.sum(0).to(torch.float64) if src.dtype == torch.float32 else None
    if mean is None or not bool(torch.isfinite(mean).all()):
        mean = torch.zeros(d, dtype=torch.float64, device=dev)
        for s0 in range(0, n, br):
            mean += torch.sum(src[s0 : s0 + br], 0, dtype=torch.float64)
    if not bool(torch.isfinite(mean).all()):  # a NaN/Inf anywhere makes its column sum non-finite
        check_finite_values(src, "X")
        raise InputError("X has values too large to sum in float64; rescale it")
    mean /= n
    lo, hi = torch.aminmax(src) if src.dtype != torch.bool else (0, 1)
    return mean, max(-float(lo), float(hi))


def _centre_in_memory(src: torch.Tensor, dev: torch.device, br: int,
                      stats: tuple[torch.Tensor, float] | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(float64 column mean, centred float32 rows scaled by a power of two, that power of two);
    ``stats``: :func:`_mean_and_max` of ``src`` when a caller already has it (no second pass).

    Centring only has to remove the common offset that makes |x|²+|y|²−2x·y cancel: any shift leaves
    the distances (and the error model) unchanged, so float32 data are summed in float32 (pairwise,
    accurate to ~log N ulps, at memory speed); float64 sums are the fallback when that overflows and
    the rule for wider types.  The scaling makes every value below 1 in magnitude (exact; no
    float32/bf16 square can overflow and subnormals only arise far below the data's scale).
    """
    n, d = src.shape
    mean, xmax = stats if stats is not None else _mean_and_max(src, dev, br)
    Xc = None
    if src.dtype == torch.float32 and 2.0**-100 < xmax < 2.0**100:
        # one correctly rounded subtraction in float32, then an exact power-of-two scaling
        Xc = src - mean.to(torch.float32)
        clo, chi = torch.aminmax(Xc)
        scale = _unit_scale(max(-float(clo), float(chi)))
        if not 2.0**-100 <= scale <= 2.0**100:
            Xc = None  # a spread far from 1: scale in float64 instead, below
        elif scale != 1.0:
            Xc.mul_(scale)
    if Xc is None:
        # |x − mean| ≤ max|x| + max|mean|; scaling each term first keeps every step finite
        scale = _unit_scale(xmax + float(mean.abs().max()))
        Xc = torch.empty((n, d), dtype=torch.float32, device=dev)
        for s0 in range(0, n, br):
            Xc[s0 : s0 + br] = (src[s0 : s0 + br].to(torch.float64) * scale - mean * scale).to(torch.float32)
    return mean, Xc, scale


def _squared_norms(Xc: torch.Tensor, dev: torch.device, br: int) -> torch.Tensor:
    """float64 squared norms of the rows (exact widening, one rounding per term), over cache-sized
    row blocks on the CPU."""
    n, d = Xc.shape
    sq = torch.empty(n, dtype=torch.float64, device=dev)
    sb = max(1, (4 * 2**20) // (8 * d)) if dev.type == "cpu" else br
    for s0 in range(0, n, sb):
        blk = Xc[s0 : s0 + sb].to(torch.float64)
        sq[s0 : s0 + sb] = torch.linalg.vecdot(blk, blk)
    return sq


def _col_chunk(X: Any, c0: int, c1: int, dev: torch.device) -> torch.Tensor:
    """Columns c0:c1 of X as a float64 tensor on dev (for a memmap only that strip is read)."""
    if isinstance(X, torch.Tensor):
        return X[:, c0:c1].to(device=dev, dtype=torch.float64)
    return torch.from_numpy(np.array(X[:, c0:c1], dtype=np.float64)).to(dev)


def _stats_pass(X: Any, block_rows: int) -> tuple[torch.Tensor, float]:
    """One streamed pass over row blocks: NaN/Inf check, float64 column means, and a bound on |x − mean|."""
    n, d = X.shape
    total = torch.zeros(d, dtype=torch.float64)
    lo = torch.full((d,), math.inf, dtype=torch.float64)
    hi = torch.full((d,), -math.inf, dtype=torch.float64)
    for start in range(0, n, block_rows):
        blk = as_tensor(X[start : start + block_rows]).to(torch.float64).cpu()
        bad = ~torch.isfinite(blk)
        if bad.any():
            first = int(bad.any(1).nonzero()[0, 0]) + start
            raise InputError(f"X contains NaN or Inf (first in row {first}); remove or impute those rows first")
        total += blk.sum(0)
        lo = torch.minimum(lo, blk.min(0).values)
        hi = torch.maximum(hi, blk.max(0).values)
    mean = total / n
    if not bool(torch.isfinite(mean).all()):
        raise InputError("X has values too large to sum in float64; rescale it")
    # a bound on |x − mean| that holds without computing x − mean (which could overflow)
    return mean, float(torch.maximum(hi.abs(), lo.abs()).max() + mean.abs().max())


def _merge(cand_v: torch.Tensor, cand_i: torch.Tensor, s: slice | torch.Tensor, new_v: torch.Tensor, new_i: torch.Tensor) -> None:
    """Merge new (values, global indices) into the running K smallest of rows ``s`` (in place)."""
    v = torch.cat([cand_v[s], new_v], 1)
    i = torch.cat([cand_i[s], new_i], 1)
    kk = cand_v.shape[1]
    best, pos = torch.topk(v, kk, dim=1, largest=False, sorted=True)
    cand_v[s] = best
    cand_i[s] = torch.gather(i, 1, pos)


def _d2_block(Xi: torch.Tensor, Xj: torch.Tensor, si: torch.Tensor, sj: torch.Tensor, Dc: int) -> torch.Tensor:
    """Approximate squared distances s_i + s_j − 2 Xi Xjᵀ (float32), products accumulated over
    feature chunks of at most Dc columns; bf16 operands give bf16 products, summed in float32."""
    d = Xi.shape[1]
    if Xi.dtype == torch.bfloat16:
        d2 = torch.add(sj[None, :], Xi[:, :Dc] @ Xj[:, :Dc].T, alpha=-2.0)
        for c0 in range(Dc, d, Dc):
            d2.add_(Xi[:, c0 : c0 + Dc] @ Xj[:, c0 : c0 + Dc].T, alpha=-2.0)
    else:
        d2 = torch.addmm(sj[None, :], Xi[:, :Dc], Xj[:, :Dc].T, beta=1.0, alpha=-2.0)
        for c0 in range(Dc, d, Dc):
            d2.addmm_(Xi[:, c0 : c0 + Dc], Xj[:, c0 : c0 + Dc].T, alpha=-2.0)
    return d2.add_(si[:, None])


#: diagonal squares at most this many rows are multiplied whole; larger ones are split again
_DIAG_BASE = 128


def _symmetric_search(Xc: torch.Tensor, sq: torch.Tensor, K: int, B: int, W: int, Dc: int,
                      bar: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K smallest approximate squared distances per row, each unordered pair computed once.

    Row block i (B rows) is multiplied with the columns after its own rows, in chunks of W columns
    (the upper block triangle of the distance matrix): each chunk updates its rows (along rows) and,
    transposed, the rows of its columns.  The B×B diagonal square is itself searched the same way
    with blocks of B/4 rows, down to squares of ``_DIAG_BASE`` rows that are multiplied whole, so
    the work beyond N²/2 pairs is a fraction ``_DIAG_BASE``/N instead of B/N (10% at B=1024,
    N=10,000).
    """
    n, d = Xc.shape
    dev = Xc.device
    sq32 = sq.to(torch.float32)
    cand_v = torch.full((n, K), math.inf, dtype=torch.float32, device=dev)
    cand_i = torch.full((n, K), -1, dtype=torch.int64, device=dev)

    def products(i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        return _d2_block(Xc[i0:i1], Xc[j0:j1], sq32[i0:i1], sq32[j0:j1], Dc)

    for i0 in range(0, n, B):
        i1 = min(n, i0 + B)
        if i1 - i0 > 1:  # the diagonal square: each point against the others of its block
            if i1 - i0 <= _DIAG_BASE or n <= _DIAG_BASE:
                d2 = products(i0, i1, i0, i1).fill_diagonal_(math.inf)
                v, p = torch.topk(d2, min(K, i1 - i0), dim=1, largest=False, sorted=False)
            else:
                v, p = _symmetric_search(Xc[i0:i1], sq[i0:i1], min(K, i1 - i0 - 1), max(_DIAG_BASE, B // 4), W, Dc)
            _merge(cand_v, cand_i, slice(i0, i1), v, p + i0)
        for j0 in range(i1, n, W):
            j1 = min(n, j0 + W)
            d2 = products(i0, i1, j0, j1)
            v, p = torch.topk(d2, min(K, j1 - j0), dim=1, largest=False, sorted=False)
            _merge(cand_v, cand_i, slice(i0, i1), v, p + j0)
            # the columns' view of the same products (top-k down each column: no transposed copy)
            v, p = torch.topk(d2, min(K, i1 - i0), dim=0, largest=False, sorted=False)
            _merge(cand_v, cand_i, slice(j0, j1), v.T, p.T + i0)
        if bar is not None:  # pairs done: this block's rows against themselves and every later row
            bar.update((i1 - i0) * (n - i0) - (i1 - i0) * (i1 - i0 - 1) // 2)
    return cand_v, cand_i


def _slab_search(
    X: Any, rows: torch.Tensor, mean: torch.Tensor, K: int, dtype: torch.dtype, dev: torch.device,
    budget: int, Dc: int, sq_all: torch.Tensor | None, scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """K smallest approximate squared distances of ``rows`` against all N, streamed over feature chunks.

    Each R×N slab accumulates the partial products of the feature chunks (R chosen so the slab fits
    ``budget``); the squared norms of the centred rows are accumulated on the first pass.
    The centred data are multiplied by ``scale`` (a power of two, exact) before rounding to ``dtype``.
    Returns (values, global indices, squared norms of all rows in ``dtype``-rounded scaled centred
    data, depth h of the accumulated dot products for the error bound).
    """
    n, d = X.shape
    itemsize = torch.tensor([], dtype=dtype).element_size()
    Dc = max(1, min(Dc, budget // (n * (16 + itemsize))))
    R = max(1, min(len(rows), block_size_for(n, itemsize, budget)))
    out_v = torch.empty((len(rows), K), dtype=dtype, device=dev)
    out_i = torch.empty((len(rows), K), dtype=torch.int64, device=dev)
    rows = rows.to(dev)
    for g0 in range(0, len(rows), R):
        q = rows[g0 : g0 + R]
        G = torch.zeros((len(q), n), dtype=dtype, device=dev)
        acc = torch.zeros(n, dtype=torch.float64, device=dev) if sq_all is None else None
        # all rows at once: G is symmetric, so only its upper block triangle is multiplied
        full = len(q) == n and bool((q == torch.arange(n, device=dev)).all())
        Bs = max(1, -(-n // 8))
        for c0 in range(0, d, Dc):
            c1 = min(d, c0 + Dc)
            # scaled before the subtraction (exact), never in place: the chunk may be a view of X
            A64 = _col_chunk(X, c0, c1, dev) * scale - mean[c0:c1].to(dev) * scale
            A = A64.to(dtype)
            del A64
            if acc is not None:
                acc += A.to(torch.float64).square().sum(1)
            if full:
                for b0 in range(0, n, Bs):
                    G[b0 : b0 + Bs, b0:].addmm_(A[b0 : b0 + Bs], A[b0:].T)
            else:
                G.addmm_(A[q], A.T)
            del A
        if full:
            for b0 in range(Bs, n, Bs):  # mirror the upper blocks into the lower triangle
                G[b0 : b0 + Bs, :b0] = G[:b0, b0 : b0 + Bs].T
        if sq_all is None:
            sq_all = acc
        s = sq_all.to(dtype)
        d2 = G.mul_(-2.0).add_(s[None, :]).add_(s[q, None])
        d2[torch.arange(len(q), device=dev), q] = math.inf
        v, p = torch.topk(d2, K, dim=1, largest=False, sorted=True)
        out_v[g0 : g0 + len(q)] = v
        out_i[g0 : g0 + len(q)] = p
        del G, d2
    return out_v, out_i, sq_all, min(d, Dc) + math.ceil(d / Dc)



def _progress_bar(progress: bool | None, long: bool, total: int, desc: str) -> Any:
    """A tqdm bar when asked (``True``), or when ``None`` and the work is ``long``; else None."""
    if not (progress or (progress is None and long)):
        return None
    from tqdm.auto import tqdm  # lazy: only when a bar is shown (tqdm.auto probes for notebooks)

    return tqdm(total=total, desc=desc, leave=False, unit_scale=True, dynamic_ncols=True)
