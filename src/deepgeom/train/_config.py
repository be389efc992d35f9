"""The training configuration (:class:`TrainConfig`) and what a run returns (:class:`TrainResult`,
:class:`Run`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .. import models
from .._validation import check_fraction, check_positive_int
from ..errors import DeepgeomError, InputError, UnknownNameError
from ..models.user import resolve_spec

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "mse")
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]


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
        eval_every: evaluate the whole train and test sets (a row of ``history``) every this many
            epochs, and always at epoch 0, at every checkpoint and at the last epoch. On small training
            sets the evaluation of a large test set can cost more than the epoch itself; 1 = every epoch.
        stop_at_train_acc: train until the network fits its training labels: stop after the first
            evaluated epoch (see ``eval_every``) whose training accuracy is at least this value, and
            save a checkpoint there, the run's last; ``epochs`` is then the limit. None (default):
            always train ``epochs`` epochs. Training accuracy is measured on the labels trained on.
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
    eval_every: int = 1
    stop_at_train_acc: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UnknownNameError("optimizer", self.optimizer, OPTIMIZERS)
        if self.loss not in LOSSES:
            raise UnknownNameError("loss", self.loss, LOSSES)
        if self.family not in models.families() and not models.is_user_spec(self.family):
            raise UnknownNameError("model family", self.family, models.families(),
                                   hint="or your own model as path/to/file.py:ClassOrFactory")
        if models.is_user_spec(self.family):  # an absolute file path still loads from another directory
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
        self.eval_every = _whole(self.eval_every, "eval_every", 1)
        self.seed = _whole(self.seed, "seed", 0)
        self.width = None if self.width is None else _whole(self.width, "width", 1)
        self.depth = None if self.depth is None else _whole(self.depth, "depth", 1)
        self.shuffle_fraction = check_fraction(self.shuffle_fraction, "shuffle_fraction")
        if self.stop_at_train_acc is not None:
            if isinstance(self.stop_at_train_acc, bool) or not isinstance(self.stop_at_train_acc, (int, float)):
                raise InputError(f"stop_at_train_acc must be a number in (0, 1] or None; got {self.stop_at_train_acc!r}")
            self.stop_at_train_acc = check_fraction(self.stop_at_train_acc, "stop_at_train_acc", open_low=True)
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
            "checkpoint_epochs": sorted(self.states),  # those saved (training may stop early)
            "out_dir": str(self.out_dir) if self.out_dir is not None else None,
            "seconds": round(self.seconds, 3),
        }


def _plain(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
