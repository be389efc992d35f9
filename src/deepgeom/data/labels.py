r"""Random labels for a chosen fraction of the training set (Zhang et al. 2017; Ansuini et al. 2019).

The ID paper trains on *shuffled* labels to show that the late-layer ID only falls when the network
generalises. deepgeom shuffles by **permutation**: exactly :math:`m = \mathrm{round}(f\cdot N)` examples
are chosen uniformly without replacement, and their labels are randomly permuted among themselves.
This keeps the label multiset (class balance) intact, and ``fraction=1`` is a full random permutation
of all labels — the classic random-label experiment. A permuted label can coincide with the true one
by chance (expected share :math:`\sum_c p_c^2` of the chosen examples, ≈ 1/C for balanced classes),
exactly as with the random-label runs in the literature; ``method="uniform"`` instead draws each chosen
example's new label uniformly from ``0..n_classes-1`` (Zhang et al.'s partially corrupted labels), which
can change class balance.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np
import torch

from .._validation import check_fraction
from ..errors import InputError

__all__ = ["shuffle_labels"]


@overload
def shuffle_labels(y: Any, fraction: float, seed: int = ..., *, method: str = ...,
                   n_classes: int | None = ..., return_indices: Literal[False] = ...) -> Any: ...
@overload
def shuffle_labels(y: Any, fraction: float, seed: int = ..., *, method: str = ...,
                   n_classes: int | None = ..., return_indices: Literal[True]) -> tuple[Any, np.ndarray]: ...


def shuffle_labels(
    y: Any,
    fraction: float,
    seed: int = 0,
    *,
    method: str = "permute",
    n_classes: int | None = None,
    return_indices: bool = False,
) -> Any:
    r"""Randomise the labels of exactly ``round(fraction * N)`` examples, seeded.

    Args:
        y: (N,) integer labels, numpy or torch (the result has the same type; the input is not changed).
        fraction: share of examples whose label is randomised, in [0, 1]; 1.0 gives fully random labels.
        seed: seed of the ``numpy.random.default_rng`` that picks the examples and their new labels.
        method: ``"permute"`` (default; permute the chosen examples' labels among themselves, so the
            label counts are preserved) or ``"uniform"`` (draw new labels uniformly from the classes).
        n_classes: classes for ``"uniform"`` (default ``max(y) + 1``).
        return_indices: also return the sorted int64 indices of the chosen examples.

    Returns:
        ``y'`` or ``(y', indices)``.

    Example:
        >>> y = np.arange(10) % 5
        >>> y2, idx = shuffle_labels(y, 0.4, seed=0, return_indices=True)
        >>> len(idx), sorted(y2.tolist()) == sorted(y.tolist())
        (4, True)
    """
    frac = check_fraction(fraction, "shuffle fraction (share of training labels to randomise)")
    if method not in ("permute", "uniform"):
        raise InputError(f"method must be 'permute' or 'uniform'; got {method!r}")
    is_torch = isinstance(y, torch.Tensor)
    arr = y.detach().cpu().numpy() if is_torch else np.asarray(y)
    if arr.ndim != 1:
        raise InputError(f"labels must be 1-D (N,); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"labels must be integer class ids; got dtype {arr.dtype}")
    n = arr.shape[0]
    m = int(round(frac * n))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)
    out = arr.copy()
    if method == "permute":
        out[idx] = arr[idx][rng.permutation(m)]
    else:
        k = int(arr.max()) + 1 if n_classes is None and n else int(n_classes or 1)
        if n and int(arr.max()) >= k:
            raise InputError(f"n_classes={k} but labels go up to {int(arr.max())}")
        out[idx] = rng.integers(0, k, size=m).astype(arr.dtype)
    res = torch.from_numpy(out).to(y.device) if is_torch else out
    return (res, idx) if return_indices else res
