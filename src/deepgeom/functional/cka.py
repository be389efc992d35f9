r"""Centered kernel alignment (CKA): linear, RBF, debiased and minibatch.

Formulas (Kornblith, Norouzi, Lee, Hinton, ICML 2019, "Similarity of Neural Network
Representations Revisited", and its reference notebook):

.. math::

    \mathrm{CKA}(K, L) = \frac{\mathrm{HSIC}(K, L)}{\sqrt{\mathrm{HSIC}(K, K)\,\mathrm{HSIC}(L, L)}},
    \qquad \mathrm{HSIC}(K, L) = \frac{\operatorname{tr}(KHLH)}{(n-1)^2},\quad H = I - \tfrac1n 11^\top

with :math:`K = XX^\top` (linear) or :math:`K_{ij} = \exp(-\lVert x_i-x_j\rVert^2 / (2\sigma^2 m))`
(RBF, :math:`m` the median squared distance, :math:`\sigma` a fraction of the median distance).
For the linear kernel the feature-space form :math:`\lVert \tilde Y^\top \tilde X\rVert_F^2 /
(\lVert \tilde X^\top \tilde X\rVert_F \lVert \tilde Y^\top \tilde Y\rVert_F)` (columns centred) is used
whenever it is cheaper than the N×N Gram matrices.

*Debiased* CKA replaces HSIC by the unbiased estimator of Song, Smola, Gretton, Bedo, Borgwardt
(JMLR 2012),

.. math::

    \mathrm{HSIC}_1(K, L) = \frac{1}{n(n-3)}\Big[\operatorname{tr}(\tilde K\tilde L)
      + \frac{1^\top\tilde K 1\, 1^\top\tilde L 1}{(n-1)(n-2)} - \frac{2}{n-2} 1^\top \tilde K\tilde L 1\Big],

(:math:`\tilde K, \tilde L` with zeroed diagonals), computed here through the U-centred matrices
(Székely & Rizzo 2014) as :math:`\langle U(K), U(L)\rangle_F / (n(n-3))` — the same number, and the
form that turns all layer pairs into one matrix product.

*Minibatch CKA* (Nguyen, Raghu, Kornblith, ICLR 2021) is a ratio of sums over minibatches,
:math:`\sum_i \mathrm{HSIC}_1(K_i, L_i) / \sqrt{\sum_i \mathrm{HSIC}_1(K_i,K_i)\sum_i \mathrm{HSIC}_1(L_i,L_i)}`;
:mod:`deepgeom.functional.minibatch_cka` computes one batch's terms with the pair product
:func:`unbiased_hsic` uses, adds them up and forms the ratio; the stateful accumulator over those
functions is :class:`deepgeom.analysis.streaming.MinibatchCKA`.

Precision: every Gram matrix is built from columns centred with exact float64 means (per batch in
the minibatch form); U-centring, HSIC terms and their running sums are float64. Column centring does
not change any estimator here (HKH is invariant to it, and U-centring annihilates the rank-one terms
it removes), but it removes the large common offset of ReLU features that makes float32 unbiased HSIC
negative. The Gram products themselves run in ``compute_dtype``: float64 by default for the
single-matrix functions; minibatch CKA and the heatmaps default to ``"auto"``, float32 products for
float32 activations (their own precision; see :func:`deepgeom.functional.matrix.product_dtype`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import check_matrix, check_same_n
from ..errors import InputError, UnknownNameError
from .matrix import (
    as_tensor,
    block_size_for,
    center_gram,
    column_mean,
    gram,
    iter_blocks,
    mul_pow2,
    product_dtype,
    resolve_device,
    unit_scaled,
)

__all__ = [
    "gram_linear",
    "gram_rbf",
    "u_center",
    "hsic",
    "unbiased_hsic",
    "unbiased_hsic_pairs",
    "kernel_cka",
    "linear_cka",
    "rbf_cka",
    "cka",
    "KERNELS",
]

KERNELS = ("linear", "rbf")
#: CKA on fewer rows is degenerate: with n = 2 the centred kernels have rank 1 and every linear or RBF
#: CKA is 1 whatever the data; n = 3 leaves one 2-D configuration; the unbiased HSIC divides by n(n−3)
MIN_CKA_ROWS = 4


# --------------------------------------------------------------------------------------------- checks
def _check_data(X: Any, name: str, min_rows: int) -> Any:
    X = check_matrix(X, name, min_rows=min_rows)
    return X


def _check_pair(X: Any, Y: Any, debiased: bool) -> int:
    X = _check_data(X, "X", 1)
    Y = _check_data(Y, "Y", 1)
    n = check_same_n(X, Y)
    if n < MIN_CKA_ROWS:
        what = ("the unbiased HSIC estimator (debiased CKA) divides by n(n-3)" if debiased else
                "CKA (with 2 rows it is 1 for any data, with 3 nearly so)")
        raise InputError(f"{what} needs at least {MIN_CKA_ROWS} examples (rows); got {n}")
    return n


def _check_square(K: Any, name: str, min_n: int) -> torch.Tensor:
    K = as_tensor(K).to(torch.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise InputError(f"{name} must be a square (n, n) kernel matrix; got shape {tuple(K.shape)}")
    if K.shape[0] < min_n:
        raise InputError(f"{name} needs at least {min_n} examples (n >= {min_n}) for this estimator; got n = {K.shape[0]}")
    if not torch.isfinite(K).all():
        raise InputError(f"{name} contains NaN or Inf")
    scale = float(K.abs().max()) or 1.0
    if float((K - K.T).abs().max()) > 1e-8 * scale:
        raise InputError(f"{name} must be symmetric (a kernel matrix); max |K - Kᵀ| = {float((K - K.T).abs().max()):.3g}")
    return K


def _unit_kernel(K: torch.Tensor) -> torch.Tensor:
    """K scaled by a power of two (exact) so that its largest entry is in [½, 1): for ratios that do
    not see the kernel's scale (CKA), whose products of entries would otherwise overflow."""
    e = math.frexp(float(K.abs().max()))[1]
    return mul_pow2(K, -e) if e else K


