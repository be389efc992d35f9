"""Studies: sweep expansion, config validation, atomic writes, resume after a crash, tidy tables.

The runner is exercised first with throw-away analyses and a fake trainer (counting calls, so a skipped
unit is *proven* not to run), then end to end on a tiny real study (one small MLP on digits).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepgeom.errors import InputError, UnknownNameError
from deepgeom.studies import (
    StudyError,
    expand_sweep,
    load_config,
    plan_units,
    register_analysis,
    run_study,
    unregister_analysis,
)
from deepgeom.studies._io import atomic_write_text, write_table

BASE = {
    "name": "t",
    "sweep": {"dataset": "digits", "model": ["mlp", "vgg"], "width": [8, 16], "depth": 2,
              "seed": [0, 1], "shuffle_fraction": [0.0, 1.0]},
    "train": {"epochs": 2},
}


# ------------------------------------------------------------------------------------ sweep expansion
def test_sweep_is_the_cartesian_product_in_axis_order():
    runs = expand_sweep(load_config(BASE))
    assert len(runs) == 2 * 2 * 1 * 2 * 2  # model × width × depth × seed × shuffle
    assert [(r.model, r.width, r.seed, r.shuffle_fraction) for r in runs[:3]] == [
        ("mlp", 8, 0, 0.0), ("mlp", 8, 0, 1.0), ("mlp", 8, 1, 0.0)]
    assert len({r.key for r in runs}) == len(runs)  # every run its own key
    assert all(r.train["checkpoints"] == [0, 1, 2] for r in runs)  # default: every epoch incl. 0


def test_exclude_removes_matching_points_only():
    cfg = dict(BASE, exclude=[{"model": "vgg", "shuffle_fraction": 1.0}, {"width": 16, "seed": [0, 1]}])
    runs = expand_sweep(load_config(cfg))
    assert not any(r.model == "vgg" and r.shuffle_fraction == 1.0 for r in runs)
    assert not any(r.width == 16 for r in runs)
    assert len(runs) == 16 - 2 - 8 + 0  # 2 vgg/shuffled w8 removed, all 8 w16 removed


@given(
    widths=st.lists(st.integers(1, 512), min_size=1, max_size=3, unique=True),
    depths=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True),
    seeds=st.lists(st.integers(0, 99), min_size=1, max_size=3, unique=True),
    fracs=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=1, max_size=2, unique=True),
    excluded_width=st.integers(1, 512),
    order=st.randoms(use_true_random=False),
)
def test_sweep_size_and_keys_are_properties_of_the_lists(widths, depths, seeds, fracs, excluded_width, order):
    sweep = {"dataset": "digits", "model": "mlp", "width": widths, "depth": depths, "seed": seeds,
             "shuffle_fraction": fracs}
    cfg = {"sweep": sweep, "train": {"epochs": 1}, "exclude": [{"width": excluded_width}]}
    n_left = len(widths) - (excluded_width in widths)
    if n_left == 0:
        with pytest.raises(InputError, match="sweep is empty"):
            load_config(cfg)
        return
    runs = expand_sweep(load_config(cfg))
    assert len(runs) == n_left * len(depths) * len(seeds) * len(fracs)
    assert len({r.key for r in runs}) == len(runs)
    # the keys do not depend on the order keys are written in the file
    items = list(sweep.items())
    order.shuffle(items)
    again = expand_sweep(load_config({"exclude": cfg["exclude"], "train": {"epochs": 1}, "sweep": dict(items)}))
    assert [r.key for r in again] == [r.key for r in runs]


def test_a_list_of_sweeps_is_the_union_of_their_products_without_duplicates():
    cfg = {**BASE, "sweep": [
        {"dataset": "digits", "model": "mlp", "width": [8, 16], "seed": [0, 1]},
        {"dataset": "digits", "model": "vgg", "width": 8, "shuffle_fraction": 1.0},
        {"dataset": "digits", "model": "mlp", "width": 8, "seed": 0},  # already in the first product
    ]}
    runs = expand_sweep(load_config(cfg))
    assert [(r.model, r.width, r.seed, r.shuffle_fraction) for r in runs] == [
        ("mlp", 8, 0, 0.0), ("mlp", 8, 1, 0.0), ("mlp", 16, 0, 0.0), ("mlp", 16, 1, 0.0), ("vgg", 8, 0, 1.0)]
    with pytest.raises(InputError, match=r"sweep\[1\].dataset is required"):
        load_config({**BASE, "sweep": [{"dataset": "digits", "model": "mlp"}, {"model": "mlp"}]})
    with pytest.raises(InputError, match="sweep is an empty list"):
        load_config({**BASE, "sweep": []})


def test_packaged_demo_configs_are_valid_and_configs_copy_matches():
    from deepgeom.studies import default_config_path

    demo = load_config(default_config_path())
    quick = load_config(default_config_path(quick=True))
    assert len(demo.runs) == 8 and len(quick.runs) == 3
    assert [c.id for c in demo.claims] == ["D1", "D2", "D3", "D4", "D5", "D6"]
    for cfg in (demo, quick):
        assert {r.shuffle_fraction for r in cfg.runs} == {0.0, 1.0}  # trained vs shuffled labels
        assert {r.model for r in cfg.runs} == {"mlp", "resnet"}
        assert set(cfg.analyses) == {"id_profile", "id_during_training", "cka_matrix", "cka_across",
                                     "spectrum_through_training", "predictions"}
    repo_copy = Path(__file__).parents[1] / "configs" / "demo.yaml"
    assert repo_copy.read_text() == default_config_path().read_text()


def test_keys_are_stable_and_change_only_with_what_shapes_the_result():
    a = [r.key for r in expand_sweep(load_config(BASE))]
    b = [r.key for r in expand_sweep(load_config(json.loads(json.dumps(BASE))))]
    assert a == b
    c = [r.key for r in expand_sweep(load_config(dict(BASE, train={"epochs": 3})))]
    assert set(a).isdisjoint(c)
    d = [r.key for r in expand_sweep(load_config(dict(BASE, name="renamed", description="x")))]
    assert a == d  # the study's name is not part of a run's identity


def test_config_from_yaml_and_json_files(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "s.json").write_text(json.dumps(BASE))
    ka = [r.key for r in load_config(tmp_path / "s.yaml").runs]
    kb = [r.key for r in load_config(str(tmp_path / "s.json")).runs]
    assert ka == kb and len(ka) == 16


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"sweeps": {}}, r"unknown key in study config 'sweeps'.*sweep"),
        ({"sweep": {"dataset": "digits", "model": "mlp", "widht": 3}}, r"unknown key in sweep 'widht'.*width"),
        ({"sweep": {"model": "mlp"}}, r"sweep.dataset is required"),
        ({"sweep": {"dataset": "digits", "model": "mlp", "width": [0]}}, r"sweep.width .*>= 1; got 0"),
        ({"sweep": {"dataset": "digits", "model": "mlp", "width": [8, 8]}}, r"sweep.width lists a value twice"),
        ({"sweep": {"dataset": "digits", "model": "mlp", "shuffle_fraction": 1.5}}, r"shuffle_fraction.*\[0, 1\]; got 1.5"),
        ({"sweep": {"dataset": "digits", "model": "mlp", "depth": []}}, r"sweep.depth is an empty list"),
        ({"train": {"epochs": 2, "lr": -1}}, r"train.lr must be a positive number; got -1"),
        ({"train": {"epoch": 2}}, r"unknown key in train 'epoch'.*epochs"),
        ({"train": {"epochs": 2, "checkpoints": [5]}}, r"train.checkpoints must be epochs in \[0, 2\]; got 5"),
        ({"analyses": {"id_profiel": {}}}, r"unknown analysis 'id_profiel'"),
        ({"analyses": {"id_profile": {"n_pointz": 3}}}, r"unknown parameter of analysis 'id_profile' 'n_pointz'"),
        ({"exclude": [{"model": ["mlp", "vgg"]}]}, r"sweep is empty"),
        ({"data": {"options": {"mnist1d": {}}}}, r"unknown dataset in data.options 'mnist1d'"),
        ({"models": {"resnet": {}}}, r"unknown model in models 'resnet'"),
        ({"name": ""}, r"name must be a non-empty string"),
        ({"analyses": {"id_profile": {"split": "val"}}}, r"split must be 'train' or 'test'; got 'val'"),
        ({"analyses": {"id_profile": {"n_points": 0}}}, r"n_points must be an integer >= 1 or null"),
        ({"analyses": {"id_profile": {"epochs": "most"}}}, r"epochs must be 'all', 'first_last', 'last' or a list"),
        ({"analyses": {"cka_across": {"pairs": "twins"}}}, r"pairs must be one of \['all', 'seeds', 'architectures'\]"),
        ({"analyses": {"cka_matrix": {"threshold": 1.5}}}, r"threshold must be a number in \(0, 1\]; got 1.5"),
        ({"analyses": {"id_during_training": {"layers": "first"}}}, r"layers must be 'penultimate' or 'all'"),
    ],
)
def test_config_errors_name_the_problem(patch, match):
    with pytest.raises(InputError, match=match):
        load_config({**BASE, **patch})


def test_unknown_key_error_is_an_unknown_name_error_listing_choices():
    with pytest.raises(UnknownNameError) as info:
        load_config({**BASE, "analysis": {}})
    assert "analyses" in info.value.choices


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("sweep: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping at the top level"):
        load_config(tmp_path / "list.yaml")


# ------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_keeps_old_content_when_the_writer_dies(tmp_path, monkeypatch):
    target = tmp_path / "t.csv"
    atomic_write_text(target, "old\n")
    df = pd.DataFrame({"a": [1, 2]})

    def boom(self, path, **kw):  # writes half a file, then crashes
        Path(path).write_text("a\n1\n")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        write_table(df, tmp_path / "t", formats=("csv",))
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no temp file left behind


# ------------------------------------------------------------------------------------ resume
class Counter:
    def __init__(self):
        self.calls: dict[str, int] = {}

    def hit(self, key):
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.calls[key]


@pytest.fixture
def fake():
    """A fake trainer and three throw-away analyses: one per run, one that crashes once, one per study."""
    counter = Counter()
    state = {"crash_on": set()}

    def trainer(run, out_dir):
        counter.hit(("train", run.key))
        (out_dir / "ckpt_0.txt").write_text("w")
        hist = pd.DataFrame({"epoch": [0, 1], "train_acc": [0.1, 0.2 + run.spec.width / 100]})
        return hist, {0: "ckpt_0.txt"}

    def per_run(ctx):
        counter.hit(("per_run", ctx.run.key))
        assert (ctx.run.dir / "ckpt_0.txt").read_text() == "w"  # training published before analyses
        return pd.DataFrame({"layer": ["a", "b"], "value": [ctx.run.spec.width, ctx.params["scale"]]})

    def flaky(ctx):
        n = counter.hit(("flaky", ctx.run.key))
        if ctx.run.spec.width in state["crash_on"] and n == 1:
            raise RuntimeError("simulated crash")
        (ctx.unit_dir / "artifact.npy").write_bytes(b"x")
        return {"flaky_a": pd.DataFrame({"x": [n]}), "flaky_b": pd.DataFrame({"y": [1.0]})}

    def across(ctx):
        counter.hit(("across", None))
        return pd.DataFrame({"run_a": [r.key for r in ctx.runs], "n": len(ctx.runs)})

    register_analysis("t_per_run", per_run, defaults={"scale": 1}, table="values")
    register_analysis("t_flaky", flaky)
    register_analysis("t_across", across, scope="study")
    yield counter, state, trainer
    for name in ("t_per_run", "t_flaky", "t_across"):
        unregister_analysis(name)


def _cfg(**analyses):
    return {
        "name": "fake",
        "sweep": {"dataset": "digits", "model": "mlp", "width": [8, 16, 32]},
        "train": {"epochs": 1},
        "analyses": analyses or {"t_per_run": {"scale": 2}, "t_flaky": {}, "t_across": {}},
    }


def test_resume_after_crash_skips_finished_units(tmp_path, fake):
    counter, state, trainer = fake
    state["crash_on"] = {16}  # the 2nd run's flaky unit crashes on its first call
    with pytest.raises(StudyError, match="simulated crash"):
        run_study(_cfg(), tmp_path, progress=False, trainer=trainer)
    study = json.loads((tmp_path / "study.json").read_text())
    k8, k16, k32 = (r.key for r in load_config(_cfg()).runs)
    status = {(u["kind"], u["run"]): u["status"] for u in study["units"]}
    assert status[("t_flaky", k8)] == "computed" and status[("t_flaky", k16)] == "failed"
    assert status[("t_flaky", k32)] == "pending"
    assert not list((tmp_path / "runs").glob(".tmp-*"))  # the crashed unit left no partial directory
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/DONE.json")}
    calls_before = dict(counter.calls)
    assert len(done_before) == 3 + 3  # 3 trainings; per_run w8, flaky w8, per_run w16 (units go run by run)

    res = run_study(_cfg(), tmp_path, progress=False, trainer=trainer)
    # finished units were skipped: no second call, done-markers untouched
    for key, n in calls_before.items():
        expected = n + 1 if key[0] == "flaky" and key[1] == res.config.runs[1].key else n
        assert counter.calls[key] == expected, key
    assert counter.calls[("flaky", k32)] == 1 and counter.calls[("per_run", k32)] == 1
    assert counter.calls[("across", None)] == 1
    for key, mtime in done_before.items():
        assert (tmp_path / "runs" / key / "DONE.json").stat().st_mtime_ns == mtime
    assert res.n_skipped == 6 and res.n_computed == 4 and not res.failed
    arts = list((tmp_path / "runs").glob("*/artifact.npy"))
    assert len(arts) == 3

    # a third run recomputes nothing at all
    calls = dict(counter.calls)
    res3 = run_study(_cfg(), tmp_path, progress=False, trainer=trainer)
    assert counter.calls == calls and res3.n_computed == 0 and res3.n_skipped == 10


def test_no_resume_recomputes_and_changed_params_rerun_only_their_units(tmp_path, fake):
    counter, _, trainer = fake
    run_study(_cfg(t_per_run={"scale": 2}), tmp_path, progress=False, trainer=trainer)
    res = run_study(_cfg(t_per_run={"scale": 3}), tmp_path, progress=False, trainer=trainer)
    assert [u.status for u in res.units] == ["skipped"] * 3 + ["computed"] * 3
    assert all(v == 1 for k, v in counter.calls.items() if k[0] == "train")
    assert sorted(res.table("values")["value"]) == [3, 3, 3, 8, 16, 32]  # only the current params' rows
    res = run_study(_cfg(t_per_run={"scale": 3}), tmp_path, progress=False, resume=False, trainer=trainer)
    assert res.n_computed == 6 and all(v == 2 for k, v in counter.calls.items() if k[0] == "train")


def test_on_error_continue_records_failures_and_blocks_dependants(tmp_path, fake):
    _, _, trainer = fake

    def bad_trainer(run, out_dir):
        if run.spec.width == 16:
            raise RuntimeError("diverged")
        return trainer(run, out_dir)

    res = run_study(_cfg(t_per_run={}, t_flaky={}), tmp_path, progress=False, on_error="continue",
                    trainer=bad_trainer)
    by = {(u.kind, u.run): u.status for u in res.units}
    k16 = res.config.runs[1].key
    assert by[("train", k16)] == "failed" and by[("t_per_run", k16)] == "blocked"
    assert by[("t_flaky", k16)] == "blocked"
    assert sum(s == "computed" for s in by.values()) == 2 + 4
    assert len(res.failed) == 3 and "diverged" in (tmp_path / "errors.log").read_text()
    with pytest.raises(InputError, match="on_error"):
        run_study(_cfg(), tmp_path, on_error="ignore")


def test_tables_are_tidy_and_readable_by_pandas(tmp_path, fake):
    _, _, trainer = fake
    res = run_study(_cfg(), tmp_path, progress=False, trainer=trainer)
    assert set(res.tables) == {"history", "values", "flaky_a", "flaky_b", "t_across"}
    for name in res.tables:
        csv = pd.read_csv(tmp_path / "tables" / f"{name}.csv")
        pq = pd.read_parquet(tmp_path / "tables" / f"{name}.parquet")
        assert len(csv) == len(pq) > 0 and list(csv.columns) == list(pq.columns)
    vals = res.table("values")
    for col in ("run", "dataset", "model", "width", "depth", "seed", "shuffle_fraction", "unit", "analysis",
                "layer", "value"):
        assert col in vals.columns
    assert len(vals) == 6 and set(vals["width"]) == {8, 16, 32}
    hist = res.table("history")
    assert list(hist.groupby("width")["train_acc"].max().round(2)) == [0.28, 0.36, 0.52]
    assert len(res.table("t_across")) == 3 and set(res.table("t_across")["n"]) == {3}
    with pytest.raises(UnknownNameError, match="unknown table 'nope'"):
        res.table("nope")


def test_plan_orders_training_first_and_study_scope_last():
    cfg = load_config({**BASE, "analyses": {"id_profile": {}, "cka_across": {}}})
    kinds = [u.record.scope for u in plan_units(cfg)]
    assert kinds == ["train"] * 16 + ["run"] * 16 + ["study"]


def test_register_rejects_duplicates_and_bad_scope():
    with pytest.raises(InputError, match="already registered"):
        register_analysis("id_profile", lambda ctx: None)
    with pytest.raises(InputError, match="scope must be"):
        register_analysis("t_x", lambda ctx: None, scope="layer")


def test_analysis_must_return_frames(tmp_path, fake):
    _, _, trainer = fake
    register_analysis("t_bad", lambda ctx: 3.0)
    try:
        with pytest.raises(StudyError, match="must return a DataFrame"):
            run_study(_cfg(t_bad={}), tmp_path, progress=False, trainer=trainer)
    finally:
        unregister_analysis("t_bad")


def test_start_removes_only_temporary_folders_whose_writer_is_gone(tmp_path, fake):
    """A starting study removes a dead writer's temporary folder, never a live one's (another process
    may be computing in it), and leaves a dead training's resume state for the next holder to adopt."""
    import socket
    import subprocess
    import sys

    _, _, trainer = fake
    runs = tmp_path / "runs"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that existed and is gone

    def tmp(name, pid=None, files=("half",), age_s=0.0):
        d = runs / name
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("x")
        if pid is not None:
            (d / "OWNER.json").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": "t"}))
        if age_s:
            os.utime(d, (d.stat().st_atime - age_s, d.stat().st_mtime - age_s))
        return d

    dead = tmp(".tmp-deadbeef0000-1-aaa", pid=gone.pid)
    live = tmp(".tmp-deadbeef0001-1-bbb", pid=os.getppid())
    resumable = tmp(".tmp-deadbeef0002-1-ccc", pid=gone.pid, files=("resume.pt",))
    legacy_old = tmp(".tmp-deadbeef0003-1-ddd", age_s=3600)
    legacy_new = tmp(".tmp-deadbeef0004-1-eee")
    run_study(_cfg(t_per_run={}), tmp_path, progress=False, trainer=trainer)
    assert not dead.exists() and not legacy_old.exists()
    assert live.exists() and resumable.exists() and legacy_new.exists()
    assert os.path.isfile(tmp_path / "config.yaml") and os.path.isfile(tmp_path / "study.json")
    assert not list(runs.glob(".lease-*")) and not list(runs.glob(".clock-*"))


