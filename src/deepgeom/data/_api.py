"""``load(name)`` and ``available()``: one entry point for every dataset deepgeom knows."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_fraction, check_positive_int
from ..errors import InputError, UnknownNameError
from ._dataset import Dataset, as_inputs
from .builtin import load_digits, load_mnist1d
from .fashion_mnist import load_fashion_mnist
from .files import FILE_SUFFIXES, load_file
from .labels import shuffle_labels
from .manifolds import MANIFOLDS

__all__ = ["load", "available", "describe", "load_manifold"]


def load_manifold(
    name: str, *, seed: int = 0, n: int = 2000, d: int | None = None, D: int | None = None,
    noise: float = 0.0, n_test: int = 0, **params: Any,
) -> Dataset:
    """A known-ID manifold from :mod:`deepgeom.data.manifolds` as an unlabelled :class:`Dataset`.

    ``n + n_test`` points are drawn in one call (one embedding), the first ``n`` form the train split and
    the rest the test split (empty by default). ``meta`` records ``intrinsic_dim``, ``ambient_dim``,
    ``noise`` and extra generator parameters. Inputs are float32 of shape ``(N, D)``.
    """
    fn, d0, D0 = MANIFOLDS[name]
    d = d0 if d is None else d
    D = D0 if D is None else D
    n = check_positive_int(n, "n")
    n_test = check_positive_int(n_test, "n_test", minimum=0)
    X = fn(n + n_test, d, D, seed=seed, noise=noise, **params)
    meta = {"source": f"deepgeom.data.manifolds.{fn.__name__}", "seed": int(seed), "intrinsic_dim": int(d),
            "ambient_dim": int(D), "noise": float(noise), **params}
    return Dataset(name=name, x_train=as_inputs(X[:n], f"{name} x", copy=False), y_train=None,
                   x_test=as_inputs(X[n:], f"{name} x_test", copy=False), y_test=None, n_classes=0,
                   input_shape=(int(D),), meta=meta)


def _manifold_loader(name: str) -> Callable[..., Dataset]:
    fn, d0, D0 = MANIFOLDS[name]
    extra = [p for p in inspect.signature(fn).parameters.values()
             if p.kind is p.KEYWORD_ONLY and p.name not in ("seed", "noise")]

    def loader(*, seed: int = 0, n: int = 2000, d: int = d0, D: int = D0,
               noise: float = 0.0, n_test: int = 0, **params: Any) -> Dataset:
        return load_manifold(name, seed=seed, n=n, d=d, D=D, noise=noise, n_test=n_test, **params)

    loader.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        list(inspect.signature(loader).parameters.values())[:-1] + extra
    )
    loader.__doc__ = (fn.__doc__ or "").strip().splitlines()[0]
    return loader


#: dataset name → loader(*, seed, **options) -> Dataset
_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": load_mnist1d,
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    **{name: _manifold_loader(name) for name in MANIFOLDS},
}


def available() -> list[str]:
    """Names :func:`load` accepts (besides file paths), sorted. ``fashion-mnist`` is listed even when its
    files are missing; loading it then says how to get them."""
    return sorted(_LOADERS)


def describe(name: str) -> dict[str, Any]:
    """One-line description and the options (with defaults) that ``load(name, **options)`` accepts."""
    loader = _loader(name)
    doc = (loader.__doc__ or "").strip().splitlines()
    options = {p.name: (None if p.default is p.empty else p.default)
               for p in inspect.signature(loader).parameters.values() if p.name != "seed"}
    text = re.sub(r":math:`([^`]*)`", r"\1", doc[0] if doc else "").replace("``", "")
    return {"name": _normalise(name), "description": text, "options": options}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _loader(name: str) -> Callable[..., Dataset]:
    if not isinstance(name, str):
        raise UnknownNameError("dataset", name, available())
    key = _normalise(name)
    if key not in _LOADERS:
        raise UnknownNameError("dataset", name, available(),
                               hint=f"Or pass a path to a {'/'.join(FILE_SUFFIXES)} file")
    return _LOADERS[key]


def _is_path(name: Any) -> bool:
    return isinstance(name, os.PathLike) or (
        isinstance(name, str) and Path(name).suffix.lower() in FILE_SUFFIXES)


def load(name: str | os.PathLike[str], *, seed: int = 0, shuffle_fraction: float = 0.0, **options: Any) -> Dataset:
    """Load a dataset by name, or a user file by path, with both splits; optionally shuffle train labels.

    Args:
        name: one of :func:`available` (``mnist1d``, ``digits``, ``fashion-mnist``, ``hypersphere``,
            ``linear-subspace``, ``swiss-roll``, ``curved-manifold``, ``winding-curve``; ``_`` and
            ``-`` are interchangeable), or a path to a ``.npy``/``.npz``/``.pt``/``.safetensors`` file.
        seed: seeds every random choice (generation, split, subsampling, label shuffling).
        shuffle_fraction: share of *training* labels to randomise with :func:`shuffle_labels`
            (permutation among the chosen examples; the test labels are never touched). ``meta`` then
            holds ``shuffle_fraction``, ``shuffled_indices`` and ``y_train_clean``.
        **options: the dataset's own options (see :func:`describe`), e.g. ``n_train``/``n_test`` for
            mnist1d and fashion-mnist, ``test_fraction`` for digits, ``n``/``d``/``D``/``noise``/``n_test``
            for manifolds, ``root`` for fashion-mnist, ``test_fraction`` for files.

    Returns:
        A :class:`Dataset`: float32 inputs ``(N, *input_shape)``, int64 labels (or ``None``).

    Raises:
        UnknownNameError: an unknown dataset name (the message lists the known ones).
        InputError: an unknown option, a bad option value, a shuffle fraction outside [0, 1], a bad file.

    Example:
        >>> ds = load("digits", seed=0)
        >>> ds.x_train.shape, ds.x_test.shape, ds.n_classes
        (torch.Size([1347, 1, 8, 8]), torch.Size([450, 1, 8, 8]), 10)
    """

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0; got {seed!r}")
    seed = int(seed)
    frac = check_fraction(shuffle_fraction, "shuffle_fraction (share of training labels to randomise)")
    if _is_path(name):
        loader: Callable[..., Dataset] = load_file
    else:
        loader = _loader(name)  # type: ignore[arg-type]
    params = inspect.signature(loader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p not in ("seed", "path")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise InputError(f"unknown option(s) {unknown} for dataset {str(name)!r}; it accepts: "
                             f"{', '.join(allowed) or '(none)'}")
    ds = loader(name, seed=seed, **options) if loader is load_file else loader(seed=seed, **options)
    if frac == 0.0:
        return ds
    if ds.y_train is None:
        raise InputError(f"dataset {ds.name!r} has no labels; shuffle_fraction must be 0")
    y_new, idx = shuffle_labels(ds.y_train, frac, seed, return_indices=True)
    meta = {**ds.meta, "shuffle_fraction": frac, "shuffled_indices": np.asarray(idx),
            "y_train_clean": ds.y_train}
    return Dataset(name=ds.name, x_train=ds.x_train, y_train=y_new, x_test=ds.x_test, y_test=ds.y_test,
                   n_classes=ds.n_classes, input_shape=ds.input_shape, meta=meta)
