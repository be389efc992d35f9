r"""Point clouds of known intrinsic dimension, for checking ID estimators (Ansuini et al. 2019).

Every generator has the signature ``f(n, d, D, *, seed=0, noise=0.0, ...)`` and returns a float64
numpy array of shape ``(n, D)``: ``n`` points on a ``d``-dimensional manifold placed in ``R^D`` by a
random rotation, so no coordinate axis is special. ``noise > 0`` adds isotropic Gaussian noise of that
standard deviation in all ``D`` directions (which raises the ID seen at scales below ``noise``).

Two of them make the ID paper's central point: the :func:`curved_manifold` and the
:func:`winding_curve` are smooth and low-dimensional (TwoNN recovers ``d``), yet their principal
components decay slowly, so the linear PC-ID (components for 90 % of the variance) is far above ``d``.

All randomness comes from ``numpy.random.default_rng(seed)``; nothing touches global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .._validation import check_positive_int
from ..errors import InputError

__all__ = [
    "hypersphere",
    "linear_subspace",
    "swiss_roll",
    "curved_manifold",
    "winding_curve",
    "random_rotation",
    "MANIFOLDS",
]


def random_rotation(D: int, k: int | None = None, *, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random (D, k) matrix with orthonormal columns (QR of a Gaussian matrix, signs fixed).

    Mezzadri (2007), "How to generate random matrices from the classical compact groups": the Q factor of
    a Gaussian matrix, with each column's sign set by the sign of R's diagonal, is Haar distributed.
    """
    k = D if k is None else k
    G = rng.standard_normal((D, k))
    Q, R = np.linalg.qr(G)
    return Q * np.sign(np.diag(R))[None, :]


def _check(n: int, d: int, D: int, noise: float, *, min_D: int, name: str) -> tuple[int, int, int, float]:
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d (intrinsic dimension)")
    D = check_positive_int(D, "D (ambient dimension)")
    if D < min_D:
        raise InputError(f"{name}: ambient dimension D must be >= {min_D} for d={d}; got D={D}")
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise InputError(f"noise must be a finite standard deviation >= 0; got {noise!r}")
    return n, d, D, noise