# ------------------------------------------------------------------------------------ end to end (real)
TINY = {
    "name": "tiny",
    "sweep": {"dataset": "digits", "model": "mlp", "width": 12, "depth": 2},
    "train": {"epochs": 2, "lr": 0.01, "batch_size": 64},
    "analyses": {"id_profile": {"n_points": 200}, "spectrum_through_training": {"n_points": 200}},
}


def test_real_tiny_study_tables_and_resume(tmp_path):
    res = run_study(TINY, tmp_path, progress=False)
    assert [u.status for u in res.units] == ["computed"] * 3
    hist = pd.read_csv(tmp_path / "tables" / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2]
    assert {"train_acc", "test_acc", "train_loss", "test_loss"} <= set(hist.columns)
    assert hist["test_acc"].iloc[-1] > 0.2  # 10 classes: chance is 0.1; a 2-epoch MLP on digits beats it
    prof = pd.read_parquet(tmp_path / "tables" / "id_profiles.parquet")
    # input, two hidden ReLUs, output; untrained (epoch 0) and trained (epoch 2)
    assert list(prof["layer"][:4]) == ["input", "hidden.relu1", "hidden.relu2", "output"]
    assert sorted(set(zip(prof["epoch"], prof["condition"], strict=True))) == [(0, "untrained"), (2, "trained")]
    assert prof["relative_depth"].between(0, 1).all() and (prof["n"] == 200).all()
    # digits live on a low-dimensional set in 64 pixels: TwoNN well below D, PC-ID at least TwoNN-ish
    inp = prof[prof["layer"] == "input"].iloc[0]
    assert inp["D"] == 64 and 3 < inp["twonn_id"] < 30
    spec = pd.read_parquet(tmp_path / "tables" / "spectra.parquet")
    assert list(spec["epoch"]) == [0, 1, 2] and set(spec["regime"]) <= {"MF", "EF"}
    assert (spec["n_classes"] == 10).all() and {"dominant", "nc1", "test_acc"} <= set(spec.columns)
    ev = pd.read_parquet(tmp_path / "tables" / "spectrum_eigenvalues.parquet")
    for _, d in ev.groupby("epoch"):
        assert (d.sort_values("k")["eigenvalue"].diff().dropna() <= 1e-12).all()  # descending
    # a rerun reuses everything; the model checkpoint files are where the manifest says
    res2 = run_study(TINY, tmp_path, progress=False)
    assert res2.n_computed == 0 and res2.n_skipped == 3
    ck = json.loads((tmp_path / "runs" / res.config.runs[0].key / "train.json").read_text())["checkpoints"]
    assert sorted(map(int, ck)) == [0, 1, 2]


