r"""Block structure and best matches in CKA heatmaps (Nguyen, Raghu, Kornblith, ICLR 2021).

* :func:`find_blocks` — the "block structure": a contiguous run of hidden layers with near-identical
  representations *that share a dominant first principal component*.
* :func:`best_match` — for each layer of model A, the most similar layer of model B.

Both read a heatmap (:class:`~deepgeom.analysis.similarity.CKAResult`, a square DataFrame or an array);
they never touch activations.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._checks import check_fraction, check_positive_int
from .._results import ResultMixin
from ..errors import InputError

__all__ = ["Block", "find_blocks", "best_match", "BLOCK_THRESHOLD", "PC1_THRESHOLD", "PSEUDO_LAYERS"]

#: Minimum pairwise CKA inside a block (see :func:`find_blocks`).
BLOCK_THRESHOLD = 0.9
#: Minimum first-PC variance fraction of every layer inside a block (see :func:`find_blocks`).
PC1_THRESHOLD = 0.5
#: Layer names that are not hidden layers (the capture's pseudo-layers): never part of a block.
PSEUDO_LAYERS = ("input", "output")


@dataclasses.dataclass(frozen=True)
class Block(ResultMixin):
    """A span ``layers[start:stop]`` of consecutive hidden layers: pairwise CKA all ≥ the threshold and,
    when first-PC fractions were given, every layer's PC1 fraction ≥ its threshold (``pc1_mean`` is
    their mean; NaN when none were given)."""

    start: int
    stop: int
    layers: list[str]
    min_cka: float
    mean_cka: float
    pc1_mean: float = math.nan

    @property
    def size(self) -> int:
        return self.stop - self.start


def as_matrix(result: Any) -> tuple[np.ndarray, list[str], list[str]]:
    """``(M, row names, column names)`` of a CKAResult, a DataFrame or a 2-D array."""
    values = getattr(result, "values", None)
    if hasattr(result, "layers_a") and isinstance(values, np.ndarray):  # a CKAResult (duck-typed: no cycle)
        return values, list(result.layers_a), list(result.layers_b)
    if isinstance(result, pd.DataFrame):
        return result.to_numpy(dtype=np.float64), [str(i) for i in result.index], [str(c) for c in result.columns]
    M = np.asarray(result, dtype=np.float64)
    if M.ndim != 2:
        raise InputError(f"expected a 2-D CKA matrix; got shape {M.shape}")
    return M, [str(i) for i in range(M.shape[0])], [str(j) for j in range(M.shape[1])]


def _pc1_of(result: Any, pc1_fraction: Mapping[str, float] | None | bool) -> Mapping[str, float] | None:
    if pc1_fraction is False:
        return None
    if pc1_fraction is None or pc1_fraction is True:
        found = getattr(result, "pc1_fraction_a", None)
        if pc1_fraction is True and not found:
            raise InputError("find_blocks(pc1_fraction=True) needs a CKAResult computed with remove_pc1=True "
                             "(it carries each layer's first-PC fraction); or pass the fractions as a mapping")
        return found or None
    if not isinstance(pc1_fraction, Mapping):
        raise InputError(f"pc1_fraction must be a mapping layer → fraction, True, False or None; "
                         f"got {type(pc1_fraction).__name__}")
    return pc1_fraction


def find_blocks(result: Any, threshold: float = BLOCK_THRESHOLD, min_size: int = 3, *,
                pc1_fraction: Mapping[str, float] | bool | None = None, pc1_threshold: float = PC1_THRESHOLD,
                exclude: tuple[str, ...] | list[str] = PSEUDO_LAYERS) -> list[Block]:
    r"""Block structure: maximal runs of ≥ ``min_size`` consecutive hidden layers whose pairwise CKA all
    reach ``threshold`` and whose first principal component each carries ≥ ``pc1_threshold`` of the
    layer's variance.

    Nguyen et al. (2021) read blocks off heatmaps by eye (their code has no detector), and describe them
    by two properties, which this rule makes explicit:

    1. *many consecutive layers with very similar representations* — every pair inside the run has CKA
       ≥ ``threshold`` (0.9: above the CKA of neighbouring layers in their block-free models, below the
       near-1 values inside the blocks they show). High CKA alone does not discriminate: in residual
       networks neighbouring layers reach 0.9 through the skip connections in models of every size.
    2. *the block is carried by a dominant first principal component* (their §4: the block layers share
       a first PC that explains a large fraction of the variance, and removing it removes the block) —
       every layer's PC1 fraction ≥ ``pc1_threshold``. The paper gives no number; 0.5 is where the first
       PC carries as much variance as all other directions together, the least that "dominant" can mean.

    Input and output (``exclude``; the capture's pseudo-layers) are not hidden layers and never join
    a block; ``min_size`` 3 because a pair of high-CKA neighbours is what any residual or slowly
    varying network shows. Scanning hidden layers in forward order, a block starting at layer i grows to
    j while both conditions hold for every layer and pair inside ``i..j``; a run of ≥ ``min_size`` is
    reported and the scan resumes after it, otherwise at i + 1.

    Args:
        result: a within-model :class:`~deepgeom.analysis.similarity.CKAResult`, a square DataFrame or
            a square array (rows and columns the same layers, in forward order).
        threshold: minimum pairwise CKA inside a block, in (0, 1].
        min_size: minimum number of layers in a block (≥ 2).
        pc1_fraction: each layer's first-PC variance fraction (:func:`~deepgeom.analysis.pc1.pc1_fractions`),
            or None → those a ``remove_pc1=True`` CKAResult carries, else the CKA condition alone (with a
            warning: such spans are runs of similar layers, not the paper's blocks); False → CKA only,
            deliberately; True → required from ``result``.
        pc1_threshold: minimum PC1 fraction of every block layer, in (0, 1].
        exclude: layer names that never join a block (they also break a run).

    Returns:
        A list of :class:`Block` (start, stop (exclusive) as positions in ``result``, layer names, min and
        mean pairwise CKA, mean PC1 fraction).

    Example:
        >>> import numpy as np
        >>> M = np.full((5, 5), 0.95); np.fill_diagonal(M, 1.0)
        >>> [b.layers for b in find_blocks(M, pc1_fraction=dict(zip(["0", "1", "2", "3", "4"],
        ...                                                          [0.1, 0.8, 0.9, 0.7, 0.2])))]
        [['1', '2', '3']]
    """
    M, names, cols = as_matrix(result)
    if M.shape[0] != M.shape[1] or names != cols:
        raise InputError(f"find_blocks needs a square within-model CKA matrix (the same layers on both axes); "
                         f"got shape {M.shape}")
    threshold = check_fraction(threshold, "threshold", low=0.0, high=1.0, open_low=True)
    pc1_threshold = check_fraction(pc1_threshold, "pc1_threshold", low=0.0, high=1.0, open_low=True)
    min_size = check_positive_int(min_size, "min_size", minimum=2)
    pc1 = _pc1_of(result, pc1_fraction)
    if pc1 is None and pc1_fraction is None:
        warnings.warn("find_blocks without first-PC fractions tests CKA alone: the spans it reports are runs of "
                      "similar layers, not necessarily blocks carried by a dominant PC (compute the heatmap "
                      "with remove_pc1=True, or pass pc1_fraction=False to silence this)", UserWarning,
                      stacklevel=2)
    if pc1 is not None:
        missing = [n for n in names if n not in exclude and n not in pc1]
        if missing:
            raise InputError(f"pc1_fraction has no value for layer(s) {missing[:5]}")
    if np.isnan(M).any():
        warnings.warn("the CKA matrix holds NaN (layers without variance): they never join a block",
                      RuntimeWarning, stacklevel=2)
    excluded = set(exclude)
    ok = np.array([n not in excluded and (pc1 is None or float(pc1[n]) >= pc1_threshold) for n in names])
    L = M.shape[0]
    blocks: list[Block] = []
    i = 0
    while i < L:
        if not ok[i]:
            i += 1
            continue
        j = i + 1
        while j < L and ok[j] and np.all(M[i:j + 1, i:j + 1] >= threshold):
            j += 1
        if j - i >= min_size:
            sub = M[i:j, i:j]
            off = sub[~np.eye(j - i, dtype=bool)]
            pm = float(np.mean([float(pc1[n]) for n in names[i:j]])) if pc1 is not None else math.nan
            blocks.append(Block(start=i, stop=j, layers=names[i:j], min_cka=float(off.min()),
                                mean_cka=float(off.mean()), pc1_mean=pm))
            i = j
        else:
            i += 1
    return blocks


def best_match(result: Any) -> pd.DataFrame:
    """For each layer of A, the layer of B with the highest CKA (cross-model heatmap, Nguyen et al. 2021).

    Returns a DataFrame with ``layer_a``, ``depth_a``, ``best_b``, ``depth_b``, ``cka`` and
    ``margin`` (best minus second-best CKA, how clear-cut the match is; NaN with a single B layer).
    """
    M, la, lb = as_matrix(result)
    if M.size == 0:
        raise InputError("empty CKA matrix")
    da = getattr(result, "depth_a", None) or [math.nan] * len(la)
    db = getattr(result, "depth_b", None) or [math.nan] * len(lb)
    Mf = np.where(np.isnan(M), -np.inf, M)
    best = Mf.argmax(1)
    srt = np.sort(Mf, axis=1)
    margin = srt[:, -1] - srt[:, -2] if M.shape[1] > 1 else np.full(M.shape[0], np.nan)
    return pd.DataFrame({
        "layer_a": la, "depth_a": da, "best_b": [lb[k] for k in best], "depth_b": [db[k] for k in best],
        "cka": [M[i, k] for i, k in enumerate(best)], "margin": margin,
    })
