"""CKA, HSIC and minibatch CKA: published formulas, reference values, properties, anchors, errors.

The independent references here are (a) a direct numpy transcription of Kornblith et al.'s reference
notebook (gram_linear/gram_rbf/center_gram/cka/feature_space_linear_cka) and of Song et al.'s HSIC₁
formula with explicit traces and ones-vectors, (b) the notebook's published values, (c) ckatorch and
torch-cka where they compute the same quantity. Tolerances: 1e-10 against float64 references (only
rounding differs); 1e-4 against torch-cka, which computes in float32 (≈1e-7 relative rounding
amplified by the HSIC cancellation at moderate offsets).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from deepgeom.errors import InputError, UnknownNameError
from deepgeom.functional.cka import (
    MinibatchCKA,
    cka,
    gram_linear,
    gram_rbf,
    hsic,
    kernel_cka,
    linear_cka,
    rbf_cka,
    u_center,
    unbiased_hsic,
    unbiased_hsic_pairs,
)

TOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests are many small products: on the shared, loaded 2-core machine the thread-pool
    hand-off costs milliseconds per op, so run them single-threaded (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- reference: Kornblith et al. notebook
def ref_gram_linear(x):
    return x.dot(x.T)


def ref_gram_rbf(x, threshold=1.0):
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold**2 * sq_median_distance))


def ref_center_gram(gram, unbiased=False):
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def ref_cka(gram_x, gram_y, debiased=False):
    gram_x = ref_center_gram(gram_x, unbiased=debiased)
    gram_y = ref_center_gram(gram_y, unbiased=debiased)
    return gram_x.ravel().dot(gram_y.ravel()) / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y))


def ref_song_hsic1(K, L):
    """Song et al. 2012 eq. (5), written out with traces and ones-vectors."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    term = np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2)) \
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return term / (n * (n - 3))


def ref_minibatch_cka(xb, yb):
    """Nguyen et al. 2021: ratio of sums of HSIC₁ over the batches (float64, explicit formula)."""
    kl = sum(ref_song_hsic1(x @ x.T, y @ y.T) for x, y in zip(xb, yb, strict=False))
    kk = sum(ref_song_hsic1(x @ x.T, x @ x.T) for x in xb)
    ll = sum(ref_song_hsic1(y @ y.T, y @ y.T) for y in yb)
    return kl / np.sqrt(kk * ll)


@pytest.fixture
def xy():
    np.random.seed(1337)  # the reference notebook's legacy seeding
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


# ------------------------------------------------------------------------------ published numbers
def test_reference_notebook_values(xy):
    X, Y = xy
    assert round(linear_cka(X, Y), 5) == 0.55761
    assert round(linear_cka(X, Y, debiased=True), 5) == 0.51346
    assert round(rbf_cka(X, Y, sigma=0.5), 5) == 0.65483


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_matches_notebook_formulas(xy, debiased):
    X, Y = xy
    ref = ref_cka(ref_gram_linear(X), ref_gram_linear(Y), debiased=debiased)
    for method in ("feature", "gram", "auto"):
        assert abs(linear_cka(X, Y, debiased=debiased, method=method) - ref) < TOL
    # torch input, float32 input and a memmap give the same number
    assert abs(linear_cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=debiased) - ref) < TOL
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    ref32 = ref_cka(ref_gram_linear(X32.astype(np.float64)), ref_gram_linear(Y32.astype(np.float64)), debiased)
    assert abs(linear_cka(X32, Y32, debiased=debiased) - ref32) < TOL


def test_memmap_input(tmp_path, xy):
    X, Y = xy
    mx = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=X.shape)
    mx[:] = X
    mx.flush()
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    for debiased in (False, True):
        for method in ("feature", "gram"):
            assert abs(linear_cka(mx, Y, debiased=debiased, method=method) - linear_cka(X, Y, debiased=debiased)) < TOL


