r"""Exact k nearest neighbours for (N, D) data by blocked matrix products in torch.

One search serves every estimator (TwoNN, MLE, GRIDE, scale analysis): compute a :class:`Neighbors`
once with :func:`knn` and pass it on.  The search is *exact*: the distances it returns are the
Euclidean distances of the input rows to float64 precision, and the neighbours are the true nearest
ones, even when the data are float32 with a large common offset (where :math:`|x|^2+|y|^2-2x\cdot y`
in float32 cancels catastrophically and puts an exact duplicate near 1e-3, not 0).

How (the argument is spelled out in :func:`knn`):

1. **Centre** with the column means (distances do not change; the large-norm cancellation does —
   any shift close to the mean serves, so float32 data are summed in float32).
2. **Candidate search in float32** (or bfloat16 products where the CPU multiplies them natively,
   about twice float32's rate: ``search="auto"``): :math:`\hat d^2 = s_i + s_j - 2\,\tilde x_i\cdot\tilde x_j`
   over row blocks, each symmetric block pair computed once, keeping the :math:`k+m` smallest per
   row (``m`` = ``margin``).  Memory: one B×W strip (in memory) or an R×N slab (memmap), never N×N×D.
3. **Exact refinement**: the few candidate pairs that can still be among the k nearest get their
   distance recomputed in float64 *from differences* :math:`\sqrt{\sum_d (X_{id}-X_{jd})^2}` of the
   original rows (an exact duplicate gives exactly 0.0), then re-sorted.
4. **Proof of the margin**: a rigorous float32 error bound says whether any point outside the
   candidates could be nearer than the k-th exact distance; rows where it could are searched again
   in float64 (with the same refinement), and counted in :attr:`Neighbors.n_fallback`.

Disk memmaps (from ``capture``) are streamed: over row blocks for the mean, over feature blocks for
the products (partial products accumulated per slab) and for the refinement.

In low dimension (D ≤ 8, N ≥ 4,096) the candidates come from a k-d tree instead of products
(:func:`_tree_search`, O(N log N)); steps 3–4 are the same, so the answer is too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._results import ResultMixin
from .._validation import check_finite_values, check_matrix, check_positive_int, is_memmap
from ..errors import InputError
from .matrix import (
    DEFAULT_BLOCK_BYTES,
    as_tensor,
    block_size_for,
    float32_matmul_is_exact_ieee,
    resolve_device,
)

__all__ = ["Neighbors", "knn", "duplicate_groups", "ensure_neighbors"]

U32 = 2.0**-24  #: unit roundoff of float32
U64 = 2.0**-53  #: unit roundoff of float64
#: rounding steps outside the dot product in s_i + s_j - 2 x·y (norm rounding, two additions, the
#: centring of the data) — counted generously.
_EXTRA_ROUNDINGS = 8


@dataclass(frozen=True)
class Neighbors(ResultMixin):
    """k nearest neighbours of every point, nearest first, excluding the point itself.

    Attributes:
        distances: (N, k) float64 Euclidean distances, exact to float64 precision; an exact duplicate
            of a point is at distance exactly 0.0.
        indices: (N, k) int64 indices of the neighbours into the rows of X (ties: smaller index first).
        n_fallback: rows whose first search could not be proven and were searched again (float32
            after a bf16 search, float64, and — where even float64 products cannot separate the
            neighbours — every distance of the row from float64 differences).
    """

    distances: np.ndarray
    indices: np.ndarray
    n_fallback: int = 0

    @property
    def k(self) -> int:
        return int(self.distances.shape[1])

    @property
    def n(self) -> int:
        return int(self.distances.shape[0])

    @property
    def duplicate_mask(self) -> np.ndarray:
        """(N,) bool: the row has an exact duplicate elsewhere in X (its nearest distance is exactly 0.0).

        Exact because the distances are recomputed from float64 differences of the original rows,
        which are 0 if and only if the rows are equal — differences too small to square in float64
        (1e-170) are measured with their own scale — so this is the same answer as
        :func:`duplicate_groups`.
        """
        return self.distances[:, 0] == 0.0

    @property
    def n_duplicates(self) -> int:
        """Number of rows that have an exact duplicate (each member of a duplicate group counts)."""
        return int(self.duplicate_mask.sum())

    def take(self, k: int) -> Neighbors:
        """The first ``k`` neighbours of each point (a search for k' ≥ k serves every k ≤ k')."""
        k = check_positive_int(k, "k")
        if k > self.k:
            raise InputError(f"these neighbours hold k={self.k} per point; cannot take k={k} (search again with k>={k})")
        return Neighbors(self.distances[:, :k], self.indices[:, :k], self.n_fallback)

    @classmethod
    def from_arrays(cls, distances: Any, indices: Any) -> Neighbors:
        """Wrap precomputed (N, k) distances and indices (e.g. from another library), checking them."""
        d = np.asarray(distances, dtype=np.float64)
        i = np.asarray(indices)
        if d.ndim != 2 or d.shape != i.shape:
            raise InputError(
                f"distances and indices must both be (N, k); got shapes {d.shape} and {i.shape}"
            )
        if not np.issubdtype(i.dtype, np.integer):
            raise InputError(f"indices must be integers; got dtype {i.dtype}")
        if d.shape[1] < 1:
            raise InputError("neighbours need k >= 1 columns")
        if not np.all(np.isfinite(d)) or (d < 0).any():
            raise InputError("distances must be finite and non-negative")
        if (np.diff(d, axis=1) < 0).any():
            raise InputError("distances must be sorted ascending along each row (nearest first)")
        n = d.shape[0]
        if (i < 0).any() or (i >= n).any():
            raise InputError(f"indices must lie in [0, N-1] = [0, {n - 1}]")
        if (i == np.arange(n)[:, None]).any():
            raise InputError("indices must exclude the point itself")
        return cls(d, i.astype(np.int64))


def ensure_neighbors(data: Any, k: int, **knn_options: Any) -> Neighbors:
    """Neighbors for ``k``: reuse a precomputed :class:`Neighbors` (first k columns) or search ``data``.

    This is how estimators accept either the data or one shared search result.
    """
    if isinstance(data, Neighbors):
        return data.take(k) if data.k != k else data
    return knn(data, k, **knn_options)


# ----------------------------------------------------------------------------------------------
# helpers


def _gamma(h: int, u: float) -> float:
    """Higham's γ_h = h·u / (1 − h·u): bound on the relative error of an h-term dot product."""
    hu = h * u
    if hu >= 0.5:
        return math.inf
    return hu / (1.0 - hu)


