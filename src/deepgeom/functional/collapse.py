r"""Neural collapse (NC1–NC4) and spectrum summaries: effective rank, power-law α, PR, richness.

Neural collapse: Papyan, Han & Donoho, *Prevalence of neural collapse during the terminal phase of
deep learning training*, PNAS 2020. With penultimate features :math:`h_i`, labels :math:`y_i \in
\{0..C-1\}`, class means :math:`\mu_c`, global mean :math:`\mu_G` (mean of all features), centred class
means :math:`\tilde M` (rows :math:`\mu_c - \mu_G`) and classifier :math:`W` (C×p), bias :math:`b`:

.. math::

    \Sigma_B = \tfrac1C \sum_c (\mu_c-\mu_G)(\mu_c-\mu_G)^\top,\quad
    \Sigma_W = \tfrac1N \sum_i (h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top,\quad
    \mathrm{NC1} = \tfrac1C \operatorname{Tr}(\Sigma_W \Sigma_B^{+}),

    \mathrm{NC2}_{\mathrm{ETF}} = \Big\lVert \frac{\tilde M\tilde M^\top}{\lVert \tilde M\tilde M^\top\rVert_F}
        - \frac{I - \tfrac1C 11^\top}{\lVert I - \tfrac1C 11^\top\rVert_F} \Big\rVert_F,\qquad
    \mathrm{NC3} = \Big\lVert \frac{W}{\lVert W\rVert_F} - \frac{\tilde M}{\lVert \tilde M\rVert_F}\Big\rVert_F^2,

and NC4 is the fraction of points whose network prediction :math:`\arg\max_c (Wh+b)_c` differs from the
nearest-class-mean prediction :math:`\arg\min_c \lVert h-\mu_c\rVert`. NC2 also reports the two
components Papyan et al. plot: equal norms (std/mean of :math:`\lVert\mu_c-\mu_G\rVert`) and equal
angles (std of the pairwise cosines, which a simplex ETF makes all :math:`-1/(C-1)`).

All products go through :mod:`deepgeom.functional.matrix` and never form a p×p matrix: NC1 uses the
rank-(C−1) eigen-decomposition of :math:`\Sigma_B` from the C×C Gram of the centred means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._results import ResultMixin
from .._validation import check_labels, check_matrix, check_same_n
from ..errors import InputError
from . import matrix
from .cka import linear_cka
from .spectrum import Spectrum, effective_dimension, rank_tolerance

__all__ = [
    "class_kernel_distance",
    "CollapseMetrics",
    "PowerLawFit",
    "neural_collapse",
    "class_means",
    "effective_rank",
    "participation_ratio",
    "power_law_alpha",
    "richness",
    "simplex_etf",
]


@dataclass(frozen=True)
class CollapseMetrics(ResultMixin):
    """Neural-collapse metrics (Papyan et al. 2020); each is 0 at perfect collapse.

    Attributes:
        nc1: Tr(Σ_W Σ_B⁺)/C, within-class variability relative to between-class.
        nc2: distance of the normalised Gram of centred class means to the simplex ETF (= nc2_etf).
        nc2_equinorm: std/mean of the centred class-mean norms. nc2_equiangular: std of their pairwise cosines.
        nc2_etf: as nc2. nc2_w_equinorm, nc2_w_equiangular, nc2_w_etf: the same for the rows of W (or None).
        nc3: ‖W/‖W‖ − M̃/‖M̃‖‖²_F, classifier–means alignment (None without weights).
        nc4: fraction of points where the network's prediction ≠ the nearest class mean (None without
            weights or predictions).
        n_classes: C. n_samples: N. n_features: p.
    """

    nc1: float
    nc2: float
    nc2_equinorm: float
    nc2_equiangular: float
    nc2_etf: float
    nc3: float | None
    nc4: float | None
    nc2_w_equinorm: float | None
    nc2_w_equiangular: float | None
    nc2_w_etf: float | None
    n_classes: int
    n_samples: int
    n_features: int


def simplex_etf(n_classes: int) -> np.ndarray:
    r"""Gram matrix of a simplex ETF with unit vectors: :math:`\frac{C}{C-1}(I - \frac1C 11^\top)`."""
    c = int(n_classes)
    return (np.eye(c) - 1.0 / c) * c / (c - 1)


def _labels(labels: Any, n: int, n_classes: int | None) -> tuple[np.ndarray, int]:
    """Shared label checks, plus what the class-mean statistics need: every class present, C ≥ 2."""
    y, c = check_labels(labels, n, n_classes=n_classes)
    counts = np.bincount(y, minlength=c)
    if (counts == 0).any():
        missing = np.nonzero(counts == 0)[0][:10].tolist()
        raise InputError(f"every class needs at least one example; classes {missing} have none")
    if c < 2:
        raise InputError("neural-collapse metrics need at least 2 classes")
    return y, c


def class_means(features: Any, labels: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(means (C, p), global_mean (p,), counts (C,))`` in float64, streamed over row blocks."""
    H = check_matrix(features, "features", min_rows=2)
    y, c = _labels(labels, int(H.shape[0]), n_classes)
    return _class_sums(H, y, c)


