"""ID profiles layer by layer, their tables and figures, and the ``deepgeom id`` command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepgeom.analysis.id_profile import id_profile, load_table, save_table
from deepgeom.cli import main
from deepgeom.data.manifolds import hypersphere, linear_subspace
from deepgeom.errors import InputError, UnknownNameError
from deepgeom.functional.intrinsic_dim import pca_id, twonn
from deepgeom.viz.id import plot_id_profile, plot_twonn_fit, plot_twonn_scale


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: on the loaded 2-core machine, 2 OpenMP threads make them several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyMLP(nn.Module):
    """Input: a 3-D linear manifold in 12 dims; the first layer is linear (ID stays 3)."""

    analysis_layers = ["input", "lin", "act", "out", "output"]

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(12, 40)
        self.act = nn.Tanh()
        self.out = nn.Linear(40, 2)

    def forward(self, x):
        return self.out(self.act(self.lin(x)))


@pytest.fixture(scope="module")
def data():
    return torch.from_numpy(linear_subspace(600, 3, 12, seed=0).astype(np.float32))


def test_id_profile_on_tiny_mlp(data):
    model = TinyMLP()
    df = id_profile(model, data, estimators=("twonn", "pca", "twonn_mle", "gride", "levina_bickel"))
    assert df["layer"].tolist() == TinyMLP.analysis_layers
    np.testing.assert_allclose(df["relative_depth"], [0, 0.25, 0.5, 0.75, 1.0])
    assert df["D"].tolist() == [12, 40, 40, 2, 2]
    assert (df["n"] == 600).all() and (df["n_duplicates"] == 0).all()
    for col in ("twonn_id", "twonn_err", "pca_id", "pca_pr", "twonn_mle_id", "gride_id", "levina_bickel_id"):
        assert df[col].notna().all(), col
    # a linear layer and a smooth injective tanh keep the 3-D manifold 3-D; the 2-unit output is ≤ 2
    assert np.allclose(df["twonn_id"].iloc[:3], 3, atol=0.4)
    assert df["twonn_id"].iloc[3] <= 2.2 and df["pca_id"].iloc[0] == 3
    # the table's numbers are the estimators' own on the captured arrays
    with torch.no_grad():
        hidden = model.lin(data).numpy()
    assert df["twonn_id"].iloc[1] == pytest.approx(twonn(hidden).id, rel=1e-6)
    assert df["pca_id"].iloc[1] == pca_id(hidden).id


def test_id_profile_from_capture_directory_and_mapping(tmp_path, data):
    from deepgeom.capture import capture

    cap = capture(TinyMLP(), data, progress=False)
    cap.save(tmp_path / "cap")
    a = id_profile(cap)
    b = id_profile(str(tmp_path / "cap"))
    pd.testing.assert_frame_equal(a, b)
    c = id_profile({"x": linear_subspace(300, 2, 5, seed=1), "y": hypersphere(300, 1, 4, seed=1)})
    assert c["relative_depth"].tolist() == [0.0, 1.0]  # no depths given: evenly spaced
    assert c["twonn_id"].round().tolist() == [2.0, 1.0]
    d = id_profile(cap, layers=["act"])
    assert d["layer"].tolist() == ["act"]


def test_id_profile_degenerate_layer_and_duplicates():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    Xd = np.vstack([X, X[:40]])
    df = id_profile({"dead": np.zeros((240, 6)), "dup": Xd})
    assert np.isnan(df["twonn_id"].iloc[0]) and "constant" in df["note"].iloc[0]
    assert df["n_duplicates"].tolist() == [239, 40]
    assert df["twonn_id"].iloc[1] == pytest.approx(twonn(X).id, rel=1e-12)


def test_id_profile_errors(data):
    with pytest.raises(UnknownNameError, match="estimator"):
        id_profile({"a": np.eye(5)}, estimators=("twonn", "lid"))
    with pytest.raises(InputError, match="data is required"):
        id_profile(TinyMLP())
    with pytest.raises(InputError, match="does not exist"):
        id_profile("/nonexistent/capture")
    with pytest.raises(UnknownNameError, match="layer"):
        id_profile({"a": np.random.default_rng(0).standard_normal((50, 3))}, layers=["b"])
    with pytest.raises(InputError, match="nn.Module"):
        id_profile(42)


def test_save_and_load_table(tmp_path):
    df = id_profile({"a": linear_subspace(200, 2, 6, seed=0)})
    for name in ("p.csv", "p.parquet"):
        path = save_table(df, tmp_path / name)
        back = load_table(path)
        pd.testing.assert_frame_equal(back, df, check_dtype=False)
    with pytest.raises(InputError, match=r"\.csv or \.parquet"):
        save_table(df, tmp_path / "p.xlsx")


def test_figures(tmp_path):
    df = id_profile({"a": linear_subspace(300, 2, 6, seed=0), "b": linear_subspace(300, 3, 6, seed=0)})
    fig = plot_id_profile([df, df.assign(twonn_id=df["twonn_id"] + 1)], ["trained", "untrained"],
                          path=tmp_path / "prof")
    assert fig is not None
    assert (tmp_path / "prof.png").stat().st_size > 0 and (tmp_path / "prof.svg").stat().st_size > 0
    r = twonn(linear_subspace(300, 2, 6, seed=0))
    plot_twonn_fit(r, path=tmp_path / "fit")
    from deepgeom.functional.intrinsic_dim import twonn_scale

    plot_twonn_scale(twonn_scale(linear_subspace(400, 2, 6, seed=0), min_points=50), path=tmp_path / "scale")
    for stem in ("fit", "scale"):
        assert (tmp_path / f"{stem}.png").exists() and (tmp_path / f"{stem}.svg").exists()
    with pytest.raises(InputError, match="labels"):
        plot_id_profile([df, df], ["one"])
    with pytest.raises(InputError, match="TwoNNResult"):
        plot_twonn_fit(df)


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("method", ["twonn", "twonn_mle", "gride", "levina_bickel", "pca"])
def test_cli_estimate_json(tmp_path, capsys, method):
    X = hypersphere(400, 2, 8, seed=0).astype(np.float32)
    np.save(tmp_path / "x.npy", np.vstack([X, X[:8]]))
    assert main(["id", "estimate", str(tmp_path / "x.npy"), "--method", method, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"id", "method", "n", "error", "n_points", "n_discarded"} <= set(out)
    assert out["method"] == method and out["n_points"] == 408
    if method == "pca":
        assert out["id"] == pca_id(np.vstack([X, X[:8]])).id
    else:
        assert out["n_duplicates"] == 8 and abs(out["id"] - 2) < 0.3
    if method == "twonn":
        assert out["n"] == int(0.9 * 400) and out["n_discarded"] == 408 - out["n"] and out["warnings"]


def test_cli_estimate_old_mle_name_is_twonn_mle_with_a_deprecation(tmp_path, capsys):
    from deepgeom.functional.intrinsic_dim import twonn

    X = hypersphere(400, 3, 8, seed=1).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    assert main(["id", "estimate", str(tmp_path / "x.npy"), "--method", "mle", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["method"] == "twonn_mle" and "deprecated" in captured.err and "twonn_mle" in captured.err
    # the same number as the API's TwoNN maximum-likelihood form, not Levina-Bickel's
    assert out["id"] == twonn(X, method="mle").id
    assert main(["id", "estimate", str(tmp_path / "x.npy"), "--method", "twonn_mle", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == out["id"]


def test_cli_estimate_errors(tmp_path, capsys):
    assert main(["id", "estimate", str(tmp_path / "missing.npy")]) == 2
    np.save(tmp_path / "c.npy", np.ones((30, 3)))
    assert main(["id", "estimate", str(tmp_path / "c.npy")]) == 2
    assert "constant" in capsys.readouterr().err
    X = hypersphere(100, 2, 4, seed=0)
    np.save(tmp_path / "d.npy", np.vstack([X, X[:3]]))
    assert main(["id", "estimate", str(tmp_path / "d.npy"), "--duplicates", "error"]) == 2


def test_cli_profile_from_capture(tmp_path, capsys, data):
    from deepgeom.capture import capture

    capture(TinyMLP(), data, progress=False).save(tmp_path / "cap")
    rc = main(["id", "profile", "--capture", str(tmp_path / "cap"), "--out", str(tmp_path / "o"), "--json"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in records] == TinyMLP.analysis_layers
    for name in ("profile.csv", "profile.parquet", "id_profile.png", "id_profile.svg"):
        assert (tmp_path / "o" / name).exists()
    assert load_table(tmp_path / "o" / "profile.csv")["twonn_id"].tolist() == pytest.approx(
        [r["twonn_id"] for r in records])
    assert main(["id", "profile", "--capture", str(tmp_path / "cap"), "--family", "mlp",
                 "--out", str(tmp_path / "o2")]) == 2


def test_cli_profile_from_model_family(tmp_path, capsys):
    rc = main(["id", "profile", "--family", "mlp", "--n", "200", "--estimators", "twonn",
               "--out", str(tmp_path / "o"), "--json"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["layer"] == "input" and records[-1]["layer"] == "output"
    assert records[0]["relative_depth"] == 0 and records[-1]["relative_depth"] == 1
    assert all(r["n"] == 200 and r["twonn_id"] > 0 for r in records)
    assert (tmp_path / "o" / "id_profile.svg").exists()
