"""What a unit of a study works with: the runs (:class:`RunHandle`), the context an analysis receives
(:class:`AnalysisContext`), the units themselves (:class:`UnitRecord`, :func:`plan_units`) and the
conversion of an analysis' result into tables. Shared by the runner and the executors."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DeepgeomError, InputError
from .config import RunSpec, StudyConfig, stable_key
from .registry import Analysis, get_analysis
from .training import load_checkpoint, load_dataset

__all__ = ["RunHandle", "AnalysisContext", "UnitRecord", "StudyError", "plan_units", "DONE"]

DONE = "DONE.json"


class StudyError(DeepgeomError):
    """A unit of a study failed; earlier units stay published and are skipped on the next run."""


# --------------------------------------------------------------------------------------------- context
class RunHandle:
    """A trained run seen by analyses: its spec, its data, its checkpoints and training history."""

    def __init__(self, spec: RunSpec, train_dir: Path | None, data_cache: dict):
        self.spec = spec
        self.dir = train_dir
        self._cache = data_cache
        self.device = "cpu"  # where the training unit trains (the config's resources)
        self.resumed_from: int | None = None  # set by the trainer when it resumed a killed attempt

    def __repr__(self) -> str:
        return f"RunHandle({self.spec.label!r}, key={self.spec.key})"

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def dataset(self):
        """The run's dataset from :func:`deepgeom.data.load` (shared by runs with the same data)."""
        return load_dataset(self.spec, self._cache)

    @property
    def manifest(self) -> dict:
        if self.dir is None:
            raise InputError(f"run {self.spec.label} has not been trained")
        return json.loads((self.dir / "train.json").read_text())

    @property
    def checkpoints(self) -> dict[int, Path]:
        """Epoch → checkpoint path (epoch 0 is the untrained network)."""
        return {int(e): self.dir / p for e, p in self.manifest["checkpoints"].items()}

    @property
    def epochs(self) -> list[int]:
        return sorted(self.checkpoints)

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_parquet(self.dir / "tables" / "history.parquet")

    def model(self, epoch: int | None = None):
        """The network at ``epoch`` (default: the last), in eval mode."""
        cps = self.checkpoints
        if epoch is None:
            epoch = max(cps)
        if epoch not in cps:
            raise InputError(f"run {self.spec.label} has no checkpoint at epoch {epoch}; has {sorted(cps)}")
        return load_checkpoint(cps[epoch])


@dataclasses.dataclass
class AnalysisContext:
    """What an analysis function receives.

    ``params`` are the analysis' resolved parameters; ``run`` is the run being analysed (run scope) or
    ``None`` (study scope); ``runs`` lists every run of the study; ``unit_dir`` is a private directory
    for extra artifacts (e.g. ``.npy`` matrices), published atomically with the unit.
    """

    name: str
    params: dict
    unit_dir: Path
    study: StudyConfig
    run: RunHandle | None
    runs: list[RunHandle]

    @property
    def seed(self) -> int:
        """A seed for subsampling that depends on the run's seed (0 at study scope)."""
        return int(self.params.get("seed", 0)) + (self.run.spec.seed if self.run is not None else 0)


# --------------------------------------------------------------------------------------------- units
@dataclasses.dataclass
class UnitRecord:
    """One unit of work and what happened to it in this call."""

    key: str
    kind: str  # "train" or the analysis name
    scope: str  # "train", "run" or "study"
    run: str | None  # run key (train/run scope)
    label: str
    status: str = "pending"  # computed | skipped | failed | blocked
    seconds: float = 0.0
    error: str | None = None
    tables: list[str] = dataclasses.field(default_factory=list)
    worker: dict | None = None  # who computed it: host, pid (and the Ray node id under Ray)
    attempts: int = 0  # how often this call started it (more than 1 after a worker died)
    error_file: str | None = None  # runs/<key>/error.txt: the failing unit's traceback


@dataclasses.dataclass
class _Unit:
    record: UnitRecord
    spec: dict
    analysis: Analysis | None
    run: RunSpec | None
    params: dict


def plan_units(config: StudyConfig) -> list[_Unit]:
    """All units of a study in execution order: trainings, then per-run analyses, then study ones."""
    runs = config.runs
    units: list[_Unit] = []
    for r in runs:
        spec = {"unit": "train", **r.as_dict()}
        units.append(_Unit(UnitRecord(r.key, "train", "train", r.key, f"train {r.label}"), spec, None, r, {}))
    for r in runs:
        for name, params in config.analyses.items():
            a = get_analysis(name)
            if a.scope != "run":
                continue
            spec = {"unit": name, "version": a.version, "params": params, "run": r.key}
            rec = UnitRecord(stable_key(spec), name, "run", r.key, f"{name} {r.label}")
            units.append(_Unit(rec, spec, a, r, params))
    for name, params in config.analyses.items():
        a = get_analysis(name)
        if a.scope != "study":
            continue
        spec = {"unit": name, "version": a.version, "params": params, "runs": sorted(r.key for r in runs)}
        units.append(_Unit(UnitRecord(stable_key(spec), name, "study", None, name), spec, a, None, params))
    return units


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _to_frames(result: Any, analysis: Analysis) -> dict[str, pd.DataFrame]:
    if result is None:
        return {}
    if isinstance(result, pd.DataFrame):
        return {analysis.table or analysis.name: result}
    if isinstance(result, Mapping) and all(isinstance(v, pd.DataFrame) for v in result.values()):
        return {str(k): v for k, v in result.items()}
    raise StudyError(
        f"analysis {analysis.name!r} must return a DataFrame or a dict of DataFrames; got {type(result).__name__}"
    )


