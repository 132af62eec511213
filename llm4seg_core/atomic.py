"""Atomic file writes: the one place the project writes through a temp file + ``os.replace``.

A reader sees the old file or the new one, never half of one; a crash or a
kill leaves the previous version whole. The temp file is hidden, sits next to
the target (``os.replace`` must not cross file systems) and is removed on
every exit path Python sees. The result gets the mode an ordinary new file
gets (0o666 less the umask), not the 0600 of ``mkstemp``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def file_mode() -> int:
    """The mode an ordinary new file gets here: 0o666 less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], *,
                 suffix: str = ".tmp", fsync: bool = True) -> Path:
    """Call ``write(tmp_path)`` to fill a hidden temp file, then move it onto ``path``.

    ``suffix`` is the temp file's extension, for writers that pick the format
    by it (SimpleITK, PIL). ``fsync`` flushes the data to disk before the
    rename (wanted for the model store and autosaves; cheap for small files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # after: some writers (safetensors) make the file anew, 0600
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync=fsync)
