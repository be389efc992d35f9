"""Layer-pair CKA heatmaps, capture directories, block structure, PC1 removal and best match.

References are computed independently of the streaming engine: activations from a manual forward
pass (module by module) and Song et al.'s HSIC₁ written out in numpy (tests/test_cka.py's
transcription), or closed forms (PC1 fraction of data with a prescribed spectrum). Tolerance 1e-10:
the same float64 maths on the same float32 activations (``compute_dtype=float64``), only summation
order differs. The default float32 products (``"auto"`` on float32 activations) are held to 1e-7 of
those references separately.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_cka import ref_minibatch_cka  # tests/ is on sys.path (pytest rootdir-relative import)
from torch import nn
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

from deepgeom.analysis.similarity import (
    CKAResult,
    best_match,
    cka_matrix,
    cka_matrix_from_captures,
    find_blocks,
    pc1_fraction,
    pc1_fractions,
)
from deepgeom.errors import InputError, UnknownNameError
from deepgeom.functional.cka import MinibatchCKA, linear_cka

TOL = 1e-10
F64 = torch.float64  # the maths checks: float64 products, as the references (the default follows the data)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small products on a loaded shared 2-core machine: single-threaded is faster (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp(widths, seed):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(widths[:-1], widths[1:], strict=False):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def manual_layers(net: nn.Sequential, x: torch.Tensor) -> list[np.ndarray]:
    """Every module's output by calling the modules one after another (no hooks)."""
    outs = []
    with torch.no_grad():
        h = x
        for m in net:
            h = m(h)
            outs.append(h.numpy().astype(np.float64))
    return outs


@pytest.fixture
def data():
    return torch.randn(300, 6, generator=torch.Generator().manual_seed(0))


def batches_of(a, B):
    return [a[s:s + B] for s in range(0, a.shape[0], B)]


# ------------------------------------------------------------------------------------ heatmaps
def test_within_model_matches_manual_minibatch(data):
    net = mlp([6, 16, 16, 8], 0)
    names = [str(i) for i in range(len(net))]
    r = cka_matrix(net, data=data, layers_a=names, batch_size=64, progress=False, compute_dtype=F64)
    acts = manual_layers(net, data)
    assert isinstance(r, CKAResult) and r.within and r.n == 300 and r.layers_a == names == r.layers_b
    for i in range(len(names)):
        for j in range(len(names)):
            ref = ref_minibatch_cka(batches_of(acts[i], 64), batches_of(acts[j], 64))
            assert abs(r.matrix.iloc[i, j] - ref) < TOL
    assert np.allclose(r.values, r.values.T, atol=1e-14) and np.allclose(np.diag(r.values), 1.0, atol=1e-12)
    assert r.depth_a == [0.0, 0.25, 0.5, 0.75, 1.0]
    d = r.to_dict()
    assert len(d["matrix"]) == 5 and d["kernel"] == "linear" and d["batch_size"] == 64


def test_two_models_different_depth_and_width(data):
    a, b = mlp([6, 32, 32, 32, 4], 1), mlp([6, 8, 4], 2)
    la, lb = ["1", "3", "5", "6"], ["1", "2"]
    r = cka_matrix(a, b, data, layers_a=la, layers_b=lb, batch_size=100, progress=False, compute_dtype=F64)
    assert r.matrix.shape == (4, 2) and not r.within
    acts_a, acts_b = manual_layers(a, data), manual_layers(b, data)
    for _i, na in enumerate(la):
        for _j, nb in enumerate(lb):
            ref = ref_minibatch_cka(batches_of(acts_a[int(na)], 100), batches_of(acts_b[int(nb)], 100))
            assert abs(r.matrix.loc[na, nb] - ref) < TOL
    # best match: the argmax of each row, with its value
    bm = best_match(r)
    assert list(bm["best_b"]) == [lb[k] for k in r.values.argmax(1)]
    assert np.allclose(bm["cka"], r.values.max(1))