@pytest.mark.parametrize("sigma", [0.2, 0.5, 0.8, 2.0])
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_matches_notebook_formulas(xy, sigma, debiased):
    X, Y = xy
    ref = ref_cka(ref_gram_rbf(X, sigma), ref_gram_rbf(Y, sigma), debiased=debiased)
    assert abs(rbf_cka(X, Y, sigma=sigma, debiased=debiased) - ref) < TOL
    np.testing.assert_allclose(gram_rbf(X, sigma).numpy(), ref_gram_rbf(X, sigma), rtol=0, atol=1e-12)


def test_hsic_estimators_match_song_and_gretton(rng):
    X = rng.normal(size=(40, 7))
    Y = np.tanh(X @ rng.normal(size=(7, 3))) + 0.3 * rng.normal(size=(40, 3))
    K, L = X @ X.T, Y @ Y.T
    assert abs(unbiased_hsic(K, L) - ref_song_hsic1(K, L)) < 1e-10 * abs(ref_song_hsic1(K, L))
    n = 40
    H = np.eye(n) - np.ones((n, n)) / n
    assert abs(hsic(K, L) - np.trace(K @ H @ L @ H) / (n - 1) ** 2) < 1e-10 * abs(hsic(K, L))
    assert hsic(K, L, unbiased=True) == unbiased_hsic(K, L)
    # all pairs at once == each pair alone
    Ks = [K, L, gram_rbf(X).numpy()]
    kl, kk, ll = unbiased_hsic_pairs(Ks, Ks[:2])
    for i, A in enumerate(Ks):
        for j, B in enumerate(Ks[:2]):
            assert abs(float(kl[i, j]) - ref_song_hsic1(A, B)) < 1e-9 * max(1.0, abs(ref_song_hsic1(A, B)))
        assert abs(float(kk[i]) - ref_song_hsic1(A, A)) < 1e-9 * max(1.0, ref_song_hsic1(A, A))


def test_kernel_cka_and_gram_linear(xy):
    X, Y = xy
    K, L = gram_linear(X), gram_linear(Y)
    assert abs(kernel_cka(K, L) - linear_cka(X, Y)) < TOL
    assert abs(kernel_cka(K, L, debiased=True) - linear_cka(X, Y, debiased=True)) < TOL
    assert abs(kernel_cka(X @ X.T, Y @ Y.T) - linear_cka(X, Y)) < TOL  # uncentred kernels too
    assert cka(X, Y, kernel="rbf", sigma=0.5) == rbf_cka(X, Y, sigma=0.5)


def test_different_widths(rng):
    X = rng.normal(size=(120, 3))
    Y = np.concatenate([X @ rng.normal(size=(3, 400)), rng.normal(size=(120, 100))], 1)
    for debiased in (False, True):
        ref = ref_cka(ref_gram_linear(X), ref_gram_linear(Y), debiased)
        assert abs(linear_cka(X, Y, debiased=debiased) - ref) < TOL  # auto → gram (D₂ large)
        assert abs(linear_cka(X, Y, debiased=debiased, method="feature") - ref) < TOL


# ----------------------------------------------------------------------------------- precision
def naive_float32_hsic1(K):
    """Song's HSIC₁(K, K) the way popular libraries compute it: raw float32 Gram, float32 formula."""
    n = K.shape[0]
    K = K.clone()
    K.fill_diagonal_(0)
    ones = torch.ones(n, 1)
    result = torch.trace(K @ K)
    result += ((ones.t() @ K @ ones @ ones.t() @ K @ ones) / ((n - 1) * (n - 2))).item()
    result -= ((ones.t() @ K @ K @ ones) * 2 / (n - 2)).item()
    return (1 / (n * (n - 3)) * result).item()


