r"""How the TwoNN estimate depends on scale: decimation into disjoint random blocks, and bootstrap CIs.

Decimation (Facco et al. 2017, Fig. 4; Ansuini et al. 2019, "block analysis"): split a random
permutation of the N points into :math:`2^s` disjoint blocks of :math:`\lfloor N/2^s \rfloor` points,
estimate the ID on each block and report the mean and standard deviation over blocks, for
:math:`s = 0, 1, 2, \dots` while blocks keep at least ``min_points`` points.  Fewer points means
larger neighbour distances, so the sizes probe coarser length scales; a plateau over sizes means the
ID is well defined there (Ansuini used b = 1..20 equal blocks; DADApy's ``return_id_scaling_2NN``
halves, as here).

Bootstrap: resample the N values :math:`\mu_i` with replacement and refit (the μ are i.i.d. Pareto
under TwoNN's model); the percentile interval of the refits is the CI.  Resampling *points* instead
would create exact duplicates (r1 = 0), which TwoNN cannot use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..._results import ResultMixin
from ..._validation import check_fraction, check_positive_int
from ...errors import InputError
from ..neighbors import Neighbors
from ._common import (
    HIGH_ID_NOTE,
    HIGH_ID_THRESHOLD,
    _warn_duplicates,
    check_duplicates_policy,
    check_points,
    distinct_neighbors,
    find_duplicates,
    take_rows,
)
from .twonn import _check_method, twonn_from_mu

__all__ = ["TwoNNScaleResult", "TwoNNBootstrapResult", "twonn_scale", "twonn_bootstrap"]


@dataclass(frozen=True)
class TwoNNScaleResult(ResultMixin):
    """Result of :func:`twonn_scale`.

    Attributes:
        table: one row per scale: ``block_size, n_blocks, id_mean, id_std, id_min, id_max,
            scale`` (mean r1/r2 distance, DADApy's length scale), ``likely_underestimate``.
        n_points, n_duplicates: rows given and exact copies dropped before splitting.
        method, fraction, seed: the settings used. note: warning text when any scale exceeds 20.
    """

    table: pd.DataFrame = field(repr=False)
    n_points: int
    n_duplicates: int
    method: str
    fraction: float
    seed: int
    note: str

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:
        d = super().to_dict(max_array=max_array)
        d["table"] = self.table.to_dict(orient="list")
        return d


@dataclass(frozen=True)
class TwoNNBootstrapResult(ResultMixin):
    """Result of :func:`twonn_bootstrap`: the estimate on all points, the bootstrap std and the
    percentile confidence interval ``[ci_low, ci_high]`` at level ``confidence``; ``samples`` holds
    the ``n_boot`` refits."""

    id: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float
    n_boot: int
    n: int
    method: str
    fraction: float
    likely_underestimate: bool
    note: str
    samples: np.ndarray = field(repr=False)

    @property
    def estimate(self) -> float:
        return self.id


def twonn_scale(
    X: Any,
    *,
    min_points: int = 20,
    max_scales: int | None = None,
    fraction: float = 0.9,
    method: str = "lsq",
    duplicates: str = "drop",
    seed: int = 0,
    device: Any = None,
) -> TwoNNScaleResult:
    r"""TwoNN on disjoint random blocks of N, N/2, N/4, … points (decimation; Facco et al. 2017).

    Exact duplicates are removed once, before splitting (see :func:`twonn`).  At scale s the
    distinct points are shuffled with ``numpy.random.default_rng(seed)`` and cut into :math:`2^s`
    blocks of :math:`\lfloor N/2^s\rfloor` points (the remainder is unused); each block gets its own
    neighbour search and TwoNN fit.  Scales stop when a block would have fewer than ``min_points``
    points, or after ``max_scales``.  Means above 20 are flagged (``likely_underestimate``).

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((800, 4))
        >>> twonn_scale(X, min_points=100).table[["block_size", "n_blocks"]].values.tolist()
        [[800, 1], [400, 2], [200, 4], [100, 8]]
    """
    _check_method(method)
    check_duplicates_policy(duplicates)
    fraction = check_fraction(fraction, "fraction", open_low=True)
    min_points = check_positive_int(min_points, "min_points", minimum=3)
    X = check_points(X)
    n = X.shape[0]
    info = find_duplicates(X, device=device)
    if n - info.n_duplicates == 1:
        raise InputError(f"X is constant: all {n} rows are identical, so it has no intrinsic dimension")
    if n - info.n_duplicates < 3:
        raise InputError(f"X has {n - info.n_duplicates} distinct rows; TwoNN needs at least 3")
    _warn_duplicates(info.n_duplicates, n, duplicates, "the TwoNN scale analysis")
    Xu = X if info.n_duplicates == 0 else take_rows(X, info.keep)
    nu = Xu.shape[0]
    if nu < min_points:
        raise InputError(f"X has {nu} distinct points, fewer than min_points={min_points}")
    rng = np.random.default_rng(seed)
    rows = []
    s = 0
    while nu // 2**s >= min_points and (max_scales is None or s < max_scales):
        nb_blocks, size = 2**s, nu // 2**s
        perm = rng.permutation(nu)[: nb_blocks * size].reshape(nb_blocks, size)
        ids, scales = [], []
        for b in range(nb_blocks):
            idx = np.sort(perm[b])
            block = take_rows(Xu, idx)  # of data on disk, a lazy view that the search streams
            nbr = distinct_neighbors(block, m=2, duplicates="drop", device=device)
            core = twonn_from_mu(nbr.distances[:, 1] / nbr.distances[:, 0], fraction=fraction, method=method)
            ids.append(core["id"])
            scales.append(float(nbr.distances[:, :2].mean()))
        ids_a = np.asarray(ids)
        rows.append(dict(
            block_size=size, n_blocks=nb_blocks, id_mean=float(ids_a.mean()),
            id_std=float(ids_a.std(ddof=1)) if nb_blocks > 1 else math.nan,
            id_min=float(ids_a.min()), id_max=float(ids_a.max()), scale=float(np.mean(scales)),
            likely_underestimate=bool(ids_a.mean() > HIGH_ID_THRESHOLD),
        ))
        s += 1
    table = pd.DataFrame(rows)
    high = bool(table["likely_underestimate"].any())
    return TwoNNScaleResult(table=table, n_points=n, n_duplicates=info.n_duplicates, method=method,
                            fraction=fraction, seed=seed, note=HIGH_ID_NOTE if high else "")


def twonn_bootstrap(
    X: Any = None,
    *,
    neighbors: Neighbors | None = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    fraction: float = 0.9,
    method: str = "lsq",
    duplicates: str = "drop",
    seed: int = 0,
    device: Any = None,
) -> TwoNNBootstrapResult:
    r"""TwoNN with a bootstrap confidence interval: refit on ``n_boot`` resamples of the μ values.

    One neighbour search; each replicate draws N of the :math:`\mu_i = r_2/r_1` with replacement
    (``numpy.random.default_rng(seed)``) and applies the same fit as :func:`twonn`.  Returns the
    full-data estimate, the replicates' standard deviation and the percentile interval.
    """
    _check_method(method)
    fraction = check_fraction(fraction, "fraction", open_low=True)
    confidence = check_fraction(confidence, "confidence", open_low=True, open_high=True)
    n_boot = check_positive_int(n_boot, "n_boot", minimum=2)
    nb = distinct_neighbors(X, neighbors=neighbors, m=2, duplicates=duplicates, device=device,
                            where="the TwoNN bootstrap")
    mu = nb.distances[:, 1] / nb.distances[:, 0]
    full = twonn_from_mu(mu, fraction=fraction, method=method)
    rng = np.random.default_rng(seed)
    samples = np.empty(n_boot)
    for b in range(n_boot):
        samples[b] = twonn_from_mu(mu[rng.integers(0, mu.size, mu.size)], fraction=fraction, method=method)["id"]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    high = full["id"] > HIGH_ID_THRESHOLD
    return TwoNNBootstrapResult(
        id=float(full["id"]), std=float(samples.std(ddof=1)), ci_low=float(lo), ci_high=float(hi),
        confidence=confidence, n_boot=n_boot, n=int(mu.size), method=method, fraction=fraction,
        likely_underestimate=bool(high), note=HIGH_ID_NOTE if high else "", samples=samples,
    )
