r"""Levina–Bickel maximum-likelihood ID over a range of neighbourhood sizes (Levina & Bickel, NIPS 2004),
with MacKay & Ghahramani's (2005) averaging of inverses.

With :math:`T_j(x)` the distance from x to its j-th nearest neighbour, the local estimate at x with k
neighbours is

.. math::  \hat m_k(x) = \Bigl[\frac{1}{k-1}\sum_{j=1}^{k-1} \log\frac{T_k(x)}{T_j(x)}\Bigr]^{-1}.

* ``average="inverse"`` (default; MacKay & Ghahramani's comment on Levina–Bickel): average the
  *inverses* over points, :math:`\hat m_k = [\frac1N\sum_x \hat m_k(x)^{-1}]^{-1}` — the ML
  estimate when all points share one dimension, and far less biased by the heavy upper tail of
  :math:`\hat m_k(x)` at small k.
* ``average="direct"`` (Levina & Bickel's paper): :math:`\hat m_k = \frac1N\sum_x \hat m_k(x)`.

Then :math:`\hat m = \frac{1}{k_2-k_1+1}\sum_{k=k_1}^{k_2}\hat m_k` (both papers).  The normalisation
is Levina–Bickel's :math:`1/(k-1)` (not the unbiased :math:`1/(k-2)`).  ``error`` is the mean over k
of the delta-method standard error of :math:`\hat m_k`
(:math:`\hat m_k^2\,\mathrm{sd}_x(\hat m_k(x)^{-1})/\sqrt N` for ``"inverse"``;
:math:`\mathrm{sd}_x(\hat m_k(x))/\sqrt N` for ``"direct"``) — a per-k statistical error that ignores the
correlation between neighbouring points.

For one k this equals scikit-dimension's ``skdim.id.MLE().fit(X, n_neighbors=k, comb="mle")``
(``"inverse"``) or ``comb="mean"`` (``"direct"``); tested to 1e-9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._results import ResultMixin
from ..._validation import check_positive_int
from ...errors import InputError, UnknownNameError
from ..neighbors import Neighbors
from ._common import HIGH_ID_NOTE, HIGH_ID_THRESHOLD, distinct_neighbors

__all__ = ["LevinaBickelResult", "levina_bickel"]

_AVERAGES = ("inverse", "direct")


@dataclass(frozen=True)
class LevinaBickelResult(ResultMixin):
    """Result of :func:`levina_bickel`: ``id`` (mean of ``per_k`` over k1..k2), ``error``, the k
    range, the averaging, ``n`` points used, ``n_points`` given, ``n_duplicates`` dropped."""

    id: float
    error: float
    k1: int
    k2: int
    average: str
    n: int
    n_points: int
    n_duplicates: int
    likely_underestimate: bool
    note: str
    method: str = "levina_bickel"
    per_k: np.ndarray = field(default=None, repr=False)

    @property
    def estimate(self) -> float:
        return self.id


def levina_bickel(
    X: Any = None,
    *,
    neighbors: Neighbors | None = None,
    k1: int = 10,
    k2: int = 20,
    average: str = "inverse",
    duplicates: str = "drop",
    device: Any = None,
) -> LevinaBickelResult:
    r"""Levina–Bickel MLE of the intrinsic dimension averaged over k = k1..k2 (see module doc).

    Exact duplicates are handled as in :func:`twonn`; ``T_j`` are distances to distinct neighbours.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).standard_normal((2000, 5)) @ np.eye(5, 40)
        >>> round(levina_bickel(X).id)
        5
    """
    k1 = check_positive_int(k1, "k1", minimum=2)
    k2 = check_positive_int(k2, "k2", minimum=2)
    if k2 < k1:
        raise InputError(f"k2 must be >= k1; got k1={k1}, k2={k2}")
    if average not in _AVERAGES:
        raise UnknownNameError("averaging", average, _AVERAGES)
    nb = distinct_neighbors(X, neighbors=neighbors, m=k2, duplicates=duplicates, device=device,
                            where="Levina-Bickel")
    logT = np.log(nb.distances)  # (N, k2), T_1..T_k2
    N = logT.shape[0]
    csum = np.cumsum(logT, axis=1)
    per_k, errs = [], []
    for k in range(k1, k2 + 1):
        inv = logT[:, k - 1] - csum[:, k - 2] / (k - 1)  # (1/(k-1)) Σ_{j<k} log(T_k/T_j)
        if average == "inverse":
            mean_inv = float(inv.mean())
            if mean_inv <= 0:
                raise InputError(f"all {k} nearest neighbours are equidistant: the k={k} estimate is undefined")
            m = 1.0 / mean_inv
            se = m**2 * float(inv.std(ddof=1)) / math.sqrt(N)
        else:
            if (inv <= 0).any():
                raise InputError(
                    f"some points have {k} equidistant neighbours, so their local estimate is infinite; "
                    "use average='inverse'"
                )
            local = 1.0 / inv
            m = float(local.mean())
            se = float(local.std(ddof=1)) / math.sqrt(N)
        per_k.append(m)
        errs.append(se)
    d = float(np.mean(per_k))
    high = d > HIGH_ID_THRESHOLD
    return LevinaBickelResult(id=d, error=float(np.mean(errs)), k1=k1, k2=k2, average=average, n=N,
                              n_points=nb.n_points, n_duplicates=nb.n_duplicates,
                              likely_underestimate=bool(high), note=HIGH_ID_NOTE if high else "",
                              per_k=np.asarray(per_k))
