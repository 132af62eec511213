"""Autosaved corrections: a crash loses at most the last edit.

Each image has a session folder, ``<sessions root>/<key>/`` (the root is
:func:`llm4seg_core.paths.sessions_root`; ``<key>`` a hash of the image's
source path and shape). It holds:

* ``corrections.npz``: ``z`` (the corrected slice indices) and ``labels``
  (those slices of the mask, one per ``z``, in that order);
* ``session.json``: the source path, the image name and its geometry (shape,
  scale, translate), the corrected ``z`` and the time of the save.

Both files go through :func:`llm4seg_core.atomic.atomic_write`, so a crash
mid-write leaves the previous save whole. The npz is written first: the JSON
is only a description, the npz is the truth.

Two rules keep a person's work when a front end starts afresh (a new viewer
after a crash): a save keeps the saved slices that the new set does not hold
(:func:`merge_saved`), until the session has been restored; and a restore
never overwrites a slice already corrected in the mask (:func:`plan_restore`).

No Qt and no torch: front ends (the napari widget, the app) call these.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.atomic import atomic_write, atomic_write_text
from llm4seg_core.paths import sessions_root

__all__ = [
    "INFO_FILE",
    "LABELS_FILE",
    "RestorePlan",
    "Session",
    "load_session",
    "merge_saved",
    "plan_restore",
    "read_info",
    "restorable_slices",
    "save_session",
    "session_dir",
    "session_key",
]

LABELS_FILE = "corrections.npz"
INFO_FILE = "session.json"


def session_key(source: str, shape: Iterable[int]) -> str:
    """A short stable hash of the image's source (path, or a name) and its shape."""
    text = f"{source}|{tuple(int(s) for s in shape)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def session_dir(source: str, shape: Iterable[int]) -> Path:
    """The session folder of the image ``source`` of spatial ``shape`` (not created here)."""
    return sessions_root() / session_key(source, shape)


def _slice_shape(shape: Iterable[int]) -> tuple[int, ...]:
    """The shape of one slice of a volume (z, y, x), or of a 2-D picture (y, x) itself."""
    shape = tuple(int(s) for s in shape)
    return shape[1:] if len(shape) == 3 else shape


@dataclass
class Session:
    """What a session folder holds: the corrected slices and what they belong to."""

    folder: Path
    z: list[int]
    labels: np.ndarray  # (len(z), *slice_shape)
    info: dict[str, Any] = field(default_factory=dict)

    def slices(self) -> dict[int, np.ndarray]:
        return {int(z): self.labels[i] for i, z in enumerate(self.z)}

    def fits(self, shape: Iterable[int]) -> bool:
        """The saved slices belong to an image of spatial ``shape`` (z, y, x) or (y, x)."""
        shape = [int(s) for s in shape]
        if list(self.info.get("shape") or shape) != shape:
            return False
        return tuple(self.labels.shape[1:]) == _slice_shape(shape)


def save_session(folder: Path, slices: Mapping[int, np.ndarray], info: Mapping[str, Any]) -> None:
    """Write the corrected ``slices`` (z -> 2-D labels) and ``info`` into ``folder``, atomically."""
    zs = sorted(int(z) for z in slices)
    if zs:
        labels = np.stack([np.asarray(slices[z]) for z in zs])
    else:
        labels = np.zeros((0, 0, 0), np.uint8)

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would add ".npz" to a path
            np.savez_compressed(f, z=np.asarray(zs, np.int64), labels=labels)

    atomic_write(Path(folder) / LABELS_FILE, write_npz)
    record = dict(info)
    record.update(z=zs, saved_at=time.time())
    atomic_write_text(Path(folder) / INFO_FILE, json.dumps(record, indent=1, default=str))


def read_info(folder: Path) -> dict[str, Any] | None:
    """The session's JSON record, or None when there is none (or it cannot be read)."""
    try:
        record = json.loads((Path(folder) / INFO_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def load_session(folder: Path) -> Session | None:
    """The saved corrections of ``folder``, or None when there are none (or they are unreadable)."""
    folder = Path(folder)
    try:
        with np.load(folder / LABELS_FILE) as npz:
            z = [int(v) for v in npz["z"]]
            labels = np.array(npz["labels"])
    except (OSError, ValueError, KeyError):
        return None
    if len(z) != len(labels):
        return None
    return Session(folder, z, labels, read_info(folder) or {})


def merge_saved(folder: Path, slices: Mapping[int, np.ndarray],
                slice_shape: Iterable[int]) -> dict[int, np.ndarray]:
    """``slices`` plus the slices saved in ``folder`` that ``slices`` lacks (same slice shape).

    For a save before the session was restored: a first edit in a new viewer
    must not wipe what a restore can still bring back.
    """
    out = dict(slices)
    old = load_session(folder)
    if old is None:
        return out
    want = tuple(int(s) for s in slice_shape)
    for z, labels in old.slices().items():
        if z not in out and tuple(labels.shape) == want:
            out[z] = labels
    return out


def restorable_slices(folder: Path, shape: Iterable[int], corrected: Iterable[int]) -> list[int]:
    """The slices saved in ``folder`` for an image of ``shape`` that are not in ``corrected``.

    Reads only the JSON record (cheap enough to call after every edit); an
    empty list when there is no session, or it belongs to another shape.
    """
    record = read_info(folder)
    if not record or list(record.get("shape") or []) != [int(s) for s in shape]:
        return []
    done = {int(z) for z in corrected}
    return [int(z) for z in record.get("z") or [] if int(z) not in done]


@dataclass
class RestorePlan:
    """Which saved slices go back into the mask, and which stay as the person has them now."""

    slices: dict[int, np.ndarray]  # z -> labels to write back
    skipped: list[int]  # saved slices already corrected in the mask: left as they are

    @property
    def restored(self) -> list[int]:
        return sorted(self.slices)


def plan_restore(session: Session, n_slices: int, corrected: Iterable[int]) -> RestorePlan:
    """What restoring ``session`` into a mask of ``n_slices`` slices with ``corrected`` does."""
    done = {int(z) for z in corrected}
    restore: dict[int, np.ndarray] = {}
    skipped: list[int] = []
    for z, labels in session.slices().items():
        if not 0 <= z < n_slices:
            continue
        if z in done:
            skipped.append(z)
        else:
            restore[z] = labels
    return RestorePlan(restore, sorted(skipped))
