"""The Nam et al. (2024) statistics on hand-made ``spectra`` tables with known answers, and the
Clopper–Pearson interval against scipy's binomial test. No test asserts that a paper's claim holds: the
numbers are planted, so the expected value and verdict follow from the definitions alone."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from deepgeom.claims import Tables, evaluate_claims, mean_interval, parse_claims
from deepgeom.claims.statistics import proportion_interval


def _write(tmp_path, name, tables):
    d = tmp_path / name / "tables"
    d.mkdir(parents=True)
    for k, df in tables.items():
        df.to_parquet(d / f"{k}.parquet")
    return tmp_path / name


def _run(run, seed, epochs, dominant, regime, rule="gap", accuracy=None, test_acc=None, **cols):
    """One run's rows of a spectra table (C = 10, uncentred)."""
    n = len(epochs)
    acc = accuracy if accuracy is not None else [0.1] + [1.0] * (n - 1)
    df = pd.DataFrame({"run": run, "seed": seed, "dataset": "digits", "model": "mlp", "epoch": epochs,
                       "dominant": dominant, "regime": regime, "rule": rule if isinstance(rule, list) else [rule] * n,
                       "n_classes": 10, "centered": False, "accuracy": acc,
                       "test_acc": test_acc if test_acc is not None else acc})
    for k, v in cols.items():
        df[k] = v
    return df


def _claim(statistic, params, op=">", thr=0.5):
    return parse_claims([{"id": "X", "paper": "P", "sentence": "s", "statistic": statistic, "op": op,
                          "threshold": thr, "describe": "d", "params": params}])[0]


def _eval(tables, statistic, params, op=">", thr=0.5):
    return evaluate_claims([_claim(statistic, params, op, thr)], tables).iloc[0]


