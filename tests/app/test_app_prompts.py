"""The app's Click and Box tools and Propagate: the plugin's prompt tool driven from the toolbar
(under Xvfb, QT_QPA_PLATFORM=xcb)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtGui import QAction, QKeySequence

from llm4seg_core.io import read_image
from tests.app.conftest import wait_idle
from tests.napari.test_prompting import click, save_prompt_model

pytestmark = pytest.mark.gui


def test_click_box_and_propagate_actions_and_their_shortcuts(make_window) -> None:
    window = make_window(show=False)
    tools = window.tool_actions
    assert [tools[m].text() for m in ("paint", "erase", "fill", "click", "box")] == \
        ["Brush", "Eraser", "Fill", "Click", "Box"]
    assert tools["click"].shortcut().toString() == "C"
    assert tools["box"].shortcut().toString() == "X"
    assert window.propagate_action.shortcut() == QKeySequence("Ctrl+P")
    assert "not the object" in tools["click"].toolTip()
    # in the toolbar and the menus, off while no image is open
    assert tools["click"] in window.toolbar.actions() and window.propagate_action in \
        window.toolbar.actions()
    assert not tools["click"].isEnabled() and not window.propagate_action.isEnabled()
    # no two actions of the window share a shortcut
    keys = [s.toString() for a in window.findChildren(QAction) for s in a.shortcuts()
            if not s.isEmpty()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_click_and_box_switch_the_prompt_layers_modes_and_segment(make_window, qtbot,
                                                                  small_ct) -> None:
    save_prompt_model(read_image(small_ct).array, 3)
    window = make_window()
    assert window.open_path(small_ct)
    wait_idle(qtbot, window)
    image, tools, tool = window.image_layer, window.tool_actions, window.widget.prompts
    assert tools["click"].isEnabled() and window.propagate_action.isEnabled()

    tools["click"].trigger()
    points = tool.points
    assert points is not None and window.viewer.layers.selection.active is points
    assert points.mode == "add" and tools["click"].isChecked()
    assert window.widget.prompt_button.isChecked()

    tools["box"].trigger()
    assert window.viewer.layers.selection.active is tool.boxes
    assert tool.boxes.mode == "add_rectangle" and tools["box"].isChecked()
    assert not tools["click"].isChecked()

    tools["paint"].trigger()  # back to the mask
    assert window.viewer.layers.selection.active is window.mask_layer
    assert tools["paint"].isChecked() and not tools["box"].isChecked()
    points.mode = "add"  # napari's own layer controls: the toolbar follows
    window.viewer.layers.selection.active = points
    assert tools["click"].isChecked()

    # a click segments its slice; the mask has an unsaved change now
    click(points, image, (3, 24, 20))
    qtbot.waitUntil(lambda: tool.idle and tool.applied == 1, timeout=60_000)
    mask = window.mask_layer
    assert (mask.data[3] == 1).any() and window.state.corrected_slices == [3]
    assert window.save_action.isEnabled()
    assert window.unsaved.is_unsaved(mask, True)

    # Propagate from the prompted slice, through the widget's job (progress, Cancel)
    before = mask.data.copy()
    window.propagate_action.trigger()
    assert window.is_busy and window.cancel_action.isEnabled()
    wait_idle(qtbot, window)
    assert "Propagated label 1 from slice(s) 3" in window.state.status
    np.testing.assert_array_equal(mask.data[3], before[3])
    edits = window.unsaved.edits(mask)
    window.undo_action.trigger()  # the app's Undo takes the propagation back, in one step
    np.testing.assert_array_equal(mask.data, before)
    assert window.unsaved.edits(mask) == edits + 1


def test_click_without_an_image_says_open_one(make_window, dialogs) -> None:
    window = make_window(show=False)
    window.set_tool("click")
    assert "Open an image first." in dialogs.texts("information")
    assert not window.widget.prompts.active
