"""``deepgeom reproduce PAPER --out DIR``: run a paper's bundled studies, judge its pre-registered claims.

A paper's *spec* (``specs/<paper>.yaml`` beside this module) holds study configs, optional extra
steps (the pretrained-transformer profile), a ``quick`` variant of both for testing the machinery, and
the claims. The studies run through :func:`deepgeom.studies.run_study` — resumable, so a killed
reproduction reruns only what is missing — in ``workers`` processes at once (one study each, one torch
thread each, so the arithmetic does not depend on the worker count). Layout of ``DIR``::

    <paper>/<study>/          each study's directory (runs/, tables/, study.json)
    <paper>/transformer/      the transformer step's table (tables/transformer_id.parquet)
    <paper>/regression/       the regression step's tables (tables/regression.parquet; nam2024)
    <paper>/claims.csv|parquet the paper's claims with measured values, intervals and verdicts
    <paper>/figures/          the reproduction's figures (PNG + SVG)
    <paper>/reproduction.json what ran: mode, wall time, machine, versions, study directories
    claims.csv|parquet        every paper's claims found under DIR (the table the report opens with)
    report/index.html         claims table, then each paper's figures
    REPRODUCTION.md           the same as Markdown (what ``--markdown`` splices into the repository's file)
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

try:  # Unix only: the CPU time of the finished worker processes
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

from .._io import atomic_write_json, write_table
from ..claims import CLAIM_COLUMNS, Tables, evaluate_claims, parse_claims
from ..errors import InputError, UnknownNameError
from ..studies import run_study
from . import regression, transformer
from .figures import draw_figures
from .report import write_outputs

__all__ = ["papers", "load_spec", "reproduce", "SPEC_DIR"]

SPEC_DIR = Path(__file__).with_name("specs")


def papers() -> list[str]:
    """The papers with a bundled reproduction spec."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(paper: str, *, quick: bool = False) -> dict[str, Any]:
    """A paper's spec with its claims validated; ``quick`` swaps in the ``quick`` studies and extras
    (same study names and claims, so the machinery is exercised end to end on tiny settings)."""
    if paper not in papers():
        raise UnknownNameError("paper", paper, papers())
    spec = yaml.safe_load((SPEC_DIR / f"{paper}.yaml").read_text(encoding="utf-8"))
    spec["claims_parsed"] = parse_claims(spec.get("claims"), where=f"{paper}.claims")
    if quick:
        q = spec.get("quick") or {}
        spec["studies"] = {**spec["studies"], **q.get("studies", {})}
        for step in _STEPS:
            if step in spec:
                spec[step] = {**spec[step], **q.get(step, {})}
    return spec


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run_one_study(config: dict, out_dir: str, threads: int) -> dict:
    """Worker: one study, resumable, with ``threads`` torch threads. Returns a summary (picklable).

    A spec's study may say ``units_in_parallel: k`` (not part of the study config): its units then run
    in k local processes of one thread each — for a study much longer than the others, which would
    otherwise hold one core while the rest of the machine idles."""
    config = dict(config)
    units = int(config.pop("units_in_parallel", 1))
    t0 = time.perf_counter()
    res = run_study(config, out_dir, progress=False, threads=1 if units > 1 else threads, on_error="continue",
                    executor="local" if units > 1 else "serial", workers=units if units > 1 else None)
    return {"dir": out_dir, "computed": res.n_computed, "skipped": res.n_skipped,
            "failed": [f"{u.label}: {u.error}" for u in res.failed], "seconds": time.perf_counter() - t0}


#: Steps a spec may have beside its studies: spec key -> (function, table it writes).
_STEPS = {"transformer": (transformer.transformer_profile, "transformer_id"),
          "regression": (regression.regression_study, "regression")}


def _run_step(step: str, settings: dict, out_dir: str, threads: int) -> dict:
    """Worker: one extra step (resumable by its own settings file); ``computed`` says whether it wrote
    its table, so a pure resume keeps the computing run's timing."""
    fn, table_name = _STEPS[step]
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    table = Path(out_dir) / "tables" / f"{table_name}.parquet"
    before = table.stat().st_mtime_ns if table.is_file() else None
    fn(out_dir, **settings)
    computed = int(before is None or table.stat().st_mtime_ns != before)
    return {"dir": out_dir, "seconds": time.perf_counter() - t0, "failed": [], "computed": computed}


