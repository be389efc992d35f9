"""Studies beyond one process: the lease store, executors (serial, local, Ray), concurrent
`deepgeom study` processes on one folder, faults (killed workers, killed studies, resumed trainings).

Reference values never come from the code under test's own arithmetic: results of the parallel and
concurrent runs are compared byte for byte with a plain serial run of the same config, and computations
are counted by an instrument outside the runner (``tests/_count_units.py``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepgeom.errors import InputError, UnknownNameError
from deepgeom.studies import load_config, run_study
from deepgeom.studies.store import STALE_AFTER_S, Lease, Owner, lease_holder, publish_first

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"

# Two tiny runs (digits MLP, 3 epochs), an ID profile per run and CKA across the two: 5 units.
TINY = {
    "name": "tiny-parallel",
    "sweep": {"dataset": "digits", "model": "mlp", "width": [12, 16], "depth": 2},
    "train": {"epochs": 3, "lr": 0.01, "batch_size": 64},
    "analyses": {"id_profile": {"n_points": 200}, "cka_across": {"n_points": 200, "batch_size": 100}},
}
N_UNITS = 5


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tables").glob("*"))}


def _published(out: Path) -> list[Path]:
    """DONE.json of every published unit (not of a temporary folder about to be published)."""
    return [p for p in (out / "runs").glob("*/DONE.json") if not p.parent.name.startswith(".")]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def serial_ref(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("serial")
    res = run_study(TINY, out, progress=False)
    assert res.n_computed == N_UNITS
    tables = _tables(out)
    assert {"history.csv", "history.parquet", "id_profiles.csv", "cka_across.csv"} <= set(tables)
    return tables


# --------------------------------------------------------------------------------------------- store
def test_lease_is_exclusive_and_only_a_stale_one_is_taken_over(tmp_path):
    a, b = Owner.me(), Owner.me()  # same live pid, different tokens: two contenders
    la = Lease(tmp_path, "k1", a)
    assert la.acquire()
    assert not Lease(tmp_path, "k1", b).acquire()
    assert lease_holder(tmp_path, "k1") == a
    la.release()
    assert lease_holder(tmp_path, "k1") is None and not (tmp_path / ".lease-k1").exists()
    lb = Lease(tmp_path, "k1", b)
    assert lb.acquire()
    lb.release()

    # a dead pid on this host: taken over at once
    (tmp_path / ".lease-k2").write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"}))
    assert lease_holder(tmp_path, "k2") is None
    lk = Lease(tmp_path, "k2", a)
    assert lk.acquire() and json.loads((tmp_path / ".lease-k2").read_text())["token"] == a.token
    lk.release()

    # another host: alive while its heartbeat is fresh, stale once older than STALE_AFTER_S
    p = tmp_path / ".lease-k3"
    p.write_text(json.dumps({"host": "elsewhere.invalid", "pid": 1, "token": "y"}))
    assert not Lease(tmp_path, "k3", a).acquire()
    old = time.time() - STALE_AFTER_S - 5
    os.utime(p, (old, old))
    lk = Lease(tmp_path, "k3", a)
    assert lk.acquire()
    lk.release()


def test_heartbeat_keeps_a_lease_fresh_and_notices_a_takeover(tmp_path):
    me = Owner.me()
    lease = Lease(tmp_path, "k", me, heartbeat_s=0.05)
    assert lease.acquire()
    old = time.time() - 1000
    os.utime(lease.path, (old, old))
    time.sleep(0.3)
    assert time.time() - lease.path.stat().st_mtime < 5  # the heartbeat touched it again
    lease.path.write_text(json.dumps({"host": "h", "pid": 1, "token": "someone-else"}))
    time.sleep(0.3)
    assert lease.lost
    lease.release()
    assert lease.path.exists()  # not ours any more: release leaves it alone


def test_exactly_one_of_many_concurrent_contenders_gets_each_lease(tmp_path):
    for round_ in range(20):
        owners = [Owner.me() for _ in range(8)]
        leases = [Lease(tmp_path, f"r{round_}", o) for o in owners]
        won = [False] * len(leases)
        barrier = threading.Barrier(len(leases))

        def grab(i, leases=leases, won=won, barrier=barrier):
            barrier.wait()
            won[i] = leases[i].acquire()

        threads = [threading.Thread(target=grab, args=(i,)) for i in range(len(leases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(won) == 1
        for lease, w in zip(leases, won, strict=True):
            if w:
                lease.release()


def test_publication_is_first_writer_wins(tmp_path):
    def unit(tag):
        d = tmp_path / f".tmp-{tag}"
        d.mkdir()
        (d / "DONE.json").write_text(tag)
        return d

    final = tmp_path / "key"
    assert publish_first(unit("first"), final)
    second = unit("second")
    assert not publish_first(second, final)
    assert (final / "DONE.json").read_text() == "first" and not second.exists()
    assert publish_first(unit("third"), final, replace=True)  # an explicit recompute replaces
    assert (final / "DONE.json").read_text() == "third"
    # a failed unit's traceback folder (no DONE.json) gives way to the unit's first success
    failed = tmp_path / "key2"
    failed.mkdir()
    (failed / "error.txt").write_text("tb")
    assert publish_first(unit("ok"), failed)
    assert (failed / "DONE.json").read_text() == "ok" and not (failed / "error.txt").exists()
    assert not list(tmp_path.glob(".old-*"))


# --------------------------------------------------------------------------------------------- config
def test_resources_are_validated_and_resolved_per_unit_kind():
    from deepgeom.studies.resources import unit_resources

    cfg = load_config({**TINY, "resources": {"threads": 2, "train": {"gpus": 1, "device": "cuda"},
                                             "cka_across": {"cpus": 4}}})
    assert unit_resources(cfg.resources, "train") == {"threads": 2, "cpus": 2, "gpus": 1, "device": "cuda"}
    assert unit_resources(cfg.resources, "cka_across") == {"threads": 2, "cpus": 4, "gpus": 0, "device": "cpu"}
    assert unit_resources(load_config(TINY).resources, "id_profile")["threads"] == 1
    # resources never enter a key: the same units, whatever the hardware
    assert [r.key for r in cfg.runs] == [r.key for r in load_config(TINY).runs]
    with pytest.raises(InputError, match="resources.threads must be an integer >= 1; got 0"):
        load_config({**TINY, "resources": {"threads": 0}})
    with pytest.raises(InputError, match="resources.train.device must be one of"):
        load_config({**TINY, "resources": {"train": {"device": "tpu"}}})
    with pytest.raises(UnknownNameError, match="unknown key in resources 'spectrum_through_training'"):
        load_config({**TINY, "resources": {"spectrum_through_training": {"threads": 2}}})
    with pytest.raises(UnknownNameError, match="unknown executor 'threads'"):
        run_study(TINY, "/nonexistent/never-created", executor="threads")


def test_cli_rejects_bad_executor_settings(tmp_path, capsys):
    from deepgeom.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["study", str(cfg), "--out", str(tmp_path / "o"), "--workers", "0", "--executor", "local"]) == 2
    assert "workers must be an integer >= 1; got 0" in capsys.readouterr().err
    assert main(["study", str(cfg), "--out", str(tmp_path / "o"), "--address", "auto"]) == 2
    assert "address is for --executor ray" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- executors
def test_local_workers_match_serial_and_a_killed_training_is_retried_and_resumed(tmp_path, serial_ref):
    """--executor local with 2 workers; the worker training the width-12 run is SIGKILLed right after
    it saved epoch 2's resume state. The executor replaces the worker and retries the unit, which
    resumes after epoch 2; every table is byte-identical to the uninterrupted serial run."""
    flags = tmp_path / "flags"
    flags.mkdir()

    def trainer(run, out_dir):
        import importlib

        from deepgeom.studies.training import train_run

        T = importlib.import_module("deepgeom.train")  # the module (deepgeom.train is also the function)

        marker = flags / f"killed-{run.key}"
        if run.spec.width == 12 and not marker.exists():
            save = T._save_resume

            def save_then_die(path, state):
                save(path, state)
                if state["epoch"] == 2:
                    marker.write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)

            T._save_resume = save_then_die
        return train_run(run, out_dir)

    out = tmp_path / "local"
    res = run_study(TINY, out, progress=False, executor="local", workers=2, trainer=trainer)
    assert res.n_computed == N_UNITS and not res.failed
    k12 = res.config.runs[0].key
    killed_pid = int((flags / f"killed-{k12}").read_text())
    train12 = next(u for u in res.units if u.key == k12)
    assert train12.attempts == 2 and train12.worker["pid"] != killed_pid
    done = json.loads((out / "runs" / k12 / "DONE.json").read_text())
    assert done["resumed_from"] == 2  # not from epoch 0
    assert not (out / "runs" / k12 / "resume.pt").exists()
    assert len({u.worker["pid"] for u in res.units}) >= 2  # the units were spread over the workers
    assert _tables(out) == serial_ref
    assert not list((out / "runs").glob(".tmp-*")) and not list((out / "runs").glob(".lease-*"))


def test_a_unit_that_raises_keeps_its_traceback_in_its_folder(tmp_path, capsys):
    from deepgeom.cli import main
    from deepgeom.studies import register_analysis, unregister_analysis

    def broken(ctx):
        raise RuntimeError(f"no good for {ctx.run.spec.width}")

    register_analysis("t_broken", broken)
    try:
        cfg = {**TINY, "sweep": {**TINY["sweep"], "width": 12}, "train": {**TINY["train"], "epochs": 1},
               "analyses": {"t_broken": {}}}
        cfg_file = tmp_path / "c.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        assert main(["study", str(cfg_file), "--out", str(tmp_path), "--keep-going"]) == 1
        printed = capsys.readouterr()
        assert "2/2" in printed.err  # one progress bar over both units
        assert "failed: t_broken digits/mlp w12 d2 s0: RuntimeError: no good for 12 (traceback: " in printed.out
        res = run_study(cfg, tmp_path, progress=False, on_error="continue")  # retried (an error is not done)
        (bad,) = res.failed
        assert bad.error == "RuntimeError: no good for 12" and bad.attempts == 1
        text = Path(bad.error_file).read_text()
        assert Path(bad.error_file).parent.name == bad.key and "Traceback" in text and "no good for 12" in text
        assert not (Path(bad.error_file).parent / "DONE.json").exists()
        with pytest.raises(Exception, match=r"no good for 12; traceback in .*error\.txt"):
            run_study(cfg, tmp_path, progress=False)
    finally:
        unregister_analysis("t_broken")


# --------------------------------------------------------------------------------------------- processes
def _study_proc(cfg: Path, out: Path, count: Path, *extra: str) -> subprocess.Popen:
    code = ("import sys, _count_units; from deepgeom.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    return subprocess.Popen([sys.executable, "-c", code, "study", str(cfg), "--out", str(out), "--quiet", *extra],
                            env=_env(DEEPGEOM_COUNT_FILE=str(count)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("n_procs", [2, 3])
def test_concurrent_study_processes_compute_every_unit_once(tmp_path, serial_ref, n_procs):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out, count = tmp_path / "out", tmp_path / "count.txt"
    procs = [_study_proc(cfg, out, count) for _ in range(n_procs)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * n_procs, outputs
    lines = count.read_text().splitlines()
    per_unit = pd.Series([" ".join(line.split()[:2]) for line in lines]).value_counts()
    assert len(per_unit) == N_UNITS and (per_unit == 1).all(), per_unit  # every unit computed exactly once
    computed = [int(o.split("units computed")[0].split(":")[-1]) for o, _ in outputs]
    assert sum(computed) == N_UNITS  # and each process's own account agrees
    assert _tables(out) == serial_ref
    assert not list((out / "runs").glob(".tmp-*")) and not list((out / "runs").glob(".lease-*"))


@pytest.mark.slow
def test_a_killed_study_reruns_only_its_unfinished_units(tmp_path, serial_ref):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out, count = tmp_path / "out", tmp_path / "count.txt"
    proc = _study_proc(cfg, out, count)
    t0 = time.time()
    while len(_published(out)) < 2 and time.time() - t0 < 300:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = {p.parent.name: p.stat().st_mtime_ns for p in _published(out)}
    assert 2 <= len(before) < N_UNITS
    res = run_study(cfg, out, progress=False)  # its lease (a dead pid) is taken over at once
    assert res.n_skipped == len(before) and res.n_computed == N_UNITS - len(before)
    for key, mtime in before.items():
        assert (out / "runs" / key / "DONE.json").stat().st_mtime_ns == mtime  # not recomputed
    assert _tables(out) == serial_ref


# --------------------------------------------------------------------------------------------- ray
def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _descendants(pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


class RayCluster:
    """A Ray head and a second Ray node as separate `ray start --block` processes on 127.0.0.1, each
    with one CPU, in a private temp dir; ``stop()`` ends every process they started."""

    def __init__(self):
        ray_bin = str(Path(sys.executable).with_name("ray"))
        self.tmp = tempfile.mkdtemp(prefix="dgray", dir="/tmp")  # short: Ray's socket paths must fit
        self.env = _env(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        ports = _free_ports(13)
        self.address = f"127.0.0.1:{ports[0]}"
        self.procs = []
        for i, head in enumerate((True, False)):
            p = ports[1 + 6 * i: 7 + 6 * i]
            cmd = [ray_bin, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                   "--object-store-memory=80000000", "--disable-usage-stats",
                   f"--dashboard-agent-listen-port={p[0]}", f"--dashboard-agent-grpc-port={p[1]}",
                   f"--metrics-export-port={p[2]}", f"--runtime-env-agent-port={p[3]}",
                   f"--node-manager-port={p[4]}", f"--object-manager-port={p[5]}"]
            cmd += ([f"--port={ports[0]}", "--head", "--include-dashboard=false", f"--temp-dir={self.tmp}"] if head
                    else [f"--address={self.address}"])
            log = open(Path(self.tmp) / f"node{i}.log", "w")  # noqa: SIM115 - closed in stop()
            self.procs.append((subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True), log))

    def stop(self):
        launchers = [p.pid for p, _ in self.procs]
        family = _descendants(launchers)  # raylets, GCS, agents and workers (workers set their own session)
        for p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p, _ in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for pid in sorted(family | set(launchers) | _descendants(launchers)):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p, log in self.procs:
            p.wait()
            log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.slow
def test_ray_cluster_of_two_nodes_runs_the_study(tmp_path, serial_ref):
    if os.environ.get("CI"):  # CI installs the extra (scripts/setup.sh): there a missing Ray is a failure
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray", reason="the ray extra: pip install 'deepgeom[ray]' (scripts/setup.sh installs it)")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    cluster = RayCluster()
    try:
        proc = subprocess.run([sys.executable, "-m", "deepgeom", "study", str(cfg), "--out", str(out), "--quiet",
                               "--executor", "ray", "--address", cluster.address],
                              env=cluster.env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{N_UNITS} units computed" in proc.stdout
        nodes = {json.loads(p.read_text())["worker"]["ray_node"] for p in _published(out)}
        assert len(nodes) == 2  # the head and the second node both ran units
        assert _tables(out) == serial_ref
    finally:
        cluster.stop()
    alive = [p for p, _ in cluster.procs if p.poll() is None]
    assert not alive
