"""Opening an image: Open dialogs, Open recent, drag and drop, the DICOM series choice, the demo.

One image at a time. Files and DICOM folders are read in a worker thread by
the plugin's reader (:func:`llm4seg_napari.read_layers`), so geometry, CT
windows and metadata are the same as in napari; the new layers replace the
shown ones on the main thread. A label file (a DICOM-SEG, an RTSTRUCT, a mask
with a label sidecar) does not replace the image: it is added on it as a named,
coloured labels layer (no image open: a message says to open it first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication, QFileDialog, QInputDialog, QMenu, QMessageBox

from llm4seg_app import APP_TITLE
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import DICOM_SUFFIXES, PICTURE_SUFFIXES, VOLUME_SUFFIXES
from llm4seg_core.preprocess import CT_WINDOWS
from llm4seg_napari._label_files import NOTES_KEY, is_label_file
from llm4seg_napari import (
    SERIES_KEY,
    VOLUME_KEY,
    JobRunner,
    Outcome,
    image_notes,
    mask_name,
    read_layers,
    task_arg,
)

if TYPE_CHECKING:
    from napari.components import ViewerModel

    from llm4seg_app.dirty import UnsavedTracker
    from llm4seg_app.settings import AppSettings
    from llm4seg_napari import LLM4SegWidget
    from llm4seg_napari.state import WidgetState

__all__ = ["IMAGE_FILTERS", "OpeningMixin"]

_log = logging.getLogger(__name__)

IMAGE_FILTERS = ";;".join([
    "Medical images and pictures (" + " ".join(
        f"*{s}" for s in (*DICOM_SUFFIXES, *VOLUME_SUFFIXES, *PICTURE_SUFFIXES)) + ")",
    "DICOM files (" + " ".join(f"*{s}" for s in DICOM_SUFFIXES) + ")",
    "NIfTI, NRRD, MetaImage (" + " ".join(f"*{s}" for s in VOLUME_SUFFIXES) + ")",
    "Pictures (" + " ".join(f"*{s}" for s in PICTURE_SUFFIXES) + ")",
    "All files (*)",
])


def _list_series(folder: Path) -> list[Any]:
    from llm4seg_core.io import list_dicom_series

    series = list_dicom_series(folder)
    if not series:
        raise LLM4SegError(f"no DICOM images found in {folder}; choose the folder that holds "
                           "the .dcm files, or open an image file instead")
    return series


class OpeningMixin:
    """Opening images in :class:`~llm4seg_app.window.MainWindow`."""

    viewer: ViewerModel
    widget: LLM4SegWidget
    state: WidgetState
    settings: AppSettings
    unsaved: UnsavedTracker
    recent_menu: QMenu
    _opener: JobRunner  # runs the "open" jobs; its finished signal: _on_open_finished
    _open_next: tuple[Callable[[Any], None], Path | None]  # what to do with its value
    _closed: bool

    @property
    def is_opening(self) -> bool:
        """An image is being read."""
        return self._opener.is_busy

    # ------------------------------------------------------------------ asking what to open
    def open_image_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self.settings.last_folder,
                                              IMAGE_FILTERS)
        if path:
            self.open_path(path)

    def open_dicom_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM folder",
                                                  self.settings.last_folder)
        if folder:
            self.open_path(folder)

    def _fill_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        recent = self.settings.recent
        for path in recent:
            action = menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_path(p))
        if not recent:
            menu.addAction("(none yet)").setEnabled(False)
        menu.addSeparator()
        menu.addAction("Clear list").triggered.connect(self.settings.clear_recent)

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

    # ------------------------------------------------------------------ opening
    def _can_replace_image(self, action: str) -> bool:
        """Before the image is replaced: no job on it, no unsaved mask (or the person agrees)."""
        if self.is_opening:
            QMessageBox.information(self, APP_TITLE, "Another image is being opened; wait for it.")
            return False
        if self.state.is_busy:
            kind = self.state.kind or "job"
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
        if series_uid is None and is_label_file(p):
            return self.open_labels(p)
        if not self._can_replace_image("open another image"):
            return False
        if p.is_dir() and series_uid is None:
            return self._start_open(lambda: _list_series(p),
                                    lambda series: self._after_series_listed(p, series),
                                    f"Looking for DICOM series in {p.name}…", p)
        return self._start_open(lambda: read_layers(p, series_uid=series_uid),
                                lambda layers: self._show_layers(layers, p), f"Opening {p.name}…",
                                p)

    def open_labels(self, path: Path) -> bool:
        """A label file as a labels layer on the open image (kept); True when reading started."""
        image = self.state.image
        if image is None:
            self.error_dialog("Open the image first",
                              f"{path.name} holds labels, not an image: open the image they were "
                              "made on first (for a DICOM-SEG or RTSTRUCT: its DICOM series), "
                              f"then open {path.name} again.")
            return False
        if self.is_opening:
            QMessageBox.information(self, APP_TITLE, "Another file is being opened; wait for it.")
            return False
        images = [(image.name, dict(image.metadata))]
        return self._start_open(lambda: read_layers(path, images=images),
                                lambda layers: self._add_label_layers(layers, path, image.name),
                                f"Reading {path.name} onto {image.name}…", path)

    def _add_label_layers(self, layers: list[tuple], path: Path, image_name: str) -> None:
        """Add the labels layers of a label file on the image; say what it holds."""
        notes: list[str] = []
        names: list[str] = []
        for data, kwargs, _kind in layers:
            self.viewer.add_labels(data, **kwargs)
            notes += (kwargs.get("metadata") or {}).get(NOTES_KEY) or []
            names += list((kwargs.get("features") or {}).get("name", []))[1:]
        image = self.state.image
        if image is not None:
            self.viewer.layers.selection.active = image
        text = f"Opened {path.name} on {image_name}: " + (", ".join(names) or "unnamed labels")
        self.statusBar().showMessage(text + "".join(f". WARNING: {n}" for n in notes), 30_000)
        if notes:
            QMessageBox.warning(self, APP_TITLE, f"{path.name} was read with a warning:\n\n"
                                + "\n\n".join(n[0].upper() + n[1:] + "." for n in notes))
        self.settings.add_recent(path)
        self._update_actions()
        self.image_opened.emit(image_name)

    def _after_series_listed(self, folder: Path, series: list[Any]) -> None:
        uid = None
        if len(series) > 1:
            chosen = self.choose_series(series)
            if chosen is None:
                self.statusBar().showMessage("Opening cancelled.", 5_000)
                self.image_opened.emit("")
                return
            uid = chosen.uid
        self._start_open(lambda: read_layers(folder, series_uid=uid),
                         lambda layers: self._show_layers(layers, folder),
                         f"Opening {folder.name}…", folder)

    def open_demo(self) -> bool:
        """Open the demo chest CT (lung2) with its expert label (hidden at first)."""
        if not self._can_replace_image("open the demo"):
            return False
        from llm4seg_napari import make_lung2_sample

        def show(layers: list[tuple]) -> None:
            self._show_layers(layers, None)
            expert = [layer for layer in self.viewer.layers if isinstance(layer, Labels)
                      and layer.name != mask_name(layers[0][1]["name"])]
            for layer in expert:
                layer.visible = False  # the reference outline: shown on request (Layers panel)

        return self._start_open(make_lung2_sample, show, "Opening the demo chest CT…", None)

    def _start_open(self, fn: Callable[[], Any], done: Callable[[Any], None], text: str,
                    path: Path | None) -> bool:
        if self.is_opening:
            return False
        self._open_next = (done, path)
        self._opener.start("open", lambda _callbacks: fn())
        self.statusBar().showMessage(text)
        QApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)
        self._update_actions()
        return True

    def _on_open_finished(self, outcome: Outcome) -> None:
        """The open job ended (on the main thread): show what it read, or say why not."""
        done, path = self._open_next
        self._open_next = (lambda _value: None, None)
        QApplication.restoreOverrideCursor()
        if self._closed:
            return
        self._update_actions()
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
        self.unsaved.clear()
        self.viewer.layers.clear()
        image_name = ""
        for data, kwargs, kind in layers:
            if kind == "image":
                layer = self.viewer.add_image(data, **kwargs)
                image_name = image_name or layer.name
            elif kind == "labels":
                self.viewer.add_labels(data, **kwargs)
        state = self.state
        preset = self.settings.window_preset
        if preset in CT_WINDOWS and state.window_enabled and state.window_preset in CT_WINDOWS:
            self.widget.select_window(preset)  # the preset last picked, for CTs
        image = state.image
        if image is not None and image.ndim - (1 if image.rgb else 0) == 3:
            self.viewer.dims.axis_labels = ("z", "y", "x")
        self.viewer.reset_view()
        if image is not None:
            self.viewer.layers.selection.active = image
            record = image.metadata.get(VOLUME_KEY) or {}
            shape = "×".join(str(s) for s in np.shape(image.data))
            spacing = record.get("spacing")
            extra = (f", spacing {' × '.join(f'{float(v):.3g}' for v in spacing)} mm"
                     if spacing and record.get("kind") != "image2d" else "")
            series = image.metadata.get(SERIES_KEY) or []
            more = f"; {len(series) - 1} other series in the folder" if len(series) > 1 else ""
            # the series were offered before reading (choose_series): only the reader's warnings
            notes = image_notes(image.metadata, other_series=False)
            if notes:
                self.statusBar().showMessage(f"Opened {image.name} ({shape}{extra}){more}. "
                                             + " ".join(f"WARNING: {n}." for n in notes), 30_000)
                for note in notes:
                    _log.warning("%s: %s", image.name, note)
                QMessageBox.warning(self, APP_TITLE, f"{image.name} was read with a warning:\n\n"
                                    + "\n\n".join(n[0].upper() + n[1:] + "." for n in notes))
            else:
                self.statusBar().showMessage(f"Opened {image.name} ({shape}{extra}){more}. "
                                             f"{self._segment_hint()}", 15_000)
        if path is not None:
            self.settings.add_recent(path)
            self.settings.last_folder = path if path.is_dir() else path.parent
        self._update_actions()
        self.image_opened.emit(image_name)

    def _segment_hint(self) -> str:
        """What Segment will do with the image just opened: the suggested model, and why."""
        suggestion = self.state.suggestion
        if suggestion is None or self.state.model_arg != task_arg(suggestion.task):
            return "Segment to get a mask."
        return f"Segment (Ctrl+R) uses the {suggestion.task} model: {suggestion.reason}."
