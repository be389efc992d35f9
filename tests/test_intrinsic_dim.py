"""Intrinsic-dimension estimators: known-ID data, invariances, reference libraries, duplicates, errors.

Tolerances (why):
* Known-ID data, N = 1500: TwoNN's statistical error is d/sqrt(N) ≈ 2.6% of d, so d ≤ 5 must land
  within 10% (≈ 4σ).  For d ≥ 8 TwoNN is known to underestimate at finite N (Facco et al. 2017,
  Fig. 3; the neighbourhoods stop being small); on hyperspheres (no boundary) we require
  0.78·d ≤ d̂ ≤ 1.05·d and a strictly increasing estimate.
* Invariances: exact in real arithmetic; floating point moves distances by ~1e-15 relative, so 1e-9.
* References: same formula on the same distances, so 1e-8 (DADApy, float64, our neighbour distances
  vs. its own) and 1e-6 (scikit-dimension computes distances by pairwise_distances, ~1e-8 rounding).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgeom.data.manifolds import curved_manifold, hypersphere, linear_subspace, winding_curve
from deepgeom.errors import InputError
from deepgeom.functional.intrinsic_dim import (
    find_duplicates,
    gride,
    gride_multiscale,
    levina_bickel,
    pca_id,
    twonn,
    twonn_bootstrap,
    twonn_scale,
)
from deepgeom.functional.intrinsic_dim.gride import gride_from_mu
from deepgeom.functional.neighbors import knn

FIXTURE = Path(__file__).parent / "fixtures" / "dadapy" / "dadapy_twonn.json"


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: on the loaded 2-core machine, 2 OpenMP threads make them several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# ----------------------------------------------------------------------------- known-ID data

@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("maker", ["hypersphere", "linear_subspace", "curved_manifold"])
def test_twonn_low_dimensional_manifolds(maker, d):
    if maker == "hypersphere":
        X = hypersphere(1500, d, 30, seed=d)
    elif maker == "linear_subspace":
        X = linear_subspace(1500, d, 30, seed=d)
    else:  # curved: PC-ID well above d at d=5 (checked below), TwoNN still ≈ d
        X = curved_manifold(1500, d, 200, seed=d, frequency=0.3)
    r = twonn(X)
    assert abs(r.id - d) <= 0.10 * d, (maker, d, r.id)
    assert r.n == int(0.9 * 1500) and r.n_points == 1500 and r.n_duplicates == 0
    assert r.error == pytest.approx(r.id / math.sqrt(r.n))
    assert not r.likely_underestimate


def test_twonn_high_dimensional_spheres_bias_is_bounded():
    ests = [twonn(hypersphere(1500, d, 40, seed=d)).id for d in (8, 12, 20)]
    for d, e in zip((8, 12, 20), ests, strict=True):
        assert 0.78 * d <= e <= 1.05 * d, (d, e)  # measured: 7.70, 10.70, 16.20
    assert ests[0] < ests[1] < ests[2]


def test_high_id_is_flagged_as_likely_underestimate():
    r = twonn(linear_subspace(1500, 30, 50, seed=1))  # true ID 30, TwoNN reads ≈ 22
    assert 20 < r.id < 30
    assert r.likely_underestimate and "underestimate" in r.note
    low = twonn(linear_subspace(1500, 3, 50, seed=1))
    assert not low.likely_underestimate and low.note == ""


def test_curved_manifold_pca_far_above_twonn():
    X = curved_manifold(1500, 5, 200, seed=5, frequency=0.3)
    assert pca_id(X).id >= 3 * 5  # measured 24: the manifold is curved, not flat


def test_closed_curve_in_many_dimensions_twonn_one_pca_large():
    """Ansuini et al.'s point: a 1-D closed curve through 40 dims is TwoNN ≈ 1, PC-ID ≫ 1."""
    X = winding_curve(1000, 1, 40, seed=0)
    assert twonn(X).id == pytest.approx(1.0, abs=0.1)
    assert pca_id(X).id >= 20  # measured 35 of 40


def test_mle_variant_and_gride_and_levina_bickel_on_known_data():
    X = linear_subspace(1500, 4, 20, seed=4)
    for est in (twonn(X, method="mle").id, gride(X, n1=2, n2=4).id, levina_bickel(X).id):
        assert abs(est - 4) <= 0.12 * 4, est  # LB (k=10..20) reads 3.6–3.8 on a cube: boundary effect
    # GRIDE with n1=1, n2=2 is the TwoNN maximum-likelihood estimate, by construction
    assert gride(X).id == pytest.approx(twonn(X, method="mle").id, rel=1e-9)


