"""The LLM4Seg main window: a napari canvas and the plugin's widget, with clinician-first menus.

How it is put together:

* **Canvas**: a :class:`napari.components.ViewerModel` shown by
  :class:`napari.qt.QtViewer` (both public napari API) as the central
  widget. Not a full ``napari.Viewer``: that brings napari's own main window,
  menus and plugin manager, which a clinician does not need. The widget only
  needs what the model offers (layers, dims, ``add_labels``).
* **Widget**: the napari plugin's :class:`~llm4seg_napari._widget.LLM4SegWidget`
  in a dock, reused as is: the menus and toolbar call its public methods
  (``segment``, ``finetune``, ``save_mask``, ``cancel_job``) and listen to its
  ``job_started`` / ``job_finished`` signals; its own "Save mask" button is
  routed to the window's Save as.
* **Layers**: napari's layer list and layer controls (opacity, label colour,
  brush size) in a second dock.
* **Messages**: the widget reports through napari notifications; the window
  shows errors and warnings in a dialog and the rest in the status bar.
* **Opening**: one image at a time. Files and DICOM folders are read by
  :func:`llm4seg_core.io.read_image` in a worker thread and placed by the
  plugin's reader (:func:`llm4seg_napari._reader.volume_layer`), so geometry,
  CT windows and metadata are the same as in napari.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.components import ViewerModel
from napari.layers import Image, Labels
from napari.qt import QtViewer, get_qapp, get_stylesheet
from napari.qt.threading import create_worker
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QAction, QActionGroup, QKeySequence
from qtpy.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from llm4seg_app.settings import AppSettings
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import DICOM_SUFFIXES, PICTURE_SUFFIXES, VOLUME_SUFFIXES
from llm4seg_core.preprocess import CT_WINDOWS
from llm4seg_napari._geometry import SERIES_KEY, VOLUME_KEY
from llm4seg_napari._widget import LLM4SegWidget, _Outcome, guarded, mask_name

__all__ = ["APP_TITLE", "MainWindow"]

_log = logging.getLogger(__name__)

APP_TITLE = "LLM4Seg"
AS_LOADED = "as loaded"
#: How long closing waits for a cancelled job to stop before giving up on it.
STOP_TIMEOUT_S = 60.0
_IMAGE_FILTERS = ";;".join([
    "Medical images and pictures (" + " ".join(
        f"*{s}" for s in (*DICOM_SUFFIXES, *VOLUME_SUFFIXES, *PICTURE_SUFFIXES)) + ")",
    "DICOM files (" + " ".join(f"*{s}" for s in DICOM_SUFFIXES) + ")",
    "NIfTI, NRRD, MetaImage (" + " ".join(f"*{s}" for s in VOLUME_SUFFIXES) + ")",
    "Pictures (" + " ".join(f"*{s}" for s in PICTURE_SUFFIXES) + ")",
    "All files (*)",
])
_MASK_FILTERS = ("NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha);;"
                 "PNG, 2-D pictures only (*.png)")
_EDIT_TOOLS = (  # (mode, text, shortcut, tip)
    ("paint", "Brush", "B", "paint the mask (label 1) with the brush"),
    ("erase", "Eraser", "E", "erase the mask with the brush"),
    ("fill", "Fill", "F", "fill the connected region under the click"),
    ("pan_zoom", "Pan/zoom", "H", "move and zoom the image; no editing"),
)


@dataclass
class _PendingSave:
    path: str
    layer: Labels
    digest: str


class _Relay(QObject):
    """Queues napari notifications (which may come from any thread) to the main thread."""

    notification = Signal(object)


def _digest(data: Any) -> str:
    arr = np.ascontiguousarray(np.asarray(data))
    return hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest() + str(arr.shape)


def _layer_name(path: Path, description: str | None) -> str:
    if path.is_dir():
        return f"{path.name}: {description}" if description else path.name
    name = path.name
    for suffix in sorted((*DICOM_SUFFIXES, *VOLUME_SUFFIXES, *PICTURE_SUFFIXES), key=len,
                         reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def read_for_display(path: str | Path, series_uid: str | None = None) -> list[tuple]:
    """Read ``path`` into napari layer-data tuples (no Qt; runs in a worker thread).

    DICOM folders, DICOM files, NIfTI, NRRD, MetaImage and 2-D pictures, placed
    and windowed by the plugin's reader. Raises LLM4SegError for a person.
    """
    from llm4seg_core.io import read_image
    from llm4seg_napari._reader import volume_layer

    p = Path(path).expanduser()
    volume = read_image(p, series_uid=series_uid)
    extra: dict[str, Any] = {}
    if p.is_dir() and int(volume.meta.get("n_series_in_folder", "1") or 1) > 1:
        from llm4seg_core.io import list_dicom_series

        chosen = volume.meta.get("series_uid")
        extra[SERIES_KEY] = [
            {"uid": s.uid, "description": s.description, "modality": s.modality,
             "n_files": s.n_files, "label": s.label}
            for s in sorted(list_dicom_series(p), key=lambda s: s.uid != chosen)
        ]
    name = _layer_name(p, volume.meta.get("series_description"))
    return [volume_layer(volume, name, extra_metadata=extra)]


class MainWindow(QMainWindow):
    """The LLM4Seg app's window. ``settings``: a QSettings (tests pass their own)."""

    #: An image finished opening (its layer name), or failed to ("").
    image_opened = Signal(str)

    def __init__(self, settings: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        get_qapp()  # napari's theme icons and thread-worker set-up (reuses a running app)
        self.settings = settings if isinstance(settings, AppSettings) else AppSettings(settings)
        self.setObjectName("llm4seg_main_window")
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        self.setStyleSheet(get_stylesheet("dark"))

        self._open_worker: Any = None
        self._pending_save: _PendingSave | None = None
        self._saved: dict[int, tuple[str, str]] = {}  # id(mask layer) -> (digest, path)
        self._warned: set[str] = set()
        self._closing = False
        self._close_confirmed = False
        self._closed = False
        self._job_kind: str | None = None
        self._mask_connected: Labels | None = None
        self._title_stale = True
        self._title_dirty = False

        # ---- canvas and widget
        self.viewer = ViewerModel(title=APP_TITLE)
        self.qt_viewer = QtViewer(self.viewer)
        self.qt_viewer.setAcceptDrops(False)  # drops reach the window: the app's own open path
        self.setCentralWidget(self.qt_viewer)
        self.widget = LLM4SegWidget(self.viewer)
        self.widget.save_button.clicked.disconnect()
        self.widget.save_button.clicked.connect(lambda: self.save_mask_as())
        self.widget.job_started.connect(self._on_job_started)
        self.widget.job_finished.connect(self._on_job_finished)

        self._build_docks()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()

        # ---- messages
        self._relay = _Relay(self)
        self._relay.notification.connect(self._show_notification)
        notification_manager.notification_ready.connect(self._on_napari_notification)

        # ---- keeping the menus in step with the widget and the layers
        self.widget.model_combo.currentIndexChanged.connect(self._sync)
        self.widget.device_combo.currentIndexChanged.connect(self._on_device_changed)
        self.widget.window_combo.currentTextChanged.connect(self._on_window_preset_changed)
        self.widget.window_combo.textActivated.connect(self._on_window_preset_picked)
        self.widget.installEventFilter(self)  # its first show installs its close watcher
        self.widget.image_combo.currentIndexChanged.connect(self._sync)
        self.widget.progress_bar.valueChanged.connect(self._sync_progress)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.layers.selection.events.active.connect(self._sync)
        self._timer = QTimer(self)  # cheap catch-all: modes changed in the layer controls etc.
        self._timer.setInterval(300)
        self._timer.timeout.connect(self._sync)
        self._timer.start()

        self._restore_settings()
        self._sync()

    # ================================================================== building
    def _build_docks(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.widget)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.widget.minimumWidth() + 24)
        self.widget_dock = QDockWidget("LLM4Seg", self)
        self.widget_dock.setObjectName("llm4seg_dock")
        self.widget_dock.setWidget(scroll)
        self.widget_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                     | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.widget_dock)

        layers = QSplitter(Qt.Orientation.Vertical)
        layers.addWidget(self.qt_viewer.controls)
        layers.addWidget(self.qt_viewer.layers)
        layers.setStretchFactor(0, 2)
        layers.setStretchFactor(1, 1)
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(layers)
        self.layers_dock = QDockWidget("Layers", self)
        self.layers_dock.setObjectName("layers_dock")
        self.layers_dock.setWidget(box)
        self.layers_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                     | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.layers_dock)

    def _action(self, text: str, slot: Callable[[], Any], shortcut: Any = None,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            if isinstance(shortcut, (list, tuple)):
                action.setShortcuts([QKeySequence(s) for s in shortcut])
            else:
                action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        return action

    def _build_actions(self) -> None:
        key = QKeySequence.StandardKey
        self.open_action = self._action("&Open image…", self.open_image_dialog, key.Open,
                                        "open a CT/MR volume (NIfTI, NRRD, MetaImage, DICOM file) "
                                        "or a 2-D picture (ultrasound, dermoscopy, endoscopy)")
        self.open_dicom_action = self._action("Open &DICOM folder…", self.open_dicom_dialog,
                                              "Ctrl+Shift+O",
                                              "open a DICOM series from a folder (you pick the "
                                              "series when there are several)")
        self.open_demo_action = self._action("Open d&emo chest CT", self.open_demo,
                                             tip="the demo chest CT (lung2) and its expert label")
        self.save_action = self._action("&Save mask", self.save_mask, key.Save,
                                        "save the mask in the image's geometry")
        self.save_as_action = self._action("Save mask &as…", self.save_mask_as, "Ctrl+Shift+S",
                                           "save the mask to a new file")
        self.quit_action = self._action("&Quit", self.close, key.Quit)

        self.undo_action = self._action("&Undo", self.undo, key.Undo, "undo the last mask edit")
        self.redo_action = self._action("&Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"],
                                        "redo the last undone mask edit")
        self.tool_group = QActionGroup(self)
        self.tool_group.setExclusive(True)
        self.tool_actions: dict[str, QAction] = {}
        for mode, text, shortcut, tip in _EDIT_TOOLS:
            action = self._action(text, lambda m=mode: self.set_tool(m), shortcut, tip)
            action.setCheckable(True)
            self.tool_group.addAction(action)
            self.tool_actions[mode] = action
        self.bigger_brush_action = self._action("Larger brush", lambda: self._step_brush(+1), "]")
        self.smaller_brush_action = self._action("Smaller brush", lambda: self._step_brush(-1), "[")

        self.segment_action = self._action("&Segment", lambda: self.segment(), "Ctrl+R",
                                           "segment the image (whole volume or current slice, "
                                           "as chosen in the LLM4Seg panel)")
        self.segment_volume_action = self._action("Segment whole &volume",
                                                  lambda: self.segment("volume"))
        self.segment_slice_action = self._action("Segment current s&lice",
                                                 lambda: self.segment("slice"))
        self.finetune_action = self._action("&Fine-tune", self.finetune, "Ctrl+T",
                                            "train the model on your corrected slices and save "
                                            "a new model version")
        self.cancel_action = self._action("&Cancel", self.cancel_job, "Esc",
                                          "stop the running segmentation or fine-tuning")
        self.refresh_models_action = self._action("Re-read the model store",
                                                  lambda: self.widget.refresh_button.click())

        self.window_group = QActionGroup(self)
        self.window_group.setExclusive(True)
        self.window_actions: dict[str, QAction] = {}
        for name in (AS_LOADED, *CT_WINDOWS):
            action = self._action(name.capitalize(), lambda n=name: self.set_window_preset(n))
            action.setCheckable(True)
            self.window_group.addAction(action)
            self.window_actions[name] = action
        self.reset_view_action = self._action("&Reset view", self.viewer.reset_view, "Ctrl+0")
        self.about_action = self._action("&About LLM4Seg", self.show_about)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        menu = bar.addMenu("&File")
        menu.addActions([self.open_action, self.open_dicom_action])
        self.recent_menu = menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        menu.addAction(self.open_demo_action)
        menu.addSeparator()
        menu.addActions([self.save_action, self.save_as_action])
        menu.addSeparator()
        menu.addAction(self.quit_action)

        menu = bar.addMenu("&Edit")
        menu.addActions([self.undo_action, self.redo_action])
        menu.addSeparator()
        menu.addActions(list(self.tool_actions.values()))
        menu.addSeparator()
        menu.addActions([self.bigger_brush_action, self.smaller_brush_action])

        menu = bar.addMenu("&Segment")
        menu.addActions([self.segment_action, self.segment_volume_action,
                         self.segment_slice_action])
        menu.addSeparator()
        menu.addActions([self.finetune_action, self.cancel_action])
        menu.addSeparator()
        self.models_menu = menu.addMenu("&Model version")
        self.models_menu.aboutToShow.connect(self._fill_models_menu)
        self.devices_menu = menu.addMenu("&Device")
        self.devices_menu.aboutToShow.connect(self._fill_devices_menu)
        menu.addAction(self.refresh_models_action)

        menu = bar.addMenu("&View")
        self.window_menu = menu.addMenu("CT &window")
        self.window_menu.addActions(list(self.window_actions.values()))
        menu.addAction(self.reset_view_action)
        menu.addSeparator()
        menu.addAction(self.widget_dock.toggleViewAction())
        menu.addAction(self.layers_dock.toggleViewAction())

        menu = bar.addMenu("&Help")
        menu.addAction(self.about_action)

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main toolbar", self)
        bar.setObjectName("main_toolbar")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        bar.addActions([self.open_action, self.open_dicom_action])
        bar.addSeparator()
        bar.addActions([self.segment_action, self.finetune_action, self.cancel_action])
        bar.addSeparator()
        bar.addActions(list(self.tool_actions.values()))
        bar.addWidget(QLabel(" Size "))
        self.brush_spin = QSpinBox()
        self.brush_spin.setRange(1, 200)
        self.brush_spin.setValue(self.settings.brush_size)
        self.brush_spin.setToolTip("brush and eraser size ([ and ] change it)")
        self.brush_spin.valueChanged.connect(self._on_brush_size)
        bar.addWidget(self.brush_spin)
        bar.addActions([self.undo_action, self.redo_action])
        bar.addSeparator()
        bar.addAction(self.save_action)
        self.toolbar = bar
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(False)
        self.model_label = QLabel()
        self.model_label.setToolTip("the model Segment and Fine-tune use (Segment > Model version)")
        self.device_label = QLabel()
        self.device_label.setToolTip("where the model runs (Segment > Device)")
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label)
        bar.addPermanentWidget(self.device_label)
        bar.showMessage("Open a CT, a DICOM folder or a picture (File > Open, or drop it here).")

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
        combo = self.widget.device_combo
        start = combo.currentIndex()
        for i in range(combo.count()):
            item = combo.model().item(i) if hasattr(combo.model(), "item") else None
            if item is not None and not item.isEnabled():
                continue
            combo.setCurrentIndex(i)
            if self.widget.device_arg == want:
                break
        else:
            combo.setCurrentIndex(start)  # that device is not here (any more)

    def _save_settings(self) -> None:
        self.settings.set_layout(self.saveGeometry(), self.saveState())
        self.settings.device = self.widget.device_arg
        self.settings.brush_size = self.brush_spin.value()
        self.settings.sync()

    def _on_device_changed(self, *_: Any) -> None:
        self.settings.device = self.widget.device_arg
        self._sync()

    # ================================================================== state
    @property
    def image_layer(self) -> Image | None:
        return self.widget.image_layer

    @property
    def mask_layer(self) -> Labels | None:
        return self.widget.mask_layer

    @property
    def is_busy(self) -> bool:
        """A segmentation, fine-tuning or save runs (in the widget)."""
        return self.widget.is_busy

    @property
    def is_opening(self) -> bool:
        return self._open_worker is not None

    def _sync(self, *_: Any) -> None:
        """Bring the menus, toolbar and status bar in step with the widget and the layers."""
        if self._closed:
            return
        busy, image, mask = self.is_busy, self.image_layer, self.mask_layer
        opening = self.is_opening
        for action in (self.segment_action, self.segment_volume_action, self.segment_slice_action,
                       self.finetune_action):
            action.setEnabled(not busy and not opening and image is not None)
        self.segment_slice_action.setEnabled(self.segment_action.isEnabled())
        for action in (self.save_action, self.save_as_action):
            action.setEnabled(not busy and mask is not None)
        self.cancel_action.setEnabled(busy)
        for action in (self.open_action, self.open_dicom_action, self.open_demo_action):
            action.setEnabled(not opening)
        self.recent_menu.setEnabled(not opening)
        for action in self.tool_actions.values():
            action.setEnabled(image is not None)
        self.undo_action.setEnabled(mask is not None)
        self.redo_action.setEnabled(mask is not None)
        rgb = image is not None and image.rgb
        self.window_menu.setEnabled(image is not None and not rgb)
        current = self.widget.window_combo.currentText()
        if current in self.window_actions and not self.window_actions[current].isChecked():
            self.window_actions[current].setChecked(True)
        # the tool in use: the mask's mode when the mask is the layer being edited
        active = self.viewer.layers.selection.active
        mode = str(active.mode) if isinstance(active, Labels) and active is mask else "pan_zoom"
        for name, action in self.tool_actions.items():
            if action.isChecked() != (name == mode):
                action.setChecked(name == mode)
        if mask is not None and int(mask.brush_size) != self.brush_spin.value():
            self.brush_spin.blockSignals(True)
            self.brush_spin.setValue(int(mask.brush_size))
            self.brush_spin.blockSignals(False)
        self.model_label.setText(f"Model: {self.widget.model_combo.currentText()}")
        self.device_label.setText(f"Device: {self.widget.device_combo.currentText()}")
        self._connect_mask(mask)
        self._sync_title()

    def _mark_title_stale(self, *_: Any) -> None:
        self._title_stale = True

    def _sync_title(self) -> None:
        image = self.image_layer
        title = APP_TITLE if image is None else f"{image.name} — {APP_TITLE}"
        if self._title_stale:  # the unsaved check hashes the mask: only after a change
            self._title_stale = False
            self._title_dirty = self.has_unsaved_changes()
        if self._title_dirty:
            title = "* " + title
        if self.windowTitle() != title:
            self.setWindowTitle(title)

    def _sync_progress(self, *_: Any) -> None:
        source = self.widget.progress_bar
        self.progress.setRange(source.minimum(), source.maximum())
        self.progress.setValue(source.value())
        self.progress.setFormat(source.format())

    def _connect_mask(self, mask: Labels | None) -> None:
        """Follow the mask's brush size when it changes in the layer controls."""
        if mask is self._mask_connected:
            return
        old = self._mask_connected
        if old is not None:
            for emitter, slot in ((old.events.brush_size, self._sync),
                                  (old.events.paint, self._mark_title_stale),
                                  (old.events.data, self._mark_title_stale)):
                try:
                    emitter.disconnect(slot)
                except (RuntimeError, ValueError, TypeError):
                    pass
        self._mask_connected = mask
        self._title_stale = True
        if mask is not None:
            mask.events.brush_size.connect(self._sync)
            mask.events.paint.connect(self._mark_title_stale)
            mask.events.data.connect(self._mark_title_stale)

    def _on_layers_changed(self, *_: Any) -> None:
        live = {id(layer) for layer in self.viewer.layers}
        self._saved = {k: v for k, v in self._saved.items() if k in live}
        self._title_stale = True
        self._sync()

    # ================================================================== messages
    def _on_napari_notification(self, notification: Any) -> None:
        self._relay.notification.emit(notification)

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

    # ================================================================== opening
    def open_image_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self.settings.last_folder,
                                              _IMAGE_FILTERS)
        if path:
            self.open_path(path)

    def open_dicom_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM folder",
                                                  self.settings.last_folder)
        if folder:
            self.open_path(folder)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_path(p))
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        self.recent_menu.addSeparator()
        self.recent_menu.addAction("Clear list").triggered.connect(self.settings.clear_recent)

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        if len(paths) > 1:
            self.statusBar().showMessage(f"{len(paths)} items dropped: opening the first, "
                                         f"{Path(paths[0]).name}", 10_000)
        # after the drop returns: the open path may ask questions in dialogs
        QTimer.singleShot(0, lambda: self.open_path(paths[0]))

    def _can_replace_image(self, action: str) -> bool:
        """Before the image is replaced: no job on it, no unsaved mask (or the person agrees)."""
        if self.is_opening:
            QMessageBox.information(self, APP_TITLE, "Another image is being opened; wait for it.")
            return False
        if self.is_busy:
            kind = self._job_kind or "job"
            QMessageBox.information(
                self, APP_TITLE,
                f"A {kind} is running on the current image. Wait for it to finish, or cancel it "
                f"(Segment > Cancel), then {action} again.")
            return False
        return self._resolve_unsaved(f"before you {action}")

    def open_path(self, path: str | Path, series_uid: str | None = None) -> bool:
        """Open a file or DICOM folder in place of the current image; True when reading started."""
        p = Path(str(path)).expanduser()
        if not p.exists():
            self.error_dialog("Cannot open", f"No such file or folder:\n{p}")
            return False
        if not self._can_replace_image("open another image"):
            return False
        if p.is_dir() and series_uid is None:
            return self._start_open(lambda: self._list_series(p),
                                    lambda series: self._after_series_listed(p, series),
                                    f"Looking for DICOM series in {p.name}…", p)
        return self._start_open(lambda: read_for_display(p, series_uid),
                                lambda layers: self._show_layers(layers, p), f"Opening {p.name}…",
                                p)

    @staticmethod
    def _list_series(folder: Path) -> list[Any]:
        from llm4seg_core.io import list_dicom_series

        series = list_dicom_series(folder)
        if not series:
            raise LLM4SegError(f"no DICOM images found in {folder}; choose the folder that holds "
                               "the .dcm files, or open an image file instead")
        return series

    def choose_series(self, series: list[Any]) -> Any | None:
        """The series picker: returns one of ``series`` or None (cancelled)."""
        labels = [f"{i + 1}. {s.label}" for i, s in enumerate(series)]
        largest = max(range(len(series)), key=lambda i: series[i].n_frames or series[i].n_files)
        text, ok = QInputDialog.getItem(self, "Choose a DICOM series",
                                        f"This folder holds {len(series)} series. Open which one?",
                                        labels, largest, False)
        if not ok or text not in labels:
            return None
        return series[labels.index(text)]

    def _after_series_listed(self, folder: Path, series: list[Any]) -> None:
        uid = None
        if len(series) > 1:
            chosen = self.choose_series(series)
            if chosen is None:
                self.statusBar().showMessage("Opening cancelled.", 5_000)
                self.image_opened.emit("")
                return
            uid = chosen.uid
        self._start_open(lambda: read_for_display(folder, uid),
                         lambda layers: self._show_layers(layers, folder),
                         f"Opening {folder.name}…", folder)

    def open_demo(self) -> bool:
        """Open the demo chest CT (lung2) with its expert label (hidden at first)."""
        if not self._can_replace_image("open the demo"):
            return False
        from llm4seg_napari._sample_data import make_lung2_sample

        def show(layers: list[tuple]) -> None:
            self._show_layers(layers, None)
            expert = [layer for layer in self.viewer.layers if isinstance(layer, Labels)
                      and layer.name != mask_name(layers[0][1]["name"])]
            for layer in expert:
                layer.visible = False  # the reference outline: shown on request (Layers panel)

        return self._start_open(make_lung2_sample, show, "Opening the demo chest CT…", None)

    def _start_open(self, fn: Callable[[], Any], done: Callable[[Any], None], text: str,
                    path: Path | None) -> bool:
        worker = create_worker(guarded(fn), _start_thread=False)
        worker.returned.connect(lambda outcome: self._open_returned(outcome, done, path))
        self._open_worker = worker
        self.statusBar().showMessage(text)
        QApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)
        self._sync()
        worker.start()
        return True

    def _open_returned(self, outcome: _Outcome, done: Callable[[Any], None],
                       path: Path | None) -> None:
        self._open_worker = None
        QApplication.restoreOverrideCursor()
        if self._closed:
            return
        self._sync()
        if outcome.error is not None:
            exc = outcome.error
            if isinstance(exc, LLM4SegError):
                message = str(exc)
            else:
                _log.error("opening %s failed:\n%s", path, outcome.trace)
                message = f"unexpected error: {exc!r}"
            name = path.name if path is not None else "the image"
            self.statusBar().showMessage(f"Could not open {name}.", 10_000)
            self.image_opened.emit("")
            self.error_dialog("Cannot open", f"Could not open {name}:\n{message}")
            return
        done(outcome.value)

    def _show_layers(self, layers: list[tuple], path: Path | None) -> None:
        """Replace the shown image by ``layers`` (napari layer-data tuples)."""
        self._saved.clear()
        self.viewer.layers.clear()
        image_name = ""
        for data, kwargs, kind in layers:
            if kind == "image":
                layer = self.viewer.add_image(data, **kwargs)
                image_name = image_name or layer.name
            elif kind == "labels":
                self.viewer.add_labels(data, **kwargs)
        record = (self.image_layer.metadata.get(VOLUME_KEY) or {}) if self.image_layer else {}
        preset = self.settings.window_preset
        if preset in CT_WINDOWS and self.widget.window_combo.isEnabled() and \
                self.widget.window_combo.currentText() in CT_WINDOWS:
            self.widget.window_combo.setCurrentText(preset)  # the preset last picked, for CTs
        image = self.image_layer
        if image is not None and image.ndim - (1 if image.rgb else 0) == 3:
            self.viewer.dims.axis_labels = ("z", "y", "x")
        self.viewer.reset_view()
        if image is not None:
            self.viewer.layers.selection.active = image
            shape = "×".join(str(s) for s in np.shape(image.data))
            spacing = record.get("spacing")
            extra = (f", spacing {' × '.join(f'{float(v):.3g}' for v in spacing)} mm"
                     if spacing and record.get("kind") != "image2d" else "")
            series = image.metadata.get(SERIES_KEY) or []
            more = f"; {len(series) - 1} other series in the folder" if len(series) > 1 else ""
            self.statusBar().showMessage(f"Opened {image.name} ({shape}{extra}){more}. "
                                         "Segment to get a mask.", 15_000)
        if path is not None:
            self.settings.add_recent(path)
            self.settings.last_folder = path if path.is_dir() else path.parent
        self._sync()
        self.image_opened.emit(image_name)

    # ================================================================== editing
    def _ensure_mask(self) -> Labels | None:
        """The current image's mask layer, made (empty, placed like the image) when missing."""
        mask = self.mask_layer
        if mask is not None:
            return mask
        image = self.image_layer
        if image is None:
            QMessageBox.information(self, APP_TITLE, "Open an image first.")
            return None
        shape = tuple(np.shape(image.data))[:-1] if image.rgb else tuple(np.shape(image.data))
        metadata = {k: (dict(v) if isinstance(v, dict) else v) for k, v in image.metadata.items()}
        self.viewer.add_labels(np.zeros(shape, np.uint8), name=mask_name(image.name),
                               scale=image.scale, translate=image.translate, rotate=image.rotate,
                               shear=image.shear, affine=image.affine, metadata=metadata,
                               opacity=0.5)
        return self.mask_layer

    def set_tool(self, mode: str) -> None:
        """Brush ("paint"), eraser ("erase"), fill ("fill") or pan/zoom on the mask."""
        if mode == "pan_zoom":
            mask = self.mask_layer
            if mask is not None:
                mask.mode = "pan_zoom"
            self._sync()
            return
        mask = self._ensure_mask()
        if mask is None:
            self._sync()
            return
        mask.visible = True
        self.viewer.layers.selection.active = mask
        mask.brush_size = self.brush_spin.value()
        if mode in ("paint", "fill") and mask.selected_label == 0:
            mask.selected_label = 1
        mask.mode = mode
        self._sync()

    def _on_brush_size(self, value: int) -> None:
        mask = self.mask_layer
        if mask is not None:
            mask.brush_size = value
        self.settings.brush_size = value

    def _step_brush(self, sign: int) -> None:
        value = self.brush_spin.value()
        step = max(1, round(value * 0.2))
        self.brush_spin.setValue(value + sign * step)

    def undo(self) -> None:
        mask = self.mask_layer
        if mask is not None:
            mask.undo()
            self._title_stale = True

    def redo(self) -> None:
        mask = self.mask_layer
        if mask is not None:
            mask.redo()
            self._title_stale = True

    # ================================================================== view
    def set_window_preset(self, name: str) -> None:
        """Show the CT in the window ``name`` (a preset or "as loaded"); remembered."""
        combo = self.widget.window_combo
        if not combo.isEnabled():
            return
        combo.setCurrentText(name)
        self.settings.window_preset = name if name in CT_WINDOWS else ""

    def _on_window_preset_changed(self, name: str) -> None:
        if name in self.window_actions:
            self.window_actions[name].setChecked(True)

    def _on_window_preset_picked(self, name: str) -> None:
        self.settings.window_preset = name if name in CT_WINDOWS else ""

    # ================================================================== engine
    def segment(self, scope: str | None = None) -> bool:
        return self.widget.segment(scope)

    def finetune(self) -> bool:
        return self.widget.finetune()

    def cancel_job(self) -> None:
        self.widget.cancel_job()

    def _fill_models_menu(self) -> None:
        self._fill_choice_menu(self.models_menu, self.widget.model_combo)

    def _fill_devices_menu(self) -> None:
        self._fill_choice_menu(self.devices_menu, self.widget.device_combo)

    def _fill_choice_menu(self, menu: Any, combo: Any) -> None:
        menu.clear()
        group = QActionGroup(menu)
        group.setExclusive(True)
        model = combo.model()
        for i in range(combo.count()):
            action = menu.addAction(combo.itemText(i))
            action.setCheckable(True)
            action.setChecked(i == combo.currentIndex())
            item = model.item(i) if hasattr(model, "item") else None
            action.setEnabled(not self.is_busy and (item is None or item.isEnabled()))
            tip = combo.itemData(i, Qt.ItemDataRole.ToolTipRole)
            if tip:
                action.setToolTip(str(tip))
            action.triggered.connect(lambda _c=False, k=i: combo.setCurrentIndex(k))
            group.addAction(action)
        menu.setToolTipsVisible(True)

    def _on_job_started(self, kind: str) -> None:
        self._job_kind = kind
        self.statusBar().showMessage(self.widget.status_label.text())
        self.progress.setVisible(True)
        self._sync_progress()
        self._sync()

    def _on_job_finished(self, kind: str, how: str) -> None:
        pending, self._pending_save = self._pending_save, None
        self._job_kind = None
        self._title_stale = True
        if kind == "save" and pending is not None and how == "done":
            self._saved[id(pending.layer)] = (pending.digest, pending.path)
            self.settings.last_folder = str(Path(pending.path).parent)
        self._sync_progress()
        self.statusBar().showMessage(self.widget.status_label.text(), 30_000)
        QTimer.singleShot(4_000, lambda: self.progress.setVisible(self.is_busy)
                          if not self._closed else None)
        self._sync()

    # ================================================================== saving
    def saved_path(self, mask: Labels | None = None) -> str | None:
        """Where the mask was last saved in this session (None: not yet)."""
        mask = mask if mask is not None else self.mask_layer
        entry = self._saved.get(id(mask)) if mask is not None else None
        return entry[1] if entry else None

    def has_unsaved_changes(self) -> bool:
        """The current mask differs from what was last saved (a never saved mask: not empty)."""
        mask = self.mask_layer
        if mask is None:
            return False
        entry = self._saved.get(id(mask))
        if entry is None:
            return bool(np.any(np.asarray(mask.data))) or bool(self.widget.corrected_slices)
        return _digest(mask.data) != entry[0]

    def _suggested_path(self, mask: Labels) -> str:
        saved = self.saved_path(mask)
        if saved:
            return saved
        record = mask.metadata.get(VOLUME_KEY) or {}
        source = Path(str(record.get("source") or ""))
        folder = Path(self.settings.last_folder)
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in mask.name).strip("_")
        suffix = ".png" if record.get("kind") == "image2d" else ".nii.gz"
        if str(source) not in ("", "."):
            folder = source if source.is_dir() else source.parent
        return str(folder / f"{stem or 'mask'}{suffix}")

    def save_mask(self) -> bool:
        """Save the mask where it was saved before, else ask where (Save as)."""
        mask = self.mask_layer
        if mask is not None and self.saved_path(mask):
            return self.save_mask_to(self.saved_path(mask) or "")
        return self.save_mask_as()

    def save_mask_as(self) -> bool:
        mask = self.mask_layer
        if mask is None:
            QMessageBox.information(self, APP_TITLE, "There is no mask to save yet: Segment "
                                    "first (or paint one with the Brush).")
            return False
        path, _ = QFileDialog.getSaveFileName(self, "Save mask", self._suggested_path(mask),
                                              _MASK_FILTERS)
        return self.save_mask_to(path) if path else False

    def save_mask_to(self, path: str) -> bool:
        """Save the mask to ``path`` (atomic, in the image's geometry) in the background."""
        mask = self.mask_layer
        if mask is None or not path:
            return False
        if self.is_busy:
            QMessageBox.information(self, APP_TITLE, "Wait for the running job to finish, or "
                                    "cancel it, then save.")
            return False
        p = Path(path).expanduser()
        if not p.suffix:  # as the writer does: the format that fits the image
            from llm4seg_core.io import mask_suffix_for
            from llm4seg_napari._writer import labels_reference

            attributes = dict(mask.as_layer_data_tuple()[1])
            reference = labels_reference(attributes, tuple(np.shape(mask.data)))
            p = p.with_name(p.name + mask_suffix_for(reference))
        self._pending_save = _PendingSave(str(p), mask, _digest(mask.data))
        if not self.widget.save_mask(str(p)):
            self._pending_save = None
            return False
        return True

    def _resolve_unsaved(self, when: str) -> bool:
        """Ask about an unsaved mask: Save (and wait), Discard, or Cancel. True: go on."""
        if not self.has_unsaved_changes():
            return True
        mask = self.mask_layer
        n = len(self.widget.corrected_slices)
        what = (f"with {n} corrected slice(s)" if n else "from the last Segment")
        answer = QMessageBox.question(
            self, "Unsaved mask",
            f"The mask {mask.name!r} {what} is not saved. Save it {when}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Discard:
            return True
        if answer != QMessageBox.StandardButton.Save:
            return False
        if not self.save_mask():
            return False
        self.wait_idle(STOP_TIMEOUT_S)
        return not self.has_unsaved_changes()

    # ================================================================== closing
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
        # installed last, so it sees a close request before the widget's own close watcher
        # (which cancels the running job): a close the person calls off must not stop the job
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
                kind = self._job_kind or "job"
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
        self._timer.stop()
        try:
            notification_manager.notification_ready.disconnect(self._on_napari_notification)
        except (RuntimeError, ValueError, TypeError):
            pass
        self._save_settings()
        self.widget.cancel_job()  # nothing should run now; if it does, it stops
        self.qt_viewer.close()
        super().closeEvent(event)
        event.accept()

    # ================================================================== about
    def show_about(self) -> Any:
        from llm4seg_app.about import AboutDialog, about_info

        dialog = AboutDialog(about_info(device=self.widget.device_combo.currentText()), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        self._about = dialog
        return dialog
