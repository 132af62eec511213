"""The standalone app's window, driven as a person would (under Xvfb, QT_QPA_PLATFORM=xcb)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from qtpy.QtCore import QMimeData, QPointF, Qt, QUrl
from qtpy.QtGui import QDropEvent, QKeySequence
from qtpy.QtWidgets import QMessageBox

from llm4seg_core.store import ModelStore
from llm4seg_core.data import demo_case, demo_data_available
from llm4seg_core.io import read_image
from llm4seg_core.preprocess import window_limits
from tests.app.conftest import ORIGIN_XYZ, SPACING_XYZ, TINY, wait_idle
from tests.helpers import write_ct_series, write_tiny_zoo

pytestmark = pytest.mark.gui

Button = QMessageBox.StandardButton


def _mask_slice_with_expert_label(window) -> int:
    """The slice of the demo CT where its expert label is largest."""
    expert = next(layer for layer in window.viewer.layers if layer.name == "lung2 expert label")
    return int(np.argmax(np.asarray(expert.data).reshape(expert.data.shape[0], -1).sum(1)))


def _background_pixels(labels: np.ndarray, n: int) -> list[tuple[int, int]]:
    """``n`` unlabelled pixels far apart (and from the edges): where a brush stroke shows."""
    ys, xs = np.nonzero(labels[40:-40, 40:-40] == 0)
    assert len(ys) >= n, "the slice is labelled everywhere"
    picks = np.linspace(0, len(ys) - 1, n + 2).astype(int)[1:-1]
    return [(int(ys[i]) + 40, int(xs[i]) + 40) for i in picks]


@pytest.mark.skipif(not demo_data_available(), reason="demo data not fetched (llm4seg data fetch)")
def test_demo_ct_segment_paint_finetune_save(make_window, dialogs, qtbot, tmp_path) -> None:
    window = make_window()
    image_path = demo_case("lung2")[0]
    source = read_image(image_path)

    # open the demo CT: the demo action brings the CT and its expert label (hidden)
    window.open_demo_action.trigger()
    assert window.is_opening and not window.open_action.isEnabled()
    wait_idle(qtbot, window)
    image = window.image_layer
    assert image is not None and image.name == "lung2 CT"
    assert image.data.shape == source.spatial_shape
    assert not window.viewer.layers["lung2 expert label"].visible
    assert window.segment_action.isEnabled() and not window.save_action.isEnabled()
    assert window.windowTitle().startswith("lung2 CT")

    # Segment the slice through the tumour with a tiny model
    z = _mask_slice_with_expert_label(window)
    window.viewer.dims.set_point(0, float(image.data_to_world([z, 0, 0])[0]))
    window.widget.select_model(TINY, "tiny CMUNeXt (test)")
    window.segment_slice_action.trigger()
    assert window.is_busy and window.cancel_action.isEnabled()
    assert not window.segment_action.isEnabled() and window.progress.isVisible()
    wait_idle(qtbot, window)
    mask = window.mask_layer
    assert mask is not None and mask.data.shape == image.data.shape
    assert "Segmented 1 slice(s)" in window.state.status
    assert "Model: tiny CMUNeXt (test)" in window.model_label.text()
    assert window.device_label.text().startswith("Device: auto (cpu")

    # brush: paints the mask, marks the slice as corrected; undo and redo
    window.tool_actions["paint"].trigger()
    assert window.viewer.layers.selection.active is mask and mask.mode == "paint"
    window.brush_spin.setValue(6)
    assert mask.brush_size == 6
    before = mask.data[z].copy()
    (y, x), far = _background_pixels(before, 2)
    mask.paint((z, y, x), 1)
    painted = mask.data[z].copy()
    assert painted[y, x] == 1 and not np.array_equal(painted, before)
    assert window.state.corrected_slices == [z]
    assert window.has_unsaved_changes()
    window.undo_action.trigger()
    np.testing.assert_array_equal(mask.data[z], before)
    window.redo_action.trigger()
    np.testing.assert_array_equal(mask.data[z], painted)
    window.tool_actions["erase"].trigger()
    assert mask.mode == "erase"
    window.tool_actions["fill"].trigger()
    assert mask.mode == "fill"
    window.tool_actions["pan_zoom"].trigger()
    assert mask.mode == "pan_zoom"

    # Fine-tune briefly: a new model version, selected, shown in the status bar
    window.widget.steps_spin.setValue(2)
    window.finetune_action.trigger()
    assert window.is_busy
    wait_idle(qtbot, window)
    versions = ModelStore().versions()
    assert len(versions) == 1 and versions[0].data["slices"] == [z]
    assert window.state.model_arg == versions[0].name
    assert versions[0].name in window.model_label.text()  # the status bar follows the state

    # Save (first time: asks where; a name without suffix gets .nii.gz)
    out = tmp_path / "out" / "lung2_mask"
    out.parent.mkdir()
    dialogs.answers["save"] = str(out)
    window.save_action.trigger()
    wait_idle(qtbot, window)
    saved = out.with_name("lung2_mask.nii.gz")
    assert saved.is_file() and window.saved_path() == str(saved)
    assert not window.has_unsaved_changes()
    back = read_image(saved)
    assert back.spatial_shape == source.spatial_shape
    assert back.spacing == pytest.approx(source.spacing, abs=1e-4)
    assert back.origin == pytest.approx(source.origin, abs=1e-3)
    assert back.direction == pytest.approx(source.direction, abs=1e-6)
    np.testing.assert_array_equal(back.array, mask.data)

    # another edit, then Save again: same file, no dialog
    mask.paint((z, *far), 1)
    assert window.has_unsaved_changes()
    n_dialogs = len(dialogs.texts("save-dialog"))
    window.save_action.trigger()
    wait_idle(qtbot, window)
    assert len(dialogs.texts("save-dialog")) == n_dialogs
    assert read_image(saved).array[z, far[0], far[1]] == 1
    assert not window.has_unsaved_changes()
    assert not dialogs.texts("critical")


def test_open_file_window_presets_and_recent(make_window, dialogs, qtbot, small_ct) -> None:
    window = make_window()
    dialogs.answers["open"] = str(small_ct)
    window.open_action.trigger()
    wait_idle(qtbot, window)
    image = window.image_layer
    assert image is not None and image.name == "small_ct"
    assert tuple(image.scale) == pytest.approx(SPACING_XYZ[::-1])
    assert tuple(image.translate) == pytest.approx(ORIGIN_XYZ[::-1])
    assert window.settings.recent[0] == str(small_ct.resolve())
    assert window.settings.last_folder == str(small_ct.parent)

    window.window_actions["bone"].trigger()
    assert window.state.window_preset == "bone"
    assert tuple(image.contrast_limits) == pytest.approx(window_limits("bone"))
    assert window.settings.window_preset == "bone"
    window.window_actions["lung"].trigger()
    assert tuple(image.contrast_limits) == pytest.approx(window_limits("lung"))
    assert window.settings.window_preset == "lung"

    # Open recent: the menu lists the file; choosing it reopens it
    window._fill_recent_menu()
    entries = [a for a in window.recent_menu.actions() if a.text() == str(small_ct.resolve())]
    assert len(entries) == 1
    entries[0].trigger()
    wait_idle(qtbot, window)
    # the image once (replaced, not added again), and at most its one empty mask made ahead
    qtbot.waitUntil(lambda: "small_ct mask" in [layer.name for layer in window.viewer.layers],
                    timeout=5000)
    assert [layer.name for layer in window.viewer.layers] == ["small_ct", "small_ct mask"]


def test_errors_show_a_dialog_and_the_app_stays_usable(make_window, dialogs, qtbot,
                                                       small_ct, tmp_path) -> None:
    window = make_window()
    # a damaged file
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    assert window.open_path(bad)
    wait_idle(qtbot, window)
    assert window.image_layer is None
    assert any("broken" in t for t in dialogs.texts("critical")), dialogs.shown
    # a path that is not there
    assert not window.open_path(tmp_path / "nowhere.nrrd")
    assert "No such file" in dialogs.texts("critical")[-1]
    # a folder without DICOM files
    assert window.open_path(tmp_path)
    wait_idle(qtbot, window)
    assert "no DICOM images" in dialogs.texts("critical")[-1]
    assert window.open_action.isEnabled() and window.image_layer is None

    # nothing to segment or save yet: a clear message, no crash
    assert not window.save_as_action.isEnabled()
    window.save_mask_as()
    assert "no mask to save" in dialogs.texts("information")[-1].lower()

    # the app still opens a good image
    window.open_path(small_ct)
    wait_idle(qtbot, window)
    assert window.image_layer is not None

    # missing weights: a checkpoint file that is not there
    n = len(dialogs.texts("critical"))
    window.widget.select_model(str(tmp_path / "missing_weights.safetensors"), "missing weights")
    window.segment_action.trigger()
    wait_idle(qtbot, window)
    errors = dialogs.texts("critical")[n:]
    assert errors and "missing_weights" in errors[-1], dialogs.shown
    assert window.segment_action.isEnabled() and not window.is_busy

    # and Segment works again with a model that is there
    window.widget.select_model(TINY)
    window.segment("volume")
    wait_idle(qtbot, window)
    assert window.mask_layer is not None
    assert "Segmented 6 slice(s)" in window.state.status
    # saving to an unsupported format: a dialog, the mask stays unsaved
    window.mask_layer.paint((1, 10, 10), 1)
    n = len(dialogs.texts("critical"))
    dialogs.answers["save"] = str(tmp_path / "mask.jpg")
    window.save_as_action.trigger()
    wait_idle(qtbot, window)
    assert len(dialogs.texts("critical")) == n + 1 and ".jpg" in dialogs.texts("critical")[-1]
    assert not list(tmp_path.glob("mask.jpg*")) and window.has_unsaved_changes()
    assert window.saved_path() is None


def test_dicom_folder_with_several_series(make_window, dialogs, qtbot, tmp_path) -> None:
    pytest.importorskip("pydicom.data")
    study = tmp_path / "study"
    write_ct_series(study, "1.2.826.0.1.3680043.8.498.3001", 4, "Chest 2.5 mm", 2.5)
    write_ct_series(study / "sub", "1.2.826.0.1.3680043.8.498.3002", 2, "Axial 5 mm", 5.0)
    window = make_window()

    # the picker is cancelled: nothing opens
    dialogs.answers["folder"] = str(study)
    window.open_dicom_action.trigger()
    wait_idle(qtbot, window)
    assert window.image_layer is None
    picker = dialogs.texts("series-picker")
    assert len(picker) == 1 and "Chest 2.5 mm" in picker[0] and "Axial 5 mm" in picker[0]

    # the smaller series is picked: that one opens, with its slice spacing
    labels = picker[0].split("\n")
    dialogs.answers["series"] = next(i for i, t in enumerate(labels) if "Axial" in t)
    window.open_dicom_action.trigger()
    wait_idle(qtbot, window)
    image = window.image_layer
    assert image is not None and image.data.shape[0] == 2
    assert image.scale[0] == pytest.approx(5.0)
    assert window.settings.recent[0] == str(study.resolve())


def test_dicom_warning_shown_and_save_as_dicom_seg(make_window, dialogs, qtbot, tmp_path,
                                                   small_ct) -> None:
    """A series read with a warning says so (status bar, message); Save as offers DICOM-SEG
    for it, which reads back to the same voxels; a .dcm for a NIfTI image is refused."""
    import shutil

    from llm4seg_core.io import read_mask

    pytest.importorskip("pydicom.data")
    folder = tmp_path / "ct"
    write_ct_series(folder, "1.2.826.0.1.3680043.8.498.3101", 4, "Chest 2.5 mm", 2.5)
    shutil.copy(sorted(folder.glob("*.dcm"))[0], folder / "copy.dcm")  # a duplicate slice
    window = make_window()
    assert window.open_path(folder)
    wait_idle(qtbot, window)
    image = window.image_layer
    assert image is not None and image.data.shape[0] == 4
    warnings = dialogs.texts("warning")
    assert len(warnings) == 1 and "duplicate slice" in warnings[0]
    assert "WARNING" in window.statusBar().currentMessage()
    assert "duplicate slice" in window.statusBar().currentMessage()

    window.widget.select_model(TINY, "tiny CMUNeXt (test)")
    window.segment_action.trigger()
    wait_idle(qtbot, window)
    mask = window.mask_layer
    mask.data[1, 10:40, 10:40] = 1  # something in it whatever the untrained model said
    mask.refresh()
    want = np.array(mask.data, copy=True)
    dialogs.answers["save"] = str(tmp_path / "out" / "ct_mask")  # no suffix typed
    dialogs.answers["save-filter"] = "DICOM-SEG (*.dcm)"
    (tmp_path / "out").mkdir()
    assert window.save_mask_as()
    wait_idle(qtbot, window)
    assert "DICOM-SEG (*.dcm)" in dialogs.save_filters[-1]
    written = tmp_path / "out" / "ct_mask.dcm"
    assert written.is_file() and not window.has_unsaved_changes()
    np.testing.assert_array_equal(read_mask(written, reference=read_image(folder)), want)

    # a NIfTI image: no DICOM-SEG offered, and a .dcm name is refused with the reason
    dialogs.answers["question"] = Button.Discard
    assert window.open_path(small_ct)
    wait_idle(qtbot, window)
    window.segment_action.trigger()
    wait_idle(qtbot, window)
    dialogs.answers["save"] = str(tmp_path / "out" / "nifti_mask.dcm")
    dialogs.answers["save-filter"] = ""
    assert not window.save_mask_as()
    assert "DICOM-SEG" not in dialogs.save_filters[-1]
    assert "not read from DICOM" in dialogs.texts("information")[-1]
    assert not (tmp_path / "out" / "nifti_mask.dcm").exists()


def test_an_rtstruct_opens_on_the_image_it_was_drawn_on(make_window, dialogs, qtbot,
                                                        tmp_path) -> None:
    """Opening an RTSTRUCT adds its named, coloured labels on the open series (the image
    stays); with no image open, a message says to open it first."""
    from tests.helpers import write_rtstruct

    pytest.importorskip("pydicom.data")
    folder = tmp_path / "ct"
    write_ct_series(folder, "1.2.826.0.1.3680043.8.498.3201", 4, "Chest 2.5 mm", 2.5)
    vol = read_image(folder)
    (sx, sy, sz), (ox, oy, oz) = vol.spacing, vol.origin
    x0, x1, y0, y1, z = ox + 9.6 * sx, ox + 20.4 * sx, oy + 9.6 * sy, oy + 15.4 * sy, oz + sz
    square = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    rs = write_rtstruct(tmp_path / "rs.dcm", folder, [("GTV", (0, 230, 0), [square]),
                                                      ("Lost", (9, 9, 9), [])])
    window = make_window()
    assert not window.open_path(rs)
    assert "open the image they were made on first" in dialogs.texts("critical")[-1]
    assert window.open_path(folder)
    wait_idle(qtbot, window)
    image = window.image_layer
    assert window.open_path(rs)
    wait_idle(qtbot, window)
    assert window.image_layer is image and image.name in window.viewer.layers
    layer = window.viewer.layers[f"{image.name} rs"]
    assert (np.asarray(layer.data)[1] == 1).sum() == 11 * 6 and not np.asarray(layer.data)[0].any()
    assert list(layer.features["name"]) == ["background", "GTV"]
    np.testing.assert_allclose(np.asarray(layer.colormap.map(np.array([1]))).reshape(-1)[:3],
                               (0, 230 / 255, 0), atol=1 / 255)
    assert "GTV" in window.statusBar().currentMessage()
    assert "without contours skipped: Lost" in dialogs.texts("warning")[-1]


def test_drag_and_drop_opens_the_file(make_window, qtbot, small_ct) -> None:
    window = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(small_ct))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.image_layer is not None and not window.is_opening,
                    timeout=30_000)
    assert window.image_layer.name == "small_ct"


def test_the_empty_mask_made_at_open_is_no_unsaved_change(make_window, dialogs, qtbot,
                                                          small_ct) -> None:
    """The image's mask is made, empty, when it opens (so Segment does not build it inside
    the click): the layers, the actions and the close protocol treat it as nothing yet."""
    window = make_window()
    window.brush_spin.setValue(7)
    window.open_path(small_ct)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.mask_layer is not None)
    mask, image = window.mask_layer, window.image_layer
    assert [layer.name for layer in window.viewer.layers] == ["small_ct", "small_ct mask"]
    assert window.viewer.layers.selection.active is image  # the image's controls stay
    assert not mask.data.any() and not mask._undo_history
    assert mask.brush_size == 7 and window.brush_spin.value() == 7  # the toolbar's size
    assert not window.has_unsaved_changes() and not window.windowTitle().startswith("*")
    for action in (window.save_action, window.save_as_action, window.undo_action):
        assert not action.isEnabled()
    assert window.segment_action.isEnabled() and window.tool_actions["paint"].isEnabled()
    window.save_mask_as()  # nothing to save yet: says so, asks no path
    assert not dialogs.texts("save-dialog") and "no mask to save yet" in dialogs.texts()[-1]

    # Segment fills that layer; then it is the segmentation, unsaved
    window.widget.select_model(TINY, "tiny CMUNeXt (test)")
    window.segment_action.trigger()
    wait_idle(qtbot, window)
    assert window.mask_layer is mask and "Segmented 6 slice(s)" in window.state.status
    assert sum(layer.name.endswith("mask") for layer in window.viewer.layers) == 1
    assert window.has_unsaved_changes() and window.save_action.isEnabled()
    assert not mask._undo_history  # the model's output is no undo step

    # a fresh open of an image: closing asks nothing
    dialogs.answers["question"] = Button.Discard
    assert window.open_path(small_ct)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.mask_layer is not None and window.mask_layer is not mask)
    n = len(dialogs.texts("question"))
    assert window.close()
    assert len(dialogs.texts("question")) == n


def test_replacing_or_closing_with_unsaved_corrections_asks(make_window, dialogs, qtbot,
                                                            small_ct, tmp_path) -> None:
    window = make_window()
    window.open_path(small_ct)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.mask_layer is not None)  # made at open, empty
    mask = window.mask_layer
    assert mask.name == "small_ct mask" and mask.data.shape == (6, 48, 48)
    assert not mask.data.any() and tuple(mask.scale) == pytest.approx(SPACING_XYZ[::-1])
    window.tool_actions["paint"].trigger()  # the brush paints into that one
    assert window.mask_layer is mask and window.viewer.layers.selection.active is mask
    assert not window.has_unsaved_changes()  # empty: nothing to lose
    assert not window.save_action.isEnabled()
    mask.paint((2, 20, 20), 1)
    assert window.state.corrected_slices == [2] and window.has_unsaved_changes()
    assert window.save_action.isEnabled() and window.undo_action.isEnabled()

    # opening another image: Cancel keeps everything
    dialogs.answers["question"] = Button.Cancel
    assert not window.open_path(small_ct)
    assert window.mask_layer is mask and "1 corrected slice" in dialogs.texts("question")[-1]
    # closing: Cancel keeps the window open
    assert not window.close()
    assert window.isVisible() and not window._closed
    # closing: Save asks where, writes, then closes
    out = tmp_path / "closing_mask.nrrd"
    dialogs.answers["question"] = Button.Save
    dialogs.answers["save"] = str(out)
    assert window.close()
    assert window._closed and out.is_file()
    assert read_image(out).array[2, 20, 20] == 1


def test_closing_during_finetune_stops_it_cleanly(make_window, dialogs, qtbot, small_ct,
                                                  tmp_path) -> None:
    window = make_window()
    window.open_path(small_ct)
    wait_idle(qtbot, window)
    window.widget.select_model(TINY)
    window.segment("volume")
    wait_idle(qtbot, window)
    out = tmp_path / "kept.nii.gz"
    assert window.save_mask_to(str(out))
    wait_idle(qtbot, window)
    window.mask_layer.paint((3, 24, 24), 1)
    window.widget.steps_spin.setValue(100_000)
    ended: list[tuple[str, str]] = []
    window.state.job_finished.connect(lambda kind, how: ended.append((kind, how)))
    assert window.finetune()
    qtbot.wait(300)

    # "No": the window stays and training goes on (nothing asked it to stop)
    dialogs.answers["question"] = Button.No
    assert not window.close()
    assert "fine-tune is running" in dialogs.texts("question")[-1]
    qtbot.wait(500)
    assert window.is_busy and ended == []
    # "Yes" to stopping, then Discard the unsaved edit: the job stops, nothing half-saved
    dialogs.answers["question"] = [Button.Yes, Button.Discard]
    assert window.close()
    assert window._closed and ended == [("fine-tune", "cancelled")] and not window.is_busy
    assert ModelStore().versions() == []  # a stopped fine-tune saves no version
    assert read_image(out).spatial_shape == (6, 48, 48)  # the saved file is untouched


def test_settings_are_remembered(make_window, dialogs, qtbot, small_ct) -> None:
    window = make_window()
    assert window.widget.select_device("cpu")
    window.brush_spin.setValue(7)
    window.open_path(small_ct)
    wait_idle(qtbot, window)
    window.set_window_preset("bone")
    window.resize(1100, 760)
    window.layers_dock.hide()
    qtbot.wait(50)
    assert window.close()

    again = make_window()
    assert again.state.device_arg == "cpu"
    assert again.brush_spin.value() == 7
    assert again.settings.recent[0] == str(small_ct.resolve())
    assert again.settings.last_folder == str(small_ct.parent)
    assert (again.width(), again.height()) == (1100, 760)
    assert not again.layers_dock.isVisible()
    again.open_path(small_ct)
    wait_idle(qtbot, again)
    assert again.state.window_preset == "bone"  # the remembered window preset


def test_actions_have_the_usual_shortcuts(make_window) -> None:
    window = make_window(show=False)
    assert window.undo_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Undo)
    assert QKeySequence("Ctrl+Shift+Z") in window.redo_action.shortcuts()
    assert window.save_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Save)
    assert window.open_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    assert [window.tool_actions[m].shortcut().toString() for m in ("paint", "erase", "fill")] \
        == ["B", "E", "F"]
    assert window.cancel_action.shortcut().toString() == "Esc"
    # nothing open: editing and engine actions are off, opening is on
    assert not window.segment_action.isEnabled() and not window.cancel_action.isEnabled()
    assert not window.tool_actions["paint"].isEnabled() and window.open_action.isEnabled()


def test_about_shows_versions_and_the_model_card(make_window, qtbot, tmp_path) -> None:
    from llm4seg_app.about import default_model_card

    window = make_window()
    window.about_action.trigger()
    dialog = window._about
    qtbot.waitExposed(dialog)
    text = dialog.text()
    assert "not for diagnosis" in text
    assert "napari" in text and "PyTorch" in text and "Device" in text
    assert "Model versions" in text and str(ModelStore().root) in text
    card = dialog.info.card
    if not card.shipped:  # as long as no trained default model ships, About says so
        assert "No trained default model ships" in text
    dialog.close()

    # a shipped checkpoint with a card next to it: the card is shown, as written
    res = tmp_path / "resources"
    (res / "models").mkdir(parents=True)
    assert not default_model_card(res).shipped
    (res / "models" / "default.safetensors").write_bytes(b"not really weights")
    (res / "models" / "default.md").write_text("# Card\nIntended use: research and demo.\n")
    card = default_model_card(res)
    assert card.shipped and "cannot be read" in card.summary
    assert card.card_text.startswith("# Card")


def test_command_line(monkeypatch, qtbot, dialogs, settings_file, small_ct) -> None:
    from qtpy.QtCore import QSettings
    from qtpy.QtWidgets import QApplication

    import llm4seg_app.main as app_main
    from llm4seg_app.window import MainWindow

    assert app_main.main([str(small_ct.parent / "nowhere.nii.gz")]) == 2
    with monkeypatch.context() as env:
        for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
            env.delenv(name, raising=False)
        assert not app_main.has_display()
        assert app_main.main([str(small_ct)]) == 2  # no display: a message, not a crash

    # llm4seg-app PATH: the window opens PATH
    windows: list[MainWindow] = []
    original_init = MainWindow.__init__

    def init(self, settings=None, parent=None):
        original_init(self, QSettings(str(settings_file), QSettings.Format.IniFormat), parent)
        windows.append(self)

    monkeypatch.setattr(MainWindow, "__init__", init)
    monkeypatch.setattr(QApplication, "exec", lambda self: 0)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main() installs its own
    assert app_main.main([str(small_ct)]) == 0
    (window,) = windows
    qtbot.waitUntil(lambda: window.image_layer is not None and not window.is_opening,
                    timeout=30_000)
    assert window.image_layer.name == "small_ct"
    window.close()

    # python -m llm4seg_app --version (no Qt needed)
    out = subprocess.run([sys.executable, "-m", "llm4seg_app", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("llm4seg-app ")


def test_ultrasound_picture_segment_correct_save(make_window, dialogs, qtbot, tmp_path) -> None:
    import SimpleITK as sitk

    yy, xx = np.mgrid[:64, :80]
    picture = (60 + 120 * (((yy - 30) ** 2 + (xx - 40) ** 2) < 15 ** 2)).astype(np.uint8)
    path = tmp_path / "us" / "scan.png"
    path.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(path))
    window = make_window()
    window.open_path(path)
    wait_idle(qtbot, window)
    image = window.image_layer
    assert image is not None and image.data.shape == (64, 80)
    window.widget.select_model(TINY)
    window.segment_action.trigger()
    wait_idle(qtbot, window)
    mask = window.mask_layer
    assert mask.data.shape == (64, 80)
    window.tool_actions["paint"].trigger()
    mask.paint((30, 40), 1)
    assert window.state.corrected_slices == [0]
    dialogs.answers["save"] = str(tmp_path / "us" / "scan_mask")  # no suffix: PNG for a picture
    window.save_as_action.trigger()
    wait_idle(qtbot, window)
    saved = tmp_path / "us" / "scan_mask.png"
    assert window.saved_path() == str(saved) and saved.is_file()
    back = read_image(saved)
    assert back.spatial_shape == (64, 80)
    assert back.array[30, 40] > 0 and not window.has_unsaved_changes()


def test_a_picture_segments_with_its_suggested_model_in_one_click(make_window, qtbot, tmp_path,
                                                                   monkeypatch) -> None:
    import SimpleITK as sitk

    zoo = write_tiny_zoo(tmp_path / "zoo", TINY)  # tiny shipped models: default, breast-us, polyp
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [zoo])
    yy, xx = np.mgrid[:64, :80]
    picture = (60 + 120 * (((yy - 30) ** 2 + (xx - 40) ** 2) < 15 ** 2)).astype(np.uint8)
    path = tmp_path / "us" / "breast_scan.png"
    path.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(path))
    window = make_window()
    window.open_path(path)
    wait_idle(qtbot, window)
    state = window.state
    assert state.model_arg == "breast-us"
    assert window.model_label.text() == "Model: breast-us: shipped"
    assert ("suggested for this image: breast-us (ultrasound picture, name mentions 'breast')"
            in window.model_label.toolTip())
    assert "Segment (Ctrl+R) uses the breast-us model" in window.statusBar().currentMessage()

    window.segment_action.trigger()  # the one click
    wait_idle(qtbot, window)
    message = window.statusBar().currentMessage()
    assert message.startswith("Segmented 1 slice(s) with the breast-us model "
                              "(breast-us.safetensors)")
    mask = window.mask_layer
    assert list(mask.features["name"]) == ["background", "lesion"]
    assert mask.colormap.map(np.array([1]))[0, :3] == pytest.approx([0xE6 / 255, 0x19 / 255,
                                                                     0x4B / 255], abs=0.01)