@given(st.integers(0, 40), st.integers(1, 40))
@settings(max_examples=50, deadline=None)
def test_proportion_interval_is_clopper_pearson(k, n):
    k = min(k, n)
    p, lo, hi, m = proportion_interval(k, n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert (p, m) == (k / n, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_regime_share_counts_final_mf_runs_across_studies(tmp_path):
    ep = [0, 5, 10]
    a = pd.concat([_run(f"a{s}", s, ep, [50, 12, 10], ["EF", "EF", "MF"]) for s in range(6)])
    b = pd.concat([_run(f"b{s}", s, ep, [50, 30, 28], ["EF", "EF", "EF"], rule="effective_dim") for s in range(2)])
    t = Tables({"a": _write(tmp_path, "a", {"spectra": a}), "b": _write(tmp_path, "b", {"spectra": b})})
    r = _eval(t, "regime_share", {"study": "a"})
    assert (r.measured, r.n, r.verdict) == (1.0, 6, "holds")  # 6 of 6: exact lower end 0.541 > 0.5
    assert r.ci_low == pytest.approx(0.025 ** (1 / 6), rel=1e-9)  # Clopper–Pearson at k = n: (α/2)^(1/n)
    r = _eval(t, "regime_share", {"study": ["a", "b"]})
    assert (r.measured, r.n) == (0.75, 8) and r.verdict == "inconclusive"
    # untrained (epoch 0): no run MF, and the spectral part alone also rejects count 50
    r = _eval(t, "regime_share", {"study": ["a", "b"], "epoch": 0, "spectral_only": True}, "<", 0.4)
    assert (r.measured, r.verdict) == (0.0, "holds")  # 0 of 8: upper end 1 − 0.025^(1/8) = 0.369


def test_spectral_only_uses_the_gap_and_the_band_not_the_accuracy(tmp_path):
    # count 10 from a gap at chance accuracy: the full call says EF, the spectral part alone says MF;
    # count 10 from the effective dimension: neither; count 13 from a gap: outside the band C ± 2
    runs = [_run("g", 0, [0], [10], ["EF"], "gap", accuracy=[0.1]),
            _run("e", 1, [0], [10], ["EF"], "effective_dim", accuracy=[0.1]),
            _run("o", 2, [0], [13], ["EF"], "gap", accuracy=[0.1])]
    t = Tables({"s": _write(tmp_path, "s", {"spectra": pd.concat(runs)})})
    assert _eval(t, "regime_share", {"epoch": 0, "spectral_only": True}).measured == pytest.approx(1 / 3)
    assert _eval(t, "regime_share", {"epoch": 0}).measured == 0.0


def test_the_same_network_in_two_studies_counts_once(tmp_path):
    # an untrained net analysed in a CE and an MSE study has a bit-identical spectrum: one unit, not two
    fp = {"top_eigenvalue": 3.5, "effective_dim": 20.1, "gap_decades": 0.1, "n_samples": 100}
    ce = pd.concat([_run(f"c{s}", s, [0], [30 + s], ["EF"], "effective_dim", accuracy=[0.1],
                         **{**fp, "top_eigenvalue": 3.5 + s}) for s in range(3)])
    mse = ce.assign(run=lambda d: "m" + d["run"].str[1:])
    other = _run("o", 9, [0], [30], ["EF"], "effective_dim", accuracy=[0.1], **{**fp, "top_eigenvalue": 7.0})
    t = Tables({"ce": _write(tmp_path, "ce", {"spectra": ce}), "mse": _write(tmp_path, "mse", {"spectra": mse}),
                "o": _write(tmp_path, "o", {"spectra": other})})
    r = _eval(t, "regime_share", {"study": ["ce", "mse", "o"], "epoch": 0, "spectral_only": True}, "<", 0.2)
    assert r.n == 4 and "3 rows with a spectrum identical" in r.note
    assert r.ci_high == pytest.approx(1 - 0.025 ** (1 / 4), rel=1e-9)


def test_count_deviation_and_blocking(tmp_path):
    ep = [0, 10]
    runs = [_run("r0", 0, ep, [40, 10], ["EF", "MF"]), _run("r1", 1, ep, [40, 11], ["EF", "MF"]),
            _run("r2", 2, ep, [40, 7], ["EF", "EF"], accuracy=[0.1, 0.9])]
    t = Tables({"s": _write(tmp_path, "s", {"spectra": pd.concat(runs)})})
    r = _eval(t, "count_deviation", {}, "<", 2.5)
    m, lo, hi, n = mean_interval([0, 1, 3])
    assert (r.measured, r.ci_low, r.ci_high, r.n) == pytest.approx((m, lo, hi, n))
    assert _eval(t, "count_deviation", {"expected": 9}, "<", 2.5).measured == pytest.approx((1 + 2 + 2) / 3)
    r = _eval(t, "count_deviation", {"min_train_acc": 0.95}, "<", 2.5)
    assert r.verdict == "inconclusive" and "below training accuracy" in r.note


def test_mf_entry_epoch_is_the_start_of_the_final_mf_stretch(tmp_path):
    ep = [0, 2, 5, 10, 20]
    runs = [_run("a", 0, ep, [40, 10, 30, 10, 10], ["EF", "MF", "EF", "MF", "MF"]),  # enters for good at 10
            _run("b", 1, ep, [40, 10, 10, 10, 10], ["EF", "MF", "MF", "MF", "MF"]),  # at 2
            _run("c", 2, ep, [40, 10, 10, 10, 30], ["EF", "MF", "MF", "MF", "EF"])]  # not MF at the end
    t = Tables({"s": _write(tmp_path, "s", {"spectra": pd.concat(runs)})})
    r = _eval(t, "mf_entry_epoch", {}, "<", 0.5)
    assert r.measured == pytest.approx((10 / 20 + 2 / 20 + 1.0) / 3)
    assert "entry epochs 10, 2, never" in r.note


def test_accuracy_gap_by_regime_is_paired_by_seed_and_blocked_without_both_regimes(tmp_path):
    def sweep(lr, regimes, accs):
        return pd.concat([_run(f"{lr}-{s}", s, [0, 5], [40, 10], ["EF", reg], test_acc=[0.1, acc])
                          for s, (reg, acc) in enumerate(zip(regimes, accs, strict=True))])
    lo = sweep("lo", ["EF", "EF", "EF"], [0.70, 0.72, 0.71])
    hi = sweep("hi", ["MF", "MF", "EF"], [0.80, 0.84, 0.75])
    t = Tables({"lo": _write(tmp_path, "lo", {"spectra": lo}), "hi": _write(tmp_path, "hi", {"spectra": hi})})
    r = _eval(t, "accuracy_gap_by_regime", {"study": ["lo", "hi"]}, ">", 0.0)
    # seeds 0 and 1 have both regimes (0.80 − 0.70, 0.84 − 0.72); seed 2 has no MF run
    m, lo_, hi_, n = mean_interval([0.10, 0.12])
    assert (r.measured, r.ci_low, r.ci_high, r.n) == pytest.approx((m, lo_, hi_, n))
    assert "seed 2: best test_acc 0.750 in hi (EF)" in r.note
    t1 = Tables({"lo": t.studies["lo"]})
    assert "only 0 seeds" in _eval(t1, "accuracy_gap_by_regime", {"study": ["lo"]}).note


def test_ratios_final_values_and_paired_contrasts(tmp_path):
    ep = [0, 10, 30]
    runs = [_run(f"r{s}", s, ep, [40, 12, 10], ["EF", "EF", "MF"], nc1=[2.0, 1.0, 0.1 * (s + 1)],
                 kernel_class_distance=[0.6, 0.3, 0.1], richness=[0.5, 0.4, 0.2 + 0.1 * s]) for s in range(3)]
    lazy = [_run(f"l{s}", s, ep, [40, 40, 40], ["EF"] * 3, richness=[0.5, 0.5, 0.6 + 0.1 * s]) for s in range(3)]
    t = Tables({"a": _write(tmp_path, "a", {"spectra": pd.concat(runs)}),
                "z": _write(tmp_path, "z", {"spectra": pd.concat(lazy)})})
    r = _eval(t, "column_ratio", {"study": "a", "column": "nc1"}, "<", 0.5)
    assert r.measured == pytest.approx(np.mean([0.05, 0.1, 0.15]))
    blocked = _eval(t, "column_ratio", {"study": "a", "column": "nc1", "min_train_acc": 1.01}, "<", 0.5)
    assert blocked.verdict == "inconclusive" and "terminal phase not reached" in blocked.note
    r = _eval(t, "final_value", {"study": "a", "column": "kernel_class_distance"}, "<", 0.2)
    assert (r.measured, r.verdict) == (pytest.approx(0.1), "holds")  # identical runs: zero-width interval
    r = _eval(t, "paired_contrast", {"a": {"study": "z"}, "b": {"study": "a"}, "column": "richness"}, ">", 0.0)
    assert r.measured == pytest.approx(0.4) and r.n == 3  # 0.6 − 0.2, 0.7 − 0.3, 0.8 − 0.4 per seed
    assert math.isfinite(r.ci_low)
