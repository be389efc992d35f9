r"""TwoNN intrinsic dimension (Facco, d'Errico, Rodriguez & Laio, Sci. Rep. 7, 12140, 2017), exactly as
used by Ansuini et al. (NeurIPS 2019).

For each point, :math:`\mu_i = r_2/r_1`, the ratio of the distances to its second and first nearest
neighbours.  On a d-dimensional manifold with locally constant density, :math:`\mu` follows the
Pareto law :math:`f(\mu) = d\,\mu^{-d-1}` (:math:`\mu \ge 1`), so
:math:`-\log(1-F(\mu)) = d \log \mu`.

* ``method="lsq"`` (the papers' estimator): sort the :math:`\mu_i`, take the empirical
  :math:`F(\mu_{(i)}) = i/N`, keep the smallest ``fraction`` (0.9) of them and fit
  :math:`y = -\log(1 - i/N)` against :math:`x = \log \mu_{(i)}` by least squares *through the origin*:
  :math:`d = \sum x y / \sum x^2`.  This is Ansuini's ``estimate()`` and DADApy's
  ``compute_id_2NN(algorithm="base")`` (same F, same ``int(N·fraction)`` points).
* ``method="mle"``: :math:`d = (N-1)/\sum_i \log \mu_i` over *all* points — the unbiased maximum
  likelihood estimator of the Pareto exponent (:math:`\sum\log\mu \sim \mathrm{Gamma}(N, d)`, so
  :math:`E[(N-1)/\sum\log\mu] = d`); the same normalisation as DADApy's ``algorithm="ml"``, which
  also ignores ``fraction``.  Its standard deviation is :math:`d/\sqrt{N-2}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._results import ResultMixin
from ..._validation import check_fraction
from ...errors import InputError, UnknownNameError
from ..neighbors import Neighbors
from ._common import HIGH_ID_NOTE, HIGH_ID_THRESHOLD, distinct_neighbors

__all__ = ["TwoNNResult", "twonn", "twonn_from_mu"]

_METHODS = ("lsq", "mle")


@dataclass(frozen=True)
class TwoNNResult(ResultMixin):
    """Result of :func:`twonn`.

    Attributes:
        id: the intrinsic-dimension estimate (also ``.estimate``).
        error: its statistical standard error under the Pareto model: :math:`d/\\sqrt{n}` for
            ``"lsq"`` (asymptotic std of the ML estimator on the same points, Facco et al. 2017 —
            the LSQ fit is at least this uncertain; use :func:`twonn_bootstrap` or
            :func:`twonn_scale` to measure the spread directly), :math:`d/\\sqrt{n-2}` for ``"mle"``.
        method: ``"lsq"`` or ``"mle"``; fraction: share of the sorted μ used by the LSQ fit.
        n: number of μ values that entered the estimate (the fit points for ``"lsq"``).
        n_points: rows given; n_unique: distinct rows (one μ each).
        n_duplicates: rows dropped as exact copies of another row.
        n_discarded: ``n_points - n``; discard_reason: why they were left out.
        fit_stderr: standard error of the regression slope (``"lsq"``; NaN for ``"mle"``);
        fit_r: Pearson correlation of the fit data (``"lsq"``).
        scale: mean of r1 and r2 over all points (the length scale the estimate refers to, as DADApy).
        fit_x, fit_y: :math:`\\log\\mu_{(i)}` and :math:`-\\log(1-i/N)` of the fitted points (for
            :func:`deepgeom.viz.id.plot_twonn_fit`); for ``"mle"`` all N points with plotting
            positions F = i/(N+1); mu: all μ values, sorted.
        likely_underestimate: the estimate exceeds 20, where TwoNN is biased low; note says so.
    """

    id: float
    error: float
    method: str
    fraction: float
    n: int
    n_points: int
    n_unique: int
    n_duplicates: int
    n_discarded: int
    discard_reason: str
    fit_stderr: float
    fit_r: float
    scale: float
    likely_underestimate: bool
    note: str
    fit_x: np.ndarray = field(repr=False)
    fit_y: np.ndarray = field(repr=False)
    mu: np.ndarray = field(repr=False)

    @property
    def estimate(self) -> float:
        return self.id


def _check_method(method: str) -> str:
    if method not in _METHODS:
        raise UnknownNameError("TwoNN method", method, _METHODS)
    return method


def twonn_from_mu(mu: np.ndarray, *, fraction: float = 0.9, method: str = "lsq") -> dict[str, Any]:
    r"""The TwoNN estimate from the ratios :math:`\mu = r_2/r_1` alone (all > 0, finite).

    Returns a dict with ``id, error, n, fit_stderr, fit_r, fit_x, fit_y, mu`` (sorted) — the core
    shared by :func:`twonn`, the scale analysis and the bootstrap.
    """
    _check_method(method)
    fraction = check_fraction(fraction, "fraction", open_low=True)
    mu = np.sort(np.asarray(mu, dtype=np.float64))
    N = mu.size
    if N < 3:
        raise InputError(f"TwoNN needs at least 3 distinct points; got {N}")
    if not np.isfinite(mu).all() or (mu < 1.0).any():
        raise InputError("mu = r2/r1 must be finite and >= 1")
    log_mu = np.log(mu)
    if method == "mle":
        s = float(log_mu.sum())
        if s <= 0.0:
            raise InputError("all mu = r2/r1 equal 1 (every point has two equidistant neighbours): no ID")
        d = (N - 1) / s
        err = d / math.sqrt(N - 2) if N > 2 else math.nan
        return dict(id=d, error=err, n=N, fit_stderr=math.nan, fit_r=math.nan,
                    fit_x=log_mu, fit_y=-np.log1p(-np.arange(1, N + 1) / (N + 1.0)), mu=mu)
    n_eff = min(int(N * fraction), N - 1)  # F = N/N = 1 would give log(0)
    if n_eff < 2:
        raise InputError(f"fraction={fraction} keeps {n_eff} of {N} points; the fit needs at least 2")
    x = log_mu[:n_eff]
    y = -np.log1p(-np.arange(1, n_eff + 1, dtype=np.float64) / N)
    sxx = float(x @ x)
    if sxx <= 0.0:
        raise InputError("the smallest mu = r2/r1 all equal 1 (lattice-like data): TwoNN's fit is undefined")
    d = float(x @ y) / sxx
    resid = y - d * x
    stderr = math.sqrt(float(resid @ resid) / max(1, n_eff - 1) / sxx)
    r = float(np.corrcoef(x, y)[0, 1]) if np.std(x) > 0 else math.nan
    return dict(id=d, error=d / math.sqrt(n_eff), n=n_eff, fit_stderr=stderr, fit_r=r, fit_x=x, fit_y=y, mu=mu)


def twonn(
    X: Any = None,
    *,
    neighbors: Neighbors | None = None,
    fraction: float = 0.9,
    method: str = "lsq",
    duplicates: str = "drop",
    device: Any = None,
) -> TwoNNResult:
    r"""TwoNN intrinsic dimension of the rows of X (Facco et al. 2017; Ansuini et al. 2019).

    .. math::  -\log\bigl(1 - F(\mu)\bigr) = d \log \mu, \qquad \mu = r_2 / r_1

    Exact duplicates (r1 = 0) are found exactly and one copy of each is kept, with a warning and the
    count in ``n_duplicates`` (``duplicates="drop"``), or refused (``duplicates="error"``); r1 and r2
    are then exact float64 distances to the two nearest *distinct* points.

    Differences from the references (same data, same neighbours):

    * DADApy ``compute_id_2NN``: identical formula and point selection (measured agreement
      ≤ 1e-10 relative, ``tests/fixtures/dadapy``).  DADApy does not remove duplicates: an exact copy
      gives μ = ∞, or a huge μ when float rounding puts it at a tiny nonzero distance — on float32
      data with 20% copied rows it returns 0.10 for a 5-D set (stored in the fixture).
    * scikit-dimension ``skdim.id.TwoNN``: the same fit through the origin on ``int(N·0.9)`` points
      with F = i/N (measured ≤ 1e-15 relative on data without duplicates).  It drops only μ = ∞, so
      copies at a rounded nonzero distance survive (0.14 instead of 4.8 with 20% copies).
    * Ansuini's ``estimate()`` also drops points with r1 == r2 (ties); continuous data have none, and
      here ties are kept (μ = 1 is a valid, if improbable, draw; lattice data have many).

    Args:
        X: (N, D) array, tensor or memmap (N ≥ 3); or pass ``neighbors`` (from
            :func:`deepgeom.functional.neighbors.knn`, k ≥ 2) to reuse one search.
        fraction: share of the smallest μ used by the LSQ fit (0.9 as in the papers).
        method: ``"lsq"`` (the papers') or ``"mle"`` (:math:`(N-1)/\sum\log\mu`).
        duplicates: ``"drop"`` or ``"error"``.
        device: where the neighbour search runs (``"auto"`` uses CUDA when present).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((2000, 3)) @ rng.standard_normal((3, 50))  # a 3-D plane in 50-D
        >>> round(twonn(X).id)
        3
    """
    _check_method(method)
    fraction = check_fraction(fraction, "fraction", open_low=True)
    nb = distinct_neighbors(X, neighbors=neighbors, m=2, duplicates=duplicates, where="TwoNN")
    r1, r2 = nb.distances[:, 0], nb.distances[:, 1]
    core = twonn_from_mu(r2 / r1, fraction=fraction, method=method)
    n_unique = int(r1.size)
    d = float(core["id"])
    high = d > HIGH_ID_THRESHOLD
    reasons = []
    if nb.n_duplicates:
        reasons.append(f"{nb.n_duplicates} exact duplicate rows (one copy of each kept)")
    if core["n"] < n_unique:
        reasons.append(f"{n_unique - core['n']} largest mu outside the fitted fraction {fraction}")
    return TwoNNResult(
        id=d,
        error=float(core["error"]),
        method=method,
        fraction=fraction,
        n=int(core["n"]),
        n_points=nb.n_points,
        n_unique=n_unique,
        n_duplicates=nb.n_duplicates,
        n_discarded=nb.n_points - int(core["n"]),
        discard_reason="; ".join(reasons) or "none",
        fit_stderr=float(core["fit_stderr"]),
        fit_r=float(core["fit_r"]),
        scale=float(np.mean(nb.distances[:, :2])),
        likely_underestimate=bool(high),
        note=HIGH_ID_NOTE if high else "",
        fit_x=core["fit_x"],
        fit_y=core["fit_y"],
        mu=core["mu"],
    )
