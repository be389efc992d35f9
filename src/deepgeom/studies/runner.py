"""Run a study: train every run of the sweep, run every analysis, aggregate tidy tables — resumably,
in one process, in several worker processes or on a Ray cluster, and safely alongside other processes.

The work is split into *units*: one ``train`` unit per run, one unit per (run, run-scope analysis),
one unit per study-scope analysis. Each unit has a stable key (a hash of everything that determines
its output: the run's config, the analysis name, version and parameters, and for study-scope units
the keys of all runs), and its outputs are written under ``out_dir/runs/<key>/``: first into a
temporary directory owned by its writer, then published with a single rename after the done-marker
``DONE.json`` is in it — first writer wins (:mod:`deepgeom.studies.store`). A unit is claimed by a
heartbeated lease while it computes, so concurrent runs of one study compute each unit once. A rerun
after a crash skips every published unit and redoes the rest; a training resumes after its last
finished epoch. Changing a parameter changes the key, so only the affected units run again.

The runner is the same loop for every executor (:mod:`deepgeom.studies.executors`): units whose
dependencies are published (a run's training before its analyses, every training before a study-scope
analysis) are handed to the executor; results come back as plain dicts; one progress bar counts them.

Layout of ``out_dir``::

    config.yaml           the study as given (resolved defaults in study.json)
    study.json            units, their status and timings, library versions, timestamps
    runs/<key>/           one directory per unit: unit.json, DONE.json, tables/*.parquet, artifacts
                          (a failed unit: unit.json and error.txt, its traceback, until it succeeds)
    runs/.lease-<key>     the lease of a unit being computed
    tables/<name>.csv     every unit's rows of that table, concatenated, with sweep columns
    tables/<name>.parquet the same, typed
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm.auto import tqdm

from .._io import atomic_write_json, atomic_write_text, write_table
from .._validation import check_positive_int
from ..errors import InputError, UnknownNameError
from ..train import RESUME_FILE
from .config import StudyConfig, load_config
from .executors import UnitJob, check_executor, make_executor
from .resources import unit_resources
from .store import ERROR, clean_dead_tmp_dirs, lease_holder
from .units import (  # noqa: F401
    DONE,
    AnalysisContext,
    RunHandle,
    StudyError,
    UnitRecord,
    _now,
    _to_frames,
    _Unit,
    plan_units,
)

__all__ = ["run_study", "StudyResult", "UnitRecord", "RunHandle", "AnalysisContext", "StudyError", "plan_units"]

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


def _is_done(unit_dir: Path) -> bool:
    return (unit_dir / DONE).is_file()


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


def _dependencies(units: list[_Unit]) -> dict[str, list[str]]:
    """Unit key → keys it needs published first: a run's training for its analyses, every training
    for a study-scope analysis, nothing for a training."""
    train_keys = [u.record.key for u in units if u.record.scope == "train"]
    return {u.record.key: ([u.record.run] if u.record.scope == "run" else train_keys if u.record.scope == "study"
                           else []) for u in units}


def run_study(
    config: StudyConfig | str | Path | Mapping,
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    on_error: str = "raise",
    trainer: Callable[..., Any] | None = None,
    threads: int | None = None,
    executor: str = "serial",
    workers: int | None = None,
    address: str | None = None,
    max_retries: int = 2,
    poll_s: float = 0.5,
) -> StudyResult:
    """Run every unit of a study (training + analyses) and aggregate tidy tables under ``out_dir``.

    Any number of ``run_study`` calls — in several processes, on several machines sharing ``out_dir`` —
    may run the same study at once: each unit is claimed by a lease, computed once, and published
    first-writer-wins (:mod:`deepgeom.studies.store`); each call waits for units another one is
    computing and returns when every unit is published (or failed here).

    Args:
        config: a :class:`StudyConfig`, a path to a YAML/JSON config, or a mapping (validated).
        out_dir: where units (``runs/<key>/``), tables (``tables/*.csv|parquet``) and ``study.json`` go.
        progress: show one progress bar over all units (whatever the executor).
        resume: skip units already published under ``out_dir`` (default). ``False`` recomputes all and
            replaces the published ones (not for use while another process runs the same study).
        on_error: ``"raise"`` stops at the first failing unit (after recording it in ``study.json``);
            ``"continue"`` records it, skips the units that need it, and carries on. Either way the
            unit's traceback is kept in ``runs/<key>/error.txt`` and appended to ``errors.log``.
        trainer: replaces the training step (``trainer(run: RunHandle, out_dir) -> (history DataFrame,
            {epoch: checkpoint file name relative to out_dir})``); default
            :func:`deepgeom.studies.training.train_run`.
        threads: torch CPU threads inside every unit, overriding the config's ``resources.threads``
            (default 1; torch's setting is restored after each unit). Units get the same count under
            every executor, so serial, local and Ray runs do the same arithmetic. Small models train
            fastest on one thread (threads contend on a shared machine; timing in BENCHMARKS.md).
        executor: ``"serial"`` (units one after another in this process, the default), ``"local"``
            (``workers`` processes on this machine) or ``"ray"`` (Ray tasks with the config's per-unit
            ``resources.cpus`` / ``gpus``; needs ``pip install 'deepgeom[ray]'``).
        workers: worker processes for ``local`` (default: the CPU count); for ``ray``, at most this
            many units in flight (default: no limit, Ray queues them).
        address: the Ray cluster (``"auto"``, or ``"HOST:PORT"`` of its head); None starts a local Ray
            instance for this call.
        max_retries: how often a unit whose worker process died (killed, out of memory, node lost) is
            retried before it counts as failed. An exception raised by the unit is not retried.
        poll_s: seconds between two looks at units another process is computing.

    Returns:
        :class:`StudyResult` with each unit's status (``computed`` here, ``skipped`` because published
        before or by another process, ``failed``, ``blocked``) and the aggregated tables. Raises
        :class:`StudyError` for a failed unit when ``on_error="raise"``.
    """

    if on_error not in ("raise", "continue"):
        raise InputError(f"on_error must be 'raise' or 'continue'; got {on_error!r}")
    if threads is not None:
        if isinstance(threads, bool):
            raise InputError(f"threads must be an integer >= 1; got {threads!r}")
        threads = check_positive_int(threads, "threads")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InputError(f"max_retries must be an integer >= 0; got {max_retries!r}")
    check_executor(executor, workers, address)
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    out = Path(out_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    clean_dead_tmp_dirs(runs_dir, keep_with=RESUME_FILE)

    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    units = plan_units(cfg)
    by_key = {u.record.key: u for u in units}
    needs = _dependencies(units)
    started = _now()
    meta = {
        "name": cfg.name,
        "description": cfg.description,
        "started": started,
        "executor": executor,
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

    def job_for(u: _Unit) -> UnitJob:
        res = unit_resources(cfg.resources, u.record.kind)
        if threads is not None:
            res["threads"] = threads
        return UnitJob(out_dir=str(out), unit=u, config=cfg, resources=res, trainer=trainer, replace=not resume)

    ex = make_executor(executor, workers, address)
    pending = [u.record.key for u in units]  # not yet finished, failed or blocked; in plan order
    running: set[str] = set()
    finished: set[str] = set()  # published (by anyone) during or before this call
    failed_keys: set[str] = set()
    attempts: dict[str, int] = {}
    not_before: dict[str, float] = {}  # key → when to look again at a unit another process holds
    bar = tqdm(total=len(units), desc=f"study {cfg.name}", unit="unit", disable=not progress, dynamic_ncols=True)

    def settle(key: str) -> None:
        pending.remove(key)
        bar.update(1)

    def fail(u: _Unit, res: dict) -> None:
        rec = u.record
        rec.status, rec.error = "failed", res.get("error")
        rec.seconds = float(res.get("seconds") or 0.0)
        rec.worker = res.get("worker")
        if (runs_dir / rec.key / ERROR).is_file():
            rec.error_file = str(runs_dir / rec.key / ERROR)
        failed_keys.add(rec.key)
        settle(rec.key)
        with (out / "errors.log").open("a") as log:
            log.write(f"[{_now()}] {rec.label}\n{res.get('traceback') or rec.error}\n")
        write_meta()
        if on_error == "raise":
            where = f"; traceback in {rec.error_file}" if rec.error_file else ""
            raise StudyError(f"unit {rec.label!r} ({rec.key}) failed: {rec.error}{where}")

    clean_exit = False
    try:
        while pending or running:
            now = time.monotonic()
            for key in list(pending):
                if key in running:
                    continue
                rec = by_key[key].record
                if resume and _is_done(runs_dir / key):  # published before this call or by another process
                    done = json.loads((runs_dir / key / DONE).read_text())
                    rec.status, rec.tables = "skipped", done.get("tables", [])
                    rec.seconds = float(done.get("seconds", 0.0))  # what it cost when it was computed
                    rec.worker = done.get("worker")
                    finished.add(key)
                    settle(key)
                elif any(k in failed_keys for k in needs[key]):
                    rec.status, rec.error = "blocked", "a training it needs failed"
                    settle(key)
            for key in list(pending):
                if ex.n_running >= ex.slots:
                    break
                if key in running or not_before.get(key, 0.0) > now or not all(k in finished for k in needs[key]):
                    continue
                if resume and lease_holder(runs_dir, key) is not None:  # another process computes it
                    not_before[key] = now + poll_s
                    continue
                u = by_key[key]
                bar.set_postfix_str(u.record.label[:60], refresh=False)
                running.add(key)
                attempts[key] = attempts.get(key, 0) + 1
                ex.submit(job_for(u))
                if ex.name == "serial":  # its result is ready: take it before choosing the next unit
                    break
            if not pending and not running:
                break
            for job, res in ex.wait(poll_s):
                key = job.key
                running.discard(key)
                u = by_key[key]
                rec = u.record
                status = res["status"]
                rec.attempts = attempts.get(key, 0)
                if status in ("computed", "skipped", "discarded"):
                    rec.status = "computed" if status == "computed" else "skipped"
                    rec.seconds = float(res.get("seconds") or 0.0)
                    rec.tables = list(res.get("tables") or [])
                    rec.worker = res.get("worker")
                    rec.error = None
                    finished.add(key)
                    settle(key)
                    write_meta()
                elif status == "busy":
                    not_before[key] = time.monotonic() + poll_s
                elif status == "died" and attempts.get(key, 0) <= max_retries:
                    rec.error = f"retrying: {res.get('error')}"
                else:
                    if status == "died":
                        res = {**res, "error": f"{res.get('error')}; gave up after {attempts.get(key, 0)} attempts"}
                    fail(u, res)
        clean_exit = True
    finally:
        bar.close()
        ex.close(cancel=not clean_exit)

    tables = _aggregate(out, units)
    write_meta(_now())
    return StudyResult(out_dir=out, config=cfg, units=[u.record for u in units], tables=tables)
