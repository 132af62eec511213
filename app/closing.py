"""The close protocol: a running job is stopped (asked first), an unsaved mask settled.

The plugin widget installs a close watcher on the window that holds it, which
cancels the running job when the window closes. The window's own filter is
installed after it, so it sees a close request first: a close the person
calls off must not stop the job.
"""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication, QMessageBox

from llm4seg_app import APP_TITLE

__all__ = ["STOP_TIMEOUT_S", "ClosingMixin"]

#: How long closing waits for a cancelled job to stop before giving up on it.
STOP_TIMEOUT_S = 60.0


class ClosingMixin:
    """Closing :class:`~llm4seg_app.window.MainWindow`."""

    _closing: bool
    _close_confirmed: bool
    _closed: bool

    def wait_idle(self, timeout_s: float) -> bool:
        """Keep the event loop running until no job runs (or ``timeout_s``); True when idle."""
        deadline = time.monotonic() + timeout_s
        app = QApplication.instance()
        while (self.is_busy or self.is_opening) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        return not (self.is_busy or self.is_opening)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self._reinstall_close_filter()

    def _reinstall_close_filter(self) -> None:
        self.removeEventFilter(self)
        self.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if obj is self and event.type() == QEvent.Type.Close and not self._closed:
            if not self._confirm_close():
                event.ignore()
                return True
            self._close_confirmed = True
        elif obj is self.widget and event.type() == QEvent.Type.Show:
            QTimer.singleShot(0, self._reinstall_close_filter)  # after the widget's own filter
        return super().eventFilter(obj, event)

    def _confirm_close(self) -> bool:
        """Stop a running job (asked first) and settle an unsaved mask. True: close."""
        if self._closing:
            return False
        self._closing = True
        try:
            if self.is_busy:
                kind = self.state.kind or "job"
                if kind == "save":
                    self.wait_idle(STOP_TIMEOUT_S)  # a save finishes: it is quick and atomic
                else:
                    answer = QMessageBox.question(
                        self, "Stop and close?",
                        f"A {kind} is running. Stop it and close LLM4Seg? (A stopped fine-tune "
                        "saves no model version; saved versions and files are kept.)",
                        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                        QMessageBox.StandardButton.No)
                    if answer != QMessageBox.StandardButton.Yes:
                        return False
                    self.statusBar().showMessage(f"Stopping the {kind}…")
                    self.widget.cancel_job()
                    if not self.wait_idle(STOP_TIMEOUT_S):
                        QMessageBox.warning(self, APP_TITLE, f"The {kind} did not stop in time; "
                                            "try closing again.")
                        return False
            if self.is_opening:
                self.wait_idle(STOP_TIMEOUT_S)
            return self._resolve_unsaved("before closing")
        finally:
            self._closing = False

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        if not self._closed and not self._close_confirmed and not self._confirm_close():
            event.ignore()  # (a window never shown has no close filter: asked here)
            return
        self._closed = True
        self._shut_down()
        super().closeEvent(event)
        event.accept()
