"""Exact duplicate rows by hashing their bit patterns (not a neighbour search: no distances)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..._validation import check_matrix
from ..matrix import as_tensor, block_size_for, resolve_device


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
