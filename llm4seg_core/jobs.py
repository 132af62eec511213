"""The progress / cancel protocol of every long engine call (segmentation, training, fine-tune).

Torch-free, so front ends import it without paying for torch. A long call
takes one :class:`Callbacks` record (all fields optional) and:

- reports ``progress(done, total)`` in its own units (slices, steps);
- reports ``metrics(dict)`` after each evaluation, ``log(text)`` for messages;
- checks ``cancelled()`` between units of work and then raises
  :class:`~llm4seg_core.errors.Cancelled` (or, for training, stops and says so
  in its result).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ProgressFn = Callable[[int, int], None]
MetricsFn = Callable[[dict[str, Any]], None]
CancelFlag = threading.Event | Callable[[], bool]


def is_cancelled(cancel: CancelFlag | None) -> bool:
    """True when ``cancel`` (an Event, a callable or None) says stop."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


@dataclass
class Callbacks:
    """What a front end hears from a long engine call, and how it asks it to stop."""

    on_progress: ProgressFn | None = None
    on_metrics: MetricsFn | None = None
    cancel: CancelFlag | None = None
    on_log: Callable[[str], None] | None = None

    def cancelled(self) -> bool:
        return is_cancelled(self.cancel)

    def progress(self, done: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(done, total)

    def metrics(self, m: dict[str, Any]) -> None:
        if self.on_metrics:
            self.on_metrics(m)

    def log(self, text: str) -> None:
        if self.on_log:
            self.on_log(text)

