"""Where the CLI's models and inputs come from: a model family, a training run, or a saved module file.

Kept in the library (not the CLI) so that ``deepgeom layers`` and ``deepgeom capture`` only parse
arguments; each helper returns plain objects that :func:`capture` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import load, load_file, read_labels
from ..errors import InputError
from ..models import build
from ..models.user import is_user_spec, load_user_model
from ..train import load_model, load_run
from ._text import load_text_model, read_texts, tokenize_texts

__all__ = ["ModelSource", "load_model_source", "select_inputs", "parse_layer_list"]


@dataclass
class ModelSource:
    """A model plus, when known, the dataset it belongs to and a description for the manifest."""

    model: nn.Module
    dataset: Any = None  # a deepgeom.data.Dataset, when the source names one
    info: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None  # for a text model: what turns texts into its inputs (tokenize_texts)


def parse_layer_list(text: str | None) -> list[str] | None:
    """``"a,b,*.relu"`` → ``["a", "b", "*.relu"]``; empty/None → None (the model's default layers)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _load_data(name: str, seed: int, options: dict[str, Any] | None = None, shuffle_fraction: float = 0.0):
    return load(name, seed=seed, shuffle_fraction=shuffle_fraction, **(options or {}))


def load_model_source(*, family: str | None = None, data: str | None = None, width: int | None = None,
                      depth: int | None = None, seed: int = 0, run: str | Path | None = None,
                      epoch: int | None = None, module: str | Path | None = None,
                      torchscript: str | Path | None = None, model: str | None = None,
                      model_kwargs: str | dict | None = None, weights: str | Path | None = None,
                      need_data: bool = True, data_options: dict[str, Any] | None = None,
                      text_model: str | Path | None = None, trust_pickle: bool = False) -> ModelSource:
    """Build or load the model for the CLI: exactly one of ``family``, ``run``, ``module``, ``torchscript``,
    ``model``, ``text_model``.

    * ``family`` (+ ``data`` for the input shape and classes, ``width``, ``depth``, ``seed``):
      :func:`deepgeom.models.build` — an untrained network.
    * ``run`` (+ ``epoch``, default the latest checkpoint): :func:`deepgeom.train.load_model`; the
      dataset is the run's own (same name, options, seed and shuffled labels) unless ``data`` is given.
    * ``module="model.pt"``: a whole ``nn.Module`` saved with ``torch.save(model)``. Unpickling runs
      whatever code the file carries (``torch.load(weights_only=False)``), so it is refused unless
      ``trust_pickle=True`` — only for files you made or trust.
    * ``module="model.py:ClassName"``: the safe route, the same as ``model=`` (below): the class or
      factory is imported from that Python file (code you can read) and ``weights`` — tensors only —
      are loaded into it strictly.
    * ``torchscript``: ``torch.jit.load`` — layers can be listed, but sub-module hooks of a scripted
      model do not fire, so only ``input``/``output`` capture.

    * ``text_model``: a local Hugging Face or sentence-transformers model directory, with its tokenizer
      (:func:`deepgeom.capture.load_text_model`); its inputs are texts (:func:`texts_input`).
    * ``model``: your own class or factory, ``path/to/file.py:NAME`` or ``module:NAME``, called with
      ``model_kwargs`` (a dict or a JSON object string), then ``weights`` (``.safetensors`` or a state
      dict ``.pt``) loaded if given (:func:`deepgeom.models.user.load_user_model`).

    ``data_options`` are passed to :func:`deepgeom.data.load` (e.g. ``labels=FILE`` or
    ``label_column=NAME`` for a user file). ``need_data=False`` skips loading the dataset where the model does not need it for its shape
    (``run``, ``module``, ``torchscript``), e.g. to list layers.
    """
    given = [k for k, v in (("--family", family), ("--run", run), ("--module", module),
                            ("--torchscript", torchscript), ("--model", model),
                            ("--text-model", text_model)) if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one model source: --family F (with --data), --run DIR, --module FILE.pt, "
                         f"--torchscript FILE.pt, --model FILE.py:NAME or --text-model DIR; got {given or 'none'}")
    if module is not None:
        if is_user_spec(str(module)):  # --module file.py:Class: the same safe route as --model
            model, module = str(module), None
    if (model_kwargs is not None or weights is not None) and model is None:
        raise InputError("--model-kwargs and --weights go with --model FILE.py:NAME (or --module FILE.py:CLASS), "
                         "the class or factory their state dict belongs to")
    opts = dict(data_options or {})
    if family is not None:
        ds = _load_data(data or "mnist1d", seed, opts)
        model = build(family, input_shape=ds.input_shape, n_classes=max(int(ds.n_classes), 1), width=width,
                      depth=depth, seed=seed)
        return ModelSource(model, ds, {"source": "family", "family": family, "data": ds.name,
                                       "model_config": getattr(model, "config", None)})
    if run is not None:
        run_dir = Path(run)
        if not run_dir.is_dir():
            raise InputError(f"--run {run_dir} is not a directory (a run written by deepgeom train)")
        info = load_run(run_dir)
        model = load_model(run_dir, epoch)
        cfg = info.config
        ds = (None if not need_data else _load_data(data, seed, opts) if data is not None else
              _load_data(cfg.dataset, cfg.seed, cfg.dataset_options, cfg.shuffle_fraction))
        used_epoch = epoch if epoch is not None else (max(info.checkpoints) if info.checkpoints else None)
        return ModelSource(model, ds, {"source": "run", "run": str(run_dir), "epoch": used_epoch,
                                       "data": getattr(ds, "name", None), "model_config": info.model_config})
    if text_model is not None:
        net, tok = load_text_model(text_model)
        return ModelSource(net, None, {"source": "text", "text_model": str(text_model)}, tokenizer=tok)
    if model is not None:
        net = load_user_model(model, model_kwargs, weights)
        ds = _load_data(data, seed, opts) if data is not None and need_data else None
        return ModelSource(net, ds, {"source": "model", "model": model, "weights": None if weights is None
                                     else str(weights), "data": getattr(ds, "name", None)})
    path = Path(module if module is not None else torchscript)  # type: ignore[arg-type]
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    if module is not None and not trust_pickle:
        raise InputError(
            f"--module {path} is a pickle: loading it runs any code the file contains (torch.load with "
            "weights_only=False). Pass --trust-pickle only for a file you made or trust, or use the safe route: "
            "--model model.py:ClassName --weights model.safetensors")
    if torchscript is not None:
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and others for bad files
            raise InputError(f"{path} is not a TorchScript file (torch.jit.save): {exc}") from exc
    else:
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways (UnpicklingError, EOF, zip)
            raise InputError(f"{path} is not a file written by torch.save(model): {exc}") from exc
        if not isinstance(model, nn.Module):
            raise InputError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module (save the whole "
                             "model with torch.save(model, path), not its state_dict)")
    ds = _load_data(data, seed, opts) if data is not None and need_data else None
    return ModelSource(model, ds, {"source": "torchscript" if torchscript is not None else "module",
                                   "file": str(path), "data": getattr(ds, "name", None)})


def select_inputs(source: ModelSource, *, split: str | None = None, n: int | None = None,
                  inputs: str | Path | None = None,
                  data_options: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The first ``n`` examples (and labels) of the source's dataset split, or of an input file.

    ``split`` None means the test split, or every example when the data has no test split (a user
    file without ``x_test``). ``inputs`` is a data file (``.npy``, ``.npz``, ``.csv``, ``.parquet``,
    ``.pt``, ``.safetensors``; :func:`deepgeom.data.load_file`, with ``data_options`` such as
    ``labels=`` or ``label_column=``) whose examples are all used, in order.
    Returns ``(x, y)`` with ``y`` None when unlabelled. Examples are taken in order, never sampled,
    so captures of two models on the same source line up row by row.
    """
    if split is not None and split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test'; got {split!r}")
    if inputs is not None:
        ds = load_file(inputs, **(data_options or {}))
        x, y, where = ds.x_train, ds.y_train, f"file {inputs}"
    else:
        ds = source.dataset
        if ds is None:
            raise InputError("no data: give --data NAME|FILE (or --input FILE) for a --module/--model/"
                             "--torchscript model")
        if split is None:
            split = "test" if int(ds.x_test.shape[0]) > 0 else "train"
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        where = f"{split} split of {ds.name}"
    total = int(x.shape[0])
    if total == 0:
        raise InputError(f"the {where} is empty")
    if n is not None:
        if int(n) < 1:
            raise InputError(f"n must be a positive number of examples; got {n}")
        if int(n) > total:
            raise InputError(f"n={n} but the {where} holds only {total} examples")
        x = x[: int(n)]
        y = None if y is None else y[: int(n)]
    return x, y


def texts_input(source: ModelSource, texts_file: str | Path, *, n: int | None = None,
                max_length: int | None = None, labels: str | Path | None = None) -> tuple[Any, Any]:
    """A text model's inputs from a file of texts (one per line): the tokenizer output for the first
    ``n`` texts, padded together (truncated to ``max_length`` tokens), and their labels from
    ``labels`` (one per text) or None."""

    if source.tokenizer is None:
        raise InputError("--texts needs a text model: --text-model DIR")
    texts = read_texts(texts_file)
    y = None
    if labels is not None:
        y = read_labels(labels, f"labels {labels}")
        if y.shape[0] != len(texts):
            raise InputError(f"{y.shape[0]} labels in {labels} for {len(texts)} texts in {texts_file}; "
                             "give one label per text")
    if n is not None:
        if int(n) < 1 or int(n) > len(texts):
            raise InputError(f"n={n}, but {texts_file} holds {len(texts)} texts")
        texts, y = texts[: int(n)], None if y is None else y[: int(n)]
    if max_length is not None and int(max_length) < 1:
        raise InputError(f"--max-length must be >= 1 token; got {max_length}")
    return tokenize_texts(source.tokenizer, texts, max_length=max_length), y