# ----------------------------------------------------------------------------- invariances

def _rotation(D, rng):
    Q, R = np.linalg.qr(rng.standard_normal((D, D)))
    return Q * np.sign(np.diag(R))


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_twonn_invariant_to_rotation_translation_scaling(seed, scale, shift):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((150, 3)) @ rng.standard_normal((3, 8))
    Y = scale * (X @ _rotation(8, rng)) + shift * rng.standard_normal(8)
    for method in ("lsq", "mle"):
        assert twonn(Y, method=method).id == pytest.approx(twonn(X, method=method).id, rel=1e-9)
    assert gride(Y, n1=2, n2=4).id == pytest.approx(gride(X, n1=2, n2=4).id, rel=1e-9)
    assert levina_bickel(Y, k1=4, k2=8).id == pytest.approx(levina_bickel(X, k1=4, k2=8).id, rel=1e-9)


@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100))
def test_pca_id_invariant_to_rotation_translation_scaling(seed, scale, shift):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 10)) * np.linspace(3, 0.1, 10)
    Y = scale * (X @ _rotation(10, rng)) + shift * rng.standard_normal(10)
    a, b = pca_id(X), pca_id(Y)
    assert a.id == b.id
    np.testing.assert_allclose(b.spectrum, a.spectrum, atol=1e-10)
    assert b.participation_ratio == pytest.approx(a.participation_ratio, rel=1e-9)


# ----------------------------------------------------------------------------- references

def test_agrees_with_scikit_dimension_twonn():
    """Same fit (origin, int(0.9 N) points, F = i/N) on the same distances: measured ≤ 1e-15 apart."""
    skdim = pytest.importorskip("skdim")
    for seed, (d, D) in enumerate([(2, 10), (6, 30), (10, 40)]):
        X = hypersphere(1000, d, D, seed=seed)
        ref = skdim.id.TwoNN().fit(X).dimension_
        assert twonn(X).id == pytest.approx(ref, rel=1e-9)


def test_levina_bickel_agrees_with_scikit_dimension_mle():
    """skdim.id.MLE: m_k(x) = (k-1)/sum_j log(T_k/T_j); comb='mle' averages inverses, 'mean' directly."""
    skdim = pytest.importorskip("skdim")
    X = hypersphere(800, 4, 10, seed=0)
    for k in (5, 12):
        for comb, average in (("mle", "inverse"), ("mean", "direct")):
            ref = skdim.id.MLE().fit(X, n_neighbors=k, comb=comb).dimension_
            assert levina_bickel(X, k1=k, k2=k, average=average).id == pytest.approx(ref, rel=1e-9)
    # the k range is the mean of the single-k estimates (both papers)
    per_k = [levina_bickel(X, k1=k, k2=k).id for k in range(6, 11)]
    assert levina_bickel(X, k1=6, k2=10).id == pytest.approx(np.mean(per_k), rel=1e-12)


def _dadapy_data(recipe):
    """Identical copy of make_data in tests/fixtures/dadapy/make_fixtures.py."""
    rng = np.random.default_rng(recipe["seed"])
    n, d, D = recipe["n"], recipe["d"], recipe["D"]
    if recipe["kind"] == "linear_dup":
        X = (rng.standard_normal((n, d)) @ rng.standard_normal((d, D)) + 3.0).astype(np.float32)
        copies = rng.permutation(n)[: int(recipe["share"] * n)]
        return np.vstack([X, X[copies]])
    if recipe["kind"] == "linear":
        return rng.standard_normal((n, d)) @ rng.standard_normal((d, D))
    Z = rng.standard_normal((n, d + 1))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    return np.hstack([Z, np.zeros((n, D - d - 1))]) @ Q


def _dadapy_filter_mus(mus):
    """DADApy's _filter_mus: drop mu > 20 (q95 - q50) + q50 (it calls them overlapping points)."""
    q3, q2 = np.percentile(mus, [95, 50])
    return mus[mus < 20 * (q3 - q2) + q2]


