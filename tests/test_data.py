"""deepgeom.data: offline datasets, known-ID manifolds, IDX/user files, label shuffling.

Checks are against facts that do not come from the code: closed forms (sphere norms, uniform-cube
variance 1/12, Archimedes' uniform projection), the raw sources (scikit-learn's digits array, hand-made
IDX bytes), published statistics (Fashion-MNIST's pixel mean 0.2860) and a reference ID estimator
(scikit-dimension's TwoNN).
"""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deepgeom import InputError, UnknownNameError
from deepgeom.cli import main as cli_main
from deepgeom.data import (
    Dataset,
    available,
    curved_manifold,
    describe,
    hypersphere,
    linear_subspace,
    load,
    load_file,
    read_idx,
    shuffle_labels,
    swiss_roll,
    winding_curve,
    write_idx,
)
from deepgeom.data.fashion_mnist import fashion_mnist_dirs


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(x.shape[0], -1).numpy()}


def _pc_id(X: np.ndarray, var: float = 0.9) -> int:
    """Components needed for ``var`` of the variance (the ID paper's PC-ID), by numpy's SVD."""
    s = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(s) / s.sum(), var) + 1)


def _twonn(X: np.ndarray) -> float:
    skdim = pytest.importorskip("skdim")
    return float(skdim.id.TwoNN().fit(X).dimension_)


# --------------------------------------------------------------------------------------- mnist1d
@pytest.fixture(scope="module")
def mnist1d():
    """The one mnist1d generation of this session, plus the global RNG states around it."""
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    ds = load("mnist1d", seed=0)
    return ds, np_before, py_before


def test_mnist1d_shapes_dtypes_classes(mnist1d):
    ds, *_ = mnist1d
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.input_shape == (1, 40) and ds.n_classes == 10
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())
    # mnist1d standardises all 5000 generated signals to mean 0, std 1 (its make_dataset), so the two
    # splits together must show that (float32 rounding: 1e-4).
    allx = torch.cat([ds.x_train, ds.x_test]).double()
    assert abs(float(allx.mean())) < 1e-4 and abs(float(allx.std(unbiased=False)) - 1.0) < 1e-4
    # 500 signals per class were generated
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    assert counts.tolist() == [500] * 10


def test_mnist1d_splits_disjoint_seeded_and_global_rng_untouched(mnist1d):
    ds, np_before, py_before = mnist1d
    assert not (_rows(ds.x_train) & _rows(ds.x_test))
    # mnist1d seeds numpy's and Python's global RNGs; the loader restores them
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    again = load("mnist1d", seed=0)  # served from the in-memory cache: identical values, fresh tensors
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    again.x_train.zero_()
    assert torch.equal(load("mnist1d", seed=0).x_test, ds.x_test) and ds.x_train.abs().sum() > 0
    small = load("mnist1d", seed=0, n_train=300, n_test=100)
    assert small.x_train.shape == (300, 1, 40) and small.x_test.shape == (100, 1, 40)
    assert torch.equal(small.x_train, ds.x_train[:300]) and torch.equal(small.x_test, ds.x_test[-100:])


# ---------------------------------------------------------------------------------------- digits
def test_digits_matches_sklearn_source_stratified_disjoint():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    ds = load("digits", seed=3)
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.input_shape == (1, 8, 8) and ds.n_classes == 10
    tr, te = ds.meta["train_indices"], ds.meta["test_indices"]
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == len(y)
    assert np.allclose(ds.x_train.reshape(-1, 64).numpy(), X[tr] / 16.0, atol=1e-7)
    assert np.array_equal(ds.y_test.numpy(), y[te])
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    # stratified: each class's test share is 25 % up to one example
    n_c = np.bincount(y)
    assert np.all(np.abs(np.bincount(y[te]) - 0.25 * n_c) <= 1)
    same, other = load("digits", seed=3), load("digits", seed=4)
    assert torch.equal(same.x_train, ds.x_train)
    assert not np.array_equal(other.meta["test_indices"], te)


