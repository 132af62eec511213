"""The status bar (job progress, model, device), the title, and the widget's messages.

All of it follows the plugin widget's :class:`~llm4seg_napari.state.WidgetState`
signals. The widget reports through napari notifications, which may come from
any thread: the window re-emits them on its own signal, which Qt queues to the
main thread, and shows errors and warnings in a dialog and the rest in the
status bar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import NotificationSeverity
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QMessageBox, QProgressBar

from llm4seg_app import APP_TITLE

if TYPE_CHECKING:
    from llm4seg_napari.state import WidgetState

__all__ = ["StatusMixin"]


class StatusMixin:
    """Status bar, title and messages of :class:`~llm4seg_app.window.MainWindow`."""

    state: WidgetState
    progress: QProgressBar
    model_label: QLabel
    device_label: QLabel
    _warned: set[str]
    _closed: bool

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(False)
        self.model_label = QLabel()
        self.device_label = QLabel()
        self.device_label.setToolTip("where the model runs (Segment > Device)")
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label)
        bar.addPermanentWidget(self.device_label)
        bar.showMessage("Open a CT, a DICOM folder or a picture (File > Open, or drop it here).")
        self._show_model(self.state.model_text)
        self._show_device()

    def _show_model(self, *_: Any) -> None:
        """The model Segment uses, and (tooltip) the one suggested for the image and why."""
        self.model_label.setText(f"Model: {self.state.model_text}")
        tip = "the model Segment and Fine-tune use (Segment > Model version)"
        best = self.state.suggestion
        if best is not None:
            tip += f"\nsuggested for this image: {best.task} ({best.reason})"
        self.model_label.setToolTip(tip)

    def _show_device(self, *_: Any) -> None:
        self.device_label.setText(f"Device: {self.state.device_text}")

    # ------------------------------------------------------------------ jobs
    def _show_job_started(self, kind: str) -> None:
        self.statusBar().showMessage(self.state.status)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.progress.setValue(0)
        self.progress.setFormat(f"{kind}: %v / %m")
        self.progress.setVisible(True)

    def _show_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _show_job_finished(self, kind: str, how: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if how == "done" else 0)
        self.progress.setFormat(f"{kind}: {how}")
        self.statusBar().showMessage(self.state.status, 30_000)
        QTimer.singleShot(4_000, self._hide_idle_progress)

    def _hide_idle_progress(self) -> None:
        if not self._closed:
            self.progress.setVisible(self.state.is_busy)

    # ------------------------------------------------------------------ title
    def _update_title(self, *_: Any) -> None:
        if self._closed:
            return
        image = self.state.image
        title = APP_TITLE if image is None else f"{image.name} — {APP_TITLE}"
        if self.has_unsaved_changes():
            title = "* " + title
        if self.windowTitle() != title:
            self.setWindowTitle(title)

    # ------------------------------------------------------------------ messages
    def _on_napari_notification(self, notification: Any) -> None:
        self.notified.emit(notification)  # from any thread: queued to the window's thread

    def _show_notification(self, notification: Any) -> None:
        if self._closed:
            return
        message = str(getattr(notification, "message", notification))
        severity = getattr(notification, "severity", NotificationSeverity.INFO)
        if severity >= NotificationSeverity.ERROR:
            self.statusBar().showMessage(message, 15_000)
            self.error_dialog("LLM4Seg", message)
        elif severity >= NotificationSeverity.WARNING:
            self.statusBar().showMessage(message, 15_000)
            if message not in self._warned:  # the same warning once a session as a dialog
                self._warned.add(message)
                QMessageBox.warning(self, "LLM4Seg", message)
        else:
            self.statusBar().showMessage(message, 10_000)

    def error_dialog(self, title: str, message: str) -> None:
        QMessageBox.critical(self, title, message)
