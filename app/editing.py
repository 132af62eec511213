"""Editing the mask: brush, eraser, fill, the Click and Box prompts, Propagate, brush size,
undo and redo, CT windows.

The tool buttons follow the mask's own napari events (``events.mode``,
``events.brush_size``), the prompt tool's (``PromptTool.changed``) and the
viewer's active layer, so a mode or size picked in napari's layer controls
shows in the toolbar at once. Click and Box are the plugin's
:class:`~llm4seg_napari._prompting.PromptTool`: its clicks layer in add mode,
its box layer in rectangle mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QMessageBox

from llm4seg_app import APP_TITLE
from llm4seg_app.actions import PROMPT_TOOLS
from llm4seg_core.preprocess import CT_WINDOWS
from llm4seg_napari import make_mask_layer

if TYPE_CHECKING:
    from napari.components import ViewerModel
    from qtpy.QtGui import QAction
    from qtpy.QtWidgets import QSpinBox

    from llm4seg_app.dirty import UnsavedTracker
    from llm4seg_app.settings import AppSettings
    from llm4seg_napari import LLM4SegWidget
    from llm4seg_napari.state import WidgetState

__all__ = ["EditingMixin"]


def _disconnect(emitter: Any, slot: Any) -> None:
    try:
        emitter.disconnect(slot)
    except (RuntimeError, ValueError, TypeError):
        pass


class EditingMixin:
    """Mask tools of :class:`~llm4seg_app.window.MainWindow`."""

    viewer: ViewerModel
    widget: LLM4SegWidget
    state: WidgetState
    settings: AppSettings
    unsaved: UnsavedTracker
    tool_actions: dict[str, QAction]
    brush_spin: QSpinBox
    _edited: Labels | None  # the mask whose mode and brush size the toolbar follows
    _image_switching: bool  # an image_changed signal came in this event-loop turn
    _window_pick: tuple[str, Any]  # a window change and the image it was on, to judge

    def _ensure_mask(self) -> Labels | None:
        """The current image's mask layer, made (empty, placed like the image) when missing."""
        mask = self.state.mask
        if mask is not None:
            return mask
        image = self.state.image
        if image is None:
            QMessageBox.information(self, APP_TITLE, "Open an image first.")
            return None
        shape = tuple(np.shape(image.data))
        make_mask_layer(self.viewer, image, shape[:-1] if image.rgb else shape)
        return self.state.mask

    def set_tool(self, mode: str) -> None:
        """Brush ("paint"), eraser ("erase"), fill ("fill") or pan/zoom on the mask; the
        prompts "click" and "box" (the prompt tool's layers, in their add modes)."""
        if mode in PROMPT_TOOLS:
            if self.state.image is None:
                QMessageBox.information(self, APP_TITLE, "Open an image first.")
            else:
                self.widget.start_prompts(mode)  # its notifications say what went wrong
            self._update_tools()
            return
        if mode == "pan_zoom":
            mask = self.state.mask
            if mask is not None:
                mask.mode = "pan_zoom"
            self._update_tools()
            return
        mask = self._ensure_mask()
        if mask is None:
            self._update_tools()
            return
        mask.visible = True
        self.viewer.layers.selection.active = mask
        mask.brush_size = self.brush_spin.value()
        if mode in ("paint", "fill") and mask.selected_label == 0:
            mask.selected_label = 1
        mask.mode = mode
        self._update_tools()

    def _on_brush_spin(self, value: int) -> None:
        mask = self.state.mask
        if mask is not None:
            mask.brush_size = value
        self.settings.brush_size = value

    def step_brush(self, sign: int) -> None:
        """A larger (+1) or smaller (-1) brush, by a fifth of its size."""
        value = self.brush_spin.value()
        self.brush_spin.setValue(value + sign * max(1, round(value * 0.2)))

    def propagate(self) -> bool:
        """Carry the selected label through the volume from the prompted and corrected slices."""
        return self.widget.propagate()

    def undo(self) -> None:
        mask = self.state.mask
        if mask is not None:
            mask.undo()
            self.unsaved.touch(mask)  # napari's undo announces no edit event

    def redo(self) -> None:
        mask = self.state.mask
        if mask is not None:
            mask.redo()
            self.unsaved.touch(mask)

    # ------------------------------------------------------------------ following the mask
    def _follow_mask(self, mask: Labels | None) -> None:
        """Keep the tool buttons and the size box in step with ``mask`` (the current one)."""
        old = self._edited
        if mask is old:
            return
        if old is not None:
            _disconnect(old.events.mode, self._update_tools)
            _disconnect(old.events.brush_size, self._sync_brush)
        self._edited = mask
        if mask is not None:
            mask.events.mode.connect(self._update_tools)
            mask.events.brush_size.connect(self._sync_brush)
            # the toolbar's size (the person's, remembered) is the new mask's: napari gives
            # every new labels layer its own default, which would replace it
            mask.brush_size = self.brush_spin.value()
        self._update_tools()

    def _update_tools(self, *_: Any) -> None:
        """Check the tool in use: the mask's mode when the mask is the layer being edited, a
        prompt when a prompt layer is, in its add mode."""
        mask = self.state.mask
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and active is mask:
            mode = str(active.mode)
        else:
            mode = self.widget.prompts.mode or "pan_zoom"
        for name, action in self.tool_actions.items():
            if action.isChecked() != (name == mode):
                action.setChecked(name == mode)

    def _sync_brush(self, *_: Any) -> None:
        mask = self.state.mask
        if mask is not None and int(mask.brush_size) != self.brush_spin.value():
            self.brush_spin.blockSignals(True)
            self.brush_spin.setValue(int(mask.brush_size))
            self.brush_spin.blockSignals(False)

    # ------------------------------------------------------------------ CT windows
    def set_window_preset(self, name: str) -> None:
        """Show the CT in the window ``name`` (a preset or "as loaded"); remembered."""
        if not self.state.window_enabled:
            return
        self.widget.select_window(name)
        self.settings.window_preset = name if name in CT_WINDOWS else ""

    def _on_window_changed(self, name: str) -> None:
        """The window shown changed: a pick in the panel (the image stayed) is remembered.

        Opening or switching images also changes it (to the image's own window),
        in the same burst of signals as ``image_changed``, before or after it:
        such a change is not a pick.
        """
        self._check_window_action(name)
        if self._image_switching:
            return
        self._window_pick = (name, self.state.image)
        QTimer.singleShot(0, self._remember_window)

    def _on_image_switched(self, *_: Any) -> None:
        self._image_switching = True
        QTimer.singleShot(0, self._image_switch_done)

    def _image_switch_done(self) -> None:
        self._image_switching = False

    def _remember_window(self) -> None:
        (name, image), self._window_pick = self._window_pick, ("", None)
        state = self.state
        if image is not None and state.image is image and state.window_preset == name:
            self.settings.window_preset = name if name in CT_WINDOWS else ""
