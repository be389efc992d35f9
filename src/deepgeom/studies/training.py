"""The training step of a study: load a run's data, train it with checkpoints, reload checkpoints.

Thin glue over :func:`deepgeom.data.load`, :func:`deepgeom.models.build` and
:func:`deepgeom.train.train`; the runner calls :func:`train_run` once per run (a ``train`` unit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # for annotations only: config imports this module
    from .config import RunSpec
import dataclasses

from ..data import load
from ..train import TrainConfig, load_model, train

__all__ = ["load_dataset", "train_run", "train_config", "load_checkpoint"]


def load_dataset(spec: RunSpec, cache: dict | None = None):
    """The run's :class:`~deepgeom.data.Dataset`: fixed split seed ``data_seed`` for every run (so all
    models see the same test examples), labels shuffled by the run's ``shuffle_fraction``."""

    key = (spec.dataset, spec.data_seed, spec.shuffle_fraction, json.dumps(spec.data_options, sort_keys=True))
    if cache is not None and key in cache:
        return cache[key]
    ds = load(spec.dataset, seed=spec.data_seed, shuffle_fraction=spec.shuffle_fraction, **spec.data_options)
    if cache is not None:
        cache[key] = ds
    return ds


def train_run(run: Any, out_dir: Path) -> tuple[pd.DataFrame, dict[int, str]]:
    """Build and train a run's model (``run`` is a :class:`~deepgeom.studies.RunHandle`), saving
    checkpoints under ``out_dir``, on ``run.device`` (the config's ``resources``; default cpu).

    Training keeps a resume state in ``out_dir`` after every epoch (``train(..., resume=True)``): when
    the unit is retried after its process died, the runner hands the dead attempt's directory back and
    training continues after the last finished epoch (``run.resumed_from`` is set to that epoch).

    Returns the per-epoch history (epoch, train/test loss and accuracy) and ``{epoch: file name}``
    relative to ``out_dir`` (epoch 0 = the untrained network).
    """

    cfg = train_config(run.spec)
    device = getattr(run, "device", "cpu") or "cpu"
    if device != cfg.device:
        cfg = dataclasses.replace(cfg, device=device)
    result = train(cfg, out_dir=Path(out_dir), dataset=run.dataset, progress=False, resume=True)
    run.resumed_from = result.resumed_from
    checkpoints = {int(e): str(Path(p).relative_to(out_dir)) for e, p in result.checkpoints.items()}
    return result.history.reset_index(drop=True), checkpoints


def train_config(spec: RunSpec):
    """The :class:`deepgeom.train.TrainConfig` of a run (validates optimizer, loss, family, ...)."""

    tr = spec.train
    return TrainConfig(
        dataset=spec.dataset,
        dataset_options=dict(spec.data_options),
        family=spec.model,
        width=spec.width,
        depth=spec.depth,
        model_options=dict(spec.model_options),
        optimizer=tr["optimizer"],
        lr=tr["lr"],
        momentum=tr["momentum"],
        weight_decay=tr["weight_decay"],
        epochs=tr["epochs"],
        batch_size=tr["batch_size"],
        seed=spec.seed,
        shuffle_fraction=spec.shuffle_fraction,
        checkpoint_epochs=list(tr["checkpoints"]),
        loss=tr["loss"],
        eval_every=tr.get("eval_every", 1),
        stop_at_train_acc=tr.get("stop_at_train_acc"),
    )


def load_checkpoint(path: str | Path):
    """A trained model from a checkpoint file written by :func:`train_run` (eval mode)."""

    model = load_model(path)
    model.eval()
    return model