def _class_sums(H: Any, y: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sums = torch.zeros((c, int(H.shape[1])), dtype=torch.float64)
    yt = torch.from_numpy(y)
    for start, stop, blk in matrix.iter_blocks(H, matrix.block_size_for(int(H.shape[1])), axis=0):
        sums.index_add_(0, yt[start:stop], matrix.as_tensor(blk).to(torch.float64).cpu())
    counts = np.bincount(y, minlength=c)
    means = sums.numpy() / counts[:, None]
    glob = sums.sum(0).numpy() / len(y)
    return means, glob, counts


def _nc2_parts(M: np.ndarray, what: str = "class mean") -> tuple[float, float, float]:
    """(equinorm, equiangular, ETF distance) of the rows of M (already centred)."""
    c = M.shape[0]
    norms = np.linalg.norm(M, axis=1)
    if norms.min() <= 0:
        raise InputError(f"a centred {what} is zero (it coincides with the mean of all of them); NC2 is undefined")
    equinorm = float(norms.std() / norms.mean())
    cos = (M @ M.T) / np.outer(norms, norms)
    off = cos[~np.eye(c, dtype=bool)]
    equiangular = float(off.std())
    G = M @ M.T
    etf = simplex_etf(c)
    dist = float(np.linalg.norm(G / np.linalg.norm(G) - etf / np.linalg.norm(etf)))
    return equinorm, equiangular, dist


def neural_collapse(
    features: Any,
    labels: Any,
    weights: Any = None,
    bias: Any = None,
    predictions: Any = None,
    *,
    n_classes: int | None = None,
) -> CollapseMetrics:
    r"""NC1–NC4 of Papyan, Han & Donoho (PNAS 2020) from penultimate features (formulas in module docs).

    Args:
        features: ``(N, p)`` penultimate features h_i.
        labels: ``(N,)`` integer classes 0..C−1; every class must occur.
        weights: classifier ``W`` of shape ``(C, p)`` (``nn.Linear.weight``) → NC3, NC4 and NC2 of W.
        bias: ``(C,)`` classifier bias (default 0), used for the network prediction in NC4.
        predictions: ``(N,)`` network predictions; if given, NC4 uses them instead of argmax(Wh+b).
        n_classes: C (default: W's rows, else max label + 1).

    Returns:
        :class:`CollapseMetrics`.

    Example:
        >>> import numpy as np
        >>> means = np.eye(3) - 1 / 3                    # a simplex ETF (centred one-hot)
        >>> y = np.repeat(np.arange(3), 4)
        >>> m = neural_collapse(means[y], y, weights=means)
        >>> round(m.nc1, 12), round(m.nc2, 12), round(m.nc3, 12), m.nc4
        (0.0, 0.0, 0.0, 0.0)
    """
    H = check_matrix(features, "features", min_rows=2)
    n, p = int(H.shape[0]), int(H.shape[1])
    W = None
    if weights is not None:
        W = np.asarray(check_matrix(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, "weights"),
                       dtype=np.float64)
        if W.shape[1] != p:
            raise InputError(f"weights must have shape (C, {p}) like nn.Linear.weight; got {W.shape}")
        if n_classes is None:
            n_classes = W.shape[0]
        elif W.shape[0] != n_classes:
            raise InputError(f"weights have {W.shape[0]} rows but n_classes={n_classes}")
        if not np.any(W):
            raise InputError("weights are all zero; NC3 and the network's predictions are undefined")
    b = None
    if bias is not None:
        if W is None:
            raise InputError("bias needs weights (the classifier's nn.Linear.weight) too")
        b = np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias, dtype=np.float64).reshape(-1)
        if b.shape != (W.shape[0],) or not np.isfinite(b).all():
            raise InputError(f"bias must be a finite vector of shape ({W.shape[0]},); got shape {b.shape}")
    # every NC metric is invariant to the features' scale (NC4's argmax(Wh + b) to that of (h, b)
    # together): features beyond 2^±64 are read scaled by 2^-e (exact), the bias with them, or
    # squares of 1e300 features overflow (nc1 was NaN)
    H, e = matrix.unit_scaled(H)
    if e and b is not None:
        b = matrix.mul_pow2(b, -e)
    y, c = _labels(labels, n, n_classes)
    means, glob, counts = _class_sums(H, y, c)
    Mt = means - glob  # centred class means, (C, p)

    # NC1 = Tr(Σ_W Σ_B⁺)/C without p×p matrices: Σ_B = Bᵀdiag(s²)B from the SVD of M̃/√C.
    A = torch.from_numpy(Mt / math.sqrt(c))
    _, s, Vh = torch.linalg.svd(A, full_matrices=False)
    keep = s > s.max() * max(c, p) * np.finfo(np.float64).eps
    if not bool(keep.any()):
        raise InputError("all class means coincide (Σ_B = 0); NC1 is undefined")
    B = Vh[keep].T  # (p, r) orthonormal directions of Σ_B
    means_t = torch.from_numpy(means)
    yt = torch.from_numpy(y)
    proj_sq = torch.zeros(B.shape[1], dtype=torch.float64)
    for start, stop, blk in matrix.iter_blocks(H, matrix.block_size_for(p), axis=0):
        Z = (matrix.as_tensor(blk).to(torch.float64).cpu() - means_t[yt[start:stop]]) @ B
        proj_sq += (Z**2).sum(0)
    nc1 = float((proj_sq / n / s[keep] ** 2).sum() / c)

    equinorm, equiangular, etf = _nc2_parts(Mt)
    nc3 = w_parts = None
    nc4 = None
    if W is not None:
        nc3 = float(np.linalg.norm(W / np.linalg.norm(W) - Mt / np.linalg.norm(Mt)) ** 2)
        Wc = W - W.mean(0)
        # NC2 of the classifier is undefined (NaN) when a centred row is zero, e.g. identical rows
        w_parts = _nc2_parts(Wc, "classifier row") if np.linalg.norm(Wc, axis=1).min() > 0 else (np.nan,) * 3
    if predictions is not None or W is not None:
        # nearest class mean: argmin_c ‖h‖² − 2 h·μ_c + ‖μ_c‖²  (the ‖h‖² term does not change the argmin)
        hm = matrix.gram(H, means_t).cpu()
        ncc = torch.argmin(-2.0 * hm + (means_t**2).sum(1), dim=1).numpy()
        if predictions is not None:
            pred = predictions.detach().cpu().numpy() if isinstance(predictions, torch.Tensor) else np.asarray(predictions)
            if pred.shape != (n,):
                raise InputError(f"predictions must have shape ({n},); got {pred.shape}")
        else:
            logits = matrix.gram(H, torch.from_numpy(W)).cpu().numpy() + (0.0 if b is None else b)
            pred = logits.argmax(1)
        nc4 = float(np.mean(pred != ncc))
    return CollapseMetrics(
        nc1=nc1,
        nc2=etf,
        nc2_equinorm=equinorm,
        nc2_equiangular=equiangular,
        nc2_etf=etf,
        nc3=nc3,
        nc4=nc4,
        nc2_w_equinorm=None if w_parts is None else w_parts[0],
        nc2_w_equiangular=None if w_parts is None else w_parts[1],
        nc2_w_etf=None if w_parts is None else w_parts[2],
        n_classes=c,
        n_samples=n,
        n_features=p,
    )


