"""The study's store under concurrency: unit leases with a heartbeat, owned temporary directories,
first-writer-wins publication.

Any number of processes — on one machine or on several sharing the output folder — may run the same
study at once. They coordinate only through files in ``out_dir/runs/``:

* **Lease** ``runs/.lease-<key>``: created with ``O_CREAT | O_EXCL`` (atomic on local file systems and
  NFSv3+), holding the owner (host, pid, a random token). While the unit computes, a heartbeat thread
  touches the file every :data:`HEARTBEAT_S` seconds. A lease is *stale* when its owner is on this host
  and its pid is gone, or when its heartbeat is older than :data:`STALE_AFTER_S` (compared against the
  file system's own clock, read from a file this process has just touched, so machine clocks need not
  agree). A stale lease is taken over: renamed to a private name (only one contender's rename
  succeeds), checked to be the same stale lease, removed, and created afresh.
* **Temporary directory** ``runs/.tmp-<key>-<pid>-<random>/`` with ``OWNER.json`` inside: only its writer
  writes there. Another process removes (or, for a training with a resume checkpoint, *adopts*) it only
  when its owner is provably gone — it holds the unit's lease, or the owner is a dead pid on this host.
* **Publication**: the finished temporary directory is renamed to ``runs/<key>/`` with one
  ``os.rename``; an existing published unit is never replaced (the loser's copy is discarded), so the
  first writer wins and readers never see a unit change under them. Only an explicit recompute
  (``resume=False``) replaces a published unit.

Clocks: leases from other hosts age by the file system's clock only. Pid reuse on the same host within a
lease's lifetime would make a dead owner look alive until its heartbeat ages out (``STALE_AFTER_S``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .._io import fsync_dir

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "Owner", "Lease", "lease_holder", "new_tmp_dir", "claim_tmp_dirs",
           "clean_dead_tmp_dirs", "publish_first", "DONE", "ERROR"]

#: Seconds between two heartbeats of a held lease.
HEARTBEAT_S = 10.0
#: A lease whose heartbeat is older than this is stale (its owner presumed dead).
STALE_AFTER_S = 60.0
DONE = "DONE.json"
ERROR = "error.txt"
_OWNER = "OWNER.json"


@dataclass(frozen=True)
class Owner:
    """Who holds a lease or writes a temporary directory: host name, process id and a random token."""

    host: str
    pid: int
    token: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])

    def to_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "token": self.token}

    @classmethod
    def from_dict(cls, d: dict) -> Owner:
        return cls(str(d["host"]), int(d["pid"]), str(d["token"]))

    def provably_dead(self) -> bool:
        """True only when this owner is a process on this host that no longer exists."""
        return self.host == socket.gethostname() and not _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(pid, 0): it is dead all the same.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _fs_now(directory: Path, owner: Owner) -> float:
    """The file system's clock: the mtime of a file this process has just touched in ``directory``."""
    clock = directory / f".clock-{owner.pid}-{uuid.uuid4().hex[:8]}"
    try:
        with open(clock, "x"):
            pass
        try:
            return clock.stat().st_mtime
        finally:
            clock.unlink()
    except OSError:
        return time.time()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lease_holder(runs_dir: Path, key: str, me: Owner | None = None) -> Owner | None:
    """The live owner of unit ``key``'s lease, or None when it is free or stale."""
    path = Path(runs_dir) / f".lease-{key}"
    info = _read_json(path)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    owner = Owner.from_dict(info) if info and {"host", "pid", "token"} <= set(info) else None
    if owner is not None and owner.provably_dead():
        return None
    now = _fs_now(Path(runs_dir), me or Owner.me())
    if now - mtime > STALE_AFTER_S:
        return None
    # An empty file is a lease being written right now (create, then write): treat it as held.
    return owner or Owner("?", -1, "?")


