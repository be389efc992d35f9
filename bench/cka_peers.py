"""pytorch-cka's correctness defects on tiny inputs, beside deepgeom and a float64 reference.

    python bench/cka_peers.py        # a few seconds; needs pytorch-cka (the ``bench`` extra)

Each case feeds the same models and data to pytorch-cka's ``compute_cka`` (its documented entry
point: one loader, both models on every batch, float32 Grams and HSIC₁ on uncentred Grams) and to
deepgeom's ``cka_matrix`` with its defaults, and prints both next to the minibatch CKA of Nguyen et
al. (2021) computed here in float64 from Song et al.'s HSIC₁ formula on column-centred batches (the
reference; centring changes no HSIC₁ and removes the cancellation). docs/similarity.md quotes this
table; tests/test_cka_peers.py holds deepgeom to the reference on the same inputs without pytorch-cka.

The "models" of the numeric cases are column selectors (``Cols``): model A outputs the first columns
of the data, model B the rest, so each layer's activations are exactly the arrays built here.
"""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import torch
from torch import nn

FMT = "{:<58} {:>12} {:>12} {:>12}"


class Cols(nn.Module):
    """Layer that returns columns ``lo:hi`` of its input: a "model" whose activations are given arrays."""

    def __init__(self, lo: int, hi: int):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return x[:, self.lo:self.hi]


class SharedAct(nn.Module):
    """Two linear layers that share one ``self.act`` module (as torchvision's BasicBlock shares relu)."""

    def __init__(self, d: int = 16, w: int = 32):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, w), nn.Linear(w, w), nn.ReLU()

    def forward(self, x):
        return self.act(self.fc2(self.act(self.fc1(x))))


def hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (JMLR 2012) unbiased HSIC, written out with traces and ones-vectors (float64)."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    t = np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    return t / (n * (n - 3))


def reference(X: np.ndarray, Y: np.ndarray, batch: int) -> float:
    """Minibatch linear CKA (Nguyen et al. 2021) in float64 on column-centred batches."""
    kl = kk = ll = 0.0
    for s in range(0, X.shape[0] - X.shape[0] % batch or X.shape[0], batch):
        x = X[s:s + batch].astype(np.float64)
        y = Y[s:s + batch].astype(np.float64)
        x, y = x - x.mean(0), y - y.mean(0)
        K, L = x @ x.T, y @ y.T
        kl, kk, ll = kl + hsic1(K, L), kk + hsic1(K, K), ll + hsic1(L, L)
    return kl / np.sqrt(kk * ll)


def theirs(model_a, model_b, data, la, lb, batch):
    from cka import compute_cka
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.as_tensor(data)), batch_size=batch, shuffle=False)
    try:
        return float(compute_cka(model_a, model_b, loader, layers=la, model2_layers=lb, device="cpu",
                                 progress=False)[0][0, 0])
    except Exception as e:  # noqa: BLE001 - the error is the result
        return f"{type(e).__name__}"


def ours(model_a, model_b, data, la, lb, batch):
    from deepgeom.analysis.similarity import cka_matrix
    from deepgeom.errors import InputError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(cka_matrix(model_a, model_b, torch.as_tensor(data), layers_a=la, layers_b=lb,
                                    batch_size=batch, progress=False).values[0, 0])
    except InputError as e:
        return f"InputError ({str(e)[:40]}…)"


def pair(X: np.ndarray, Y: np.ndarray):
    """Data and two column-selector models whose layer "0" outputs X and Y (float32)."""
    data = np.concatenate([X, Y], axis=1).astype(np.float32)
    dx = X.shape[1]
    return nn.Sequential(Cols(0, dx)), nn.Sequential(Cols(dx, data.shape[1])), data


def show(case: str, ref, a, b) -> None:
    f = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)  # noqa: E731
    print(FMT.format(case, f(ref), f(a), f(b)), flush=True)


