"""The matrix core: blocked Gram/covariance against numpy float64, with rigorous error bounds.

Tolerances are the textbook dot-product bound (Higham §3.1): an h-term product in unit roundoff u
errs by at most γ_h·|x|·|y| with γ_h = h·u/(1−h·u).  float64 paths are checked at γ_D(2⁻⁵³) — the
worst case, typically ~100× larger than the error seen; float32 block products (accumulated in
float64) at γ_Dc(2⁻²⁴) plus the float32 rounding of the centred inputs (2u per factor).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deepgeom import InputError
from deepgeom.functional.matrix import (
    as_tensor,
    block_size_for,
    center_gram,
    column_mean,
    covariance,
    gram,
    iter_blocks,
    product_dtype,
    resolve_device,
)

U32, U64 = 2.0**-24, 2.0**-53


def gamma(h: int, u: float) -> float:
    return h * u / (1 - h * u)


def bound(A: np.ndarray, B: np.ndarray, h: int, u: float, extra: float = 0.0) -> np.ndarray:
    """Elementwise error bound (γ_h + extra)·|a_i|·|b_j| for A Bᵀ, plus a float64 floor."""
    na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
    return (gamma(h, u) + extra + 4 * U64 * h) * np.outer(na, nb)


def centred(X: np.ndarray) -> np.ndarray:
    X64 = X.astype(np.float64)
    return X64 - X64.mean(0)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("block_features", [None, 1, 7])
def test_gram_matches_numpy_float64(rng, center, block_features):
    X = rng.normal(size=(60, 23)) * rng.uniform(0.1, 10, size=23)
    ref_X = centred(X) if center else X
    K = gram(X, center=center, block_features=block_features).numpy()
    assert K.dtype == np.float64 and K.shape == (60, 60)
    assert np.all(np.abs(K - ref_X @ ref_X.T) <= bound(ref_X, ref_X, 23, U64))
    np.testing.assert_array_equal(K, K.T)


def test_gram_with_y_and_float32_products_within_bound(rng):
    X = rng.normal(size=(40, 300)).astype(np.float32)
    Y = rng.normal(size=(25, 300)).astype(np.float32)
    K = gram(X, Y, compute_dtype=torch.float32, block_features=64).numpy()
    ref = X.astype(np.float64) @ Y.astype(np.float64).T
    err = np.abs(K - ref)
    assert np.all(err <= bound(X.astype(np.float64), Y.astype(np.float64), 64, U32))
    assert err.max() > 0  # float32 products really are rounded (the bound is doing work)


def test_centred_float32_gram_survives_a_large_offset(rng):
    # ReLU-like features with a large common offset: centring before the product keeps the
    # error relative to the *centred* norms (a post-hoc HKH of float32 products is far worse)
    Z = rng.normal(size=(50, 200))
    X = (Z + 1e4).astype(np.float32)
    Xc = centred(X)
    K = gram(X, center=True, compute_dtype=torch.float32).numpy()
    assert np.all(np.abs(K - Xc @ Xc.T) <= bound(Xc, Xc, 200, U32, extra=3 * U32))
    posthoc = center_gram(gram(X, compute_dtype=torch.float32)).numpy()
    assert np.abs(posthoc - Xc @ Xc.T).max() > 1e3 * np.abs(K - Xc @ Xc.T).max()


def test_memmap_input_streams_and_matches(rng, tmp_path):
    X = rng.normal(size=(80, 50)).astype(np.float32) + 3
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    for center in (False, True):
        np.testing.assert_array_equal(
            gram(mm, center=center, block_features=9).numpy(), gram(X, center=center, block_features=9).numpy()
        )
        np.testing.assert_array_equal(
            covariance(mm, center=center, block_rows=11).numpy(), covariance(X, center=center, block_rows=11).numpy()
        )
    np.testing.assert_allclose(column_mean(mm, block_rows=7).numpy(), X.astype(np.float64).mean(0), rtol=1e-15)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("block_rows", [None, 1, 13])
def test_covariance_matches_numpy_float64(rng, center, block_rows):
    X = rng.normal(size=(70, 9)) + 5
    ref_X = centred(X) if center else X
    C = covariance(X, center=center, block_rows=block_rows).numpy()
    assert C.shape == (9, 9)
    assert np.all(np.abs(C - ref_X.T @ ref_X) <= bound(ref_X.T, ref_X.T, 70, U64))
    # float32 products, float64 accumulation over row blocks
    C32 = covariance(X.astype(np.float32), center=center, compute_dtype=torch.float32, block_rows=16).numpy()
    assert np.all(np.abs(C32 - ref_X.T @ ref_X) <= bound(ref_X.T, ref_X.T, 16, U32, extra=3 * U32) + 1e-12)


def test_gram_and_covariance_share_their_spectrum(rng):
    # nonzero eigenvalues of X Xᵀ equal those of Xᵀ X (the cheap side when D ≪ N)
    X = rng.normal(size=(30, 6))
    ev_g = np.sort(np.linalg.eigvalsh(gram(X, center=True).numpy()))[-6:]
    ev_c = np.sort(np.linalg.eigvalsh(covariance(X).numpy()))
    np.testing.assert_allclose(ev_g, ev_c, rtol=1e-10)


@given(n=st.integers(1, 12), d=st.integers(1, 9), bf=st.integers(1, 10), seed=st.integers(0, 999))
def test_property_blocking_never_changes_the_gram(n, d, bf, seed):
    X = np.random.default_rng(seed).normal(size=(n, d))
    K = gram(X, block_features=bf).numpy()
    assert np.all(np.abs(K - X @ X.T) <= bound(X, X, d, U64))
    C = covariance(X, center=False, block_rows=bf).numpy()
    assert np.all(np.abs(C - X.T @ X) <= bound(X.T, X.T, n, U64))


def test_center_gram_is_hkh(rng):
    K = rng.normal(size=(8, 8))
    K = K + K.T
    H = np.eye(8) - 1 / 8
    np.testing.assert_allclose(center_gram(torch.from_numpy(K)).numpy(), H @ K @ H, atol=1e-13)


def test_helpers(rng):
    assert resolve_device(None).type == "cpu" and resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    X = rng.normal(size=(5, 3)).astype(np.float32)
    t = as_tensor(X)
    assert t.data_ptr() == X.ctypes.data  # zero-copy for a contiguous numpy array
    assert as_tensor(X.astype(np.float16)).dtype == torch.float32
    ro = X.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(as_tensor(ro).numpy(), X)
    np.testing.assert_array_equal(as_tensor(X.astype(">f4")).numpy(), X)
    assert block_size_for(1000, 8, budget_bytes=80_000) == 10
    assert [(a, b) for a, b, _ in iter_blocks(np.zeros((7, 2)), 3)] == [(0, 3), (3, 6), (6, 7)]
    assert [blk.shape for *_, blk in iter_blocks(np.zeros((2, 5)), 2, axis=1)] == [(2, 2), (2, 2), (2, 1)]


def test_feature_mismatch_is_an_input_error(rng):
    with pytest.raises(InputError, match="same number of features"):
        gram(np.zeros((3, 4)), np.zeros((3, 5)))


def test_auto_products_follow_the_data():
    """``compute_dtype="auto"``: float32 products for float32-or-narrower data in batches of ≥ 32
    rows no wider than 100·n², float64 otherwise."""
    f32, f64 = torch.float32, torch.float64
    shape = (32, 4)
    assert product_dtype("auto", np.zeros(shape, np.float32)) == f32
    assert product_dtype("auto", torch.zeros(shape, dtype=torch.bfloat16)) == f32
    assert product_dtype("auto", np.zeros(shape, np.float16)) == f32
    assert product_dtype("auto", np.zeros(shape)) == f64
    assert product_dtype("auto", np.zeros(shape, np.int64)) == f64
    assert product_dtype(f64, np.zeros(shape, np.float32)) == f64
    # small batches of wide layers: U-centring amplifies float32 rounding (see product_dtype)
    assert product_dtype("auto", np.zeros((31, 4), np.float32)) == f64
    assert product_dtype("auto", np.zeros((32, 102_400), np.float32)) == f32
    assert product_dtype("auto", np.zeros((32, 102_401), np.float32)) == f64
    with pytest.raises(InputError, match="compute_dtype"):
        product_dtype("float32", np.zeros(shape))
    # float32 matmuls that torch may run in TF32/bf16 are not float32 precision: "auto" takes float64
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert product_dtype("auto", np.zeros(shape, np.float32)) == f64
    finally:
        torch.set_float32_matmul_precision(before)
    assert product_dtype("auto", np.zeros(shape, np.float32)) == f32


@pytest.mark.parametrize("exponent", [70, -70, 120, -120])
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("block_features", [None, 16])
def test_float32_products_out_of_range_are_rescaled(rng, exponent, center, block_features):
    """float32 data near 2⁷⁰ (squares overflow float32) or 2⁻⁷⁰ (squares underflow to subnormals or
    zero): the product is redone on data scaled by a power of two — exact — and matches float64
    within the float32 bound (without the rescale: inf, or digits lost to underflow)."""
    X = (rng.normal(size=(30, 50)) * 2.0**exponent + (3 * 2.0**exponent if center else 0)).astype(np.float32)
    ref_X = centred(X) if center else X.astype(np.float64)
    K = gram(X, center=center, compute_dtype=torch.float32, block_features=block_features).numpy()
    assert np.isfinite(K).all()
    assert np.all(np.abs(K - ref_X @ ref_X.T) <= bound(ref_X, ref_X, 50, U32, extra=3 * U32))
    assert X.min() != 0  # the input itself is untouched and representable


def test_out_of_range_products_leave_the_input_alone():
    X = torch.full((6, 4), 2.0**80) * torch.arange(1.0, 7.0)[:, None]
    before = X.clone()
    gram(X, compute_dtype=torch.float32)
    assert torch.equal(X, before)


@pytest.mark.parametrize("block_features", [None, 3])
def test_float32_data_near_the_float32_limit(block_features):
    """Centred values of float32 data spanning ±2¹²⁷ do not fit float32 (their differences reach
    2¹²⁸): the rescaled product scales first, then centres."""
    X = torch.tensor([[2.0**127, -(2.0**127)], [-(2.0**127), 2.0**126], [2.0**125, 0.0]], dtype=torch.float32)
    Xc = centred(X.numpy())
    K = gram(X, center=True, compute_dtype=torch.float32, block_features=block_features).numpy()
    assert np.isfinite(K).all() and np.all(np.abs(K - Xc @ Xc.T) <= bound(Xc, Xc, 2, U32, extra=3 * U32))


@pytest.mark.parametrize("block_features", [None, 1])
@pytest.mark.parametrize("case", ["column sums overflow", "subnormal", "large constant column"])
def test_float32_rescue_cases(case, block_features):
    """Found by review: (a) float32 values near 1e38 whose float32 column sums overflow inside the
    centring (NaN, once falsely reported as NaN data); (b) subnormal float32 data (2⁻ᵉ itself is not
    a float32); (c) a large constant column beside columns of tiny spread — the scale must come from
    the *centred* data (it once flushed every product to 0). Each matches float64 within the
    float32 bound."""
    rng = np.random.default_rng(0)
    if case == "column sums overflow":
        X = np.array([[3e38, 1], [2e38, 2], [1e38, 0], [0, 5], [-1e38, 1]], dtype=np.float32)
    elif case == "subnormal":
        X = (rng.normal(size=(20, 6)) * 1e-40).astype(np.float32)
    else:
        X = np.concatenate([np.full((20, 1), 1e10), rng.normal(size=(20, 5)) * 1e-15], 1).astype(np.float32)
    Xc = centred(X)
    K = gram(torch.from_numpy(X), center=True, compute_dtype=torch.float32, block_features=block_features).numpy()
    assert np.isfinite(K).all() and np.abs(Xc @ Xc.T).max() > 0
    assert np.all(np.abs(K - Xc @ Xc.T) <= bound(Xc, Xc, X.shape[1], U32, extra=3 * U32))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [5, 127, 128, 256, 300, 700])
def test_symmetric_product_equals_the_whole_product_for_every_block_plan(threads, n):
    """The symmetric product (whole, or upper block triangle mirrored; the plan depends on n and the
    thread count) equals A Aᵀ in float64 to float64 rounding and fills ``out``."""
    from deepgeom.functional.matrix import _self_product, _sym_block

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        A = torch.randn(n, 33, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        out = torch.full((n, n), float("nan"), dtype=torch.float64)
        K = _self_product(A, out=out)
        assert K.data_ptr() == out.data_ptr()
        torch.testing.assert_close(K, A @ A.T, rtol=1e-13, atol=1e-13)
        b = _sym_block(n)
        assert b == 0 or n >= 2 * 64  # small products stay whole
    finally:
        torch.set_num_threads(before)
