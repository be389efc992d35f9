"""Run a study: train every run of the sweep, run every analysis, aggregate tidy tables — resumably.

The work is split into *units*: one ``train`` unit per run, one unit per (run, run-scope analysis),
one unit per study-scope analysis. Each unit has a stable key (a hash of everything that determines
its output: the run's config, the analysis name, version and parameters, and for study-scope units
the keys of all runs), and its outputs are written under ``out_dir/runs/<key>/``: first into a
temporary directory, then published with a single ``os.replace`` after the done-marker ``DONE.json``
is in it. A rerun after a crash therefore skips every published unit (it is not recomputed) and redoes
the rest; partial temporary directories are removed. Changing a parameter changes the key, so only
the affected units run again.

Layout of ``out_dir``::

    config.yaml           the study as given (resolved defaults in study.json)
    study.json            units, their status and timings, library versions, timestamps
    runs/<key>/           one directory per unit: unit.json, DONE.json, tables/*.parquet, artifacts
    tables/<name>.csv     every unit's rows of that table, concatenated, with sweep columns
    tables/<name>.parquet the same, typed
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DeepgeomError, InputError
from ._io import atomic_write_json, atomic_write_text, publish_dir, write_table
from .config import RunSpec, StudyConfig, load_config, stable_key
from .registry import Analysis, get_analysis

__all__ = ["run_study", "StudyResult", "UnitRecord", "RunHandle", "AnalysisContext", "StudyError", "plan_units"]

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

    def __repr__(self) -> str:
        return f"RunHandle({self.spec.label!r}, key={self.spec.key})"

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def dataset(self):
        """The run's dataset from :func:`deepgeom.data.load` (shared by runs with the same data)."""
        from .training import load_dataset

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
        from .training import load_checkpoint

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


# --------------------------------------------------------------------------------------------- result
@dataclasses.dataclass
class StudyResult:
    """What :func:`run_study` did: where things are, which units ran or were skipped, the tables."""

    out_dir: Path
    config: StudyConfig
    units: list[UnitRecord]
    tables: dict[str, Path]  # table name → parquet path

    @property
    def n_computed(self) -> int:
        return sum(u.status == "computed" for u in self.units)

    @property
    def n_skipped(self) -> int:
        return sum(u.status == "skipped" for u in self.units)

    @property
    def failed(self) -> list[UnitRecord]:
        return [u for u in self.units if u.status in ("failed", "blocked")]

    def table(self, name: str) -> pd.DataFrame:
        """An aggregated table as a DataFrame (raises listing the tables that exist)."""
        if name not in self.tables:
            from ..errors import UnknownNameError

            raise UnknownNameError("table", name, sorted(self.tables))
        return pd.read_parquet(self.tables[name])


