"""Extreme and hostile input (issue 15): every path gives the right number or a clear InputError.

Reference values never come from the code under test at the same scale: CKA of a rescaled copy is 1
by definition (Kornblith et al. 2019: invariance to isotropic scaling), every estimator's value on
data scaled by a power of two equals its value on the unscaled data (scaling by 2^e is exact in
float64, so the true answers are equal), and kernel eigenvalues scale by exactly 4^e.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepgeom as dg
from deepgeom.analysis.similarity import cka_matrix_from_captures
from deepgeom.errors import InputError
from deepgeom.functional.cka import MinibatchCKA, kernel_cka
from deepgeom.functional.neighbors import duplicate_groups, knn

# Relative tolerance of scale invariance: the estimators run the same float64 arithmetic on the
# scaled data (exact) except where LAPACK rescales a matrix internally by a non-power-of-two factor,
# which perturbs results by a few ulps times the condition of the problem; 1e-9 leaves room for that.
RTOL = 1e-9
#: powers of two spanning about 1e-298 .. 1e301 for data whose entries lie within 2^±13
EXPONENTS = st.integers(min_value=-990, max_value=1000)

rng0 = np.random.default_rng(15)
G = rng0.standard_normal((40, 6))
H = G @ rng0.standard_normal((6, 4)) + 0.3 * rng0.standard_normal((40, 4))
LABELS = np.arange(40) % 4
W = rng0.standard_normal((4, 6))
B = rng0.standard_normal(4)


def scaled(X, e):
    return np.ldexp(X, e)


@settings(max_examples=25, deadline=None)
@given(e=EXPONENTS)
def test_cka_is_invariant_to_a_power_of_two_scale(e):
    base = dg.linear_cka(G, H)
    assert dg.linear_cka(scaled(G, e), H) == pytest.approx(base, rel=RTOL)
    assert dg.linear_cka(scaled(G, e), G) == pytest.approx(1.0, rel=RTOL)  # a rescaled copy
    assert dg.linear_cka(scaled(G, e), H, method="gram") == pytest.approx(base, rel=RTOL)
    assert dg.linear_cka(scaled(G, e), scaled(H, -e), debiased=True) == pytest.approx(
        dg.linear_cka(G, H, debiased=True), rel=RTOL)
    assert dg.rbf_cka(scaled(G, e), H, sigma=0.5) == pytest.approx(dg.rbf_cka(G, H, sigma=0.5), rel=RTOL)
    K = G @ G.T
    assert kernel_cka(scaled(K, e), H @ H.T) == pytest.approx(kernel_cka(K, H @ H.T), rel=RTOL)


@settings(max_examples=25, deadline=None)
@given(a=st.integers(-1000, 1000), b=st.integers(-1000, 1000))
def test_hsic_scales_exactly_or_says_it_cannot(a, b):
    """HSIC is bilinear: HSIC(2^a K, 2^b L) = 2^(a+b) HSIC(K, L) — or an InputError where float64
    cannot hold that (never inf, never a silent 0)."""
    from deepgeom.functional.cka import hsic, unbiased_hsic

    K, L = G @ G.T, H @ H.T
    for f in (hsic, unbiased_hsic):
        base = f(K, L)
        e = a + b + math.frexp(base)[1]  # the result lies in [2^(e-1), 2^e)
        if e > 1024 or e < -1074:
            with pytest.raises(InputError, match="outside float64's range"):
                f(scaled(K, a), scaled(L, b))
        elif e > -1020:  # a normal float64 (in between, subnormal results keep only a few bits)
            assert f(scaled(K, a), scaled(L, b)) == pytest.approx(math.ldexp(base, a + b), rel=RTOL)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-100, 1e-10, 1.0, 1e10, 1e100, 1e155, 1e200, 1e300])
def test_cka_of_a_rescaled_copy_is_one_from_1e_minus_300_to_1e300(scale):
    # decimal factors are not exact, but the rescaled copy differs by a rounding per entry (1e-16)
    assert dg.linear_cka(G * scale, G) == pytest.approx(1.0, abs=1e-12)
    assert dg.linear_cka(G, G * scale, debiased=True) == pytest.approx(1.0, abs=1e-12)
    assert dg.rbf_cka(G * scale, G) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(e=EXPONENTS)
def test_minibatch_and_full_heatmaps_are_invariant_to_scale(e):
    caps = {"a": G, "b": scaled(H, e), "c": scaled(G, -e)}
    base = cka_matrix_from_captures({"a": G, "b": H, "c": G}, batch_size=10).matrix.to_numpy()
    got = cka_matrix_from_captures(caps, batch_size=10).matrix.to_numpy()
    np.testing.assert_allclose(got, base, rtol=RTOL)
    full = cka_matrix_from_captures(caps, minibatch=False).matrix.to_numpy()
    np.testing.assert_allclose(full, cka_matrix_from_captures({"a": G, "b": H, "c": G}, minibatch=False)
                               .matrix.to_numpy(), rtol=RTOL)
    assert np.isfinite(full).all()


@settings(max_examples=10, deadline=None)
@given(e=EXPONENTS)
def test_first_pc_and_effective_rank_are_invariant_to_scale(e):
    """The first-PC fraction, heatmaps with the first PC removed (streamed and full) and RankMe: at
    1e-300 the PC removal used to pick an arbitrary direction from an underflowed scatter matrix and
    give a wrong CKA without a word."""
    from deepgeom.analysis.similarity import pc1_fraction
    from deepgeom.functional.collapse import effective_rank

    assert pc1_fraction(scaled(G, e)) == pytest.approx(pc1_fraction(G), rel=RTOL)
    assert effective_rank(scaled(G, e)) == pytest.approx(effective_rank(G), rel=RTOL)
    for mb in (True, False):
        base = cka_matrix_from_captures({"a": G, "b": H}, remove_pc1=True, minibatch=mb, batch_size=10)
        got = cka_matrix_from_captures({"a": scaled(G, e), "b": H}, remove_pc1=True, minibatch=mb, batch_size=10)
        np.testing.assert_allclose(got.matrix.to_numpy(), base.matrix.to_numpy(), rtol=RTOL)


def test_minibatch_cka_with_batches_at_different_scales_matches_the_ratio_of_sums():
    """X's batches at 2^332 (~1e100) and 2^-332: per batch, HSIC₁(K, L) scales by 4^e and HSIC₁(K, K)
    by 16^e (linear kernels are quadratic in x), so the ratio of sums is, with the per-batch terms
    at unit scale, (kl₁·4^e + kl₂·4^-e) / sqrt((kk₁·16^e + kk₂·16^-e)(ll₁ + ll₂)) — the second
    batch's X terms vanish beside the first's (a relative 2^-1328), the Y terms do not."""
    m = MinibatchCKA(compute_dtype=torch.float64)
    terms = []
    for sl, k in ((slice(0, 20), 332), (slice(20, 40), -332)):
        m.update([scaled(G[sl], k)], [H[sl]])
        one = MinibatchCKA(compute_dtype=torch.float64)
        one.update([G[sl]], [H[sl]])
        terms.append([float(t.ravel()[0]) for t in one.hsic_sums()])
    (kl1, kk1, ll1), (_, _, ll2) = terms
    assert m.compute()[0, 0] == pytest.approx(kl1 / math.sqrt(kk1 * (ll1 + ll2)), rel=RTOL)
    kl, kk, ll = m.hsic_sums()  # the true sums: X's exceed float64 (≈ kk₁·2^1328)
    assert np.isinf(kk).all() and ll[0] == pytest.approx(ll1 + ll2, rel=1e-12)


@settings(max_examples=20, deadline=None)
@given(e=EXPONENTS)
def test_pca_id_and_spectrum_are_invariant_to_scale(e):
    base = dg.pca_id(G)
    r = dg.pca_id(scaled(G, e))
    assert r.id == base.id
    np.testing.assert_allclose(r.spectrum, base.spectrum, rtol=RTOL, atol=1e-15)
    assert r.participation_ratio == pytest.approx(base.participation_ratio, rel=RTOL)
    s0 = dg.feature_spectrum(G, targets=LABELS)
    with np.errstate(over="ignore"):
        want = np.ldexp(s0.eigenvalues, 2 * e)  # exact: eigenvalues of (2^e Φ)ᵀ(2^e Φ)/n
    if not np.isfinite(want).all():
        with pytest.raises(InputError, match="exceed float64's range"):
            dg.feature_spectrum(scaled(G, e))
        return
    if want[0] < np.finfo(np.float64).tiny * 2.0**53:  # fewer than 53 bits left above the subnormals
        with pytest.raises(InputError, match="below float64's normal range"):
            dg.feature_spectrum(scaled(G, e))
        return
    s = dg.feature_spectrum(scaled(G, e), targets=LABELS)
    np.testing.assert_allclose(s.eigenvalues, want, rtol=RTOL, atol=float(want.max()) * 1e-14)
    np.testing.assert_allclose(s.target_alignment, s0.target_alignment, rtol=RTOL, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(e=EXPONENTS)
def test_neighbour_estimators_are_invariant_to_scale(e):
    """TwoNN, GRIDE and Levina–Bickel see only ratios of neighbour distances."""
    X = rng0.standard_normal((60, 3))
    for f in (lambda A: dg.twonn(A).id, lambda A: dg.twonn(A, method="mle").id,
              lambda A: dg.gride(A, n1=2, n2=4).id, lambda A: dg.levina_bickel(A, k1=5, k2=10).id):
        assert f(scaled(X, e)) == pytest.approx(f(X), rel=RTOL)


@settings(max_examples=20, deadline=None)
@given(e=EXPONENTS)
def test_neural_collapse_is_invariant_to_scale(e):
    base = dg.neural_collapse(G, LABELS, weights=W, bias=B)
    # NC4 compares argmax(W h + b) with the nearest class mean: h and b scale together
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        got = dg.neural_collapse(scaled(G, e), LABELS, weights=W, bias=scaled(B, e))
    for key in ("nc1", "nc2", "nc2_equinorm", "nc2_equiangular", "nc3"):
        assert getattr(got, key) == pytest.approx(getattr(base, key), rel=RTOL, abs=1e-12), key
    assert got.nc4 == base.nc4


def test_neural_collapse_at_1e300_is_finite():
    m = dg.neural_collapse(G * 1e300, LABELS)
    assert math.isfinite(m.nc1) and m.nc1 == pytest.approx(dg.neural_collapse(G, LABELS).nc1, rel=1e-9)


def test_spectrum_summaries_at_1e140_are_finite_without_warnings():
    s0 = dg.feature_spectrum(G)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = dg.feature_spectrum(G * 2.0**465)  # ~1e140: eigenvalues ~1e280, their squares overflow
        assert dg.participation_ratio(s) == pytest.approx(dg.participation_ratio(s0), rel=1e-12)
        assert dg.dominant_count(s).count == dg.dominant_count(s0).count


def test_pca_and_spectrum_cli_on_huge_values(tmp_path, capsys):
    from deepgeom.cli import main

    np.save(tmp_path / "huge.npy", G * 1e140)
    np.save(tmp_path / "good.npy", G)
    np.save(tmp_path / "y.npy", LABELS)
    assert main(["id", "estimate", str(tmp_path / "huge.npy"), "--method", "pca", "--json"]) == 0
    assert '"id": ' + str(dg.pca_id(G).id) in capsys.readouterr().out
    assert main(["cka", str(tmp_path / "huge.npy"), str(tmp_path / "good.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cka"] == pytest.approx(1.0, abs=1e-12)
    np.save(tmp_path / "vast.npy", G * 1e300)  # eigenvalues 1e600: not representable
    assert main(["spectrum", str(tmp_path / "vast.npy"), "--labels", str(tmp_path / "y.npy")]) == 2
    assert "exceed float64's range" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- point 2: NaN
def test_id_profile_names_the_layer_and_rows_of_non_finite_activations():
    from torch import nn

    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.full((30, 5), float("nan"))
    with pytest.raises(InputError, match=r"layer 'input' contains NaN or Inf \(first in row 0\) in 30 rows"):
        dg.id_profile(net, x, layers=["input", "1"])
    X = rng0.standard_normal((30, 3))
    X[[4, 17], 1] = np.inf
    with pytest.raises(InputError, match=r"layer 'b' contains NaN or Inf \(first in row 4\) in 2 rows: 4, 17"):
        dg.id_profile({"a": rng0.standard_normal((30, 3)), "b": X})
    with pytest.raises(InputError, match=r"layer 'v' must be an \(N, D\) array.*shape \(30,\)"):
        dg.id_profile({"v": rng0.standard_normal(30)})


def test_full_heatmap_names_a_nan_layer_instead_of_calling_it_constant():
    X = G.copy()
    X[7, 2] = np.nan
    with pytest.raises(InputError, match=r"layer 'bad' contains NaN or Inf \(first in row 7\)"):
        cka_matrix_from_captures({"good": G, "bad": X}, minibatch=False)
    with pytest.raises(InputError, match=r"layer 'bad' contains NaN or Inf \(first in row 7\)"):
        cka_matrix_from_captures({"good": G, "bad": X}, batch_size=10)


# ------------------------------------------------------------------------------- point 3: tiny N
@pytest.mark.parametrize("n", [1, 2, 3])
def test_cka_refuses_fewer_than_four_rows(n):
    x, y = G[:n], H[:n]
    for f in (lambda: dg.linear_cka(x, y), lambda: dg.rbf_cka(x, y), lambda: dg.linear_cka(x, y, debiased=True),
              lambda: kernel_cka(x @ x.T, y @ y.T), lambda: cka_matrix_from_captures({"a": x}, minibatch=False)):
        with pytest.raises(InputError, match="at least 4"):
            f()


def test_two_rows_would_give_cka_one_for_any_data():
    """Why 4: with 2 rows every centred kernel is rank one, so CKA is 1 for unrelated data."""
    a, b = np.array([[0.0, 1.0], [5.0, -2.0]]), np.array([[3.0], [-7.0]])
    Ka = (a - a.mean(0)) @ (a - a.mean(0)).T
    Kb = (b - b.mean(0)) @ (b - b.mean(0)).T
    assert (Ka * Kb).sum() / np.sqrt((Ka * Ka).sum() * (Kb * Kb).sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2])
def test_twonn_refuses_below_its_minimum_with_the_minimum_stated(n):
    with pytest.raises(InputError, match="at least 3"):
        dg.twonn(G[:n])


# ------------------------------------------------------------------------------- point 7: duplicates
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_duplicate_mask_agrees_with_duplicate_groups(data):
    n = data.draw(st.integers(3, 12))
    d = data.draw(st.integers(1, 3))
    base = data.draw(st.sampled_from([0.0, 1.0, -3.5, 1e-300, 1e300]))
    tiny = data.draw(st.sampled_from([1e-170, 1e-300, 5e-324, 1e-16, 0.0]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    X = base + rng.integers(0, 3, size=(n, d)) * tiny  # many exact copies and tiny differences
    X[rng.integers(0, n)] *= -1.0 if base == 0.0 else 1.0  # -0.0 beside 0.0
    rep = duplicate_groups(X)
    member = np.bincount(rep, minlength=n)[rep] > 1
    nb = knn(X, 1, method=data.draw(st.sampled_from(["matrix", "tree"])))
    np.testing.assert_array_equal(nb.duplicate_mask, member)
    # and the distance is the true one, from the differences in exact rational arithmetic
    from fractions import Fraction

    i = int(rng.integers(0, n))
    diff = [Fraction(float(a)) - Fraction(float(b)) for a, b in zip(X[i], X[int(nb.indices[i, 0])], strict=True)]
    m = max(abs(v) for v in diff)
    true = 0.0 if m == 0 else float(m) * math.sqrt(float(sum(v * v for v in diff) / (m * m)))
    assert nb.distances[i, 0] == pytest.approx(true, rel=1e-15, abs=0)


def test_rows_differing_by_1e_minus_170_are_not_duplicates_and_twonn_measures_them():
    X = np.array([[0.0], [1e-170], [1.0], [2.5], [4.0], [6.1]])
    nb = knn(X, 2)
    assert nb.distances[0, 0] == 1e-170 and not nb.duplicate_mask.any()
    assert (duplicate_groups(X) == np.arange(6)).all()
    assert math.isfinite(dg.twonn(X).id)


def test_memmapped_data_with_duplicates_stays_streamed(tmp_path, monkeypatch):
    """The kept rows are searched through a lazy view: the largest numpy allocation stays near the
    search's memory budget instead of the kept rows' size (which the old copy read at once)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n, d = 800, 4096
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[700:] = X[:100]  # 100 duplicated rows
    np.save(tmp_path / "x.npy", X)
    M = np.load(tmp_path / "x.npy", mmap_mode="r")
    kept_bytes = 700 * d * 4  # 11.5 MB
    monkeypatch.setitem(knn.__kwdefaults__, "memory_bytes", 2 * 2**20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 100 duplicates are announced
        want = dg.twonn(X).id
        tracemalloc.start()
        try:
            got = dg.twonn(M).id
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert got == pytest.approx(want, rel=1e-12)
    print(f"peak {peak / 2**20:.2f} MiB, kept rows {kept_bytes / 2**20:.2f} MiB")
    assert peak < kept_bytes / 2, f"peak {peak / 2**20:.1f} MiB"
