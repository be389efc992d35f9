r"""GRIDE: generalised ratios ID estimator (Denti, Doimo, Laio & Mira, Sci. Rep. 12, 20005, 2022).

With :math:`r_{n}` the distance of a point to its n-th nearest neighbour and
:math:`\mu = r_{n_2}/r_{n_1}` (:math:`n_2 > n_1`), under locally constant density μ has density

.. math::  f(\mu) = \frac{d\,(\mu^d - 1)^{n_2-n_1-1}}{B(n_2-n_1, n_1)\;\mu^{(n_2-1)d+1}}, \qquad \mu > 1,

(TwoNN is :math:`n_1=1, n_2=2`).  The ID maximises the log-likelihood; its derivative

.. math::  \ell'(d) = \frac{N-1}{d} + \sum_i \log\mu_i\Bigl[\frac{n_2-n_1-1}{1-\mu_i^{-d}} - (n_2-1)\Bigr]

is strictly decreasing (ℓ is concave), so the root is unique and found by Brent's method.  We use
:math:`N-1` in the first term, as DADApy does, which makes :math:`n_1=1, n_2=2` give exactly the
unbiased TwoNN MLE :math:`(N-1)/\sum\log\mu`.  The error is :math:`1/\sqrt{I(d)}` with the Fisher
information :math:`I(d) = (N-1)/d^2 + (n_2-n_1-1)\sum_i (\log\mu_i)^2 \mu_i^{-d}/(1-\mu_i^{-d})^2`
(DADApy's ``_fisher_info_scaling``).  Ties :math:`\mu=1` use the finite limit of each term
(:math:`\log\mu/(1-\mu^{-d}) \to 1/d`), so no μ needs to be filtered.

Multiscale (:func:`gride_multiscale`, DADApy's ``return_id_scaling_gride``): :math:`n_1 = 2^i`,
:math:`n_2 = 2^{i+1}` up to ``range_max``, one neighbour search; larger ranks probe larger scales
without decimating the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from ..._results import ResultMixin
from ..._validation import check_positive_int
from ...errors import InputError
from ..neighbors import Neighbors
from ._common import HIGH_ID_NOTE, HIGH_ID_THRESHOLD, distinct_neighbors

__all__ = ["GrideResult", "GrideMultiscaleResult", "gride", "gride_multiscale", "gride_from_mu"]


@dataclass(frozen=True)
class GrideResult(ResultMixin):
    """Result of :func:`gride`: ``id`` (ML estimate), ``error`` (1/√Fisher information), the ranks
    ``n1, n2``, ``n`` points used, ``n_points`` given, ``n_duplicates`` dropped, ``scale`` (mean of
    the r_{n1} and r_{n2} distances), the high-ID flag and note."""

    id: float
    error: float
    n1: int
    n2: int
    n: int
    n_points: int
    n_duplicates: int
    scale: float
    likely_underestimate: bool
    note: str
    method: str = "gride"

    @property
    def estimate(self) -> float:
        return self.id


@dataclass(frozen=True)
class GrideMultiscaleResult(ResultMixin):
    """Result of :func:`gride_multiscale`: ``table`` with one row per scale
    (``n1, n2, id, error, scale``), and the counts of points and dropped duplicates."""

    table: pd.DataFrame = field(repr=False)
    n: int
    n_points: int
    n_duplicates: int
    range_max: int
    note: str

    def to_dict(self, *, max_array: int | None = None) -> dict[str, Any]:
        d = super().to_dict(max_array=max_array)
        d["table"] = self.table.to_dict(orient="list")
        return d


def _terms(d: float, log_mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log μ / (1 - μ^-d) and (log μ)² μ^-d / (1 - μ^-d)², with their μ → 1 limits (1/d, 1/d²)."""
    one_m = -np.expm1(-d * log_mu)  # 1 - μ^{-d}, accurate near μ = 1
    tie = log_mu == 0.0
    safe = np.where(tie, 1.0, one_m)
    a = np.where(tie, 1.0 / d, log_mu / safe)
    b = np.where(tie, 1.0 / d**2, (log_mu / safe) ** 2 * np.exp(-d * log_mu))
    return a, b