def test_default_products_follow_the_activations(data):
    """The default ``compute_dtype="auto"``: float32 Gram products for the captured float32
    activations (after exact float64 centring), within 1e-7 of the float64 reference — here with a
    ReLU net whose features ride on a common offset of 300 (the failure case of the popular
    libraries); float64 captures keep float64 products (1e-12). The reference is Song's formula in
    float64 on data centred over all N first (HSIC₁ is shift-invariant): on the raw activations the
    float64 formula itself is off by up to 4.6e-5 here (measured), the float32 products by 3e-9."""
    a, b = mlp([6, 32, 32, 32, 4], 1), mlp([6, 8, 4], 2)
    with torch.no_grad():
        a[0].bias += 300.0  # every later ReLU feature rides on a large positive offset
    la, lb = ["1", "3", "5", "6"], ["1", "2"]
    r = cka_matrix(a, b, data, layers_a=la, layers_b=lb, batch_size=100, progress=False)
    acts_a, acts_b = manual_layers(a, data), manual_layers(b, data)
    assert acts_a[1].mean() > 300 * acts_a[1].std(0).mean()
    worst_raw = 0.0
    for na in la:
        for nb in lb:
            x, y = acts_a[int(na)], acts_b[int(nb)]
            ref = ref_minibatch_cka(batches_of(x - x.mean(0), 100), batches_of(y - y.mean(0), 100))
            assert abs(r.matrix.loc[na, nb] - ref) < 1e-7
            worst_raw = max(worst_raw, abs(ref_minibatch_cka(batches_of(x, 100), batches_of(y, 100)) - ref))
    assert worst_raw > 1e-6  # uncentred float64 loses more than the float32 products after centring
    caps = {n: acts_a[int(n)] for n in la}  # float64 arrays
    r64 = cka_matrix_from_captures(caps, batch_size=100)
    for i, na in enumerate(la):
        for j, nb in enumerate(la):
            x, y = caps[na] - caps[na].mean(0), caps[nb] - caps[nb].mean(0)
            assert abs(r64.values[i, j] - ref_minibatch_cka(batches_of(x, 100), batches_of(y, 100))) < 1e-12


