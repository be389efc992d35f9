"""The exact neighbour core: every number is checked against float64 brute force from differences
(scipy's cdist / cKDTree, independent of deepgeom's matrix products).

Tolerances: distances are compared at 1e-12 relative — the refinement sums D float64 squares, so its
error is ≤ D·2⁻⁵³ ≈ 1e-14 relative for the D used here; 1e-12 leaves room for the reference's own
rounding while still failing for any float32 value (error ≥ 1e-8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from deepgeom import InputError
from deepgeom.functional.neighbors import Neighbors, duplicate_groups, ensure_neighbors, knn

RTOL = 1e-12


def brute(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 k-NN by sorting all pairwise distances (ties: smaller index first)."""
    X64 = np.asarray(X, dtype=np.float64)
    D = cdist(X64, X64)
    np.fill_diagonal(D, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), D.shape), D), axis=1)[:, :k]
    return np.take_along_axis(D, order, 1), order


def test_matches_ckdtree_on_random_data(rng):
    X = rng.normal(size=(1500, 12)).astype(np.float32)
    nb = knn(X, k=5, block_rows=400)
    dd, ii = cKDTree(X.astype(np.float64)).query(X.astype(np.float64), 6)
    np.testing.assert_allclose(nb.distances, dd[:, 1:], rtol=RTOL, atol=0)
    np.testing.assert_array_equal(nb.indices, ii[:, 1:])
    assert nb.distances.dtype == np.float64 and nb.indices.dtype == np.int64
    assert nb.n_fallback == 0 and nb.k == 5 and nb.n == 1500


def test_large_norm_float32_ratio_is_exact(rng):
    # offset 1e4 in float32: |x|²+|y|²-2x·y in float32 would lose every digit of a unit distance
    X = (rng.normal(size=(2000, 16)) + 1e4).astype(np.float32)
    nb = knn(X, k=2)
    td, ti = brute(X, 2)
    np.testing.assert_array_equal(nb.indices, ti)
    ratio, true_ratio = nb.distances[:, 1] / nb.distances[:, 0], td[:, 1] / td[:, 0]
    assert np.max(np.abs(ratio / true_ratio - 1)) < 1e-12
    # the naive float32 product formula is far off here (shows what the refinement fixes)
    X32 = torch.from_numpy(X)
    sq = (X32 * X32).sum(1)
    naive = (sq[:, None] + sq[None, :] - 2 * X32 @ X32.T).clamp_min(0).sqrt().numpy()
    assert np.max(np.abs(naive[np.arange(2000), ti[:, 0]] / td[:, 0] - 1)) > 1e-3


@pytest.mark.parametrize("fraction", [0.02, 0.20])
def test_duplicates_are_exactly_zero_and_flagged(rng, fraction):
    n = 2000
    X = (rng.normal(size=(n, 10)) * 3 + 1e3).astype(np.float32)
    targets = rng.choice(n, size=int(fraction * n), replace=False)
    X[targets] = X[rng.integers(0, n, size=len(targets))]
    _, inverse, counts = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    truth_mask = counts[inverse.ravel()] > 1
    assert truth_mask.sum() > 0.5 * fraction * n  # the data really hold that many repeated rows

    nb = knn(X, k=2)
    np.testing.assert_array_equal(nb.duplicate_mask, truth_mask)
    assert np.all(nb.distances[truth_mask, 0] == 0.0)  # exactly zero, not ~1e-3 from products
    assert np.all(nb.distances[~truth_mask, 0] > 0.0)
    assert nb.n_duplicates == truth_mask.sum()
    td, _ = brute(X, 2)
    np.testing.assert_allclose(nb.distances, td, rtol=RTOL, atol=0)
    for j in range(2):  # each neighbour's recorded distance is its true distance (ties allowed)
        np.testing.assert_allclose(
            np.linalg.norm(X[nb.indices[:, j]].astype(np.float64) - X, axis=1), nb.distances[:, j], rtol=RTOL, atol=0
        )

    rep = duplicate_groups(X)
    first_of_group = np.full(len(counts), n)
    np.minimum.at(first_of_group, inverse.ravel(), np.arange(n))
    np.testing.assert_array_equal(rep, first_of_group[inverse.ravel()])
    np.testing.assert_array_equal(np.bincount(rep, minlength=n)[rep] > 1, nb.duplicate_mask)


