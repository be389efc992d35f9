"""Neural collapse (Papyan et al. 2020), RankMe, power-law α, participation ratio, richness.

Reference values come from closed forms (ETF geometry, isotropic Gaussians, exact power laws) or
from a direct dense implementation of the textbook formulas (p×p pinv) on small data. Tolerance
1e-9 relative for float64 on well-conditioned matrices.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deepgeom.errors import InputError
from deepgeom.functional.collapse import (
    class_kernel_distance,
    class_means,
    effective_rank,
    neural_collapse,
    participation_ratio,
    power_law_alpha,
    richness,
    simplex_etf,
)
from deepgeom.functional.spectrum import feature_spectrum


def orthonormal(rng, n, k):
    return np.linalg.qr(rng.standard_normal((n, k)))[0]


def etf_setup(rng, C=4, per=10, p=12, spread=0.0, offset=2.0):
    R = orthonormal(rng, p, C)
    means = (np.eye(C) - 1.0 / C) @ R.T * 5.0
    v = rng.standard_normal(p)
    v -= R @ (R.T @ v)
    means = means + offset * v / np.linalg.norm(v)
    y = np.repeat(np.arange(C), per)
    H = means[y] + spread * rng.standard_normal((len(y), p))
    return H, y, means


def dense_reference(H, y, W):
    """The textbook formulas with dense p×p matrices and numpy's pinv (small data only)."""
    C = y.max() + 1
    mu = np.stack([H[y == c].mean(0) for c in range(C)])
    mg = H.mean(0)
    Mt = mu - mg
    Sb = Mt.T @ Mt / C
    D = H - mu[y]
    Sw = D.T @ D / len(y)
    nc1 = np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10)) / C
    nc3 = np.linalg.norm(W / np.linalg.norm(W) - Mt / np.linalg.norm(Mt)) ** 2
    return nc1, nc3


def test_exact_etf_collapse_gives_zero(rng):
    H, y, means = etf_setup(rng)
    W = means - means.mean(0)  # classifier rows aligned with the centred means (self-duality)
    m = neural_collapse(H, y, weights=W, bias=np.zeros(4))
    assert m.nc1 == pytest.approx(0.0, abs=1e-20)
    for v in (m.nc2, m.nc2_equinorm, m.nc2_equiangular, m.nc3, m.nc2_w_etf):
        assert v == pytest.approx(0.0, abs=1e-12)
    assert m.nc4 == 0.0
    assert (m.n_classes, m.n_samples, m.n_features) == (4, 40, 12)


def test_simplex_etf_matrix():
    G = simplex_etf(5)
    np.testing.assert_allclose(np.diag(G), 1.0)
    np.testing.assert_allclose(G[0, 1:], -1.0 / 4)
    np.testing.assert_allclose(G.sum(1), 0.0, atol=1e-15)


def test_isotropic_noise_nc1_closed_form(rng):
    # Σ_W ≈ σ² I, Σ_B has C−1 equal eigenvalues b: NC1 ≈ (C−1)σ²/(b C) for many samples
    C, p, sigma = 4, 6, 0.5
    H, y, means = etf_setup(rng, C=C, per=5000, p=p, spread=sigma, offset=0.0)
    m = neural_collapse(H, y)
    Mt = means - means.mean(0)
    b = np.linalg.eigvalsh(Mt.T @ Mt / C)[-1]
    expected = (C - 1) * sigma**2 / (b * C)
    assert m.nc1 == pytest.approx(expected, rel=0.03)  # sampling error of Σ_W with 20k points


@given(seed=st.integers(0, 10_000), C=st.integers(2, 6), p=st.integers(2, 15))
def test_matches_dense_reference(seed, C, p):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(C), rng.integers(0, C, 30)])
    H = rng.standard_normal((len(y), p)) + 2.0 * rng.standard_normal((C, p))[y]
    W = rng.standard_normal((C, p))
    m = neural_collapse(H, y, weights=W)
    nc1, nc3 = dense_reference(H, y, W)
    assert m.nc1 == pytest.approx(nc1, rel=1e-8)
    assert m.nc3 == pytest.approx(nc3, rel=1e-9)


