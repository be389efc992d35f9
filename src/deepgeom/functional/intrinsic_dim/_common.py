r"""Shared plumbing for the intrinsic-dimension estimators: input checks, exact duplicate detection,
and the nearest *distinct* neighbours of every point.

Why duplicates need care
------------------------
Every neighbour-based estimator here (TwoNN, GRIDE, Levina–Bickel) divides neighbour distances, so a
point with an exact copy (r1 = 0) gives :math:`\mu = r_2/r_1 = \infty`.  Such copies are common:
dead ReLU units, quantised inputs, repeated embeddings.  Distances computed from matrix products,
:math:`|x|^2+|y|^2-2x\cdot y`, put an exact copy at ~1e-6 instead of 0, so a filter on ``r1 == 0``
misses it and the copy's huge :math:`\mu` drags the estimate towards 0 (this is how DADApy and
scikit-dimension fail with a few percent of duplicated rows).  Here duplicates are found *exactly*,
by hashing the bits of each row and then comparing the candidate rows element by element
(:func:`find_duplicates`, on top of :func:`deepgeom.functional.neighbors.duplicate_groups`); the estimators then keep one representative of each group of identical
rows and search neighbours among the distinct points only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..._validation import MemmapRows, check_matrix, is_memmap
from ...errors import InputError, UnknownNameError
from ..matrix import block_size_for, iter_blocks
from ..neighbors import Neighbors, duplicate_groups, knn

__all__ = [
    "DuplicateInfo",
    "DistinctNeighbors",
    "find_duplicates",
    "distinct_neighbors",
    "check_points",
    "check_duplicates_policy",
    "is_constant",
    "take_rows",
]

_DUP_POLICIES = ("drop", "error")
#: TwoNN underestimates above this ID (Facco et al. 2017, Fig. 3; Ansuini et al. 2019, Methods).
HIGH_ID_THRESHOLD = 20.0
HIGH_ID_NOTE = (
    "estimate above 20: TwoNN (and other neighbour-ratio estimators) underestimate high intrinsic "
    "dimensions with finite N (Facco et al. 2017), so treat this value as a lower bound"
)


@dataclass(frozen=True)
class DuplicateInfo:
    """Groups of exactly identical rows.

    Attributes:
        group: (N,) int64, the index of the representative (lowest row index) of each row's group.
        keep: sorted int64 indices of the representatives, one per distinct row.
        n_duplicates: rows that are exact copies of an earlier row (``N - len(keep)``).
    """

    group: np.ndarray
    keep: np.ndarray
    n_duplicates: int


@dataclass(frozen=True)
class DistinctNeighbors:
    """The m nearest distinct neighbours of every distinct point.

    Attributes:
        distances: (n_unique, m) float64, sorted, all > 0.
        rows: (n_unique,) indices into the original rows of the points these belong to.
        n_points: rows given; n_duplicates: rows dropped as exact copies of another row.
    """

    distances: np.ndarray
    rows: np.ndarray
    n_points: int
    n_duplicates: int


def check_duplicates_policy(duplicates: str) -> str:
    if duplicates not in _DUP_POLICIES:
        raise UnknownNameError("duplicates policy", duplicates, _DUP_POLICIES)
    return duplicates


def check_points(X: Any, name: str = "X", min_points: int = 3) -> Any:
    """Validate (N, D) data for an ID estimator: 2-D, numeric, finite, at least ``min_points`` rows."""
    if X is None:
        raise InputError(f"{name} is required (or pass precomputed neighbors=)")
    X = check_matrix(X, name, min_rows=1)
    if X.shape[0] < min_points:
        raise InputError(
            f"{name} needs at least {min_points} points (rows) to estimate an intrinsic dimension; "
            f"got {X.shape[0]}"
        )
    return X


def is_constant(X: Any) -> bool:
    """True when every row of X equals the first (zero range in every column), streamed over rows."""
    n, d = X.shape
    first = _as_numpy_block(X[:1])
    for _, _, blk in iter_blocks(X, block_size_for(d, 8, budget_bytes=64 * 2**20), axis=0):
        if not (_as_numpy_block(blk) == first).all():
            return False
    return True


def _as_numpy_block(blk: Any) -> np.ndarray:
    if isinstance(blk, torch.Tensor):
        return blk.detach().cpu().numpy()
    return np.asarray(blk)


def find_duplicates(X: Any, *, block_rows: int | None = None, device: Any = None) -> DuplicateInfo:
    """Find groups of exactly identical rows (equal values, treating -0.0 as 0.0).

    Uses :func:`deepgeom.functional.neighbors.duplicate_groups` (rows hashed block by block — a
    memmap is streamed — then rows with equal hashes compared element by element), so the answer is
    exact: no tolerance, no rounding, no distance threshold.

    Example:
        >>> import numpy as np
        >>> info = find_duplicates(np.array([[0., 1.], [2., 3.], [0., 1.], [-0., 1.]]))
        >>> info.group.tolist(), info.n_duplicates
        ([0, 1, 0, 0], 2)
    """
    group = np.asarray(duplicate_groups(X, block_rows=block_rows, device=device), dtype=np.int64)
    keep = np.flatnonzero(group == np.arange(group.size))
    return DuplicateInfo(group=group, keep=keep, n_duplicates=int(group.size - keep.size))


def _warn_duplicates(n_dup: int, n: int, duplicates: str, where: str) -> None:
    if n_dup == 0:
        return
    msg = (
        f"{n_dup} of {n} rows ({100.0 * n_dup / n:.1f}%) are exact duplicates of another row; "
        f"{where} keeps one copy of each (pass duplicates='error' to refuse such data)"
    )
    if duplicates == "error":
        raise InputError(msg.split(";")[0] + "; remove them or pass duplicates='drop'")
    warnings.warn(msg, stacklevel=3)


def take_rows(X: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of X; of a memmap, a lazy :class:`~deepgeom._validation.MemmapRows` view that the
    neighbour search streams like the memmap itself (bounded memory), never a copy of every kept row."""
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(idx)]
    if isinstance(X, MemmapRows):
        return MemmapRows(X.X, X.idx[idx])
    return MemmapRows(X, idx) if is_memmap(X) else X[idx]