def test_agrees_with_dadapy_fixtures():
    doc = json.loads(FIXTURE.read_text())
    assert doc["cases"] and "how_made" in doc
    compared = 0
    for case in doc["cases"]:
        X = _dadapy_data(case["recipe"])
        assert twonn(X).id == pytest.approx(case["twonn_base"], rel=1e-8)
        assert twonn(X, method="mle").id == pytest.approx(case["twonn_ml"], rel=1e-8)
        ms = gride_multiscale(X, range_max=case["gride_range_max"]).table
        dist = knn(X, case["gride_range_max"]).distances
        for i, (ref_id, ref_err) in enumerate(zip(case["gride_ids"], case["gride_errs"], strict=True)):
            n1 = 2**i
            mu = dist[:, 2 * n1 - 1] / dist[:, n1 - 1]
            mu_f = _dadapy_filter_mus(mu)
            d, _ = gride_from_mu(mu_f, n1, 2 * n1)
            assert d == pytest.approx(ref_id, rel=1e-6)  # DADApy bisects to eps = 1e-7
            if mu_f.size == mu.size:  # DADApy's outlier filter removed nothing: our table is its value
                assert ms["id"].iloc[i] == pytest.approx(ref_id, rel=1e-6)
                # DADApy's Fisher information has N/d² where the likelihood has (N-1)/d²: ≤ 1/(2N) apart
                assert ms["error"].iloc[i] == pytest.approx(ref_err, rel=1e-3)
                compared += 1
    # DADApy's filter dropped one mu only in case 1 at n1=1 (its estimate then differs by ~1%);
    # every other scale of every case is compared directly
    assert compared == 4 * 4 - 1


# ----------------------------------------------------------------------------- duplicates

def test_dadapy_fails_on_duplicates_where_we_do_not():
    """DADApy's stored values on float32 data with 2% / 20% exact copies vs ours (true ID 5)."""
    doc = json.loads(FIXTURE.read_text())
    assert len(doc["duplicate_cases"]) == 2
    for case in doc["duplicate_cases"]:
        X = _dadapy_data(case["recipe"])
        n = case["recipe"]["n"]
        r = quiet(twonn, X)
        assert r.n_duplicates == X.shape[0] - n
        assert r.id == pytest.approx(twonn(X[:n]).id, rel=1e-12)
        assert abs(r.id - 5) < 0.5
    assert doc["duplicate_cases"][1]["twonn_base"] < 0.5  # DADApy at 20% copies: 0.10


@pytest.mark.parametrize("share", [0.02, 0.20])
def test_duplicated_rows_float32(share):
    rng = np.random.default_rng(7)
    base = (linear_subspace(1500, 5, 64, seed=3) + 3).astype(np.float32)
    copies = rng.choice(1500, int(share * 1500), replace=False)
    X = np.vstack([base, base[copies]])[rng.permutation(1500 + copies.size)]
    with pytest.warns(UserWarning, match=f"{copies.size} of {X.shape[0]} rows"):
        r = twonn(X)
    assert r.n_duplicates == copies.size and r.n_unique == 1500
    ref = twonn(base)  # the same distinct points, in another order: the same estimate
    assert r.id == pytest.approx(ref.id, rel=1e-12)
    assert abs(r.id - 5) <= 0.5
    # Why exact detection matters: with distances from |x|²+|y|²-2x·y in float32 (what matrix-product
    # neighbour searches do), many exact copies sit at r1 ≈ 0.01 here (typical r1 0.17), not 0, so a
    # filter on r1 == 0 keeps them, their mu = r2/r1 is ~10x too large, and the estimate drops.
    Xt = torch.from_numpy(X)
    sq = (Xt * Xt).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * Xt @ Xt.T).clamp_min(0)
    d2.fill_diagonal_(float("inf"))
    r12 = torch.topk(d2, 2, largest=False).values.sqrt().double().numpy()
    in_group = np.bincount(find_duplicates(X).group, minlength=X.shape[0])[find_duplicates(X).group] > 1
    missed = in_group & (r12[:, 0] != 0)
    assert missed.sum() >= 10  # the naive filter keeps copies whose r1 came out nonzero
    naive = r12[r12[:, 0] != 0]
    mu = np.sort(naive[:, 1] / naive[:, 0])[: int(0.9 * naive.shape[0])]
    naive_id = (np.log(mu) @ -np.log1p(-np.arange(1, mu.size + 1) / naive.shape[0])) / (np.log(mu) @ np.log(mu))
    naive_mle = (naive.shape[0] - 1) / np.log(naive[:, 1] / naive[:, 0]).sum()
    ref_mle = twonn(base, method="mle")
    # measured: 2% → 18 copies survive, MLE 4.33 vs 4.79 (3.7σ off), LSQ 4.75 (their large mu fall
    # in the discarded 10% tail); 20% → LSQ and MLE collapse below 70% of the true estimate
    assert ref_mle.id - naive_mle > 3 * ref_mle.error
    if share >= 0.2:
        assert naive_id < 0.7 * r.id and naive_mle < 0.7 * ref_mle.id
    # the other estimators report the same count
    assert quiet(gride, X, n1=2, n2=4).n_duplicates == copies.size
    assert quiet(levina_bickel, X, k1=5, k2=10).n_duplicates == copies.size