def test_nc4_counts_disagreement(rng):
    H, y, means = etf_setup(rng, C=3, per=20, p=5, spread=0.1)
    ncc = np.argmin(((H[:, None, :] - means[None]) ** 2).sum(-1), 1)
    pred = ncc.copy()
    pred[:6] = (pred[:6] + 1) % 3
    assert neural_collapse(H, y, predictions=pred).nc4 == pytest.approx(6 / 60)
    # through W, b: logits that reproduce the nearest-mean rule exactly give 0
    W, b = 2 * means, -(means**2).sum(1)
    assert neural_collapse(H, y, weights=W, bias=b).nc4 == 0.0
    # a classifier that predicts class 0 always disagrees on the other two classes
    m = neural_collapse(H, y, weights=np.ones((3, 5)), bias=np.array([1.0, 0, 0]))
    assert m.nc4 == pytest.approx(2 / 3)
    assert np.isnan(m.nc2_w_etf)  # identical classifier rows: NC2 of W is undefined, not 0


def test_invariances(rng):
    H, y, _ = etf_setup(rng, C=4, per=15, p=8, spread=0.7)
    W = rng.standard_normal((4, 8))
    Q = orthonormal(rng, 8, 8)
    a = neural_collapse(H, y, weights=W)
    b = neural_collapse(3.0 * H @ Q + 7.0, y, weights=W @ Q)  # rotate+scale+shift features, rotate W
    for f in ("nc1", "nc2", "nc2_equinorm", "nc2_equiangular"):
        assert getattr(b, f) == pytest.approx(getattr(a, f), rel=1e-9)
    assert b.nc3 == pytest.approx(a.nc3, rel=1e-9)
    # torch input gives the same numbers
    c = neural_collapse(torch.from_numpy(H), torch.from_numpy(y), weights=torch.from_numpy(W))
    assert c.nc1 == pytest.approx(a.nc1, rel=1e-12)


def test_class_means(rng):
    H = rng.standard_normal((9, 3))
    y = np.array([0, 1, 2] * 3)
    mu, g, counts = class_means(H, y)
    np.testing.assert_allclose(mu[1], H[y == 1].mean(0))
    np.testing.assert_allclose(g, H.mean(0))
    assert counts.tolist() == [3, 3, 3]


def test_effective_rank_rankme():
    assert effective_rank(np.eye(6)) == pytest.approx(6.0)
    assert effective_rank(np.outer(np.arange(1, 5.0), np.ones(3))) == pytest.approx(1.0, abs=1e-6)
    # singular values 3, 1: p = (3/4, 1/4)
    X = np.diag([3.0, 1.0])
    expected = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert effective_rank(X) == pytest.approx(expected, rel=1e-12)
    assert effective_rank(feature_spectrum(X)) == pytest.approx(expected, rel=1e-12)


def test_participation_ratio():
    assert participation_ratio(np.ones(5)) == pytest.approx(5.0)
    assert participation_ratio(np.array([1.0, 0, 0])) == pytest.approx(1.0)
    assert participation_ratio(np.array([2.0, 1.0])) == pytest.approx(9 / 5)


def test_power_law_alpha_exact_and_from_features(rng):
    k = np.arange(1, 101, dtype=float)
    fit = power_law_alpha(3.0 * k**-1.7)
    assert fit.alpha == pytest.approx(1.7, rel=1e-12) and fit.r2 == pytest.approx(1.0)
    assert fit.k_range == (1, 100)
    # the same from a feature matrix built with that spectrum
    n, d = 300, 60
    rho = np.arange(1, d + 1, dtype=float) ** -1.2
    Phi = np.sqrt(n) * orthonormal(rng, n, d) @ np.diag(np.sqrt(rho))
    sub = power_law_alpha(feature_spectrum(Phi), k_min=2, k_max=40)
    assert sub.alpha == pytest.approx(1.2, rel=1e-8) and sub.k_range == (2, 40)


