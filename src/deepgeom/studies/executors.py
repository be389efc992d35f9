"""Where a study's units run: in this process (``serial``), in N worker processes on this machine
(``local``), or as Ray tasks on a cluster (``ray``).

Every executor runs the same function, :func:`execute_unit`, on a :class:`UnitJob`: take the unit's
lease (:mod:`deepgeom.studies.store`), compute it in a temporary directory with the config's thread
count, publish it first-writer-wins, release the lease. The runner (:func:`deepgeom.studies.run_study`)
decides which units are ready (their dependencies published) and hands them to the executor; it is the
same loop for all three, so dependencies, retries, the progress bar and the error summary do not depend
on the executor.

``local`` starts its workers with the ``spawn`` method (a fork of a process that has used torch's
OpenMP threads can hang) and sends them jobs pickled with cloudpickle, so analyses and trainers defined
in a notebook or a test work too. A worker that dies (killed, out of memory) is replaced and its unit
retried; a worker whose parent dies exits. ``ray`` submits one task per unit with the unit's
``num_cpus`` / ``num_gpus`` and the ``SPREAD`` strategy; Ray retries a task whose worker died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import cloudpickle
import torch

from .._io import atomic_write_json, atomic_write_text, write_table
from .._optional import require
from ..errors import InputError, UnknownNameError
from ..train import RESUME_FILE
from . import training
from .store import DONE, ERROR, Lease, Owner, claim_tmp_dirs, publish_first
from .units import AnalysisContext, RunHandle, _now, _to_frames

__all__ = ["EXECUTORS", "UnitJob", "execute_unit", "SerialExecutor", "LocalExecutor", "RayExecutor",
           "check_executor", "make_executor"]

EXECUTORS = ("serial", "local", "ray")


@dataclasses.dataclass
class UnitJob:
    """Everything a process needs to compute one unit (picklable with cloudpickle)."""

    out_dir: str
    unit: Any  # runner._Unit
    config: Any  # StudyConfig
    resources: dict  # threads, cpus, gpus, device
    trainer: Callable[..., Any] | None = None
    replace: bool = False  # resume=False: recompute even if published, and replace it
    heartbeat_s: float | None = None

    @property
    def key(self) -> str:
        return self.unit.record.key


def _worker_info(owner) -> dict:
    info = {"host": owner.host, "pid": owner.pid}
    if "ray" in sys.modules:
        with contextlib.suppress(Exception):
            import ray  # optional (the ray extra), and only already-imported

            if ray.is_initialized():
                info["ray_node"] = ray.get_runtime_context().get_node_id()
    return info


@contextlib.contextmanager
def _torch_threads(n: int):
    saved = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _compute(job: UnitJob, tmp: Path) -> tuple[dict, dict]:
    """Run the unit's work into ``tmp``; returns (tables, extra fields for DONE.json)."""

    u, cfg = job.unit, job.config
    runs_dir = Path(job.out_dir) / "runs"
    cache: dict = {}
    handles = {r.key: RunHandle(r, runs_dir / r.key, cache) for r in cfg.runs}
    rec = u.record
    if rec.scope == "train":
        handle = handles[u.run.key]
        handle.device = job.resources.get("device", "cpu")
        trainer = job.trainer or training.train_run  # looked up now: a hook may replace it
        history, checkpoints = trainer(handle, tmp)

        atomic_write_json(tmp / "train.json", {"checkpoints": {str(k): str(v) for k, v in checkpoints.items()}})
        extra = {}
        resumed = getattr(handle, "resumed_from", None)
        if resumed is not None:
            extra["resumed_from"] = resumed
        return {"history": history}, extra
    ctx = AnalysisContext(name=rec.kind, params=u.params, unit_dir=tmp, study=cfg,
                          run=handles[u.run.key] if u.run is not None else None, runs=list(handles.values()))
    return _to_frames(u.analysis.func(ctx), u.analysis), {}


