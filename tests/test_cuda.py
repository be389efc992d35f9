"""The CUDA code paths give the CPU's numbers (run where a GPU is present; skipped elsewhere).

Tolerances: the neighbour distances are exact to float64 precision on both devices (float64 sums of
exact float64 differences, in a different order), so they agree to a few ulps (rtol 1e-12); indices
agree exactly (ties are broken by index on both). Kernels and spectra are float64 sums in a different
order: 1e-10 relative to their scale (CKA with float64 products; the default float32 products of
float32 activations agree to 1e-7). A model's own float32 forward pass differs between devices by
~1e-7 relative, so heatmaps computed *from models* agree to 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deepgeom
from deepgeom.functional.matrix import gram
from deepgeom.functional.neighbors import duplicate_groups, knn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _offset_data_with_duplicates(rng: np.random.Generator, n: int = 3000, d: int = 300) -> np.ndarray:
    X = (rng.normal(size=(n, d)) + 1e3).astype(np.float32)
    X[rng.choice(n, 150, replace=False)] = X[rng.integers(0, n, 150)]
    return X


def test_knn_cuda_matches_cpu(rng):
    X = _offset_data_with_duplicates(rng)
    a = knn(X, 5)
    b = knn(X, 5, device="cuda")
    np.testing.assert_allclose(b.distances, a.distances, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(b.indices, a.indices)
    assert b.n_duplicates == a.n_duplicates > 0


def test_knn_memmap_on_cuda_matches_cpu(rng, tmp_path):
    X = _offset_data_with_duplicates(rng, n=1200, d=700)
    path = tmp_path / "x.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    a = knn(X, 3)
    b = knn(mm, 3, device="cuda", memory_bytes=4 * 2**20)  # a small budget: many feature chunks
    np.testing.assert_allclose(b.distances, a.distances, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(b.indices, a.indices)


def test_twonn_cuda_matches_cpu(rng):
    X = _offset_data_with_duplicates(rng)
    with pytest.warns(UserWarning, match="duplicates"):
        a = deepgeom.twonn(X)
    with pytest.warns(UserWarning, match="duplicates"):
        b = deepgeom.twonn(X, device="cuda")
    assert b.id == pytest.approx(a.id, rel=1e-12)
    assert b.n == a.n


def test_gram_cuda_matches_cpu(rng):
    X = rng.normal(size=(500, 2000)).astype(np.float32) + 50
    a = gram(X).cpu().numpy()
    b = gram(X, device="cuda").cpu().numpy()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * np.abs(a).max())


def test_cka_from_the_same_activations_cuda_matches_cpu(rng):
    # the same (N, D) activations on both devices: only the order of float64 sums differs
    acts_a = {f"a{i}": np.maximum(rng.normal(size=(1000, 64)) @ rng.normal(size=(64, 64)), 0).astype(np.float32)
              for i in range(3)}
    acts_b = {f"b{i}": np.tanh(rng.normal(size=(1000, 32))).astype(np.float32) for i in range(2)}
    f64 = torch.float64
    a = deepgeom.cka_matrix(acts_a, acts_b, batch_size=200, compute_dtype=f64)
    b = deepgeom.cka_matrix(acts_a, acts_b, batch_size=200, device="cuda", compute_dtype=f64)
    np.testing.assert_allclose(np.asarray(b.matrix), np.asarray(a.matrix), rtol=0, atol=1e-10)
    # the default products follow the float32 activations: float32 on both devices (TF32 is off
    # unless the user turns it on — then "auto" takes float64), other summation orders: ~1e-9
    c = deepgeom.cka_matrix(acts_a, acts_b, batch_size=200, device="cuda")
    np.testing.assert_allclose(np.asarray(c.matrix), np.asarray(a.matrix), rtol=0, atol=1e-7)


def test_cka_matrix_of_models_on_cuda_matches_cpu(rng):
    # the models' own float32 forward passes differ between devices by ~1e-7 relative (other kernels,
    # other summation orders), so the heatmaps agree to that precision, not to float64's
    torch.manual_seed(0)
    net_a = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    net_b = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5))
    x = torch.randn(1000, 20)
    a = deepgeom.cka_matrix(net_a, net_b, x, batch_size=200, progress=False)
    b = deepgeom.cka_matrix(net_a.cuda(), net_b.cuda(), x, batch_size=200, device="cuda", progress=False)
    np.testing.assert_allclose(np.asarray(b.matrix), np.asarray(a.matrix), rtol=0, atol=1e-6)
    assert b.layers_a == a.layers_a and b.layers_b == a.layers_b


def test_feature_spectrum_cuda_matches_cpu(rng):
    Phi = rng.normal(size=(400, 50)) @ rng.normal(size=(50, 50))
    a = deepgeom.feature_spectrum(Phi, eigenvectors=False)
    b = deepgeom.feature_spectrum(Phi, eigenvectors=False, device="cuda")
    np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=0, atol=1e-10 * a.eigenvalues.max())


def test_duplicate_groups_on_cuda_match_cpu(rng):
    X = _offset_data_with_duplicates(rng, n=2000, d=5000)  # several hash chunks
    np.testing.assert_array_equal(duplicate_groups(X, device="cuda"), duplicate_groups(X))
    np.testing.assert_array_equal(duplicate_groups(X.astype(np.float64), device="cuda"), duplicate_groups(X))
