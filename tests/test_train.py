"""Training: determinism, learning beats chance, random labels are memorised but do not generalise,
checkpoints round-trip, files are written atomically, the CLI runs, bad input is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from deepgeom.cli import main
from deepgeom.data import Dataset, load
from deepgeom.errors import InputError, UnknownNameError
from deepgeom.train import (
    HISTORY_COLUMNS,
    TrainConfig,
    TrainingDivergedError,
    evaluate,
    load_model,
    load_run,
    train,
)

CHANCE = 0.1  # 10 balanced classes in digits and mnist1d


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small models train faster on one thread on a busy 2-core machine; results are bit-stable per setting
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load("digits", seed=0)  # 1,347 train / 450 test 8×8 images


@pytest.fixture(scope="module")
def mnist1d() -> Dataset:
    return load("mnist1d", seed=0)  # 4,000 train / 1,000 test signals of length 40


def subset(ds: Dataset, n: int) -> Dataset:
    return Dataset(f"{ds.name}[:{n}]", ds.x_train[:n], ds.y_train[:n], ds.x_test, ds.y_test, ds.n_classes,
                   ds.input_shape)


def small_cnn(**kw) -> TrainConfig:
    base = dict(dataset="digits", family="vgg", width=4, depth=3, model_options={"batch_norm": True,
                "dropout": 0.2}, epochs=2, batch_size=64, lr=0.05, seed=3)
    return TrainConfig(**{**base, **kw})


def test_same_seed_bit_identical(digits):
    # a CNN with batch norm and dropout: weights, buffers and every history number agree exactly
    state = torch.random.get_rng_state()
    a = train(small_cnn(), dataset=subset(digits, 300), progress=False)
    b = train(small_cnn(), dataset=subset(digits, 300), progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    assert not torch.are_deterministic_algorithms_enabled()  # flag restored
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    c = train(small_cnn(seed=4), dataset=subset(digits, 300), progress=False)
    assert not torch.equal(sa["head.weight"], c.model.state_dict()["head.weight"])
    assert list(a.history.columns) == HISTORY_COLUMNS and list(a.history["epoch"]) == [0, 1, 2]


def test_mlp_on_mnist1d_beats_chance(mnist1d):
    cfg = TrainConfig(dataset="mnist1d", family="mlp", width=256, depth=2, optimizer="adam", lr=3e-3, epochs=6,
                      batch_size=128, seed=0)
    res = train(cfg, dataset=mnist1d, progress=False)
    h = res.history
    # untrained ≈ chance; 1,000 test examples: binomial sd at chance ≈ 0.0095, so 0.45 is > 30 sd above it
    # (measured test accuracy 0.60-0.62 over seeds 0-4)
    assert abs(h["test_acc"].iloc[0] - CHANCE) < 0.06
    assert h["test_acc"].iloc[-1] > 0.45 and h["train_acc"].iloc[-1] > 0.5
    assert h["train_loss"].iloc[-1] < 0.6 * h["train_loss"].iloc[0]


def test_cnn_on_digits_beats_chance(digits):
    cfg = TrainConfig(dataset="digits", family="resnet", width=8, depth=2, epochs=3, batch_size=64, optimizer="adam",
                      lr=1e-2, seed=0)
    res = train(cfg, dataset=digits, progress=False)
    # 450 test images, chance 0.1 (sd ≈ 0.014): 0.7 is far beyond chance; measured 0.78-0.93 over seeds 0-4
    assert res.history["test_acc"].iloc[-1] > 0.7


def test_shuffled_labels_fit_on_train_but_test_stays_at_chance(digits):
    ds = subset(digits, 256)
    cfg = TrainConfig(dataset="digits", family="mlp", width=512, depth=2, optimizer="adam", lr=3e-3, epochs=40,
                      batch_size=64, seed=0, shuffle_fraction=1.0, checkpoint_epochs=[40])
    res = train(cfg, dataset=ds, progress=False)
    h = res.history
    assert h["train_acc"].iloc[-1] >= 0.98  # memorised the random labels (measured 1.0)
    # 450 test images: sd ≈ 0.014 at chance; measured 0.069-0.109 over seeds 0-4
    assert abs(h["test_acc"].iloc[-1] - CHANCE) < 0.06
    # the labels it fit really were shuffled: against the true labels its train predictions are ~chance
    with torch.no_grad():
        pred = res.model(ds.x_train).argmax(1)
    assert float((pred == ds.y_train).float().mean()) < 0.25
    assert res.data["n_shuffled"] == 256


def test_shuffle_via_load_matches_shuffle_here(digits):
    # config.dataset loaded by name (load shuffles) == the unshuffled dataset passed in (train shuffles)
    cfg = TrainConfig(dataset="digits", family="mlp", width=8, depth=1, epochs=1, seed=0, shuffle_fraction=0.5)
    a = train(cfg, progress=False)
    b = train(cfg, dataset=digits, progress=False)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    assert a.data["n_shuffled"] == b.data["n_shuffled"] == round(0.5 * digits.n_train)
    shuffled = load("digits", seed=0, shuffle_fraction=0.5)
    c = train(cfg, dataset=shuffled, progress=False)  # already shuffled with the same fraction: not again
    pd.testing.assert_frame_equal(a.history, c.history, check_exact=True)
    with pytest.raises(InputError, match="already has shuffle_fraction"):
        train(TrainConfig(dataset="digits", shuffle_fraction=0.2, epochs=0), dataset=shuffled, progress=False)


def test_checkpoints_round_trip(digits, tmp_path):
    cfg = small_cnn(epochs=3, checkpoint_epochs=[1, 3])
    res = train(cfg, tmp_path / "run", dataset=subset(digits, 200), progress=False)
    run_dir = tmp_path / "run"
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["epoch_0000.safetensors", "epoch_0001.safetensors", "epoch_0003.safetensors"]
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]  # no temp files left behind
    x = digits.x_test[:50]
    with torch.no_grad():
        final = res.model.eval()(x)
        assert torch.equal(load_model(run_dir)(x), final)  # latest checkpoint = trained model
        assert torch.equal(load_model(run_dir / "checkpoints" / "epoch_0003.safetensors")(x), final)
        at0 = load_model(run_dir, 0)
        assert torch.equal(at0(x), res.model_at(0)(x))
        assert not torch.allclose(at0(x), final)  # training changed the weights
    # the untrained network is exactly the seeded build from the saved model config
    from deepgeom.models import from_config

    init = from_config(res.model_config).state_dict()
    assert all(torch.equal(init[k], v) for k, v in res.states[0].items())
    # epoch 0 of the history is the untrained network the checkpoint holds
    tl, ta = evaluate(at0, digits.x_test, digits.y_test)
    assert math.isclose(tl, res.history["test_loss"].iloc[0], rel_tol=1e-12)
    assert ta == res.history["test_acc"].iloc[0]

    run = load_run(run_dir)
    assert run.config == cfg and run.model_config == res.model_config
    assert sorted(run.checkpoints) == [0, 1, 3]
    pd.testing.assert_frame_equal(run.history, res.history, check_exact=False, rtol=1e-15)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["epochs_done"] == 3 and info["data"]["n_train"] == 200
    # the same config may be redone in place (deterministic); a different one may not mix into it
    again = train(cfg, run_dir, dataset=subset(digits, 200), progress=False)
    pd.testing.assert_frame_equal(again.history, res.history, check_exact=True)
    with pytest.raises(InputError, match="already holds a different training run"):
        train(small_cnn(epochs=1), run_dir, dataset=subset(digits, 200), progress=False)
    with pytest.raises(UnknownNameError, match="checkpoint epoch 2"):
        load_model(run_dir, 2)
    with pytest.raises(InputError, match="not a deepgeom run directory"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="no such run directory"):
        load_model(tmp_path / "nope")


def test_atomic_write_leaves_no_partial_checkpoint(digits, tmp_path, monkeypatch):
    import safetensors.torch

    def broken(state, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        train(small_cnn(epochs=1), tmp_path, dataset=subset(digits, 100), progress=False)
    ck = tmp_path / "checkpoints"
    assert not ck.exists() or list(ck.iterdir()) == []


def test_mse_and_regression(digits):
    cfg = TrainConfig(family="mlp", width=64, depth=1, loss="mse", epochs=3, lr=0.05, batch_size=32, seed=0)
    res = train(cfg, dataset=digits, progress=False)
    assert res.history["test_acc"].iloc[-1] > 0.7
    # regression: float targets y = x·w exactly learnable by a linear readout of a wide ReLU layer
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 6, generator=g)
    w = torch.randn(6, 2, generator=g)
    ds = SimpleNamespace(name="linear", x_train=x[:400], y_train=x[:400] @ w, x_test=x[400:], y_test=x[400:] @ w,
                         n_classes=0, input_shape=(6,))
    res = train(TrainConfig(family="mlp", width=64, depth=1, loss="mse", optimizer="adam", lr=1e-2, epochs=30,
                            batch_size=64, seed=0), dataset=ds, progress=False)
    h = res.history
    assert res.model.head.out_features == 2 and h["train_acc"].isna().all()
    assert h["test_loss"].iloc[-1] < 0.05 * h["test_loss"].iloc[0]
    with pytest.raises(InputError, match="regression.*mse"):
        train(TrainConfig(family="mlp", epochs=0), dataset=ds, progress=False)


def test_divergence_is_reported(digits):
    cfg = TrainConfig(family="mlp", width=32, depth=2, loss="mse", lr=1e4, momentum=0.9, epochs=3, seed=0)
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        train(cfg, dataset=subset(digits, 256), progress=False)


def test_progress_bar_on_stderr(digits, capsys):
    train(TrainConfig(family="mlp", width=8, depth=1, epochs=2), dataset=subset(digits, 64), progress=True)
    assert "epoch" in capsys.readouterr().err
    train(TrainConfig(family="mlp", width=8, depth=1, epochs=2), dataset=subset(digits, 64), progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kw,err,match", [
    (dict(optimizer="rmsprop"), UnknownNameError, "optimizer 'rmsprop'; known: sgd, adam"),
    (dict(loss="hinge"), UnknownNameError, "loss 'hinge'"),
    (dict(family="lstm"), UnknownNameError, "model family 'lstm'"),
    (dict(lr=0), InputError, "lr must be a positive number"),
    (dict(momentum=-1), InputError, "momentum"),
    (dict(epochs=-1), InputError, "epochs"),
    (dict(batch_size=0), InputError, "batch_size"),
    (dict(batch_size="many"), InputError, "batch_size must be an integer >= 1; got 'many'"),
    (dict(width=2.5), InputError, "width"),
    (dict(depth=0), InputError, "depth"),
    (dict(seed=True), InputError, "seed"),
    (dict(shuffle_fraction=1.5), InputError, r"shuffle_fraction must be in \[0.0, 1.0\]; got 1.5"),
    (dict(epochs=5, checkpoint_epochs=[2, 9]), InputError, r"checkpoint epochs \[9\] lie beyond epochs=5"),
    (dict(checkpoint_epochs=["x"]), InputError, "checkpoint"),
    (dict(device="gpu0"), InputError, "device"),
])
def test_bad_config(kw, err, match):
    with pytest.raises(err, match=match):
        TrainConfig(**kw)


def test_config_defaults_and_round_trip():
    cfg = TrainConfig(epochs=7, checkpoint_epochs=[5, 2, 5])
    assert cfg.checkpoint_epochs == [0, 2, 5]
    assert TrainConfig(epochs=7).checkpoint_epochs == [0, 7]
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(InputError, match=r"unknown TrainConfig field\(s\) \['lrate'\]"):
        TrainConfig.from_dict({"lrate": 1})


def test_bad_data(digits):
    sphere = load("hypersphere", n=50, d=2, D=3)
    with pytest.raises(InputError, match="has no labels"):
        train(TrainConfig(epochs=0), dataset=sphere, progress=False)
    bad = Dataset("bad", digits.x_train[:10], digits.y_train[:10] + 20, digits.x_test, digits.y_test, 10,
                  digits.input_shape)
    with pytest.raises(InputError, match=r"labels must lie in 0\.\.9"):
        train(TrainConfig(epochs=0), dataset=bad, progress=False)
    with pytest.raises(InputError, match="TrainConfig"):
        train({"epochs": 1}, progress=False)


def test_cli_train(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--family", "mlp", "--data", "digits", "--width", "16", "--depth", "1", "--epochs", "2",
               "--batch-size", "64", "--lr", "0.1", "--optimizer", "sgd", "--weight-decay", "1e-4", "--seed", "1",
               "--shuffle-fraction", "0.5", "--checkpoints", "0,1,2", "--out", str(out), "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["out_dir"] == str(out) and 0 <= summary["test_acc"] <= 1
    run = load_run(out)
    assert run.config.shuffle_fraction == 0.5 and run.config.weight_decay == 1e-4 and sorted(run.checkpoints) == [0, 1, 2]
    assert summary["test_acc"] == run.history["test_acc"].iloc[-1]

    rc = main(["train", "--data", "digits", "--width", "8", "--depth", "1", "--epochs", "1", "--no-progress",
               "-o", "bias=False"])
    text = capsys.readouterr().out
    assert rc == 0 and "test accuracy" in text and "nothing saved" in text

    assert main(["train", "--family", "nope", "--epochs", "0"]) == 2
    assert "unknown model family 'nope'" in capsys.readouterr().err
    assert main(["train", "--checkpoints", "0,a"]) == 2
    assert main(["train", "--data-option", "n_train"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0


def test_resume_continues_after_the_last_saved_epoch_bit_identically(digits, tmp_path, monkeypatch):
    """A run killed after epoch 2 (of 4) resumes from its resume state: the epochs before are not trained
    again, and weights, batch-norm buffers and history equal those of an uninterrupted run exactly
    (batch norm, dropout and SGD momentum all carry state across epochs)."""
    import importlib

    T = importlib.import_module("deepgeom.train")  # the module (deepgeom.train is also the function)
    cfg = small_cnn(epochs=4, checkpoint_epochs=[0, 2, 4])
    data = subset(digits, 300)
    whole = train(cfg, tmp_path / "whole", dataset=data, progress=False)

    class Killed(Exception):
        pass

    save = T._save_resume

    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(T, "_save_resume", save_then_die)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", dataset=data, progress=False, resume=True)
    assert (tmp_path / "cut" / T.RESUME_FILE).is_file()
    monkeypatch.setattr(T, "_save_resume", save)
    trained = []
    batches = T._batches
    monkeypatch.setattr(T, "_batches", lambda *a: trained.append(1) or batches(*a))  # one call per epoch
    resumed = train(cfg, tmp_path / "cut", dataset=data, progress=False, resume=True)
    assert resumed.resumed_from == 2 and len(trained) == 2  # epochs 3 and 4 only
    sa, sb = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    pd.testing.assert_frame_equal(whole.history, resumed.history, check_exact=True)
    assert sorted(resumed.checkpoints) == [0, 2, 4] and sorted(resumed.states) == [0, 2, 4]
    assert all(torch.equal(whole.states[2][k], resumed.states[2][k]) for k in whole.states[2])
    assert not (tmp_path / "cut" / T.RESUME_FILE).exists()  # removed once training ended
    assert list(pd.read_csv(tmp_path / "cut" / "history.csv")["epoch"]) == [0, 1, 2, 3, 4]
    with pytest.raises(InputError, match="resume=True needs an out_dir"):
        train(cfg, dataset=data, progress=False, resume=True)


def test_eval_every_skips_evaluation_but_not_the_weights(digits):
    """Evaluating less often changes the history, never the trained weights (evaluation draws no random
    numbers); epoch 0, checkpoints and the last epoch are always evaluated."""
    kw = dict(dataset="digits", family="mlp", width=16, depth=1, epochs=7, lr=0.05, batch_size=64, seed=3,
              checkpoint_epochs=[2])
    every = train(TrainConfig(**kw), dataset=digits, progress=False)
    sparse = train(TrainConfig(**kw, eval_every=3), dataset=digits, progress=False)
    assert list(sparse.history["epoch"]) == [0, 2, 3, 6, 7]
    for k, v in every.model.state_dict().items():
        assert torch.equal(v, sparse.model.state_dict()[k])
    pd.testing.assert_frame_equal(every.history.set_index("epoch").loc[[0, 2, 3, 6, 7]],
                                  sparse.history.set_index("epoch"))
    with pytest.raises(InputError, match="eval_every"):
        TrainConfig(**kw, eval_every=0)


def test_eval_every_is_not_part_of_a_study_run_key():
    from deepgeom.studies import load_config

    base = {"name": "k", "sweep": {"dataset": "digits", "model": "mlp", "width": 8, "depth": 1, "seed": 0},
            "train": {"epochs": 2}}
    a = load_config(base).runs[0]
    b = load_config({**base, "train": {"epochs": 2, "eval_every": 2}}).runs[0]
    assert a.key == b.key and b.train["eval_every"] == 2


def test_stop_at_train_acc_stops_at_the_first_fitting_epoch(digits, tmp_path):
    """Training until the labels are fit: the run ends at the first evaluated epoch whose training
    accuracy reaches the target, with a checkpoint there, and its weights equal a run of exactly that
    many epochs (stopping draws no random numbers and changes nothing before the stop)."""
    kw = dict(dataset="digits", family="mlp", width=32, depth=1, lr=0.05, batch_size=64, seed=1)
    full = train(TrainConfig(**kw, epochs=30), dataset=digits, progress=False)
    acc = full.history.set_index("epoch")["train_acc"]
    target = 0.95
    first = int(acc[(acc.index > 0) & (acc >= target)].index[0])
    assert 1 < first < 30  # the case is informative: it stops, but not at once
    stopped = train(TrainConfig(**kw, epochs=30, stop_at_train_acc=target, checkpoint_epochs=[20, 30]),
                    tmp_path / "run", dataset=digits, progress=False)
    assert int(stopped.history["epoch"].iloc[-1]) == first
    assert stopped.history["train_acc"].iloc[-1] >= target > stopped.history["train_acc"].iloc[-2]
    assert sorted(stopped.checkpoints) == [0, first] == stopped.summary()["checkpoint_epochs"]
    exact = train(TrainConfig(**kw, epochs=first), dataset=digits, progress=False)
    for k, v in exact.model.state_dict().items():
        assert torch.equal(v, stopped.model.state_dict()[k])
    reloaded = load_model(stopped.checkpoints[first])
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in exact.model.state_dict().items())
    # a target never reached: all epochs are trained
    never = train(TrainConfig(**kw, epochs=3, stop_at_train_acc=1.0), dataset=digits, progress=False)
    assert list(never.history["epoch"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, float("nan"), "0.9", True])
def test_stop_at_train_acc_rejects_values_outside_0_1(bad):
    with pytest.raises(InputError, match="stop_at_train_acc"):
        TrainConfig(dataset="digits", stop_at_train_acc=bad)


def test_stop_at_train_acc_enters_a_study_run_key_only_when_set():
    """Absent (null), the key is what it was before the setting existed, so existing study directories
    are not retrained; set, it changes the key, and so does eval_every (the epochs where it may stop)."""
    from deepgeom.studies import load_config
    from deepgeom.studies.config import stable_key

    base = {"name": "k", "sweep": {"dataset": "digits", "model": "mlp", "width": 8, "depth": 1, "seed": 0},
            "train": {"epochs": 2}}
    a = load_config(base).runs[0]
    legacy = {**a.as_dict(), "train": {k: v for k, v in a.train.items()
                                        if k not in ("eval_every", "stop_at_train_acc")}}
    assert a.key == stable_key({"unit": "train", **legacy})
    b = load_config({**base, "train": {"epochs": 2, "stop_at_train_acc": 0.9}}).runs[0]
    c = load_config({**base, "train": {"epochs": 2, "stop_at_train_acc": 0.9, "eval_every": 2}}).runs[0]
    assert len({a.key, b.key, c.key}) == 3
    with pytest.raises(InputError, match="stop_at_train_acc"):
        load_config({**base, "train": {"epochs": 2, "stop_at_train_acc": 2}})


def test_cli_train_stop_at_train_acc(capsys):
    """--stop-at-train-acc: the run ends early, says so, and the JSON summary reports the epochs reached
    and the checkpoints actually saved; a value outside (0, 1] is refused with the parameter named."""
    args = ["train", "--family", "mlp", "--data", "digits", "--width", "32", "--depth", "1", "--epochs", "40",
            "--lr", "0.01", "--no-progress"]
    assert main([*args, "--stop-at-train-acc", "0.9"]) == 0
    assert "(stopped: training accuracy reached 0.9)" in capsys.readouterr().out
    assert main([*args, "--stop-at-train-acc", "0.9", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < summary["epochs"] < 40 and summary["train_acc"] >= 0.9
    assert summary["checkpoint_epochs"] == [0, summary["epochs"]]
    assert main([*args, "--stop-at-train-acc", "1.5"]) == 2
    assert "stop_at_train_acc must be in" in capsys.readouterr().err