def test_duplicate_groups_compares_values_not_bytes():
    X = np.array([[1.0, -0.0], [2.0, 3.0], [1.0, 0.0], [2.0, 3.0000001], [2.0, 3.0]])  # 3.0000001 is distinct in float64
    np.testing.assert_array_equal(duplicate_groups(X), [0, 1, 0, 3, 1])
    # in float32 3.0000001 rounds to 3.0, so row 3 joins row 1's group
    np.testing.assert_array_equal(duplicate_groups(torch.tensor(X, dtype=torch.float32)), [0, 1, 0, 1, 1])


def test_memmap_streams_and_matches_in_memory(rng, tmp_path):
    X = rng.normal(size=(600, 300)).astype(np.float32) + 50
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    budget = 600 * 4 * 150  # slabs of 150 query rows, feature chunks of ≤ 64 columns
    a = knn(mm, k=3, block_features=64, memory_bytes=budget)
    b = knn(X, k=3, block_features=64, memory_bytes=budget)
    np.testing.assert_array_equal(a.distances, b.distances)
    np.testing.assert_array_equal(a.indices, b.indices)
    td, ti = brute(X, 3)
    np.testing.assert_allclose(a.distances, td, rtol=RTOL, atol=0)
    np.testing.assert_array_equal(a.indices, ti)
    c = knn(mm, k=3)  # default budget: one N×N slab, only its upper block triangle multiplied
    np.testing.assert_array_equal(c.distances, knn(X, k=3).distances)
    np.testing.assert_array_equal(c.indices, ti)


def test_block_sizes_do_not_change_results(rng):
    X = rng.normal(size=(400, 40)).astype(np.float32)
    ref = knn(X, k=4)
    for block_rows, block_features in [(29, None), (64, 7), (333, 40), (5000, 1)]:
        nb = knn(X, k=4, block_rows=block_rows, block_features=block_features)
        np.testing.assert_array_equal(nb.distances, ref.distances)
        np.testing.assert_array_equal(nb.indices, ref.indices)


def test_unprovable_margin_falls_back_to_float64_and_stays_exact(rng):
    # a tight cluster (spacing 1e-5) next to a point 1e3 away: the float32 error bound c·u·max|x|²
    # exceeds the cluster's distances, so the margin cannot be proven and rows are searched in float64
    X = np.concatenate([rng.normal(size=(300, 4)) * 1e-5, [[1e3, 0, 0, 0]]])
    nb = knn(X, k=2)
    assert nb.n_fallback > 250
    td, ti = brute(X, 2)
    np.testing.assert_allclose(nb.distances, td, rtol=RTOL, atol=0)
    np.testing.assert_array_equal(nb.indices, ti)


def test_inputs_torch_float64_int_and_small_n(rng):
    X = rng.normal(size=(50, 3))
    ref = brute(X, 2)[0]
    for data in (X, torch.from_numpy(X), torch.from_numpy(X).float().numpy().astype(np.float64)):
        np.testing.assert_allclose(knn(data, 2).distances[:, :1], brute(np.asarray(data), 2)[0][:, :1], rtol=RTOL)
    np.testing.assert_allclose(knn(X, 2, device="auto").distances, ref, rtol=RTOL, atol=0)
    Xi = rng.integers(-5, 5, size=(40, 2))
    np.testing.assert_allclose(knn(Xi, 3).distances, brute(Xi, 3)[0], rtol=RTOL, atol=0)
    # N = k + 1: every other point is a neighbour
    nb = knn(np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]), k=2)
    np.testing.assert_array_equal(nb.distances, [[5.0, 10.0], [5.0, 5.0], [5.0, 10.0]])
    np.testing.assert_array_equal(nb.indices, [[1, 2], [0, 2], [1, 0]])


@given(
    n=st.integers(3, 40),
    d=st.integers(1, 6),
    k_frac=st.floats(0, 1),
    block_rows=st.integers(1, 50),
    margin=st.integers(0, 4),
    grid=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_brute_force(n, d, k_frac, block_rows, margin, grid, seed):
    r = np.random.default_rng(seed)
    X = r.integers(-3, 4, size=(n, d)).astype(np.float32) if grid else r.normal(size=(n, d)).astype(np.float32)
    k = 1 + int(k_frac * (n - 2))
    nb = knn(X, k, block_rows=block_rows, margin=margin)
    td, _ = brute(X, k)
    np.testing.assert_allclose(nb.distances, td, rtol=RTOL, atol=0)
    got = np.linalg.norm(X[nb.indices].astype(np.float64) - X[:, None, :].astype(np.float64), axis=2)
    np.testing.assert_allclose(got, nb.distances, rtol=RTOL, atol=0)
    assert np.all(nb.indices != np.arange(n)[:, None])
    assert all(len(set(row)) == k for row in nb.indices.tolist())


@pytest.mark.parametrize(
    "X, k, match",
    [
        (np.zeros(5), 2, r"2-D .*reshape"),
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), 1, r"NaN or Inf \(first in row 1\)"),
        (np.array([[0.0], [np.inf], [1.0]]), 1, r"NaN or Inf"),
        (np.zeros((3, 2)), 3, r"at least k\+1 = 4 points"),
        (np.zeros((3, 2)), 0, r"k must be an integer >= 1"),
    ],
)
def test_errors(X, k, match):
    with pytest.raises(InputError, match=match):
        knn(X, k)