def test_relu_offset_float32():
    """ReLU-like features with a common offset of 200 in float32: the naive float32 HSIC₁ is wrong
    by orders of magnitude (measured: -5.3e6 against the true 7.8e3, i.e. negative), deepgeom
    matches the float64 truth."""
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(256, 20))
    X = (np.maximum(Z @ rng.normal(size=(20, 64)), 0) + 200.0).astype(np.float32)
    Y = (np.maximum(Z @ rng.normal(size=(20, 32)), 0) + 200.0).astype(np.float32)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    truth_kk = ref_song_hsic1(X64 @ X64.T, X64 @ X64.T)
    naive_kk = naive_float32_hsic1(torch.from_numpy(X) @ torch.from_numpy(X).T)
    assert abs(naive_kk - truth_kk) > 10 * truth_kk, (naive_kk, truth_kk)
    # truth: the same formula in float64 on the data with the offset removed exactly (X - 200 is
    # exact in float64); HSIC₁ is shift-invariant, and without the offset float64 has no cancellation
    truth = ref_minibatch_cka([X64 - 200.0], [Y64 - 200.0])
    for dtype in (torch.float64, torch.float32):
        m = MinibatchCKA(compute_dtype=dtype)
        m.update([X], [Y])
        tol = 1e-12 if dtype == torch.float64 else 1e-6  # float32 products after exact centring
        assert abs(m.compute()[0, 0] - truth) < tol
    assert abs(linear_cka(X, Y, debiased=True) - ref_cka(X64 @ X64.T, Y64 @ Y64.T, True)) < TOL


# ---------------------------------------------------------------------------------- properties
shapes = st.tuples(st.integers(8, 40), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1))


@given(shapes)
def test_properties(shape):
    n, d1, d2, seed = shape
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1)) * rng.uniform(0.1, 10) + rng.normal(size=d1) * 5
    Y = np.tanh(X @ rng.normal(size=(d1, d2))) + rng.normal(size=(n, d2))
    for debiased in (False, True):
        c = linear_cka(X, Y, debiased=debiased)
        assert abs(linear_cka(X, X, debiased=debiased) - 1.0) < 1e-9  # CKA(X, X) = 1
        assert abs(linear_cka(Y, X, debiased=debiased) - c) < 1e-9  # symmetry
        Q = ortho_group.rvs(d1, random_state=seed) if d1 > 1 else np.array([[-1.0]])
        assert abs(linear_cka(X @ Q, Y, debiased=debiased) - c) < 1e-9  # orthogonal invariance
        assert abs(linear_cka(3.7 * X + 2.0, Y, debiased=debiased) - c) < 1e-9  # isotropic scale (+ shift)
        assert abs(linear_cka(X, Y, debiased=debiased, method="gram") - c) < 1e-9
        if not debiased:
            assert -1e-12 <= c <= 1 + 1e-12
    r = rbf_cka(X, Y, sigma=0.8)
    assert abs(rbf_cka(Y, X, sigma=0.8) - r) < 1e-9
    Q = ortho_group.rvs(d1, random_state=seed) if d1 > 1 else np.array([[-1.0]])
    assert abs(rbf_cka(2.5 * X @ Q, Y, sigma=0.8) - r) < 1e-9  # distances scale uniformly, median too


