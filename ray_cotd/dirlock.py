"""One run per output directory: a lock file that names its holder.

    with hold(cfg.output_dir, "annotate"):   # DirectoryInUse (a ConfigError) if a live run holds it
        ...

Two annotate runs into one directory both resume from the same ledger and write every row twice
(issue 23: 6 corpus rows for 3 ids, stats.json saying kept=3). The lock file `.ray-cotd.lock` holds
one JSON line: pid, host, stage and start time of its holder.

How a holder is told apart from a stale lock:
  - the holder keeps an exclusive `flock` on the file for as long as it runs; the kernel drops it
    when the process dies, SIGKILL included. A second run that cannot take the flock is refused.
  - a run that takes the flock still reads the file: a holder on this host whose pid is gone is a
    killed run (stale, taken over, so a resume just works); a live pid here is refused.
  - a holder on another host cannot be asked about its pid, and a shared volume (NFS, a bucket
    mount) may not pass flocks between hosts. So every holder touches its lock file (mtime) every
    HEARTBEAT_S seconds, and a run that finds another host's lock watches it for up to
    STALE_AFTER_S: touched meanwhile, the holder is alive and the run is refused; untouched, the
    holder is gone and the lock is taken over. A KubeRay head pod that comes back under a new
    hostname after a preemption therefore resumes its own run, after at most a minute's wait. Only
    changes of the mtime are compared, never its value, so the hosts' clocks need not agree.
The holder removes the file when it ends normally or with an exception.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray_cotd.configbase import ConfigError

LOCK_NAME = ".ray-cotd.lock"
HEARTBEAT_S = 10.0  # a holder touches its lock file this often
STALE_AFTER_S = 60.0  # another host's lock left untouched this long is a gone run's


class DirectoryInUse(ConfigError):
    """The output directory is held by another run; the message names the holder and the lock file."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read(fd: int) -> dict[str, Any] | None:
    """The holder recorded in the lock file, or None when it is empty or unreadable (a run killed
    while writing it)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 4096).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another run (its lock file names no holder)"
    return (f"{holder.get('stage', 'ray-cotd')} run pid {holder['pid']} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')})")


def _refuse(directory: Path, path: Path, holder: dict[str, Any] | None, why: str) -> DirectoryInUse:
    return DirectoryInUse(f"output_dir {directory} is in use by {describe(holder)}{why}. Wait for it to finish, "
                          f"or choose another output_dir; if that run is gone, delete {path}")


def _acquire(directory: Path, stage: str) -> tuple[int, Path]:
    path = directory / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise _refuse(directory, path, holder, "") from None
        try:  # the holder may have removed the file between our open and its release: open it again
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        holder, host = _read(fd), socket.gethostname()
        if holder is not None and holder.get("host") == host and _alive(holder["pid"]):
            os.close(fd)
            raise _refuse(directory, path, holder, "")
        if holder is not None and holder.get("host") != host:
            if _touched_within(path, STALE_AFTER_S):
                os.close(fd)
                raise _refuse(directory, path, holder,
                              f" (another host; it touched the lock within {STALE_AFTER_S:g} s)")
            print(f"[dirlock] taking over {path}: {describe(holder)} has not touched it for {STALE_AFTER_S:g} s",
                  file=sys.stderr, flush=True)
        me = {"pid": os.getpid(), "host": host, "stage": stage,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        return fd, path


def _touched_within(path: Path, seconds: float) -> bool:
    """Whether `path`'s mtime changes within `seconds` (its holder's heartbeat), watched each second."""
    def mtime() -> int | None:
        try:
            return path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    first, deadline = mtime(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if mtime() != first:
            return True
    return False


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:  # removed under us, or the volume went away: the run itself will say so
            pass


@contextmanager
def hold(directory: str | Path, stage: str) -> Iterator[Path]:
    """Hold `directory` (created if needed) for one run of `stage`; yields the lock file's path.
    Raises DirectoryInUse when another run holds it (see the module doc)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = _acquire(directory, stage)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), name="ray-cotd-dirlock", daemon=True)
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join()
        path.unlink(missing_ok=True)  # before the flock goes, so no one takes over a file about to vanish
        os.close(fd)


__all__ = ["DirectoryInUse", "HEARTBEAT_S", "LOCK_NAME", "STALE_AFTER_S", "describe", "hold"]
