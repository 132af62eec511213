"""Unsaved-changes tracking of the masks: an edit counter fed by napari's own events.

A Labels layer announces brush, eraser and fill strokes with ``events.paint``
(one per stroke) and a replaced array with ``events.data``. Undo, redo and a
segmentation write into the array and call ``refresh()``, whose
``events.set_data`` also fires on every slice change and so says nothing about
edits: the window counts those with :meth:`UnsavedTracker.touch`. A mask is
unsaved when its count moved since it was last saved; a mask never saved, when
it has had an edit, holds corrected slices, or came with labels in it. The
widget makes each image's mask, empty, when the image is opened: until one of
these happens it is untouched (:meth:`UnsavedTracker.has_content` is False),
so neither unsaved nor worth saving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QObject, Signal

__all__ = ["UnsavedTracker"]


@dataclass
class _Record:
    """What the tracker knows of one mask layer."""

    edits: int = 0
    saved_edits: int | None = None  # the count when it was last saved (None: never)
    path: str = ""
    born_full: bool = False  # it held labels when first seen


class UnsavedTracker(QObject):
    """Counts the edits of the masks it follows and remembers where each was saved."""

    #: The current mask's unsaved state may have changed.
    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._records: dict[int, _Record] = {}  # id(layer) -> record
        self._followed: Labels | None = None

    def _record(self, mask: Labels) -> _Record:
        record = self._records.get(id(mask))
        if record is None:
            record = _Record(born_full=bool(np.any(np.asarray(mask.data))))
            self._records[id(mask)] = record
        return record

    def follow(self, mask: Labels | None) -> None:
        """Count the edits of ``mask`` (the current one) from now on."""
        old = self._followed
        if mask is old:
            return
        if old is not None:
            for emitter in (old.events.paint, old.events.data):
                try:
                    emitter.disconnect(self._on_edit)
                except (RuntimeError, ValueError, TypeError):
                    pass
        self._followed = mask
        if mask is not None:
            self._record(mask)
            mask.events.paint.connect(self._on_edit)
            mask.events.data.connect(self._on_edit)
        self.changed.emit()

    def _on_edit(self, event: Any = None) -> None:
        if self._followed is not None:
            self.touch(self._followed)

    def touch(self, mask: Labels | None) -> None:
        """``mask`` changed in a way napari does not announce (undo, redo, a segmentation)."""
        if mask is None:
            return
        self._record(mask).edits += 1
        self.changed.emit()

    def edits(self, mask: Labels) -> int:
        """How many edits ``mask`` has had (pass it to :meth:`mark_saved` with the path)."""
        return self._record(mask).edits

    def mark_saved(self, mask: Labels, edits: int, path: str) -> None:
        """``mask``, as it was after ``edits`` edits, is saved in ``path``."""
        record = self._record(mask)
        record.saved_edits, record.path = edits, path
        self.changed.emit()

    def saved_path(self, mask: Labels) -> str | None:
        record = self._records.get(id(mask))
        return record.path if record is not None and record.saved_edits is not None else None

    def is_unsaved(self, mask: Labels, has_corrections: bool) -> bool:
        """Whether ``mask`` differs from its last save (never saved: it is not empty)."""
        record = self._record(mask)
        if record.saved_edits is None:
            return record.edits > 0 or record.born_full or has_corrections
        return record.edits != record.saved_edits

    def has_content(self, mask: Labels, has_corrections: bool) -> bool:
        """Whether ``mask`` holds anything to save or undo: it was saved, edited, segmented
        into, came with labels in it or has corrected slices (False: still as made, empty)."""
        record = self._record(mask)
        return (record.saved_edits is not None or record.edits > 0 or record.born_full
                or has_corrections)

    def keep_only(self, layers: Any) -> None:
        """Forget the masks that are not among ``layers`` (removed from the viewer)."""
        live = {id(layer) for layer in layers}
        self._records = {k: v for k, v in self._records.items() if k in live}
        if self._followed is not None and id(self._followed) not in live:
            self.follow(None)

    def clear(self) -> None:
        self.follow(None)
        self._records.clear()