def test_duplicates_error_policy_and_precomputed_neighbors():
    X = hypersphere(400, 2, 6, seed=1)
    Xd = np.vstack([X, X[:30], X[:10]])  # 10 rows appear three times
    with pytest.raises(InputError, match="exact duplicates"):
        twonn(Xd, duplicates="error")
    r_x = quiet(twonn, Xd)
    r_nb = quiet(twonn, neighbors=knn(Xd, 6))
    assert r_nb.n_duplicates == r_x.n_duplicates == 40
    assert r_nb.id == pytest.approx(r_x.id, rel=1e-12) == twonn(X).id
    assert quiet(gride, neighbors=knn(Xd, 8), n1=2, n2=4).id == pytest.approx(gride(X, n1=2, n2=4).id, rel=1e-12)
    with pytest.raises(InputError, match="larger k"):
        quiet(twonn, neighbors=knn(Xd, 2))


def _reference_groups(X):
    _, first, inv = np.unique(X + 0.0, axis=0, return_index=True, return_inverse=True)
    return first[inv.ravel()]


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 80), d=st.integers(1, 5))
def test_find_duplicates_matches_exact_unique(seed, n, d):
    rng = np.random.default_rng(seed)
    X = rng.integers(-1, 2, size=(n, d)).astype(np.float32)  # many exact repeats, and -0.0 == 0.0
    X[X == 0] *= rng.choice([-1.0, 1.0], size=int((X == 0).sum())).astype(np.float32)
    info = find_duplicates(X)
    ref = _reference_groups(X)
    np.testing.assert_array_equal(info.group, ref)
    assert info.n_duplicates == n - np.unique(ref).size
    np.testing.assert_array_equal(find_duplicates(torch.from_numpy(X)).group, ref)


def test_find_duplicates_memmap_and_near_duplicates(tmp_path):
    X = np.random.default_rng(0).standard_normal((300, 7))
    X[5] = X[100]
    X[6] = np.nextafter(X[101], np.inf)  # one ulp apart: different rows
    np.save(tmp_path / "x.npy", X)
    info = find_duplicates(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert info.n_duplicates == 1 and info.group[100] == 5 and info.group[101] == 101


# ----------------------------------------------------------------------------- scale, bootstrap

def test_twonn_scale_decimation_table():
    X = linear_subspace(1600, 3, 20, seed=2)
    res = twonn_scale(X, min_points=100, seed=0)
    t = res.table
    assert t["block_size"].tolist() == [1600, 800, 400, 200, 100]
    assert t["n_blocks"].tolist() == [1, 2, 4, 8, 16]
    assert math.isnan(t["id_std"].iloc[0]) and (t["id_std"].iloc[1:] > 0).all()
    assert np.allclose(t["id_mean"], 3, atol=0.35)  # a plateau: flat 3-D data at every scale
    assert t["scale"].is_monotonic_increasing  # fewer points → larger neighbour distances
    assert t["id_mean"].iloc[0] == pytest.approx(twonn(X).id)
    assert res.to_dict()["table"]["n_blocks"] == [1, 2, 4, 8, 16]
    high = twonn_scale(linear_subspace(800, 30, 40, seed=0), min_points=400)
    assert high.table["likely_underestimate"].all() and "underestimate" in high.note


def test_twonn_bootstrap_interval_and_spread():
    X = hypersphere(1500, 4, 12, seed=9)
    b = twonn_bootstrap(X, n_boot=200, seed=1)
    assert b.id == pytest.approx(twonn(X).id)
    assert b.ci_low < b.id < b.ci_high and b.ci_low < 4 < b.ci_high
    # the bootstrap spread matches the model's standard error d/sqrt(n) to within a factor 1.5
    se = twonn(X).error
    assert se / 1.5 < b.std < 1.5 * se
    assert b.samples.shape == (200,)


# ----------------------------------------------------------------------------- PCA

def test_pca_id_matches_sklearn_and_ansuini_convention():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12)) * np.geomspace(10, 0.1, 12) + 5
    X[:, 3] = 2.0  # a dead feature
    for standardize in (False, True):
        Z = StandardScaler().fit_transform(X) if standardize else X
        ratio = PCA().fit(Z).explained_variance_ratio_
        r = pca_id(X, standardize=standardize)
        np.testing.assert_allclose(r.spectrum, ratio, atol=1e-12)
        expected = int(np.searchsorted(np.cumsum(ratio), 0.9)) + 1
        assert r.id == expected and r.ansuini_index == expected - 1
        lam = ratio
        assert r.participation_ratio == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-9)
    # Gram route (D > N) gives the same spectrum as the covariance route
    W = X[:10]
    ratio = PCA().fit(W).explained_variance_ratio_
    np.testing.assert_allclose(pca_id(W).spectrum[: ratio.size], ratio, atol=1e-12)