@given(st.integers(0, 2**31 - 1))
def test_not_invariant_to_general_linear_map(seed):
    """Linear CKA is not invariant to an invertible non-orthogonal map (Kornblith et al. §3)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 6))
    A = np.diag([30.0, 1, 1, 1, 1, 0.05]) @ ortho_group.rvs(6, random_state=seed)  # invertible, cond 600
    assert abs(np.linalg.det(A)) > 1e-6
    assert linear_cka(X, X @ A) < 0.8


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 300), st.integers(1, 3), st.sampled_from([1, 3, 40, 600, 3000]), st.sampled_from([1, 7, 300]),
       st.floats(0, 4), st.integers(-100, 100), st.booleans(), st.integers(0, 2**31 - 1))
def test_auto_products_match_float64(B, batches, d1, d2, log_offset, exponent, relu, seed):
    """Minibatch CKA with the default ``compute_dtype="auto"`` on float32 activations (float32 Gram
    products after centring) against float64 products: within 1e-6. The data are
    built to hurt float32: common offsets up to 10⁴ × the spread, columns whose scales differ by
    e^±6, ReLU zeros, overall scales 2^±100 (squares out of float32's range without the rescale).
    Measured over 300 such random configurations (B = 4–512, D up to 3,000): worst 3.1e-8, ~1e-9
    typical; batches under 32 rows take float64 products (at B = 4–8 float32 rounding, ~√D·2⁻²⁴ of
    each entry, is amplified by U-centring to 1e-6–2e-5)."""
    rng = np.random.default_rng(seed)
    N = B * batches
    Z = rng.normal(size=(N, 5))

    def layer(d):
        X = Z @ rng.normal(size=(5, d)) + 0.3 * rng.normal(size=(N, d))
        X = np.maximum(X, 0) if relu else X
        X = X * np.exp(rng.uniform(-6, 6, size=d)) + rng.normal(size=d) * 10**log_offset * X.std()
        return (X * 2.0**exponent).astype(np.float32)

    xs, ys = [layer(d1), layer(d2)], [layer(d2)]
    out = {}
    for dtype in ("auto", torch.float64):
        m = MinibatchCKA(compute_dtype=dtype)
        for s in range(0, N, B):
            m.update([x[s:s + B] for x in xs], [y[s:s + B] for y in ys])
        kl, kk, ll = m.hsic_sums()
        assume((kk > 0).all() and (ll > 0).all())
        out[str(dtype)] = m.compute()
    assert np.abs(out["auto"] - out[str(torch.float64)]).max() < 1e-6


def test_auto_is_float64_for_rbf_distances():
    """Found by review: RBF distances |a|² + |b|² − 2ab from a float32 product lose the small
    distances of a tight cluster beside far points (CKA was off by 0.05), so "auto" is float64 there."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(40, 30)) * 1e-3, 10 + rng.normal(size=(8, 30))]).astype(np.float32)
    y = rng.normal(size=(48, 5)).astype(np.float32)
    out = []
    for dtype in ("auto", torch.float64):
        m = MinibatchCKA(kernel="rbf", compute_dtype=dtype)
        m.update([x], [y])
        out.append(m.compute()[0, 0])
    assert out[0] == out[1]
    assert abs(out[0] - rbf_cka(x.astype(np.float64), y.astype(np.float64), debiased=True)) < TOL


@pytest.mark.parametrize("minibatch", [True, False])
@pytest.mark.parametrize("case", ["private features", "massive activation"])
def test_diagonal_heavy_kernels_fall_back_to_float64(case, minibatch):
    """Found by review: when the diagonal dominates a kernel (a private feature per example; one
    "massive activation" row, as in LLMs) centring leaves little beside float32 rounding — CKA was
    off by 8.6e-3 and 3.7e-6. ``float32_too_coarse`` sends such kernels back to float64 products."""
    from deepgeom.analysis.similarity import cka_matrix_from_captures

    rng = np.random.default_rng(0)
    if case == "private features":
        n = 32
        G = rng.standard_normal((n, 16)).astype(np.float32)
        P = 1e4 * np.eye(n, dtype=np.float32)
        caps = {"a": np.hstack([G, P]), "b": np.hstack([np.tanh(G @ rng.standard_normal((16, 16))), P])}
        caps = {k: v.astype(np.float32) for k, v in caps.items()}
    else:
        n, D = 256, 768
        G = rng.standard_normal((2 * n, D)).astype(np.float32)
        H = np.maximum(G @ (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32), 0)
        G[0, [5, 9]] = 1e4
        H[0, [7, 100]] = 1e4
        caps = {"a": G, "b": H}
    kw = {"batch_size": n, "minibatch": minibatch, "debiased": True}
    auto = cka_matrix_from_captures(caps, **kw).values[0, 1]
    f64 = cka_matrix_from_captures(caps, compute_dtype=torch.float64, **kw).values[0, 1]
    assert abs(auto - f64) < 1e-9


def test_ordinary_activations_keep_float32_products():
    """The fallback's ratio tr K / ‖U(K)‖_F on ReLU features of a random net is far below the limit."""
    from deepgeom.functional.cka import DIAGONAL_SHARE_LIMIT, float32_too_coarse

    rng = np.random.default_rng(0)
    h = rng.normal(size=(256, 40))
    for _ in range(4):
        h = np.maximum(h @ rng.normal(size=(h.shape[1], 300)) * np.sqrt(2 / h.shape[1]), 0)
        K = gram_linear(h.astype(np.float32))
        trace, norm = float(K.diagonal().sum()), float(torch.linalg.norm(u_center(K)))
        assert trace / norm < DIAGONAL_SHARE_LIMIT / 10 and not float32_too_coarse(trace, norm)


def test_tiny_activations_do_not_underflow_the_ratio():
    """√HSIC(K,K)·√HSIC(L,L), not √(HSIC(K,K)·HSIC(L,L)): the product underflows for data near 1e-40
    (CKA(x, 2x) came out 0.99998967)."""
    x = np.random.default_rng(1).normal(size=(64, 5)) * 1e-40
    m = MinibatchCKA(compute_dtype=torch.float64)
    m.update([x], [2 * x])
    assert abs(m.compute()[0, 0] - 1) < 1e-12
    assert abs(linear_cka(x, 2 * x) - 1) < 1e-12


# ------------------------------------------------------------------------------------- minibatch
def test_minibatch_matches_formula_and_pairs(rng):
    N, B = 192, 48
    Z = rng.normal(size=(N, 5))
    layers_a = [Z @ rng.normal(size=(5, w)) + rng.normal(size=(N, w)) for w in (4, 30)]
    layers_b = [np.maximum(Z @ rng.normal(size=(5, w)), 0) for w in (7, 12, 50)]
    m = MinibatchCKA()
    within = MinibatchCKA()
    for s in range(0, N, B):
        m.update([a[s:s + B] for a in layers_a], [torch.from_numpy(b[s:s + B]) for b in layers_b])
        within.update([a[s:s + B] for a in layers_a])
    M = m.compute()
    assert M.shape == (2, 3) and m.n_batches == 4 and m.n_examples == N
    for i, a in enumerate(layers_a):
        for j, b in enumerate(layers_b):
            ref = ref_minibatch_cka([a[s:s + B] for s in range(0, N, B)], [b[s:s + B] for s in range(0, N, B)])
            assert abs(M[i, j] - ref) < TOL
    W = within.compute()
    assert np.allclose(np.diag(W), 1.0, atol=1e-12) and np.allclose(W, W.T, atol=1e-14)
    # one batch of all N examples is exactly debiased CKA on the full data
    one = MinibatchCKA()
    one.update(layers_a, layers_b)
    assert abs(one.compute()[1, 2] - linear_cka(layers_a[1], layers_b[2], debiased=True)) < TOL


def test_minibatch_converges_to_full_debiased():
    """Minibatch CKA → full-data debiased CKA as the batch grows. RMS difference over 6 shuffled
    orders, N = 1024 (measured): 8.2e-3 at B=16, 3.2e-3 at 64, 1.7e-3 at 256, 1e-15 at B = N —
    the ~1/√B decay expected when only within-batch pairs enter the U-statistics."""
    rng = np.random.default_rng(7)
    N = 1024
    Z = rng.normal(size=(N, 4))
    X = np.tanh(Z @ rng.normal(size=(4, 20))) + 0.5 * rng.normal(size=(N, 20))
    Y = np.maximum(Z @ rng.normal(size=(4, 30)), 0) + rng.normal(size=(N, 30))
    full = linear_cka(X, Y, debiased=True)
    rms = {}
    for B in (16, 64, 256, 1024):
        errs = []
        for r in range(6):
            p = np.random.default_rng(r).permutation(N)
            m = MinibatchCKA()
            for s in range(0, N, B):
                m.update([X[p[s:s + B]]], [Y[p[s:s + B]]])
            errs.append(m.compute()[0, 0] - full)
        rms[B] = float(np.sqrt(np.mean(np.square(errs))))
    print("minibatch CKA RMS |error| vs full debiased:", {k: f"{v:.1e}" for k, v in rms.items()})
    assert rms[1024] < TOL
    assert rms[256] < rms[64] < rms[16]
    assert rms[256] < 0.5 * rms[16]


def test_minibatch_rbf_single_batch_equals_rbf_cka(xy):
    X, Y = xy
    m = MinibatchCKA(kernel="rbf", sigma=0.5)
    m.update([X], [Y])
    assert abs(m.compute()[0, 0] - rbf_cka(X, Y, sigma=0.5, debiased=True)) < TOL


def test_minibatch_dead_layer_nan_with_warning(rng):
    m = MinibatchCKA()
    X = rng.normal(size=(32, 5))
    m.update([X, np.zeros((32, 3))])
    with pytest.warns(RuntimeWarning, match="no variance"):
        M = m.compute()
    assert np.isnan(M[1]).all() and np.isnan(M[:, 1]).all() and M[0, 0] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------- anchors
def test_agrees_with_ckatorch(xy, rng):
    core = pytest.importorskip("ckatorch.core")
    X, Y = xy
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)
    for debiased in (False, True):
        assert abs(float(core.cka_base(tx, ty, unbiased=debiased)) - linear_cka(X, Y, debiased=debiased)) < TOL
        # ckatorch takes torch.median (the lower middle value) where the notebook takes np.median
        # (the mean of the two): equal for an odd number of entries, so compare on N = 99 rows.
        assert abs(float(core.cka_base(tx[:99], ty[:99], kernel="rbf", threshold=0.5, unbiased=debiased))
                   - rbf_cka(X[:99], Y[:99], sigma=0.5, debiased=debiased)) < TOL
    # ckatorch's minibatch CKA on (n_batches, B, D) stacks == ours streamed over the same batches
    xb, yb = tx.reshape(4, 25, 10), ty.reshape(4, 25, 10)
    m = MinibatchCKA()
    for i in range(4):
        m.update([xb[i]], [yb[i]])
    assert abs(float(core.cka_batch(xb, yb)) - m.compute()[0, 0]) < TOL