def _eigenvalues_of(x: Any, name: str) -> np.ndarray:
    """Eigenvalues from a Spectrum or a 1-D array of nonnegative values, descending."""
    if isinstance(x, Spectrum):
        return np.asarray(x.eigenvalues, dtype=np.float64)
    lam = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise InputError(f"{name} must be a Spectrum or a 1-D array of eigenvalues; got shape {lam.shape}")
    if not np.isfinite(lam).all():
        raise InputError(f"{name} contains NaN or Inf")
    if (lam < -1e-12 * max(1.0, float(np.abs(lam).max()))).any():
        raise InputError(f"{name} must be nonnegative (eigenvalues of a kernel); got min {lam.min()!r}")
    return np.sort(np.clip(lam, 0, None))[::-1]


def effective_rank(X: Any) -> float:
    r"""RankMe effective rank (Garrido, Balestriero, Najman & LeCun, ICML 2023) of an (N, D) matrix.

    .. math:: \mathrm{RankMe}(X) = \exp\Big(-\sum_k p_k \log p_k\Big),\quad
              p_k = \frac{\sigma_k}{\sum_j \sigma_j}

    with :math:`\sigma_k` the singular values of X (uncentred, as in the paper). Accepts the matrix or a
    :class:`Spectrum` (then :math:`\sigma_k \propto \sqrt{\rho_k}`). 1 for rank one; D for orthogonal
    columns of equal norm.
    """
    if isinstance(X, Spectrum):
        lam = np.asarray(X.eigenvalues)
    else:
        X = check_matrix(X, "X")
        n, d = X.shape
        X, _ = matrix.unit_scaled(X)  # RankMe does not see the scale: data beyond 2^±64 read scaled (exact)
        M = matrix.gram(X) if n <= d else matrix.covariance(X, center=False)
        lam = torch.linalg.eigvalsh(M.cpu()).clamp_min(0).numpy()[::-1]
    sig = np.sqrt(np.clip(lam, 0, None))
    if sig.sum() <= 0:
        raise InputError("X is all zeros; its effective rank is undefined")
    return effective_dimension(sig)


