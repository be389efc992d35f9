"""Helpers shared by the subcommands (not a subcommand: the dispatcher only loads ``cmd_*`` modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def load_npy(path: str | Path, what: str = "array", ndim: int | None = None) -> Any:
    """A ``.npy`` file memory-mapped read-only (large captures are streamed, not loaded); pickles,
    truncated files, garbage and non-numeric dtypes refused (:func:`deepgeom._validation.load_npy`),
    and with ``ndim`` an array of another rank, naming the file."""
    # lazy: `deepgeom --help` must not import torch, numpy or pandas (tests/test_cli_fast.py)
    from .._validation import load_npy as _load

    a = _load(path, what)
    if ndim is not None and a.ndim != ndim:
        shape = {1: "(N,), one value per example", 2: "(N, D), one row per example"}.get(ndim, f"{ndim}-D")
        raise InputError(f"{what} {path} has shape {a.shape}; expected {shape}")
    return a


def add_user_model_flags(g, suffix: str = "", *, weights: bool = True) -> None:
    """``--module``, ``--model``, ``--model-kwargs`` (and ``--weights``) for one model (``suffix`` "-b" for a
    second one), plus ``--trust-pickle`` once: the same flags and help in every subcommand that loads a
    user's model. ``weights=False`` where ``--weights`` already means something else (``spectrum``)."""
    g.add_argument(f"--module{suffix}", metavar="FILE", help="FILE.py:CLASS (the same as --model FILE.py:CLASS), "
                   "or FILE.pt saved with torch.save(model) — a pickle, refused without --trust-pickle")
    g.add_argument(f"--model{suffix}", metavar="FILE.py:NAME", help="your own model: an nn.Module class or a "
                   "factory in a Python file (or module:NAME for an importable module)")
    g.add_argument(f"--model-kwargs{suffix}", metavar="JSON",
                   help='keyword arguments for --model, as JSON, e.g. \'{"width": 32}\'')
    if weights:
        g.add_argument(f"--weights{suffix}", metavar="FILE", help="weights for --model (or --module FILE.py:CLASS): "
                       ".safetensors or a state_dict .pt, read as tensors only")
    if not suffix:
        g.add_argument("--trust-pickle", action="store_true", help="allow a pickled --module FILE.pt: unpickling "
                       "runs any code the file carries, so only for files you made or trust")
