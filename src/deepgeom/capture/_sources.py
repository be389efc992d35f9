"""Where the CLI's models and inputs come from: a model family, a training run, or a saved module file.

Kept in the library (not the CLI) so that ``deepgeom layers`` and ``deepgeom capture`` only parse
arguments; each helper returns plain objects that :func:`capture` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError

__all__ = ["ModelSource", "load_model_source", "select_inputs", "parse_layer_list"]


@dataclass
class ModelSource:
    """A model plus, when known, the dataset it belongs to and a description for the manifest."""

    model: nn.Module
    dataset: Any = None  # a deepgeom.data.Dataset, when the source names one
    info: dict[str, Any] = field(default_factory=dict)


def parse_layer_list(text: str | None) -> list[str] | None:
    """``"a,b,*.relu"`` → ``["a", "b", "*.relu"]``; empty/None → None (the model's default layers)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _load_data(name: str, seed: int, options: dict[str, Any] | None = None, shuffle_fraction: float = 0.0):
    from ..data import load
    return load(name, seed=seed, shuffle_fraction=shuffle_fraction, **(options or {}))


def load_model_source(*, family: str | None = None, data: str | None = None, width: int | None = None,
                      depth: int | None = None, seed: int = 0, run: str | Path | None = None,
                      epoch: int | None = None, module: str | Path | None = None,
                      torchscript: str | Path | None = None, need_data: bool = True) -> ModelSource:
    """Build or load the model for the CLI: exactly one of ``family``, ``run``, ``module``, ``torchscript``.

    * ``family`` (+ ``data`` for the input shape and classes, ``width``, ``depth``, ``seed``):
      :func:`deepgeom.models.build` — an untrained network.
    * ``run`` (+ ``epoch``, default the latest checkpoint): :func:`deepgeom.train.load_model`; the
      dataset is the run's own (same name, options, seed and shuffled labels) unless ``data`` is given.
    * ``module``: a whole ``nn.Module`` saved with ``torch.save(model)`` — unpickled with
      ``weights_only=False``, so only for files you trust.
    * ``torchscript``: ``torch.jit.load`` — layers can be listed, but sub-module hooks of a scripted
      model do not fire, so only ``input``/``output`` capture.

    ``need_data=False`` skips loading the dataset where the model does not need it for its shape
    (``run``, ``module``, ``torchscript``), e.g. to list layers.
    """
    given = [k for k, v in (("--family", family), ("--run", run), ("--module", module),
                            ("--torchscript", torchscript)) if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one model source: --family F (with --data), --run DIR, --module FILE.pt "
                         f"or --torchscript FILE.pt; got {given or 'none'}")
    if family is not None:
        from ..models import build
        ds = _load_data(data or "mnist1d", seed)
        model = build(family, input_shape=ds.input_shape, n_classes=max(int(ds.n_classes), 1), width=width,
                      depth=depth, seed=seed)
        return ModelSource(model, ds, {"source": "family", "family": family, "data": ds.name,
                                       "model_config": getattr(model, "config", None)})
    if run is not None:
        from ..train import load_model, load_run
        run_dir = Path(run)
        if not run_dir.is_dir():
            raise InputError(f"--run {run_dir} is not a directory (a run written by deepgeom train)")
        info = load_run(run_dir)
        model = load_model(run_dir, epoch)
        cfg = info.config
        ds = (None if not need_data else _load_data(data, seed) if data is not None else
              _load_data(cfg.dataset, cfg.seed, cfg.dataset_options, cfg.shuffle_fraction))
        used_epoch = epoch if epoch is not None else (max(info.checkpoints) if info.checkpoints else None)
        return ModelSource(model, ds, {"source": "run", "run": str(run_dir), "epoch": used_epoch,
                                       "data": getattr(ds, "name", None), "model_config": info.model_config})
    path = Path(module if module is not None else torchscript)  # type: ignore[arg-type]
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
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
    ds = _load_data(data, seed) if data is not None and need_data else None
    return ModelSource(model, ds, {"source": "torchscript" if torchscript is not None else "module",
                                   "file": str(path), "data": getattr(ds, "name", None)})


def select_inputs(source: ModelSource, *, split: str = "test", n: int | None = None,
                  inputs: str | Path | None = None) -> tuple[Any, Any]:
    """The first ``n`` examples (and labels) of the source's dataset split, or of an ``.npy`` file.

    Returns ``(x, y)`` with ``y`` None when unlabelled. Examples are taken in order, never sampled,
    so captures of two models on the same source line up row by row.
    """
    if inputs is not None:
        p = Path(inputs)
        if not p.is_file() or p.suffix.lower() != ".npy":
            raise InputError(f"--input must be an existing .npy file of examples; got {p}")
        x: Any = np.load(p)
        y = None
    else:
        ds = source.dataset
        if ds is None:
            raise InputError("no data: give --data NAME|FILE (or --input FILE.npy) for a --module/--torchscript model")
        if split not in ("train", "test"):
            raise InputError(f"split must be 'train' or 'test'; got {split!r}")
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    total = int(x.shape[0])
    if n is not None:
        if int(n) < 1:
            raise InputError(f"n must be a positive number of examples; got {n}")
        if int(n) > total:
            raise InputError(f"n={n} but the {('file' if inputs else split + ' split')} holds only {total} examples")
        x = x[: int(n)]
        y = None if y is None else y[: int(n)]
    if total == 0:
        raise InputError(f"the {split} split is empty")
    return x, y
