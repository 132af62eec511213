"""Saving a version safely: name reservations (lock files), automatic names, crash leftovers.

A save takes its name with an exclusive ``.<name>.lock`` file first, so two
processes never write the same version. Temp and lock files older than
:data:`STALE_S`, and weights whose metadata was never written, are the
leftovers of a crash: the next save removes them.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.store.checkpoint import read_checkpoint_info

STALE_S = 3600.0
"""Temp and lock files older than this are leftovers of a crash (removed on the next save)."""

_AUTO_RE = re.compile(r"^v(\d+)$")


def lock_path(root: Path, name: str) -> Path:
    return root / f".{name}.lock"


def reserve(root: Path, name: str) -> bool:
    """Take ``name`` for a save in progress (an exclusive lock file); False when taken."""
    lock = lock_path(root, name)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    if (root / f"{name}.json").exists():
        lock.unlink(missing_ok=True)
        return False
    return True


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


def cleanup(root: Path) -> None:
    """Remove stale leftovers of crashed saves: temp files, locks, weights without metadata."""
    if not root.is_dir():
        return
    now = time.time()
    for p in root.iterdir():
        try:
            if now - p.stat().st_mtime < STALE_S:
                continue
            if p.name.startswith(".") and p.name.endswith((".tmp", ".lock")):
                p.unlink(missing_ok=True)
            elif p.suffix == ".safetensors" and not (root / f"{p.stem}.json").exists():
                # weights whose metadata was never written: a save that died between the two
                # renames (only files this store wrote, as their header says)
                try:
                    owner = read_checkpoint_info(p).meta.get("store_name")
                except LLM4SegError:
                    continue
                if owner == p.stem:
                    p.unlink(missing_ok=True)
        except OSError:
            continue
