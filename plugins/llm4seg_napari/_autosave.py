"""The dock widget's side of the corrections autosave: which folder, and when to write.

The files and the merging rules are the engine's (:mod:`llm4seg_core.autosave`);
here: :func:`session_target` (an image layer's session folder and the record
saved with its corrections) and :class:`CorrectionsAutosave`, which follows
one mask's :class:`~llm4seg_napari._corrections.CorrectionTracker` and writes
its corrected slices a moment after each burst of edits (debounced, so that
painting stays smooth; a crash loses at most one edit).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from llm4seg_core.autosave import merge_saved, save_session
from llm4seg_napari.geometry import VOLUME_KEY

if TYPE_CHECKING:
    from napari.layers import Image

    from llm4seg_napari._corrections import CorrectionTracker

__all__ = ["AUTOSAVE_MS", "CorrectionsAutosave", "session_target"]

_log = logging.getLogger(__name__)

#: Debounce of the corrections autosave: painting stays smooth, a crash loses at most one edit.
AUTOSAVE_MS = 400


def session_target(image: Image) -> tuple[Path, dict[str, Any]]:
    """The session folder of ``image`` and the record saved with its corrections."""
    from llm4seg_core.autosave import session_dir

    record = image.metadata.get(VOLUME_KEY) or {}
    source = str(record.get("source") or "")
    if not source:
        path = getattr(getattr(image, "source", None), "path", None)
        source = str(path) if path else f"layer:{image.name}"
    shape = volume_shape = tuple(int(s) for s in np.shape(image.data))
    if image.rgb:
        volume_shape = shape[:-1]
    info = {
        "source": source,
        "image": image.name,
        "shape": list(volume_shape),
        "scale": [float(v) for v in image.scale[-len(volume_shape):]],
        "translate": [float(v) for v in image.translate[-len(volume_shape):]],
    }
    return session_dir(source, volume_shape), info


class CorrectionsAutosave(QObject):
    """Autosaves the corrected slices of the followed mask into its image's session folder."""

    #: A save went through.
    saved = Signal()
    #: A save failed: the reason, for the status line.
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None, interval_ms: int = AUTOSAVE_MS) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.save_now)
        self._tracker: CorrectionTracker | None = None
        self._target: tuple[Path, dict[str, Any]] | None = None
        self._layer: Any = None
        self._restored: set[Path] = set()  # sessions restored (or superseded) here

    def follow(self, tracker: CorrectionTracker | None, image: Image | None) -> None:
        """Autosave ``tracker``'s mask (of ``image``) from now on; a pending save goes first."""
        if self._timer.isActive():  # the old layer's last edit is saved first
            self._timer.stop()
            self.save_now()
        if self._layer is not None:
            try:
                self._layer.events.paint.disconnect(self.schedule)
            except (RuntimeError, ValueError, TypeError):
                pass
        self._tracker, self._layer, self._target = tracker, None, None
        if tracker is not None:
            # every edit, also one on an already corrected slice, is autosaved
            tracker.layer.events.paint.connect(self.schedule)
            self._layer = tracker.layer
            if image is not None:
                self._target = session_target(image)

    def schedule(self, *_: Any) -> None:
        """Save after the debounce interval (restarted by every call: one save per burst)."""
        if self._tracker is not None and self._target is not None:
            self._timer.start()

    def mark_restored(self, folder: Path) -> None:
        """``folder``'s session was restored: later saves replace it instead of merging it."""
        self._restored.add(folder)

    def save_now(self) -> bool:
        """Write the corrected slices of the followed mask to its session folder now."""
        tracker, target = self._tracker, self._target
        if tracker is None or target is None:
            return False
        folder, info = target
        data = np.asarray(tracker.layer.data)
        view = data[None] if data.ndim == 2 else data
        slices = {z: np.array(view[z], copy=True) for z in tracker.slices if 0 <= z < len(view)}
        if folder not in self._restored:
            slices = merge_saved(folder, slices, view.shape[1:])
        info = dict(info, mask=tracker.layer.name, dtype=str(data.dtype))
        try:
            save_session(folder, slices, info)
        except OSError as exc:
            _log.warning("autosave of the corrections to %s failed: %s", folder, exc)
            self.failed.emit(f"Autosave of the corrections failed: {exc}")
            return False
        self.saved.emit()
        return True
