"""Nguyen et al. (2021) machinery: first-PC scores and their CKA, the per-example architecture test, and
the claim statistics on hand-made tables with a known answer (no test asserts the paper's findings)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from deepgeom.analysis.pc1 import pc1_cka, pc1_scores
from deepgeom.analysis.predictions import architecture_test
from deepgeom.claims import STATISTICS, Tables
from deepgeom.errors import InputError
from deepgeom.functional.cka import linear_cka


# ------------------------------------------------------------------------------------- first-PC scores
def test_pc1_scores_match_numpy_and_their_cka_is_linear_cka_of_rank_one_data():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 5))
    x = torch.randn(300, 6, dtype=torch.float64)
    net = net.double()
    s = pc1_scores(net, x, ["0", "2"], batch_size=64)
    assert list(s.columns) == ["0", "2"] and len(s) == 300
    with torch.no_grad():
        acts = {"0": net[0](x).numpy(), "2": net(x).numpy()}
    for name, A in acts.items():
        Ac = A - A.mean(0)
        v = np.linalg.eigh(Ac.T @ Ac)[1][:, -1]
        ref = Ac @ v
        # a principal direction has no sign: compare up to it; the stream hands over float32 activations
        # (relative rounding 6e-8), hence 1e-6 on scores of order 1
        assert min(np.abs(s[name] - ref).max(), np.abs(s[name] + ref).max()) < 1e-6
    C = pc1_cka(s)
    ref = linear_cka(s[["0"]].to_numpy(), s[["2"]].to_numpy())
    assert C.loc["0", "2"] == pytest.approx(float(ref), abs=1e-10)
    assert C.loc["0", "0"] == pytest.approx(1.0)
    assert C.loc["0", "2"] == pytest.approx(stats.pearsonr(s["0"], s["2"])[0] ** 2, abs=1e-12)
    with pytest.raises(InputError, match="without variance"):
        pc1_cka(pd.DataFrame({"a": np.ones(5), "b": np.arange(5.0)}))


# ------------------------------------------------------------------------------------- per-example test
def test_per_example_architecture_test_is_a_permutation_test_of_disagreement():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    # two "architectures": each has its own set of 60 examples it gets wrong; seeds flip 10 more at random
    base = {a: y.copy() for a in "AB"}
    base["A"][:60] = (y[:60] + 1) % 4
    base["B"][60:120] = (y[60:120] + 1) % 4
    preds = {a: [] for a in "AB"}
    for a in "AB":
        for _ in range(5):
            p = base[a].copy()
            flip = rng.choice(400, 10, replace=False)
            p[flip] = (p[flip] + 2) % 4
            preds[a].append(p)
    t = architecture_test(preds, y, measure="per_example")
    models = preds["A"] + preds["B"]
    D = np.array([[np.mean(p != q) for q in models] for p in models])
    groups = np.array([0] * 5 + [1] * 5)
    iu = np.triu_indices(10, 1)
    same = groups[iu[0]] == groups[iu[1]]
    assert t.between == pytest.approx(D[iu][~same].mean()) and t.within == pytest.approx(D[iu][same].mean())
    assert t.exact and t.n_permutations == 252
    assert t.min_p_value == pytest.approx(2 / 252)  # the two groups are interchangeable
    assert t.p_value == pytest.approx(2 / 252)  # planted: the true labelling is the most extreme
    # exchangeable models (one architecture split in two): no evidence
    same_arch = {"A": preds["A"][:3] + preds["B"][:2], "B": preds["A"][3:] + preds["B"][2:]}
    assert architecture_test(same_arch, y, measure="per_example").p_value > 0.05
    with pytest.raises(InputError, match="measure"):
        architecture_test(preds, y, measure="per_pixel")


# ------------------------------------------------------------------------------------- planted tables
def _write(tmp_path, name, tables):
    d = tmp_path / name / "tables"
    d.mkdir(parents=True)
    for k, df in tables.items():
        df.to_parquet(d / f"{k}.parquet")
    return tmp_path / name


def _run_tables(width, depth, seed, block, pc1_in=0.8, pc1_out=0.2, layers=8, removed_cka=0.5):
    """One run: hidden layers stem, b0..b{layers-2}; ``block`` = (start, stop) positions in the full
    layer list (input at 0), or None."""
    run = f"w{width}d{depth}s{seed}"
    names = ["input", "stem", *[f"b{k}" for k in range(layers - 1)], "output"]
    cols = {"run": run, "width": width, "depth": depth, "seed": seed}
    inb = [block is not None and block[0] <= i < block[1] for i in range(len(names))]
    pc1 = pd.DataFrame({**cols, "layer_index": range(len(names)), "layer": names,
                        "pc1_fraction": [pc1_in if b else pc1_out for b in inb], "in_block": inb})
    rows = []
    for removed in (False, True):
        for i, j in itertools.product(range(len(names)), repeat=2):
            both = inb[i] and inb[j]
            c = 1.0 if i == j else ((removed_cka if removed else 0.97) if both else 0.6)
            rows.append({**cols, "i": i, "j": j, "layer_a": names[i], "layer_b": names[j], "cka": c,
                         "pc1_removed": removed})
    blocks = pd.DataFrame([{**cols, "start": block[0], "stop": block[1], "size": block[1] - block[0],
                            "threshold": 0.9}] if block else [],
                          columns=[*cols, "start", "stop", "size", "threshold"])
    proj = pd.DataFrame([{**cols, "layer_a": a, "layer_b": b, "cka": 0.95 if (inb[i] and inb[j]) else 0.1}
                         for i, a in enumerate(names) for j, b in enumerate(names)])
    return pc1, pd.DataFrame(rows), blocks, proj


def _study(tmp_path, name, runs):
    parts = [_run_tables(*r[:3], **(r[3] if len(r) > 3 else {})) for r in runs]
    return _write(tmp_path, name, {"cka_pc1": pd.concat([p[0] for p in parts]),
                                   "cka_pairs": pd.concat([p[1] for p in parts]),
                                   "cka_blocks": pd.concat([p[2] for p in parts]),
                                   "cka_pc1_projection": pd.concat([p[3] for p in parts])})


def test_block_statistics_on_a_planted_grid(tmp_path):
    # width 4: no block; width 16: a 3-layer block; width 64: a 6-layer block — for depths 2 and 8, 3 seeds
    runs = []
    for w, blk in ((4, None), (16, (3, 6)), (64, (2, 8))):
        for dp in (2, 8):
            for s in range(3):
                runs.append((w, dp, s, {"block": blk}))
    t = Tables({"grid": _study(tmp_path, "grid", runs)})
    small = STATISTICS["block_share"](t, study="grid", configs=[{"width": 4}])
    assert small.value == 0 and small.n == 6 and small.ci_high == pytest.approx(stats.beta.ppf(0.975, 1, 6))
    large = STATISTICS["block_share"](t, study="grid", configs=[{"width": 64}])
    assert large.value == 1 and large.ci_low == pytest.approx(stats.beta.ppf(0.025, 6, 1))
    slope = STATISTICS["block_coverage_slope"](t, study="grid", axis="width")
    # coverage over the 8 hidden layers: 0, 3/8, 6/8 at log2 widths 2, 4, 6 → slope 6/8/4 per doubling
    assert slope.value == pytest.approx(0.1875) and slope.n == 6 and slope.ci_low == pytest.approx(0.1875)
    flat = STATISTICS["block_coverage_slope"](t, study="grid", axis="depth")
    assert flat.value == pytest.approx(0.0)
    pc = STATISTICS["pc1_block_contrast"](t, study="grid")
    assert pc.value == pytest.approx(0.6) and pc.n == 12
    gone = STATISTICS["block_vanish_share"](t, study="grid")
    assert gone.value == 1 and gone.n == 12
    proj = STATISTICS["pc1_projection_block_cka"](t, study="grid")
    assert proj.value == pytest.approx(0.95)


def test_a_block_that_survives_pc1_removal_does_not_vanish(tmp_path):
    runs = [(16, 8, s, {"block": (2, 7), "removed_cka": 0.96}) for s in range(3)]
    t = Tables({"s": _study(tmp_path, "s", runs)})
    est = STATISTICS["block_vanish_share"](t, study="s")
    assert est.value == 0 and est.n == 3


def test_statistics_without_blocks_are_blocked_not_passed(tmp_path):
    t = Tables({"s": _study(tmp_path, "s", [(4, 2, s, {"block": None}) for s in range(3)])})
    for name in ("pc1_block_contrast", "block_vanish_share", "pc1_projection_block_cka"):
        assert STATISTICS[name](t, study="s").blocked


def test_coverage_contrast_matches_architecture_and_seed(tmp_path):
    small = _study(tmp_path, "small", [(16, 8, s, {"block": (2, 7)}) for s in range(3)])
    big = _study(tmp_path, "big", [(16, 8, s, {"block": (2, 4) if s else None}) for s in range(3)])
    t = Tables({"small": small, "big": big})
    est = STATISTICS["block_coverage_contrast"](t, a={"study": "small"}, b={"study": "big"})
    assert est.value == pytest.approx(np.mean([5 / 8, 3 / 8, 3 / 8])) and est.n == 3


def test_seed_and_architecture_contrasts_read_the_cross_model_heatmaps(tmp_path):
    runs = [(16, 8, s, {"block": (3, 6)}) for s in range(3)]
    path = _study(tmp_path, "s", runs)
    names = ["input", "stem", *[f"b{k}" for k in range(7)], "output"]
    rows = []
    for a, b in itertools.combinations(range(3), 2):
        for i, j in itertools.product(range(len(names)), repeat=2):
            c = (0.5 if 3 <= i < 6 else 0.9) if i == j else 0.3
            rows.append({"run_a": f"w16d8s{a}", "run_b": f"w16d8s{b}", "i": i, "j": j, "layer_a": names[i],
                         "layer_b": names[j], "cka": c})
    pd.DataFrame(rows).to_parquet(path / "tables" / "cka_across.parquet")
    t = Tables({"s": path})
    est = STATISTICS["seed_block_contrast"](t, study="s")
    assert est.value == pytest.approx(0.4) and est.n == 3
    arch = STATISTICS["architecture_block_contrast"](t, study="s")
    assert arch.value == pytest.approx(0.4)


def test_architecture_test_p_reads_the_exact_test(tmp_path):
    at = pd.DataFrame([{"measure": m, "p_value": p, "min_p_value": 1 / 126, "exact": True, "n_permutations": 252,
                        "between": 0.2, "within": 0.1, "architectures": "A | B", "seeds": "5 | 5",
                        "n_significant": 3, "expected_significant": 0.5, "binom_p": 0.01}
                       for m, p in (("per_example", 1 / 126), ("per_class", 0.3))])
    t = Tables({"s": _write(tmp_path, "s", {"architecture_test": at})})
    e = STATISTICS["architecture_test_p"](t, study="s", measure="per_example")
    assert e.value == e.ci_low == e.ci_high == pytest.approx(1 / 126) and e.n == 10
    assert "ratio 2.00" in e.note
    assert STATISTICS["architecture_test_p"](t, study="s", measure="per_class").value == pytest.approx(0.3)


def test_cka_only_rule_reads_the_runs_of_high_cka(tmp_path):
    path = _study(tmp_path, "s", [(16, 8, s, {"block": None}) for s in range(3)])
    pc1 = pd.read_parquet(path / "tables" / "cka_pc1.parquet")
    pc1["in_cka_run"] = pc1["layer_index"].between(2, 5)  # 4 of the 8 hidden layers
    pc1.to_parquet(path / "tables" / "cka_pc1.parquet")
    t = Tables({"s": path})
    assert STATISTICS["block_share"](t, study="s").value == 0
    assert STATISTICS["block_share"](t, study="s", rule="cka_only").value == 1
    with pytest.raises(InputError, match="rule"):
        STATISTICS["block_share"](t, study="s", rule="eye")


def test_block_coverage_is_the_mean_share_over_the_selected_runs(tmp_path):
    runs = [(16, 3, s, {"block": None}) for s in range(3)] + [(64, 12, s, {"block": (2, 2 + k)})
                                                             for s, k in zip(range(3), (3, 4, 5), strict=True)]
    t = Tables({"s": _study(tmp_path, "s", runs)})
    small = STATISTICS["block_coverage"](t, study="s", configs=[{"width": 16, "depth": 3}])
    assert small.value == 0 and small.ci_high == 0 and small.n == 3
    large = STATISTICS["block_coverage"](t, study="s", configs=[{"width": 64, "depth": 12}])
    assert large.value == pytest.approx(np.mean([3 / 8, 4 / 8, 5 / 8])) and large.n == 3