def distinct_neighbors(
    X: Any = None,
    *,
    neighbors: Neighbors | None = None,
    m: int = 2,
    duplicates: str = "drop",
    device: Any = None,
    where: str = "the estimate",
) -> DistinctNeighbors:
    """Distances to the ``m`` nearest distinct neighbours of every distinct point, exact in float64.

    From ``X``: exact duplicates are found with :func:`find_duplicates`, one representative per group
    is kept (``duplicates="drop"``, with a warning and the count) or an error is raised
    (``duplicates="error"``), and :func:`deepgeom.functional.neighbors.knn` runs on distinct rows.

    From precomputed ``neighbors`` (``knn`` output, which puts exact copies at distance exactly 0):
    a row's group is itself plus its zero-distance neighbours, represented by the lowest index; the
    first ``m`` neighbours of each representative that belong to ``m`` different groups are used.
    This needs ``k`` larger than ``m`` plus the largest group size; otherwise an error says so.
    """
    check_duplicates_policy(duplicates)
    if (X is None) == (neighbors is None):
        raise InputError("pass exactly one of X (data) or neighbors= (precomputed knn output)")
    if neighbors is not None:
        return _distinct_from_neighbors(neighbors, m, duplicates, where)
    X = check_points(X, min_points=3)
    n = X.shape[0]
    info = find_duplicates(X, device=device)
    n_unique = n - info.n_duplicates
    if n_unique == 1:
        raise InputError(f"X is constant: all {n} rows are identical, so it has no intrinsic dimension")
    if n_unique < m + 1:
        raise InputError(
            f"X has only {n_unique} distinct rows of {n}; this estimate needs at least {m + 1}"
        )
    _warn_duplicates(info.n_duplicates, n, duplicates, where)
    Xu = X if info.n_duplicates == 0 else take_rows(X, info.keep)
    nb = knn(Xu, m, device=device)
    dist = np.asarray(nb.distances, dtype=np.float64)
    return DistinctNeighbors(distances=dist, rows=info.keep, n_points=n, n_duplicates=info.n_duplicates)


def _distinct_from_neighbors(nb: Neighbors, m: int, duplicates: str, where: str) -> DistinctNeighbors:
    dist = np.asarray(nb.distances, dtype=np.float64)
    ind = np.asarray(nb.indices, dtype=np.int64)
    if dist.ndim != 2 or dist.shape != ind.shape:
        raise InputError(f"neighbors must hold (N, k) distances and indices; got {dist.shape} and {ind.shape}")
    n, k = dist.shape
    if n < 3:
        raise InputError(f"neighbors describe {n} points; at least 3 are needed")
    if not np.isfinite(dist).all() or (dist < 0).any():
        raise InputError("neighbors.distances must be finite and non-negative")
    if (np.diff(dist, axis=1) < 0).any():
        raise InputError("neighbors.distances must be sorted nearest first in every row")
    zero = dist == 0.0
    if zero[:, -1].any():
        raise InputError(
            f"some points have all {k} neighbours at distance 0 (a group of identical rows larger than k); "
            "pass X instead, or neighbours with a larger k"
        )
    group = np.arange(n, dtype=np.int64)
    if zero.any():
        group = np.minimum(group, np.where(zero, ind, n).min(1))
    n_dup = int((group != np.arange(n)).sum())
    if n_dup and int(np.unique(group).size) == 1:
        raise InputError(f"X is constant: all {n} rows are identical, so it has no intrinsic dimension")
    _warn_duplicates(n_dup, n, duplicates, where)
    rows = np.flatnonzero(group == np.arange(n))
    g_nb = group[ind[rows]]  # (n_unique, k) groups of the neighbours
    valid = g_nb != rows[:, None]
    # keep only the first occurrence of each neighbour group in a row
    for j in range(1, k):
        valid[:, j] &= ~(g_nb[:, :j] == g_nb[:, j : j + 1]).any(1)
    counts = valid.sum(1)
    if (counts < m).any():
        raise InputError(
            f"precomputed neighbors have k={k}, too few to find {m} distinct neighbours of every point "
            "after skipping exact duplicates; compute knn with a larger k or pass X"
        )
    pos = np.argsort(~valid, axis=1, kind="stable")[:, :m]
    d = np.take_along_axis(dist[rows], pos, axis=1)
    return DistinctNeighbors(distances=d, rows=rows, n_points=n, n_duplicates=n_dup)