def _matmul_unit(dtype: torch.dtype, dev: torch.device) -> float:
    """Unit roundoff of a matmul in ``dtype`` on ``dev`` (float32 may run as TF32/bf16 if torch allows)."""
    if dtype == torch.float64:
        return U64
    return U32 if float32_matmul_is_exact_ieee(dev) else 2.0**-8


U_BF16 = 2.0**-8  #: unit roundoff of bfloat16 (8 significant bits)


def _search_error(dtype: torch.dtype, h: int, dev: torch.device, d: int, chunks: int = 1) -> tuple[float, float]:
    r"""Error model (c, t) of a candidate search in ``dtype``: :math:`|\hat d^2-d^2| \le c(s_i+s_j) + t(1+|x|+|y|)`.

    float32/float64 products: a dot product of depth h errs by :math:`\gamma_h|x||y| \le
    \tfrac{\gamma_h}{2}(s_i+s_j)`, doubled in :math:`-2x\cdot y`, plus the roundings of the norms and
    additions (``_EXTRA_ROUNDINGS``) and two per feature chunk (``chunks``: the running sum that
    carries :math:`s_j` is rounded once per chunk).  Subnormal operands, products and sums err by
    an absolute half-ulp each (:math:`2^{-150}` in float32): at most :math:`(2h+\sqrt D+16)` of them
    per pair, the absolute term t.

    bfloat16 products (oneDNN: bf16 operands, float32 accumulation, bf16 result, then float32
    arithmetic): rounding both operands to bf16 errs by :math:`(2u_b+u_b^2)|x||y|`, the float32
    accumulation by :math:`\gamma_h(1+u_b)^2|x||y|`, rounding the result to bf16 by
    :math:`u_b(1+\gamma_h)(1+u_b)^2|x||y|`, with :math:`u_b = 2^{-8}`; the bf16 instructions flush
    subnormals, which moves each dot product by at most :math:`2^{-126}(\sqrt D(|x|+|y|) + D)`.

    The data are scaled by a power of two so that every centred value is below 1 in magnitude
    (:func:`_unit_scale`), so nothing overflows and subnormals only arise far below the data's scale.
    """
    roundings = _EXTRA_ROUNDINGS + 2 * chunks
    subnormal_ops = 2 * h + math.sqrt(d) + 16
    if dtype == torch.bfloat16:  # bf16 products, float32 everything else
        g = _gamma(h, U32)
        c_dot = (2 * U_BF16 + U_BF16**2) + (1 + U_BF16) ** 2 * (g + U_BF16 * (1 + g))
        return c_dot + roundings * U32, 2.0 * 2.0**-126 * (math.sqrt(d) + d) + 2.0**-149 * subnormal_ops
    u = _matmul_unit(dtype, dev)
    half_ulp_min = 2.0**-1074 if dtype == torch.float64 else 2.0**-149
    return _gamma(h, u) + roundings * u, half_ulp_min * subnormal_ops


def _unit_scale(amax: float) -> float:
    """A power of two s with s·amax < 1 (s = 1 for amax = 0), within [2⁻¹⁰⁰⁰, 2¹⁰⁰⁰]: scaling by it
    is exact (short of subnormal results, which the error model's absolute term covers)."""
    if not amax > 0 or not math.isfinite(amax):
        return 1.0
    return math.ldexp(1.0, max(-1000, min(1000, -math.frexp(amax)[1])))


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


def _merge(cand_v: torch.Tensor, cand_i: torch.Tensor, s: slice, new_v: torch.Tensor, new_i: torch.Tensor) -> None:
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


