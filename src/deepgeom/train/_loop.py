"""The training loop: data preparation, loss and evaluation, and :func:`train`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import models
from .._version import __version__
from ..data import load, shuffle_labels
from ..errors import InputError
from ._checkpoints import (
    RESUME_FILE,
    _check_out_dir,
    _checkpoint_path,
    _list_checkpoints,
    _load_resume,
    _load_state,
    _save_resume,
    _save_state,
    _write_text,
)
from ._config import HISTORY_COLUMNS, TrainConfig, TrainingDivergedError, TrainResult

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


def _stream_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run (numpy SeedSequence([seed, stream]))."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))



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
            return {"deepgeom_version": __version__, "train": config.to_dict(), "model": model_config,
                    "data": data.summary, "epochs_done": int(rows[-1]["epoch"]) if rows else 0,
                    "checkpoints": {str(e): str(p.relative_to(out_path)) for e, p in checkpoints.items()}}

        def fitted(row: dict[str, float]) -> bool:
            # epoch 0 never stops training: an untrained net that "fits" is a degenerate task, and the
            # run must still train at least once to be a trained run
            target = config.stop_at_train_acc
            return target is not None and row["epoch"] > 0 and row["train_acc"] >= target

        def record(epoch: int) -> dict[str, float] | None:
            if epoch % config.eval_every and epoch not in config.checkpoint_epochs and epoch != config.epochs:
                return None
            tr = evaluate(model, data.x_train, data.y_train, loss=config.loss,
                          batch_size=config.eval_batch_size, device=device)
            te = evaluate(model, data.x_test, data.y_test, loss=config.loss,
                          batch_size=config.eval_batch_size, device=device)
            row = {"epoch": epoch, "train_loss": tr[0], "train_acc": tr[1], "test_loss": te[0], "test_acc": te[1]}
            rows.append(row)
            if epoch in config.checkpoint_epochs or fitted(row):  # the stopping epoch is the last checkpoint
                state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
                states[epoch] = state
                if out_path is not None:
                    checkpoints[epoch] = _checkpoint_path(out_path, epoch)
                    _save_state(checkpoints[epoch], state, model_config, epoch)
            if out_path is not None:
                _write_text(out_path / "history.csv", pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False))
                _write_text(out_path / "config.json", json.dumps(run_file(), indent=2))
            return row

        def save_resume(epoch: int, done: bool = False) -> None:
            if resume and out_path is not None and epoch < config.epochs and not done:
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
                    checkpoints[e] = path
                    states[e] = _load_state(path)
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
            done = row is not None and fitted(row)
            save_resume(epoch, done)
            if row is not None:
                bar.set_postfix(train_acc=f"{row['train_acc']:.3f}", test_acc=f"{row['test_acc']:.3f}")
            if done:
                break
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

