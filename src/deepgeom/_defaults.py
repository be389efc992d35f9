"""Training defaults shared by ``deepgeom train`` (the CLI) and study configs (``train:`` section).

One table, so a model trained from the command line and the same model in a study get the same
optimiser unless the user says otherwise. Adam (Kingma & Ba 2015) at 1e-3 is the default because it
trains the bundled families and arbitrary user models without per-model tuning. Kept free of heavy
imports: the CLI shows these values in ``--help`` without importing torch.

:class:`deepgeom.train.TrainConfig` keeps its own historical defaults (SGD, lr 0.05, 10 epochs) for
API compatibility; pass ``**TRAIN_DEFAULTS``-derived values to match the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TRAIN_DEFAULTS", "SWEEP_AXES", "INPUT", "OUTPUT"]

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 5,
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "loss": "ce",
}

#: The axes of a study sweep, in the order runs are enumerated, with their defaults (here, not in
#: ``studies.config``, because a user model's width/depth are read against them in ``models.user``).
SWEEP_AXES: dict[str, Any] = {
    "dataset": None,  # required
    "model": None,  # required
    "width": 64,
    "depth": 3,
    "seed": 0,
    "shuffle_fraction": 0.0,
}

#: The pseudo-layer names of a model's own input and output (``capture`` resolves them; ``models``
#: lists them in ``analysis_layers``).
INPUT = "input"
OUTPUT = "output"