def _pair_sqdist(X: Any, r: torch.Tensor, c: torch.Tensor, dev: torch.device, budget: int, Dc: int,
                 scale: float = 1.0) -> torch.Tensor:
    """Exact float64 squared distances Σ ((X_r − X_c)·scale)² of the given row pairs, from differences
    (callers take the square root and divide by ``scale``).

    Streams feature chunks of X (a memmap strip is read once per chunk) and pair batches within
    a chunk, so memory stays within ``budget``.  On the CPU the batches are small (about 4 MB of
    differences) so they stay in cache: gathering, converting, subtracting and the row-wise dot
    product then run at memory speed instead of making three trips to RAM (measured 10× faster at
    N=10,000, D=4,096).  The summation order depends only on ``Dc`` and the batch size, so a memmap
    and the same data in memory give bitwise the same distances.  ``scale`` (a power of two)
    multiplies the differences before they are squared, so huge or tiny differences neither
    overflow nor underflow; away from those extremes sqrt(result)/scale has the same bits whatever
    the power of two.
    """
    P = len(r)
    out = torch.zeros(P, dtype=torch.float64, device=dev)
    if P == 0:
        return out
    n, d = X.shape
    r = r.to(dev)
    c = c.to(dev)
    in_memory = isinstance(X, torch.Tensor)
    cache_bytes = budget if dev.type == "cuda" else min(budget, 4 * 2**20)
    for c0 in range(0, d, Dc):
        c1 = min(d, c0 + Dc)
        A = X[:, c0:c1].to(dev) if in_memory else torch.from_numpy(np.array(X[:, c0:c1])).to(dev)
        pb = max(1, cache_bytes // ((c1 - c0) * 8))
        for p0 in range(0, P, pb):
            p1 = min(P, p0 + pb)
            # float32 (or any narrower type) → float64 is exact, and so is the difference of two
            # float32 values in float64: only the squares and their sum round
            diff = torch.index_select(A, 0, r[p0:p1]).to(torch.float64)
            diff.sub_(torch.index_select(A, 0, c[p0:p1]).to(torch.float64))
            if scale != 1.0:  # squares of |x − y|·scale < 2 cannot overflow (and rarely underflow)
                diff.mul_(scale)
            out[p0:p1] += torch.linalg.vecdot(diff, diff)
        del A
    return out


#: a scaled squared distance below this may hold squares that underflowed (differences under ~2⁻⁵¹¹
#: of the data's largest value): such pairs are recomputed by :func:`_pair_dist` with their own scale
_TINY_SQ = 2.0**-900


def _pair_dist(X: Any, r: torch.Tensor, c: torch.Tensor, dev: torch.device, budget: int, Dc: int,
               scale: float = 1.0) -> torch.Tensor:
    r"""Exact float64 distances ‖(X_r − X_c)·scale‖ of the given row pairs (callers divide by ``scale``).

    :func:`_pair_sqdist`, square-rooted; pairs whose squared sum is tiny are recomputed as
    :math:`m\,\|(x-y)/m\|` with :math:`m = \max|x-y|` (Blue's/LAPACK's ``dnrm2`` scaling), so rows that
    differ by 1e-170 get a distance of 1e-170, not the 0 their underflowed squares give — a distance
    is 0 exactly when the rows are equal, as :func:`duplicate_groups` says.
    """
    out = _pair_sqdist(X, r, c, dev, budget, Dc, scale).sqrt_()
    small = (out * out < _TINY_SQ).nonzero()[:, 0]
    if len(small) == 0:
        return out
    d = X.shape[1]
    pb = max(1, budget // (3 * 8 * d))
    for p0 in range(0, len(small), pb):
        sel = small[p0 : p0 + pb]
        rr, cc = r.to(dev)[sel].cpu().numpy(), c.to(dev)[sel].cpu().numpy()
        diff = (_rows_f64(X, rr, dev) - _rows_f64(X, cc, dev)).mul_(scale)  # exact: a power of two
        m = diff.abs().amax(1)
        nz = m > 0
        val = torch.zeros(len(sel), dtype=torch.float64, device=dev)
        q = diff[nz] / m[nz, None]
        val[nz] = m[nz] * torch.linalg.vector_norm(q, dim=1)
        out[sel] = val
    return out


def _rows_f64(X: Any, idx: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Rows ``idx`` (any order, repeats allowed) of X as float64 on dev; a memmap reads only those rows."""
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(idx, device=X.device)].to(device=dev, dtype=torch.float64)
    uniq, inv = np.unique(idx, return_inverse=True)
    return torch.from_numpy(np.array(X[uniq], dtype=np.float64)[inv.ravel()]).to(dev)


def _refine(
    X: Any, rows: torch.Tensor, cand_v: torch.Tensor, cand_i: torch.Tensor, sq: torch.Tensor, k: int,
    err: tuple[float, float], u_data: float, dev: torch.device, budget: int, Dc: int, complete: bool,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Exact distances of the candidates that can still be among the k nearest, and the margin proof.

    ``cand_v``: (R, K) approximate squared distances (sorted ascending), ``cand_i`` their indices,
    ``sq`` the squared norms of the rounded centred rows (float64, all N), ``err`` = (c, t) the
    search's error model — :math:`|\hat d^2_{ij} - d^2_{ij}| \le c\,(s_i+s_j) + t\,(1+\sqrt{s_i}+\sqrt{s_j})`
    (see :func:`_search_error`) — and ``u_data`` the rounding of the centred data.  The search ran
    on the centred data times ``scale`` (a power of two), so its values and bounds are in those
    units; the exact distances are in the data's own.
    Returns (distances (R, k), indices (R, k), certified (R,) bool).
    """
    K = cand_v.shape[1]
    cv = cand_v.to(torch.float64)
    s_i = sq[rows.to(dev)][:, None]
    s_j = sq[cand_i]
    c_eps, tiny = err
    e_scale = u_data * (1 + 4 * u_data) + 2 * U64
    e_i = e_scale * s_i.sqrt()
    e_j = e_scale * s_j.sqrt()
    # bounds on the true distance of each candidate from its searched value
    eps = c_eps * (s_i + s_j) + tiny * (1 + s_i.sqrt() + s_j.sqrt())
    lo = (cv - eps).clamp_min(0).sqrt() - e_i - e_j
    hi = (cv + eps).sqrt() + e_i + e_j
    upper_k = hi.sort(dim=1).values[:, k - 1 : k]  # the true k-th distance is at most this
    need = lo <= upper_k * (1 + 4 * U64)
    need[:, :k] = True
    rr, cc = need.nonzero(as_tuple=True)
    exact = torch.full((cv.shape[0], K), math.inf, dtype=torch.float64, device=dev)
    # in scaled units until the end: subnormal distances keep their order
    exact[rr, cc] = _pair_dist(X, rows.to(dev)[rr], cand_i[rr, cc], dev, budget, Dc, scale)
    # sort by (distance, index): ties broken by the smaller index, independent of block sizes
    o1 = torch.argsort(cand_i, dim=1, stable=True)
    e1 = torch.gather(exact, 1, o1)
    i1 = torch.gather(cand_i, 1, o1)
    o2 = torch.argsort(e1, dim=1, stable=True)
    dist = torch.gather(e1, 1, o2)[:, :k]
    idx = torch.gather(i1, 1, o2)[:, :k]
    if complete:  # every other point was a candidate: nothing left to prove
        return dist / scale, idx, torch.ones(len(rows), dtype=torch.bool, device=dev)
    # no point outside the candidates is nearer than the k-th exact distance if
    #   sqrt(T_i − c(s_i + max_j s_j)) − e_i − max_j e_j > d_k
    S = sq.max()
    T = cv[:, -1:]
    eps_out = c_eps * (s_i + S) + tiny * (1 + s_i.sqrt() + S.sqrt())
    lo_out = (T - eps_out).clamp_min(0).sqrt() - e_i - e_scale * S.sqrt()
    # strict: an outside point exactly at the k-th distance could have a smaller index (ties)
    certified = (lo_out > dist[:, k - 1 : k] * (1 + 4 * U64 * X.shape[1])).squeeze(1)
    return dist / scale, idx, certified


def _exact_rows(X: Any, rows: torch.Tensor, k: int, dev: torch.device, budget: int, Dc: int,
                scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The last resort: every distance of ``rows`` to all N points from float64 differences (no
    products, nothing to prove), k smallest with ties broken by the smaller index."""
    n = X.shape[0]
    g = max(1, min(len(rows), budget // (40 * n)))  # pair indices, distances and the sort, per row
    dist = torch.empty((len(rows), k), dtype=torch.float64, device=dev)
    idx = torch.empty((len(rows), k), dtype=torch.int64, device=dev)
    cols = torch.arange(n, device=dev)
    for g0 in range(0, len(rows), g):
        q = rows[g0 : g0 + g].to(dev)
        dq = _pair_dist(X, q.repeat_interleave(n), cols.repeat(len(q)), dev, budget, Dc, scale).view(len(q), n)
        dq[torch.arange(len(q), device=dev), q] = math.inf
        # ties judged on distances (as in _refine), in scaled units so subnormal ones keep their order;
        # stable: equal distances keep index order
        v, o = torch.sort(dq, dim=1, stable=True)
        dist[g0 : g0 + len(q)] = v[:, :k] / scale
        idx[g0 : g0 + len(q)] = o[:, :k]
    return dist, idx


# ----------------------------------------------------------------------------------------------


def knn(
    X: Any,
    k: int = 2,
    *,
    device: str | torch.device | None = None,
    block_rows: int | None = None,
    block_features: int | None = None,
    margin: int = 8,
    memory_bytes: int = DEFAULT_BLOCK_BYTES,
    search: str = "auto",
    method: str = "auto",
    progress: bool | None = None,
) -> Neighbors:
    r"""Exact k nearest neighbours (Euclidean) of each row of X among the other rows.

    The brute-force search of every k-NN ID estimator (Facco et al. 2017 TwoNN; Levina & Bickel
    2004 MLE; Denti et al. 2022 GRIDE), done as blocked matrix products with a proof of exactness.

    **Algorithm.** With :math:`\mu` the float64 column mean, :math:`\tilde x_i = \mathrm{fl}_{32}(X_i-\mu)`
    and :math:`s_i = \|\tilde x_i\|^2` (float64), candidates are the :math:`K=k+m` smallest of

    .. math:: \hat d^2_{ij} = \mathrm{fl}_{32}\big(s_i + s_j - 2\,\tilde x_i\cdot\tilde x_j\big),

    computed block pair by block pair (each symmetric pair once).  The candidates' distances are then
    recomputed exactly as :math:`d_{ij} = \big(\sum_f (X_{if}-X_{jf})^2\big)^{1/2}` in float64 from the
    original rows (0.0 exactly for duplicate rows) and re-sorted (ties: smaller index first).

    **Why it is exact (the margin proof).**  A float32 dot product of :math:`h` terms, in any
    summation order, errs by at most :math:`\gamma_h\,|\tilde x_i|\,|\tilde x_j| \le
    \tfrac{\gamma_h}{2}(s_i+s_j)` with :math:`\gamma_h = hu/(1-hu)`, :math:`u=2^{-24}` (Higham,
    *Accuracy and Stability of Numerical Algorithms*, §3.1); products are accumulated over feature
    chunks of at most ``block_features`` columns, so :math:`h \le D_c + \lceil D/D_c\rceil`.  With the
    roundings of the norms and the additions, :math:`|\hat d^2_{ij} - \|\tilde x_i-\tilde x_j\|^2|
    \le \varepsilon_{ij} = (\gamma_h + 8u)(s_i+s_j)`.  Rounding the centred data moves each point by
    at most :math:`e_i \approx u\sqrt{s_i}`, so the true distance satisfies
    :math:`d_{ij} \ge \sqrt{\hat d^2_{ij}-\varepsilon_{ij}} - e_i - e_j`.  Every point outside the
    candidates has :math:`\hat d^2_{ij} \ge T_i`, the K-th candidate value, hence if

    .. math:: \sqrt{T_i - (\gamma_h+8u)(s_i + \max_j s_j)} - e_i - \max_j e_j \;>\; d_{i,(k)},

    (the k-th exact distance; strict, so that no outside point can tie it with a smaller index), no
    outside point can be nearer than the k-th found one and row
    :math:`i` is exact.  Rows where this fails (near-ties at the scale of the float32 error) are
    searched again in float64 with the same refinement and the same proof at :math:`u=2^{-53}`, and
    rows even that cannot certify (tight clusters far from the mean) get every distance from float64
    differences; their number is ``n_fallback``.  Before the search the centred data are scaled by a
    power of two so that every value is below 1 in magnitude (exact): no square overflows float32,
    and the error model's absolute term covers subnormal values.

    **bfloat16 products.** The same proof holds for a search with bf16 operands (float32
    accumulation, bf16 result) once :math:`(\gamma_h+8u)` is replaced by that search's bound,
    :math:`\approx 3\cdot 2^{-8}` plus an absolute term for flushed subnormals (:func:`_search_error`;
    checked pair by pair in the tests).  The bound is ~10⁵ times wider, so ``search="auto"`` first
    proves a pilot of 256 rows and keeps float32 when more than 10% of them stay uncertain (data whose
    neighbour distances are nearly equal: high intrinsic dimension, tight clusters); rows a bf16 pass
    cannot certify are searched again in float32, then float64.

    Only candidates that can still be among the k nearest (lower bound ≤ the k-th upper bound) are
    refined, so refinement costs about k+1 differences per row.

    **Memory.** The centred float32 copy of X plus one B×W float32 strip of the distance matrix
    (``block_rows`` = B, W ≤ ``memory_bytes``/(12·B)) in memory; for a memmap an R×N slab
    accumulated over feature chunks (streamed from disk, never loaded whole) with
    R×N×4 ≤ ``memory_bytes`` (one slab for all rows: only its upper block triangle is multiplied).
    Refinement gathers pair batches within ``memory_bytes``.  Never an N×N×D tensor; no loop over
    points (only over blocks).

    **Cost.** About N²·D float32 flops (each unordered pair once; the diagonal squares are split
    down to 128-row squares, so the extra is a fraction 128/N) and ≈ k·N·D float64 operations for
    the refinement, run in cache-sized batches.  Measured at N = 10,000, D = 4,096 on this project's
    2-core CPU: ~85% of the time is the float32 products, at the machine's matmul rate.

    Args:
        X: (N, D) numpy array, torch tensor or numpy memmap (streamed).
        k: neighbours per point (1 ≤ k ≤ N−1).
        device: ``None``/``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present; same results).
        block_rows: rows per block of the distance matrix (default 1024; the row block meets column
            chunks of up to ``memory_bytes``/(12·B) columns).
        block_features: feature columns per product chunk (bounds h above; default 4096).
        margin: extra candidates m kept per row beyond k (more → fewer fallback rows).
        memory_bytes: working-memory budget for one block/slab.
        search: dtype of the candidate products: ``"float32"``, ``"bfloat16"`` or ``"auto"``
            (bfloat16 for in-memory data with D ≥ 256 on a CPU that multiplies bf16 natively —
            AVX512-BF16/AMX, about twice float32's rate — else float32).  The answer is the same
            exact one: only the error bound of the proof changes, and rows it cannot certify are
            searched again in float32, then float64 (a bf16 pass that leaves over a quarter of the
            rows uncertain is replaced by a whole float32 search).
        method: ``"matrix"`` (the blocked products above, O(N²D)), ``"tree"`` (a k-d tree,
            :func:`_tree_search`: O(N log N) in low dimension, same exact distances, same tie rule) or
            ``"auto"``: the tree for D ≤ ``TREE_MAX_DIM`` (8) and N ≥ ``TREE_MIN_ROWS`` (4,096) when its
            float64 copy of the data (N·D·8 bytes) fits in 4 × ``memory_bytes``, else the matrix.
        progress: a progress bar on stderr; ``None`` shows one when the search is expected to take
            more than about 3 s on a 2-core CPU (N²/2 pairs at ~10⁻¹¹·D + 2·10⁻⁸ s each on the matrix
            route, N ≥ 2¹⁸ rows on the tree).

    Returns:
        :class:`Neighbors` with (N, k) float64 distances and int64 indices, nearest first.

    Example:
        >>> import numpy as np
        >>> nb = knn(np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32), k=2)
        >>> nb.distances.tolist(), nb.indices.tolist()
        ([[1.0, 3.0], [1.0, 2.0], [2.0, 3.0], [4.0, 6.0]], [[1, 2], [0, 2], [1, 0], [2, 1]])
    """
    streamed = is_memmap(X)
    X = check_matrix(X, "X", min_rows=2, check_finite=False)
    k = check_positive_int(k, "k")
    margin = check_positive_int(margin, "margin", minimum=0)
    n, d = X.shape
    if n < k + 1:
        raise InputError(f"k={k} neighbours need at least k+1 = {k + 1} points (rows); got N={n}")
    _check_exact_integers(X)
    dev = resolve_device(device)
    sdt = _search_dtype(search, dev, d)  # validated for every input; memmaps search in float32
    K = min(n - 1, k + margin)
    complete = K == n - 1
    Dc = min(d, check_positive_int(block_features, "block_features") if block_features else 4096)
    chunks = math.ceil(d / Dc)
    h = min(d, Dc) + chunks
    # refinement streams feature chunks of this width in both paths, so memmap and in-memory agree bitwise
    Dr = max(1, min(d, memory_bytes // (n * 8)))
    if method not in ("auto", "matrix", "tree"):
        raise InputError(f"method must be 'auto', 'matrix' or 'tree'; got {method!r}")
    if method == "tree" or (method == "auto" and d <= TREE_MAX_DIM and n >= TREE_MIN_ROWS
                            and n * d * 8 <= 4 * memory_bytes):
        return _tree_search(X, k, margin, dev, memory_bytes, Dr, progress)
    # expected seconds on a 2-core CPU: ~1e-11 s per product flop plus ~2e-8 s per pair for the
    # top-k merges (measured: N = 20,000, D = 1 takes seconds although its products are trivial)
    bar = _progress_bar(progress, n * n / 2 * (d * 1e-11 + 2e-8) >= 3.0, n * (n + 1) // 2, "knn")

    if streamed:
        mean, amax = _stats_pass(X, block_size_for(d, 8, memory_bytes))
        mean = mean.to(dev)
        scale = _unit_scale(amax)
        src = X
        sdt = torch.float32
        cand_v, cand_i, sq, h = _slab_search(X, torch.arange(n), mean, K, torch.float32, dev, memory_bytes, Dc, None,
                                             scale)
    else:
        src = as_tensor(X).to(dev)
        br = block_size_for(d, 8, memory_bytes)
        # Centring only has to remove the common offset that makes |x|²+|y|²−2x·y cancel: any
        # shift leaves the distances (and the error model below) unchanged, so float32 data are
        # summed in float32 (pairwise, accurate to ~log N ulps, at memory speed); float64 sums are
        # the fallback when that overflows and the rule for wider types.
        mean = src.sum(0).to(torch.float64) if src.dtype == torch.float32 else None
        if mean is None or not bool(torch.isfinite(mean).all()):
            mean = torch.zeros(d, dtype=torch.float64, device=dev)
            for s0 in range(0, n, br):
                mean += torch.sum(src[s0 : s0 + br], 0, dtype=torch.float64)
        if not bool(torch.isfinite(mean).all()):  # a NaN/Inf anywhere makes its column sum non-finite
            check_finite_values(src, "X")
            raise InputError("X has values too large to sum in float64; rescale it")
        mean /= n
        # centred, then scaled by a power of two so that every value is below 1 in magnitude (exact;
        # no float32/bf16 square can overflow and subnormals only arise far below the data's scale)
        lo, hi = torch.aminmax(src) if src.dtype != torch.bool else (0, 1)
        xmax = max(-float(lo), float(hi))
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
        # squared norms in float64, over cache-sized row blocks (exact widening, one rounding per term)
        sq = torch.empty(n, dtype=torch.float64, device=dev)
        sb = max(1, (4 * 2**20) // (8 * d)) if dev.type == "cpu" else br
        for s0 in range(0, n, sb):
            blk = Xc[s0 : s0 + sb].to(torch.float64)
            sq[s0 : s0 + sb] = torch.linalg.vecdot(blk, blk)
        B = max(1, min(n, check_positive_int(block_rows or 1024, "block_rows"), int(math.sqrt(memory_bytes / 12))))
        W = max(B, min(n, memory_bytes // (12 * B)))
        if sdt == torch.bfloat16 and float(sq.max()) < 1e-30:  # all but vanishing after flushing
            sdt = torch.float32
        Xs = Xc if sdt == torch.float32 else Xc.to(sdt)
        if (sdt == torch.bfloat16 and search == "auto"
                and not _bf16_pilot(src, Xs, sq, k, K, h, chunks, dev, memory_bytes, Dc, Dr, scale)):
            sdt, Xs = torch.float32, Xc
        cand_v, cand_i = _symmetric_search(Xs, sq, K, B, W, Dc, bar)
        del Xs
    all_rows = torch.arange(n, device=dev)

    def prove(rows, v, i, sq_, dtype, h_, u_data, cpl, chunks_=1):
        return _refine(src, rows, v, i, sq_, k, _search_error(dtype, h_, dev, d, chunks_), u_data, dev,
                       memory_bytes, Dr, cpl, scale)

    dist, idx, ok = prove(all_rows, cand_v, cand_i, sq, sdt, h, U32, complete, 1 if streamed else chunks)
    if sdt == torch.bfloat16 and int((~ok).sum()) > n // 4:
        # bf16 could not separate the neighbours of this data: one float32 search instead
        sdt = torch.float32
        cand_v, cand_i = _symmetric_search(Xc, sq, K, B, W, Dc)
        dist, idx, ok = prove(all_rows, cand_v, cand_i, sq, sdt, h, U32, complete, chunks)
    if not streamed:
        del Xc
    n_fallback = int((~ok).sum())
    K2 = min(n - 1, k + max(2 * margin, 16))
    # rows the first search could not certify: a float32 slab search (after bf16), then float64,
    # then, for rows even float64 products cannot separate, every distance from differences
    for dtype, u_data in ((torch.float32, U32), (torch.float64, U64)):
        if bool(ok.all()) or (dtype == torch.float32 and sdt != torch.bfloat16):
            continue
        rows = (~ok).nonzero()[:, 0]
        v2, i2, sq2, h2 = _slab_search(src, rows, mean, K2, dtype, dev, memory_bytes, Dc, None, scale)
        dist[rows], idx[rows], ok[rows] = prove(rows, v2, i2, sq2, dtype, h2, u_data, K2 == n - 1)
    if not bool(ok.all()):
        rows = (~ok).nonzero()[:, 0]
        dist[rows], idx[rows] = _exact_rows(src, rows, k, dev, memory_bytes, Dr, scale)
    if bar is not None:
        bar.close()
    return Neighbors(distances=dist.cpu().numpy(), indices=idx.cpu().numpy(), n_fallback=n_fallback)


def _progress_bar(progress: bool | None, long: bool, total: int, desc: str) -> Any:
    """A tqdm bar when asked (``True``), or when ``None`` and the work is ``long``; else None."""
    if not (progress or (progress is None and long)):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit_scale=True, dynamic_ncols=True)


#: the k-d tree serves data with at most this many features (its pruning loses its edge beyond)
TREE_MAX_DIM = 8
#: and at least this many rows (below, the matrix search takes a fraction of a second)
TREE_MIN_ROWS = 4096
#: relative slack of the tree route's margin proof: both its distances and the exact ones are within
#: a few units of float64 roundoff (2⁻⁵³) of the truth for D ≤ 8, so 2⁻⁴⁰ is a wide safety factor
_TREE_SLACK = 2.0**-40


def _tree_search(X: Any, k: int, margin: int, dev: torch.device, budget: int, Dr: int,
                 progress: bool | None) -> Neighbors:
    r"""Exact k nearest neighbours through a k-d tree (``scipy.spatial.cKDTree``; Bentley 1975), for small D.

    1. The rows are centred and scaled by a power of two into a float64 copy, from which the tree
       is built; each row asks the tree for its K+1 nearest (K = k + 1), itself among them — dropped,
       wherever it falls among its duplicates.  Rows are asked in the tree's leaf order, so that
       consecutive queries walk the same nodes (5× faster than row order at N = 10⁶).
    2. The K candidates' distances are recomputed from differences of the original rows by the same
       function as the matrix route (:func:`_pair_dist`: bitwise the same numbers) and sorted by
       (distance, index): the same tie rule.
    3. Proof: every row the tree did not return is at tree distance ≥ T, the last returned one; tree
       and exact distances both err by a few float64 roundings, so if
       :math:`T(1-2^{-40}) > d_{(k)}(1+2^{-40})` no outside row can be nearer than (or tie) the k-th
       found.  Rows that fail (ties at the k-th distance, duplicates) ask the tree for every row
       within :math:`d_{(k)}(1+2^{-39})`, which holds all that can be among their k nearest, and
       sort those exactly; a row with more than ``budget``/64 such rows gets every distance from
       differences (:func:`_exact_rows`), as in the matrix route.  ``n_fallback`` counts both.

    Cost: O(N log N) for the tree and about (k+1)·N distances; memory N·D·8 bytes for the copy plus
    the candidate arrays.  ``margin`` is not used (it sizes the matrix route's float32 proof).
    """
    from scipy.spatial import cKDTree

    n, d = X.shape
    br = block_size_for(d, 8, budget)
    mean, amax = _stats_pass(X, br)
    scale = _unit_scale(amax)
    P = np.empty((n, d), dtype=np.float64)
    m64 = mean.numpy() * scale
    for s0 in range(0, n, br):
        P[s0 : s0 + br] = as_tensor(X[s0 : s0 + br]).to(torch.float64).cpu().numpy() * scale - m64
    tree = cKDTree(P, balanced_tree=False, compact_nodes=False)
    K = min(n - 1, k + 1)
    q = K + 1
    cand = np.empty((n, K), dtype=np.int64)
    T = np.empty(n, dtype=np.float64)
    order = tree.indices  # leaf order: neighbouring queries share their path through the tree
    step = 1 << 16
    bar = _progress_bar(progress, n >= 2**18, n, "knn (tree)")
    for s0 in range(0, n, step):
        who = order[s0 : s0 + step]
        dt, it = tree.query(P[who], k=q, workers=-1)
        dt, it = dt.reshape(len(who), q), it.reshape(len(who), q)
        c = it[:, 1:].copy()  # the row itself comes first, unless it has duplicates
        odd = np.flatnonzero(it[:, 0] != who)
        if len(odd):  # the first K other rows
            pos = np.argsort(it[odd] == who[odd, None], axis=1, kind="stable")[:, :K]
            c[odd] = np.take_along_axis(it[odd], pos, 1)
        cand[who] = c
        T[who] = dt[:, -1]
        if bar is not None:
            bar.update(len(who))
    src = X.to(dev) if isinstance(X, torch.Tensor) else X
    rows = torch.arange(n, device=dev)
    dist, idx = _sorted_exact(src, rows, torch.from_numpy(cand).to(dev), k, dev, budget, Dr, scale)
    if K == n - 1:  # every other row was a candidate
        ok = torch.ones(n, dtype=torch.bool, device=dev)
    else:
        Tt = torch.from_numpy(T).to(dev)
        ok = (Tt * (1 - _TREE_SLACK) > dist[:, -1] * (1 + _TREE_SLACK)) & (Tt > 2.0**-400)
    bad = (~ok).nonzero()[:, 0].cpu().numpy()
    if len(bad):
        # every row that can be among the k nearest lies within the k-th distance (plus slack)
        r = dist[torch.from_numpy(bad).to(dev), -1].cpu().numpy() * (1 + 2 * _TREE_SLACK) + 2.0**-400
        cap = max(4 * K, budget // 64)
        counts = np.asarray(tree.query_ball_point(P[bad], r, return_length=True, workers=-1))
        small = counts <= cap
        for rows_g in (g for g in _chunks_by_total(bad[small], counts[small], cap) if len(g)):
            lists = tree.query_ball_point(P[rows_g], r[np.searchsorted(bad, rows_g)], workers=-1)
            width = max(len(lst) for lst in lists)
            C = np.full((len(rows_g), width), -1, dtype=np.int64)
            for j, lst in enumerate(lists):
                C[j, : len(lst)] = lst
            C[C == rows_g[:, None]] = -1  # the row itself
            rg = torch.from_numpy(rows_g).to(dev)
            dist[rg], idx[rg] = _sorted_exact(src, rg, torch.from_numpy(C).to(dev), k, dev, budget, Dr, scale)
        if (~small).any():
            rg = torch.from_numpy(bad[~small]).to(dev)
            dist[rg], idx[rg] = _exact_rows(src, rg, k, dev, budget, Dr, scale)
            dist[rg] *= scale  # _sorted_exact's units (scaled) until the end
    if bar is not None:
        bar.close()
    return Neighbors(distances=(dist / scale).cpu().numpy(), indices=idx.cpu().numpy(), n_fallback=len(bad))


def _chunks_by_total(rows: np.ndarray, counts: np.ndarray, cap: int):
    """Split ``rows`` into consecutive groups whose ``counts`` add up to at most about ``cap``."""
    start, total = 0, 0
    for j, c in enumerate(counts):
        if total and total + c > cap:
            yield rows[start:j]
            start, total = j, 0
        total += int(c)
    yield rows[start:]


def _sorted_exact(src: Any, rows: torch.Tensor, cand: torch.Tensor, k: int, dev: torch.device, budget: int,
                  Dr: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest of each row among its candidates (R, W) (−1: none), by exact (scaled) distance,
    ties to the smaller index — :func:`_refine`'s sort."""
    R, W = cand.shape
    exact = torch.full((R, W), math.inf, dtype=torch.float64, device=dev)
    valid = cand >= 0
    pb = max(1, budget // (64 * W))  # rows per batch: pair indices and distances within budget
    for r0 in range(0, R, pb):
        v = valid[r0 : r0 + pb]
        rr, cc = v.nonzero(as_tuple=True)
        exact[r0 : r0 + pb][rr, cc] = _pair_dist(src, rows[r0 : r0 + pb][rr], cand[r0 : r0 + pb][rr, cc], dev, budget,
                                                 Dr, scale)
    key = torch.where(valid, cand, torch.iinfo(torch.int64).max)
    o1 = torch.argsort(key, dim=1, stable=True)
    e1 = torch.gather(exact, 1, o1)
    i1 = torch.gather(cand, 1, o1)
    o2 = torch.argsort(e1, dim=1, stable=True)
    return torch.gather(e1, 1, o2)[:, :k], torch.gather(i1, 1, o2)[:, :k]


def _check_exact_integers(X: Any) -> None:
    """Integer data are computed on in float64: refuse values that float64 cannot hold exactly."""
    dt = X.dtype
    is_int = (not dt.is_floating_point and dt != torch.bool) if isinstance(dt, torch.dtype) else np.issubdtype(dt, np.integer)
    if not is_int or np.dtype(str(dt).replace("torch.", "")).itemsize < 8:
        return
    big = 2**53
    for s0 in range(0, X.shape[0], 65536):
        blk = X[s0 : s0 + 65536]
        m = int(blk.abs().max()) if isinstance(blk, torch.Tensor) else int(np.abs(np.asarray(blk)).max())
        if m > big:
            raise InputError(f"X holds integers beyond 2**53 (|x| = {m}), which float64 cannot represent exactly; "
                             "convert them to floating point yourself if rounding is acceptable")


def _bf16_pilot(src: torch.Tensor, Xs: torch.Tensor, sq: torch.Tensor, k: int, K: int, h: int, chunks: int,
                dev: torch.device, budget: int, Dc: int, Dr: int, scale: float, m: int = 256,
                max_uncertain: float = 0.1) -> bool:
    """Will a bf16 search certify this data?  Search ``m`` evenly spaced rows against all (about
    m/N of the whole search's work) and prove them; True when at most ``max_uncertain`` of them
    stay uncertain.  Data whose neighbour distances are too alike for bf16's error bound (high
    intrinsic dimension, tight clusters) then go straight to float32."""
    n, d = Xs.shape
    m = min(m, budget // (8 * n))  # the pilot's m × N strip stays within the memory budget
    if n <= 2 * m or m < 16:
        return True
    rows = torch.linspace(0, n - 1, m, device=dev).long()
    sq32 = sq.to(torch.float32)
    d2 = _d2_block(Xs[rows], Xs, sq32[rows], sq32, Dc)
    d2[torch.arange(m, device=dev), rows] = math.inf
    v, i = torch.topk(d2, K, dim=1, largest=False, sorted=True)
    _, _, ok = _refine(src, rows, v, i, sq, k, _search_error(torch.bfloat16, h, dev, d, chunks), U32, dev, budget,
                       Dr, False, scale)
    return float((~ok).float().mean()) <= max_uncertain


def _search_dtype(search: str, dev: torch.device, d: int) -> torch.dtype:
    """The candidate-product dtype for ``search`` (see :func:`knn`)."""
    if search not in ("auto", "float32", "bfloat16"):
        raise InputError(f"search must be 'auto', 'float32' or 'bfloat16'; got {search!r}")
    if search == "float32":
        return torch.float32
    if dev.type == "cuda" and bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction):
        # cuBLAS may then round partial sums to bf16, which the error model does not cover
        return torch.float32
    if search == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if dev.type == "cpu" and d >= 256 and _fast_bf16_cpu() else torch.float32


# ----------------------------------------------------------------------------------------------


def _row_bits(blk: Any, dev: torch.device | None = None) -> torch.Tensor:
    """Rows as integer bit patterns that are equal exactly when the values are (-0.0 → 0.0).

    float32 rows keep their own width (values compare in their own dtype); anything else is
    widened to float64 first, which is exact for every narrower float and integer type.
    """
    t = as_tensor(blk).detach().to(dev or "cpu")
    if t.dtype in (torch.int64, torch.uint64) if hasattr(torch, "uint64") else t.dtype == torch.int64:
        return t.view(torch.int64)  # 64-bit integers as they are (float64 would round beyond 2**53)
    if t.dtype != torch.float32:
        t = t.to(torch.float64)
    t = t + 0.0  # + 0.0 turns -0.0 into 0.0
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _bits_hash(bits: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """(rows, 2) uint64 hashes of integer bit patterns, computed *exactly* by a float64 matmul.

    Each word is taken as signed 32-bit pieces (|p| ≤ 2³¹; an int64 word gives two) and multiplied
    by integer weights 1 ≤ w < 2¹⁰, in column chunks of at most 2¹² pieces, so every partial sum
    stays below 2⁵³ and the float64 product is exact *in any summation order*: equal rows get
    equal hashes whatever the BLAS does.  The chunk sums are combined with wrap-around uint64
    arithmetic, each chunk with its own weights.
    """
    n, d = bits.shape
    if bits.dtype == torch.int64:  # two signed 32-bit halves per word
        bits = torch.cat([(bits & 0xFFFFFFFF) - 2**31, bits >> 32], 1)
    h = np.zeros((n, weights.shape[1]), dtype=np.uint64)
    step = 2**12
    for c0 in range(0, bits.shape[1], step):
        P = bits[:, c0 : c0 + step].to(torch.float64)
        W = (weights[: P.shape[1]] + (c0 // step) * 7919) % 1023 + 1  # different weights per chunk
        part = (P @ W).cpu().numpy().astype(np.int64).view(np.uint64)
        with np.errstate(over="ignore"):
            h += part
    return h


def duplicate_groups(X: Any, *, block_rows: int | None = None, device: str | torch.device | None = None) -> np.ndarray:
    """Exact duplicate rows: ``rep[i]`` is the smallest index of a row equal to row i (``i`` if none).

    Rows are compared by value (``-0.0 == 0.0``), never by a distance threshold: the bit patterns of
    each row are hashed twice with an integer hash computed *exactly* (32-bit pieces times integer
    weights in a float64 matmul whose sums never round, streamed over row blocks so memmaps are
    never loaded whole), rows are sorted by (hash, index), and neighbours in that order with equal
    hashes are then compared element by element — a hash collision can never merge different rows,
    and a run of equal hashes that holds different rows is grouped by content.
    ``rep != arange(N)`` marks the rows that repeat an earlier one; ``np.bincount(rep)[rep] > 1``
    marks every member of a duplicate group.  ``device="cuda"`` hashes on the GPU (same hashes: the
    sums are exact in any order).

    Example:
        >>> duplicate_groups(np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 2.0], [-0.0, 1.0]])).tolist()
        [0, 1, 0, 1]
    """
    X = check_matrix(X, "X", min_rows=1, check_finite=False)
    n, d = X.shape
    dev = resolve_device(device)
    # CPU: ~4 MB per hashed chunk (rows × up to 4,096 words), so the pieces and their float64 copy
    # stay in cache — over rows, not whole rows, or a 262,144-wide layer would be hashed 2 rows at a
    # time; GPU: large blocks, few launches
    br = block_rows or max(1, ((4 if dev.type == "cpu" else 256) * 2**20) // (8 * max(1, min(d, 4096))))
    g = torch.Generator().manual_seed(0x5EED)
    weights = torch.randint(1, 2**10, (2**12, 2), generator=g).to(device=dev, dtype=torch.float64)
    h = np.empty((n, 2), dtype=np.uint64)
    for s0 in range(0, n, br):
        h[s0 : s0 + br] = _bits_hash(_row_bits(X[s0 : s0 + br], dev), weights)
    h1, h2 = h[:, 0], h[:, 1]
    order = np.lexsort((np.arange(n), h2, h1))
    same_hash = (h1[order[1:]] == h1[order[:-1]]) & (h2[order[1:]] == h2[order[:-1]])
    pairs = np.nonzero(same_hash)[0]
    equal = np.zeros(n - 1 if n else 0, dtype=bool)
    pb = max(1, block_size_for(d, 8 * 3) // 2)

    def rows_at(idx: np.ndarray) -> torch.Tensor:  # rows in any order, read in increasing order
        srt = np.sort(idx)
        return _row_bits(X[srt] if not isinstance(X, torch.Tensor) else X[torch.as_tensor(srt)])[
            torch.as_tensor(np.searchsorted(srt, idx))
        ]

    for p0 in range(0, len(pairs), pb):
        t = pairs[p0 : p0 + pb]
        equal[t] = (rows_at(order[t]) == rows_at(order[t + 1])).all(1).numpy()
    # start of each group in sorted order; representative = first (smallest index) of the group
    starts = np.ones(n, dtype=bool)
    starts[1:] = ~equal
    group_id = np.cumsum(starts) - 1
    first = order[starts]
    rep = np.empty(n, dtype=np.int64)
    rep[order] = first[group_id]
    # A run of equal hashes with an unequal neighbouring pair inside holds a hash collision, and a
    # row of another value may then sit between two equal rows: group such runs by content.
    run_id = np.cumsum(np.r_[True, ~same_hash]) - 1 if n else np.zeros(0, dtype=np.int64)
    for r in np.unique(run_id[1:][same_hash & ~equal]):
        members = order[run_id == r]
        _, inv = np.unique(rows_at(members).numpy(), axis=0, return_inverse=True)
        inv = inv.ravel()
        lowest = np.full(inv.max() + 1, n, dtype=np.int64)
        np.minimum.at(lowest, inv, members)
        rep[members] = lowest[inv]
    return rep
