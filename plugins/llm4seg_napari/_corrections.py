"""Which slices of a mask a person has corrected, tracked from napari's edit events.

napari's Labels layer records every edit (brush, eraser, fill, polygon, and
``data_setitem`` from code) as an undo "history item" of atoms and emits
``events.paint`` with that item once the edit is done (for a brush stroke: on
mouse release). :func:`slices_of_atoms` turns an item into the z indices it
touched; :class:`CorrectionTracker` keeps the set of corrected slices of one
labels layer and mirrors it into ``layer.metadata["llm4seg_corrected"]`` so
that it stays with the layer (a new widget, or a re-selected image, picks it
up again).

Edits the widget makes itself (model output written into the layer) go to the
array directly and emit no paint event, so they never count as corrections.
Two go through napari's history, as one undoable step each: a prompt's result
(a slice the person prompted: a correction, like a stroke) and a propagation
(model output: written inside :meth:`CorrectionTracker.ignoring`, so its slices
are not marked). Undo/redo stay napari's: they replay the array without an event, so an undone
stroke leaves its slice marked (unmark it in the list).

``events.data`` (the whole array replaced, e.g. from the console) cannot say
which slices changed: with a new shape the set is cleared (its indices mean
nothing any more); with the same shape it is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

#: Key of the corrected slices (a sorted list of z) in a labels layer's ``metadata``.
CORRECTED_KEY = "llm4seg_corrected"


def _axis0(key: Any) -> tuple[int, int] | None:
    """(start, stop) of the first entry of a bounding-box key (a slice or an int)."""
    if isinstance(key, slice):
        if key.start is None or key.stop is None:
            return None
        return int(key.start), int(key.stop)
    if isinstance(key, (int, np.integer)):
        return int(key), int(key) + 1
    return None


def slices_of_atoms(atoms: Iterable[Any], ndim: int) -> set[int]:
    """The z indices touched by napari history atoms (one ``events.paint`` value).

    Two atom kinds exist: a masked edit (``slice_key`` bounding box, boolean
    ``mask`` or None when the whole box changed) from paint/fill/polygon, and
    a ``(indices, old_values, new_values)`` tuple from ``data_setitem``. A 2-D
    layer has one slice, 0.
    """
    atoms = list(atoms or [])
    if ndim == 2:
        return {0} if atoms else set()
    out: set[int] = set()
    for atom in atoms:
        slice_key = getattr(atom, "slice_key", None)
        if slice_key is not None:
            span = _axis0(slice_key[0]) if len(slice_key) else None
            if span is None:
                continue
            mask = getattr(atom, "mask", None)
            if mask is None:
                out.update(range(*span))
            else:
                m = np.asarray(mask)
                touched = m.reshape(m.shape[0], -1).any(axis=1) if m.ndim > 1 else m
                out.update(span[0] + int(k) for k in np.flatnonzero(touched))
            continue
        try:
            indices = atom[0]
        except (TypeError, IndexError):
            continue
        if isinstance(indices, tuple) and indices:
            out.update(int(z) for z in np.unique(np.asarray(indices[0])))
    return out


class CorrectionTracker:
    """The corrected slices of one napari Labels layer.

    ``on_change()`` is called (on the Qt main thread, where napari emits its
    events) whenever the set changes. :meth:`detach` disconnects from the layer.
    """

    def __init__(self, layer: Any, on_change: Callable[[], None] | None = None) -> None:
        self.layer = layer
        self.on_change = on_change
        self._ndim = int(layer.ndim)
        self._shape = tuple(np.shape(layer.data))
        stored = layer.metadata.get(CORRECTED_KEY) or []
        n = self.n_slices
        self._slices: set[int] = {int(z) for z in stored if 0 <= int(z) < n}
        self._ignoring = 0
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data)

    # ------------------------------------------------------------------ state
    @property
    def n_slices(self) -> int:
        return 1 if self._ndim == 2 else int(self._shape[0]) if self._shape else 0

    @property
    def slices(self) -> list[int]:
        return sorted(self._slices)

    def __contains__(self, z: object) -> bool:
        return z in self._slices

    def __len__(self) -> int:
        return len(self._slices)

    def add(self, slices: Iterable[int]) -> None:
        new = {int(z) for z in slices if 0 <= int(z) < self.n_slices} - self._slices
        if new:
            self._slices |= new
            self._changed()

    def discard(self, slices: Iterable[int]) -> None:
        gone = {int(z) for z in slices} & self._slices
        if gone:
            self._slices -= gone
            self._changed()

    def clear(self) -> None:
        if self._slices:
            self._slices.clear()
            self._changed()

    @contextmanager
    def ignoring(self) -> Iterator[None]:
        """Edits inside are not corrections (model output written as an undoable step)."""
        self._ignoring += 1
        try:
            yield
        finally:
            self._ignoring -= 1

    def detach(self) -> None:
        for event, handler in ((self.layer.events.paint, self._on_paint),
                               (self.layer.events.data, self._on_data)):
            try:
                event.disconnect(handler)
            except (RuntimeError, ValueError, TypeError):
                pass
        self.on_change = None

    # ------------------------------------------------------------------ events
    def _changed(self) -> None:
        self.layer.metadata[CORRECTED_KEY] = sorted(self._slices)
        if self.on_change is not None:
            self.on_change()

    def _on_paint(self, event: Any) -> None:
        if self._ignoring:
            return
        self.add(slices_of_atoms(getattr(event, "value", None), self._ndim))

    def _on_data(self, event: Any = None) -> None:
        shape = tuple(np.shape(self.layer.data))
        if shape != self._shape:
            self._shape = shape
            self._ndim = int(self.layer.ndim)
            self.clear()
