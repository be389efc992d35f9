"""deepgeom's own behaviour on the inputs where a peer library (pytorch-cka 1.1.3) goes wrong.

Each test is one case of ``bench/cka_peers.py`` (the same data and models; docs/similarity.md, "Other
libraries", gives what pytorch-cka returns there). pytorch-cka is not needed: every value is compared
with minibatch linear CKA (Nguyen et al. 2021) computed here in float64 from Song et al.'s HSIC₁
formula, written out with traces and ones-vectors, on column-centred batches (centring changes no
HSIC₁; it removes the cancellation that float64 would otherwise suffer at large offsets).

Tolerance 1e-6 for ``cka_matrix`` with its defaults: its Gram products run in float32 after centring
(docs/similarity.md: within ~1e-9 of float64 products on such layers; 1e-6 is the bound the project
holds the float32 path to). 1e-10 for the float64 single-matrix functions (only rounding differs).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepgeom.analysis.similarity import cka_matrix
from deepgeom.errors import InputError
from deepgeom.functional.cka import MinibatchCKA, linear_cka

TOL32 = 1e-6
TOL64 = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny products: thread hand-off would dominate on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (JMLR 2012) eq. (5): unbiased HSIC with explicit traces and ones-vectors."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    t = np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    return t / (n * (n - 3))


def ref_cka(X: np.ndarray, Y: np.ndarray, batch: int) -> float:
    """Minibatch CKA over the full batches of ``batch`` rows, float64, column-centred per batch."""
    kl = kk = ll = 0.0
    for s in range(0, X.shape[0] - batch + 1, batch):
        x = np.asarray(X[s:s + batch], np.float64)
        y = np.asarray(Y[s:s + batch], np.float64)
        x, y = x - x.mean(0), y - y.mean(0)
        K, L = x @ x.T, y @ y.T
        kl, kk, ll = kl + hsic1(K, L), kk + hsic1(K, K), ll + hsic1(L, L)
    return kl / np.sqrt(kk * ll)


class Cols(nn.Module):
    """A layer returning columns lo:hi of its input, so a layer's activations are a given array."""

    def __init__(self, lo: int, hi: int):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return x[:, self.lo:self.hi]


def pair_cka(X: np.ndarray, Y: np.ndarray, batch: int) -> float:
    """deepgeom's ``cka_matrix`` (defaults) between two models whose layer "0" outputs X and Y."""
    data = torch.from_numpy(np.concatenate([X, Y], axis=1).astype(np.float32))
    a, b = nn.Sequential(Cols(0, X.shape[1])), nn.Sequential(Cols(X.shape[1], data.shape[1]))
    return float(cka_matrix(a, b, data, layers_a=["0"], layers_b=["0"], batch_size=batch, progress=False).values[0, 0])


def test_negative_debiased_cka_is_returned_not_clamped():
    """Unrelated layers: minibatch (debiased) CKA is an unbiased estimate of ~0 and negative about
    half the time. pytorch-cka clamps at 0 (seed 0: -0.0407 → 0; mean over 50 seeds +0.0028 → +0.0132);
    deepgeom returns the float64 value, sign included."""
    r = np.random.default_rng(0)
    X, Y = r.normal(size=(64, 8)).astype(np.float32), r.normal(size=(64, 8)).astype(np.float32)
    ref = ref_cka(X, Y, 64)
    assert ref < -0.04  # the case is really negative (float64: -0.0406941)
    assert abs(pair_cka(X, Y, 64) - ref) < TOL32
    assert abs(linear_cka(X, Y, debiased=True) - ref) < TOL64  # one batch of all rows = full debiased CKA
    ours, refs = [], []
    for seed in range(50):
        r = np.random.default_rng(seed)
        X, Y = r.normal(size=(64, 8)).astype(np.float32), r.normal(size=(64, 8)).astype(np.float32)
        m = MinibatchCKA()
        m.update([X], [Y])
        ours.append(m.compute()[0, 0])
        refs.append(ref_cka(X, Y, 64))
    assert np.abs(np.array(ours) - refs).max() < TOL32
    assert sum(v < 0 for v in ours) == sum(v < 0 for v in refs) >= 15  # 23 of 50 in float64


@pytest.mark.parametrize("spread", [1.0, 0.1])
@pytest.mark.parametrize("d", [16, 64, 256])
def test_offset_ten_keeps_full_precision(d, spread):
    """Features 10 + spread·signal (float32), one batch of 256: pytorch-cka's float32 HSIC₁ on uncentred
    Grams is off by 1.1e-4, 3.3e-4, 1.1e-3 at spread 1 and returns 0, 0, 1 at spread 0.1 for
    D = 16, 64, 256 (float64: 0.5649, 0.9024, 0.9512 at both spreads)."""
    r = np.random.default_rng(1)
    Z = r.normal(size=(256, 8))
    for width in (16, 64, 256):  # the generator's draws as in bench/cka_peers.py
        Sx = Z @ r.normal(size=(8, width)) + 0.5 * r.normal(size=(256, width))
        Sy = Z @ r.normal(size=(8, width)) + 0.5 * r.normal(size=(256, width))
        if width == d:
            break
    X, Y = (10 + spread * Sx).astype(np.float32), (10 + spread * Sy).astype(np.float32)
    ref = ref_cka(X, Y, 256)
    assert abs(ref - ref_cka(Sx, Sy, 256)) < 1e-5  # the offset changes nothing but float32 rounding
    assert abs(pair_cka(X, Y, 256) - ref) < TOL32
    assert abs(pair_cka(X, Y, 64) - ref_cka(X, Y, 64)) < TOL32  # and in batches of 64