# ---------------------------------------------------------------------------------- IDX + fashion
def test_idx_reader_on_handmade_bytes_and_round_trip(tmp_path):
    # hand-written header: uint8, 2 dims (2, 3); and int16 big-endian (2,) = [-2, 258]
    p = tmp_path / "u8"
    p.write_bytes(bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255]))
    assert read_idx(p).tolist() == [[1, 2, 3], [4, 5, 255]]
    p16 = tmp_path / "i16.gz"
    p16.write_bytes(gzip.compress(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0xFF, 0xFE, 0x01, 0x02])))
    assert read_idx(p16).tolist() == [-2, 258]
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.standard_normal((4, 3)).astype(np.float32),
                rng.integers(-9, 9, 11).astype(np.int32), rng.standard_normal((2, 2, 2))):
        for name in ("a-idx", "a-idx.gz"):
            write_idx(tmp_path / name, arr)
            back = read_idx(tmp_path / name)
            assert back.dtype == arr.dtype and np.array_equal(back, arr)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"", r"not an IDX file"),
        (bytes([8, 3, 0x08, 1]) + bytes(8), r"bad magic number"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 9]), r"unknown IDX type code 0x07"),
        (bytes([0, 0, 0x08, 3, 0, 0, 0, 5]), r"header truncated"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2, 3]), r"says shape \(5,\).*holds 3.*truncated or corrupt"),
        (b"\x1f\x8b" + b"not really gzip data", r"corrupt gzip"),
    ],
)
def test_idx_reader_rejects_corrupt_files(tmp_path, payload, match):
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(payload)
    with pytest.raises(InputError, match=match) as info:
        read_idx(p)
    assert "bad-idx3-ubyte" in str(info.value)


def _write_tiny_fashion(root, n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(root / f"{split}-labels-idx1-ubyte", y)  # raw, to show both forms are found
        arrays[split] = (x, y)
    return arrays


def test_fashion_loader_on_tiny_files_and_search_order(tmp_path, monkeypatch):
    arrays = _write_tiny_fashion(tmp_path / "explicit")
    ds = load("fashion-mnist", root=tmp_path / "explicit")
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert np.array_equal(ds.x_train[:, 0].numpy(), arrays["train"][0] / np.float32(255.0))
    assert ds.y_test.tolist() == [0, 1, 2, 3]
    # the DEEPGEOM_DATA_DIR/fashion-mnist directory comes first when no root is given
    _write_tiny_fashion(tmp_path / "env" / "fashion-mnist", n_train=3, n_test=2, seed=1)
    monkeypatch.setenv("DEEPGEOM_DATA_DIR", str(tmp_path / "env"))
    assert fashion_mnist_dirs()[0] == tmp_path / "env" / "fashion-mnist"
    ds2 = load("fashion_mnist")
    assert ds2.n_train == 3 and ds2.meta["root"] == str((tmp_path / "env" / "fashion-mnist").resolve())


def test_fashion_pool_averages_pixel_squares(tmp_path):
    arrays = _write_tiny_fashion(tmp_path / "fm")
    ds = load("fashion-mnist", root=tmp_path / "fm", pool=4)
    assert ds.input_shape == (1, 7, 7) and ds.x_train.shape == (6, 1, 7, 7) and ds.meta["pool"] == 4
    x = arrays["train"][0].astype(np.float64) / 255.0
    ref = x.reshape(6, 7, 4, 7, 4).mean(axis=(2, 4))  # mean of each 4×4 square, by hand
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), ref, rtol=0, atol=1e-7)  # float32 result
    assert ds.y_train.tolist() == arrays["train"][1].tolist()
    for bad in (3, 0, 2.0, True):
        with pytest.raises(InputError, match="pool"):
            load("fashion-mnist", root=tmp_path / "fm", pool=bad)