def _ratio(xy: float, xx: float, yy: float, what: str = "") -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), with a clear error when a norm vanishes."""
    if not (math.isfinite(xy) and math.isfinite(xx) and math.isfinite(yy)):
        raise InputError(f"the HSIC terms of X{what} and Y{what} are not finite ({xy:.3g}, {xx:.3g}, {yy:.3g}): "
                         "the data overflow float64 even after rescaling")
    if not xx > 0:
        raise InputError(
            f"X{what} has no variance left after centring (constant features or rank too low for the "
            f"estimator): HSIC(K, K) = {xx:.3g}, so CKA is undefined"
        )
    if not yy > 0:
        raise InputError(
            f"Y{what} has no variance left after centring (constant features or rank too low for the "
            f"estimator): HSIC(L, L) = {yy:.3g}, so CKA is undefined"
        )
    return float(xy / (math.sqrt(xx) * math.sqrt(yy)))  # not √(xx·yy): it underflows for tiny data


#: tr(K) / ‖centred K‖_F above which a float32 Gram product is redone in float64 (see below)
DIAGONAL_SHARE_LIMIT = 256.0


def float32_too_coarse(trace: float, centred_norm: float) -> bool:
    """Whether a kernel from a float32 Gram product should be redone in float64.

    The product's rounding scales with the rows' squared norms (their sum is tr K); centring —
    U-centring above all, which zeroes the diagonal — can leave much less than that, and the
    rounding then weighs on CKA. Measured (CKA from float32 against float64 products): ratios
    tr K / ‖U(K)‖_F of 1.4–10 on the benchmark's ReLU and tanh layers (errors ~1e-9); 332 for
    i.i.d. Gaussian layers at n = 32, D = 102,400 (3.3e-7); 640 for a batch with one "massive
    activation" row, 10⁴ in 2 of 768 features (9.4e-7); 2.8e5 for one private feature of size 10³
    per example (2e-6–2e-5). Above 256 the product is redone in float64.
    """
    return not trace <= DIAGONAL_SHARE_LIMIT * centred_norm


def centred_linear_kernel(X: Any, centre: Any, *, compute_dtype: torch.dtype | str = "auto",
                          device: str | torch.device | None = None, out: torch.Tensor | None = None,
                          with_self: bool = False) -> Any:
    """``centre(gram(X, center=True))`` — the linear kernel as every CKA form uses it, with a kernel
    from float32 products redone in float64 when :func:`float32_too_coarse` says the centring left
    too little beside their rounding. ``centre`` maps the float64 kernel to its centred form (U-centring,
    or the identity for HKH); ``out`` receives the Gram product. ``with_self``: return (K, ⟨K, K⟩)."""
    dev = resolve_device(device)
    dtype = product_dtype(compute_dtype, X, dev)
    for attempt in (dtype, torch.float64):
        K = gram(X, center=True, compute_dtype=attempt, device=dev, out=out)
        trace = float(K.diagonal().sum())
        K = centre(K)
        self_dot = float(torch.dot(K.reshape(-1), K.reshape(-1)))
        if attempt != torch.float32 or not float32_too_coarse(trace, math.sqrt(self_dot)):
            break
    return (K, self_dot) if with_self else K


# ---------------------------------------------------------------------------------------------- grams
def gram_linear(X: Any, *, center: bool = True, compute_dtype: torch.dtype | str = torch.float64,
                device: str | torch.device | None = None) -> torch.Tensor:
    r"""Linear kernel :math:`K = XX^\top` (N×N, float64), by the shared matrix core.

    ``center=True`` (default) centres the columns first, i.e. returns :math:`HXX^\top H`; every CKA
    form here is unchanged by that, and it avoids cancellation for features with a large offset.

    Example:
        >>> import numpy as np
        >>> gram_linear(np.array([[1.0], [3.0]])).numpy().tolist()
        [[1.0, -1.0], [-1.0, 1.0]]
    """
    X = check_matrix(X, "X")
    return gram(X, center=center, compute_dtype=compute_dtype, device=device)


def gram_rbf(X: Any, sigma: float = 0.8, *, compute_dtype: torch.dtype | str = torch.float64,
             device: str | torch.device | None = None) -> torch.Tensor:
    r"""RBF kernel with a bandwidth relative to the median distance (Kornblith et al. 2019).

    .. math:: K_{ij} = \exp\!\Big(-\frac{\lVert x_i - x_j\rVert^2}{2\,\sigma^2\, m}\Big),\qquad
              m = \operatorname{median}_{i,j} \lVert x_i - x_j\rVert^2

    exactly as the reference notebook's ``gram_rbf(x, threshold=sigma)``: the median runs over all
    N² entries (diagonal zeros included), so :math:`\sigma\sqrt m` is σ times the median distance.
    The paper used σ ∈ {0.2, 0.4, 0.8}.

    Raises:
        InputError: σ ≤ 0, or the median squared distance is 0 (half the pairs are duplicates).
    """
    X = check_matrix(X, "X", min_rows=2)
    sigma = float(sigma)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise InputError(f"sigma (RBF bandwidth as a fraction of the median distance) must be > 0; got {sigma!r}")
    X, _ = unit_scaled(X)  # the kernel only sees distances relative to their median: exact for any scale
    # distances as |a|² + |b|² − 2ab cancel where the median distance is small next to the norms: a
    # float32 product would lose them (a tight cluster beside far points: CKA off by 0.05), so
    # "auto" means float64 here
    dtype = torch.float64 if compute_dtype == "auto" else compute_dtype
    G = gram(X, center=True, compute_dtype=dtype, device=device)  # distances don't see centring
    sq = torch.diagonal(G)
    D2 = (sq[:, None] + sq[None, :] - 2.0 * G).clamp_min_(0.0)
    D2.fill_diagonal_(0.0)
    med = float(np.median(D2.cpu().numpy()))
    if not med > 0:
        raise InputError("the median squared distance between rows of X is 0 (mostly duplicate rows): "
                         "the RBF bandwidth is undefined")
    return torch.exp(-D2 / (2.0 * sigma**2 * med))


# ---------------------------------------------------------------------------------------------- HSIC
def u_center(K: Any) -> torch.Tensor:
    r"""U-centring of a kernel matrix (Székely & Rizzo 2014), float64, zero diagonal.

    .. math:: \tilde U_{ij} = \tilde K_{ij} - \frac{\tilde K_{i\cdot}}{n-2} - \frac{\tilde K_{\cdot j}}{n-2}
              + \frac{\tilde K_{\cdot\cdot}}{(n-1)(n-2)}\ (i \ne j),\qquad \tilde U_{ii} = 0

    with :math:`\tilde K` the kernel with zeroed diagonal. Accepts a stack (..., n, n);
    :math:`\langle U(K), U(L)\rangle_F / (n(n-3))` is Song et al.'s unbiased HSIC. This is
    ``center_gram(gram, unbiased=True)`` of Kornblith et al.'s notebook.
    """
    return _u_center_(as_tensor(K).to(torch.float64).clone())


def _u_center_(U: torch.Tensor) -> torch.Tensor:
    """:func:`u_center` in place on a float64 tensor (..., n, n) that the caller owns."""
    n = U.shape[-1]
    if n < 3:
        raise InputError(f"U-centring needs n >= 3; got n = {n}")
    U.diagonal(dim1=-2, dim2=-1).zero_()
    means = U.sum(-2) / (n - 2)
    means = means - means.sum(-1, keepdim=True) / (2 * (n - 1))
    U -= means.unsqueeze(-1)
    U -= means.unsqueeze(-2)
    U.diagonal(dim1=-2, dim2=-1).zero_()
    return U


def unbiased_hsic_pairs(Ks: Sequence[Any] | torch.Tensor, Ls: Sequence[Any] | torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Song et al.'s unbiased HSIC for every pair of kernels from two lists of n×n kernels.

    Returns ``(hsic_kl, hsic_kk, hsic_ll)``: an (A, B) float64 matrix of
    :math:`\mathrm{HSIC}_1(K_a, L_b)` and the two vectors of self terms. With ``Ls=None`` the pairs
    are within ``Ks`` (and the U-centred stack is built once). All pairs come from one matrix
    product of the flattened U-centred kernels, :math:`U_K U_L^\top / (n(n-3))`.
    """
    def stack(mats):  # a fresh float64 (L, n, n) tensor that may be U-centred in place
        if isinstance(mats, torch.Tensor) and mats.ndim == 3:
            return mats.to(torch.float64, copy=True)
        return torch.stack([as_tensor(m).to(torch.float64) for m in mats])

    return _hsic_pairs_(stack(Ks), None if Ls is None else stack(Ls))


