"""Capture the activations of any layer of any ``torch.nn.Module``.

* :func:`list_layers` — the names you can ask for (``"input"``, ``named_modules()`` names, ``"output"``).
* :func:`resolve_layers` — exact names, glob patterns and module types → names.
* :func:`stream` — per-batch ``{layer: (B, D) tensor}`` dicts, for analyses that never hold everything.
* :func:`capture` — all rows as ``(N, D)`` arrays under a memory budget, spilling to ``.npy`` memmaps.
* :func:`load_capture` / :meth:`Capture.save` — one ``.npy`` per layer plus ``manifest.json``.
* :func:`tokenize_texts` — text → tokenizer dict that ``capture``/``stream`` accept.

See docs/capture.md.
"""

from ._layers import INPUT, OUTPUT, default_layers, list_layers, resolve_layers
from ._store import Capture, capture, load_capture, parse_bytes
from ._stream import REDUCE_MODES, StreamBatch, first_tensor, stream
from ._text import tokenize_texts

__all__ = [
    "INPUT",
    "OUTPUT",
    "REDUCE_MODES",
    "Capture",
    "StreamBatch",
    "capture",
    "default_layers",
    "first_tensor",
    "list_layers",
    "load_capture",
    "parse_bytes",
    "resolve_layers",
    "stream",
    "tokenize_texts",
]