def test_fashion_missing_and_mismatched_files_say_what_to_do(tmp_path):
    with pytest.raises(InputError) as info:
        load("fashion-mnist", root=tmp_path / "nowhere")
    msg = str(info.value)
    assert "nowhere" in msg and "make setup" in msg
    assert "apt-get download dataset-fashion-mnist" in msg and "dpkg-deb -x" in msg
    _write_tiny_fashion(tmp_path / "fm")
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8))  # 7 labels, 4 images
    with pytest.raises(InputError, match=r"expected 4 labels"):
        load("fashion-mnist", root=tmp_path / "fm")


def test_real_fashion_mnist_if_installed():
    dirs = [d for d in fashion_mnist_dirs() if (d / "train-images-idx3-ubyte.gz").is_file()
            or (d / "train-images-idx3-ubyte").is_file()]
    if not dirs:
        pytest.skip("Fashion-MNIST IDX files not installed (run `make setup`)")
    ds = load("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10 and torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    # the widely used normalisation constants of Fashion-MNIST's training set: mean 0.2860, std 0.3530
    flat = ds.x_train.reshape(60, -1)  # float64 sums over 60 chunks: no 60k×784 float64 copy
    s1 = sum(float(c.sum(dtype=torch.float64)) for c in flat)
    s2 = sum(float((c.double() ** 2).sum()) for c in flat)
    mean = s1 / ds.x_train.numel()
    assert abs(mean - 0.2860) < 5e-4  # measured 0.28604
    assert abs((s2 / ds.x_train.numel() - mean**2) ** 0.5 - 0.3530) < 5e-4  # measured 0.35302
    sub = load("fashion-mnist", n_train=500, n_test=100, seed=1)
    idx = sub.meta["train_indices"]
    assert sub.n_train == 500 and sub.n_test == 100 and len(set(idx)) == 500
    assert torch.equal(sub.x_train, ds.x_train[torch.from_numpy(idx)])
    assert np.array_equal(load("fashion-mnist", n_train=500, n_test=100, seed=1).meta["train_indices"], idx)


# ------------------------------------------------------------------------------------- manifolds
def test_hypersphere_on_unit_sphere_uniform_rank():
    from scipy import stats

    d, D, n = 2, 9, 3000
    X = hypersphere(n, d, D, seed=0)
    assert X.shape == (n, D) and X.dtype == np.float64
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-12)  # distance to the centre (origin)
    # undo the rotation: coordinates in the (d+1)-dim span found by SVD still have norm 1, the rest is 0
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    assert s[d] > 1 and s[d + 1] < 1e-10
    Z = X @ Vt[: d + 1].T
    assert np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-12)
    # Archimedes: on S^2 the projection on any axis is uniform on [-1, 1] (seeded: deterministic p)
    assert stats.kstest(Z[:, 0], stats.uniform(-1, 2).cdf).pvalue > 0.01
    # with noise σ, E|x|² = 1 + D σ²
    Xn = hypersphere(n, d, D, seed=0, noise=0.05)
    assert abs(float((Xn**2).sum(1).mean()) - (1 + D * 0.05**2)) < 0.01


def test_linear_subspace_rank_and_uniform_cube_variance():
    d, D, n = 4, 15, 4000
    X = linear_subspace(n, d, D, seed=1)
    s = np.linalg.svd(X, compute_uv=False)
    assert s[d - 1] > 1 and s[d] < 1e-10  # rank exactly d
    # uniform on [0,1]^d under an orthonormal map: the d nonzero covariance eigenvalues are all 1/12
    ev = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    assert np.allclose(ev[:d], 1 / 12, rtol=0.08) and np.all(np.abs(ev[d:]) < 1e-12)