def test_nan_in_memmap_is_reported(tmp_path):
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(10, 3))
    mm[:] = 1.0
    mm[7, 2] = np.nan
    with pytest.raises(InputError, match=r"row 7"):
        knn(mm, 2)


def test_precomputed_neighbors_serve_several_k(rng):
    X = rng.normal(size=(200, 5))
    nb = knn(X, k=6)
    two = ensure_neighbors(nb, 2)
    np.testing.assert_array_equal(two.distances, nb.distances[:, :2])
    np.testing.assert_array_equal(two.distances, knn(X, 2).distances)
    assert ensure_neighbors(nb, 6) is nb
    np.testing.assert_array_equal(ensure_neighbors(X, 3).indices, nb.indices[:, :3])
    with pytest.raises(InputError, match="k=6 per point; cannot take k=7"):
        ensure_neighbors(nb, 7)
    wrapped = Neighbors.from_arrays(nb.distances, nb.indices)
    np.testing.assert_array_equal(wrapped.indices, nb.indices)
    assert nb.to_dict()["n_fallback"] == 0
    with pytest.raises(InputError, match="sorted ascending"):
        Neighbors.from_arrays(nb.distances[:, ::-1], nb.indices)
    with pytest.raises(InputError, match="exclude the point itself"):
        Neighbors.from_arrays(nb.distances, np.tile(np.arange(200)[:, None], (1, 6)))


def test_duplicate_groups_exact_across_hash_chunks(rng):
    # D spans several hash chunks (2**12 words each): rows one ulp apart anywhere stay distinct,
    # equal rows (and -0.0 vs 0.0) merge, in float32 and in float64
    X = rng.normal(size=(6, 9000)).astype(np.float32)
    X[1] = X[0]
    X[2] = X[0]
    X[2, 8999] = np.nextafter(X[2, 8999], np.float32(np.inf))
    X[3] = X[0]
    X[3, 4096] = np.nextafter(X[3, 4096], np.float32(-np.inf))
    X[4, :] = 0.0
    X[5, :] = -0.0
    for A in (X, X.astype(np.float64), torch.from_numpy(X)):
        np.testing.assert_array_equal(duplicate_groups(A), [0, 0, 2, 3, 4, 4])


