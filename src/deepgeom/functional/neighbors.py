r"""Exact k nearest neighbours for (N, D) data by blocked matrix products in torch.

First version: blocked float64 squared distances :math:`|x|^2 + |y|^2 - 2x\cdot y` and ``topk`` per row
block, memory bounded by the block size.  (To be optimised: float32 candidate search with exact float64
refinement, symmetric blocks, memmap streaming over features.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._results import ResultMixin
from .._validation import check_matrix
from ..errors import InputError
from .matrix import as_tensor, block_size_for, resolve_device

__all__ = ["Neighbors", "knn"]


@dataclass(frozen=True)
class Neighbors(ResultMixin):
    """k nearest neighbours of every point, nearest first, excluding the point itself.

    Attributes:
        distances: (N, k) float64 Euclidean distances, exact to float64 precision; an exact duplicate
            of a point is at distance exactly 0.0.
        indices: (N, k) int64 indices of the neighbours into the rows of X.
    """

    distances: np.ndarray
    indices: np.ndarray

    @property
    def k(self) -> int:
        return int(self.distances.shape[1])

    @property
    def n(self) -> int:
        return int(self.distances.shape[0])


def knn(
    X: Any,
    k: int = 2,
    *,
    device: str | torch.device | None = None,
    block_rows: int | None = None,
) -> Neighbors:
    """Exact k nearest neighbours (Euclidean) of each row of X among the other rows.

    Args:
        X: (N, D) numpy array, torch tensor or memmap.
        k: neighbours per point (1 ≤ k < N).
        device: ``None``/``"cpu"``, ``"cuda"`` or ``"auto"``.
        block_rows: query rows per block (memory ~ block_rows × N × 8 bytes).
    """
    X = check_matrix(X, "X", min_rows=2)
    n = X.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k must be in [1, N-1] = [1, {n - 1}]; got {k}")
    dev = resolve_device(device)
    Xt = as_tensor(X).to(device=dev, dtype=torch.float64)
    sq = (Xt * Xt).sum(1)
    block_rows = block_rows or block_size_for(n, 8)
    dist = torch.empty((n, k), dtype=torch.float64)
    idx = torch.empty((n, k), dtype=torch.int64)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (Xt[start:stop] @ Xt.T)
        d2[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")
        vals, ind = torch.topk(d2, k, dim=1, largest=False)
        # exact distances of the selected candidates, from differences (no cancellation)
        diff = Xt[start:stop, None, :] - Xt[ind]
        exact = torch.linalg.vector_norm(diff, dim=2)
        order = torch.argsort(exact, dim=1, stable=True)
        dist[start:stop] = torch.gather(exact, 1, order).cpu()
        idx[start:stop] = torch.gather(ind, 1, order).cpu()
    return Neighbors(distances=dist.numpy(), indices=idx.numpy())