@pytest.mark.parametrize("scale", [1e-7, 1e4])
def test_scale_does_not_underflow_or_overflow(scale):
    """CKA is scale-free. pytorch-cka forms HSIC_xx·HSIC_yy in float32: at 1e-7 it underflows (CKA
    3e-18), at 1e4 it overflows (CKA 0); the float64 value is 0.876 at every scale."""
    r = np.random.default_rng(3)
    Z = r.normal(size=(256, 8))
    X = Z @ r.normal(size=(8, 64)) + 0.5 * r.normal(size=(256, 64))
    Y = Z @ r.normal(size=(8, 64)) + 0.5 * r.normal(size=(256, 64))
    Xs, Ys = (scale * X).astype(np.float32), (scale * Y).astype(np.float32)
    ref = ref_cka(X, Y, 256)
    assert 0.5 < ref < 0.99
    assert abs(ref_cka(Xs, Ys, 256) - ref) < 1e-6  # float32 rounding of the scaled data only
    assert abs(pair_cka(Xs, Ys, 256) - ref_cka(Xs, Ys, 256)) < TOL32


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_constant_layer_is_nan_with_warning(value):
    """A dead layer has no CKA (0/0). pytorch-cka puts 1e-6 in the zero denominator, so rounding noise
    × 1e6, clamped to [0, 1], is its answer: a layer of ones against 20 Gaussian layers gave 10 nonzero
    values up to 0.675; a layer of zeros gave 0. deepgeom: NaN, with a warning naming the layer."""
    r = np.random.default_rng(0)
    X = np.full((256, 8), value, np.float32)
    Y = r.normal(size=(256, 16)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="no variance"):
        v = pair_cka(X, Y, 64)
    assert np.isnan(v)


def test_inplace_relu_after_recorded_layer():
    """Linear → ReLU(inplace=True), the Linear recorded: pytorch-cka keeps the hook's tensor, which the
    ReLU then overwrites, so it compares post-ReLU values (CKA 0.854 against the same Linear in another
    model, where the truth is 1). deepgeom checks each recorded output's version counter after the
    forward pass and records a layer changed in place as a copy (the batch run again)."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 32)
    a = nn.Sequential(lin, nn.ReLU(inplace=True))
    b = nn.Sequential(copy.deepcopy(lin))
    x = torch.randn(256, 16)
    with torch.no_grad():
        pre = lin(x).numpy()
    post = np.maximum(pre, 0)
    M = cka_matrix(a, b, x, layers_a=["0", "1"], layers_b=["0"], batch_size=64, progress=False).values
    assert abs(M[0, 0] - ref_cka(pre, pre, 64)) < TOL32  # = 1: A's Linear seen before the ReLU ran
    assert abs(M[1, 0] - ref_cka(post, pre, 64)) < TOL32
    assert M[1, 0] < 0.9  # the two rows differ: what was recorded for "0" is not the ReLU's output


def test_module_called_twice_is_refused():
    """A shared ``self.act`` run twice per forward pass: pytorch-cka silently keeps the last call (CKA
    0.7136 against the first call, which is what "act" after fc1 is). deepgeom refuses, naming it."""
    class SharedAct(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.act = nn.Linear(16, 32), nn.Linear(32, 32), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc2(self.act(self.fc1(x))))

    torch.manual_seed(0)
    m = SharedAct()
    other = nn.Sequential(copy.deepcopy(m.fc1), nn.ReLU())
    with pytest.raises(InputError, match=r"'act'.*ran 2 times"):
        cka_matrix(m, other, torch.randn(256, 16), layers_a=["act"], layers_b=["1"], batch_size=64, progress=False)


def test_final_batch_of_three_is_left_out_with_warning():
    """N = 259, batch 64: pytorch-cka raises ValueError at the final batch of 3 rows, after the whole
    pass; deepgeom leaves it out with a warning and returns the CKA of the 4 full batches."""
    X, Y = np.random.default_rng(2).normal(size=(2, 259, 8))
    Y += X
    with pytest.warns(RuntimeWarning, match="left out"):
        v = pair_cka(X.astype(np.float32), Y.astype(np.float32), 64)
    assert abs(v - ref_cka(X.astype(np.float32), Y.astype(np.float32), 64)) < TOL32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(pair_cka(X[:256].astype(np.float32), Y[:256].astype(np.float32), 64) - v) < 1e-12


def test_agrees_with_pytorch_cka_where_it_is_right():
    """Anchor: on zero-mean tanh features of moderate scale (no offset, no dead layer, no in-place op)
    pytorch-cka computes the same minibatch CKA as deepgeom, to its float32 rounding (1e-4, as for
    torch-cka in test_cka.py) — so the differences above are its defects, not another definition."""
    cka_lib = pytest.importorskip("cka")
    if not hasattr(cka_lib, "compute_cka"):
        pytest.skip("the installed 'cka' module is not pytorch-cka")
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net_a = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 16))
    net_b = nn.Sequential(nn.Linear(10, 24), nn.Tanh(), nn.Linear(24, 8))
    x = torch.randn(256, 10)
    loader = DataLoader(TensorDataset(x), batch_size=64, shuffle=False)
    theirs = cka_lib.compute_cka(net_a, net_b, loader, layers=["1", "2"], model2_layers=["1", "2"], device="cpu",
                                 progress=False)[0].numpy()
    ours = cka_matrix(net_a, net_b, x, layers_a=["1", "2"], layers_b=["1", "2"], batch_size=64,
                      progress=False).values
    assert theirs.shape == ours.shape == (2, 2)
    assert np.abs(theirs - ours).max() < 1e-4