def _hsic_pairs_(A: torch.Tensor, B: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`unbiased_hsic_pairs` on float64 stacks the caller owns (U-centred in place, no copy)."""
    for T in (A, B):
        if T is not None and (T.ndim != 3 or T.shape[-1] != T.shape[-2]):
            raise InputError(f"kernels must be square (n, n) matrices; got a stack of shape {tuple(T.shape)}")
    n = A.shape[-1]
    if n < 4:
        raise InputError(f"the unbiased HSIC estimator divides by n(n-3) and needs n >= 4 examples; got n = {n}")
    if B is not None and B.shape[-1] != n:
        raise InputError(f"kernels from the two sides must be on the same n examples; got {n} and {B.shape[-1]}")
    return _centred_pairs(_u_center_(A), None if B is None else _u_center_(B))


def _centred_pairs(Ua: torch.Tensor, Ub: torch.Tensor | None, kk: torch.Tensor | None = None,
                   ll: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""HSIC₁ of every pair of U-centred (L, n, n) stacks, :math:`\langle U_a, U_b\rangle_F / (n(n-3))`;
    ``kk``/``ll``, the self products ⟨U, U⟩ when the caller already has them."""
    n = Ua.shape[-1]
    scale = 1.0 / (n * (n - 3))
    Ua = Ua.reshape(Ua.shape[0], -1)
    Ub = Ua if Ub is None else Ub.reshape(Ub.shape[0], -1)
    kl = (Ua @ Ub.T) * scale
    kk = (torch.linalg.vecdot(Ua, Ua) if kk is None else kk) * scale
    ll = kk if Ub is Ua else (torch.linalg.vecdot(Ub, Ub) if ll is None else ll) * scale
    return kl, kk, ll


def unbiased_hsic(K: Any, L: Any) -> float:
    r"""Unbiased HSIC estimator :math:`\mathrm{HSIC}_1(K, L)` of Song et al. (JMLR 2012), eq. (5).

    .. math:: \frac{1}{n(n-3)}\Big[\operatorname{tr}(\tilde K\tilde L) + \frac{1^\top\tilde K1\,1^\top\tilde L1}
              {(n-1)(n-2)} - \frac{2}{n-2}1^\top\tilde K\tilde L1\Big]

    Needs n ≥ 4. Built on :func:`unbiased_hsic_pairs` (the minibatch accumulator uses it too).

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(50, 3))
        >>> round(unbiased_hsic(X @ X.T, X @ X.T), 6) > 0
        True
    """
    K = _check_square(K, "K", 4)
    L = _check_square(L, "L", 4)
    if K.shape != L.shape:
        raise InputError(f"K and L must be on the same examples; got shapes {tuple(K.shape)} and {tuple(L.shape)}")
    (K, eK), (L, eL) = _split_scale(K), _split_scale(L)
    return _scaled_back(float(unbiased_hsic_pairs([K], [L])[0][0, 0]), eK + eL)


def hsic(K: Any, L: Any, *, unbiased: bool = False) -> float:
    r"""HSIC between two kernel matrices on the same n examples.

    Biased (Gretton et al. 2005): :math:`\operatorname{tr}(KHLH)/(n-1)^2`; ``unbiased=True``:
    Song et al.'s :math:`\mathrm{HSIC}_1` (:func:`unbiased_hsic`).
    """
    if unbiased:
        return unbiased_hsic(K, L)
    K = _check_square(K, "K", 2)
    L = _check_square(L, "L", 2)
    if K.shape != L.shape:
        raise InputError(f"K and L must be on the same examples; got shapes {tuple(K.shape)} and {tuple(L.shape)}")
    n = K.shape[0]
    (K, eK), (L, eL) = _split_scale(K), _split_scale(L)
    return _scaled_back(float((center_gram(K) * L).sum() / (n - 1) ** 2), eK + eL)


def _split_scale(K: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(K·2⁻ᵉ, e) with the largest entry of K·2⁻ᵉ in [½, 1): products of entries cannot overflow."""
    e = math.frexp(float(K.abs().max()))[1]
    return (mul_pow2(K, -e), e) if e else (K, 0)


def _scaled_back(value: float, e: int) -> float:
    """``value · 2ᵉ``, or an InputError when float64 cannot hold it (HSIC of kernels near 1e±160 and beyond)."""
    try:
        out = math.ldexp(value, e)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out) or (out == 0.0 and value != 0.0):
        raise InputError(f"HSIC of these kernels is {value:.6g}·2^{e}, outside float64's range; rescale the "
                         "kernels (CKA, a ratio, is unaffected)")
    return out


def kernel_cka(K: Any, L: Any, *, debiased: bool = False) -> float:
    r"""CKA from two kernel matrices: :math:`\mathrm{HSIC}(K,L)/\sqrt{\mathrm{HSIC}(K,K)\mathrm{HSIC}(L,L)}`.

    Biased HSIC by default (Kornblith et al. 2019, eq. 3-4); ``debiased=True`` uses the unbiased
    estimator (their "debiased CKA"), n ≥ 4.
    """
    K = _unit_kernel(_check_square(K, "K", MIN_CKA_ROWS))
    L = _unit_kernel(_check_square(L, "L", MIN_CKA_ROWS))
    if K.shape != L.shape:
        raise InputError(f"K and L must be on the same examples; got shapes {tuple(K.shape)} and {tuple(L.shape)}")
    if debiased:
        kl, kk, ll = unbiased_hsic_pairs([K], [L])
        return _ratio(float(kl[0, 0]), float(kk[0]), float(ll[0]))
    Kc, Lc = center_gram(K), center_gram(L)
    return _ratio(float((Kc * Lc).sum()), float((Kc * Kc).sum()), float((Lc * Lc).sum()))


# ------------------------------------------------------------------------------------------- linear
def _feature_moments(X: Any, Y: Any) -> dict[str, torch.Tensor]:
    """One streamed pass over row blocks of centred X and Y: XᵀX, YᵀY, XᵀY and centred row norms²."""
    mx, my = column_mean(X), column_mean(Y)
    d1, d2 = X.shape[1], Y.shape[1]
    rows = block_size_for(d1 + d2, 8)
    XX = torch.zeros((d1, d1), dtype=torch.float64)
    YY = torch.zeros((d2, d2), dtype=torch.float64)
    XY = torch.zeros((d1, d2), dtype=torch.float64)
    rx, ry = [], []
    for start, stop, xb in iter_blocks(X, rows, axis=0):
        xb = as_tensor(xb).to(torch.float64) - mx
        yb = as_tensor(Y[start:stop]).to(torch.float64) - my
        XX += xb.T @ xb
        YY += yb.T @ yb
        XY += xb.T @ yb
        rx.append((xb * xb).sum(1))
        ry.append((yb * yb).sum(1))
    return {"XX": XX, "YY": YY, "XY": XY, "rx": torch.cat(rx), "ry": torch.cat(ry)}


def _debias(xty: torch.Tensor | float, rx: torch.Tensor, ry: torch.Tensor, n: int) -> float:
    """Kornblith et al.'s feature-space unbiased HSIC × n(n-3), from centred row norms."""
    sx, sy = float(rx.sum()), float(ry.sum())
    return float(xty) - n / (n - 2.0) * float(rx @ ry) + sx * sy / ((n - 1.0) * (n - 2.0))


def _use_feature_space(n: int, d1: int, d2: int) -> bool:
    """Feature space costs n·(d1² + d2² + d1·d2) flops and d1·d2 memory; Gram space n²·(d1 + d2) and n²."""
    return (d1 * d1 + d2 * d2 + d1 * d2) <= n * (d1 + d2)


def linear_cka(X: Any, Y: Any, *, debiased: bool = False, method: str = "auto",
               compute_dtype: torch.dtype = torch.float64, device: str | torch.device | None = None) -> float:
    r"""Linear CKA of Kornblith et al. (2019) between (N, D₁) and (N, D₂) representations.

    .. math:: \mathrm{CKA}_{\mathrm{lin}}(X, Y) = \frac{\lVert \tilde Y^\top \tilde X\rVert_F^2}
              {\lVert \tilde X^\top \tilde X\rVert_F\,\lVert \tilde Y^\top \tilde Y\rVert_F}

    (columns centred), which equals the Gram form :math:`\mathrm{HSIC}(XX^\top, YY^\top)/\sqrt{\cdots}`.
    ``debiased=True`` uses Song et al.'s unbiased HSIC (needs N ≥ 4), in feature space through
    Kornblith et al.'s identity with the centred row norms.

    Args:
        X, Y: numpy arrays, memmaps or torch tensors with the same rows (examples).
        debiased: unbiased HSIC instead of the biased one.
        method: ``"auto"`` picks the cheaper of ``"feature"`` (D₁×D₂ products, cost N(D₁²+D₂²+D₁D₂))
            and ``"gram"`` (N×N kernels, cost N²(D₁+D₂)); both give the same number.

    Returns:
        A Python float in [0, 1] (debiased CKA can be slightly negative for unrelated data).

    Raises:
        InputError: different N, N < 4 (CKA is 1 for any 2 rows), NaN/Inf, or a representation with no
            variance (all features constant), for which CKA is undefined.

    Example:
        >>> import numpy as np
        >>> np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X
        >>> round(linear_cka(X, Y), 5), round(linear_cka(X, Y, debiased=True), 5)
        (0.55761, 0.51346)
    """
    n = _check_pair(X, Y, debiased)
    d1, d2 = X.shape[1], Y.shape[1]
    if method not in ("auto", "feature", "gram"):
        raise UnknownNameError("linear CKA method", method, ["auto", "feature", "gram"])
    # CKA is invariant to the scale of X and of Y: data beyond 2^±64 are read scaled by a power of two
    # (exact), or the fourth powers in the HSIC terms would leave float64 (1e100 data gave 0.0)
    X, _ = unit_scaled(X)
    Y, _ = unit_scaled(Y)
    if method == "feature" or (method == "auto" and _use_feature_space(n, d1, d2)):
        m = _feature_moments(X, Y)
        xty = float((m["XY"] ** 2).sum())
        xx = float((m["XX"] ** 2).sum())
        yy = float((m["YY"] ** 2).sum())
        if debiased:
            return _ratio(_debias(xty, m["rx"], m["ry"], n), _debias(xx, m["rx"], m["rx"], n),
                          _debias(yy, m["ry"], m["ry"], n))
        return _ratio(xty, xx, yy)
    K = gram(X, center=True, compute_dtype=compute_dtype, device=device)
    L = gram(Y, center=True, compute_dtype=compute_dtype, device=device)
    if debiased:
        kl, kk, ll = unbiased_hsic_pairs([K], [L])
        return _ratio(float(kl[0, 0]), float(kk[0]), float(ll[0]))
    return _ratio(float((K * L).sum()), float((K * K).sum()), float((L * L).sum()))


def rbf_cka(X: Any, Y: Any, *, sigma: float = 0.8, debiased: bool = False,
            compute_dtype: torch.dtype = torch.float64, device: str | torch.device | None = None) -> float:
    r"""RBF-kernel CKA of Kornblith et al. (2019): :func:`kernel_cka` of two :func:`gram_rbf` kernels.

    ``sigma`` is the bandwidth as a fraction of the median distance of each representation
    (the paper's 0.2/0.4/0.8; default 0.8).

    Example:
        >>> import numpy as np
        >>> np.random.seed(1337); X = np.random.randn(100, 10); Y = np.random.randn(100, 10) + X
        >>> round(rbf_cka(X, Y, sigma=0.5), 5)
        0.65483
    """
    _check_pair(X, Y, debiased)
    K = gram_rbf(X, sigma, compute_dtype=compute_dtype, device=device)
    L = gram_rbf(Y, sigma, compute_dtype=compute_dtype, device=device)
    return kernel_cka(K, L, debiased=debiased)


def cka(X: Any, Y: Any, *, kernel: str = "linear", sigma: float = 0.8, debiased: bool = False) -> float:
    """CKA with the kernel chosen by name (``"linear"`` → :func:`linear_cka`, ``"rbf"`` → :func:`rbf_cka`)."""
    if kernel == "linear":
        return linear_cka(X, Y, debiased=debiased)
    if kernel == "rbf":
        return rbf_cka(X, Y, sigma=sigma, debiased=debiased)
    raise UnknownNameError("CKA kernel", kernel, list(KERNELS))


def __getattr__(name: str) -> Any:
    # MinibatchCKA, the stateful accumulator, lives beside the analyses that use it; this old path
    # keeps working (imported on first use, so this module does not import the analysis layer)
    if name == "MinibatchCKA":
        from ..analysis.streaming import MinibatchCKA  # lazy: a lower layer re-exporting an old name

        return MinibatchCKA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
