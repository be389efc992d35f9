"""The :class:`Dataset` every loader returns: both splits as torch tensors plus a plain ``meta`` dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_finite_values
from ..errors import InputError

__all__ = ["Dataset", "as_inputs", "as_labels"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset with a train and a test split, as returned by :func:`deepgeom.data.load`.

    Attributes:
        name: the name it was loaded by (or the file path).
        x_train, x_test: float32 tensors of shape ``(N, *input_shape)``; ``x_test`` may have 0 rows.
        y_train, y_test: int64 class labels of shape ``(N,)``, or ``None`` for unlabelled data
            (the known-ID manifolds, a features-only file).
        n_classes: number of classes (labels lie in ``0 .. n_classes-1``); 0 when unlabelled.
        input_shape: shape of one example, e.g. ``(1, 40)`` for mnist1d, ``(1, 28, 28)`` for images.
        meta: plain facts about the data: its source, the seed, for manifolds the intrinsic and ambient
            dimension; after label shuffling ``shuffle_fraction``, ``shuffled_indices`` (numpy int64,
            sorted) and ``y_train_clean`` (the labels before shuffling).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    n_classes: int
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise InputError(f"{self.name}: x_{split} has shape {tuple(x.shape)}, "
                                 f"expected (N, *{tuple(self.input_shape)})")
            if y is not None and y.shape != (x.shape[0],):
                raise InputError(f"{self.name}: y_{split} has shape {tuple(y.shape)} for {x.shape[0]} inputs")

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def labelled(self) -> bool:
        return self.y_train is not None

    def summary(self) -> dict[str, Any]:
        """Plain-typed description (sizes, shapes, class counts, scalar meta) for printing or JSON."""
        out: dict[str, Any] = {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "dtype": str(self.x_train.dtype).replace("torch.", ""),
        }
        if self.y_train is not None:
            out["train_class_counts"] = torch.bincount(self.y_train, minlength=self.n_classes).tolist()
        if self.y_test is not None:
            out["test_class_counts"] = torch.bincount(self.y_test, minlength=self.n_classes).tolist()
        for k, v in self.meta.items():
            if isinstance(v, (str, int, float, bool)) or v is None:
                out[k] = v
            elif isinstance(v, (list, tuple)) and len(v) <= 16 and all(isinstance(e, (int, float, str)) for e in v):
                out[k] = list(v)
        if "shuffled_indices" in self.meta:
            out["n_shuffled"] = int(len(self.meta["shuffled_indices"]))
        return out


def as_inputs(x: Any, name: str, *, copy: bool = True, check_finite: bool = True) -> torch.Tensor:
    """Inputs as a contiguous float32 torch tensor; NaN/Inf raise :class:`InputError` naming ``name``.

    With ``copy=True`` (default) the result never shares memory with ``x`` (a caller's array or a cache);
    loaders that pass a freshly made array use ``copy=False`` to avoid a second copy of large data, and
    ``check_finite=False`` when the values are finite by construction (integer pixels scaled).
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise InputError(f"{name} must be real and numeric; got dtype {x.dtype}")
        t = x.detach().to("cpu", torch.float32).contiguous()
        if copy and t.data_ptr() == x.data_ptr():
            t = t.clone()
    else:
        a = np.asarray(x)
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise InputError(f"{name} must be real and numeric; got dtype {a.dtype}")
        b = np.array(a, dtype=np.float32, order="C", copy=None)
        if np.may_share_memory(a, b) and (copy or not b.flags.writeable):
            b = b.copy()
        t = torch.from_numpy(b)
    if check_finite and t.ndim >= 1 and t.shape[0] > 0:
        check_finite_values(t.reshape(t.shape[0], -1), name)
    return t


def as_labels(y: Any, name: str) -> torch.Tensor:
    """Class labels as a fresh int64 tensor of shape (N,): integral, non-negative, 1-D, else InputError.

    Float labels are accepted when every value is a whole number (files often store labels as floats).
    """
    if isinstance(y, torch.Tensor):
        a = y.detach().cpu().numpy()
    else:
        a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D class labels (N,); got shape {tuple(a.shape)}")
    if a.dtype.kind not in "iuf":
        raise InputError(f"{name} must be integer class labels; got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{name} contains NaN or Inf")
        if not np.array_equal(a, np.round(a)):
            raise InputError(f"{name} must be integer class labels; got non-integral values "
                             "(regression targets are not class labels)")
    if a.size and a.min() < 0:
        raise InputError(f"{name} must be class ids >= 0; got {a.min()}")
    return torch.from_numpy(np.array(a, dtype=np.int64, copy=True))
