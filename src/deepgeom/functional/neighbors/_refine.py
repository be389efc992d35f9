r"""Exact refinement and the margin proof.

The candidates that can still be among the k nearest get their distance recomputed in float64 from
differences of the original rows (an exact duplicate gives exactly 0.0) and re-sorted by (distance,
index); the error model then says whether any point outside the candidates could be nearer
(:func:`_refine`).  Rows it cannot certify end, at worst, in :func:`_exact_rows`: every distance
from differences, nothing left to prove.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._error_model import U64


def _pair_sqdist(X: Any, r: torch.Tensor, c: torch.Tensor, dev: torch.device, budget: int, Dc: int,
                 scale: float = 1.0) -> torch.Tensor:
    """Exact float64 squared distances Σ ((X_r − X_c)·scale)² of the given row pairs, from differences
    (callers take the square root and divide by ``scale``).

    Streams feature chunks of X (a memmap strip is read once per chunk) and pair batches within
    a chunk, so memory stays within ``budget``.  On the CPU the batches are small (about 4 MB of
    differences) so they stay in cache: gathering, converting, subtracting and the row-wise dot
    product then run at memory speed instead of making three trips to RAM (timings in
    BENCHMARKS.md, "Measurements behind choices in the code").  The summation order depends only on ``Dc`` and the batch size, so a memmap
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


def _rounding_radius(sq: torch.Tensor, u_data: float) -> torch.Tensor:
    r"""How far rounding the centred data to a float type of unit roundoff ``u_data`` moves each row
    (:math:`\le u\,|x_i|` per value, so :math:`\le u\,\|x_i\|`), from the rows' float64 squared norms
    ``sq``, with slack for the norms' own rounding."""
    return (u_data * (1 + 4 * u_data) + 2 * U64) * sq.sqrt()


def _refine(
    X: Any, rows: torch.Tensor, cand_v: torch.Tensor, cand_i: torch.Tensor, sq: torch.Tensor, k: int,
    err: tuple[float, float], radius: torch.Tensor, dev: torch.device, budget: int, Dc: int, complete: bool,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Exact distances of the candidates that can still be among the k nearest, and the margin proof.

    ``cand_v``: (R, K) approximate squared distances (sorted ascending), ``cand_i`` their indices,
    ``sq`` the squared norms of the rounded centred rows (float64, all N), ``err`` = (c, t) the
    search's error model — :math:`|\hat d^2_{ij} - d^2_{ij}| \le c\,(s_i+s_j) + t\,(1+\sqrt{s_i}+\sqrt{s_j})`
    (see :func:`_search_error`) — and ``radius`` (N,) float64: how far each row's searched point can
    lie from its true (scaled, centred) point, in distance units (:func:`_rounding_radius` for data
    rounded to a float type; the quantization residual for an int8 search).  The search ran
    on the centred data times ``scale`` (a power of two), so its values and bounds are in those
    units; the exact distances are in the data's own.
    Returns (distances (R, k), indices (R, k), certified (R,) bool).
    """
    K = cand_v.shape[1]
    cv = cand_v.to(torch.float64)
    s_i = sq[rows.to(dev)][:, None]
    s_j = sq[cand_i]
    c_eps, tiny = err
    e_i = radius[rows.to(dev)][:, None]
    e_j = radius[cand_i]
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
    #   sqrt(T_i − c(s_i + max_j s_j)) − e_i − max_j e_j > d_k  (e: the radius)
    S = sq.max()
    T = cv[:, -1:]
    eps_out = c_eps * (s_i + S) + tiny * (1 + s_i.sqrt() + S.sqrt())
    lo_out = (T - eps_out).clamp_min(0).sqrt() - e_i - radius.max()
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
