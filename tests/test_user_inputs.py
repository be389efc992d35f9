"""The user's own model (a class or factory in a .py file), own data (.npy/.npz/.csv/.parquet with labels)
and own analyses (analyses_from) work from the CLI and in studies; names and defaults are one per thing."""

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from deepgeom import InputError
from deepgeom.cli import main
from deepgeom.data import load

MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn


    class SmallCNN(nn.Module):
        def __init__(self, width=4, n_classes=10, input_shape=(1, 8, 8)):
            super().__init__()
            self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(4 * width, 16)
            self.relu2 = nn.ReLU()
            self.out = nn.Linear(16, n_classes)

        def forward(self, x):
            return self.out(self.relu2(self.fc(self.flat(self.pool(self.relu(self.conv(x)))))))


    def make_mlp(width=16, depth=2, input_shape=(64,), n_classes=10):
        d = 1
        for s in input_shape:
            d *= s
        layers = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
        return nn.Sequential(*layers)


    def fixed(n_classes=10):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, n_classes))
''')

ANALYSES_PY = textwrap.dedent('''
    import pandas as pd
    from deepgeom.studies import register_analysis


    @register_analysis("weight_norms_test", defaults={"epoch": None})
    def weight_norms(ctx):
        """Frobenius norm of every parameter tensor of the trained model."""
        model = ctx.run.model(ctx.params["epoch"])
        return pd.DataFrame([{"param": n, "norm": float(p.detach().norm())} for n, p in model.named_parameters()])