def test_same_order_check_fails_loudly(data):
    """A sampler that draws a new random order on every pass (torch-cka zips such a loader with
    itself): the two models would see different examples → InputError, never a number."""
    a, b = mlp([6, 8, 4], 1), mlp([6, 8, 4], 2)
    loader = DataLoader(TensorDataset(data), batch_size=50,
                        sampler=SubsetRandomSampler(range(300), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(InputError, match="different examples"):
        cka_matrix(a, b, loader, layers_a=["1"], layers_b=["1"], batch_size=50, progress=False)
    # the same loader without shuffling works, and equals the tensor route
    fixed = DataLoader(TensorDataset(data), batch_size=50, shuffle=False)
    r1 = cka_matrix(a, b, fixed, layers_a=["1"], layers_b=["1"], progress=False)
    r2 = cka_matrix(a, b, data, layers_a=["1"], layers_b=["1"], batch_size=50, progress=False)
    assert abs(r1.values[0, 0] - r2.values[0, 0]) < TOL


def test_full_data_mode_equals_linear_cka(data):
    a, b = mlp([6, 16, 16, 4], 3), mlp([6, 12, 4], 4)
    la, lb = ["0", "1", "4"], ["1", "2"]
    acts_a, acts_b = manual_layers(a, data), manual_layers(b, data)
    for debiased in (False, True):
        r = cka_matrix(a, b, data, layers_a=la, layers_b=lb, minibatch=False, debiased=debiased, progress=False,
                         compute_dtype=F64)
        assert not r.minibatch and r.debiased == debiased
        for i, na in enumerate(la):
            for j, nb in enumerate(lb):
                ref = linear_cka(acts_a[int(na)], acts_b[int(nb)], debiased=debiased)
                assert abs(r.values[i, j] - ref) < 1e-9


def test_full_data_memory_guard(data):
    net = mlp([6, 8, 4], 0)
    with pytest.raises(InputError, match="minibatch=True"):
        cka_matrix(net, data=data, layers_a=["0", "1"], minibatch=False, memory_budget=1000, progress=False)


def test_small_last_batch_left_out_with_warning(data):
    net = mlp([6, 8, 4], 0)
    with pytest.warns(RuntimeWarning, match="left out"):
        r = cka_matrix(net, data=data[:130], layers_a=["0", "2"], batch_size=64, progress=False)
    assert r.n == 128


# ------------------------------------------------------------------------------------- captures
def test_capture_directories_match_model_route(tmp_path, data):
    from deepgeom.capture import capture

    a, b = mlp([6, 16, 16, 4], 5), mlp([6, 10, 4], 6)
    la, lb = ["1", "3", "4"], ["1", "2"]
    capture(a, data, la, progress=False).save(tmp_path / "a")
    capture(b, data, lb, progress=False).save(tmp_path / "b")
    direct = cka_matrix(a, b, data, layers_a=la, layers_b=lb, batch_size=64, progress=False)
    from_disk = cka_matrix(str(tmp_path / "a"), str(tmp_path / "b"), batch_size=64)
    assert from_disk.layers_a == la and from_disk.layers_b == lb
    np.testing.assert_allclose(from_disk.values, direct.values, rtol=0, atol=TOL)
    within = cka_matrix_from_captures(tmp_path / "a", layers_a=["1", "3"], batch_size=64)
    assert within.matrix.shape == (2, 2) and within.within
    with pytest.raises(UnknownNameError, match="nope"):
        cka_matrix_from_captures(tmp_path / "a", layers_a=["nope"])


def test_capture_mismatch_fails(rng):
    X = rng.normal(size=(40, 3))
    with pytest.raises(InputError, match="same examples"):
        cka_matrix_from_captures({"x": X}, {"y": X[:30]})
    bad = X.copy()
    bad[7, 0] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        cka_matrix_from_captures({"x": bad}, {"y": X}, batch_size=16)


# -------------------------------------------------------------------------------- PC1 and blocks
def test_pc1_fraction_closed_form(rng):
    """X = U diag(s) Vᵀ with centred orthonormal U: the first-PC fraction is s₁²/Σs² exactly."""
    n, d = 200, 6
    U, _ = np.linalg.qr(rng.normal(size=(n, d)) - 0)
    U = U - U.mean(0)
    U, _ = np.linalg.qr(U)  # still orthonormal and (up to rounding) centred
    s = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    V = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = U @ np.diag(s) @ V.T + 7.0
    assert abs(pc1_fraction(X) - 25.0 / np.sum(s**2)) < 1e-9
    assert abs(pc1_fraction(X.T[:, :3].T) - pc1_fraction(X[:3])) < 1e-12  # D > N route, same data
    with pytest.raises(InputError, match="no variance"):
        pc1_fraction(np.ones((5, 3)))


def _dominant_block_layers(rng, n=600):
    """Layers 1-3 share one huge common direction (a 'block'); layer 0 and 4 do not."""
    z = rng.normal(size=(n, 1))
    base = rng.normal(size=(n, 8))
    layers = {"l0": base @ rng.normal(size=(8, 12))}
    for k in (1, 2, 3):
        layers[f"l{k}"] = 20.0 * z @ rng.normal(size=(1, 10)) + rng.normal(size=(n, 10))
    layers["l4"] = np.tanh(base @ rng.normal(size=(8, 6)))
    return layers


def test_blocks_and_pc1_removal(rng):
    layers = _dominant_block_layers(rng)
    r = cka_matrix_from_captures(layers, batch_size=100)
    rp = cka_matrix_from_captures(layers, batch_size=100, remove_pc1=True)
    blocks = find_blocks(r, pc1_fraction=rp.pc1_fraction_a)
    assert [b.layers for b in blocks] == [["l1", "l2", "l3"]]
    assert blocks[0].min_cka > 0.95 and blocks[0].pc1_mean > 0.95
    assert rp.pc1_removed and find_blocks(rp, pc1_fraction=False) == []
    assert rp.values[1:4, 1:4][~np.eye(3, dtype=bool)].max() < 0.2  # noise only, once the PC is gone
    assert all(rp.pc1_fraction_a[f"l{k}"] > 0.95 for k in (1, 2, 3))
    # the projection is the one estimated from all the data, applied per batch
    X1 = layers["l1"] - layers["l1"].mean(0)
    v = np.linalg.eigh(X1.T @ X1)[1][:, -1]
    X2 = layers["l2"] - layers["l2"].mean(0)
    w = np.linalg.eigh(X2.T @ X2)[1][:, -1]
    P1, P2 = X1 - np.outer(X1 @ v, v), X2 - np.outer(X2 @ w, w)
    ref = ref_minibatch_cka(batches_of(P1, 100), batches_of(P2, 100))
    assert abs(rp.matrix.loc["l1", "l2"] - ref) < 1e-9
    assert abs(rp.pc1_fraction_a["l1"] - pc1_fraction(layers["l1"])) < 1e-9
    full = cka_matrix_from_captures(layers, minibatch=False, remove_pc1=True)
    assert full.values[1:4, 1:4][~np.eye(3, dtype=bool)].max() < 0.2


def test_pc1_fractions_from_model(data):
    net = mlp([6, 16, 4], 0)
    df = pc1_fractions(net, data, ["0", "2"], batch_size=64)
    acts = manual_layers(net, data)
    assert list(df["layer"]) == ["0", "2"]
    assert abs(df["pc1_fraction"].iloc[1] - pc1_fraction(acts[2])) < 1e-9
    # layer "0" (16 features, rank 6) by streamed subspace iteration instead of its 16×16 scatter matrix
    wide = pc1_fractions(net, data, ["0"], batch_size=64, pc1_max_dim=8)
    assert abs(wide["pc1_fraction"].iloc[0] - pc1_fraction(acts[0])) < 1e-9
    # and inside the heatmap of a model, with its extra passes over the data
    r = cka_matrix(net, data=data, layers_a=["0", "2"], batch_size=64, remove_pc1=True, pc1_max_dim=8,
                   progress=False)
    r_exact = cka_matrix(net, data=data, layers_a=["0", "2"], batch_size=64, remove_pc1=True, progress=False)
    np.testing.assert_allclose(r.values, r_exact.values, rtol=0, atol=1e-9)


def test_find_blocks_rule():
    M = np.array([
        [1.0, 0.95, 0.92, 0.5, 0.4],
        [0.95, 1.0, 0.93, 0.5, 0.4],
        [0.92, 0.93, 1.0, 0.91, 0.4],
        [0.5, 0.5, 0.91, 1.0, 0.97],
        [0.4, 0.4, 0.4, 0.97, 1.0],
    ])
    df = pd.DataFrame(M, index=list("abcde"), columns=list("abcde"))
    b = find_blocks(df, min_size=2, pc1_fraction=False)
    # c–d reach 0.91 but a–d do not: the first block stops at c, the scan resumes at d
    assert [(x.start, x.stop, x.layers) for x in b] == [(0, 3, ["a", "b", "c"]), (3, 5, ["d", "e"])]
    assert b[0].min_cka == pytest.approx(0.92) and b[0].mean_cka == pytest.approx((0.95 + 0.92 + 0.93) / 3)
    assert find_blocks(M, threshold=0.99, pc1_fraction=False) == []
    assert [x.size for x in find_blocks(M, threshold=0.9, pc1_fraction=False)] == [3]  # default min_size 3
    # the PC1 condition cuts the run: "b" without a dominant PC leaves no run of 3
    pc1 = dict(zip("abcde", [0.8, 0.3, 0.9, 0.9, 0.9], strict=True))
    assert find_blocks(df, pc1_fraction=pc1) == []
    assert [x.layers for x in find_blocks(df, pc1_fraction=pc1, min_size=2)] == [["c", "d"]]
    with pytest.warns(UserWarning, match="CKA alone"):
        find_blocks(df)
    with pytest.raises(InputError, match="square"):
        find_blocks(M[:, :3], pc1_fraction=False)
    with pytest.raises(InputError, match="threshold"):
        find_blocks(M, threshold=1.5, pc1_fraction=False)
    with pytest.raises(InputError, match="no value"):
        find_blocks(df, pc1_fraction={"a": 0.9})
    with pytest.raises(InputError, match="remove_pc1=True"):
        find_blocks(df, pc1_fraction=True)


def test_find_blocks_hidden_layers_only():
    """Input and output pseudo-layers never join a block, even at CKA 1 with a dominant PC."""
    names = ["input", "stem", "b0", "b1", "output"]
    M = pd.DataFrame(np.ones((5, 5)), index=names, columns=names)
    pc1 = dict.fromkeys(names, 0.9)
    assert [b.layers for b in find_blocks(M, pc1_fraction=pc1)] == [["stem", "b0", "b1"]]
    assert find_blocks(M.iloc[:3, :3], pc1_fraction=pc1) == []  # stem, b0: only 2 hidden layers
    assert [b.layers for b in find_blocks(M, pc1_fraction=pc1, exclude=())] == [names]


def _synthetic_layers(rng, planted: bool, n=512, depth=8, dim=24):
    """Eight layers that are random rotations of one representation (linear CKA = 1 between any two:
    high similarity without a dominant direction), plus layer-specific noise; with ``planted``, layers
    3-6 also carry one large shared direction (the paper's dominant-PC block)."""
    base = rng.normal(size=(n, dim))
    z = rng.normal(size=(n, 1))
    out = {}
    for k in range(depth):
        Q = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
        X = base @ Q + 0.1 * rng.normal(size=(n, dim))
        if planted and 3 <= k <= 6:
            X = X + 12.0 * z @ rng.normal(size=(1, dim)) / np.sqrt(dim)
        out[f"layer{k}"] = X
    return out


@pytest.mark.parametrize("planted", [False, True])
def test_block_detector_needs_the_dominant_direction(rng, planted):
    """Rotated copies of one representation have CKA ≈ 0.9+ everywhere (a CKA-only rule finds one long
    'block'); only the planted shared direction makes a block, exactly over the planted layers."""
    layers = _synthetic_layers(rng, planted)
    r = cka_matrix_from_captures(layers, batch_size=128, remove_pc1=True)
    plain = cka_matrix_from_captures(layers, batch_size=128)
    assert len(find_blocks(plain, pc1_fraction=False)) >= 1  # CKA alone cannot tell
    blocks = find_blocks(plain, pc1_fraction=r.pc1_fraction_a)
    if planted:
        assert [b.layers for b in blocks] == [[f"layer{k}" for k in range(3, 7)]]
        assert blocks[0].pc1_mean > 0.5
        # with the PC projected out, the planted layers fall back to the rotated-copies similarity
        inside = r.values[3:7, 3:7][~np.eye(4, dtype=bool)]
        assert inside.mean() < plain.values[3:7, 3:7][~np.eye(4, dtype=bool)].mean()
    else:
        assert blocks == []
        assert max(r.pc1_fraction_a.values()) < 0.2


def test_best_match_recovers_permutation(rng):
    layers = {f"a{k}": rng.normal(size=(120, 4 + k)) for k in range(4)}
    perm = [2, 0, 3, 1]
    other = {f"b{j}": layers[f"a{perm[j]}"] @ np.linalg.qr(rng.normal(size=(4 + perm[j],) * 2))[0]
             for j in range(4)}
    r = cka_matrix_from_captures(layers, other, batch_size=40)
    bm = best_match(r)
    assert list(bm["best_b"]) == [f"b{perm.index(k)}" for k in range(4)]
    assert np.allclose(bm["cka"], 1.0, atol=1e-12)


def test_errors(data):
    net = mlp([6, 8, 4], 0)
    with pytest.raises(InputError, match="needs data"):
        cka_matrix(net)
    with pytest.raises(UnknownNameError):
        cka_matrix(net, data=data, kernel="cosine")
    with pytest.raises(InputError, match="batch_size"):
        cka_matrix(net, data=data, batch_size=2)
    with pytest.raises(UnknownNameError):
        cka_matrix(net, data=data, layers_a=["no_such_layer"], progress=False)
    with pytest.raises(InputError, match="capture"):
        cka_matrix({"x": np.zeros((5, 2))}, net)


def test_rbf_minibatch_heatmap(data):
    net = mlp([6, 16, 4], 0)
    r = cka_matrix(net, data=data, layers_a=["0", "2"], kernel="rbf", sigma=0.5, batch_size=100, progress=False,
                   compute_dtype=F64)
    acts = manual_layers(net, data)
    m = MinibatchCKA(kernel="rbf", sigma=0.5)
    for s in range(0, 300, 100):
        m.update([acts[0][s:s + 100], acts[2][s:s + 100]])
    np.testing.assert_allclose(r.values, m.compute(), rtol=0, atol=TOL)
    assert r.kernel == "rbf" and r.sigma == 0.5


# ---------------------------------------------------------------------------------- figures + CLI
def test_heatmap_figure_marks_blocks(rng):
    from matplotlib.patches import Rectangle

    from deepgeom.viz.similarity import plot_cka_heatmap, plot_pc1_fraction

    layers = _dominant_block_layers(rng)
    r = cka_matrix_from_captures(layers, batch_size=100, remove_pc1=False)
    fig = plot_cka_heatmap(r)
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 1 and rects[0].get_xy() == (0.5, 0.5) and rects[0].get_width() == 3  # l1..l3
    assert [t.get_text() for t in ax.get_yticklabels()] == list(layers)
    assert ax.images[0].origin == "lower" and len(fig.axes) == 2  # heatmap + colorbar
    rp = cka_matrix_from_captures(layers, batch_size=100, remove_pc1=True)
    fig2 = plot_pc1_fraction(rp)
    ys = fig2.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(ys, [rp.pc1_fraction_a[k] for k in layers])


def test_cli_pair_and_heatmap(tmp_path, capsys):
    import json

    from deepgeom.cli import main

    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    np.save(tmp_path / "a.npy", X)
    np.save(tmp_path / "b.npy", Y)
    assert main(["cka", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert round(out["cka"], 5) == 0.55761 and out["n"] == 100 and out["kernel"] == "linear"
    assert main(["cka", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--debiased", "--json"]) == 0
    assert round(json.loads(capsys.readouterr().out)["cka"], 5) == 0.51346
    assert main(["cka", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--kernel", "rbf", "--sigma", "0.5",
                 "--json"]) == 0
    assert round(json.loads(capsys.readouterr().out)["cka"], 5) == 0.65483
    assert main(["cka", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--batch-size", "25", "--json"]) == 0
    mb = json.loads(capsys.readouterr().out)
    assert mb["minibatch"] and mb["batch_size"] == 25
    assert abs(mb["cka"] - ref_minibatch_cka(batches_of(X, 25), batches_of(Y, 25))) < TOL
    np.save(tmp_path / "c.npy", Y[:50])
    assert main(["cka", str(tmp_path / "a.npy"), str(tmp_path / "c.npy")]) == 2
    assert "same examples" in capsys.readouterr().err
    # heatmap from a capture directory
    from deepgeom.capture import capture

    net = mlp([6, 16, 16, 4], 0)
    data = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    capture(net, data, ["0", "1", "2", "3", "4"], progress=False).save(tmp_path / "cap")
    assert main(["cka", "heatmap", "--capture-a", str(tmp_path / "cap"), "--batch-size", "50",
                 "--out", str(tmp_path / "hm"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    csv = pd.read_csv(tmp_path / "hm" / "cka_matrix.csv", index_col=0)
    direct = cka_matrix(net, data=data, layers_a=["0", "1", "2", "3", "4"], batch_size=50, progress=False)
    np.testing.assert_allclose(csv.to_numpy(), direct.values, atol=1e-12)
    assert (tmp_path / "hm" / "cka_heatmap.png").is_file() and (tmp_path / "hm" / "blocks.json").is_file()
    assert summary["layers_a"] == ["0", "1", "2", "3", "4"]
    assert main(["cka", "heatmap", "--out", str(tmp_path / "x")]) == 2


def test_pc1_wide_layers_by_subspace_iteration(rng):
    """Layers wider than pc1_max_dim get their PC by randomized subspace iteration (extra passes):
    same fractions and heatmap as the exact D×D route, here to 1e-9."""
    n, d = 400, 300
    G = rng.normal(size=(n, 20))
    U = np.linalg.qr(G - G.mean(0))[0]  # orthonormal, centred columns: the spectrum is exactly s²
    V = np.linalg.qr(rng.normal(size=(d, 20)))[0]
    s = 10.0 * 0.7 ** np.arange(20)
    wide = {"w1": U @ np.diag(s) @ V.T + 5.0, "w2": np.tanh(U[:, :8] @ rng.normal(size=(8, 150))) + 1.0,
            "narrow": U[:, :5] @ rng.normal(size=(5, 7))}
    exact = cka_matrix_from_captures(wide, batch_size=100, remove_pc1=True, pc1_max_dim=1000)
    iterative = cka_matrix_from_captures(wide, batch_size=100, remove_pc1=True, pc1_max_dim=100)
    for k in wide:
        assert abs(iterative.pc1_fraction_a[k] - exact.pc1_fraction_a[k]) < 1e-9
        assert abs(iterative.pc1_fraction_a[k] - pc1_fraction(wide[k])) < 1e-9
    assert abs(exact.pc1_fraction_a["w1"] - s[0] ** 2 / np.sum(s**2)) < 1e-9  # closed form
    np.testing.assert_allclose(iterative.values, exact.values, rtol=0, atol=1e-9)


def test_pc1_streaming_survives_large_offset(rng):
    """Scatter matrices accumulate about the first batch's mean: an offset of 1e6 on unit-scale data
    (which would cost ~1e-4 relative in Σxxᵀ − nμμᵀ) leaves the PC1 fraction exact to 1e-8."""
    X = rng.normal(size=(300, 5)) * [3.0, 1.0, 1.0, 0.5, 0.2]
    r = cka_matrix_from_captures({"x": X + 1e6, "y": X[:, :3]}, batch_size=100, remove_pc1=True)
    assert abs(r.pc1_fraction_a["x"] - pc1_fraction(X)) < 1e-8
