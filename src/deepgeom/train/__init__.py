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

Modules: :mod:`._config` (:class:`TrainConfig`, :class:`TrainResult`), :mod:`._checkpoints` (run
directories: checkpoints, resume state, :class:`Run`, :func:`load_run`, :func:`load_model`)
and :mod:`._loop` (data preparation, :func:`evaluate`, :func:`train`).
"""

from __future__ import annotations

import sys
from typing import Any

from .._package import Package
from . import _loop

# the public names, and the internals that other modules and tests reach through this package
from ._checkpoints import (  # noqa: F401
    RESUME_FILE,
    Run,
    _list_checkpoints,
    _load_resume,
    _save_resume,
    _save_state,
    load_model,
    load_run,
)
from ._config import HISTORY_COLUMNS, LOSSES, OPTIMIZERS, TrainConfig, TrainingDivergedError, TrainResult  # noqa: F401
from ._loop import _batches, _prepare_data, _stream_seed, evaluate, train  # noqa: F401

__all__ = ["TrainConfig", "TrainResult", "Run", "train", "load_run", "load_model", "evaluate",
           "TrainingDivergedError", "HISTORY_COLUMNS"]

#: assigning one of these on the package (a test that kills a run after saving its resume state)
#: rebinds it in the module that calls it
_USED_IN = {"_save_resume": (_loop,), "_batches": (_loop,), "_save_state": (_loop,)}


class _CallablePackage(Package):
    """``deepgeom.train`` names both this package and :func:`train`.

    ``import deepgeom`` imports its names on first use, and importing this package binds it to
    ``deepgeom.train``; making the package callable keeps ``deepgeom.train(config, out_dir)`` working
    whichever of the two the name holds at that moment.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
