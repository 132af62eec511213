"""Autosaved corrections: a crash loses at most the last edit.

Each image has a session folder, ``<root>/sessions/<key>/``, where ``<root>``
is ``$LLM4SEG_HOME`` when set, else the user data folder
(``platformdirs.user_data_dir("llm4seg")``) and ``<key>`` a hash of the
image's source path and shape. It holds:

* ``corrections.npz``: ``z`` (the corrected slice indices) and ``labels``
  (those slices of the mask, one per ``z``, in that order);
* ``session.json``: the source path, the image name and its geometry (shape,
  scale, translate), the corrected ``z`` and the time of the save.

Both files are written to a temporary file in the folder and moved into place
with :func:`os.replace`, so a crash mid-write leaves the previous save whole.
The npz is written first: the JSON is only a description, the npz is the
truth. Qt-free, so it can be tested (and run) without a GUI.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.store import STORE_ENV

SESSIONS = "sessions"
LABELS_FILE = "corrections.npz"
INFO_FILE = "session.json"


def sessions_root() -> Path:
    """``$LLM4SEG_HOME/sessions``, else ``<user data dir>/sessions``."""
    home = os.environ.get(STORE_ENV)
    if home:
        return Path(home).expanduser().resolve() / SESSIONS
    import platformdirs

    return Path(platformdirs.user_data_dir("llm4seg")).expanduser().resolve() / SESSIONS


def session_key(source: str, shape: Iterable[int]) -> str:
    """A short stable hash of the image's source (path, or a name) and its shape."""
    text = f"{source}|{tuple(int(s) for s in shape)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def session_dir(source: str, shape: Iterable[int]) -> Path:
    return sessions_root() / session_key(source, shape)


@dataclass
class Session:
    """What a session folder holds: the corrected slices and what they belong to."""

    folder: Path
    z: list[int]
    labels: np.ndarray  # (len(z), *slice_shape)
    info: dict[str, Any] = field(default_factory=dict)

    def slices(self) -> dict[int, np.ndarray]:
        return {int(z): self.labels[i] for i, z in enumerate(self.z)}


def _atomic_write(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file next to ``path``, then move it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_session(folder: Path, slices: dict[int, np.ndarray], info: dict[str, Any]) -> None:
    """Write the corrected ``slices`` (z -> 2-D labels) and ``info`` into ``folder``, atomically."""
    zs = sorted(int(z) for z in slices)
    if zs:
        labels = np.stack([np.asarray(slices[z]) for z in zs])
    else:
        labels = np.zeros((0, 0, 0), np.uint8)

    _atomic_write(folder / LABELS_FILE,
                  lambda f: np.savez_compressed(f, z=np.asarray(zs, np.int64), labels=labels))
    record = dict(info)
    record.update(z=zs, saved_at=time.time())
    text = json.dumps(record, indent=1, default=str).encode("utf-8")
    _atomic_write(folder / INFO_FILE, lambda f: f.write(text))


def read_info(folder: Path) -> dict[str, Any] | None:
    """The session's JSON record, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((folder / INFO_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def load_session(folder: Path) -> Session | None:
    """The saved corrections of ``folder``, or None when there are none (or they are unreadable)."""
    try:
        with np.load(folder / LABELS_FILE) as npz:
            z = [int(v) for v in npz["z"]]
            labels = np.array(npz["labels"])
    except (OSError, ValueError, KeyError):
        return None
    if len(z) != len(labels):
        return None
    return Session(folder, z, labels, read_info(folder) or {})
