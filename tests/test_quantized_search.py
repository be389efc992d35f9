"""The int8 candidate search (``knn(search="int8")``, the default on CPUs without native bfloat16).

Its proof rests on two facts checked here against float64 computed independently (scipy's cdist on
the centred rows): the searched values are the squared distances of the quantized points up to the
error model's float32 roundings, and each quantized point lies within its ``radius`` of the true
one, so every true distance lies in [√(d̂² − ε) − r_i − r_j, √(d̂² + ε) + r_i + r_j].  Then: the
answers equal float64 brute force and the float32 search bitwise, including data the int8 bound
cannot separate (handled by the pilot and the fallbacks); the bitwise agreement with the float32
search on a ReLU layer is in test_neighbors.py, beside bf16's.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from deepgeom.functional.neighbors import U32, _search_dtype, _search_error, _unit_scale, knn
from deepgeom.functional.neighbors import _quantized as quantized
from deepgeom.functional.neighbors._refine import _rounding_radius

needs_int8 = pytest.mark.skipif(not quantized.int8_available(), reason="this torch build has no oneDNN int8 products")
CPU = torch.device("cpu")


def _quantize(Xc: torch.Tensor) -> quantized.QuantizedRows:
    return quantized.quantize_rows(lambda r0, r1: Xc[r0:r1], *Xc.shape, len(Xc), block_bytes=4096)


def _bounds_hold(X: np.ndarray) -> float:
    """Check the int8 proof's premises pair by pair on X; return the largest error / bound seen."""
    X64 = X.astype(np.float64)
    Xc = torch.from_numpy((X64 - X64.mean(0)).astype(np.float32))
    Xc *= _unit_scale(float(Xc.abs().max()))  # as knn does: every value below 1, by a power of two
    qr = _quantize(Xc)
    true = cdist(Xc.double().numpy(), Xc.double().numpy())  # distances of the centred float32 rows
    xhat = qr.sigma.double()[:, None] * torch.cat([u.to(torch.int16) - 64 for u in qr.u], 1).double()
    # each quantized point lies within its radius of the row it stands for
    resid = torch.linalg.vector_norm(Xc.double() - xhat, dim=1)
    assert bool((resid <= qr.radius).all())
    np.testing.assert_allclose(qr.sq_x.numpy(), (Xc.double() ** 2).sum(1).numpy(), rtol=1e-14)
    np.testing.assert_allclose(qr.sq.numpy(), (xhat**2).sum(1).numpy(), rtol=1e-15)
    # the searched values: the quantized points' squared distances up to the float32 roundings
    d2 = quantized.int8_against_all(qr, torch.arange(len(X))).double()
    qd2 = torch.from_numpy(cdist(xhat.numpy(), xhat.numpy()) ** 2)
    c, t = _search_error(torch.int8, 0, CPU, X.shape[1], len(qr.u))
    s = qr.sq
    eps = c * (s[:, None] + s[None, :]) + t * (1 + s.sqrt()[:, None] + s.sqrt()[None, :])
    err = (d2 - qd2).abs()
    assert bool((err <= eps).all())
    # hence the true distance lies within the proof's interval
    r = qr.radius
    lo = (d2 - eps).clamp_min(0).sqrt() - r[:, None] - r[None, :]
    hi = (d2 + eps).sqrt() + r[:, None] + r[None, :]
    true_t = torch.from_numpy(true)
    assert bool(((lo <= true_t) & (true_t <= hi)).all())
    return float((err / eps.clamp_min(1e-300)).max())


@needs_int8
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 600), scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]),
       offset=st.floats(-1e3, 1e3), tail=st.sampled_from([0.0, 1.0, 3.0]), spread=st.sampled_from([1.0, 1e-20, 1e-40]))
def test_int8_values_and_radii_bound_the_true_distances(seed, d, scale, offset, tail, spread):
    # rows of different norms (spread: a third of them that much smaller: their residuals and
    # products underflow), offsets, heavy-tailed features (tail: log-normal feature scales)
    r = np.random.default_rng(seed)
    feat = np.exp(r.normal(size=(1, d)) * tail)
    rows = r.uniform(0.1, 10, size=(50, 1))
    rows[::3] *= spread
    X = ((r.normal(size=(50, d)) * rows * feat + offset) * scale).astype(np.float32)
    _bounds_hold(X)


@needs_int8
@pytest.mark.parametrize("d", [4096, 5000])
def test_int8_bounds_at_layer_sizes(rng, d):
    # one exact feature chunk at 4,096 features (|q·q| < 2²⁴), two chunks summed in float32 above
    X = (np.cos(rng.normal(size=(300, 10)) @ rng.normal(size=(10, d)) * 2) + 3).astype(np.float32)
    assert _bounds_hold(X) < 0.5  # the roundings stay well inside the model