def execute_unit(job: UnitJob) -> dict:
    """Compute one unit under its lease and publish it (see the module docstring).

    Returns a plain dict: ``status`` is ``computed`` (published by this call), ``skipped`` (already
    published), ``busy`` (another live process holds the lease), ``discarded`` (computed, but another
    process published first) or ``failed`` (with ``error`` and ``traceback``), plus ``seconds``,
    ``tables`` and ``worker`` (host, pid and, under Ray, the node id).
    """

    rec = job.unit.record
    runs_dir = Path(job.out_dir) / "runs"
    final = runs_dir / rec.key
    owner = Owner.me()
    out = {"key": rec.key, "status": "skipped", "seconds": 0.0, "tables": [], "error": None, "traceback": None,
           "worker": _worker_info(owner)}

    def published() -> bool:
        if job.replace or not (final / DONE).is_file():
            return False
        done = json.loads((final / DONE).read_text())
        out.update(status="skipped", tables=done.get("tables", []), seconds=float(done.get("seconds", 0.0)))
        return True

    if published():
        return out
    lease = Lease(runs_dir, rec.key, owner, job.heartbeat_s)
    if not lease.acquire():
        out["status"] = "busy"
        return out
    try:
        if published():
            return out
        tmp = claim_tmp_dirs(runs_dir, rec.key, owner, adopt=RESUME_FILE if rec.scope == "train" else None)
        t0 = time.perf_counter()
        try:
            with _torch_threads(job.resources.get("threads", 1)):
                frames, extra = _compute(job, tmp)
            seconds = time.perf_counter() - t0
            (tmp / "tables").mkdir(exist_ok=True)
            for name, df in frames.items():
                write_table(df.reset_index(drop=True), tmp / "tables" / name, formats=("parquet",))
            atomic_write_json(tmp / "unit.json", job.unit.spec)

            atomic_write_json(tmp / DONE, {"finished": _now(), "seconds": round(seconds, 3),
                                           "tables": sorted(frames), "worker": out["worker"], **extra})
            with contextlib.suppress(FileNotFoundError):
                (tmp / "OWNER.json").unlink()
            won = publish_first(tmp, final, replace=job.replace)
            out.update(status="computed" if won else "discarded", seconds=seconds, tables=sorted(frames))
        except Exception as exc:  # noqa: BLE001 - reported to the runner, which records or raises it
            tb = traceback.format_exc()
            shutil.rmtree(tmp, ignore_errors=True)
            out.update(status="failed", seconds=time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}",
                       traceback=tb)
            if not (final / DONE).is_file():  # keep the traceback in the unit's folder
                with contextlib.suppress(OSError):
                    final.mkdir(exist_ok=True)
                    atomic_write_json(final / "unit.json", job.unit.spec)
                    atomic_write_text(final / ERROR, f"{rec.label}\n{out['worker']}\n{tb}")
    finally:
        lease.release()
    return out


# --------------------------------------------------------------------------------------------- serial
class SerialExecutor:
    """Units one after another in this process."""

    name = "serial"

    def __init__(self) -> None:
        self.slots = 1
        self._done: list[tuple[UnitJob, dict]] = []

    def submit(self, job: UnitJob) -> None:
        self._done.append((job, execute_unit(job)))

    def wait(self, timeout: float) -> list[tuple[UnitJob, dict]]:
        if not self._done:
            time.sleep(timeout)
        done, self._done = self._done, []
        return done

    @property
    def n_running(self) -> int:
        return 0

    def close(self, cancel: bool = False) -> None:
        pass


# --------------------------------------------------------------------------------------------- local
def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:  # the study was killed: stop too (our lease becomes stale)
            os._exit(3)


def _local_worker(conn, parent_pid: int) -> None:
    """A ``local`` worker process: receive cloudpickled jobs, run them, send results back."""

    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not msg:
            return
        try:
            job = cloudpickle.loads(msg)
            res = execute_unit(job)
        except Exception as exc:  # noqa: BLE001 - e.g. a job that cannot be unpickled here
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                   "seconds": 0.0, "tables": [], "worker": {"pid": os.getpid()}}
        conn.send(res)


