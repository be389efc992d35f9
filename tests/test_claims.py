"""Claims: the verdict rule, the intervals (against scipy's own closed forms), each statistic on tables
built by hand with a known answer, and config validation. No test here asserts that a paper's claim
holds: the numbers are planted, so the expected verdict follows from the rule alone."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from deepgeom.claims import (
    CLAIM_COLUMNS,
    Estimate,
    Tables,
    evaluate_claims,
    mean_interval,
    parse_claims,
    pearson_interval,
    verdict,
)
from deepgeom.claims.statistics import flatness, hunch
from deepgeom.errors import InputError, UnknownNameError
from deepgeom.studies import load_config


def _claim(op=">", thr=1.0, statistic="hunchback", params=None):
    return parse_claims([{"id": "X", "paper": "P", "sentence": "s", "statistic": statistic, "op": op,
                          "threshold": thr, "describe": "d", "params": params or {}}])[0]


# ------------------------------------------------------------------------------------- verdict rule
@pytest.mark.parametrize("op,lo,hi,expected", [
    (">", 1.1, 2.0, "holds"), (">", 0.2, 0.9, "fails"), (">", 0.9, 1.1, "inconclusive"),
    ("<", 0.2, 0.9, "holds"), ("<", 1.1, 2.0, "fails"), ("<", 0.9, 1.1, "inconclusive"),
    (">", math.nan, math.nan, "inconclusive"),
    # an interval that is exactly the threshold holds no value satisfying the claim
    (">", 1.0, 1.0, "fails"), ("<", 1.0, 1.0, "fails"), (">", 0.5, 1.0, "fails"), ("<", 1.0, 1.5, "fails"),
])
def test_verdict_is_read_off_the_interval(op, lo, hi, expected):
    est = Estimate((lo + hi) / 2 if math.isfinite(lo) else 5.0, lo, hi, 3)
    assert verdict(_claim(op, 1.0), est) == expected


def test_a_failed_precondition_is_inconclusive_whatever_the_numbers():
    assert verdict(_claim(">", 0.0), Estimate(5, 4, 6, 3, blocked="did not fit")) == "inconclusive"


@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12), st.floats(-1e3, 1e3))
@settings(max_examples=60, deadline=None)
def test_a_point_estimate_beyond_the_threshold_never_holds_on_its_own(xs, thr):
    m, lo, hi, n = mean_interval(xs)
    v = verdict(_claim(">", thr), Estimate(m, lo, hi, n))
    if v == "holds":
        assert lo > thr  # the whole interval, not the mean
    if lo <= thr < hi:
        assert v == "inconclusive"


# ------------------------------------------------------------------------------------- intervals
def test_mean_interval_is_the_student_t_interval():
    x = np.array([1.0, 2.0, 4.0])
    m, lo, hi, n = mean_interval(x)
    ref = stats.t.interval(0.95, 2, loc=x.mean(), scale=stats.sem(x))
    assert n == 3 and m == pytest.approx(7 / 3)
    assert (lo, hi) == pytest.approx(ref, rel=1e-12)


def test_mean_interval_needs_two_samples_and_ignores_nan():
    assert math.isnan(mean_interval([1.0])[1])
    assert mean_interval([1.0, np.nan, 3.0])[3] == 2


def test_pearson_interval_matches_fisher_z_by_hand():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(12)
    y = -0.8 * x + 0.5 * rng.standard_normal(12)
    r, lo, hi, n = pearson_interval(x, y)
    assert r == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    z, se = np.arctanh(r), 1 / np.sqrt(9)
    assert (lo, hi) == pytest.approx((np.tanh(z - 1.959963984540054 * se), np.tanh(z + 1.959963984540054 * se)))
    assert n == 12 and lo < r < hi < 0


# ------------------------------------------------------------------------------------- statistics
def _profile(run, ids, epoch, seed, pca=None, model="vgg", width=16, shuffle=0.0):
    names = ["input", *[f"h{i}" for i in range(1, len(ids) - 1)], "output"]
    return pd.DataFrame({"run": run, "model": model, "width": width, "depth": 4, "seed": seed,
                         "shuffle_fraction": shuffle, "epoch": epoch, "layer": names,
                         "layer_index": np.arange(len(ids)), "relative_depth": np.linspace(0, 1, len(ids)),
                         "D": 1000, "twonn_id": ids, "pca_id": pca if pca is not None else [5 * v for v in ids]})


def _write(tmp_path, name, tables: dict[str, pd.DataFrame]):
    d = tmp_path / name / "tables"
    d.mkdir(parents=True)
    for k, df in tables.items():
        df.to_parquet(d / f"{k}.parquet")
    return tmp_path / name


def test_hunch_and_flatness_on_hand_made_profiles():
    d = _profile("r", [10, 20, 30, 12, 8], 5, 0)
    assert hunch(d) == pytest.approx(min(30 / 10, 30 / 12))  # output excluded: last hidden is 12
    flat = _profile("r", [10, 11, 9, 10, 3], 0, 0)
    assert flatness(flat) == pytest.approx(10 / 9)


def test_hunchback_statistics_on_planted_profiles(tmp_path):
    trained = [[10, 25, 30, 12, 9], [11, 27, 33, 13, 9], [10, 22, 29, 11, 9]]
    untrained = [[10, 11, 10, 10, 9], [11, 11, 12, 11, 9], [10, 10, 11, 10, 9]]
    frames = [_profile(f"r{s}", t, 15, s) for s, t in enumerate(trained)]
    frames += [_profile(f"r{s}", u, 0, s) for s, u in enumerate(untrained)]
    tables = Tables({"profiles": _write(tmp_path, "p", {"id_profiles": pd.concat(frames)})})
    claims = parse_claims([
        {"id": "H", "paper": "P", "sentence": "s", "statistic": "hunchback", "op": ">", "threshold": 1.2,
         "describe": "d", "params": {"study": "profiles"}},
        {"id": "F", "paper": "P", "sentence": "s", "statistic": "profile_flatness", "op": "<", "threshold": 1.5,
         "describe": "d", "params": {"study": "profiles", "epoch": 0}},
        {"id": "C", "paper": "P", "sentence": "s", "statistic": "hunchback_contrast", "op": ">", "threshold": 0.2,
         "describe": "d", "params": {"study": "profiles"}},
        {"id": "R", "paper": "P", "sentence": "s", "statistic": "pcid_over_twonn", "op": ">", "threshold": 3,
         "describe": "d", "params": {"study": "profiles"}},
    ])
    out = evaluate_claims(claims, tables)
    assert list(out.columns[: len(CLAIM_COLUMNS)]) == list(CLAIM_COLUMNS)
    by = out.set_index("claim_id")
    expect_h = np.mean([min(max(t[1:-1]) / t[0], max(t[1:-1]) / t[-2]) for t in trained])
    assert by.loc["H", "measured"] == pytest.approx(expect_h)
    assert by.loc["H", "verdict"] == "holds" and by.loc["F", "verdict"] == "holds"
    assert by.loc["C", "verdict"] == "holds" and by.loc["R", "measured"] == pytest.approx(5.0)
    assert (by["n"] == 3).all()


def test_a_flat_trained_profile_fails_the_hunchback(tmp_path):
    frames = [_profile(f"r{s}", [10, 10 + s * 0.1, 10, 10, 9], 15, s) for s in range(3)]
    tables = Tables({"s": _write(tmp_path, "p", {"id_profiles": pd.concat(frames)})})
    out = evaluate_claims([_claim(">", 1.2, "hunchback")], tables)
    assert out["verdict"].iloc[0] == "fails"


def _architectures(tmp_path, unfit=None):
    """Five VGG widths × 2 seeds whose last-hidden ID rises as test accuracy falls (r = −1 over
    architectures); ``unfit`` = (width, seed) of a run that ends at train acc 0.9, the others at 1."""
    frames, hist = [], []
    for i, w in enumerate([4, 8, 16, 32, 64]):
        for s in (0, 1):
            run = f"w{w}s{s}"
            frames.append(_profile(run, [10, 30, 20, 5 + i + 0.1 * s, 9], 10, s, width=w))
            hist.append({"run": run, "model": "vgg", "width": w, "depth": 4, "seed": s, "shuffle_fraction": 0.0,
                         "epoch": 10, "train_acc": 0.9 if (w, s) == unfit else 1.0, "test_acc": 0.9 - 0.01 * i})
    return Tables({"s": _write(tmp_path, "p", {"id_profiles": pd.concat(frames), "history": pd.DataFrame(hist)})})


def test_id_accuracy_correlation_is_per_architecture_and_blocked_below_min_models(tmp_path):
    tables = _architectures(tmp_path)
    c = _claim("<", 0, "id_accuracy_correlation", {"min_models": 5})
    row = evaluate_claims([c], tables).iloc[0]
    assert row["n"] == 5 and row["measured"] == pytest.approx(-1.0) and row["verdict"] == "holds"
    row = evaluate_claims([_claim("<", 0, "id_accuracy_correlation", {"min_models": 10})], tables).iloc[0]
    assert row["verdict"] == "inconclusive" and "only 5 architectures" in row["note"]


def test_id_accuracy_correlation_is_inconclusive_when_a_run_did_not_fit(tmp_path):
    """With min_train_acc, one under-fit run (of one architecture) blocks the verdict and is named; the
    value is still computed and reported."""
    tables = _architectures(tmp_path, unfit=(8, 1))
    row = evaluate_claims([_claim("<", 0, "id_accuracy_correlation",
                                  {"min_models": 5, "min_train_acc": 0.99})], tables).iloc[0]
    assert row["measured"] == pytest.approx(-1.0) and row["verdict"] == "inconclusive"
    assert "did not fit" in row["note"] and "vgg w8 d4 0.900" in row["note"]
    row = evaluate_claims([_claim("<", 0, "id_accuracy_correlation",
                                  {"min_models": 5, "min_train_acc": 0.9})], tables).iloc[0]
    assert row["verdict"] == "holds" and "final train acc 0.900–1.000" in row["note"]


def test_shuffle_slope_is_inconclusive_when_a_net_did_not_fit(tmp_path):
    frames, hist = [], []
    for s in range(3):
        for f in (0.0, 0.5, 1.0):
            run = f"s{s}f{f}"
            frames.append(_profile(run, [10, 30, 20, 8 + 10 * f + 0.2 * s, 9], 40, s, shuffle=f))
            hist.append({"run": run, "seed": s, "shuffle_fraction": f, "epoch": 40, "test_acc": 0.5,
                         "train_acc": 0.6 if (f == 1.0 and s == 2) else 1.0})
    tables = Tables({"s": _write(tmp_path, "p", {"id_profiles": pd.concat(frames), "history": pd.DataFrame(hist)})})
    row = evaluate_claims([_claim(">", 0, "shuffle_id_slope")], tables).iloc[0]
    assert row["measured"] == pytest.approx(10.0)
    assert row["verdict"] == "inconclusive" and "did not fit" in row["note"]


def test_a_missing_table_is_inconclusive_with_the_reason_never_holds(tmp_path):
    tables = Tables({"s": _write(tmp_path, "p", {})})
    row = evaluate_claims([_claim(">", 0, "decimation_deviation")], tables).iloc[0]
    assert row["verdict"] == "inconclusive" and "could not compute" in row["note"]


# ------------------------------------------------------------------------------------- validation
def test_parse_claims_rejects_bad_specs():
    base = {"id": "X", "paper": "P", "sentence": "s", "statistic": "hunchback", "op": ">", "threshold": 1,
            "describe": "d"}
    with pytest.raises(UnknownNameError):
        parse_claims([{**base, "statistic": "nope"}])
    with pytest.raises(InputError, match="op"):
        parse_claims([{**base, "op": ">="}])
    with pytest.raises(InputError, match="twice"):
        parse_claims([base, base])
    with pytest.raises(InputError, match="needs 'threshold'"):
        parse_claims([{k: v for k, v in base.items() if k != "threshold"}])
    with pytest.raises(UnknownNameError):
        parse_claims([{**base, "verdict": "holds"}])  # a verdict is computed, never written in


def test_study_configs_carry_validated_claims():
    cfg = load_config({"sweep": {"dataset": "digits", "model": "mlp"},
                       "claims": [{"id": "X", "paper": "P", "sentence": "s", "statistic": "hunchback", "op": ">",
                                   "threshold": 1, "describe": "d"}]})
    assert cfg.claims[0].criterion.startswith("d; holds if its 95% interval lies entirely above 1")
