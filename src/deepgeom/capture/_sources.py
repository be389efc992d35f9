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
                      torchscript: str | Path | None = None, need_data: bool = True,
                      weights: str | Path | None = None, trust_pickle: bool = False) -> ModelSource:
    """Build or load the model for the CLI: exactly one of ``family``, ``run``, ``module``, ``torchscript``.

    * ``family`` (+ ``data`` for the input shape and classes, ``width``, ``depth``, ``seed``):
      :func:`deepgeom.models.build` — an untrained network.
    * ``run`` (+ ``epoch``, default the latest checkpoint): :func:`deepgeom.train.load_model`; the
      dataset is the run's own (same name, options, seed and shuffled labels) unless ``data`` is given.
    * ``module="model.py:ClassName"`` (the safe route): the class is imported from that Python file
      (code you can read), built with no arguments, and ``weights`` — a ``.safetensors`` state dict,
      tensors only — are loaded into it (strictly: every key must match).
    * ``module="model.pt"``: a whole ``nn.Module`` saved with ``torch.save(model)``. Unpickling runs
      whatever code the file carries (``torch.load(weights_only=False)``), so it is refused unless
      ``trust_pickle=True`` — only for files you made or trust.
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
    if weights is not None and not (module is not None and _PY_CLASS.match(str(module))):
        raise InputError("--weights FILE.safetensors goes with --module FILE.py:ClassName (the class its state "
                         "dict belongs to)")
    if module is not None and _PY_CLASS.match(str(module)):
        model, path = _module_from_source(str(module), weights)
        ds = _load_data(data, seed) if data is not None and need_data else None
        return ModelSource(model, ds, {"source": "module", "file": str(path), "class": str(module).rsplit(":", 1)[1],
                                       "weights": None if weights is None else str(weights),
                                       "data": getattr(ds, "name", None)})
    path = Path(module if module is not None else torchscript)  # type: ignore[arg-type]
    if not path.is_file():
        raise InputError(f"model file {path} does not exist")
    if module is not None and not trust_pickle:
        raise InputError(
            f"--module {path} is a pickle: loading it runs any code the file contains (torch.load with "
            "weights_only=False). Pass --trust-pickle only for a file you made or trust, or use the safe route: "
            "--module model.py:ClassName --weights model.safetensors")
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


_PY_CLASS = __import__("re").compile(r"^(?P<file>.+\.py):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)$")


def _module_from_source(spec: str, weights: str | Path | None) -> tuple[nn.Module, Path]:
    """``file.py:ClassName`` → an instance built with no arguments, with a safetensors state dict loaded."""
    import importlib.util

    m = _PY_CLASS.match(spec)
    assert m is not None
    path = Path(m["file"])
    if not path.is_file():
        raise InputError(f"model source file {path} does not exist")
    name = f"_deepgeom_user_model_{abs(hash(str(path.resolve())))}"
    try:
        mspec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(mspec)  # type: ignore[arg-type]
        mspec.loader.exec_module(mod)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - the user's file may fail in any way; report it in one line
        raise InputError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(mod, m["cls"], None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        found = sorted(k for k, v in vars(mod).items() if isinstance(v, type) and issubclass(v, nn.Module))
        raise InputError(f"{path} has no nn.Module class {m['cls']!r}; nn.Module classes there: {found or 'none'}")
    try:
        model = cls()
    except Exception as exc:  # noqa: BLE001 - a constructor that needs arguments, or fails
        raise InputError(f"{m['cls']}() from {path} could not be built without arguments: {exc}") from exc
    if weights is not None:
        wp = Path(weights)
        if not wp.is_file():
            raise InputError(f"weights file {wp} does not exist")
        try:
            from safetensors.torch import load_file

            state = load_file(str(wp))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for bad files
            raise InputError(f"{wp} is not a safetensors file: {exc}") from exc
        try:
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - missing/unexpected keys, shape mismatches
            msg = str(exc).replace("\n", " ").replace("\t", "")
            raise InputError(f"{wp} does not fit {m['cls']}: {msg}") from exc
    return model, path


def select_inputs(source: ModelSource, *, split: str = "test", n: int | None = None,
                  inputs: str | Path | None = None) -> tuple[Any, Any]:
    """The first ``n`` examples (and labels) of the source's dataset split, or of an ``.npy`` file.

    Returns ``(x, y)`` with ``y`` None when unlabelled. Examples are taken in order, never sampled,
    so captures of two models on the same source line up row by row.
    """
    if inputs is not None:
        from .._validation import load_npy

        p = Path(inputs)
        if p.suffix.lower() != ".npy":
            raise InputError(f"--input must be a .npy file of examples; got {p}")
        x: Any = np.array(load_npy(p, "--input"))
        if x.ndim < 2:
            raise InputError(f"--input {p} must hold one example per row, shape (N, ...); got shape {x.shape}")
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