def gride_from_mu(mu: np.ndarray, n1: int, n2: int, *, d_range: tuple[float, float] = (1e-3, 1e3)) -> tuple[float, float]:
    r"""ML estimate and its error from the ratios :math:`\mu = r_{n_2}/r_{n_1}` (see module doc)."""
    mu = np.asarray(mu, dtype=np.float64)
    N = mu.size
    if N < 3:
        raise InputError(f"GRIDE needs at least 3 points; got {N}")
    if not np.isfinite(mu).all() or (mu < 1.0).any():
        raise InputError("mu = r_n2/r_n1 must be finite and >= 1")
    log_mu = np.log(mu)
    s = float(log_mu.sum())
    if s <= 0.0:
        raise InputError("all neighbour-distance ratios equal 1: the likelihood has no maximum")
    c = n2 - n1 - 1

    def score(d: float) -> float:
        a, _ = _terms(d, log_mu)
        return (N - 1) / d + c * float(a.sum()) - (n2 - 1) * s

    lo, hi = d_range
    f_lo, f_hi = score(lo), score(hi)
    if f_lo < 0 or f_hi > 0:
        raise InputError(f"the GRIDE likelihood has no maximum inside d_range={d_range}")
    d = float(brentq(score, lo, hi, xtol=1e-12, rtol=1e-12, maxiter=500))
    _, b = _terms(d, log_mu)
    fisher = (N - 1) / d**2 + c * float(b.sum())
    return d, 1.0 / math.sqrt(fisher)


def gride(
    X: Any = None,
    *,
    neighbors: Neighbors | None = None,
    n1: int = 1,
    n2: int = 2,
    duplicates: str = "drop",
    d_range: tuple[float, float] = (1e-3, 1e3),
    device: Any = None,
) -> GrideResult:
    r"""GRIDE maximum-likelihood ID from :math:`\mu = r_{n_2}/r_{n_1}` (Denti et al. 2022).

    Duplicates: as :func:`twonn` (exact detection, one copy kept or an error); ranks count distinct
    neighbours.  ``n1=1, n2=2`` equals ``twonn(method="mle")``.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((2000, 4)) @ np.eye(4, 20)
        >>> round(gride(X, n1=4, n2=8).id)
        4
    """
    n1 = check_positive_int(n1, "n1")
    n2 = check_positive_int(n2, "n2")
    if n2 <= n1:
        raise InputError(f"n2 must be larger than n1; got n1={n1}, n2={n2}")
    nb = distinct_neighbors(X, neighbors=neighbors, m=n2, duplicates=duplicates, device=device, where="GRIDE")
    dist = nb.distances
    mu = dist[:, n2 - 1] / dist[:, n1 - 1]
    d, err = gride_from_mu(mu, n1, n2, d_range=d_range)
    high = d > HIGH_ID_THRESHOLD
    return GrideResult(id=d, error=err, n1=n1, n2=n2, n=int(mu.size), n_points=nb.n_points,
                       n_duplicates=nb.n_duplicates, scale=float(dist[:, [n1 - 1, n2 - 1]].mean()),
                       likely_underestimate=bool(high), note=HIGH_ID_NOTE if high else "")


def gride_multiscale(
    X: Any = None,
    *,
    neighbors: Neighbors | None = None,
    range_max: int = 64,
    duplicates: str = "drop",
    d_range: tuple[float, float] = (1e-3, 1e3),
    device: Any = None,
) -> GrideMultiscaleResult:
    r"""GRIDE at doubling ranks :math:`(n_1, n_2) = (1,2), (2,4), \dots` up to ``range_max``
    (capped at N−1), from one neighbour search (DADApy ``return_id_scaling_gride``).

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((1000, 3))
        >>> gride_multiscale(X, range_max=8).table["n2"].tolist()
        [2, 4, 8]
    """
    range_max = check_positive_int(range_max, "range_max", minimum=2)
    n_total = X.shape[0] if X is not None else (neighbors.n if neighbors is not None else 0)
    kmax = min(range_max, max(2, n_total - 1)) if n_total else range_max
    steps = int(math.floor(math.log2(kmax)))
    if neighbors is not None:
        steps = min(steps, int(math.floor(math.log2(neighbors.k))))
    m = 2**steps
    nb = distinct_neighbors(X, neighbors=neighbors, m=m, duplicates=duplicates, device=device,
                            where="GRIDE")
    rows = []
    for i in range(steps):
        a, b = 2**i, 2 ** (i + 1)
        mu = nb.distances[:, b - 1] / nb.distances[:, a - 1]
        d, err = gride_from_mu(mu, a, b, d_range=d_range)
        rows.append(dict(n1=a, n2=b, id=d, error=err, scale=float(nb.distances[:, [a - 1, b - 1]].mean()),
                         likely_underestimate=bool(d > HIGH_ID_THRESHOLD)))
    table = pd.DataFrame(rows)
    return GrideMultiscaleResult(table=table, n=int(nb.distances.shape[0]), n_points=nb.n_points,
                                 n_duplicates=nb.n_duplicates, range_max=range_max,
                                 note=HIGH_ID_NOTE if table["likely_underestimate"].any() else "")