def _hard_cases(rng):
    """Data that test the search's error bound: a large offset, duplicates, concentrated iid
    distances (high ID), tight clusters (neighbours ~1e-3 of the norm) and a low-ID curve."""
    n = 700
    offset = (rng.normal(size=(n, 300)) * 3 + 1e3).astype(np.float32)
    offset[rng.choice(n, 30, replace=False)] = offset[rng.integers(0, n, 30)]
    return {
        "offset+duplicates": offset,
        "iid gaussian": rng.normal(size=(n, 400)).astype(np.float32),
        "clusters": (np.repeat(rng.normal(size=(10, 300)) * 10, n // 10, 0)
                     + rng.normal(size=(n, 300)) * 0.01).astype(np.float32),
        "curve": np.cos(np.outer(np.linspace(0, 1, n), np.arange(1, 301))).astype(np.float32),
    }


@pytest.mark.parametrize("search", ["float32", "bfloat16", "int8", "auto"])
def test_every_search_dtype_gives_the_exact_neighbours(rng, search):
    # the candidate products' dtype changes only the error bound of the proof: the answer is the
    # exact float64 one (rows bf16 or int8 cannot certify are searched again in float32, then float64)
    for name, X in _hard_cases(rng).items():
        nb = knn(X, 3, search=search)
        td, _ = brute(X, 3)
        np.testing.assert_allclose(nb.distances, td, rtol=RTOL, atol=0, err_msg=f"{name} / {search}")
        got = np.linalg.norm(X[nb.indices].astype(np.float64) - X[:, None, :].astype(np.float64), axis=2)
        np.testing.assert_allclose(got, nb.distances, rtol=RTOL, atol=0, err_msg=name)
    with pytest.raises(InputError, match="search must be"):
        knn(X, 2, search="float16")


@given(seed=st.integers(0, 2**16), d=st.integers(1, 700), scale=st.sampled_from([1e-12, 1e-3, 1.0, 1e3, 1e15]),
       offset=st.floats(-1e3, 1e3))
def test_bf16_products_stay_inside_their_error_bound(seed, d, scale, offset):
    # the bound the bf16 proof relies on, |d̂² − d²| ≤ c(s_i+s_j) + t(1+|x|+|y|) (_search_error),
    # checked pair by pair against float64 on the same centred float32 data, over the range knn
    # uses bf16 for (squared norms between 1e-30 and 1e36; outside it the search is float32)
    from deepgeom.functional.neighbors import _d2_block, _search_error

    r = np.random.default_rng(seed)
    X = ((r.normal(size=(60, d)) * r.uniform(0.1, 10, size=(60, 1)) + offset) * scale).astype(np.float32)
    Xc = torch.from_numpy(X - X.mean(0, dtype=np.float64).astype(np.float32))
    sq = (Xc.double() ** 2).sum(1)
    d2 = _d2_block(Xc.bfloat16(), Xc.bfloat16(), sq.float(), sq.float(), 4096).double()
    exact = torch.cdist(Xc.double(), Xc.double()) ** 2
    c, t = _search_error(torch.bfloat16, d + 1, torch.device("cpu"), d)
    norm = sq.sqrt()
    bound = c * (sq[:, None] + sq[None, :]) + t * (1 + norm[:, None] + norm[None, :])
    assert bool(((d2 - exact).abs() <= bound * (1 + 1e-9) + 1e-300).all())


@pytest.mark.parametrize("d", [4096, 5000])
def test_bf16_bound_holds_at_layer_sizes(rng, d):
    # the same bound at the shapes knn multiplies (wide rows, several feature chunks for d > 4096),
    # where the library may pick other kernels than for the small hypothesis cases
    from deepgeom.functional.neighbors import _d2_block, _search_error

    X = (np.cos(rng.normal(size=(600, 10)) @ rng.normal(size=(10, d)) * 2) + 3).astype(np.float32)
    Xc = torch.from_numpy(X - X.mean(0, dtype=np.float64).astype(np.float32))
    sq = (Xc.double() ** 2).sum(1)
    d2 = _d2_block(Xc.bfloat16(), Xc.bfloat16(), sq.float(), sq.float(), 4096).double()
    exact = torch.cdist(Xc.double(), Xc.double()) ** 2
    h = min(d, 4096) + -(-d // 4096)
    c, t = _search_error(torch.bfloat16, h, torch.device("cpu"), d)
    norm = sq.sqrt()
    bound = c * (sq[:, None] + sq[None, :]) + t * (1 + norm[:, None] + norm[None, :])
    err = (d2 - exact).abs()
    assert bool((err <= bound).all())
    assert float((err / bound).max()) < 0.5  # the bound is not just barely met


@pytest.mark.parametrize("search", ["bfloat16", "int8"])
def test_reduced_and_float32_searches_agree_bitwise_on_a_layer(rng, search):
    # a ReLU layer of a low-dimensional input: the wider bound certifies most rows, the rest are
    # searched again in float32; either way the exact refinement gives the same bits
    X = np.maximum(rng.normal(size=(2500, 16)) @ rng.normal(size=(16, 1024)), 0).astype(np.float32)
    a = knn(X, 4, search="float32")
    b = knn(X, 4, search=search)
    np.testing.assert_array_equal(a.distances, b.distances)
    np.testing.assert_array_equal(a.indices, b.indices)


# --- found in review (2026-11-26): each of these once returned wrong neighbours or crashed


@pytest.mark.parametrize("search", ["auto", "float32", "bfloat16", "int8"])
def test_huge_and_tiny_scales_stay_exact(rng, search):
    # squares beyond float32's range (1e19²·D) and values deep in the subnormal range: the data are
    # scaled by a power of two before the search, and underflow has its own term in the bound
    for X in ((rng.normal(size=(100, 256)) * 1e19).astype(np.float32),
              rng.normal(size=(300, 4)) * 2e19,
              rng.normal(size=(600, 1)) * 1e-20,
              (rng.normal(size=(300, 3)) * 1e-41).astype(np.float32) + np.float32(0)):
        nb = knn(X, 2, search=search)
        td, _ = brute(X, 2)
        np.testing.assert_allclose(nb.distances, td, rtol=RTOL, atol=0)


def test_rows_no_product_search_can_separate_get_exact_distances(rng):
    # two tight clusters far from the global mean: even float64 products cancel, so the last resort
    # (every distance of those rows from float64 differences) must take over
    base = rng.normal(size=(2, 256)) + np.array([[10.0], [-10.0]])
    X = (np.repeat(base, 500, 0) + rng.normal(size=(1000, 256)) * 1e-6).astype(np.float32)
    nb = knn(X, 5)
    td, _ = brute(X, 5)
    np.testing.assert_allclose(nb.distances, td, rtol=RTOL, atol=0)
    Y = np.repeat([[1e8, 0.0], [-1e8, 0.0]], 1000, 0) + rng.normal(size=(2000, 2)) * 1e-3
    np.testing.assert_allclose(knn(Y, 2).distances, brute(Y, 2)[0], rtol=RTOL, atol=0)


def test_duplicate_groups_survive_hash_collisions(rng):
    # rows B ≠ A whose hashes collide with A's must not split A's duplicate group when they sort
    # between the copies of A: make every weight pair collide by cancelling bit changes
    from deepgeom.functional import neighbors as nbm

    A = rng.normal(size=(1, 40)).astype(np.float32)
    bits = A.view(np.int32).copy()
    B = bits.copy()
    B[0, 3] += 1
    B[0, 7] -= 1
    orig = nbm._bits_hash
    try:  # a deliberately weak hash (all weights equal) so that A and B collide
        nbm._bits_hash = lambda b, w: orig(b, torch.ones_like(w))
        X = np.vstack([A, B.view(np.float32), A, B.view(np.float32)])
        np.testing.assert_array_equal(duplicate_groups(X), [0, 1, 0, 1])
    finally:
        nbm._bits_hash = orig


def test_large_integers_are_refused_or_compared_exactly():
    X = np.array([[2**53], [2**53 + 1], [5]], dtype=np.int64)
    np.testing.assert_array_equal(duplicate_groups(X), [0, 1, 2])
    with pytest.raises(InputError, match="beyond 2\\*\\*53"):
        knn(X, 1)


def test_extreme_magnitudes_and_distance_ties_stay_exact(rng):
    # second review (2026-11-26): spreads near the float32/float64 limits, centring that would
    # overflow, squares of differences beyond float64's range, and ties in the exact last resort
    cases = [
        (rng.normal(size=(100, 3)) * 1e-42).astype(np.float32),
        rng.normal(size=(20, 2)) * 1e-315,
        np.array([[3.4e38], [-3.4e38], [-3.4e38], [1.7e38]], dtype=np.float32),
        np.array([[3e38, 0], [-3e38, 0], [-3e38, 1e30], [1e38, 0]], dtype=np.float32),
        np.array([[0.0], [1e200], [3e200], [2.9e200]]),
        rng.normal(size=(20, 3)) * 1e-300,
    ]
    for X in cases:
        for k in (1, 2):
            nb = knn(X, k)
            X64 = X.astype(np.float64)
            s = np.ldexp(1.0, min(1000, -int(np.frexp(np.abs(X64).max())[1])))  # exact power of two
            td, _ = brute(X64 * s, k)
            # subnormal distances (the 1e-315 case) carry fewer digits: a few of their ulps are allowed
            np.testing.assert_allclose(nb.distances, td / s, rtol=RTOL, atol=4 * 5e-324)
            assert np.all(nb.indices != np.arange(len(X))[:, None])
    B = 2.0**40
    X = np.vstack([[[B, 0], [B + 1, 2**-26], [B + 1, 0]], np.c_[B + rng.uniform(2, 8, 40), np.zeros(40)],
                   np.tile([[-B, 0]], (5, 1))])
    nb = knn(X, 2)
    td, ti = brute(X, 2)
    np.testing.assert_array_equal(nb.distances, td)
    np.testing.assert_array_equal(nb.indices[0], ti[0])


@pytest.mark.parametrize("search", ["float32", "bfloat16", "int8"])
def test_knn_never_modifies_its_input(rng, search):
    # the float64 fallback once scaled a view of the caller's float64 array in place
    for X in (rng.normal(size=(300, 4)) * 2e19, torch.from_numpy(rng.normal(size=(200, 300)) + 5.0),
              (np.repeat(rng.normal(size=(2, 64)) * 10, 100, 0) + rng.normal(size=(200, 64)) * 1e-9)):
        before = X.clone() if isinstance(X, torch.Tensor) else X.copy()
        knn(X, 3, search=search)
        np.testing.assert_array_equal(np.asarray(X), np.asarray(before))


@pytest.mark.parametrize("search", ["float32", "bfloat16", "int8"])
def test_ties_at_the_kth_distance_go_to_the_smallest_indices(rng, search):
    # third review: all-identical rows (every bound collapses to 0) and subnormal grids with exact ties
    for X, k in ((np.full((20, 2), 3.0), 2), (np.full((200, 4), 1e6, np.float32), 2),
                 (np.ones((20, 300), np.float32), 3), (rng.integers(-3, 4, (50, 3)) * 5e-324, 5)):
        nb = knn(X, k, search=search)
        X64 = X.astype(np.float64)
        s = np.ldexp(1.0, min(1000, -int(np.frexp(np.abs(X64).max())[1])))  # exact: subnormal grids too
        td, ti = brute(X64 * s, k)
        np.testing.assert_array_equal(nb.indices, ti)
        np.testing.assert_allclose(nb.distances, td / s, rtol=RTOL, atol=4 * 5e-324)


# ------------------------------------------------------------------ the exact low-dimensional route
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tree_route_gives_the_matrix_routes_neighbours_exactly(data):
    """Same indices (ties to the smaller index) and bitwise the same distances as the matrix search,
    on data full of exact duplicates and ties: integer grids, a power-of-two scale, both dtypes."""
    n = data.draw(st.integers(3, 70), label="n")
    d = data.draw(st.integers(1, 4), label="d")
    k = data.draw(st.integers(1, min(6, n - 1)), label="k")
    levels = data.draw(st.integers(1, 6), label="levels")  # few levels: many ties and duplicates
    rng = np.random.default_rng(data.draw(st.integers(0, 2**20), label="seed"))
    X = rng.integers(-levels, levels + 1, size=(n, d)).astype(np.float64)
    if data.draw(st.booleans(), label="jitter"):
        X += rng.standard_normal((n, d)) * 1e-3
    if data.draw(st.booleans(), label="float32"):
        X = np.ldexp(X, data.draw(st.integers(-90, 90), label="e")).astype(np.float32)  # within float32's range
    else:
        X = np.ldexp(X, data.draw(st.integers(-300, 300), label="e"))
    a = knn(X, k, method="matrix")
    b = knn(X, k, method="tree")
    np.testing.assert_array_equal(b.indices, a.indices)
    np.testing.assert_array_equal(b.distances, a.distances)


def test_tree_route_is_chosen_automatically_for_low_dimension(monkeypatch):
    from deepgeom.functional import neighbors as nbm

    calls = []
    real = nbm._tree_search
    monkeypatch.setattr(nbm, "_tree_search", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    rng = np.random.default_rng(3)
    X = rng.standard_normal((nbm.TREE_MIN_ROWS, 2))
    X[-40:] = X[:40]  # duplicates
    auto = knn(X, 3)
    assert calls == [X.shape]
    ref = knn(X, 3, method="matrix")
    np.testing.assert_array_equal(auto.indices, ref.indices)
    np.testing.assert_array_equal(auto.distances, ref.distances)
    knn(rng.standard_normal((nbm.TREE_MIN_ROWS, nbm.TREE_MAX_DIM + 1)), 2)  # wider: the matrix
    knn(X[:100], 2)  # fewer rows: the matrix
    assert len(calls) == 1


def test_tree_route_on_memmaps_and_tensors(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 3)).astype(np.float32)
    X[200:] = X[:100]
    np.save(tmp_path / "x.npy", X)
    ref = knn(X, 2, method="matrix")
    for src in (np.load(tmp_path / "x.npy", mmap_mode="r"), torch.from_numpy(X)):
        got = knn(src, 2, method="tree")
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_array_equal(got.distances, ref.distances)
    assert ref.n_duplicates == 200


def test_progress_bar_on_request(capsys):
    X = np.random.default_rng(5).standard_normal((50, 2))
    knn(X, 2, method="tree", progress=True)
    knn(X, 2, method="matrix", progress=True)
    err = capsys.readouterr().err
    assert "knn (tree)" in err and "knn:" in err
    with pytest.raises(InputError, match="method must be"):
        knn(X, 2, method="kdtree")