class LocalExecutor:
    """``workers`` processes on this machine (started with ``spawn``), one unit at a time each."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.slots = workers or max(1, (os.cpu_count() or 1))
        self._ctx = mp.get_context("spawn")
        self._workers: list[dict] = []  # started on demand: a rerun with nothing left starts none

    def _spawn(self) -> dict:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_local_worker, args=(child, os.getpid()), daemon=True,
                              name="deepgeom-study-worker")
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "job": None}

    @property
    def n_running(self) -> int:
        return sum(w["job"] is not None for w in self._workers)

    def submit(self, job: UnitJob) -> None:
        idle = [w for w in self._workers if w["job"] is None]
        if not idle:
            self._workers.append(self._spawn())
            idle = self._workers[-1:]
        w = idle[0]
        blob = cloudpickle.dumps(job)
        w["job"] = job
        try:
            w["conn"].send_bytes(blob)
        except OSError:  # died while idle: reported by wait() as a death
            pass

    def wait(self, timeout: float) -> list[tuple[UnitJob, dict]]:
        busy = [w for w in self._workers if w["job"] is not None]
        if not busy:
            time.sleep(timeout)
            return []
        ready = wait([w["conn"] for w in busy] + [w["proc"].sentinel for w in busy], timeout)
        out = []
        for i, w in enumerate(self._workers):
            if w["job"] is None or (w["conn"] not in ready and w["proc"].sentinel not in ready):
                continue
            job, res = w["job"], None
            with contextlib.suppress(EOFError, OSError):
                if w["conn"].poll():
                    res = w["conn"].recv()
            if res is None:  # the worker died mid-unit
                w["proc"].join(5)
                code = w["proc"].exitcode
                res = {"status": "died", "key": job.key, "seconds": 0.0, "tables": [], "traceback": None,
                       "error": f"worker process {w['proc'].pid} died ({_exit_text(code)})",
                       "worker": {"pid": w["proc"].pid}}
                w["conn"].close()
                self._workers[i] = self._spawn()
            else:
                w["job"] = None
            out.append((job, res))
        return out

    def close(self, cancel: bool = False) -> None:
        for w in self._workers:
            if cancel and w["job"] is not None:
                w["proc"].kill()
            else:
                with contextlib.suppress(OSError):
                    w["conn"].send_bytes(b"")
        for w in self._workers:
            w["proc"].join(10)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join()
            w["conn"].close()
        self._workers = []


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


# --------------------------------------------------------------------------------------------- ray
def _ray_execute(job: UnitJob) -> dict:
    return execute_unit(job)


class RayExecutor:
    """One Ray task per unit on the cluster at ``address`` (``"auto"``: the one this machine belongs to;
    None: a local Ray instance started here, and stopped when the study ends)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3) -> None:
        self._ray = require("ray", "'deepgeom[ray]'", "--executor ray")
        self._address, self._workers = address, workers
        self._owns = False
        self._remote = None  # connected on the first unit: a rerun with nothing left never starts Ray
        self.slots = workers or 10**6  # Ray queues tasks until a node has the resources
        self.max_retries = max_retries
        self._refs: dict[Any, UnitJob] = {}

    def _connect(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self._address, "log_to_driver": False,
                                      "logging_level": logging.WARNING, "include_dashboard": False}
            if self._address is None:
                kwargs["num_cpus"] = self._workers or (os.cpu_count() or 1)
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InputError(f"cannot connect to the Ray cluster at {self._address!r}: {exc}") from exc
            self._owns = True
        self._remote = ray.remote(_ray_execute)

    @property
    def n_running(self) -> int:
        return len(self._refs)

    def submit(self, job: UnitJob) -> None:
        if self._remote is None:
            self._connect()
        r = job.resources
        ref = self._remote.options(num_cpus=r.get("cpus", 1), num_gpus=r.get("gpus", 0), max_retries=self.max_retries,
                                   retry_exceptions=False, scheduling_strategy="SPREAD").remote(job)
        self._refs[ref] = job

    def wait(self, timeout: float) -> list[tuple[UnitJob, dict]]:
        ray = self._ray
        if not self._refs:
            time.sleep(timeout)
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        out = []
        for ref in ready:
            job = self._refs.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - worker or node lost beyond Ray's retries
                res = {"status": "died", "key": job.key, "seconds": 0.0, "tables": [], "traceback": None,
                       "error": f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                       "worker": {}}
            out.append((job, res))
        return out

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs):
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
        self._refs = {}
        if self._owns:
            self._ray.shutdown()


def check_executor(executor: str = "serial", workers: int | None = None, address: str | None = None) -> None:
    """Raise InputError (UnknownNameError for the name) for an executor setting that cannot work."""
    if executor not in EXECUTORS:
        raise UnknownNameError("executor", executor, EXECUTORS)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be an integer >= 1; got {workers!r}")
    if address is not None and executor != "ray":
        raise InputError(f"address is for --executor ray; got executor={executor!r}")
    if executor == "serial" and workers not in (None, 1):
        raise InputError("the serial executor runs one unit at a time; use --executor local for workers > 1")


def make_executor(executor: str = "serial", workers: int | None = None, address: str | None = None):
    """An executor by name (``serial``, ``local``, ``ray``); bad names or counts raise InputError."""
    check_executor(executor, workers, address)
    if executor == "serial":
        return SerialExecutor()
    if executor == "local":
        return LocalExecutor(workers)
    return RayExecutor(address, workers)
