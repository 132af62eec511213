"""The window's actions (the one table of texts, shortcuts and tips), its menus and toolbar.

Every action calls a public method of the window (which calls the plugin
widget's public API); :meth:`ActionsMixin._update_actions` turns actions on
and off from the widget's state (and the mask's unsaved-changes tracking) and
is called from their signals, never from a timer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QAction, QActionGroup, QKeySequence
from qtpy.QtWidgets import QLabel, QMenu, QSpinBox, QToolBar

if TYPE_CHECKING:
    from llm4seg_app.dirty import UnsavedTracker
    from llm4seg_napari.state import WidgetState

__all__ = ["EDIT_TOOLS", "PROMPT_TOOLS", "ActionsMixin"]

EDIT_TOOLS = (  # (mode, text, shortcut, tip)
    ("paint", "Brush", "B", "paint the mask (label 1) with the brush"),
    ("erase", "Eraser", "E", "erase the mask with the brush"),
    ("fill", "Fill", "F", "fill the connected region under the click"),
    ("click", "Click", "C", "click on the object (right or Ctrl/Alt/Shift+click: not the object): "
     "the prompt model segments it on that slice at once"),
    ("box", "Box", "X", "drag a box around the object: the prompt model segments it on that "
     "slice at once"),
    ("pan_zoom", "Pan/zoom", "H", "move and zoom the image; no editing"),
)
#: The tools that prompt the prompt model (the plugin's PromptTool), not the mask's modes.
PROMPT_TOOLS = ("click", "box")


class ActionsMixin:
    """The action table, menus and toolbar of :class:`~llm4seg_app.window.MainWindow`."""

    state: WidgetState
    unsaved: UnsavedTracker
    tool_actions: dict[str, QAction]
    window_actions: dict[str, QAction]
    brush_spin: QSpinBox

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
        self.tool_actions = {}
        for mode, text, shortcut, tip in EDIT_TOOLS:
            action = self._action(text, lambda m=mode: self.set_tool(m), shortcut, tip)
            action.setCheckable(True)
            self.tool_group.addAction(action)
            self.tool_actions[mode] = action
        self.bigger_brush_action = self._action("Larger brush", lambda: self.step_brush(+1), "]")
        self.smaller_brush_action = self._action("Smaller brush", lambda: self.step_brush(-1), "[")

        self.segment_action = self._action("&Segment", lambda: self.segment(), "Ctrl+R",
                                        "segment the image (whole volume or current slice, "
                                        "as chosen in the LLM4Seg panel)")
        self.segment_volume_action = self._action("Segment whole &volume",
                                               lambda: self.segment("volume"))
        self.segment_slice_action = self._action("Segment current s&lice",
                                              lambda: self.segment("slice"))
        self.propagate_action = self._action("&Propagate", self.propagate, "Ctrl+P",
                                          "carry the object (the selected label) through the "
                                          "volume from your prompted and corrected slices")
        self.finetune_action = self._action("&Fine-tune", self.finetune, "Ctrl+T",
                                         "train the model on your corrected slices and save "
                                         "a new model version")
        self.cancel_action = self._action("&Cancel", self.cancel_job, "Esc",
                                       "stop the running segmentation or fine-tuning")
        self.refresh_models_action = self._action("Re-read the model store",
                                               lambda: self.widget.refresh_models())

        self.window_group = QActionGroup(self)
        self.window_group.setExclusive(True)
        self.window_actions = {}
        for name in self.state.window_choices:
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
                         self.segment_slice_action, self.propagate_action])
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
        bar.addAction(self.propagate_action)
        bar.addWidget(QLabel(" Size "))
        self.brush_spin = QSpinBox()
        self.brush_spin.setRange(1, 200)
        self.brush_spin.setValue(self.settings.brush_size)
        self.brush_spin.setToolTip("brush and eraser size ([ and ] change it)")
        self.brush_spin.valueChanged.connect(self._on_brush_spin)
        bar.addWidget(self.brush_spin)
        bar.addActions([self.undo_action, self.redo_action])
        bar.addSeparator()
        bar.addAction(self.save_action)
        self.toolbar = bar
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    # ------------------------------------------------------------------ choice menus
    def _fill_models_menu(self) -> None:
        self._fill_choice_menu(self.models_menu, self.state.model_choices, self.state.model_arg,
                               self.widget.select_model)

    def _fill_devices_menu(self) -> None:
        self._fill_choice_menu(self.devices_menu, self.state.device_choices, self.state.device_arg,
                               self.widget.select_device)

    def _fill_choice_menu(self, menu: QMenu, choices: list[Any], current: str | None,
                          select: Callable[[Any], None]) -> None:
        menu.clear()
        group = QActionGroup(menu)
        group.setExclusive(True)
        busy = self.state.is_busy
        for choice in choices:
            action = menu.addAction(choice.text)
            action.setCheckable(True)
            action.setChecked(choice.arg == current)
            action.setEnabled(not busy and bool(getattr(choice, "enabled", True)))
            if choice.tip:
                action.setToolTip(str(choice.tip))
            action.triggered.connect(lambda _c=False, arg=choice.arg: select(arg))
            group.addAction(action)
        menu.setToolTipsVisible(True)

    # ------------------------------------------------------------------ in step with the state
    def _update_actions(self, *_: Any) -> None:
        """Turn the actions on and off for the state now (called from the state's signals)."""
        if self._closed:
            return
        state = self.state
        busy, image, mask = state.is_busy, state.image, state.mask
        # the mask made empty at open counts once something is in it (or was saved)
        has_mask = mask is not None and self.unsaved.has_content(mask,
                                                                 bool(state.corrected_slices))
        opening = self.is_opening
        can_run = not busy and not opening and image is not None
        for action in (self.segment_action, self.segment_volume_action, self.segment_slice_action,
                       self.finetune_action, self.propagate_action):
            action.setEnabled(can_run)
        for action in (self.save_action, self.save_as_action):
            action.setEnabled(not busy and has_mask)
        self.cancel_action.setEnabled(busy)
        for action in (self.open_action, self.open_dicom_action, self.open_demo_action):
            action.setEnabled(not opening)
        self.recent_menu.setEnabled(not opening)
        for action in self.tool_actions.values():
            action.setEnabled(image is not None)
        self.undo_action.setEnabled(has_mask)
        self.redo_action.setEnabled(has_mask)
        self.window_menu.setEnabled(image is not None and state.window_enabled)
        self._check_window_action(state.window_preset)
        self._update_tools()

    def _check_window_action(self, name: str) -> None:
        action = self.window_actions.get(name)
        if action is not None and not action.isChecked():
            action.setChecked(True)