def test_agrees_with_torch_cka_without_offset():
    torch_cka = pytest.importorskip("torch_cka")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16))
    net_b = torch.nn.Sequential(torch.nn.Linear(10, 24), torch.nn.Tanh(), torch.nn.Linear(24, 8))
    data = torch.randn(256, 10)
    loader = DataLoader(TensorDataset(data), batch_size=64, shuffle=False)
    with pytest.warns(UserWarning):
        tc = torch_cka.CKA(net_a, net_b, model1_name="a", model2_name="b",
                           model1_layers=["0", "2"], model2_layers=["0", "2"])
        tc.compare(loader)
    theirs = tc.export()["CKA"].numpy()
    m = MinibatchCKA()
    with torch.no_grad():
        for (x,) in loader:
            m.update([net_a[0](x), net_a(x)], [net_b[0](x), net_b(x)])
    assert np.abs(theirs - m.compute()).max() < 1e-4


# ---------------------------------------------------------------------------------------- errors
def test_errors(rng):
    X = rng.normal(size=(10, 3))
    with pytest.raises(InputError, match="same number of examples"):
        linear_cka(X, X[:9])
    with pytest.raises(InputError, match="at least 4"):
        linear_cka(X[:3], X[:3], debiased=True)
    with pytest.raises(InputError, match="at least 4"):
        unbiased_hsic(np.eye(3), np.eye(3))
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        linear_cka(bad, X)
    bad[4, 1] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        rbf_cka(X, bad)
    with pytest.raises(InputError, match="no variance"):
        linear_cka(np.ones((10, 3)), X)
    with pytest.raises(InputError, match="no variance"):
        linear_cka(X, np.full((10, 2), 7.0), debiased=True)
    with pytest.raises(InputError, match="sigma"):
        rbf_cka(X, X, sigma=0)
    with pytest.raises(InputError, match="median squared distance"):
        gram_rbf(np.ones((10, 2)))
    with pytest.raises(UnknownNameError, match="laplace"):
        cka(X, X, kernel="laplace")
    with pytest.raises(UnknownNameError):
        MinibatchCKA(kernel="poly")
    with pytest.raises(InputError, match="2-D"):
        linear_cka(X[:, 0], X)
    with pytest.raises(InputError, match="symmetric"):
        hsic(rng.normal(size=(5, 5)), np.eye(5))
    m = MinibatchCKA()
    with pytest.raises(InputError, match="before any update"):
        m.compute()
    with pytest.raises(InputError, match="at least 4"):
        m.update([X[:3]])
    with pytest.raises(InputError, match="same examples"):
        m.update([X, X[:8]])
    with pytest.raises(InputError, match=r"ys\[1\].*NaN or Inf"):
        m.update([X], [X, bad])
    m.update([X, X])
    with pytest.raises(InputError, match="same layers"):
        m.update([X])


