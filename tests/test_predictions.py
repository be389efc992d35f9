"""Prediction comparisons: closed-form counts, scipy's tests, and the architecture-vs-seed test's
behaviour under its null (no architecture effect) and under a planted class-specific effect."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from deepgeom.analysis.predictions import (
    architecture_test,
    as_predictions,
    compare_models,
    compare_predictions,
    pairwise_comparisons,
    per_class_accuracy,
    predictions,
)
from deepgeom.errors import InputError


def test_compare_counts_closed_form():
    y = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    a = np.array([0, 0, 1, 0, 2, 1, 2, 1])  # right on 0,1,2,4,6,7
    b = np.array([0, 1, 1, 1, 2, 1, 0, 1])  # right on 0,2,3,4,7
    c = compare_predictions(a, b, y, names=("wide", "deep"))
    assert (c.n, c.accuracy_a, c.accuracy_b) == (8, 6 / 8, 5 / 8)
    assert c.agreement == 5 / 8  # same label at 0, 2, 4, 5, 7
    assert (c.both_right, c.a_only, c.b_only, c.both_wrong) == (4 / 8, 2 / 8, 1 / 8, 1 / 8)
    assert c.both_right + c.a_only + c.b_only + c.both_wrong == 1.0
    assert c.mcnemar_p == pytest.approx(stats.binomtest(2, 3, 0.5).pvalue)
    pc = c.per_class.set_index("class")
    assert list(pc["n"]) == [2, 3, 3]
    np.testing.assert_allclose(pc["acc_a"], [1.0, 2 / 3, 2 / 3])
    np.testing.assert_allclose(pc["acc_b"], [0.5, 1.0, 1 / 3])
    np.testing.assert_allclose(pc["diff"], pc["acc_a"] - pc["acc_b"])
    # logits give the same as their argmax; the class-weighted mean of per-class accuracy is the accuracy
    logits = np.eye(3)[a] * 2.0 + 0.1
    assert compare_predictions(logits, torch.from_numpy(b), y).agreement == c.agreement
    acc = per_class_accuracy(a, y)
    assert np.sum(acc * np.bincount(y)) / len(y) == pytest.approx(c.accuracy_a)
    assert c.to_dict()["per_class"]["n"] == [2, 3, 3]


def test_pairwise_table():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    preds = {k: np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200)) for k in "abc"}
    df = pairwise_comparisons(preds, y)
    assert list(zip(df["a"], df["b"], strict=True)) == [("a", "b"), ("a", "c"), ("b", "c")]
    row = df.iloc[1]
    c = compare_predictions(preds["a"], preds["c"], y)
    assert row["agreement"] == c.agreement and row["b_only"] == c.b_only
    assert row["mean_abs_class_diff"] == pytest.approx(np.mean(np.abs(c.per_class["diff"])))


def _seeds(rng, y, class_acc, n_seeds):
    """Classifiers that are right on each example of class c with probability class_acc[c]."""
    out = []
    for _ in range(n_seeds):
        right = rng.random(len(y)) < class_acc[y]
        wrong = (y + 1 + rng.integers(0, 9, len(y))) % 10
        out.append(np.where(right, y, wrong))
    return out


def test_architecture_effect_detected():
    """Architecture A is better on classes 0-4, B on 5-9 (±15 points): detected by both tests."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 200)
    acc_a = np.array([0.9] * 5 + [0.6] * 5)
    acc_b = np.array([0.6] * 5 + [0.9] * 5)
    wide, deep = _seeds(rng, y, acc_a, 4), _seeds(rng, y, acc_b, 4)
    res = architecture_test({"wide": wide, "deep": deep}, y)
    assert res.exact and res.n_permutations == math.comb(8, 4)  # every relabeling of 4 + 4 models
    assert res.p_value == pytest.approx(2 / 70)  # the observed split and its mirror image are the extremes
    assert res.between > 0.2 > 0.05 > res.within and res.statistic == pytest.approx(res.between - res.within)
    assert res.n_significant == 10 and res.binom_p < 1e-6
    np.testing.assert_allclose(res.per_class["diff"], acc_a - acc_b, atol=0.08)
    # the per-class t-test is scipy's Welch test on the seeds' per-class accuracies
    aw = np.stack([per_class_accuracy(p, y) for p in wide])
    ad = np.stack([per_class_accuracy(p, y) for p in deep])
    t, p = stats.ttest_ind(aw, ad, axis=0, equal_var=False)
    np.testing.assert_allclose(res.per_class["t"], t, rtol=1e-12)
    np.testing.assert_allclose(res.per_class["p"], p, rtol=1e-12)
    assert res.to_dict()["groups"] == {"wide": 4, "deep": 4}


def test_architecture_null_not_significant():
    """Same class accuracies for both 'architectures': across 20 replications the permutation p-value
    stays roughly uniform (mean ≈ 0.5) and rejects at 5% rarely."""
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(10), 100)
    acc = rng.uniform(0.5, 0.9, 10)
    ps = []
    for _ in range(20):
        res = architecture_test({"a": _seeds(rng, y, acc, 3), "b": _seeds(rng, y, acc, 3)}, y)
        ps.append(res.p_value)
    assert 0.3 < np.mean(ps) < 0.7
    assert np.mean(np.array(ps) <= 0.05) <= 0.15


def test_architecture_random_permutations_and_three_archs():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 60)
    groups = {f"arch{k}": _seeds(rng, y, np.full(5, 0.5 + 0.1 * k), 3) for k in range(3)}
    res = architecture_test(groups, y, n_permutations=200, seed=0)
    assert not res.exact and res.n_permutations == 200  # 9!/(3!3!3!) = 1680 > 200
    assert 0 < res.p_value <= 1 and math.isnan(res.binom_p)
    assert set(res.per_class.columns) >= {"class", "acc_arch0", "acc_arch1", "acc_arch2", "diff"}


def test_predictions_from_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x = torch.randn(50, 4)
    y = torch.randint(0, 3, (50,))
    p, labels = predictions(net, (x, y), batch_size=16)
    with torch.no_grad():
        assert np.array_equal(p, net(x).argmax(1).numpy())
    assert np.array_equal(labels, y.numpy())
    other = torch.nn.Sequential(torch.nn.Linear(4, 3))
    table = compare_models({"net": net, "other": other}, (x, y), batch_size=16)
    with torch.no_grad():
        ref = compare_predictions(net(x), other(x), y)
    assert table.loc[0, "agreement"] == ref.agreement and table.loc[0, "a_only"] == ref.a_only


def test_errors():
    y = np.array([0, 1, 1, 0])
    with pytest.raises(InputError, match="same examples"):
        compare_predictions([0, 1, 1], [0, 1, 1, 0], y)
    with pytest.raises(InputError, match="same test set"):
        compare_predictions([0, 1, 1], [0, 1, 1], y)
    with pytest.raises(InputError, match="integer"):
        as_predictions([0.5, 1.0])
    with pytest.raises(InputError, match="NaN"):
        as_predictions(np.array([[0.1, np.nan]]))
    with pytest.raises(InputError, match="at least 2 seeds"):
        architecture_test({"a": [y], "b": [y, y]}, y)
    with pytest.raises(InputError, match="at least 2 architectures"):
        architecture_test({"a": [y, y]}, y)
    with pytest.raises(InputError, match="at least 2 classifiers"):
        pairwise_comparisons({"a": y}, y)
    with pytest.raises(InputError, match="non-negative"):
        compare_predictions([0, -1, 1, 0], y, y)