class Lease:
    """An exclusive, heartbeated claim on one unit (see the module docstring).

    ``acquire()`` returns True when this process now holds the lease (taking over a stale one);
    ``release()`` removes it if it is still ours. ``lost`` turns True when the heartbeat finds the file
    no longer ours (another process judged us dead and took over); a holder that lost its lease may
    still finish, but its publication then only wins if nobody else published first.
    """

    def __init__(self, runs_dir: Path, key: str, owner: Owner, heartbeat_s: float | None = None):
        self.runs_dir = Path(runs_dir)
        self.key = key
        self.owner = owner
        self.path = self.runs_dir / f".lease-{key}"
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self.owner.to_dict(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _take_over_stale(self) -> bool:
        info = _read_json(self.path)
        if lease_holder(self.runs_dir, self.key, self.owner) is not None:
            return False
        tomb = self.runs_dir / f".lease-{self.key}.stale-{self.owner.token}"
        try:
            os.rename(self.path, tomb)
        except FileNotFoundError:  # released or taken over meanwhile: try a plain create
            return self._create()
        if _read_json(tomb) != info:  # we moved a lease someone created after our check: put it back
            with contextlib.suppress(OSError):
                os.link(tomb, self.path)
            with contextlib.suppress(OSError):
                os.unlink(tomb)
            return False
        with contextlib.suppress(OSError):
            os.unlink(tomb)
        return self._create()

    def acquire(self) -> bool:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if not (self._create() or self._take_over_stale()):
            return False
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.key}", daemon=True)
        self._thread.start()
        return True

    def _mine(self) -> bool:
        info = _read_json(self.path)
        return bool(info) and info.get("token") == self.owner.token

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._mine():
                self.lost = True
                return
            with contextlib.suppress(OSError):
                os.utime(self.path, None)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._mine():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------------------------- tmp dirs
def new_tmp_dir(runs_dir: Path, key: str, owner: Owner) -> Path:
    """A fresh temporary directory for unit ``key`` owned by ``owner`` (``OWNER.json`` inside)."""
    tmp = Path(runs_dir) / f".tmp-{key}-{owner.pid}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    (tmp / _OWNER).write_text(json.dumps(owner.to_dict()))
    return tmp


def _tmp_owner(tmp: Path) -> Owner | None:
    info = _read_json(tmp / _OWNER)
    return Owner.from_dict(info) if info and {"host", "pid", "token"} <= set(info) else None


def claim_tmp_dirs(runs_dir: Path, key: str, owner: Owner, adopt: str | None = None) -> Path:
    """Called by the holder of unit ``key``'s lease: every other temporary directory of ``key`` belongs
    to a process that is gone (or lost the lease), so it is removed — except that, when ``adopt`` names a
    file, the newest directory holding that file (a training's resume checkpoint) is renamed to be this
    owner's and returned. Otherwise a fresh directory is returned."""
    runs_dir = Path(runs_dir)
    olds = [p for p in runs_dir.glob(f".tmp-{key}-*") if p.is_dir() and _tmp_owner(p) != owner]
    keep = None
    if adopt is not None:
        with_state = [p for p in olds if (p / adopt).is_file()]
        if with_state:
            keep = max(with_state, key=lambda p: (p / adopt).stat().st_mtime)
    tmp = None
    if keep is not None:
        tmp = runs_dir / f".tmp-{key}-{owner.pid}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(keep, tmp)
            (tmp / _OWNER).write_text(json.dumps(owner.to_dict()))
        except OSError:
            tmp = None
    for p in olds:
        if p != keep:
            shutil.rmtree(p, ignore_errors=True)
    return tmp if tmp is not None else new_tmp_dir(runs_dir, key, owner)


def clean_dead_tmp_dirs(runs_dir: Path, keep_with: str | None = None) -> list[Path]:
    """Remove temporary directories whose owner is a dead process on this host (those holding
    ``keep_with`` — a resume checkpoint — are left for the next holder to adopt), and ownerless ones
    (written by an older deepgeom) untouched for :data:`STALE_AFTER_S`. Never touches a live owner's."""
    removed = []
    now = time.time()
    for p in Path(runs_dir).glob(".tmp-*"):
        if not p.is_dir():
            continue
        owner = _tmp_owner(p)
        if owner is None:
            try:
                dead = now - p.stat().st_mtime > STALE_AFTER_S
            except FileNotFoundError:
                continue
        else:
            dead = owner.provably_dead() and not (keep_with and (p / keep_with).is_file())
        if dead:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# --------------------------------------------------------------------------------------------- publish
def publish_first(tmp: Path, final: Path, *, replace: bool = False) -> bool:
    """Rename the finished ``tmp`` to ``final``. Returns False (and removes ``tmp``) when a published
    unit (one with ``DONE.json``) is already there and ``replace`` is False: the first writer wins. A
    leftover at ``final`` without ``DONE.json`` (a failed unit's traceback folder) is moved aside and
    removed. ``replace=True`` moves a published unit aside the same way (an explicit recompute)."""
    tmp, final = Path(tmp), Path(final)
    for _ in range(3):
        if final.exists():
            if (final / DONE).is_file() and not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            aside = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:6]}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, final)
            fsync_dir(final.parent)  # the published unit survives a power loss
            return True
        except OSError as exc:  # someone published between our check and our rename
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return False
