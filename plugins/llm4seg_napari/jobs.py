"""One job at a time in a thread, with a typed outcome on the Qt main thread.

:class:`JobRunner` runs a function in a napari thread worker and hands back
an :class:`Outcome` (its value, or its error with the traceback). The
function gets the job's :class:`~llm4seg_core.jobs.Callbacks`: its progress
and metrics reach the main thread as the runner's Qt signals, and its cancel
flag is set by :meth:`JobRunner.cancel`, by the watched window closing and by
the application quitting. The dock widget runs its jobs with one; the app
runs its "open" job with another.

The runner is a QObject without a parent on purpose: a worker thread may
still report after the widget that started it is gone, and its signals must
then have somewhere to go.
"""

from __future__ import annotations

import threading
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import QApplication, QWidget

from llm4seg_core.errors import Cancelled
from llm4seg_core.jobs import Callbacks

__all__ = ["JobRunner", "Outcome", "run_guarded"]


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its value, or the error it raised (with the traceback)."""

    kind: str
    value: Any = None
    error: BaseException | None = None
    trace: str = ""

    @property
    def how(self) -> str:
        """"done", "cancelled" (it raised :class:`Cancelled`) or "failed"."""
        if self.error is None:
            return "done"
        return "cancelled" if isinstance(self.error, Cancelled) else "failed"

    @property
    def ok(self) -> bool:
        return self.error is None


def run_guarded(fn: Callable[[], Any], kind: str = "job") -> Outcome:
    """Call ``fn`` (in a worker thread): its value, or its error, as an :class:`Outcome`.

    Denormal floats are flushed to zero in the calling thread first; torch's
    workers inherit the mode (see :func:`llm4seg_core.device.flush_denormals`).
    """
    try:
        from llm4seg_core.device import flush_denormals

        flush_denormals()
        return Outcome(kind, fn())
    except Exception as exc:  # noqa: BLE001 - every error reaches the person
        return Outcome(kind, None, exc, traceback.format_exc())


class JobRunner(QObject):
    """Runs one job at a time; connect to its signals (all delivered on the main thread)."""

    #: A job started: its kind ("segment", "fine-tune", "save", "open", ...).
    started = Signal(str)
    #: The running job's progress: done, total (in the job's own units).
    progress = Signal(int, int)
    #: A metrics record the running job reported (fine-tuning: per step).
    metrics = Signal(object)
    #: A line the running job logged (e.g. the first Segment of a model converting it).
    message = Signal(str)
    #: A job ended: its :class:`Outcome`.
    finished = Signal(object)

    def __init__(self) -> None:
        super().__init__()  # no parent: see the module docstring
        self._cancel = threading.Event()
        self._kind: str | None = None
        self._worker: Any = None
        self._job = 0  # the number of the last job started
        self._watched: weakref.ref[QWidget] | None = None  # weak: the window may go first
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.cancel)

    # ------------------------------------------------------------------ state
    @property
    def is_busy(self) -> bool:
        return self._worker is not None

    @property
    def kind(self) -> str | None:
        """The running job's kind, None when idle."""
        return self._kind

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    # ------------------------------------------------------------------ control
    def start(self, kind: str, fn: Callable[[Callbacks], Any]) -> bool:
        """Run ``fn(callbacks)`` in a worker thread; False (nothing started) when busy."""
        if self.is_busy:
            return False
        from napari.qt.threading import create_worker

        cancel = self._cancel = threading.Event()
        callbacks = Callbacks(on_progress=self.progress.emit, on_metrics=self.metrics.emit,
                              cancel=cancel, on_log=self.message.emit)
        worker = create_worker(lambda: run_guarded(lambda: fn(callbacks), kind),
                               _start_thread=False)
        self._job += 1
        job = self._job
        worker.returned.connect(self._on_returned)
        # not the worker itself: a connection holding it would keep it (and the runner) alive
        worker.finished.connect(lambda: self._on_worker_finished(job))
        self._worker, self._kind = worker, kind
        # on the next event-loop turn: the paints the caller queued (a new mask layer) run
        # first, not while the job's first Python-heavy steps compete for the GIL
        QTimer.singleShot(0, worker.start)
        self.started.emit(kind)
        return True

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop (it ends with a "cancelled" outcome)."""
        self._cancel.set()

    def watch(self, window: QWidget) -> None:
        """Cancel the running job when ``window`` closes (the viewer, the app's window)."""
        old = self._watched() if self._watched is not None else None
        if window is old:
            return
        if old is not None:
            try:
                old.removeEventFilter(self)
            except RuntimeError:  # its C++ side is gone already
                pass
        window.installEventFilter(self)
        self._watched = weakref.ref(window)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close:
            self.cancel()
        return False

    # ------------------------------------------------------------------ worker
    def _on_returned(self, outcome: Outcome) -> None:
        self._worker, self._kind = None, None
        self.finished.emit(outcome)

    def _on_worker_finished(self, job: int) -> None:
        # safety net: the running worker ended without returning (run_guarded always returns);
        # a worker that returned may report its end after the next job has started
        if job == self._job and self._worker is not None:
            kind = self._kind or "job"
            self._worker, self._kind = None, None
            self.finished.emit(Outcome(kind, None, RuntimeError("the job ended without a result")))
