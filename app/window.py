"""The LLM4Seg main window: a napari canvas and the plugin's widget, with clinician-first menus.

How it is put together:

* **Canvas**: a :class:`napari.components.ViewerModel` shown by
  :class:`napari.qt.QtViewer` (both public napari API) as the central
  widget. Not a full ``napari.Viewer``: that brings napari's own main window,
  menus and plugin manager, which a clinician does not need. The widget only
  needs what the model offers (layers, dims, ``add_labels``).
* **Widget**: the napari plugin's :class:`~llm4seg_napari.LLM4SegWidget` in
  a dock, reused as is and only through its public API: the menus and toolbar
  call its methods (``segment``, ``finetune``, ``save_mask``, ``select_model``
  ...), and everything the window shows follows the signals of its
  :class:`~llm4seg_napari.state.WidgetState`. Its "Save mask…" button calls
  the window's Save as.
* **Layers**: napari's layer list and layer controls (opacity, label colour,
  brush size) in a second dock.

The window's jobs, one module each: :mod:`~llm4seg_app.actions` (the action
table, menus, toolbar), :mod:`~llm4seg_app.opening` (open dialogs, drag and
drop, DICOM series, demo), :mod:`~llm4seg_app.editing` (mask tools, CT
windows), :mod:`~llm4seg_app.saving` and :mod:`~llm4seg_app.dirty` (Save and
the unsaved-changes tracking), :mod:`~llm4seg_app.status` (status bar, title,
messages), :mod:`~llm4seg_app.closing` (the close protocol).
"""

from __future__ import annotations

from typing import Any

from napari.components import ViewerModel
from napari.layers import Image, Labels
from napari.qt import QtViewer, get_qapp, get_stylesheet
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QDockWidget, QMainWindow, QScrollArea, QSplitter, QVBoxLayout, QWidget

from llm4seg_app import APP_TITLE
from llm4seg_app.actions import ActionsMixin
from llm4seg_app.closing import ClosingMixin
from llm4seg_app.dirty import UnsavedTracker
from llm4seg_app.editing import EditingMixin
from llm4seg_app.opening import OpeningMixin
from llm4seg_app.saving import SavingMixin
from llm4seg_app.settings import AppSettings
from llm4seg_app.status import StatusMixin
from llm4seg_napari import JobRunner, LLM4SegWidget

__all__ = ["APP_TITLE", "MainWindow"]