@needs_int8
def test_int8_products_are_exact_integers_at_the_saturation_edge():
    # every pair of the unsigned side at 127 and the signed side at ±63: AVX2's int16 pair sums
    # (2·127·63) do not saturate, and oneDNN removes the zero point exactly
    q = torch.full((32, 4096), quantized.LEVELS, dtype=torch.int8)
    q[1::2] = -quantized.LEVELS
    got = quantized.int8_products(quantized._unsigned(q), quantized._pack(q, 32), torch.ones(32))
    assert torch.equal(got.double(), q.double() @ q.double().T)
    assert float(got.abs().max()) == 4096 * 63**2  # < 2²⁴: exact in float32


@needs_int8
def test_int8_search_is_exact_where_its_bound_separates_nothing(rng):
    # iid Gaussian rows (neighbour distances nearly equal) and heavy-tailed features: the int8
    # bound certifies few rows; forced int8 falls back to float32 and stays exact, and the pilot
    # keeps "auto" off int8 for such data
    from deepgeom.functional.neighbors import _pilot
    from deepgeom.functional.neighbors._knn import _plan

    for X in (rng.normal(size=(1200, 512)).astype(np.float32),
              (np.maximum(rng.normal(size=(1200, 8)) @ rng.normal(size=(8, 512)), 0)
               * np.exp(rng.normal(size=(1, 512)) * 2)).astype(np.float32)):
        nb = knn(X, 3, search="int8")
        X64 = X.astype(np.float64)
        D = cdist(X64, X64)
        np.fill_diagonal(D, np.inf)
        np.testing.assert_allclose(nb.distances, np.sort(D, 1)[:, :3], rtol=1e-12, atol=0)
        Xc = torch.from_numpy((X64 - X64.mean(0)).astype(np.float32))
        qr = _quantize(Xc)
        plan = _plan(len(X), X.shape[1], 3, 8, None, 2**28)
        radius = qr.radius + _rounding_radius((Xc.double() ** 2).sum(1), U32)
        err = _search_error(torch.int8, 0, CPU, X.shape[1], len(qr.u))
        assert not _pilot(torch.from_numpy(X), lambda rows, qr=qr: quantized.int8_against_all(qr, rows), qr.sq, radius, err,
                          plan, CPU, 1.0, m=64)


@needs_int8
@pytest.mark.parametrize("fallback", ["pilot refuses", "search leaves rows uncertain"])
def test_a_float32_search_after_int8_reads_the_statistics_once(rng, monkeypatch, fallback):
    # the pilot refusing ("auto"), or a forced int8 search on iid Gaussian rows leaving over a quarter
    # of them uncertain: the float32 search that follows is exact and reuses the int8 route's column
    # means and max |x| instead of a second pass over the data
    from deepgeom.functional.neighbors import _knn, _search

    calls = []
    mean_and_max = _search._mean_and_max
    if fallback == "pilot refuses":
        monkeypatch.setattr(_knn, "_search_dtype", lambda search, dev, d: torch.int8)
        monkeypatch.setattr(_knn, "_pilot", lambda *args, **kwargs: False)
    for module in (_knn, _search):  # wherever it is called from
        monkeypatch.setattr(module, "_mean_and_max", lambda *args: calls.append(1) or mean_and_max(*args))
    X = (rng.normal(size=(600, 300)) + 5.0).astype(np.float32)  # an offset: centring must happen
    nb = knn(X, 3, search="auto" if fallback == "pilot refuses" else "int8")
    X64 = X.astype(np.float64)
    D = cdist(X64, X64)
    np.fill_diagonal(D, np.inf)
    np.testing.assert_allclose(nb.distances, np.sort(D, 1)[:, :3], rtol=1e-12, atol=0)
    assert len(calls) == 1


@needs_int8
def test_auto_search_takes_int8_only_without_native_bfloat16():
    from deepgeom.functional.neighbors import _fast_bf16_cpu

    expected = torch.bfloat16 if _fast_bf16_cpu() else torch.int8
    assert _search_dtype("auto", CPU, 4096) == expected
    assert _search_dtype("auto", CPU, 128) == torch.float32  # narrow rows: the products do not dominate
    assert _search_dtype("int8", CPU, 16) == torch.int8


def test_int8_is_available_on_x86_builds():
    if platform.machine() in ("x86_64", "AMD64"):
        assert quantized.int8_available()


@needs_int8
@pytest.mark.parametrize("n, d, memory_bytes", [(1500, 300, 2**20), (1100, 4200, 2**28), (700, 300, 2**28)])
def test_int8_search_shapes_and_budgets(rng, n, d, memory_bytes):
    # strips split into several row chunks (small budget), two feature chunks (d > 4,096: products
    # summed in float32), a row count that is no multiple of the 512-row blocks; exact every time
    z = rng.uniform(size=(n, 6))
    X = (np.cos(z @ rng.normal(size=(6, d)) * 3) + rng.normal(size=(1, d))).astype(np.float32)
    nb = knn(X, 3, search="int8", memory_bytes=memory_bytes)
    X64 = X.astype(np.float64)
    D = cdist(X64, X64)
    np.fill_diagonal(D, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(n), D.shape), D), axis=1)[:, :3]
    np.testing.assert_allclose(nb.distances, np.take_along_axis(D, order, 1), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(nb.indices, order)
