"""Exact k-NN through a k-d tree for low-dimensional data (the candidates come from the tree instead of
matrix products; refinement and tie rule are those of the matrix route, so the answer is too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..matrix import as_tensor, block_size_for
from ._error_model import _unit_scale
from ._refine import _exact_rows, _sorted_exact
from ._result import Neighbors
from ._search import _progress_bar, _stats_pass

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
       consecutive queries walk the same nodes (much faster than row order; BENCHMARKS.md).
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
    from scipy.spatial import cKDTree  # lazy: slow to import, and only low-D searches use it

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
