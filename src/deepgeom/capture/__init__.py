"""Capture the activations of any layer of any ``torch.nn.Module``.

* :func:`list_layers` — the names you can ask for (``"input"``, ``named_modules()`` names, ``"output"``).
* :func:`resolve_layers` — exact names, glob patterns and module types → names.
* :func:`stream` — per-batch ``{layer: (B, D) tensor}`` dicts, for analyses that never hold everything.
* :func:`capture` — all rows as ``(N, D)`` arrays under a memory budget, spilling to ``.npy`` files.
* :func:`load_capture` / :meth:`Capture.save` — one ``.npy`` per layer plus ``manifest.json``.
* :func:`tokenize_texts` — text → tokenizer dict that ``capture``/``stream`` accept;
  :func:`load_text_model` — a local Hugging Face / sentence-transformers directory, offline.

The package itself is callable: ``deepgeom.capture(model, data, ...)`` is :func:`capture`.
See docs/capture.md.
"""

import sys
import types

from ._layers import INPUT, OUTPUT, default_layers, list_layers, resolve_layers
from ._sources import load_model_source, parse_layer_list, select_inputs, texts_input
from ._store import Capture, UnknownLayerError, capture, layer_depths, load_capture, parse_bytes
from ._stream import REDUCE_MODES, StreamBatch, first_tensor, stream
from ._text import load_text_model, read_texts, tokenize_texts

__all__ = [
    "INPUT",
    "OUTPUT",
    "REDUCE_MODES",
    "Capture",
    "StreamBatch",
    "UnknownLayerError",
    "capture",
    "default_layers",
    "first_tensor",
    "layer_depths",
    "list_layers",
    "load_capture",
    "load_model_source",
    "parse_bytes",
    "parse_layer_list",
    "resolve_layers",
    "select_inputs",
    "stream",
    "tokenize_texts",
    "load_text_model",
    "read_texts",
    "texts_input",
]


class _CallableModule(types.ModuleType):
    """``deepgeom.capture`` is this package *and* callable as :func:`capture`.

    The issue's spelling ``deepgeom.capture(model, data, layers=...)`` then works without rebinding the
    package name to the function, which would break ``deepgeom.capture.stream`` and
    ``import deepgeom.capture as dc``.
    """

    def __call__(self, *args, **kwargs) -> Capture:
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