def test_swiss_roll_and_winding_curve_closed_forms():
    X = swiss_roll(2000, 2, 7, seed=0)
    s = np.linalg.svd(X - X.mean(0), compute_uv=False)
    assert s[2] > 1 and s[3] < 1e-9  # lives in a 3-D subspace
    # |x|² = t² + h² with t ∈ [1.5π, 4.5π], h ∈ [0, 21]
    r = np.linalg.norm(X, axis=1)
    assert r.min() >= 1.5 * np.pi - 1e-9 and r.max() <= np.hypot(4.5 * np.pi, 21) + 1e-9
    C = winding_curve(2000, 1, 24, seed=0)
    assert np.allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-12)  # Σ (cos² + sin²) / K = 1
    # each of the 2K = 24 directions carries variance 1/(2K): PCA needs ≥ 80 % of them for 90 %
    assert abs(np.trace(np.cov(C.T)) - 1.0) < 0.02
    assert _pc_id(C) >= 20


@pytest.mark.parametrize(
    "make, d, D, tol",
    [
        (hypersphere, 2, 10, 0.15),
        (linear_subspace, 3, 12, 0.15),
        (swiss_roll, 2, 3, 0.15),
        (curved_manifold, 2, 40, 0.15),
        (winding_curve, 1, 30, 0.1),
    ],
)
def test_known_id_by_reference_twonn(make, d, D, tol):
    """scikit-dimension's TwoNN on 1000 points recovers d within ±15 % (±10 % for the curve): its
    sampling error at n=1000 is ≈ d/√n·1.5 ≈ 5 %, the rest is curvature at this density."""
    X = make(1000, d, D, seed=2)
    assert abs(_twonn(X) - d) < tol * d


def test_curved_manifold_and_curve_pc_id_far_above_id():
    """The ID paper's point: smooth low-dimensional data whose linear PC-ID is many times its ID."""
    assert _pc_id(curved_manifold(1000, 2, 40, seed=0)) >= 10  # measured 11 (seed 0), 14 (seed 2)
    assert _pc_id(winding_curve(1000, 1, 30, seed=0)) >= 24  # measured 26 of 30 equal-variance axes
    assert _pc_id(linear_subspace(1000, 3, 40, seed=0)) <= 3  # the flat control