def _hostile_layers():
    """Ordinary float32 layers beside ones the fast route must hand back: values near float32's range
    ends (rescaled), a diagonal-heavy layer (float64 redo), a constant layer (no variance), a narrow
    one and a float64 one."""
    g = torch.Generator().manual_seed(7)
    base = [torch.relu(torch.randn(96, 200, generator=g)) + 3 for _ in range(3)]
    heavy = torch.randn(96, 200, generator=g) * 1e-3
    heavy[:, :96] += torch.eye(96) * 1e3  # one huge private feature per row
    return [*base, base[0] * 2.0**100, base[1] * 2.0**-100, heavy, torch.ones(96, 200),
            torch.randn(96, 50, generator=g), torch.randn(96, 200, generator=g).double(), base[2]]


@pytest.mark.parametrize("syrk", [True, False])
def test_fast_kernels_equal_the_per_layer_route(monkeypatch, syrk):
    """The stacked fast route (one centring and one product per layer, spread over threads; HSIC₁ from
    triangles and row sums) gives the HSIC terms of the per-layer U-centring route — with 1 and 2
    threads, with BLAS syrk and with full products — and hands the hostile layers back to it."""
    import deepgeom.functional.minibatch_cka as M

    if not syrk:
        monkeypatch.setattr(M, "syrk_available", lambda dtype: False)
    xs = _hostile_layers()
    before = torch.get_num_threads()
    out = {}
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            out[t] = M.minibatch_hsic_update(xs)
            layers = [torch.as_tensor(x) for x in xs]
            side = M._SideKernels(torch.zeros(10, 96 * 95 // 2, dtype=torch.float64), torch.empty(10, 96, dtype=torch.float64),
                                  torch.empty(10, dtype=torch.float64), np.zeros(10, dtype=np.int64), 96)
            [done] = M._fast_linear([(layers, side)], "auto", torch.device("cpu"), None)
            assert done.tolist() == [True] * 3 + [False] * 4 + [True] * 3
    finally:
        torch.set_num_threads(before)
    # the per-layer route alone (every layer U-centred entry by entry), with float32 products and with
    # float64 ones: the fast route's float32 products round differently (one-pass centring, syrk), so
    # the routes agree to float32 product rounding (√D·2⁻²⁴ ≈ 1e-6 of the norms, ~3e-8 seen) and both
    # lie that close to float64 products
    monkeypatch.setattr(M, "_fast_linear", lambda sides, *a: [np.zeros(len(layers), dtype=bool) for layers, _ in sides])
    ref = M.minibatch_hsic_update(xs)
    ref64 = M.minibatch_hsic_update(xs, compute_dtype=torch.float64)
    scale = np.sqrt(np.outer(ref64.kk.numpy(), ref64.kk.numpy()))
    ok = scale > 0
    for got in (out[1], out[2], ref):
        np.testing.assert_allclose(got.kl.numpy()[ok] / scale[ok], ref64.kl.numpy()[ok] / scale[ok], rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.kk.numpy(), ref64.kk.numpy(), rtol=1e-6, atol=0)
        assert np.array_equal(got.ea, ref64.ea)
    # the layers both routes send to float64 products agree to float64 rounding
    f64 = [3, 4, 5, 8]
    np.testing.assert_allclose(out[1].kk.numpy()[f64], ref.kk.numpy()[f64], rtol=1e-12)
    np.testing.assert_allclose(out[2].kl.numpy(), out[1].kl.numpy(), rtol=1e-12)  # thread count changes nothing
    assert ref.kk[6] == out[1].kk[6] == out[2].kk[6] == 0  # the constant layer


def test_kernels_are_bitwise_the_same_on_any_thread():
    """Each layer's kernel is one thread's work: a pool worker must run its products and reductions
    on one thread (torch's first op in a new thread resets its OpenMP team to torch's count, so the
    pool re-cuts it; a product left multi-threaded rounds differently). The packed triangles, row
    sums and self terms of 12 layers on 2 threads, run twice, equal those on 1 thread bit for bit."""
    import deepgeom.functional.minibatch_cka as M

    g = torch.Generator().manual_seed(3)
    xs = [torch.relu(torch.randn(256, w, generator=g)) + 1 for w in (64, 300, 1024) * 4]
    before = torch.get_num_threads()
    got = []
    try:
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            buffers: dict = {}
            for _ in range(2):  # the second batch reuses the per-thread buffers
                [k] = M._batch_kernels(xs, None, "linear", 0.8, "auto", "cpu", buffers)
            got.append((k.P.clone(), k.R.clone(), k.uu.clone()))
    finally:
        torch.set_num_threads(before)
    for other in got[1:]:
        for a, b in zip(got[0], other, strict=True):
            assert torch.equal(a, b)


def test_sums_form_equals_u_centring_on_random_kernels():
    """n(n−3)·HSIC₁ from triangles and row sums (Song et al. eq. 5) equals ⟨U(K), U(L)⟩ of explicitly
    U-centred kernels, for symmetric kernels with nonzero row sums (uncentred Grams, RBF-like)."""
    from deepgeom.functional.cka import u_center
    from deepgeom.functional.minibatch_cka import _hsic_self, _hsic_sums

    g = torch.Generator().manual_seed(0)
    n = 20
    Ks = [torch.randn(n, 5, generator=g, dtype=torch.float64) + 2 for _ in range(3)]
    Ks = [x @ x.T for x in Ks] + [torch.exp(-torch.cdist(Ks[0], Ks[0]) ** 2 / 50)]
    P = torch.stack([K.tril(-1).reshape(-1) for K in Ks])
    R = torch.stack([K.sum(1) - K.diagonal() for K in Ks])
    U = torch.stack([u_center(K).reshape(-1) for K in Ks])
    np.testing.assert_allclose(_hsic_sums(P, R, P, R, n).numpy(), (U @ U.T).numpy(), rtol=1e-10)
    np.testing.assert_allclose(_hsic_self((P * P).sum(1), R, n).numpy(), (U * U).sum(1).numpy(), rtol=1e-10)
