"""deepgeom.functional exposes the pure estimators (as torchmetrics' functional namespace does), and
minibatch CKA is the chain update → merge → compute of pure functions that MinibatchCKA only accumulates."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import deepgeom
from deepgeom import functional as F

PURE = {  # name → the module that defines it
    "knn": "neighbors", "duplicate_groups": "neighbors", "gram": "matrix", "covariance": "matrix",
    "twonn": "intrinsic_dim", "gride": "intrinsic_dim", "levina_bickel": "intrinsic_dim",
    "pca_id": "intrinsic_dim", "twonn_scale": "intrinsic_dim", "twonn_bootstrap": "intrinsic_dim",
    "linear_cka": "cka", "rbf_cka": "cka", "kernel_cka": "cka", "hsic": "cka", "unbiased_hsic": "cka",
    "feature_spectrum": "spectrum", "dominant_count": "spectrum", "neural_collapse": "collapse",
    "effective_rank": "collapse", "power_law_alpha": "collapse", "richness": "collapse",
}


@pytest.mark.parametrize("name", sorted(PURE))
def test_each_pure_function_is_reachable_from_the_namespace(name):
    module = importlib.import_module(f"deepgeom.functional.{PURE[name]}")
    assert getattr(F, name) is getattr(module, name) and name in F.__all__
    assert (getattr(F, name).__doc__ or "").strip()


def test_the_namespace_holds_no_stateful_class_and_keeps_the_module_names():
    assert not hasattr(F, "MinibatchCKA")
    assert importlib.import_module("deepgeom.functional.cka").__name__ == "deepgeom.functional.cka"
    assert F.cka.__name__ == "deepgeom.functional.cka"  # the module, not the generic function


def test_old_import_paths_of_minibatch_cka_give_the_moved_class():
    from deepgeom.analysis.streaming import MinibatchCKA
    from deepgeom.functional.cka import MinibatchCKA as old

    assert old is MinibatchCKA is deepgeom.MinibatchCKA


def test_minibatch_functions_chain_to_the_accumulator_and_to_debiased_cka():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 6))
    xs = [X, np.tanh(X @ rng.normal(size=(6, 9)))]
    ys = [X @ rng.normal(size=(6, 4))]
    acc = deepgeom.MinibatchCKA(compute_dtype=torch.float64)
    total = None
    for s in range(0, 240, 60):
        xb, yb = [x[s:s + 60] for x in xs], [y[s:s + 60] for y in ys]
        acc.update(xb, yb)
        batch = F.minibatch_hsic_update(xb, yb, compute_dtype=torch.float64)
        total = batch if total is None else F.minibatch_hsic_merge(total, batch)
    assert total.n_batches == 4 and total.n_examples == 240
    np.testing.assert_array_equal(F.minibatch_cka_compute(total), acc.compute())  # the same arithmetic
    # one batch: minibatch CKA is debiased linear CKA (Song et al. 2012's HSIC₁), an independent code
    # path through feature-space moments; 1e-12 allows float64 rounding of two different formulas
    one = F.minibatch_cka_compute(F.minibatch_hsic_update(xs, ys, compute_dtype=torch.float64))
    for a, x in enumerate(xs):
        assert one[a, 0] == pytest.approx(F.linear_cka(x, ys[0], debiased=True), abs=1e-12)
