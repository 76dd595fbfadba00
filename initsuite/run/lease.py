"""Run leases: at most one process trains a run folder at a time, across hosts.

A process takes a run by creating ``<run>/lease.json`` with ``O_CREAT | O_EXCL``, which is
atomic on local disks and on the shared filesystems clusters use (NFS v3+, Lustre, GPFS),
where ``flock`` may be missing or local to one client. The lease names its holder (host,
pid, the pid's start time, a random token) and carries a heartbeat that a background
thread refreshes every ``heartbeat_s`` seconds while the run trains.

Another launcher that finds the file reads it:

* live (heartbeat younger than ``stale_s``, and on the same host the pid still runs):
  the run is *held*; the launcher skips it and reports ``held by host:pid``;
* stale (the pid is gone on this host, or the heartbeat is older than ``stale_s``):
  the launcher takes it over by renaming the file aside (``rename`` is atomic: of several
  launchers only one succeeds), checking that what it moved is the stale lease it judged,
  and creating a fresh lease with ``O_EXCL``.

A holder whose lease was taken over (its heartbeats stopped for longer than ``stale_s``,
e.g. a suspended process) notices on its next heartbeat and stops before writing
anything more (:class:`LeaseLost`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from initsuite.atomic import atomic_write_text

LEASE_NAME = "lease.json"
HEARTBEAT_S = 30.0  # defaults of train.lease_heartbeat_s / train.lease_stale_s (initsuite.config)
STALE_S = 300.0
UNREADABLE_GRACE_S = 10.0  # an empty or garbled lease file younger than this may be being written


class LeaseLost(RuntimeError):
    """Another launcher took this run over (our heartbeat was older than the stale timeout)."""


def _pid_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (``/proc/<pid>/stat`` field 22): tells a reused pid
    from the holder. None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, start: Optional[str] = None) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    if start is not None:
        now = _pid_start(int(pid))
        if now is not None and now != start:
            return False  # the pid was reused by another process
    return True


def read(run_path: Path) -> Optional[Dict[str, Any]]:
    """The lease of a run folder, or None if there is none. An unreadable lease file (a
    holder killed while creating it) reads as a holder with no heartbeat: stale."""
    path = Path(run_path) / LEASE_NAME
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {"heartbeat": 0.0}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:  # a holder writes its lease right after creating it: empty for long means it died there
            mtime = path.stat().st_mtime
        except OSError:
            return None
        return {"heartbeat": mtime if time.time() - mtime < UNREADABLE_GRACE_S else 0.0, "unreadable": True}


def holder(info: Dict[str, Any]) -> str:
    return f"{info.get('host', '?')}:{info.get('pid', '?')}"


def is_stale(info: Dict[str, Any], stale_s: float = STALE_S, now: Optional[float] = None) -> bool:
    now = time.time() if now is None else now
    if info.get("host") == socket.gethostname() and info.get("pid") is not None:
        if not pid_alive(info["pid"], info.get("pid_start")):
            return True
    return now - float(info.get("heartbeat") or 0.0) > float(stale_s)


def live_holder(run_path: Path, stale_s: float = STALE_S) -> Optional[str]:
    """``host:pid`` of the live lease on a run folder, else None."""
    info = read(run_path)
    return holder(info) if info is not None and not is_stale(info, stale_s) else None


class Lease:
    """A held lease; use :func:`acquire`. ``release()`` (or the context manager) gives it up."""

    def __init__(self, run_path: Path, info: Dict[str, Any], heartbeat_s: float, stale_s: float,
                 took_over: Optional[Dict[str, Any]] = None):
        self.path = Path(run_path) / LEASE_NAME
        self.info, self.heartbeat_s, self.stale_s = info, float(heartbeat_s), float(stale_s)
        self.took_over = took_over  # the stale lease this one replaced, if any
        self.lost = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def token(self) -> str:
        return self.info["token"]

    def owned(self) -> bool:
        current = read(self.path.parent)
        return current is not None and current.get("token") == self.token

    def beat(self) -> None:
        """Refresh the heartbeat (if the lease is still ours; otherwise mark it lost)."""
        if self.lost:
            return
        if not self.owned():
            self.lost = True
            return
        self.info["heartbeat"] = time.time()
        atomic_write_text(self.path, json.dumps(self.info))

    def check(self) -> None:
        """Raise :class:`LeaseLost` if another launcher has taken the run over."""
        if self.lost:
            raise LeaseLost(f"the lease on {self.path.parent} was taken over by "
                            f"{holder(read(self.path.parent) or {})}; this process stops")

    def start(self) -> "Lease":
        if self.heartbeat_s > 0:
            self._thread = threading.Thread(target=self._loop, name="initsuite-lease", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except OSError:  # a full or flaky disk: try again at the next beat
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not self.lost and self.owned():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _new_info() -> Dict[str, Any]:
    now = time.time()
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid), "token": uuid.uuid4().hex,
            "started": now, "started_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "heartbeat": now}


def _create(path: Path, info: Dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info))
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(run_path: Path, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
    """Take the run folder: a started :class:`Lease`, or the live holder's lease dict if
    another process holds it (the caller skips the run)."""
    run_path = Path(run_path)
    run_path.mkdir(parents=True, exist_ok=True)
    path = run_path / LEASE_NAME
    for _ in range(5):
        info = _new_info()
        if _create(path, info):
            return Lease(run_path, info, heartbeat_s, stale_s).start()
        current = read(run_path)
        if current is None:
            continue  # released between our create and our read: try again
        if not is_stale(current, stale_s):
            return current
        aside = run_path / f".{LEASE_NAME}.stale-{info['token']}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue  # another launcher moved it first
        moved = read_file(aside)
        if not current.get("unreadable") and (moved.get("token"), moved.get("heartbeat")) != (
                current.get("token"), current.get("heartbeat")):
            # It was refreshed between our read and our rename: a live lease; put it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            os.unlink(aside)
            continue
        os.unlink(aside)
        if _create(path, info):
            return Lease(run_path, info, heartbeat_s, stale_s, took_over=current).start()
    current = read(run_path)
    return current if current is not None else {"host": "?", "pid": "?"}


def read_file(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