def _add_noise(X: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    if noise > 0:
        X = X + noise * rng.standard_normal(X.shape)
    return X


def hypersphere(n: int, d: int = 2, D: int = 10, *, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    r"""``n`` points uniform on the unit sphere S^d ⊂ R^(d+1), rotated into ``R^D``.

    Uniform on the sphere: :math:`z = g/\lVert g\rVert` with :math:`g \sim \mathcal N(0, I_{d+1})`
    (Muller 1959); then :math:`x = Q z` with ``Q`` a random (D, d+1) orthonormal frame. Every point is at
    distance exactly 1 from the centre (the origin) before noise. Intrinsic dimension ``d``; needs
    ``D >= d + 1``.

    Example:
        >>> X = hypersphere(500, d=3, D=8, seed=1)
        >>> X.shape, bool(np.allclose(np.linalg.norm(X, axis=1), 1.0))
        ((500, 8), True)
    """
    n, d, D, noise = _check(n, d, D, noise, min_D=d + 1, name="hypersphere")
    rng = np.random.default_rng(seed)
    Q = random_rotation(D, d + 1, rng=rng)
    g = rng.standard_normal((n, d + 1))
    z = g / np.linalg.norm(g, axis=1, keepdims=True)
    return _add_noise(z @ Q.T, noise, rng)


def linear_subspace(n: int, d: int = 5, D: int = 20, *, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    r"""``n`` points uniform in the unit cube :math:`[0,1]^d`, placed in a random d-dim subspace of ``R^D``.

    :math:`x = Q u`, :math:`u \sim U[0,1]^d`, ``Q`` a random (D, d) orthonormal frame: a flat manifold
    whose linear and nonlinear IDs agree (rank exactly ``d`` before noise). Needs ``D >= d``.

    Example:
        >>> X = linear_subspace(300, d=4, D=12, seed=0)
        >>> int(np.linalg.matrix_rank(X))
        4
    """
    n, d, D, noise = _check(n, d, D, noise, min_D=d, name="linear_subspace")
    rng = np.random.default_rng(seed)
    Q = random_rotation(D, d, rng=rng)
    u = rng.random((n, d))
    return _add_noise(u @ Q.T, noise, rng)


def swiss_roll(n: int, d: int = 2, D: int = 3, *, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    r"""The swiss roll (a rolled-up 2-D sheet), rotated into ``R^D``; only ``d = 2`` exists.

    As in scikit-learn's ``make_swiss_roll``: :math:`t = \tfrac{3\pi}{2}(1 + 2s)`, :math:`s \sim U[0,1]`,
    height :math:`h \sim U[0, 21]`, :math:`(t\cos t,\ h,\ t\sin t)`, then a random (D, 3) orthonormal
    frame. Intrinsic dimension 2; needs ``D >= 3``.
    """
    if d != 2:
        raise InputError(f"swiss_roll is a 2-dimensional manifold: d must be 2; got d={d!r}")
    n, d, D, noise = _check(n, d, D, noise, min_D=3, name="swiss_roll")
    rng = np.random.default_rng(seed)
    Q = random_rotation(D, 3, rng=rng)
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    h = 21.0 * rng.random(n)
    P = np.stack([t * np.cos(t), h, t * np.sin(t)], axis=1)
    return _add_noise(P @ Q.T, noise, rng)


def curved_manifold(
    n: int, d: int = 2, D: int = 40, *, seed: int = 0, noise: float = 0.0, frequency: float = 1.0
) -> np.ndarray:
    r"""A smooth, strongly curved embedding of the cube :math:`[0,1]^d` in ``R^D`` (random Fourier features).

    :math:`x_j(u) = \sqrt{2/D}\,\cos(w_j\cdot u + b_j)`, :math:`w_j \sim \mathcal N(0, (2\pi f)^2 I_d)`,
    :math:`b_j \sim U[0, 2\pi)`, ``f = frequency`` (Rahimi & Recht 2007). For large ``D`` the map
    approaches an isometry of the Gaussian kernel :math:`\lVert x(u)-x(u')\rVert^2 \approx
    2 - 2e^{-(2\pi f)^2\lVert u-u'\rVert^2/2}`, which increases with :math:`\lVert u-u'\rVert`, so it
    is injective and smooth: intrinsic dimension ``d``. The higher the frequency, the more principal
    components the image needs (their number grows like :math:`f^d`), so PC-ID ≫ d while TwoNN ≈ d.
    Needs ``D >= 2d + 1`` (Whitney's bound for an embedding).

    Measured (n = 1000, D = 60, frequency 1): TwoNN 2.0 / PC-ID 14 for d = 2, 3.2 / 32 for d = 3. The
    curvature grows with ``frequency`` and ``d``: keep ``frequency · d`` small or use more points, or
    TwoNN overestimates (d = 5 at frequency 1 reads 7.7 from 1000 points).
    """
    n, d, D, noise = _check(n, d, D, noise, min_D=2 * d + 1, name="curved_manifold")
    if not (math.isfinite(frequency) and frequency > 0):
        raise InputError(f"frequency must be > 0; got {frequency!r}")
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, D)) * (2.0 * np.pi * frequency)
    b = rng.uniform(0.0, 2.0 * np.pi, D)
    u = rng.random((n, d))
    X = math.sqrt(2.0 / D) * np.cos(u @ W + b)
    return _add_noise(X, noise, rng)


def winding_curve(
    n: int, d: int = 1, D: int = 20, *, seed: int = 0, noise: float = 0.0, n_freq: int | None = None
) -> np.ndarray:
    r"""A closed curve (d = 1) winding through many planes of ``R^D``.

    :math:`x(t) = Q\,[\cos(2\pi k t + \varphi_k),\ \sin(2\pi k t + \varphi_k)]_{k=1..K} / \sqrt{K}`,
    :math:`t \sim U[0,1)`, random phases :math:`\varphi_k`, ``K = n_freq`` (default ``D // 2``) and
    ``Q`` a random (D, 2K) orthonormal frame. Integer frequencies close the curve (``x(0) = x(1)``);
    every plane carries the same variance :math:`1/(2K)` per axis, so PCA sees ``2K`` equal components
    (PC-ID at 90 % ≈ 0.9·2K) while the data is one-dimensional (TwoNN ≈ 1) — the ID paper's point.
    Needs ``D >= 2 * n_freq``.
    """
    if d != 1:
        raise InputError(f"winding_curve is a curve: d must be 1; got d={d!r}")
    D = check_positive_int(D, "D (ambient dimension)")
    K = D // 2 if n_freq is None else check_positive_int(n_freq, "n_freq")
    if K < 1:
        raise InputError(f"winding_curve needs D >= 2 (one plane at least); got D={D}")
    n, d, D, noise = _check(n, d, D, noise, min_D=2 * K, name="winding_curve")
    rng = np.random.default_rng(seed)
    Q = random_rotation(D, 2 * K, rng=rng)
    phase = rng.uniform(0.0, 2.0 * np.pi, K)
    t = rng.random(n)
    angle = 2.0 * np.pi * np.outer(t, np.arange(1, K + 1)) + phase
    P = np.empty((n, 2 * K))
    P[:, 0::2] = np.cos(angle)
    P[:, 1::2] = np.sin(angle)
    return _add_noise((P / math.sqrt(K)) @ Q.T, noise, rng)


#: name used by :func:`deepgeom.data.load` → (generator, default d, default D)
MANIFOLDS: dict[str, tuple[Callable[..., np.ndarray], int, int]] = {
    "hypersphere": (hypersphere, 2, 10),
    "linear-subspace": (linear_subspace, 5, 20),
    "swiss-roll": (swiss_roll, 2, 3),
    "curved-manifold": (curved_manifold, 2, 40),
    "winding-curve": (winding_curve, 1, 20),
}