''')


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(MODEL_PY)
    ds = load("digits", seed=0)
    x = ds.x_test.numpy()[:120]
    y = ds.y_test.numpy()[:120]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    df = pd.DataFrame(x.reshape(len(x), -1), columns=[f"p{i}" for i in range(64)])
    df["label"] = y
    df.to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_layers_and_capture_of_a_user_class_with_weights(user_dir, capsys):
    from safetensors.torch import save_file

    from deepgeom.models.user import import_object

    cls = import_object(f"{user_dir}/mynets.py:SmallCNN")
    torch.manual_seed(3)
    net = cls(width=4).eval()
    save_file(net.state_dict(), str(user_dir / "w.safetensors"))

    assert main(["layers", "--model", "mynets.py:SmallCNN", "--model-kwargs", '{"width": 4}', "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert names == ["input", "conv", "relu", "pool", "flat", "fc", "relu2", "out", "output"]

    assert main(["capture", "--model", "mynets.py:SmallCNN", "--model-kwargs", '{"width": 4}', "--weights",
                 "w.safetensors", "--input", "x.npy", "--labels", "y.npy", "--layers", "relu2,output",
                 "--out", "cap", "--no-progress"]) == 0
    x = torch.from_numpy(np.load(user_dir / "x.npy"))
    with torch.no_grad():  # the same numbers as running the user's module by hand
        hidden = net.relu2(net.fc(net.flat(net.pool(net.relu(net.conv(x))))))
        out = net.out(hidden)
    np.testing.assert_allclose(np.load(user_dir / "cap" / "relu2.npy"), hidden.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.load(user_dir / "cap" / "output.npy"), out.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.load(user_dir / "cap" / "labels.npy"), np.load(user_dir / "y.npy"))


def test_id_profile_cka_heatmap_spectrum_with_a_user_factory_and_csv_data(user_dir, capsys):
    # a CSV with a label column: every row used (no test split), not "the test split is empty"
    assert main(["id", "profile", "--model", "mynets.py:make_mlp", "--data", "d.csv", "--out", "prof",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["n"] for r in rows] == [120] * len(rows) and rows[1]["D"] == 64 and rows[2]["D"] == 16
    assert main(["cka", "heatmap", "--model", "mynets.py:make_mlp", "--model-b", "mynets.py:SmallCNN",
                 "--data", "x.npy", "--out", "heat", "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["layers_a"]) == 8 and len(res["layers_b"]) == 9
    # module files saved with torch.save work too, with the data given as a file — once the user vouches
    # for the pickle with --trust-pickle (issue 15)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)), user_dir / "m.pt")
    assert main(["id", "profile", "--module", "m.pt", "--trust-pickle", "--data", "x.npy", "--out", "p2",
                 "--json"]) == 0
    assert all(r["n"] == 120 for r in json.loads(capsys.readouterr().out))
    assert main(["cka", "heatmap", "--module", "m.pt", "--trust-pickle", "--data", "x.npy", "--out", "h2",
                 "--no-progress"]) == 0
    capsys.readouterr()


def test_user_model_errors_are_input_errors(user_dir, capsys):
    assert main(["layers", "--model", "mynets.py:Nope"]) == 2
    assert "has no 'Nope'" in capsys.readouterr().err
    assert main(["layers", "--model", "missing.py:Net"]) == 2
    assert main(["layers", "--model", "mynets.py:SmallCNN", "--model-kwargs", "{bad json"]) == 2
    assert "JSON object" in capsys.readouterr().err
    assert main(["layers", "--model", "mynets.py:SmallCNN", "--model-kwargs", '{"colour": 1}']) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["layers", "--family", "mlp", "--weights", "w.pt"]) == 2
    assert "go with --model" in capsys.readouterr().err


def test_study_with_user_model_width_sweep_csv_data_and_analyses_from(user_dir):
    from safetensors.torch import load_file

    from deepgeom.studies import run_study, unregister_analysis

    (user_dir / "my_analyses.py").write_text(ANALYSES_PY)
    (user_dir / "study.yaml").write_text(textwrap.dedent("""
        name: user
        sweep: {dataset: d.csv, model: mynets.py:make_mlp, width: [8, 16], depth: 1}
        data: {options: {d.csv: {test_fraction: 0.25}}}
        train: {epochs: 1, batch_size: 32}
        analyses_from: my_analyses.py
        analyses:
          weight_norms_test: {}
          id_profile: {n_points: 60, epochs: last}
    """))
    try:
        res = run_study(user_dir / "study.yaml", user_dir / "st", progress=False)
        assert not res.failed
        norms = pd.read_csv(user_dir / "st" / "tables" / "weight_norms_test.csv")
        # the factory got the swept width: its first Linear has width rows
        for width, group in norms.groupby("width"):
            run = group["run"].iloc[0]
            state = load_file(str(user_dir / "st" / "runs" / run / "checkpoints" / "epoch_0001.safetensors"))
            assert state["1.weight"].shape == (width, 64)
            got = dict(zip(group["param"], group["norm"], strict=True))
            # the user's table holds the checkpoint's own norms (last epoch)
            assert got["1.weight"] == pytest.approx(float(state["1.weight"].norm()), rel=1e-6)
        prof = pd.read_csv(user_dir / "st" / "tables" / "id_profiles.csv")
        assert set(prof["width"]) == {8, 16} and prof["twonn_id"].notna().any()
        assert all(m.endswith("mynets.py:make_mlp") for m in prof["model"])
    finally:
        unregister_analysis("weight_norms_test")


def test_study_rejects_a_width_sweep_the_factory_cannot_take(user_dir):
    from deepgeom.studies import load_config

    cfg = load_config({"sweep": {"dataset": "digits", "model": f"{user_dir}/mynets.py:fixed", "width": [8, 16]},
                       "train": {"epochs": 0}})
    from deepgeom.studies.training import train_config
    from deepgeom.train import train

    with pytest.raises(InputError, match="takes no 'width'"):
        train(train_config(cfg.runs[1]), progress=False)


# ------------------------------------------------------------------------------------------ names
def test_cli_train_defaults_are_the_study_defaults():
    from deepgeom._defaults import TRAIN_DEFAULTS
    from deepgeom.cli import build_parser
    from deepgeom.studies.config import TRAIN_KEYS

    args = build_parser().parse_args(["train"])
    for key in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "loss"):
        assert getattr(args, key) == TRAIN_KEYS[key] == TRAIN_DEFAULTS[key], key


def test_cka_heatmap_is_a_subcommand_and_old_forms_still_work(tmp_path, capsys):
    from deepgeom.functional.cka import linear_cka

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(50, 4))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    for argv in (["cka", "pair", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--json"],
                 ["cka", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--json"],
                 ["cka", "--json", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["cka"] == pytest.approx(linear_cka(a, b), rel=1e-12)
    with pytest.raises(SystemExit) as exc:
        main(["cka", "heatmap", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--run-a" in text and "--model-b" in text and "A.npy" not in text.split("options")[0]
    # the old mixed spelling: flags, then the word heatmap
    assert main(["cka", "--family", "mlp", "--width", "8", "--depth", "1", "heatmap", "--n", "60",
                 "--out", str(tmp_path / "h"), "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert "deprecated" in captured.err and json.loads(captured.out)["within"] is True


def test_id_estimate_offers_every_estimator_name():
    from deepgeom.analysis.id_profile import ESTIMATORS
    from deepgeom.cli import build_parser
    from deepgeom.cli.cmd_id import METHODS

    assert set(METHODS) == set(ESTIMATORS) == {"twonn", "twonn_mle", "levina_bickel", "gride", "pca"}
    p = build_parser()
    assert p.parse_args(["id", "estimate", "x.npy", "--method", "levina_bickel"]).method == "levina_bickel"
    with pytest.raises(SystemExit):
        p.parse_args(["id", "estimate", "x.npy", "--method", "nope"])


def test_user_spec_parsing_errors():
    from deepgeom.models.user import parse_kwargs, parse_model_spec

    assert parse_model_spec("a/b.py:Net") == ("a/b.py", "Net")
    assert parse_model_spec("pkg.mod:make") == ("pkg.mod", "make")
    for bad in ("net.py", "a.py:", "a.py:1x"):
        with pytest.raises(InputError, match="model spec"):
            parse_model_spec(bad)
    assert parse_kwargs('{"w": 2}') == {"w": 2}
    with pytest.raises(InputError, match="JSON object"):
        parse_kwargs("[1, 2]")


def test_spectrum_of_a_user_model_equals_the_spectrum_of_its_captured_features(user_dir, capsys):
    """spectrum --model (features: the leaf before the last nn.Linear; NC3 from that Linear) gives the
    same numbers as spectrum FEATURES.npy --weights W.npy --bias b.npy on features computed by hand."""
    from safetensors.torch import save_file

    from deepgeom.models.user import load_user_model

    net = load_user_model(f"{user_dir}/mynets.py:SmallCNN", {"width": 4})
    assert net.penultimate == "relu2" and net.head is net.out
    assert "head" not in dict(net.named_modules())  # not registered a second time
    save_file(net.state_dict(), str(user_dir / "w.safetensors"))
    assert main(["spectrum", "--model", "mynets.py:SmallCNN", "--model-kwargs", '{"width": 4}', "--weights",
                 "w.safetensors", "--data", "x.npy", "--labels", "y.npy", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    x = torch.from_numpy(np.load(user_dir / "x.npy"))
    with torch.no_grad():
        feats = net.relu2(net.fc(net.flat(net.pool(net.relu(net.conv(x)))))).numpy()
    np.save(user_dir / "f.npy", feats)
    np.save(user_dir / "W.npy", net.out.weight.detach().numpy())
    np.save(user_dir / "b.npy", net.out.bias.detach().numpy())
    assert main(["spectrum", "f.npy", "--labels", "y.npy", "--weights", "W.npy", "--bias", "b.npy", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    for key in ("n_samples", "n_features", "rank", "dominant", "regime", "n_classes"):
        assert got[key] == want[key], key
    for key in ("nc1", "nc3", "effective_rank", "top_eigenvalue"):
        assert got[key] == pytest.approx(want[key], rel=1e-5), key


def test_a_pickled_module_needs_trust_pickle_in_every_command(user_dir, capsys):
    """--module FILE.pt is refused (status 2, one line) without --trust-pickle wherever a command takes it."""
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)), user_dir / "m.pt")
    for argv in (["layers", "--module", "m.pt"],
                 ["capture", "--module", "m.pt", "--input", "x.npy", "--out", "c3", "--no-progress"],
                 ["id", "profile", "--module", "m.pt", "--data", "x.npy", "--out", "p3"],
                 ["cka", "heatmap", "--module", "m.pt", "--data", "x.npy", "--out", "h3", "--no-progress"],
                 ["cka", "heatmap", "--model", "mynets.py:make_mlp", "--module-b", "m.pt", "--data", "x.npy",
                  "--out", "h3", "--no-progress"],
                 ["spectrum", "--module", "m.pt", "--data", "x.npy", "--labels", "y.npy"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--trust-pickle" in err, (argv, err)
    assert not (user_dir / "c3").exists() and not (user_dir / "h3").exists()


def test_module_file_py_class_is_the_model_route(user_dir, capsys):
    """--module FILE.py:NAME (issue 15's spelling of the safe route) is --model FILE.py:NAME: the same
    loader (deepgeom.models.user.load_user_model), the same layers, the same captured numbers."""
    from safetensors.torch import save_file

    from deepgeom.models.user import load_user_model

    net = load_user_model(f"{user_dir}/mynets.py:SmallCNN", {"width": 4})
    save_file(net.state_dict(), str(user_dir / "w4.safetensors"))
    layers = {}
    for flag in ("--model", "--module"):
        src = [flag, "mynets.py:SmallCNN", "--model-kwargs", '{"width": 4}', "--weights", "w4.safetensors"]
        assert main(["layers", *src, "--json"]) == 0
        layers[flag] = [r["name"] for r in json.loads(capsys.readouterr().out)]
        assert main(["capture", *src, "--input", "x.npy", "--layers", "relu2,output", "--out", f"cap{flag}",
                     "--no-progress"]) == 0
        assert main(["spectrum", *src, "--data", "x.npy", "--labels", "y.npy", "--json"]) == 0
        capsys.readouterr()
    assert layers["--model"] == layers["--module"]
    for name in ("relu2", "output"):
        np.testing.assert_array_equal(np.load(user_dir / "cap--model" / f"{name}.npy"),
                                      np.load(user_dir / "cap--module" / f"{name}.npy"))
    # weights that do not fit are one line naming the file, either spelling
    save_file({"nope": torch.zeros(2)}, str(user_dir / "bad.safetensors"))
    for flag in ("--model", "--module"):
        assert main(["layers", flag, "mynets.py:SmallCNN", "--weights", "bad.safetensors"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "bad.safetensors" in err, err
