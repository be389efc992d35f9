"""Seeded, deterministic training of the model families, with checkpoints and per-epoch accuracy.

``train(TrainConfig(...), out_dir)`` trains a :func:`deepgeom.models.build` model on a
:func:`deepgeom.data.load` dataset (true labels, or a seeded fraction of shuffled training labels as
in the random-label runs of Zhang et al. 2017 and Ansuini et al. 2019), records train and test loss
and accuracy at every epoch (epoch 0 = the untrained network) and saves the weights at the chosen
epochs. A run directory holds::

    config.json                         the TrainConfig, the model config, a data summary
    history.csv                         epoch, train_loss, train_acc, test_loss, test_acc
    checkpoints/epoch_0000.safetensors  state dict (+ the model config in the file's metadata)
    resume.pt                           with ``resume=True``, while training: the last finished epoch's
                                        weights, optimiser and RNG states (removed when training ends)

Every file is written atomically (a temporary file in the same directory, then ``os.replace``), so
an interrupted run never leaves a half-written checkpoint. :func:`load_run` reads a run back and
:func:`load_model` rebuilds the network at any saved epoch.

Determinism: the initial weights come from ``torch.manual_seed(seed)`` (so
``models.from_config(result.model_config)`` rebuilds the untrained network exactly), the minibatch order
and dropout from two further streams derived from ``seed`` with ``numpy.random.SeedSequence([seed, k])``
(independent of the weights' stream), drawn inside a forked RNG (the caller's global RNG is left as it
was), and ``torch.use_deterministic_algorithms(True)`` is on while
training (restored afterwards). On CPU with the same torch build and thread count, the same config
gives bit-identical weights and history — also when a run killed mid-way is resumed from its
``resume.pt`` (``train(..., resume=True)``): the resume state holds everything the next epoch reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import models
from ._io import atomic_write
from ._validation import check_fraction, check_positive_int
from .errors import DeepgeomError, InputError, UnknownNameError

__all__ = ["TrainConfig", "TrainResult", "Run", "train", "load_run", "load_model", "evaluate",
           "TrainingDivergedError", "HISTORY_COLUMNS"]

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "mse")
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
_CKPT_RE = re.compile(r"^epoch_(\d+)\.safetensors$")
RESUME_FILE = "resume.pt"


class TrainingDivergedError(DeepgeomError):
    """The loss became NaN or Inf (usually a learning rate too large for the model and loss)."""


def _whole(value: Any, name: str, minimum: int) -> int:
    """An integer >= minimum (bools and non-integral numbers refused), else InputError naming it."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    try:
        return check_positive_int(value, name, minimum=minimum)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}") from exc


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` and enough to repeat it.

    Attributes:
        dataset: name for :func:`deepgeom.data.load` (``mnist1d``, ``digits``, ``fashion-mnist``, …).
        dataset_options: extra keyword arguments for ``load`` (e.g. ``{"n_train": 1000}``).
        family, width, depth, model_options: passed to :func:`deepgeom.models.build` (None = default);
            ``family`` may be your own ``path/to/file.py:ClassOrFactory`` (:mod:`deepgeom.models.user`).
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"`` (``momentum`` unused).
        lr, momentum, weight_decay: optimiser settings (weight decay as the optimiser's L2 term).
        epochs: passes over the training set (0 = only evaluate and save the untrained network).
        batch_size: minibatch size; a final batch of a single example is merged into the one before,
            so batch norm never sees a batch of one.
        seed: seeds the initial weights, the minibatch order, dropout and the label shuffling.
        shuffle_fraction: share of training labels randomised (seeded; ``deepgeom.data.shuffle_labels``).
        checkpoint_epochs: epochs at which weights are saved; 0 is always added; default ``[0, epochs]``.
        loss: ``"ce"`` (cross-entropy) or ``"mse"``: squared error to the one-hot target summed over
            outputs and averaged over examples, ``mean_i ||f(x_i) − e_{y_i}||²`` (for float targets,
            regression: ``mean_i ||f(x_i) − y_i||²``).
        device: torch device string; bit-identical results are promised on ``"cpu"``.
        eval_batch_size: examples per forward pass when evaluating (no gradients, eval mode).
    """

    dataset: str = "mnist1d"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    family: str = "mlp"
    width: int | None = None
    depth: int | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    shuffle_fraction: float = 0.0
    checkpoint_epochs: list[int] | None = None
    loss: str = "ce"
    device: str = "cpu"
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UnknownNameError("optimizer", self.optimizer, OPTIMIZERS)
        if self.loss not in LOSSES:
            raise UnknownNameError("loss", self.loss, LOSSES)
        if self.family not in models.families() and not models.is_user_spec(self.family):
            raise UnknownNameError("model family", self.family, models.families(),
                                   hint="or your own model as path/to/file.py:ClassOrFactory")
        if models.is_user_spec(self.family):  # an absolute file path still loads from another directory
            from .models.user import resolve_spec

            self.family = resolve_spec(self.family)
        v = self.lr
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise InputError(f"lr must be a positive number; got {v!r}")
        for name in ("momentum", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name} must be a number >= 0; got {v!r}")
        self.epochs = _whole(self.epochs, "epochs", 0)
        self.batch_size = _whole(self.batch_size, "batch_size", 1)
        self.eval_batch_size = _whole(self.eval_batch_size, "eval_batch_size", 1)
        self.seed = _whole(self.seed, "seed", 0)
        self.width = None if self.width is None else _whole(self.width, "width", 1)
        self.depth = None if self.depth is None else _whole(self.depth, "depth", 1)
        self.shuffle_fraction = check_fraction(self.shuffle_fraction, "shuffle_fraction")
        if not isinstance(self.dataset_options, dict) or not isinstance(self.model_options, dict):
            raise InputError("dataset_options and model_options must be dicts")
        epochs = [0, self.epochs] if self.checkpoint_epochs is None else [0, *self.checkpoint_epochs]
        try:
            ck = sorted({_whole(e, "checkpoint epoch", 0) for e in epochs})
        except InputError as exc:
            raise InputError(f"checkpoint_epochs must be whole epoch numbers >= 0; got "
                             f"{self.checkpoint_epochs!r}") from exc
        if ck[-1] > self.epochs:
            raise InputError(f"checkpoint epochs {[e for e in ck if e > self.epochs]} lie beyond "
                             f"epochs={self.epochs}")
        self.checkpoint_epochs = ck
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f"device must be a torch device string such as 'cpu'; got {self.device!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the contents of ``config.json["train"]``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the network after the last epoch (in eval mode).
        history: one row per epoch 0..epochs with ``HISTORY_COLUMNS`` (epoch 0 = untrained).
        checkpoints: epoch → saved ``.safetensors`` path (empty when no ``out_dir`` was given).
        states: epoch → state dict (CPU tensors) at each checkpoint epoch, kept in memory either way.
        config: the :class:`TrainConfig`; model_config: the model's ``.config``.
        data: a plain summary of the data trained on (name, sizes, shape, classes, shuffled count).
        out_dir: the run directory or None; seconds: wall time of the whole run.
        resumed_from: the epoch training resumed after (``train(..., resume=True)`` found a resume
            state), or None when it started from epoch 0.
    """

    model: nn.Module
    history: pd.DataFrame
    checkpoints: dict[int, Path]
    states: dict[int, dict[str, torch.Tensor]]
    config: TrainConfig
    model_config: dict[str, Any]
    data: dict[str, Any]
    out_dir: Path | None
    seconds: float
    resumed_from: int | None = None

    def model_at(self, epoch: int) -> nn.Module:
        """The network with the weights it had at checkpoint ``epoch`` (eval mode)."""
        if epoch not in self.states:
            raise UnknownNameError("checkpoint epoch", epoch, [str(e) for e in sorted(self.states)])
        model = models.from_config(self.model_config)
        model.load_state_dict(self.states[epoch])
        return model.eval()

    def summary(self) -> dict[str, Any]:
        """Final accuracies and where the run lives, as plain types (what the CLI prints)."""
        last = self.history.iloc[-1]
        return {
            "family": self.config.family,
            "dataset": self.data.get("name"),
            "epochs": int(last["epoch"]),
            "train_loss": _plain(last["train_loss"]),
            "train_acc": _plain(last["train_acc"]),
            "test_loss": _plain(last["test_loss"]),
            "test_acc": _plain(last["test_acc"]),
            "shuffle_fraction": self.config.shuffle_fraction,
            "n_parameters": models.count_parameters(self.model),
            "checkpoint_epochs": list(self.config.checkpoint_epochs or []),
            "out_dir": str(self.out_dir) if self.out_dir is not None else None,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Run:
    """A run directory read back by :func:`load_run`."""

    out_dir: Path
    config: TrainConfig
    model_config: dict[str, Any]
    data: dict[str, Any]
    history: pd.DataFrame
    checkpoints: dict[int, Path]

    def load_model(self, epoch: int | None = None) -> nn.Module:
        """The network at checkpoint ``epoch`` (default: the latest saved)."""
        return load_model(self.out_dir, epoch)


def _plain(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------- files

def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place
    (:func:`deepgeom._io.atomic_write`: with fsync of the file and of the directory)."""
    atomic_write(path, write)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _save_state(path: Path, state: dict[str, torch.Tensor], model_config: dict[str, Any], epoch: int) -> None:
    from safetensors.torch import save_file

    meta = {"deepgeom_model_config": json.dumps(model_config), "epoch": str(epoch)}
    _atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def _checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors"


# ----------------------------------------------------------------------------- data

@dataclass
class _Prepared:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    n_out: int
    input_shape: tuple[int, ...]
    regression: bool
    summary: dict[str, Any]


def _prepare_data(config: TrainConfig, dataset: Any) -> _Prepared:
    """Load (or take) the dataset, shuffle training labels if asked, check it can be trained on."""
    if dataset is None:
        from .data import load

        dataset = load(config.dataset, seed=config.seed, shuffle_fraction=config.shuffle_fraction,
                       **config.dataset_options)
        already_shuffled = True
    else:
        done = (getattr(dataset, "meta", None) or {}).get("shuffle_fraction", 0.0) or 0.0
        if done and not math.isclose(float(done), config.shuffle_fraction):
            raise InputError(f"the dataset passed in already has shuffle_fraction={done}, but the config "
                             f"asks for {config.shuffle_fraction}; pass the unshuffled dataset")
        already_shuffled = bool(done)
    for attr in ("x_train", "y_train", "x_test", "y_test", "input_shape"):
        if not hasattr(dataset, attr):
            raise InputError(f"dataset must have x_train, y_train, x_test, y_test, n_classes, input_shape; "
                             f"missing {attr!r}")
    name = getattr(dataset, "name", config.dataset)
    x_train = torch.as_tensor(dataset.x_train, dtype=torch.float32)
    x_test = torch.as_tensor(dataset.x_test, dtype=torch.float32)
    if dataset.y_train is None:
        raise InputError(f"dataset {name!r} has no labels (an unlabelled manifold or feature file); "
                         "training needs class labels or regression targets")
    y_train = torch.as_tensor(dataset.y_train)
    y_test = None if dataset.y_test is None else torch.as_tensor(dataset.y_test)
    input_shape = tuple(int(s) for s in dataset.input_shape)
    if x_train.shape[0] < 1 or tuple(x_train.shape[1:]) != input_shape:
        raise InputError(f"x_train has shape {tuple(x_train.shape)}; expected (N >= 1, *{input_shape})")
    if y_train.shape[0] != x_train.shape[0]:
        raise InputError(f"y_train has {y_train.shape[0]} entries for {x_train.shape[0]} training inputs")
    for t, what in ((x_train, "x_train"), (x_test, "x_test")):
        if t.numel() and not torch.isfinite(t).all():
            raise InputError(f"{what} contains NaN or Inf")
    regression = y_train.is_floating_point()
    n_shuffled = 0
    if regression:
        if config.loss != "mse":
            raise InputError("float targets mean regression, which needs loss='mse'; got loss='ce' "
                             "(cast class labels to int64 for classification)")
        if config.shuffle_fraction > 0:
            raise InputError("shuffle_fraction applies to class labels, not regression targets")
        y_train = y_train.to(torch.float32)
        y_train = y_train[:, None] if y_train.ndim == 1 else y_train
        y_test = None if y_test is None else y_test.to(torch.float32).reshape(-1, y_train.shape[1])
        if not torch.isfinite(y_train).all():
            raise InputError("regression targets y_train contain NaN or Inf")
        n_out = int(y_train.shape[1])
    else:
        y_train = y_train.to(torch.int64)
        n_out = int(getattr(dataset, "n_classes", 0) or int(y_train.max()) + 1)
        if int(y_train.min()) < 0 or int(y_train.max()) >= n_out:
            raise InputError(f"class labels must lie in 0..{n_out - 1}; got {int(y_train.min())}.."
                             f"{int(y_train.max())}")
        if config.shuffle_fraction > 0 and not already_shuffled:
            from .data import shuffle_labels

            y_train = shuffle_labels(y_train, config.shuffle_fraction, seed=config.seed)
        if config.shuffle_fraction > 0:
            n_shuffled = int(round(config.shuffle_fraction * y_train.shape[0]))
        y_test = None if y_test is None else y_test.to(torch.int64)
    if y_test is not None and y_test.shape[0] != x_test.shape[0]:
        raise InputError(f"y_test has {y_test.shape[0]} entries for {x_test.shape[0]} test inputs")
    summary = {"name": name, "n_train": int(x_train.shape[0]), "n_test": int(x_test.shape[0]),
               "input_shape": list(input_shape), "n_outputs": n_out, "regression": regression,
               "shuffle_fraction": config.shuffle_fraction, "n_shuffled": n_shuffled}
    return _Prepared(x_train, y_train, x_test, y_test, n_out, input_shape, regression, summary)


# ----------------------------------------------------------------------------- loss / evaluation

def _loss_sum(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Summed (over examples) loss; see :class:`TrainConfig` for the definitions."""
    if loss == "ce":
        return F.cross_entropy(out, y, reduction="sum")
    target = y if y.is_floating_point() else F.one_hot(y, out.shape[1]).to(out.dtype)
    return (out - target).pow(2).sum()


def _accuracy_count(out: torch.Tensor, y: torch.Tensor) -> int:
    if y.is_floating_point():
        return 0
    return int((out.argmax(1) == y).sum())


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, *, loss: str = "ce",
             batch_size: int = 4096, device: str | torch.device = "cpu") -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on (x, y), in eval mode, without gradients.

    Returns ``(loss, accuracy)``; NaN for both when there are no examples or no labels, and NaN
    accuracy for regression targets (float ``y``). The model's train/eval mode is restored.
    """
    if y is None or x.shape[0] == 0:
        return math.nan, math.nan
    total, correct = 0.0, 0
    with _eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i:i + batch_size].to(device))
            yb = y[i:i + batch_size].to(device)
            total += float(_loss_sum(out.double(), yb.double() if yb.is_floating_point() else yb, loss))
            correct += _accuracy_count(out, yb)
    n = x.shape[0]
    return total / n, (math.nan if y.is_floating_point() else correct / n)


def _batches(n: int, batch_size: int, perm: torch.Tensor) -> list[torch.Tensor]:
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:  # never a batch of one (batch norm cannot use it)
        starts.pop()
    ends = starts[1:] + [n]
    return [perm[s:e] for s, e in zip(starts, ends, strict=True)]


@contextlib.contextmanager
def _deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seeded, deterministic torch inside; the caller's RNG state and determinism flag restored."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_stream_seed(seed, 2))  # dropout and any other global-RNG draw
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


# ----------------------------------------------------------------------------- training

def _check_out_dir(out_path: Path, config: TrainConfig) -> None:
    """Refuse to mix two runs in one directory: an existing run there must have the same config
    (then it is simply redone, e.g. after an interruption; training is deterministic)."""
    if out_path.exists() and not out_path.is_dir():
        raise InputError(f"out_dir {out_path} exists and is not a directory")
    cfg_file = out_path / "config.json"
    if not cfg_file.is_file():
        if _list_checkpoints(out_path):
            raise InputError(f"{out_path} holds checkpoints but no config.json; choose an empty directory")
        return
    try:
        previous = json.loads(cfg_file.read_text(encoding="utf-8")).get("train")
    except (json.JSONDecodeError, AttributeError):
        previous = None
    if previous != json.loads(json.dumps(config.to_dict())):
        raise InputError(f"{out_path} already holds a different training run (see its config.json); "
                         "choose another output directory or delete that one")


def _stream_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run (numpy SeedSequence([seed, stream]))."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    _atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_resume(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The resume state in ``path`` if it exists and belongs to ``config`` (else None: start afresh)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged resume file only costs the epochs it saved
        return None
    if state.get("train") != json.loads(json.dumps(config.to_dict())):
        return None
    return state


def train(config: TrainConfig, out_dir: str | os.PathLike | None = None, *, dataset: Any = None,
          progress: bool = True, resume: bool = False) -> TrainResult:
    """Train a model family on a dataset with true or shuffled labels; record and checkpoint it.

    Plain minibatch training (SGD with momentum or Adam) of ``config.family`` on
    ``deepgeom.data.load(config.dataset, seed=config.seed, shuffle_fraction=config.shuffle_fraction)``,
    the setting of the ID paper's experiments (Ansuini et al. 2019), including its random-label runs
    (Zhang et al. 2017): train accuracy is measured against the (possibly shuffled) labels trained on,
    test accuracy against the true test labels. After every epoch the whole train and test sets are
    evaluated in eval mode without gradients (epoch 0 = before any update).

    Args:
        config: the run's :class:`TrainConfig`.
        out_dir: run directory to write (``config.json``, ``history.csv``, ``checkpoints/``); None
            keeps everything in memory (``TrainResult.states``).
        dataset: a :class:`deepgeom.data.Dataset` (or any object with ``x_train, y_train, x_test,
            y_test, n_classes, input_shape``) to use instead of loading ``config.dataset``; its
            training labels are shuffled here when ``config.shuffle_fraction > 0``. Float targets
            train a regression (``loss="mse"``).
        progress: show a tqdm bar over epochs (on stderr).
        resume: keep a resume state (``out_dir/resume.pt``: weights, optimiser state, the minibatch
            order's and the global RNG's states, the history so far) after every epoch, and, when one is
            already there for this config, continue after its epoch instead of starting from epoch 0.
            The result is bit-identical to an uninterrupted run. Needs ``out_dir``; the file is removed
            when training ends.

    Returns:
        :class:`TrainResult`.

    Raises:
        InputError: bad config or data. TrainingDivergedError: the loss became NaN/Inf.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 5, generator=g); y = (x[:, 0] > 0).long()
        >>> ds = SimpleNamespace(name="toy", x_train=x, y_train=y, x_test=x, y_test=y, n_classes=2,
        ...                      input_shape=(5,))
        >>> res = train(TrainConfig(family="mlp", width=16, depth=1, epochs=20, lr=0.1, batch_size=16),
        ...             dataset=ds, progress=False)
        >>> bool(res.history["train_acc"].iloc[-1] > 0.9)
        True
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig; got {type(config).__name__}")
    t0 = time.perf_counter()
    device = torch.device(config.device)
    data = _prepare_data(config, dataset)
    out_path = Path(out_dir) if out_dir is not None else None
    if out_path is not None:
        _check_out_dir(out_path, config)
    elif resume:
        raise InputError("resume=True needs an out_dir to keep the resume state in")
    saved = _load_resume(out_path / RESUME_FILE, config) if resume and out_path is not None else None
    from tqdm.auto import tqdm

    with _deterministic(config.seed, device):
        model = models.build(config.family, input_shape=data.input_shape, n_classes=data.n_out,
                             width=config.width, depth=config.depth, seed=config.seed,
                             **config.model_options)
        model_config = dict(model.config)
        model.to(device)
        if config.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=config.lr,
                                                         momentum=config.momentum,
                                                         weight_decay=config.weight_decay)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(_stream_seed(config.seed, 1))  # minibatch order
        rows: list[dict[str, float]] = []
        checkpoints: dict[int, Path] = {}
        states: dict[int, dict[str, torch.Tensor]] = {}

        def run_file() -> dict[str, Any]:
            from . import __version__

            return {"deepgeom_version": __version__, "train": config.to_dict(), "model": model_config,
                    "data": data.summary, "epochs_done": len(rows) - 1,
                    "checkpoints": {str(e): str(p.relative_to(out_path)) for e, p in checkpoints.items()}}

        def record(epoch: int) -> dict[str, float]:
            tr = evaluate(model, data.x_train, data.y_train, loss=config.loss,
                          batch_size=config.eval_batch_size, device=device)
            te = evaluate(model, data.x_test, data.y_test, loss=config.loss,
                          batch_size=config.eval_batch_size, device=device)
            row = {"epoch": epoch, "train_loss": tr[0], "train_acc": tr[1], "test_loss": te[0], "test_acc": te[1]}
            rows.append(row)
            if epoch in config.checkpoint_epochs:
                state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
                states[epoch] = state
                if out_path is not None:
                    checkpoints[epoch] = _checkpoint_path(out_path, epoch)
                    _save_state(checkpoints[epoch], state, model_config, epoch)
            if out_path is not None:
                _write_text(out_path / "history.csv", pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False))
                _write_text(out_path / "config.json", json.dumps(run_file(), indent=2))
            return row

        def save_resume(epoch: int) -> None:
            if resume and out_path is not None and epoch < config.epochs:
                _save_resume(out_path / RESUME_FILE, {
                    "train": json.loads(json.dumps(config.to_dict())), "epoch": epoch, "rows": rows,
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state(), "rng": torch.get_rng_state()})

        start = 1
        if saved is not None:  # continue after the saved epoch, exactly where the first attempt was
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            torch.set_rng_state(saved["rng"])
            rows.extend(saved["rows"])
            start = int(saved["epoch"]) + 1
            for e, path in _list_checkpoints(out_path).items():
                if e < start and e in config.checkpoint_epochs:
                    from safetensors.torch import load_file

                    checkpoints[e] = path
                    states[e] = load_file(str(path))
        else:
            record(0)
            save_resume(0)
        n = data.x_train.shape[0]
        bar = tqdm(range(start, config.epochs + 1), desc=f"train {config.family} on {data.summary['name']}",
                   unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            for idx in _batches(n, config.batch_size, torch.randperm(n, generator=gen)):
                xb, yb = data.x_train[idx].to(device), data.y_train[idx].to(device)
                opt.zero_grad(set_to_none=True)
                loss = _loss_sum(model(xb), yb, config.loss) / idx.shape[0]
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss became {float(loss.detach())} in epoch {epoch}; lower the learning rate (lr={config.lr})")
                loss.backward()
                opt.step()
            row = record(epoch)
            save_resume(epoch)
            bar.set_postfix(train_acc=f"{row['train_acc']:.3f}", test_acc=f"{row['test_acc']:.3f}")
        bar.close()
    if resume and out_path is not None:
        with contextlib.suppress(FileNotFoundError):
            (out_path / RESUME_FILE).unlink()
    model.eval()
    history = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return TrainResult(model=model, history=history, checkpoints=checkpoints, states=states, config=config,
                       model_config=model_config, data=data.summary, out_dir=out_path,
                       seconds=time.perf_counter() - t0,
                       resumed_from=None if saved is None else int(saved["epoch"]))


# ----------------------------------------------------------------------------- reading runs back

def _read_run_file(run_dir: Path) -> dict[str, Any]:
    cfg = run_dir / "config.json"
    if not cfg.is_file():
        raise InputError(f"{run_dir} is not a deepgeom run directory (no config.json); "
                         "create one with `deepgeom train --out DIR`")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{cfg} is not valid JSON: {exc}") from exc


def _list_checkpoints(run_dir: Path) -> dict[int, Path]:
    ck = run_dir / "checkpoints"
    found = {}
    if ck.is_dir():
        for p in ck.iterdir():
            m = _CKPT_RE.match(p.name)
            if m:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read a run directory written by :func:`train`: config, history and checkpoint paths."""
    run_dir = Path(run_dir)
    info = _read_run_file(run_dir)
    hist_path = run_dir / "history.csv"
    history = pd.read_csv(hist_path) if hist_path.is_file() else pd.DataFrame(columns=HISTORY_COLUMNS)
    return Run(out_dir=run_dir, config=TrainConfig.from_dict(info["train"]), model_config=info["model"],
               data=info.get("data", {}), history=history, checkpoints=_list_checkpoints(run_dir))


def load_model(path: str | os.PathLike, epoch: int | None = None) -> nn.Module:
    """Rebuild a trained network from a run directory (at ``epoch``, default the latest checkpoint)
    or from one ``.safetensors`` checkpoint file (its metadata holds the model config).

    The architecture is rebuilt from the saved model config with :func:`deepgeom.models.from_config`,
    then the saved state dict is loaded strictly. Returned in eval mode.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        info = _read_run_file(path)
        found = _list_checkpoints(path)
        if not found:
            raise InputError(f"run {path} has no checkpoints in {path / 'checkpoints'}")
        if epoch is None:
            epoch = max(found)
        if epoch not in found:
            raise UnknownNameError("checkpoint epoch", epoch, [str(e) for e in found])
        model_config, file = info["model"], found[epoch]
    elif path.is_file():
        if epoch is not None:
            raise InputError("epoch selects a checkpoint inside a run directory; a file is one checkpoint")
        file = path
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for bad files
            raise InputError(f"{path} is not a safetensors checkpoint: {exc}") from exc
        if "deepgeom_model_config" not in meta:
            raise InputError(f"{path} carries no deepgeom model config; it was not written by deepgeom.train")
        model_config = json.loads(meta["deepgeom_model_config"])
    else:
        raise InputError(f"no such run directory or checkpoint file: {path}")
    model = models.from_config(model_config)
    model.load_state_dict(load_file(str(file)))
    return model.eval()


class _CallableModule(types.ModuleType):
    """``deepgeom.train`` names both this module and :func:`train`.

    ``import deepgeom`` imports its names on first use, and importing this module binds the module to
    ``deepgeom.train``; making the module callable keeps ``deepgeom.train(config, out_dir)`` working
    whichever of the two the name holds at that moment.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
