"""Run directories: checkpoint and resume files written atomically, and read back (:func:`load_run`,
:func:`load_model`)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from .. import models
from .._io import atomic_write, atomic_write_text
from ..errors import InputError, UnknownNameError
from ._config import HISTORY_COLUMNS, TrainConfig

_CKPT_RE = re.compile(r"^epoch_(\d+)\.safetensors$")
RESUME_FILE = "resume.pt"


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _save_state(path: Path, state: dict[str, torch.Tensor], model_config: dict[str, Any], epoch: int) -> None:
    meta = {"deepgeom_model_config": json.dumps(model_config), "epoch": str(epoch)}
    # looked up on the module at call time, so a test can make the write fail half-way
    atomic_write(path, lambda tmp: safetensors.torch.save_file(state, tmp, metadata=meta))


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


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


def _checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors"


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


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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
    model.load_state_dict(_load_state(file))
    return model.eval()
