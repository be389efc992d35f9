"""Feature-kernel spectra (Nam et al. 2024): closed forms, route agreement, invariances, Π, counts.

Tolerances: 1e-10 relative for quantities computed from well-conditioned float64 matrices (the
eigen-solver's error is ~1e-15·‖G‖ times a modest condition factor); exact integers for counts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deepgeom.errors import InputError
from deepgeom.functional.spectrum import (
    DominantCount,
    Spectrum,
    alignment_curve,
    dominant_count,
    dominant_count_subsamples,
    effective_dimension,
    feature_spectrum,
    regime,
)


def orthonormal(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def etf_features(C, per_class, p, rng, offset=0.0):
    """Features exactly at the vertices of a simplex ETF (zero within-class spread) in p dims."""
    M = np.eye(C) - 1.0 / C  # centred one-hot: rows form a simplex ETF in R^C
    R = orthonormal(rng, p, C)  # embed isometrically into R^p
    means = M @ R.T * 3.0
    if offset:
        # a global mean orthogonal to the ETF's span
        v = rng.standard_normal(p)
        v -= R @ (R.T @ v)
        means = means + offset * v / np.linalg.norm(v)
    y = np.repeat(np.arange(C), per_class)
    return means[y], y


def match_signs(A, B):
    """Flip columns of B to agree with A (eigenfunctions are defined up to sign)."""
    s = np.sign((A * B).sum(0))
    s[s == 0] = 1
    return B * s


@pytest.mark.parametrize("n,d", [(30, 80), (80, 30)])
def test_known_spectrum_is_recovered(rng, n, d):
    r = 12
    U, V = orthonormal(rng, n, r), orthonormal(rng, d, r)
    s = np.linspace(5.0, 0.5, r)
    Phi = U @ np.diag(s) @ V.T
    sp = feature_spectrum(Phi)
    assert sp.route == ("gram" if n <= d else "covariance")
    assert sp.rank == r
    np.testing.assert_allclose(sp.eigenvalues[:r], s**2 / n, rtol=1e-10)
    assert np.all(np.abs(sp.eigenvalues[r:]) < 1e-12)
    # e_k = √n U[:, k] and u_k = V[:, k], up to sign
    np.testing.assert_allclose(np.abs(sp.eigenfunctions), np.abs(np.sqrt(n) * U), atol=1e-9)
    np.testing.assert_allclose(np.abs(sp.eigenvectors), np.abs(V), atol=1e-9)


def test_gram_and_covariance_routes_agree(rng):
    Phi = rng.standard_normal((60, 45)) @ np.diag(np.linspace(3, 0.3, 45)) + 0.5
    for center in (False, True):
        a = feature_spectrum(Phi, center=center, route="gram")
        b = feature_spectrum(Phi, center=center, route="covariance")
        assert (a.route, b.route) == ("gram", "covariance")
        assert a.rank == b.rank == 45
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-10, atol=1e-12 * a.eigenvalues[0])
        np.testing.assert_allclose(a.eigenfunctions, match_signs(a.eigenfunctions, b.eigenfunctions), atol=1e-8)
        np.testing.assert_allclose(a.eigenvectors, match_signs(a.eigenvectors, b.eigenvectors), atol=1e-8)
        # deterministic sign convention: both routes give identical signs without matching
        np.testing.assert_allclose(a.eigenfunctions, b.eigenfunctions, atol=1e-8)


@given(n=st.integers(8, 40), d=st.integers(3, 40), seed=st.integers(0, 10_000), center=st.booleans())
def test_eigenfunctions_orthonormal_and_consistent(n, d, seed, center):
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((n, d)) + rng.standard_normal(d)
    sp = feature_spectrum(Phi, center=center)
    E = sp.eigenfunctions
    np.testing.assert_allclose(E.T @ E / n, np.eye(sp.n_modes), atol=1e-8)
    # e_k(x_i) = u_kᵀ(Φ(x_i) − μ)/√ρ_k, and evaluate() reproduces it
    np.testing.assert_allclose(sp.evaluate(Phi), E, atol=1e-8)
    # the spectrum is the centred/uncentred second moment: trace = ‖Φ̃‖²_F / n
    Pt = Phi - Phi.mean(0) if center else Phi
    np.testing.assert_allclose(sp.eigenvalues.sum(), (Pt**2).sum() / n, rtol=1e-10)
    assert np.all(np.diff(sp.eigenvalues) <= 1e-12 * sp.eigenvalues[0])


def test_rotation_and_scale_invariance(rng):
    Phi = rng.standard_normal((50, 20)) + 1.0
    Q = orthonormal(rng, 20, 20)
    a, b = feature_spectrum(Phi), feature_spectrum(3.0 * Phi @ Q)
    np.testing.assert_allclose(b.eigenvalues, 9.0 * a.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(b.eigenfunctions, a.eigenfunctions, atol=1e-8)


def test_pi_reaches_one_at_full_rank(rng):
    n, C = 30, 4
    Phi = rng.standard_normal((n, 50))  # rank n: the features span R^n
    y = rng.integers(0, C, n)
    out = rng.standard_normal((n, C))
    sp = feature_spectrum(Phi, targets=y, outputs=out)
    assert sp.rank == n and sp.n_classes == C
    assert sp.target_alignment[-1] == pytest.approx(1.0, abs=1e-10)
    assert sp.output_alignment[-1] == pytest.approx(1.0, abs=1e-10)
    assert np.all(np.diff(sp.target_alignment) >= -1e-12)
    # centred: rank n-1, centred targets live in 1^⊥ and are captured fully too
    spc = feature_spectrum(Phi, center=True, targets=y)
    assert spc.rank == n - 1
    assert spc.target_alignment[-1] == pytest.approx(1.0, abs=1e-10)
    # an uncentred target equal to the constant is entirely outside the centred span
    assert np.isnan(alignment_curve(spc.eigenfunctions, np.ones((n, 1)), center=True)).all()


def test_pi_of_a_target_built_from_eigenfunctions(rng):
    Phi = rng.standard_normal((100, 10)) @ np.diag(np.arange(10, 0, -1.0))
    sp = feature_spectrum(Phi)
    E = sp.eigenfunctions
    Y = 2.0 * E[:, [1]] + 1.0 * E[:, [4]]  # share 4/5 at k=2, all of it at k=5
    curve = alignment_curve(E, Y, center=False)
    np.testing.assert_allclose(curve, [0, 0.8, 0.8, 0.8, 1, 1, 1, 1, 1, 1], atol=1e-12)


def test_etf_gives_exactly_c_minus_1_dominant_centred(rng):
    C = 5
    Phi, y = etf_features(C, per_class=12, p=20, rng=rng)
    sp = feature_spectrum(Phi, center=True, targets=y)
    assert sp.rank == C - 1
    # a simplex ETF has C−1 equal eigenvalues, then exact zeros
    np.testing.assert_allclose(sp.eigenvalues[: C - 1], sp.eigenvalues[0], rtol=1e-10)
    assert sp.eigenvalues[C - 1] < 1e-14 * sp.eigenvalues[0]
    dc = dominant_count(sp)
    assert (dc.count, dc.rule) == (C - 1, "rank")  # no gap inside the block; the rank edge decides
    assert dc.log_gaps[C - 2] > 10  # ... and it is > 10 decades deep
    assert dc.k90_targets == dc.k99_targets == C - 1  # centred one-hot targets lie in the ETF's span
    assert regime(dc, C) == "MF"


def test_etf_uncentred_count(rng):
    C = 5
    # ETF means sum to zero: without an offset the uncentred kernel has rank C−1 too
    Phi, y = etf_features(C, per_class=12, p=20, rng=rng)
    assert dominant_count(feature_spectrum(Phi)).count == C - 1
    # with a nonzero global mean (as ReLU features have) the constant mode adds one: C modes
    Phi, y = etf_features(C, per_class=12, p=20, rng=rng, offset=4.0)
    sp = feature_spectrum(Phi, targets=y)
    dc = dominant_count(sp)
    assert sp.rank == C and (dc.count, dc.rule) == (C, "rank")
    assert dc.k99_targets == C  # uncentred one-hot targets: constant + class directions


def test_power_law_spectrum_has_no_dominant_block(rng):
    n, d = 400, 200
    rho = np.arange(1, d + 1, dtype=float) ** -1.0
    Phi = np.sqrt(n) * orthonormal(rng, n, d) @ np.diag(np.sqrt(rho)) @ orthonormal(rng, d, d).T
    sp = feature_spectrum(Phi, center=False)
    np.testing.assert_allclose(sp.eigenvalues, rho, rtol=1e-9)
    dc = dominant_count(sp)
    assert dc.rule == "effective_dim"  # largest gap past k=1 is log10(3/2) = 0.18 decades
    assert dc.gap_decades == pytest.approx(np.log10(3 / 2), rel=1e-8)
    assert dc.count == 1 + round(effective_dimension(rho[1:]))
    assert regime(dc, 10) == "EF"


def test_steep_power_law_is_not_a_gap(rng):
    # α = 3: g_2 = 3·log10(3/2) = 0.53 decades, above min_gap, but every slope equals α: no cliff
    rho = np.arange(1, 81, dtype=float) ** -3.0
    Phi = np.sqrt(200) * orthonormal(rng, 200, 80) @ np.diag(np.sqrt(rho))
    dc = dominant_count(feature_spectrum(Phi))
    assert dc.gap_decades > dc.min_gap_decades
    assert dc.gap_slope == pytest.approx(3.0, rel=1e-6) and dc.median_slope == pytest.approx(3.0, rel=1e-6)
    assert dc.rule == "effective_dim"


def test_block_gap_beats_rank_edge_of_dead_units(rng):
    # 10 strong modes, 30 weak ones, then 24 exactly-zero directions (dead units): count 10, not 40
    n, d = 300, 64
    rho = np.r_[np.linspace(1.0, 0.6, 10), 0.02 * np.linspace(1.0, 0.3, 30), np.zeros(24)]
    Phi = np.sqrt(n) * orthonormal(rng, n, d) @ np.diag(np.sqrt(rho)) @ orthonormal(rng, d, d).T
    sp = feature_spectrum(Phi)
    dc = dominant_count(sp)
    assert sp.rank == 40
    assert (dc.count, dc.rule, dc.gap_k) == (10, "gap", 10)
    assert dc.gap_decades == pytest.approx(np.log10(0.6 / 0.02), rel=1e-6)


def test_first_significant_gap_bounds_the_top_block(rng):
    # 10 strong modes, 50 bulk modes, then 4 nearly dead ones (1e-6, above the rank tolerance): two
    # significant gaps, 1.5 decades at k=10 and 4 decades at k=60; the count is the first
    n, d = 300, 64
    rho = np.r_[np.linspace(1.0, 0.6, 10), np.geomspace(0.02, 0.01, 50), np.full(4, 1e-6)]
    Phi = np.sqrt(n) * orthonormal(rng, n, d) @ np.diag(np.sqrt(rho))
    dc = dominant_count(feature_spectrum(Phi))
    assert dc.significant_ks == (10, 60)
    assert (dc.count, dc.rule, dc.gap_k) == (10, "gap", 10)


def test_effective_dimension_closed_forms():
    assert effective_dimension(np.ones(7)) == pytest.approx(7.0)
    assert effective_dimension(np.array([1.0, 0, 0])) == pytest.approx(1.0)


def test_regime_rule():
    # the count must sit at C (uncentred) within the tolerance max(1, round(0.2 C)) = 2 for C = 10
    assert regime(10, 10) == "MF" and regime(12, 10) == "MF" and regime(8, 10) == "MF"
    assert regime(13, 10) == "EF" and regime(7, 10) == "EF"
    # few modes is an unlearned kernel, not a minimal one (the MLP at epoch 1 once counted 2 -> "MF")
    assert regime(2, 10) == "EF" and regime(3, 10) == "EF" and regime(4, 10) == "EF"
    assert regime(9, 10, centered=True, tolerance=0) == "MF" and regime(10, 10, centered=True, tolerance=0) == "EF"
    assert regime(4, 3, tolerance=0) == "EF"
    with pytest.raises(InputError):
        regime(5, 1)
    with pytest.raises(InputError):
        regime(5, 3, tolerance=-1)
    with pytest.raises(InputError):
        regime(5, 3, accuracy=1.5)


def test_regime_needs_learned_classes():
    # accuracy must reach halfway from chance to perfect: 0.1 + 0.45 = 0.55 for C = 10
    assert regime(10, 10, accuracy=0.55) == "MF"
    assert regime(10, 10, accuracy=0.54) == "EF"
    assert regime(10, 10, accuracy=0.1) == "EF"  # at chance: never MF, whatever the count
    assert regime(3, 3, accuracy=0.9, min_accuracy=0.95) == "EF"


def planted(rng, n, rho):
    """Φ (n x len(rho)) whose uncentred kernel has exactly the eigenvalues rho."""
    d = len(rho)
    return np.sqrt(n) * orthonormal(rng, n, d) @ np.diag(np.sqrt(rho)) @ orthonormal(rng, d, d).T


@pytest.mark.parametrize("C", [3, 10])
def test_planted_c_separated_modes_are_mf(rng, C):
    # C modes 1.0 .. 0.5 then a noise floor 1.5 decades lower: the gap is at k = C
    rho = np.r_[np.linspace(1.0, 0.5, C), 0.015 * np.linspace(1.0, 0.5, 60)]
    dc = dominant_count(feature_spectrum(planted(rng, 300, rho)))
    assert (dc.count, dc.rule) == (C, "gap")
    assert dc.gap_decades == pytest.approx(np.log10(0.5 / 0.015), rel=1e-8)
    assert regime(dc, C) == "MF" and regime(dc, C, accuracy=1.0) == "MF"
    assert regime(dc, C, accuracy=1.0 / C) == "EF"  # the same spectrum at chance accuracy


def test_planted_power_law_is_never_mf_even_with_count_at_c(rng):
    # ρ_k = k^-1: the effective dimension of the tail can land near C, but there is no gap
    rho = np.arange(1, 151, dtype=float) ** -1.0
    dc = dominant_count(feature_spectrum(planted(rng, 300, rho)))
    assert dc.rule == "effective_dim"
    assert regime(dc, dc.count, accuracy=1.0) == "EF"  # even when C equals the count


def test_planted_near_collapse_is_mf(rng):
    # near-collapse: C class modes with a within-class floor 5 decades down (not exactly rank C)
    C = 5
    rho = np.r_[2.0, np.full(C - 1, 0.4), np.full(40, 4e-6)]
    dc = dominant_count(feature_spectrum(planted(rng, 200, rho)))
    assert (dc.count, dc.rule) == (C, "gap")
    assert regime(dc, C, accuracy=1.0) == "MF"


def test_untrained_random_relu_net_is_not_mf():
    # a random ReLU MLP's penultimate features on random inputs: kernel without a class block
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=g)
    h = torch.relu(x @ torch.randn(20, 256, generator=g) / 20**0.5)
    h = torch.relu(h @ torch.randn(256, 128, generator=g) * (2 / 256) ** 0.5)
    y = torch.randint(0, 10, (400,), generator=g)
    dc = dominant_count(feature_spectrum(h.double(), targets=y))
    assert dc.rule != "gap"
    assert regime(dc, 10) == "EF" and regime(dc, 10, accuracy=0.1) == "EF"


def test_count_subsamples_are_stable_on_a_real_gap_and_reproducible(rng):
    C = 4
    rho = np.r_[np.linspace(1.0, 0.5, C), 0.01 * np.linspace(1.0, 0.5, 30)]
    Phi = planted(rng, 400, rho)
    subs = dominant_count_subsamples(Phi, replicates=5, fraction=0.75, seed=3)
    assert [d.count for d in subs] == [C] * 5 and {d.rule for d in subs} == {"gap"}
    again = dominant_count_subsamples(Phi, replicates=5, fraction=0.75, seed=3)
    assert [d.gap_decades for d in subs] == [d.gap_decades for d in again]
    with pytest.raises(InputError):
        dominant_count_subsamples(Phi, fraction=0.0)
    with pytest.raises(InputError):
        dominant_count_subsamples(Phi, replicates=0)


def test_torch_and_numpy_inputs_agree(rng):
    Phi = rng.standard_normal((40, 15)).astype(np.float32)
    a, b = feature_spectrum(Phi), feature_spectrum(torch.from_numpy(Phi))
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12)
    d = a.to_dict(max_array=20)
    assert d["rank"] == 15 and d["eigenfunctions"] is None and len(d["eigenvalues"]) == 15


def test_k_max_limits_modes(rng):
    sp = feature_spectrum(rng.standard_normal((30, 10)), k_max=3, targets=np.zeros(30, dtype=int) + 1)
    assert sp.n_modes == 3 and sp.eigenvalues.shape == (10,) and sp.target_alignment.shape == (3,)


def test_errors(rng):
    Phi = rng.standard_normal((20, 5))
    bad = Phi.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        feature_spectrum(bad)
    with pytest.raises(InputError, match="one row per example"):
        feature_spectrum(Phi, targets=np.zeros(19, dtype=int))
    with pytest.raises(InputError, match="integer labels"):
        feature_spectrum(Phi, outputs=np.zeros((20, 2), dtype=int))
    with pytest.raises(InputError, match=">= 0"):
        feature_spectrum(Phi, targets=-np.ones(20, dtype=int))
    with pytest.raises(InputError, match="2-D"):
        feature_spectrum(Phi[:, 0])
    with pytest.raises(InputError, match="route"):
        feature_spectrum(Phi, route="svd")
    with pytest.raises(InputError, match="k_max"):
        feature_spectrum(Phi, k_max=0)
    with pytest.raises(InputError, match="Spectrum"):
        dominant_count(np.ones(5))
    sp = feature_spectrum(Phi, eigenvectors=False)
    assert isinstance(sp, Spectrum) and sp.eigenvectors is None
    with pytest.raises(InputError, match="eigenvectors=False"):
        sp.evaluate(Phi)
    assert isinstance(dominant_count(sp), DominantCount)
