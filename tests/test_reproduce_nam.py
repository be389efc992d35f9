"""`deepgeom reproduce nam2024 --quick`: the machinery end to end on tiny settings (digits MLPs and CNNs,
mnist1d, shuffled Fashion-MNIST, a 2-point learning-rate sweep, the regression step). These tests check
the outputs' shape, the regime rule's guarantees and resume, never that a verdict is `holds`: quick mode
is not a reproduction."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from deepgeom.cli import main
from deepgeom.reproduce import load_spec

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro_nam")
    assert main(["reproduce", "nam2024", "--out", str(out), "--quick", "--quiet"]) == 0
    return out


def test_every_registered_claim_gets_a_verdict_read_off_its_interval(quick_run):
    claims = pd.read_csv(quick_run / "nam2024" / "claims.csv")
    spec = load_spec("nam2024")
    assert list(claims["claim_id"]) == [c.id for c in spec["claims_parsed"]]
    assert set(claims["verdict"]) <= {"holds", "fails", "inconclusive"}
    for r in claims.itertuples():
        c = next(c for c in spec["claims_parsed"] if c.id == r.claim_id)
        if r.verdict == "holds":
            assert (r.ci_low > c.threshold) if c.op == ">" else (r.ci_high < c.threshold)
        if r.verdict == "fails":
            assert (r.ci_high <= c.threshold) if c.op == ">" else (r.ci_low >= c.threshold)
    # every statistic ran on the quick tables (none fell back to 'could not compute')
    assert not claims["note"].str.startswith("could not compute").any(), claims["note"].tolist()


def test_spectra_tables_carry_the_kernel_picture_columns(quick_run):
    df = pd.read_parquet(quick_run / "nam2024" / "mf_ce" / "tables" / "spectra.parquet")
    for col in ("dominant", "rule", "regime", "accuracy", "nc1", "nc2", "kernel_class_distance", "richness",
                "dominant_sub_min", "dominant_sub_max", "mf_sub_fraction"):
        assert col in df.columns
    assert (df["dominant_sub_min"] <= df["dominant_sub_max"]).all()
    assert df["kernel_class_distance"].between(0, 1).all()
    # the regime rule's guarantee: never MF for an untrained net or one at chance accuracy
    assert (df.loc[df["epoch"] == 0, "regime"] == "EF").all()
    assert (df.loc[df["accuracy"] < 0.55, "regime"] == "EF").all()


def test_regression_step_and_figures(quick_run):
    reg = pd.read_parquet(quick_run / "nam2024" / "regression" / "tables" / "regression.parquet")
    assert sorted(reg["seed"].unique()) == [0, 1] and sorted(reg["epoch"].unique()) == [0, 1, 3]
    assert reg["pi_targets_top_k"].between(0, 1).all() and set(reg["regime"]) <= {"MF", "EF"}
    figs = {p.stem for p in (quick_run / "nam2024" / "figures").glob("*.png")}
    assert {"nam_counts", "nam_collapse", "nam_ef", "nam_sweep", "nam_richness", "nam_regression"} <= figs
    assert json.loads((quick_run / "nam2024" / "figures" / "errors.json").read_text()) == {}
    assert "<!-- BEGIN nam2024 -->" in (quick_run / "REPRODUCTION.md").read_text()


def test_a_rerun_resumes_without_recomputing(quick_run):
    before = (quick_run / "nam2024" / "regression" / "tables" / "regression.parquet").stat().st_mtime_ns
    meta = json.loads((quick_run / "nam2024" / "reproduction.json").read_text())
    assert main(["reproduce", "nam2024", "--out", str(quick_run), "--quick", "--quiet"]) == 0
    again = json.loads((quick_run / "nam2024" / "mf_ce" / "study.json").read_text())
    assert {u["status"] for u in again["units"]} == {"skipped"}
    assert (quick_run / "nam2024" / "regression" / "tables" / "regression.parquet").stat().st_mtime_ns == before
    # a pure resume keeps the timing of the run that computed the results, and records itself beside it
    after = json.loads((quick_run / "nam2024" / "reproduction.json").read_text())
    assert (after["started"], after["wall_seconds"]) == (meta["started"], meta["wall_seconds"])
    assert "resumed" in after