# --------------------------------------------------------------------------------------------- running
def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("deepgeom", "torch", "numpy", "pandas", "scipy", "matplotlib"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 - versions are informative only
            out[mod] = "unavailable"
    return out


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


def _is_done(unit_dir: Path) -> bool:
    return (unit_dir / DONE).is_file()


def _publish(tmp: Path, final: Path, unit: _Unit, frames: dict[str, pd.DataFrame], seconds: float) -> None:
    (tmp / "tables").mkdir(exist_ok=True)
    for name, df in frames.items():
        write_table(df.reset_index(drop=True), tmp / "tables" / name, formats=("parquet",))
    atomic_write_json(tmp / "unit.json", unit.spec)
    atomic_write_json(tmp / DONE, {"finished": _now(), "seconds": round(seconds, 3), "tables": sorted(frames)})
    publish_dir(tmp, final)


def _clean_stale_tmp(runs_dir: Path) -> None:
    for p in runs_dir.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def _aggregate(out_dir: Path, units: list[_Unit]) -> dict[str, Path]:
    runs_dir = out_dir / "runs"
    by_table: dict[str, list[pd.DataFrame]] = {}
    for u in units:
        d = runs_dir / u.record.key
        if not _is_done(d):
            continue
        done = json.loads((d / DONE).read_text())
        for name in done.get("tables", []):
            df = pd.read_parquet(d / "tables" / f"{name}.parquet")
            extra = dict(u.run.columns()) if u.run is not None else {}
            extra["unit"] = u.record.key
            if u.analysis is not None:
                extra["analysis"] = u.analysis.name
            for col, val in reversed(list(extra.items())):
                if col not in df.columns:
                    df.insert(0, col, val)
            by_table.setdefault(name, []).append(df)
    tables: dict[str, Path] = {}
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    for name, frames in sorted(by_table.items()):
        frames = [f for f in frames if len(f.columns)]
        df = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
        paths = write_table(df, out_dir / "tables" / name)
        tables[name] = paths[1]
    return tables


def run_study(
    config: StudyConfig | str | Path | Mapping,
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    on_error: str = "raise",
    trainer: Callable[..., Any] | None = None,
    threads: int | None = None,
) -> StudyResult:
    """Run every unit of a study (training + analyses) and aggregate tidy tables under ``out_dir``.

    Args:
        config: a :class:`StudyConfig`, a path to a YAML/JSON config, or a mapping (validated).
        out_dir: where units (``runs/<key>/``), tables (``tables/*.csv|parquet``) and ``study.json`` go.
        progress: show a progress bar over units.
        resume: skip units already published under ``out_dir`` (default). ``False`` recomputes all.
        on_error: ``"raise"`` stops at the first failing unit (after recording it in ``study.json``);
            ``"continue"`` records it, skips the units that need it, and carries on.
        trainer: replaces the training step (``trainer(run: RunHandle, out_dir) -> (history DataFrame,
            {epoch: checkpoint file name relative to out_dir})``); default
            :func:`deepgeom.studies.training.train_run`.
        threads: torch CPU threads while the study runs (restored afterwards); None leaves torch's
            setting. Small models train fastest on one thread: on this project's shared 2-core machine
            an MLP 256×3 on mnist1d took 9.9 s for 5 epochs on 1 thread and 31.2 s on 2 (thread
            contention under load).

    Returns:
        :class:`StudyResult` with each unit's status (``computed``/``skipped``/``failed``/``blocked``)
        and the aggregated tables. Raises :class:`StudyError` for a failed unit when ``on_error="raise"``.
    """
    from tqdm.auto import tqdm

    from .training import train_run

    if on_error not in ("raise", "continue"):
        raise InputError(f"on_error must be 'raise' or 'continue'; got {on_error!r}")
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    trainer = trainer or train_run
    if threads is not None:
        import torch

        from .._validation import check_positive_int

        threads = check_positive_int(threads, "threads")
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run_study(cfg, out_dir, progress=progress, resume=resume, on_error=on_error, trainer=trainer)
        finally:
            torch.set_num_threads(saved_threads)
    out = Path(out_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(runs_dir)
    import yaml

    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    units = plan_units(cfg)
    data_cache: dict = {}
    handles = {r.key: RunHandle(r, runs_dir / r.key, data_cache) for r in cfg.runs}
    started = _now()
    meta = {
        "name": cfg.name,
        "description": cfg.description,
        "started": started,
        "versions": _versions(),
        "train": cfg.train,
        "analyses": cfg.analyses,
        "runs": [{**r.columns(), "label": r.label} for r in cfg.runs],
    }

    def write_meta(finished: str | None = None) -> None:
        atomic_write_json(
            out / "study.json",
            {**meta, "finished": finished, "units": [dataclasses.asdict(u.record) for u in units]},
        )

    failed_runs: set[str] = set()
    bar = tqdm(total=len(units), desc=f"study {cfg.name}", unit="unit", disable=not progress, dynamic_ncols=True)
    try:
        for u in units:
            rec = u.record
            final = runs_dir / rec.key
            bar.set_postfix_str(rec.label[:60], refresh=False)
            if resume and _is_done(final):
                done = json.loads((final / DONE).read_text())
                rec.status, rec.tables = "skipped", done.get("tables", [])
                rec.seconds = float(done.get("seconds", 0.0))  # what it cost when it was computed
                bar.update(1)
                continue
            needs = [rec.run] if rec.scope == "run" else (list(handles) if rec.scope == "study" else [])
            if any(k in failed_runs for k in needs):
                rec.status = "blocked"
                rec.error = "a training it needs failed"
                bar.update(1)
                continue
            tmp = runs_dir / f".tmp-{rec.key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            tmp.mkdir()
            t0 = time.perf_counter()
            try:
                if rec.scope == "train":
                    history, checkpoints = trainer(handles[u.run.key], tmp)
                    atomic_write_json(tmp / "train.json", {"checkpoints": {str(k): str(v) for k, v in checkpoints.items()}})
                    frames = {"history": history}
                else:
                    ctx = AnalysisContext(
                        name=rec.kind,
                        params=u.params,
                        unit_dir=tmp,
                        study=cfg,
                        run=handles[u.run.key] if u.run is not None else None,
                        runs=list(handles.values()),
                    )
                    frames = _to_frames(u.analysis.func(ctx), u.analysis)
                rec.seconds = time.perf_counter() - t0
                _publish(tmp, final, u, frames, rec.seconds)
                rec.status, rec.tables = "computed", sorted(frames)
            except Exception as exc:  # noqa: BLE001 - recorded, then re-raised or skipped per on_error
                shutil.rmtree(tmp, ignore_errors=True)
                rec.status, rec.seconds = "failed", time.perf_counter() - t0
                rec.error = f"{type(exc).__name__}: {exc}"
                if rec.scope == "train":
                    failed_runs.add(rec.key)
                if on_error == "raise":
                    write_meta()
                    (out / "errors.log").open("a").write(f"[{_now()}] {rec.label}\n{traceback.format_exc()}\n")
                    raise StudyError(f"unit {rec.label!r} ({rec.key}) failed: {rec.error}") from exc
                (out / "errors.log").open("a").write(f"[{_now()}] {rec.label}\n{traceback.format_exc()}\n")
            finally:
                bar.update(1)
            write_meta()
    finally:
        bar.close()

    tables = _aggregate(out, units)
    write_meta(_now())
    return StudyResult(out_dir=out, config=cfg, units=[u.record for u in units], tables=tables)
