"""A regression task with known target functions, for the kernel picture of Nam et al. (2024).

Inputs are standard Gaussian points in ``d`` dimensions (seeded); the ``m`` targets are fixed smooth
functions of a few random directions :math:`w_j` (unit vectors, drawn once from ``task_seed``):

.. math::

    f_1(x) = \\sin(2\\, w_1\\cdot x),\\qquad f_2(x) = (w_2\\cdot x)^2 - 1,\\qquad
    f_3(x) = \\tanh(2\\, w_3\\cdot x)\\,(w_1\\cdot x), \\ldots

(cycling through the three forms for ``m > 3``), each standardised on the training points. An MLP is
trained with MSE on them (``deepgeom.train``), and the penultimate feature kernel is diagonalised at
every checkpoint (:func:`deepgeom.analysis.kernel_dynamics.spectra_through_training`): the share
Π*(m+1) of the targets captured by the top m + 1 eigenfunctions (the constant plus one per target),
the dominant count and the regime call against m + 1 modes. The output directory mimics a study's
(``tables/regression.parquet``, plus ``regression_eigenvalues``), so claims and figures read it alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from .._io import atomic_write_json, write_table
from ..analysis.kernel_dynamics import spectra_through_training
from ..train import TrainConfig, train

__all__ = ["target_functions", "regression_task", "regression_study"]


def target_functions(x: np.ndarray, m: int, task_seed: int = 0) -> np.ndarray:
    """The ``m`` known targets at the points ``x`` ``(n, d)``, unstandardised (see the module docstring)."""
    rng = np.random.default_rng(task_seed)
    W = rng.standard_normal((x.shape[1], max(m, 1)))
    W /= np.linalg.norm(W, axis=0)
    p = x @ W
    cols = []
    for j in range(m):
        form = j % 3
        if form == 0:
            cols.append(np.sin(2.0 * p[:, j]))
        elif form == 1:
            cols.append(p[:, j] ** 2 - 1.0)
        else:
            cols.append(np.tanh(2.0 * p[:, j]) * p[:, 0])
    return np.stack(cols, axis=1)


def regression_task(*, d: int = 10, m: int = 3, n_train: int = 1000, n_test: int = 500, seed: int = 0,
                    task_seed: int = 0) -> SimpleNamespace:
    """The task in the shape :func:`deepgeom.train.train` takes for ``dataset=`` (the fields of a
    :class:`~deepgeom.data.Dataset`, whose ``y`` must be class labels): float32 inputs and float32 targets
    ``(n, m)``, standardised with the training split's mean and standard deviation."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, d))
    y = target_functions(x, m, task_seed)
    mu, sd = y[:n_train].mean(0), y[:n_train].std(0)
    y = (y - mu) / sd
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return SimpleNamespace(name="nam-regression", x_train=t(x[:n_train]), y_train=t(y[:n_train]), x_test=t(x[n_train:]),
                   y_test=t(y[n_train:]), n_classes=0, input_shape=(d,),
                   meta={"d": d, "m": m, "task_seed": task_seed, "seed": seed})


def regression_study(out_dir: str | Path, *, seeds: list[int] | tuple[int, ...] = (0, 1, 2), d: int = 10,
                     m: int = 3, n_train: int = 1000, n_test: int = 500, width: int = 256, depth: int = 2,
                     epochs: int = 40, lr: float = 1e-3, batch_size: int = 64,
                     checkpoints: list[int] | None = None, count_subsamples: int = 0) -> pd.DataFrame:
    """Train one MLP per seed on :func:`regression_task` and analyse its kernel at every checkpoint.

    Writes ``out_dir/tables/regression.{csv,parquet}`` (one row per seed and checkpoint: the columns of
    :func:`~deepgeom.analysis.kernel_dynamics.spectra_through_training` for a float target, plus ``seed``,
    ``run``, ``m``, ``train_loss``, ``test_loss``) and ``regression_eigenvalues``, and returns the first.
    The same data (``seed`` 0 of the task) serve every training seed, so seeds differ only in the net.
    """
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    ckpts = sorted(set(checkpoints or [0, epochs]) | {0, epochs})
    settings = {"d": d, "m": m, "n_train": n_train, "n_test": n_test, "width": width, "depth": depth,
                "epochs": epochs, "lr": lr, "batch_size": batch_size, "seeds": [int(s) for s in seeds],
                "checkpoints": ckpts, "count_subsamples": count_subsamples}
    done = out / "regression.json"
    if done.is_file() and (out / "tables" / "regression.parquet").is_file() \
            and json.loads(done.read_text()) == settings:  # resume: this exact step already ran
        return pd.read_parquet(out / "tables" / "regression.parquet")
    data = regression_task(d=d, m=m, n_train=n_train, n_test=n_test)
    rows, evs = [], []
    for seed in seeds:
        cfg = TrainConfig(dataset="nam-regression", family="mlp", width=width, depth=depth, optimizer="adam", lr=lr,
                          epochs=epochs, batch_size=batch_size, seed=int(seed), loss="mse", checkpoint_epochs=ckpts)
        res = train(cfg, out / "runs" / f"seed{seed}", dataset=data, progress=False)
        sp = spectra_through_training(res, (data.x_train, data.y_train), count_subsamples=count_subsamples,
                                      seed=int(seed))
        summ = sp.summary.merge(res.history[["epoch", "train_loss", "test_loss"]], on="epoch", how="left")
        rows.append(summ.assign(seed=int(seed), run=f"seed{seed}", m=m))
        evs.append(sp.eigenvalues.assign(seed=int(seed), run=f"seed{seed}"))
    table = pd.concat(rows, ignore_index=True)
    write_table(table, out / "tables" / "regression")
    write_table(pd.concat(evs, ignore_index=True), out / "tables" / "regression_eigenvalues")
    atomic_write_json(done, settings)
    return table