def participation_ratio(eigenvalues: Any) -> float:
    r"""Participation ratio :math:`(\sum_k\lambda_k)^2 / \sum_k \lambda_k^2` of a spectrum (Gao et al. 2017).

    Between 1 (one mode) and the number of equal nonzero eigenvalues. Accepts a :class:`Spectrum` or
    a 1-D array of eigenvalues.
    """
    lam = _eigenvalues_of(eigenvalues, "eigenvalues")
    if lam[0] > 0:  # a ratio: scaled by a power of two (exact) so that the squares of 1e280 cannot overflow
        lam = np.ldexp(lam, -math.frexp(float(lam[0]))[1])
    s2 = float((lam**2).sum())
    if s2 <= 0:
        raise InputError("all eigenvalues are zero; the participation ratio is undefined")
    return float(lam.sum() ** 2 / s2)


@dataclass(frozen=True)
class PowerLawFit(ResultMixin):
    """Least-squares fit of log ρ_k = c − α log k over k in ``k_range`` (inclusive)."""

    alpha: float
    intercept: float
    r2: float
    k_range: tuple[int, int]


def power_law_alpha(eigenvalues: Any, *, k_min: int = 1, k_max: int | None = None) -> PowerLawFit:
    r"""Exponent α of a power-law spectrum :math:`\rho_k \propto k^{-\alpha}` (Stringer et al. 2019; Agrawal et al. 2022).

    Ordinary least squares of :math:`\log\rho_k` on :math:`\log k` over ``k_min ≤ k ≤ k_max``. The
    default range is every eigenvalue above the rank tolerance, from k = 1; pass ``k_min=2`` to leave out
    the constant mode of an uncentred spectrum, and a smaller ``k_max`` to leave out the noisy tail.
    Needs at least 3 points in range. Returns :class:`PowerLawFit` (α, intercept, R²).
    """
    lam = _eigenvalues_of(eigenvalues, "eigenvalues")
    if isinstance(eigenvalues, Spectrum):
        tol = rank_tolerance(lam, eigenvalues.n_samples, eigenvalues.n_features)
    else:
        tol = lam.size * np.finfo(np.float64).eps * lam[0]
    r = int((lam > tol).sum())
    hi = r if k_max is None else min(int(k_max), r)
    lo = int(k_min)
    if lo < 1 or hi - lo + 1 < 3:
        raise InputError(f"power_law_alpha needs >= 3 nonzero eigenvalues in k_min..k_max; got range {lo}..{hi} "
                         f"({r} nonzero)")
    k = np.arange(lo, hi + 1, dtype=np.float64)
    x, yv = np.log(k), np.log(lam[lo - 1 : hi])
    slope, intercept = np.polyfit(x, yv, 1)
    resid = yv - (slope * x + intercept)
    ss = float(((yv - yv.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0
    return PowerLawFit(alpha=float(-slope), intercept=float(intercept), r2=r2, k_range=(lo, hi))


def richness(features: Any, outputs: Any) -> float:
    r"""Low-rank richness score :math:`D_{LR} = 1 - \mathrm{CKA}(K, K_{ideal})` (Nam et al. 2024, later versions).

    :math:`K = \Phi\Phi^\top` is the feature kernel and :math:`K_{ideal} = QQ^\top` the projection onto
    the constant plus the span of the network's outputs (Q an orthonormal basis of ``[1, outputs]``);
    CKA is linear CKA (Kornblith et al. 2019) from :func:`deepgeom.functional.cka.linear_cka`, which
    centres both kernels (so the constant direction itself drops out). 0 when the centred kernel is a
    multiple of the projection onto the outputs' span (features carry nothing else, with equal weights —
    e.g. an exact simplex-ETF collapse); towards 1 when the kernel holds much the outputs do not use.
    """

    H = check_matrix(features, "features", min_rows=2)
    F = outputs.detach().cpu().numpy() if isinstance(outputs, torch.Tensor) else np.asarray(outputs)
    if F.ndim == 1:
        F = F[:, None]
    F = np.asarray(check_matrix(F, "outputs"), dtype=np.float64)
    check_same_n(H, F, ("features", "outputs"))
    A = np.hstack([np.ones((F.shape[0], 1)), F])
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    Q = U[:, s > s.max() * max(A.shape) * np.finfo(np.float64).eps]
    if Q.shape[1] < 2:
        raise InputError("outputs are constant over the sample; the ideal kernel has no non-constant part")
    return float(1.0 - linear_cka(H, Q))


def class_kernel_distance(features: Any, labels: Any, n_classes: int | None = None) -> float:
    r"""Distance of the feature kernel from the block-constant rank-C kernel of neural collapse.

    :math:`1 - \mathrm{CKA}(K, K_{class})` with :math:`K = \Phi\Phi^\top` and :math:`K_{class} = QQ^\top`
    the projection onto the constant and the class indicators (Q an orthonormal basis of
    ``[1, onehot(labels)]``); linear CKA (Kornblith et al. 2019) centres both. At terminal neural
    collapse (Papyan et al. 2020: features at their class means, the centred means a simplex ETF) the
    kernel is block-constant, :math:`K_{ij}` depends only on whether :math:`y_i = y_j`, and the distance is
    0; Nam et al. (2024) read neural collapse this way. It is :func:`richness` with the one-hot labels in
    place of the network's outputs: it asks whether the kernel holds the classes and nothing else.
    """
    H = check_matrix(features, "features", min_rows=2)
    y, c = _labels(labels, int(H.shape[0]), n_classes)
    if c < 2:
        raise InputError("class_kernel_distance needs at least two classes")
    Y = np.zeros((y.shape[0], c))
    Y[np.arange(y.shape[0]), y] = 1.0
    return richness(H, Y)