def test_richness(rng):
    # collapsed ETF features and outputs spanning the same directions: richness 0
    H, y, means = etf_setup(rng, C=4, per=10, p=12, offset=3.0)
    outputs = H @ (means - means.mean(0)).T + 0.3
    assert richness(H, outputs) == pytest.approx(0.0, abs=1e-10)
    # features with many extra directions the outputs ignore: rich
    extra = np.hstack([H, 5.0 * rng.standard_normal((40, 30))])
    r = richness(extra, outputs)
    assert 0.3 < r < 1.0
    with pytest.raises(InputError, match="constant"):
        richness(H, np.ones((40, 2)))


def brute_class_distance(H, y):
    """1 - CKA(HH^T, P) by the textbook formula, P the projection onto [1, onehot(y)], dense N x N."""
    n = len(y)
    A = np.hstack([np.ones((n, 1)), np.eye(y.max() + 1)[y]])
    P = A @ np.linalg.pinv(A)
    J = np.eye(n) - 1.0 / n
    K, L = J @ H @ H.T @ J, J @ P @ J
    return 1 - (K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum())


def test_class_kernel_distance(rng):
    # terminal collapse (features at the ETF class means): the kernel is block-constant, distance 0
    H, y, _ = etf_setup(rng, C=4, per=10, p=12, offset=3.0)
    assert class_kernel_distance(H, y) == pytest.approx(0.0, abs=1e-10)
    # with within-class spread: equals the dense N x N formula (1e-10: float64, well conditioned)
    dists = []
    for spread in (0.3, 1.0, 3.0):
        Hs, ys, _ = etf_setup(np.random.default_rng(5), C=4, per=10, p=12, spread=spread)
        d = class_kernel_distance(Hs, ys)
        assert d == pytest.approx(brute_class_distance(Hs, ys), abs=1e-10)
        dists.append(d)
    assert dists[0] < dists[1] < dists[2]  # more within-class spread, farther from block-constant
    # invariant to renaming the classes and to rotating the features
    perm = np.array([2, 0, 3, 1])
    Q = orthonormal(rng, 12, 12)
    Hs, ys, _ = etf_setup(np.random.default_rng(6), C=4, per=10, p=12, spread=1.0)
    assert class_kernel_distance(Hs @ Q, perm[ys]) == pytest.approx(class_kernel_distance(Hs, ys), abs=1e-10)
    with pytest.raises(InputError):
        class_kernel_distance(H, np.zeros(40, dtype=int))


def test_errors(rng):
    H = rng.standard_normal((12, 4))
    y = np.arange(12) % 3
    with pytest.raises(InputError, match="same number of examples"):
        neural_collapse(H, y[:10])
    with pytest.raises(InputError, match="integer dtype"):
        neural_collapse(H, y.astype(float))
    with pytest.raises(InputError, match="integer class"):
        neural_collapse(H, np.array(["a"] * 12))
    bad = H.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        neural_collapse(bad, y)
    with pytest.raises(InputError, match="shape"):
        neural_collapse(H, y, weights=np.ones((3, 5)))
    with pytest.raises(InputError, match="have none"):
        neural_collapse(H, y, weights=np.ones((4, 4)))
    with pytest.raises(InputError, match="bias"):
        neural_collapse(H, y, weights=np.ones((3, 4)), bias=np.ones(2))
    with pytest.raises(InputError, match="all zero"):
        neural_collapse(H, y, weights=np.zeros((3, 4)))
    with pytest.raises(InputError, match="nonnegative"):
        participation_ratio(np.array([1.0, -1.0]))
    with pytest.raises(InputError, match=">= 3"):
        power_law_alpha(np.array([1.0, 0.5]))
