"""Saving a version safely: name reservations (lock files), automatic names, crash leftovers.

A save takes its name with an exclusive ``.<name>.lock`` file first, so two
processes never write the same version. The lock records its owner (process
id and host): a lock whose owner process is gone on this host is stale at
once, whatever its age (a ``kill -9`` mid-save); one from another host, or
unreadable, is stale after :data:`STALE_S`. Temp files of a dead process, and
weights whose metadata was never written by a save no one holds any more,
are the leftovers of a crash: the next save removes them.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from llm4seg_core.atomic import _host_tag, _owner_gone, pid_alive
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.store.checkpoint import read_checkpoint_info

STALE_S = 3600.0
"""Locks and temp files whose owner cannot be checked are leftovers after this long."""

UNREADABLE_LOCK_S = 30.0
"""A lock without a readable owner (killed between creating and writing it) is stale after this."""

_AUTO_RE = re.compile(r"^v(\d+)$")


def lock_path(root: Path, name: str) -> Path:
    return root / f".{name}.lock"


def lock_owner(lock: Path) -> tuple[int, str] | None:
    """The (pid, host tag) a lock file records; None when it is unreadable."""
    try:
        parts = lock.read_text(encoding="utf-8").split()
        return int(parts[0]), parts[1] if len(parts) > 1 else ""
    except (OSError, UnicodeDecodeError, ValueError, IndexError):
        return None


def lock_is_stale(lock: Path, now: float | None = None) -> bool:
    """Whether ``lock`` is left over from a save that is no longer running."""
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except OSError:
        return False  # gone already
    owner = lock_owner(lock)
    if owner is None:
        return age > UNREADABLE_LOCK_S
    pid, host = owner
    if host == _host_tag():
        return not pid_alive(pid)
    return age > STALE_S


def is_locked(root: Path, name: str) -> bool:
    """Whether a live save holds ``name``."""
    lock = lock_path(root, name)
    return lock.exists() and not lock_is_stale(lock)


def reserve(root: Path, name: str) -> bool:
    """Take ``name`` for a save in progress (an exclusive lock file); False when taken.

    A stale lock (its owner is gone) is removed and the name taken.
    """
    lock = lock_path(root, name)
    for _ in range(2):
        try:
            _create_lock(lock)
            break
        except FileExistsError:
            if not lock_is_stale(lock):
                return False
            lock.unlink(missing_ok=True)
    else:
        return False
    if (root / f"{name}.json").exists():
        lock.unlink(missing_ok=True)
        return False
    return True


def _create_lock(lock: Path) -> None:
    """Create ``lock`` holding its owner, never empty: written aside, then hard-linked in place
    (``link`` fails when the lock exists, like ``O_EXCL``); ``FileExistsError`` when taken."""
    owner = f"{os.getpid()} {_host_tag()}\n"
    side = lock.with_name(f"{lock.name}.llm4seg-{_host_tag()}-{os.getpid()}-{time.monotonic_ns()}.tmp")
    side.write_text(owner, encoding="utf-8")
    try:
        os.link(side, lock)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: create and write (a kill between the
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # two: stale after a while)
        with os.fdopen(fd, "w") as f:
            f.write(owner)
    finally:
        side.unlink(missing_ok=True)


def release(root: Path, name: str) -> None:
    lock_path(root, name).unlink(missing_ok=True)


def next_auto_number(root: Path) -> int:
    """The number after the highest ``vNNNN`` in ``root`` (temp and lock files count too)."""
    n = 0
    if root.is_dir():
        for p in root.iterdir():
            stem = p.name.lstrip(".").split(".")[0]
            m = _AUTO_RE.match(stem)
            if m:
                n = max(n, int(m.group(1)))
    return n + 1


def _version_of(name: str) -> str:
    return name.lstrip(".").split(".")[0]


def cleanup(root: Path) -> None:
    """Remove leftovers of crashed saves: stale locks, dead temp files, weights without metadata."""
    if not root.is_dir():
        return
    now = time.time()
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    stale = {p for p in entries if p.name.startswith(".") and p.name.endswith(".lock")
             and lock_is_stale(p, now)}
    for p in entries:
        try:
            name = p.name
            if p in stale:
                continue  # removed last: the weights below are judged by them
            if name.startswith(".") and ".llm4seg-" in name:
                if _owner_gone(name, ".llm4seg-"):
                    p.unlink(missing_ok=True)
            elif name.startswith(".") and name.endswith(".tmp"):
                if now - p.stat().st_mtime > STALE_S:  # an older llm4seg's temp file
                    p.unlink(missing_ok=True)
            elif p.suffix == ".safetensors" and not (root / f"{p.stem}.json").exists():
                # weights whose metadata was never written: a save that died between the two
                # renames. Only when no live save holds the name (its lock is stale, or there
                # is none and the file is old), and only files this store wrote (their header)
                lock = lock_path(root, p.stem)
                if lock.exists() and lock not in stale:
                    continue
                if not lock.exists() and now - p.stat().st_mtime < STALE_S:
                    continue
                try:
                    owner = read_checkpoint_info(p).meta.get("store_name")
                except LLM4SegError:
                    continue
                if owner == p.stem:
                    p.unlink(missing_ok=True)
        except OSError:
            continue
    for p in stale:
        p.unlink(missing_ok=True)
