"""Atomic file writes: the one place the project writes through a temp file + ``os.replace``.

A reader sees the old file or the new one, never half of one; a crash or a
kill leaves the previous version whole. The result gets the mode an ordinary
new file gets (0o666 less the umask; a file it replaces keeps its own mode),
never the 0600 of ``mkstemp``.

Where the temp file lives:

- ``staged=False`` (the model store, training state, autosaves: folders
  llm4seg owns): hidden, next to the target, removed on every exit path
  Python sees; what a kill leaves is swept by the next write of that file.
- ``staged=True`` (results in a user's folder: masks, overlays, DICOM-SEG):
  in :func:`llm4seg_core.paths.staging_root` when that is on the same file
  system as the target (``os.replace`` cannot cross one), so a ``kill -9``
  leaves nothing in the user's folder; else next to the target as above.

Temp names carry this host and process id (``.<name>.llm4seg-<host>-<pid>-<random><suffix>``
next to a target, ``<host>-<pid>-<random><suffix>`` in the staging folder):
one whose process is gone is a leftover and is removed by the next write.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

STAGING_STALE_S = 24 * 3600.0
"""Files in the staging folder older than this are removed whoever wrote them."""


def file_mode() -> int:
    """The mode an ordinary new file gets here: 0o666 less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def _owner_gone(name: str, marker: str) -> bool:
    """Whether the temp file ``name`` (``...<marker><host>-<pid>-...``) belongs to a dead process here."""
    i = name.rfind(marker)
    if i < 0:
        return False
    parts = name[i + len(marker):].split("-", 2)
    if len(parts) < 3 or parts[0] != _host_tag() or not parts[1].isdigit():
        return False
    return not pid_alive(int(parts[1]))


def sweep_leftovers(path: str | os.PathLike[str]) -> None:
    """Remove the temp files of writes of ``path`` whose process is gone (a kill's leftovers)."""
    path = Path(path)
    try:
        for p in path.parent.glob(f".{glob_escape(path.name)}.llm4seg-*"):
            if _owner_gone(p.name, ".llm4seg-"):
                p.unlink(missing_ok=True)
    except OSError:
        pass


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _sweep_staging(folder: Path) -> None:
    now = time.time()
    try:
        for p in folder.iterdir():
            try:
                if _owner_gone("/" + p.name, "/") or now - p.stat().st_mtime > STAGING_STALE_S:
                    p.unlink(missing_ok=True)
            except OSError:
                continue
    except OSError:
        pass


def _staging_for(target_dir: Path) -> Path | None:
    """The staging folder when it is on ``target_dir``'s file system, else None."""
    from llm4seg_core.paths import staging_root

    try:
        folder = staging_root()
        folder.mkdir(parents=True, exist_ok=True)
        if folder.stat().st_dev != target_dir.stat().st_dev:
            return None
    except OSError:
        return None
    _sweep_staging(folder)
    return folder


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777  # a file replaced keeps its mode
    except OSError:
        return file_mode()


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], *,
                 suffix: str = ".tmp", fsync: bool = True, staged: bool = False) -> Path:
    """Call ``write(tmp_path)`` to fill a temp file, then move it onto ``path``.

    ``suffix`` is the temp file's extension, for writers that pick the format
    by it (SimpleITK, PIL). ``fsync`` flushes the data to disk before the
    rename (wanted for the model store and autosaves; cheap for small files).
    ``staged``: the temp file goes to the staging folder when it can (results
    in a user's folder; see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{_host_tag()}-{os.getpid()}-"
    staging = _staging_for(path.parent) if staged else None
    sweep_leftovers(path)
    if staging is not None:
        fd, tmp = tempfile.mkstemp(prefix=tag, suffix=suffix, dir=staging)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.llm4seg-{tag}", suffix=suffix, dir=path.parent)
    os.close(fd)
    side = None  # the copy next to the target when the staging folder could not be renamed from
    try:
        write(tmp)
        os.chmod(tmp, _target_mode(path))  # after: some writers (safetensors) make the file anew
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if staging is None or exc.errno != errno.EXDEV:
                raise
            fd, side = tempfile.mkstemp(prefix=f".{path.name}.llm4seg-{tag}", suffix=suffix,
                                        dir=path.parent)
            os.close(fd)
            shutil.copyfile(tmp, side)
            os.chmod(side, _target_mode(path))
            os.replace(side, path)
            Path(tmp).unlink(missing_ok=True)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if side is not None:
            Path(side).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True,
                       staged: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), fsync=fsync, staged=staged)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True,
                      staged: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
                        fsync=fsync, staged=staged)