def _with_device(config: dict, device: str) -> dict:
    """The study config with its trainings on ``device`` (unless the spec already chose one): the
    ``resources`` section is not part of any unit's key, so keep CPU and GPU runs in separate folders."""
    if device == "cpu":
        return config
    res = dict(config.get("resources") or {})
    train = dict(res.get("train") or {})
    train.setdefault("device", device)
    res["train"] = train
    return {**config, "resources": res}


def _resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def reproduce(paper: str, out_dir: str | os.PathLike, *, quick: bool = False, workers: int = 2,
              progress: bool = True, figures: bool = True, device: str = "auto") -> pd.DataFrame:
    """Reproduce ``paper`` (one of :func:`papers`, or ``"all"``) into ``out_dir`` and return its claims table.

    Runs the spec's studies (resuming finished units), the extra steps, then judges every claim
    (:func:`deepgeom.claims.evaluate_claims`), draws the figures and writes ``claims.csv``,
    ``report/index.html`` and ``REPRODUCTION.md`` under ``out_dir``. ``workers`` processes run studies
    side by side, each with ``max(1, cpus // workers)`` torch threads. ``device="auto"`` trains on the
    GPU when torch sees one (``"cpu"``/``"cuda"`` force it); the device is recorded in ``reproduction.json``.
    """
    targets = papers() if paper == "all" else [paper]
    for p in targets:
        if p not in papers():
            raise UnknownNameError("paper", p, [*papers(), "all"])
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be an integer >= 1; got {workers!r}")
    device = _resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for p in targets:
        spec = load_spec(p, quick=quick)
        pdir = out / p
        pdir.mkdir(exist_ok=True)
        threads = max(1, (os.cpu_count() or 1) // workers)
        tasks: list[tuple[str, Any, tuple]] = [
            (f"study {name}", _run_one_study, (_with_device(copy.deepcopy(cfg), device), str(pdir / name), threads))
            for name, cfg in spec["studies"].items()]
        tasks += [(step, _run_step, (step, dict(spec[step]), str(pdir / step), threads))
                  for step in _STEPS if step in spec]
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        results: dict[str, dict] = {}
        bar = tqdm(total=len(tasks), desc=f"reproduce {p}{' (quick)' if quick else ''}", unit="step",
                   disable=not progress, dynamic_ncols=True)
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            futs = {pool.submit(fn, *args): name for name, fn, args in tasks}
            for fut in cf.as_completed(futs):
                name = futs[fut]
                try:
                    results[name] = fut.result()
                except Exception as exc:  # noqa: BLE001 - recorded; claims needing it become inconclusive
                    results[name] = {"failed": [f"{type(exc).__name__}: {exc}"]}
                bar.set_postfix_str(f"{name} done", refresh=False)
                bar.update(1)
        bar.close()
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        dirs = {name: pdir / name for name in spec["studies"]}
        for step in _STEPS:
            if step in spec:
                dirs[step] = pdir / step
        tables = Tables({k: v for k, v in dirs.items() if v.exists()})
        claims = evaluate_claims(spec["claims_parsed"], tables)
        write_table(claims, pdir / "claims")
        meta = {"paper": p, "title": spec.get("title", p), "quick": quick, "started": started,
                "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                "load_average": _load_average(), "workers": workers, "threads_per_worker": threads, "device": device,
                "cpu": _cpu_model(), "cpus": os.cpu_count(), "steps": results,
                "command": f"deepgeom reproduce {p} --out {out}{' --quick' if quick else ''}",
                "versions": _versions()}
        meta_path = pdir / "reproduction.json"
        previous = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        if previous and previous.get("quick") == quick and not any(
                r.get("computed", 1) or r.get("failed") for r in results.values()):
            # a pure resume (e.g. a rerun for --markdown) recomputed nothing: the timing that describes the
            # results is the run that computed them, so keep it and record the resume beside it
            meta = {**previous, "resumed": started}
        elif previous and previous.get("quick") == quick:
            # this invocation computed part of the results and resumed the rest: keep the timing of the
            # invocations that computed the rest beside it, so the cost of the whole is on record
            keep = ("started", "wall_seconds", "cpu_seconds", "load_average", "workers", "threads_per_worker")
            meta["earlier_runs"] = [*previous.get("earlier_runs", []), {k: previous.get(k) for k in keep}]
        atomic_write_json(meta_path, meta)
        if figures:
            draw_figures(p, tables, pdir / "figures")
        frames.append(claims)
    write_outputs(out)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIM_COLUMNS)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the study workers)."""
    if resource is None:
        return float("nan")
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load average at the end: a busy machine stretches the wall time."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("deepgeom", "torch", "numpy"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # noqa: BLE001 - informative only
            out[mod] = "unavailable"
    return out
