"""The HTML report: every section present with its figures (PNG + SVG files that exist), tables of numbers,
"not run" for analyses a study did not include, a broken section never hides the others; CLI wiring."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from deepgeom.cli import main
from deepgeom.errors import InputError
from deepgeom.report import build_report
from deepgeom.studies import run_study

TINY = {
    "name": "tiny-report",
    "description": "two small MLPs on digits, true and shuffled labels",
    "sweep": {"dataset": "digits", "model": "mlp", "width": 12, "depth": 2, "shuffle_fraction": [0.0, 1.0]},
    "train": {"epochs": 2, "lr": 0.01, "batch_size": 64},
    "analyses": {
        "id_profile": {"n_points": 150},
        "id_during_training": {"n_points": 150},
        "cka_matrix": {"n_points": 150, "batch_size": 50},
        "cka_across": {"n_points": 150, "batch_size": 50, "include_shuffled": True},
        "spectrum_through_training": {"n_points": 150},
        "predictions": {"include_shuffled": True},
    },
    "claims": [
        {"id": "C1", "paper": "Papyan et al. 2020", "sentence": "NC1 falls during training.", "statistic": "nc1_ratio",
         "params": {"where": {"shuffle_fraction": 0.0}}, "op": "<", "threshold": 1, "describe": "NC1 last / first"},
        {"id": "C2", "paper": "Ansuini et al. 2019", "sentence": "Hunchback made by training.",
         "statistic": "hunchback_contrast", "op": ">", "threshold": 0.2, "describe": "trained minus untrained"},
    ],
}

SECTION_IDS = ["overview", "findings", "id-profile", "id-accuracy", "id-training", "cka", "cka-across", "spectrum", "collapse",
               "predictions", "swept", "config"]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.sections, self.stack = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "section":
            self.sections.append(a["id"])
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The tiny real study, run once, with its report built once (figures take most of the time)."""
    out = tmp_path_factory.mktemp("study")
    run_study(TINY, out, progress=False)
    build_report(out, svg=True)
    return out


def _fake_trainer(run, out_dir):
    (out_dir / "w.txt").write_text("w")
    return pd.DataFrame({"epoch": [0, 1], "train_loss": [2.3, 2.0], "train_acc": [0.1, 0.4],
                         "test_loss": [2.3, 2.1], "test_acc": [0.1, 0.35]}), {0: "w.txt"}


@pytest.fixture
def bare(tmp_path) -> Path:
    """A study with no analyses (and a fake trainer): only the overview and config can be drawn."""
    run_study({"name": "bare", "sweep": {"dataset": "digits", "model": "mlp"}, "train": {"epochs": 1}},
              tmp_path, progress=False, trainer=_fake_trainer)
    return tmp_path


def test_report_has_every_section_with_existing_figures(study):
    index = study / "report" / "index.html"
    text = index.read_text()
    page = _Page()
    page.feed(text)
    assert page.stack == []  # every tag closed
    assert page.sections == SECTION_IDS
    assert "Not run" not in text, [line for line in text.splitlines() if "Not run" in line]
    assert len(page.imgs) >= 14
    for src in page.imgs:
        png = index.parent / src
        assert png.suffix == ".png" and png.stat().st_size > 1000
        assert png.with_suffix(".svg").is_file()
    for href in page.links:
        if href.endswith(".svg"):
            assert (index.parent / href).is_file()
    # the figures the task names are there
    names = {Path(s).stem for s in page.imgs}
    assert {"learning_curves", "id_vs_accuracy", "id_during_training", "collapse"} <= names
    assert any(n.startswith("id_profile_") for n in names)
    assert any(n.startswith("cka_across_") for n in names)
    assert sum(n.startswith("spectrum_dominant_") for n in names) == 2
    assert sum(n.startswith("cka_") and n.endswith("_nopc1") for n in names) == 2


def test_report_tables_show_the_studys_numbers(study):
    text = (study / "report" / "index.html").read_text()
    hist = pd.read_csv(study / "tables" / "history.csv")
    final = hist[hist["epoch"] == 2]
    for acc in final["test_acc"]:
        assert f"{acc:.3f}".rstrip("0").rstrip(".") in text  # final test accuracy of each run
    spec = pd.read_csv(study / "tables" / "spectra.csv")
    last = spec[spec["epoch"] == 2]
    for regime in last["regime"]:
        assert f"<td>{regime}</td>" in text  # the MF/EF call
    assert "digits: Pearson r needs at least 3 true-label runs (this study has 1)" in text
    assert "needs two or more architectures with two or more seeds" in text
    # the claims table: one row per registered claim, measured from the tables, verdict computed
    claims = pd.read_csv(study / "report" / "claims.csv")
    assert list(claims["claim_id"]) == ["C1", "C2"]
    spec = pd.read_csv(study / "tables" / "spectra.csv")
    true_run = spec[spec["shuffle_fraction"] == 0].sort_values("epoch")
    assert claims["measured"].iloc[0] == pytest.approx(true_run["nc1"].iloc[-1] / true_run["nc1"].iloc[0])
    assert (claims["n"] == [1, 2]).all()  # one true-label run; both runs for C2
    assert claims["verdict"].iloc[0] == "inconclusive"  # one run: no interval, so never 'holds'
    assert "Pre-registered claims and verdicts" in text and "fails if entirely on the other side" in text
    # config and provenance
    assert "tiny-report" in text and "two small MLPs on digits" in text
    versions = json.loads((study / "study.json").read_text())["versions"]
    assert f"<td>{versions['torch']}</td>" in text