def test_threads_are_set_during_the_study_and_restored(tmp_path, fake):
    import torch

    _, _, trainer = fake
    seen = []

    def spy(run, out_dir):
        seen.append(torch.get_num_threads())
        return trainer(run, out_dir)

    before = torch.get_num_threads()
    run_study(_cfg(t_per_run={}), tmp_path, progress=False, trainer=spy, threads=1)
    assert seen == [1, 1, 1] and torch.get_num_threads() == before
    with pytest.raises(InputError, match="threads must be an integer >= 1"):
        run_study(_cfg(), tmp_path, threads=0)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.runs and cfg.analyses
    assert len({r.key for r in cfg.runs}) == len(cfg.runs)


def test_analyses_as_a_list_or_with_true_false_use_the_defaults():
    from deepgeom.studies import get_analysis

    a = load_config({**BASE, "analyses": ["id_profile", "cka_matrix"]}).analyses
    b = load_config({**BASE, "analyses": {"id_profile": True, "cka_matrix": None, "predictions": False}}).analyses
    assert a == b == {"id_profile": get_analysis("id_profile").defaults, "cka_matrix": get_analysis("cka_matrix").defaults}


def test_cka_across_pair_selection():
    import itertools

    from deepgeom.studies.builtin import _PAIRS

    runs = expand_sweep(load_config({**BASE, "sweep": {"dataset": "digits", "model": "mlp", "width": [8, 16],
                                                       "seed": [0, 1]}}))
    pick = {name: [(a.width, a.seed, b.width, b.seed) for a, b in itertools.combinations(runs, 2) if rule(a, b)]
            for name, rule in _PAIRS.items()}
    assert len(pick["all"]) == 6
    assert pick["seeds"] == [(8, 0, 8, 1), (16, 0, 16, 1)]
    assert pick["architectures"] == [(8, 0, 16, 0), (8, 1, 16, 1)]
    with pytest.raises(UnknownNameError, match="unknown parameter of analysis 'cka_across' 'pair'"):
        load_config({**BASE, "analyses": {"cka_across": {"pair": "seeds"}}})