class MainWindow(ActionsMixin, OpeningMixin, EditingMixin, SavingMixin, StatusMixin,
                 ClosingMixin, QMainWindow):
    """The LLM4Seg app's window. ``settings``: a QSettings (tests pass their own)."""

    #: An image finished opening (its layer name), or failed to ("").
    image_opened = Signal(str)
    #: A napari notification, re-emitted so that Qt queues it to the window's thread.
    notified = Signal(object)

    def __init__(self, settings: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        get_qapp()  # napari's theme icons and thread-worker set-up (reuses a running app)
        self.settings = settings if isinstance(settings, AppSettings) else AppSettings(settings)
        self.setObjectName("llm4seg_main_window")
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        self.setStyleSheet(get_stylesheet("dark"))

        self._pending_save = None
        self._warned: set[str] = set()
        self._closing = False
        self._close_confirmed = False
        self._closed = False
        self._edited: Labels | None = None
        self._image_switching = False
        self._window_pick: tuple[str, Any] = ("", None)
        self._open_next = (lambda _value: None, None)
        self._opener = JobRunner()  # no parent: see llm4seg_napari.jobs
        self._opener.finished.connect(self._on_open_finished)
        self.unsaved = UnsavedTracker(self)

        # ---- canvas and widget
        self.viewer = ViewerModel(title=APP_TITLE)
        self.qt_viewer = QtViewer(self.viewer)
        self.qt_viewer.setAcceptDrops(False)  # drops reach the window: the app's own open path
        self.setCentralWidget(self.qt_viewer)
        self.widget = LLM4SegWidget(self.viewer)
        self.state = self.widget.state
        self.widget.set_save_handler(self.save_mask_as)

        self._build_docks()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._connect()
        self._restore_settings()
        self._follow_mask(self.state.mask)
        self.unsaved.follow(self.state.mask)
        self._update_actions()
        self._update_title()

    # ================================================================== building
    def _build_docks(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.widget)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.widget.minimumWidth() + 24)
        self.widget_dock = self._add_dock("LLM4Seg", "llm4seg_dock", scroll,
                                          Qt.DockWidgetArea.RightDockWidgetArea)

        layers = QSplitter(Qt.Orientation.Vertical)
        layers.addWidget(self.qt_viewer.controls)
        layers.addWidget(self.qt_viewer.layers)
        layers.setStretchFactor(0, 2)
        layers.setStretchFactor(1, 1)
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(layers)
        self.layers_dock = self._add_dock("Layers", "layers_dock", box,
                                          Qt.DockWidgetArea.LeftDockWidgetArea)

    def _add_dock(self, title: str, name: str, widget: QWidget,
                  area: Qt.DockWidgetArea) -> QDockWidget:
        """A movable, closable dock holding ``widget``, added at ``area`` (``name``: its
        object name, which the saved window state refers to)."""
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _connect(self) -> None:
        """Everything shown follows the widget's state, the layers and the mask's events."""
        state = self.state
        state.job_started.connect(self._on_job_started)
        state.job_finished.connect(self._on_job_finished)
        state.progress.connect(self._show_progress)
        state.image_changed.connect(self._update_actions)
        state.image_changed.connect(self._update_title)
        state.image_changed.connect(self._on_image_switched)
        state.mask_changed.connect(self._on_mask_changed)
        state.corrections_changed.connect(self._update_title)  # a never saved mask with them
        state.corrections_changed.connect(self._update_actions)
        state.model_changed.connect(self._show_model)
        state.suggestions_changed.connect(self._show_model)
        state.device_changed.connect(self._on_device_changed)
        state.window_changed.connect(self._on_window_changed)
        state.window_changed.connect(self._update_actions)
        state.choices_changed.connect(self._update_actions)
        self.unsaved.changed.connect(self._update_title)
        self.unsaved.changed.connect(self._update_actions)  # Save once the mask has content
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.selection.events.active.connect(self._update_tools)
        self.widget.prompts.changed.connect(self._update_tools)
        self.widget.prompts.edited.connect(self.unsaved.touch)  # its Undo button
        self.notified.connect(self._show_notification)
        notification_manager.notification_ready.connect(self._on_napari_notification)
        self.widget.installEventFilter(self)  # its first show installs its close watcher

    # ================================================================== settings
    def _restore_settings(self) -> None:
        geometry, state = self.settings.layout()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
        if state is not None:
            self.restoreState(state)
        want = self.settings.device
        if any(c.arg == want and c.enabled for c in self.state.device_choices):
            self.widget.select_device(want)  # else that device is not here (any more)

    def _save_settings(self) -> None:
        self.settings.set_layout(self.saveGeometry(), self.saveState())
        self.settings.device = self.state.device_arg
        self.settings.brush_size = self.brush_spin.value()
        self.settings.sync()

    # ================================================================== state
    @property
    def image_layer(self) -> Image | None:
        return self.state.image

    @property
    def mask_layer(self) -> Labels | None:
        return self.state.mask

    @property
    def is_busy(self) -> bool:
        """A segmentation, fine-tuning or save runs (in the widget)."""
        return self.state.is_busy

    def _on_job_started(self, kind: str) -> None:
        self._show_job_started(kind)
        self._update_actions()

    def _on_job_finished(self, kind: str, how: str) -> None:
        self._save_finished(kind, how)
        if kind == "segment" and how != "failed":
            self.unsaved.touch(self.state.mask)  # it wrote into the mask (and refreshed it)
        self._show_job_finished(kind, how)
        self._update_actions()
        self._update_title()

    def _on_mask_changed(self, mask: Labels | None) -> None:
        self.unsaved.follow(mask)
        self._follow_mask(mask)
        self._update_actions()

    def _on_device_changed(self, arg: str) -> None:
        self.settings.device = arg
        self._show_device()

    def _on_layer_removed(self, *_: Any) -> None:
        self.unsaved.keep_only(self.viewer.layers)

    # ================================================================== engine
    def segment(self, scope: str | None = None) -> bool:
        return self.widget.segment(scope)

    def finetune(self) -> bool:
        return self.widget.finetune()

    def cancel_job(self) -> None:
        self.widget.cancel_job()

    # ================================================================== closing and about
    def _shut_down(self) -> None:
        """The window closes (confirmed): settings saved, nothing left running."""
        try:
            notification_manager.notification_ready.disconnect(self._on_napari_notification)
        except (RuntimeError, ValueError, TypeError):
            pass
        self._save_settings()
        self.widget.cancel_job()  # nothing should run now; if it does, it stops
        self.qt_viewer.close()

    def show_about(self) -> Any:
        from llm4seg_app.about import AboutDialog, about_info

        dialog = AboutDialog(about_info(device=self.state.device_text), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        self._about = dialog
        return dialog