def main() -> int:
    import cka

    torch.set_num_threads(1)
    print(f"pytorch-cka {cka.__version__}, torch {torch.__version__}")
    print(FMT.format("case", "float64 ref", "pytorch-cka", "deepgeom"))

    # 1. Debiased CKA of unrelated layers is negative about half the time; pytorch-cka clamps at 0.
    refs, pcs = [], []
    for seed in range(50):
        r = np.random.default_rng(seed)
        X, Y = r.normal(size=(64, 8)).astype(np.float32), r.normal(size=(64, 8)).astype(np.float32)
        a, b, data = pair(X, Y)
        refs.append(reference(X, Y, 64))
        pcs.append(theirs(a, b, data, ["0"], ["0"], 64))
        if seed == 0:
            show("independent 64×8 Gaussians, seed 0", refs[0], pcs[0], ours(a, b, data, ["0"], ["0"], 64))
    print(f"  over 50 seeds: mean float64 {np.mean(refs):+.4f} ({sum(v < 0 for v in refs)} negative), "
          f"mean pytorch-cka {np.mean(pcs):+.4f} ({sum(v == 0 for v in pcs)} exactly 0)")

    # 2. A shared offset of 10 (spread 1, then 0.1): float32 HSIC₁ on uncentred Grams cancels to noise.
    r = np.random.default_rng(1)
    Z = r.normal(size=(256, 8))
    for d in (16, 64, 256):
        Sx = Z @ r.normal(size=(8, d)) + 0.5 * r.normal(size=(256, d))
        Sy = Z @ r.normal(size=(8, d)) + 0.5 * r.normal(size=(256, d))
        for spread in (1.0, 0.1):
            X, Y = (10 + spread * Sx).astype(np.float32), (10 + spread * Sy).astype(np.float32)
            a, b, data = pair(X, Y)
            show(f"offset 10, spread {spread:g}, N = 256, D = {d}", reference(X, Y, 256),
                 theirs(a, b, data, ["0"], ["0"], 256), ours(a, b, data, ["0"], ["0"], 256))

    # 3. Scale: √(HSIC_xx·HSIC_yy) is formed as a product in float32, which under/overflows.
    r = np.random.default_rng(3)
    Z = r.normal(size=(256, 8))
    X = Z @ r.normal(size=(8, 64)) + 0.5 * r.normal(size=(256, 64))
    Y = Z @ r.normal(size=(8, 64)) + 0.5 * r.normal(size=(256, 64))
    for s in (1.0, 1e-7, 1e4):
        a, b, data = pair((s * X).astype(np.float32), (s * Y).astype(np.float32))
        show(f"same layers scaled by {s:g}", reference(s * X, s * Y, 256), theirs(a, b, data, ["0"], ["0"], 256),
             ours(a, b, data, ["0"], ["0"], 256))

    # 4. A dead (constant) layer: CKA is 0/0; pytorch-cka puts 1e-6 in the zero denominator, so the sign
    # rounding noise in HSIC_xy, divided by 1e-6 and clamped to [0, 1], becomes the answer.
    for c in (1.0, 0.0):
        got = []
        for seed in range(21):  # 20 Gaussian layers and the 64-wide layer Y of case 3
            live = (np.random.default_rng(seed).normal(size=(256, 16)) if seed < 20 else Y).astype(np.float32)
            a, b, data = pair(np.full((256, 8), c, np.float32), live)
            got.append(theirs(a, b, data, ["0"], ["0"], 256))
        show(f"constant layer ({c:g}) vs Y of case 3", float("nan"), got[-1], ours(a, b, data, ["0"], ["0"], 256))
        print(f"  pytorch-cka against 20 Gaussian layers: {sum(v != 0 for v in got[:-1])} nonzero, "
              f"from {min(got[:-1]):.3g} to {max(got[:-1]):.3g}")

    # 5. In-place ReLU after the recorded Linear: the hook's tensor is overwritten later in the pass.
    torch.manual_seed(0)
    lin = nn.Linear(16, 32)
    a = nn.Sequential(lin, nn.ReLU(inplace=True))
    b = nn.Sequential(copy.deepcopy(lin))  # the same weights: the Linear outputs of A and B are equal, CKA = 1
    x = torch.randn(256, 16)
    with torch.no_grad():
        pre = lin(x).numpy()
    show("Linear → ReLU(inplace=True), Linear recorded (vs itself)", reference(pre, pre, 64),
         theirs(a, b, x, ["0"], ["0"], 64), ours(a, b, x, ["0"], ["0"], 64))

    # 6. A module that runs twice per forward pass: only its last call survives in pytorch-cka.
    torch.manual_seed(0)
    m = SharedAct()
    with torch.no_grad():
        first = torch.relu(m.fc1(x)).numpy()
        last = m(x).numpy()
    show("shared self.act (2 calls) vs its 1st call [ref]", reference(first, first, 64),
         theirs(m, nn.Sequential(m.fc1, nn.ReLU()), x, ["act"], ["1"], 64), ours(m, nn.Sequential(m.fc1, nn.ReLU()),
                                                                                 x, ["act"], ["1"], 64))
    print(f"  (CKA of the last call against the first, float64: {reference(last, first, 64):.6g})")

    # 7. N = 259 with batch 64: a final batch of 3 rows.
    X, Y = np.random.default_rng(2).normal(size=(2, 259, 8))
    Y += X
    a, b, data = pair(X.astype(np.float32), Y.astype(np.float32))
    show("N = 259, batch 64 (final batch of 3)", reference(X[:256], Y[:256], 64),
         theirs(a, b, data, ["0"], ["0"], 64), ours(a, b, data, ["0"], ["0"], 64))
    return 0


if __name__ == "__main__":
    sys.exit(main())
