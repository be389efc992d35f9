"""The result of a k-NN search: :class:`Neighbors`, shared by every estimator that needs neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._results import ResultMixin
from ..._validation import check_positive_int
from ...errors import InputError


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