def test_sections_of_analyses_not_in_the_study_say_not_run(bare):
    text = build_report(bare).read_text()
    assert "Not run: analysis &#x27;id_profile&#x27; is not part of this study" in text
    assert "Not run: analysis &#x27;cka_matrix&#x27; is not part of this study" in text
    assert "Not run: analysis &#x27;spectrum_through_training&#x27; is not part of this study" in text
    assert text.count('class="notrun"') == 10  # findings, every analysis section, swept axes; overview and config drawn
    assert (bare / "report" / "figures" / "learning_curves.png").is_file()


def test_a_failing_section_does_not_hide_the_others(bare, monkeypatch):
    from deepgeom.report import SECTIONS

    def boom(ctx):
        raise RuntimeError("plotting exploded")

    # the section table is filled at import: replace the config section's entry in it
    i = next(k for k, (anchor, _, _) in enumerate(SECTIONS) if anchor == "config")
    monkeypatch.setattr("deepgeom.report.builder.SECTIONS",
                        [*SECTIONS[:i], ("config", SECTIONS[i][1], boom), *SECTIONS[i + 1:]])
    text = build_report(bare).read_text()
    assert "failed to draw (RuntimeError: plotting exploded)" in text
    assert text.count('class="notrun"') == 11
    assert (bare / "report" / "figures" / "learning_curves.png").is_file()  # the overview still drew


def test_build_report_rejects_a_directory_that_is_not_a_study(tmp_path):
    with pytest.raises(InputError, match="not a study directory"):
        build_report(tmp_path)


def test_cli_report_and_study_errors(bare, tmp_path, capsys):
    assert main(["report", str(bare)]) == 0
    assert capsys.readouterr().out.strip() == str(bare / "report" / "index.html")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: {dataset: digits, model: mlp, widht: 3}\n")
    assert main(["study", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown key in sweep 'widht'" in err and "width" in err
    assert main(["report", str(tmp_path / "o")]) == 2


def test_cli_demo_runs_the_packaged_config_then_reports_and_resumes(tmp_path, monkeypatch, capsys):
    import yaml

    import deepgeom.studies as studies

    cfg = tmp_path / "demo.yaml"  # the real demo takes minutes: swap in a one-run study, same code path
    cfg.write_text(yaml.safe_dump({"name": "mini-demo", "sweep": {"dataset": "digits", "model": "mlp", "width": 8,
                                                                  "depth": 1}, "train": {"epochs": 1}}))
    monkeypatch.setattr(studies, "default_config_path", lambda quick=False: cfg)
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "1 units computed, 0 reused" in first and f"report: {out / 'report' / 'index.html'}" in first
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert "0 units computed, 1 reused" in capsys.readouterr().out
    assert "mini-demo" in (out / "report" / "index.html").read_text()


def test_swept_axis_section_shows_each_runs_numbers(study):
    """The tiny study sweeps shuffle_fraction: one figure and a table whose numbers are the runs' own."""
    text = (study / "report" / "index.html").read_text()
    assert (study / "report" / "figures" / "swept_shuffle_fraction.png").stat().st_size > 1000
    assert not (study / "report" / "figures" / "swept_width.png").exists()  # width is not swept
    hist = pd.read_csv(study / "tables" / "history.csv")
    prof = pd.read_csv(study / "tables" / "id_profiles.csv")
    swept = text.split('id="swept"')[1].split("</section>")[0]
    for run, h in hist.groupby("run"):
        acc = h.sort_values("epoch")["test_acc"].iloc[-1]
        assert f"<td>{acc:.3f}".rstrip("0").rstrip(".") in swept
        p = prof[(prof["run"] == run) & (prof["layer"] != "output")]
        p = p[p["epoch"] == p["epoch"].max()]
        last_id = p.loc[p["layer_index"].idxmax(), "twonn_id"]
        assert f"<td>{last_id:.3f}".rstrip("0").rstrip(".") in swept


def test_report_out_dir_png_only_and_forked_figures_match_serial(study, tmp_path):
    from deepgeom.report.builder import build_report_details

    serial = build_report_details(study, tmp_path / "one", jobs=1)
    forked = build_report_details(study, tmp_path / "two", jobs=2)
    assert serial.ok and forked.ok and serial.n_figures == forked.n_figures >= 14
    a = sorted(p.name for p in (tmp_path / "one" / "figures").iterdir())
    assert a == sorted(p.name for p in (tmp_path / "two" / "figures").iterdir())
    assert all(n.endswith(".png") for n in a)  # SVG copies only with svg=True
    # drawn in a child process or in this one, a figure is the same file, byte for byte
    for name in a:
        assert (tmp_path / "one" / "figures" / name).read_bytes() == (tmp_path / "two" / "figures" / name).read_bytes()
    strip = lambda t: t.split("report built")[0] + t.split("report built")[1].split("</p>", 1)[1]  # noqa: E731
    assert strip(serial.index.read_text()) == strip(forked.index.read_text())


def test_cli_report_out_and_nonzero_exit_when_a_part_failed(bare, tmp_path, monkeypatch, capsys):
    import deepgeom.report.figures as figures

    assert main(["report", str(bare), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "index.html")
    assert (tmp_path / "r" / "figures" / "learning_curves.png").is_file()

    def boom(*a, **k):
        raise RuntimeError("no ink")

    monkeypatch.setattr(figures, "plot_learning_curves", boom)  # a figure fails (in a forked child)
    assert main(["report", str(bare), "--out", str(tmp_path / "r2"), "--jobs", "2"]) == 1
    cap = capsys.readouterr()
    assert cap.out.strip() == str(tmp_path / "r2" / "index.html")
    assert "1 part(s) of the report failed" in cap.err and "no ink" in cap.err
    assert "report: [1/12] Runs" in cap.err  # progress
    text = (tmp_path / "r2" / "index.html").read_text()
    assert "Figure learning_curves failed to draw (RuntimeError: no ink)" in text
