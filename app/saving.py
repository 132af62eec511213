"""Saving the mask: Save, Save as, where to suggest, and asking about an unsaved mask.

The write itself is the plugin widget's ``save_mask`` job (atomic, in the
image's geometry); the window remembers, per mask, where it was saved and
after how many edits (:class:`~llm4seg_app.dirty.UnsavedTracker`).

Save as offers DICOM-SEG (.dcm) too when the image was read from DICOM: the
model's label names and colours and the model that segmented it go into it
(:mod:`llm4seg_napari._writer`). A .dcm name for another image is refused at
once, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Labels
from qtpy.QtWidgets import QFileDialog, QMessageBox

from llm4seg_app import APP_TITLE
from llm4seg_core.io import SUPPORTED_MASK_SUFFIXES
from llm4seg_core.io.masks import DICOM_SEG_SUFFIX
from llm4seg_napari import (
    DICOM_SEG_FILTER,
    VOLUME_KEY,
    is_from_dicom,
    mask_filters,
    suggested_mask_path,
)

if TYPE_CHECKING:
    from llm4seg_app.dirty import UnsavedTracker
    from llm4seg_app.settings import AppSettings
    from llm4seg_napari import LLM4SegWidget
    from llm4seg_napari.state import WidgetState

__all__ = ["SavingMixin"]

#: How long a Save before closing or replacing the image may take.
SAVE_TIMEOUT_S = 60.0


@dataclass
class _PendingSave:
    path: str
    layer: Labels
    edits: int


def _mask_suffix(path: str) -> str:
    """The mask suffix ``path`` ends with ("" when none of the supported ones)."""
    name = path.lower()
    return next((s for s in sorted(SUPPORTED_MASK_SUFFIXES, key=len, reverse=True)
                 if name.endswith(s)), "")


class SavingMixin:
    """Save and Save as of :class:`~llm4seg_app.window.MainWindow`."""

    widget: LLM4SegWidget
    state: WidgetState
    settings: AppSettings
    unsaved: UnsavedTracker
    _pending_save: _PendingSave | None

    def saved_path(self, mask: Labels | None = None) -> str | None:
        """Where the mask was last saved in this session (None: not yet)."""
        mask = mask if mask is not None else self.state.mask
        return self.unsaved.saved_path(mask) if mask is not None else None

    def has_unsaved_changes(self) -> bool:
        """The current mask differs from what was last saved (a never saved mask: not empty)."""
        mask = self.state.mask
        if mask is None:
            return False
        return self.unsaved.is_unsaved(mask, bool(self.state.corrected_slices))

    def _suggested_path(self, mask: Labels) -> str:
        saved = self.saved_path(mask)
        if saved:
            return saved
        path = Path(suggested_mask_path(mask))
        record = mask.metadata.get(VOLUME_KEY) or {}
        if str(record.get("source") or "") in ("", "."):  # no file behind it: the last folder
            path = Path(self.settings.last_folder) / path.name
        return str(path)

    def save_mask(self) -> bool:
        """Save the mask where it was saved before, else ask where (Save as)."""
        saved = self.saved_path()
        return self.save_mask_to(saved) if saved else self.save_mask_as()

    def save_mask_as(self) -> bool:
        mask = self.state.mask
        if mask is None or not self.unsaved.has_content(mask, bool(self.state.corrected_slices)):
            QMessageBox.information(self, APP_TITLE, "There is no mask to save yet: Segment "
                                    "first (or paint one with the Brush).")
            return False
        path, chosen = QFileDialog.getSaveFileName(self, "Save mask", self._suggested_path(mask),
                                                   mask_filters(mask))
        if path and chosen == DICOM_SEG_FILTER and not Path(path).suffix:
            path += DICOM_SEG_SUFFIX
        return self.save_mask_to(path) if path else False

    def save_mask_to(self, path: str) -> bool:
        """Save the mask to ``path`` (atomic, in the image's geometry) in the background."""
        mask = self.state.mask
        if mask is None or not path:
            return False
        if self.state.is_busy:
            QMessageBox.information(self, APP_TITLE, "Wait for the running job to finish, or "
                                    "cancel it, then save.")
            return False
        p = Path(path).expanduser()
        if not p.suffix:  # as the writer does: the format that fits the image
            p = p.with_name(p.name + _mask_suffix(suggested_mask_path(mask)))
        if p.suffix.lower() == DICOM_SEG_SUFFIX and not is_from_dicom(mask):
            QMessageBox.information(
                self, APP_TITLE, "A DICOM-SEG (.dcm) refers to the DICOM files of its image, and "
                "this image was not read from DICOM. Save the mask as .nii.gz, .nrrd, .mha or "
                ".png instead.")
            self.statusBar().showMessage("Not saved: a DICOM-SEG needs an image read from DICOM.",
                                         10_000)
            return False
        self._pending_save = _PendingSave(str(p), mask, self.unsaved.edits(mask))
        if not self.widget.save_mask(str(p)):
            self._pending_save = None
            return False
        return True

    def _save_finished(self, kind: str, how: str) -> None:
        """A job ended: when it was our save and it worked, the mask is saved there."""
        pending, self._pending_save = self._pending_save, None
        if kind == "save" and pending is not None and how == "done":
            self.unsaved.mark_saved(pending.layer, pending.edits, pending.path)
            self.settings.last_folder = str(Path(pending.path).parent)

    def _resolve_unsaved(self, when: str) -> bool:
        """Ask about an unsaved mask: Save (and wait), Discard, or Cancel. True: go on."""
        if not self.has_unsaved_changes():
            return True
        mask = self.state.mask
        n = len(self.state.corrected_slices)
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
        self.wait_idle(SAVE_TIMEOUT_S)
        return not self.has_unsaved_changes()