def test_manifolds_seeded():
    for make in (hypersphere, linear_subspace, swiss_roll, curved_manifold, winding_curve):
        d = 1 if make is winding_curve else 2
        a, b, c = (make(50, d, 8, seed=s) for s in (5, 5, 6))
        assert np.array_equal(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hypersphere(10, 3, 3), r"D must be >= 4"),
        (lambda: linear_subspace(10, 5, 4), r"D must be >= 5"),
        (lambda: curved_manifold(10, 3, 6), r"D must be >= 7"),
        (lambda: swiss_roll(10, 3, 5), r"d must be 2"),
        (lambda: winding_curve(10, 2, 5), r"d must be 1"),
        (lambda: winding_curve(10, 1, 5, n_freq=3), r"D must be >= 6"),
        (lambda: hypersphere(0, 2, 5), r"n must be an integer >= 1"),
        (lambda: hypersphere(10, 0, 5), r"d \(intrinsic dimension\) must be"),
        (lambda: hypersphere(10, 2, 5, noise=-0.1), r"noise must be"),
        (lambda: curved_manifold(10, 1, 5, frequency=0), r"frequency must be > 0"),
    ],
)
def test_manifold_bad_arguments(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_load_manifold_dataset():
    ds = load("winding_curve", n=200, D=12, n_test=50, seed=4)
    assert ds.x_train.shape == (200, 12) and ds.x_test.shape == (50, 12) and ds.x_train.dtype == torch.float32
    assert ds.y_train is None and ds.y_test is None and ds.n_classes == 0
    assert ds.meta["intrinsic_dim"] == 1 and ds.meta["ambient_dim"] == 12
    both = winding_curve(250, 1, 12, seed=4)  # one draw, split in two: the same curve
    assert np.allclose(torch.cat([ds.x_train, ds.x_test]).numpy(), both, atol=1e-6)
    assert load("curved-manifold", n=20, frequency=2.0).meta["frequency"] == 2.0
    with pytest.raises(InputError, match=r"has no labels; shuffle_fraction must be 0"):
        load("hypersphere", n=20, shuffle_fraction=0.5)


# -------------------------------------------------------------------------------- label shuffling
@given(
    y=st.lists(st.integers(0, 9), min_size=0, max_size=200).map(lambda v: np.array(v, dtype=np.int64)),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_shuffle_labels_properties(y, fraction, seed):
    y0 = y.copy()
    out, idx = shuffle_labels(y, fraction, seed, return_indices=True)
    assert len(idx) == round(fraction * len(y)) and len(set(idx.tolist())) == len(idx)
    assert np.array_equal(y, y0)  # input untouched
    untouched = np.setdiff1d(np.arange(len(y)), idx)
    assert np.array_equal(out[untouched], y[untouched])  # only the chosen examples can change
    assert np.array_equal(np.sort(out[idx]), np.sort(y[idx]))  # a permutation among the chosen ones
    again, idx2 = shuffle_labels(y, fraction, seed, return_indices=True)
    assert np.array_equal(again, out) and np.array_equal(idx2, idx)  # seeded
    uni = shuffle_labels(y, fraction, seed, method="uniform", n_classes=10)
    assert np.array_equal(uni[untouched], y[untouched]) and ((uni >= 0) & (uni < 10)).all()


def test_full_shuffle_is_random_and_torch_in_torch_out():
    y = torch.arange(10000) % 10
    out = shuffle_labels(y, 1.0, seed=0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    # random labels agree with the truth by chance only: 1/10 (binomial sd 0.003 at N = 10,000)
    assert abs(float((out == y).double().mean()) - 0.1) < 0.015
    assert torch.equal(torch.bincount(out), torch.bincount(y))
    assert not torch.equal(shuffle_labels(y, 1.0, seed=1), out)
    uni = shuffle_labels(y, 1.0, seed=0, method="uniform")
    assert abs(float((uni == y).double().mean()) - 0.1) < 0.015


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_shuffle_fraction_outside_unit_interval(fraction):
    with pytest.raises(InputError, match=r"must be in \[0.0, 1.0\]"):
        shuffle_labels(np.zeros(5, dtype=int), fraction)
    with pytest.raises(InputError, match=r"shuffle_fraction.*must be in"):
        load("digits", shuffle_fraction=fraction)


def test_shuffle_labels_bad_labels():
    with pytest.raises(InputError, match=r"integer class ids"):
        shuffle_labels(np.array([0.5, 1.0]), 0.5)
    with pytest.raises(InputError, match=r"1-D"):
        shuffle_labels(np.zeros((3, 2), dtype=int), 0.5)
    with pytest.raises(InputError, match=r"method must be"):
        shuffle_labels(np.zeros(3, dtype=int), 0.5, method="swap")


def test_load_with_shuffled_training_labels_only():
    clean = load("digits", seed=1)
    ds = load("digits", seed=1, shuffle_fraction=0.3)
    idx = ds.meta["shuffled_indices"]
    assert ds.meta["shuffle_fraction"] == 0.3 and len(idx) == round(0.3 * clean.n_train)
    assert torch.equal(ds.y_test, clean.y_test) and torch.equal(ds.x_train, clean.x_train)
    assert torch.equal(ds.meta["y_train_clean"], clean.y_train)
    mask = torch.ones(clean.n_train, dtype=torch.bool)
    mask[torch.from_numpy(idx)] = False
    assert torch.equal(ds.y_train[mask], clean.y_train[mask])
    changed = float((ds.y_train[~mask] != clean.y_train[~mask]).double().mean())
    assert changed > 0.8  # a permutation of ~balanced labels changes ≈ 90 % of the chosen ones


# ------------------------------------------------------------------------------------ user files
def test_user_files_round_trip_each_format(tmp_path):
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    y = rng.integers(0, 4, 30)
    y[:4] = [0, 1, 2, 3]
    np.save(tmp_path / "f.npy", x)
    np.savez(tmp_path / "a.npz", features=x, labels=y)
    np.savez(tmp_path / "s.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    torch.save(torch.from_numpy(x), tmp_path / "t.pt")
    torch.save({"X": torch.from_numpy(x), "targets": torch.from_numpy(y)}, tmp_path / "d.pt")
    torch.save((torch.from_numpy(x), torch.from_numpy(y)), tmp_path / "p.pth")
    save_file({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, str(tmp_path / "z.safetensors"))

    for name, labelled in [("f.npy", False), ("a.npz", True), ("t.pt", False), ("d.pt", True),
                           ("p.pth", True), ("z.safetensors", True)]:
        ds = load(tmp_path / name)
        assert np.array_equal(ds.x_train.numpy(), x), name
        assert ds.x_train.dtype == torch.float32 and ds.n_test == 0 and ds.input_shape == (6,)
        if labelled:
            assert ds.y_train.dtype == torch.int64 and np.array_equal(ds.y_train.numpy(), y)
            assert ds.n_classes == 4
        else:
            assert ds.y_train is None and ds.n_classes == 0
    s = load(str(tmp_path / "s.npz"))
    assert np.array_equal(s.x_test.numpy(), x[20:]) and np.array_equal(s.y_train.numpy(), y[:20])
    split = load_file(tmp_path / "a.npz", test_fraction=0.2, seed=3)
    tr, te = split.meta["train_indices"], split.meta["test_indices"]
    assert len(te) == 6 and not set(tr) & set(te) and len(set(tr) | set(te)) == 30
    assert np.array_equal(split.x_test.numpy(), x[te]) and np.array_equal(split.y_train.numpy(), y[tr])
    imgs = rng.random((5, 1, 4, 4)).astype(np.float32)  # N × C × H × W keeps its input shape
    np.save(tmp_path / "img.npy", imgs)
    assert load(tmp_path / "img.npy").input_shape == (1, 4, 4)


def test_user_file_errors_name_the_file(tmp_path):
    np.save(tmp_path / "vec.npy", np.arange(5.0))
    np.savez(tmp_path / "count.npz", x=np.ones((5, 2)), y=np.arange(4))
    np.savez(tmp_path / "nan.npz", x=np.array([[1.0, np.nan], [0.0, 1.0]]))
    np.savez(tmp_path / "keys.npz", data=np.ones((5, 2)))
    np.savez(tmp_path / "float.npz", x=np.ones((3, 2)), y=np.array([0.0, 0.5, 1.0]))
    np.savez(tmp_path / "neg.npz", x=np.ones((3, 2)), y=np.array([0, -1, 1]))
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    (tmp_path / "table.xls").write_text("1,2\n3,4\n")
    (tmp_path / "text.csv").write_text("a,b,label\n1,x,0\n3,y,1\n")
    torch.save({"x": torch.ones(3, 2), "obj": object()}, tmp_path / "pickle.pt")
    cases = [
        ("vec.npy", r"features must be \(N, D\).*got shape \(5,\)"),
        ("count.npz", r"4 labels for 5 train examples"),
        ("nan.npz", r"NaN or Inf \(first in row 0\)"),
        ("keys.npz", r"no features found.*\['data'\]"),
        ("float.npz", r"integer class labels"),
        ("neg.npz", r"class ids >= 0"),
        ("junk.npz", r"cannot read"),
        ("pickle.pt", r"cannot read"),  # weights_only=True refuses arbitrary pickled objects
        ("missing.npz", r"not found"),
        ("table.xls", r"unsupported file type '.xls'"),
        ("text.csv", r"feature columns must be numeric; \['b'\]"),
    ]
    for name, match in cases:
        with pytest.raises(InputError, match=match) as info:
            load(tmp_path / name)
        assert name in str(info.value), name


def test_user_tables_and_label_files_give_the_same_dataset_as_npz(tmp_path):
    """.csv/.parquet with a labels column, and .npy features with a separate labels file, load to exactly
    the arrays an .npz with x/y gives (float32 features, int64 labels, same order)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    np.savez(tmp_path / "ref.npz", x=x, y=y)
    ref = load(tmp_path / "ref.npz")
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    df.insert(2, "target", y)  # the labels column may sit anywhere
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    df.rename(columns={"target": "cls"}).to_csv(tmp_path / "named.csv", index=False)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "y.txt").write_text("\n".join(map(str, y)))
    cases = [load(tmp_path / "t.csv"), load(tmp_path / "t.parquet"),
             load(tmp_path / "named.csv", label_column="cls"), load(tmp_path / "x.npy", labels=tmp_path / "y.npy"),
             load(tmp_path / "x.npy", labels=tmp_path / "y.txt")]
    for ds in cases:
        # CSV holds float32 values as shortest decimal strings, which parse back to the same float32
        assert torch.equal(ds.x_train, ref.x_train) and torch.equal(ds.y_train, ref.y_train)
        assert ds.n_classes == ref.n_classes == int(y.max()) + 1
    unlabelled = load(tmp_path / "named.csv")  # 'cls' is not a label name: it stays a feature column
    assert unlabelled.y_train is None and unlabelled.input_shape == (6,)
    with pytest.raises(InputError, match="no column 'nope'"):
        load(tmp_path / "t.csv", label_column="nope")
    np.save(tmp_path / "short.npy", y[:-1])
    with pytest.raises(InputError, match="39 labels for 40 train examples"):
        load(tmp_path / "x.npy", labels=tmp_path / "short.npy")
    with pytest.raises(InputError, match="already holds labels"):
        load(tmp_path / "ref.npz", labels=tmp_path / "y.npy")


# ----------------------------------------------------------------------------- names, options, CLI
def test_unknown_name_and_options():
    with pytest.raises(UnknownNameError) as info:
        load("cifar10")
    assert info.value.choices == available() and "mnist1d" in str(info.value) and "hypersphere" in str(info.value)
    with pytest.raises(InputError, match=r"unknown option\(s\) \['n_trian'\].*n_train"):
        load("mnist1d", n_trian=10)
    with pytest.raises(InputError, match=r"n_train must be an integer >= 1; got 0"):
        load("mnist1d", n_train=0)
    with pytest.raises(InputError, match=r"test_fraction must be in \(0.0, 1.0\); got 1.0"):
        load("digits", test_fraction=1.0)
    with pytest.raises(InputError, match=r"seed must be an integer >= 0; got -1"):
        load("digits", seed=-1)
    assert describe("swiss_roll")["options"]["D"] == 3
    assert set(available()) >= {"mnist1d", "digits", "fashion-mnist", "hypersphere", "linear-subspace",
                                "swiss-roll", "curved-manifold", "winding-curve"}


def test_dataset_rejects_inconsistent_shapes():
    x = torch.zeros(4, 1, 3)
    with pytest.raises(InputError, match=r"x_test has shape \(2, 3\), expected \(N, \*\(1, 3\)\)"):
        Dataset("t", x, None, torch.zeros(2, 3), None, 0, (1, 3))
    with pytest.raises(InputError, match=r"y_train has shape \(3,\) for 4 inputs"):
        Dataset("t", x, torch.zeros(3, dtype=torch.int64), x, None, 2, (1, 3))


def test_cli_data_list_and_info(capsys):
    assert cli_main(["data", "list", "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert names == available()
    assert cli_main(["data", "info", "hypersphere", "-o", "n=40", "-o", "d=3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_train"] == 40 and info["intrinsic_dim"] == 3 and info["input_shape"] == [10]
    assert cli_main(["data", "info", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