def test_pca_id_closed_form_spectrum():
    """Centred orthonormal columns scaled by s: the covariance eigenvalues are exactly s²."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((200, 4))
    U = np.linalg.qr(A - A.mean(0))[0]  # orthonormal and centred (combinations of centred columns)
    s = np.array([4.0, 2.0, 1.0, 0.5])
    X = (U * s) @ _rotation(9, rng)[:4]  # placed in 9 dims
    lam = s**2 / (s**2).sum()  # 0.753, 0.188, 0.047, 0.012 → cumulative 0.753, 0.941, 0.988, 1
    r = pca_id(X)
    np.testing.assert_allclose(r.spectrum[:4], lam, atol=1e-12)
    np.testing.assert_allclose(r.spectrum[4:], 0, atol=1e-12)
    assert (r.id, pca_id(X, threshold=0.95).id, pca_id(X, threshold=0.75).id) == (2, 3, 1)
    assert r.participation_ratio == pytest.approx((s**2).sum() ** 2 / (s**4).sum(), rel=1e-12)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("fn", [twonn, gride, levina_bickel, pca_id, twonn_scale, twonn_bootstrap])
def test_bad_input_errors(fn):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        fn(bad)
    bad[4, 1] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        fn(bad)
    with pytest.raises(InputError, match="at least 3 points"):
        fn(X[:2])
    with pytest.raises(InputError, match="constant"):
        quiet(fn, np.ones((20, 3)))
    with pytest.raises(InputError, match="2-D"):
        fn(X[:, 0])
    with pytest.raises(ValueError):  # InputError is a ValueError
        fn(X[:, 0])


def test_bad_parameters():
    X = np.random.default_rng(0).standard_normal((50, 3))
    with pytest.raises(InputError, match="fraction"):
        twonn(X, fraction=1.5)
    with pytest.raises(InputError, match="fraction"):
        twonn(X, fraction=0.0)
    with pytest.raises(InputError, match="unknown TwoNN method 'ols'"):
        twonn(X, method="ols")
    with pytest.raises(InputError, match="duplicates policy"):
        twonn(X, duplicates="keep")
    with pytest.raises(InputError, match="exactly one"):
        twonn(X, neighbors=knn(X, 2))
    with pytest.raises(InputError, match="n2 must be larger"):
        gride(X, n1=2, n2=2)
    with pytest.raises(InputError, match="k2 must be >= k1"):
        levina_bickel(X, k1=8, k2=4)
    with pytest.raises(InputError, match="threshold"):
        pca_id(X, threshold=0)
    with pytest.raises(InputError, match="distinct rows"):
        quiet(twonn, np.vstack([X[:2]] * 5))  # only two distinct points


@pytest.mark.parametrize("fn", [twonn, gride, levina_bickel, pca_id, twonn_bootstrap])
def test_numpy_torch_and_memmap_inputs_agree(tmp_path, fn):
    X = linear_subspace(300, 3, 12, seed=0).astype(np.float32)
    X = np.vstack([X, X[:5]])
    np.save(tmp_path / "x.npy", X)
    ref = quiet(fn, X).id
    assert quiet(fn, torch.from_numpy(X)).id == ref
    assert quiet(fn, np.load(tmp_path / "x.npy", mmap_mode="r")).id == ref


def test_result_to_dict_is_json_ready():
    r = twonn(hypersphere(300, 2, 5, seed=0))
    d = r.to_dict(max_array=10)
    assert d["id"] == r.id and d["fit_x"] is None and d["method"] == "lsq"
    json.dumps(d)
    json.dumps(pca_id(hypersphere(300, 2, 5, seed=0)).to_dict())
    json.dumps(gride_multiscale(hypersphere(300, 2, 5, seed=0), range_max=8).to_dict())
