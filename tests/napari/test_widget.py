"""The LLM4Seg dock widget in a real napari viewer (run under Xvfb, QT_QPA_PLATFORM=xcb).

A tiny CMUNeXt spec keeps every job well under a second on a 2-core CPU; the
model store is a fresh folder per test (tests/conftest.py sets LLM4SEG_HOME).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Labels  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from llm4seg_core.store import ModelStore  # noqa: E402
from llm4seg_core.io import read_image  # noqa: E402
from llm4seg_core.preprocess import window_limits  # noqa: E402
from llm4seg_napari._corrections import CORRECTED_KEY, slices_of_atoms  # noqa: E402
from llm4seg_napari.geometry import VOLUME_KEY  # noqa: E402
from llm4seg_napari.widget import LLM4SegWidget  # noqa: E402
from tests.helpers import write_tiny_zoo  # noqa: E402

pytestmark = pytest.mark.gui

TINY = "cmunext,image_size=64,dims=8:8:16:16:32"
SCALE = (2.5, 0.8, 0.8)
TRANSLATE = (10.0, -5.0, 3.0)
JOB_TIMEOUT_MS = 60_000


def _synthetic(n: int = 12, size: int = 64) -> np.ndarray:
    """A CT-like volume (HU): air around a soft-tissue body with a dense disc in it."""
    rng = np.random.default_rng(0)
    vol = np.full((n, size, size), -1000.0, np.float32)
    yy, xx = np.mgrid[:size, :size]
    body = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    disc = (yy - size / 2) ** 2 + (xx - size / 2 + 6) ** 2 < (size * 0.15) ** 2
    vol[:, body] = 40.0
    vol[:, disc] = 300.0
    vol += rng.normal(0, 10, vol.shape).astype(np.float32)
    return vol.astype(np.int16)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: the tiny model gains nothing from more, and OpenMP threads that
    spin against another busy process on a 2-core machine make it ~100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    image = viewer.add_image(_synthetic(), name="ct", scale=SCALE, translate=TRANSLATE,
                             contrast_limits=(-1000, 1000))
    widget.select_model(TINY, "tiny CMUNeXt (test)")
    yield viewer, widget, image
    if widget.state.is_busy:
        widget.cancel_job()
        qtbot.waitUntil(lambda: not widget.state.is_busy, timeout=JOB_TIMEOUT_MS)


def _wait(qtbot, widget: LLM4SegWidget) -> None:
    qtbot.waitUntil(lambda: not widget.state.is_busy, timeout=JOB_TIMEOUT_MS)


def _buttons_enabled(widget: LLM4SegWidget) -> bool:
    return all(b.isEnabled() for b in (widget.segment_button, widget.finetune_button,
                                       widget.save_button, widget.model_combo))


def _messages(start: int) -> list[str]:
    return [str(n.message) for n in notification_manager.records[start:]]


def test_manifest_opens_the_dock_widget(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("llm4seg-napari", "LLM4Seg")
    assert isinstance(widget, LLM4SegWidget)
    assert widget.device_combo.itemText(0).startswith("auto (")
    assert widget.state.device_arg == "auto"
    labels = [widget.model_combo.itemText(i) for i in range(widget.model_combo.count())]
    assert labels[0].startswith("default")
    assert any(t.startswith("untrained") for t in labels)


def test_window_presets_change_only_contrast(setup, qtbot) -> None:
    viewer, widget, image = setup
    qtbot.waitUntil(lambda: widget.state.mask is not None)  # the empty mask, made ahead
    before = image.data.copy()
    widget.window_combo.setCurrentText("bone")
    assert tuple(image.contrast_limits) == pytest.approx(window_limits("bone"))
    widget.window_combo.setCurrentText("lung")
    assert tuple(image.contrast_limits) == pytest.approx(window_limits("lung"))
    np.testing.assert_array_equal(image.data, before)
    assert [layer.name for layer in viewer.layers] == ["ct", "ct mask"]  # no layer made
    assert not np.any(widget.state.mask.data)  # by a display change


def test_segment_correct_finetune_save(setup, qtbot, tmp_path: Path) -> None:
    viewer, widget, image = setup
    assert widget.segment()
    assert widget.state.is_busy and not widget.segment_button.isEnabled()
    _wait(qtbot, widget)
    assert _buttons_enabled(widget)

    mask = widget.state.mask
    assert isinstance(mask, Labels) and mask.name == "ct mask"
    assert mask.data.shape == image.data.shape and mask.data.dtype == np.uint8
    assert tuple(mask.scale) == pytest.approx(SCALE)
    assert tuple(mask.translate) == pytest.approx(TRANSLATE)
    np.testing.assert_allclose(mask.affine.affine_matrix, image.affine.affine_matrix)
    assert "Segmented 12 slice(s)" in widget.state.status

    # corrections: brush, fill and polygon edits mark their slices
    mask.paint((3, 30, 30), 2)
    assert widget.state.corrected_slices == [3]
    assert [widget.corrections_list.item(i).text() for i in range(widget.corrections_list.count())] == ["slice 3"]
    mask.fill((5, 2, 2), 3)
    mask.paint_polygon(np.array([[8, 10, 10], [8, 10, 30], [8, 30, 20]]), 4)
    assert widget.state.corrected_slices == [3, 5, 8]
    assert mask.metadata[CORRECTED_KEY] == [3, 5, 8]
    corrected = {z: mask.data[z].copy() for z in (3, 5, 8)}

    # an uncorrected slice with junk in it: Segment overwrites it, never the corrected ones
    mask.data[1] = 9
    widget.scope_volume.setChecked(True)
    assert widget.segment()
    _wait(qtbot, widget)
    for z, before in corrected.items():
        np.testing.assert_array_equal(mask.data[z], before)
    assert not np.any(mask.data[1] == 9)
    assert "3 corrected slice(s) kept" in widget.state.status

    # current slice only, corrected: nothing happens unless overwrite is ticked
    viewer.dims.set_point(0, TRANSLATE[0] + 3 * SCALE[0])
    assert not widget.segment(scope="slice")
    widget.overwrite_check.setChecked(True)
    assert widget.segment(scope="slice")
    _wait(qtbot, widget)
    assert widget.state.corrected_slices == [5, 8]  # overwritten: no longer a correction
    widget.overwrite_check.setChecked(False)

    # unmark a selected slice; mark the current one
    widget.corrections_list.item(1).setSelected(True)  # slice 8
    widget.unmark_button.click()
    assert widget.state.corrected_slices == [5]
    widget.mark_button.click()
    assert widget.state.corrected_slices == [3, 5]

    # fine-tune: a new version in the store, selected in the picker
    widget.steps_spin.setValue(2)
    assert not widget.segment_again_button.isEnabled()
    assert widget.finetune()
    _wait(qtbot, widget)
    versions = ModelStore().versions()
    assert len(versions) == 1
    info = versions[0]
    assert widget.state.model_arg == info.name
    assert info.data["slices"] == [3, 5] and info.parent is None  # from an untrained spec
    assert "step 2/2" in widget.loss_label.text()
    # the live plot got one point per step (2 steps: every step is reported)
    curve = widget.plot.series()
    assert curve["step"] == [1, 2]
    assert all(0.0 <= d <= 1.0 for d in curve["dice"]) and all(v > 0 for v in curve["loss"])
    assert widget.segment_again_button.isEnabled()
    widget.segment_again_button.click()
    _wait(qtbot, widget)
    assert info.name in widget.state.status

    # a second fine-tune records its parent
    assert widget.finetune()
    _wait(qtbot, widget)
    newest = ModelStore().versions()[-1]
    assert newest.parent == info.name and widget.state.model_arg == newest.name

    # save through the plugin writer, in the image's geometry
    out = tmp_path / "ct_mask.nii.gz"
    assert widget.save_mask(str(out))
    _wait(qtbot, widget)
    back = read_image(out)
    assert back.spatial_shape == image.data.shape
    assert back.spacing == pytest.approx(SCALE[::-1], abs=1e-4)
    assert back.origin == pytest.approx(TRANSLATE[::-1], abs=1e-4)
    np.testing.assert_array_equal(back.array, mask.data)


def test_event_loop_runs_during_segment(setup, qtbot, monkeypatch) -> None:
    viewer, widget, image = setup
    from llm4seg_core.inference import Segmenter

    original = Segmenter.segment

    def slow(self, *args, **kwargs):
        time.sleep(0.5)  # long enough to see the Qt loop tick (or not)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", slow)
    ticks = {"busy": 0}

    def tick() -> None:
        if widget.state.is_busy:
            ticks["busy"] += 1

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    try:
        t0 = time.perf_counter()
        assert widget.segment()
        _wait(qtbot, widget)
        elapsed = time.perf_counter() - t0
    finally:
        timer.stop()
    assert elapsed >= 0.5
    # a blocked loop ticks at most once; a free one about elapsed / 10 ms times
    assert ticks["busy"] >= 10, ticks


def test_errors_notify_and_keep_the_widget_usable(setup, qtbot) -> None:
    viewer, widget, image = setup
    start = len(notification_manager.records)
    assert not widget.finetune()  # no mask, no corrections
    assert any("no corrected slices" in m for m in _messages(start))
    assert _buttons_enabled(widget) and not widget.state.is_busy

    assert widget.segment()
    _wait(qtbot, widget)
    start = len(notification_manager.records)
    assert not widget.finetune()  # a mask, but nothing corrected yet
    assert any("no corrected slices" in m for m in _messages(start))
    assert _buttons_enabled(widget)

    widget.select_model("no-such-version")
    start = len(notification_manager.records)
    assert widget.segment()
    _wait(qtbot, widget)
    assert any("unknown model 'no-such-version'" in m for m in _messages(start))
    assert _buttons_enabled(widget)
    assert "failed" in widget.state.status


def test_closing_the_viewer_cancels_the_job(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg")
    viewer.add_image(_synthetic(), name="ct")
    widget.select_model(TINY)
    widget.segment()
    qtbot.waitUntil(lambda: not widget.state.is_busy, timeout=JOB_TIMEOUT_MS)
    widget.state.mask.paint((2, 30, 30), 1)
    widget.steps_spin.setValue(100_000)
    assert widget.finetune()
    runner = widget.runner
    qtbot.wait(200)
    viewer.close()
    assert runner.cancel_requested
    qtbot.waitUntil(lambda: not runner.is_busy, timeout=JOB_TIMEOUT_MS)
    assert ModelStore().versions() == []  # a cancelled fine-tune saves nothing


def test_slices_of_atoms() -> None:
    from napari.layers.labels.labels import _MaskedPaintAtom

    box = (slice(2, 5), slice(0, 4), slice(0, 4))
    mask = np.zeros((3, 4, 4), bool)
    mask[0, 1, 1] = mask[2, 0, 0] = True
    assert slices_of_atoms([_MaskedPaintAtom(box, mask, np.zeros(2), 1)], 3) == {2, 4}
    assert slices_of_atoms([_MaskedPaintAtom(box, None, np.zeros((3, 4, 4)), 1)], 3) == {2, 3, 4}
    fancy = ((np.array([7, 7, 9]), np.array([0, 1, 2]), np.array([0, 1, 2])), np.zeros(3), 1)
    assert slices_of_atoms([fancy], 3) == {7, 9}
    assert slices_of_atoms([fancy], 2) == {0}
    assert slices_of_atoms([], 3) == set()


def test_2d_rgb_picture(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg")
    rgb = np.zeros((48, 40, 3), np.uint8)
    rgb[10:30, 8:25] = (200, 120, 90)
    viewer.add_image(rgb, name="lesion", rgb=True)
    assert not widget.window_combo.isEnabled()  # CT windows make no sense for RGB
    widget.select_model(TINY)
    assert widget.segment(scope="slice")
    _wait(qtbot, widget)
    mask = widget.state.mask
    assert mask.data.shape == (48, 40)
    mask.paint((20, 20), 1)
    assert widget.state.corrected_slices == [0]
    assert not widget.segment()  # the only slice is corrected


def _session_files(image) -> tuple[Path, Path]:
    from llm4seg_napari._autosave import session_target

    folder, _info = session_target(image)
    return folder / "corrections.npz", folder / "session.json"


def test_corrections_autosave_and_restore(setup, make_napari_viewer, qtbot) -> None:
    import json
    import os

    viewer, widget, image = setup
    assert not widget.restore_button.isEnabled()  # nothing saved for this image yet
    assert widget.segment()
    _wait(qtbot, widget)
    mask = widget.state.mask
    mask.paint((3, 30, 30), 2)
    mask.fill((7, 2, 2), 3)
    npz_path, json_path = _session_files(image)
    # under $LLM4SEG_HOME/sessions (the fixture's folder), debounced
    assert npz_path.parent.parent == Path(os.environ["LLM4SEG_HOME"]).resolve() / "sessions"

    def saved_zs() -> list[int]:
        try:
            return json.loads(json_path.read_text())["z"]
        except (OSError, ValueError, KeyError):
            return []

    qtbot.waitUntil(lambda: saved_zs() == [3, 7], timeout=5_000)
    with np.load(npz_path) as npz:
        assert list(npz["z"]) == [3, 7]
        np.testing.assert_array_equal(npz["labels"], mask.data[[3, 7]])
    info = json.loads(json_path.read_text())
    assert info["shape"] == list(image.data.shape) and info["image"] == "ct"
    assert info["scale"] == pytest.approx(SCALE) and info["translate"] == pytest.approx(TRANSLATE)
    assert not [p for p in npz_path.parent.iterdir() if p.name.endswith(".tmp")]
    # a second edit on an already corrected slice is autosaved too
    mask.paint((3, 10, 10), 4)
    qtbot.waitUntil(lambda: bool(np.load(npz_path)["labels"][0][10, 10] == 4), timeout=5_000)
    saved = {z: mask.data[z].copy() for z in (3, 7)}

    # "after a crash": a new viewer on the same image offers the saved slices back
    viewer2 = make_napari_viewer()
    widget2 = LLM4SegWidget(viewer2)
    viewer2.window.add_dock_widget(widget2, name="LLM4Seg", area="right")
    image2 = viewer2.add_image(image.data.copy(), name="ct", scale=SCALE, translate=TRANSLATE)
    assert widget2.restore_button.isEnabled() and "2 slice" in widget2.restore_button.text()
    mask2 = viewer2.add_labels(np.zeros(image2.data.shape, np.uint8), name="ct mask")
    assert widget2.state.mask is mask2
    # an edit here before restoring: its slice is the person's, the other saved one stays saved
    mask2.paint((7, 40, 40), 5)
    qtbot.waitUntil(lambda: saved_zs() == [3, 7] and bool(
        np.load(npz_path)["labels"][1][40, 40] == 5), timeout=5_000)
    assert widget2.restore_button.isEnabled() and "1 slice" in widget2.restore_button.text()
    mine = mask2.data[7].copy()

    start = len(notification_manager.records)
    widget2.restore_button.click()
    np.testing.assert_array_equal(mask2.data[3], saved[3])
    np.testing.assert_array_equal(mask2.data[7], mine)  # never silently overwritten
    assert widget2.state.corrected_slices == [3, 7]
    assert mask2.metadata[CORRECTED_KEY] == [3, 7]
    messages = [str(r.message) for r in notification_manager.records[start:]]
    assert any("restored 1" in m and "skipped 1" in m for m in messages), messages
    assert not widget2.restore_button.isEnabled()


def test_restore_creates_the_mask_layer(setup, make_napari_viewer, qtbot) -> None:
    viewer, widget, image = setup
    labels = np.zeros(image.data.shape, np.uint8)
    labels[4, 20:30, 20:30] = 1
    viewer.add_labels(labels, name="ct mask")
    widget.mark_button.click()  # the shown slice
    z = widget.state.corrected_slices[0]
    widget.state.mask.paint((4, 5, 5), 2)
    npz_path, _ = _session_files(image)
    qtbot.waitUntil(lambda: npz_path.exists() and sorted(np.load(npz_path)["z"]) == sorted({z, 4}),
                    timeout=5_000)

    viewer2 = make_napari_viewer()
    widget2 = LLM4SegWidget(viewer2)
    viewer2.add_image(image.data.copy(), name="ct")
    assert widget2.state.mask is None and widget2.restore_button.isEnabled()
    assert widget2.restore_corrections() == len({z, 4})
    mask2 = widget2.state.mask
    assert isinstance(mask2, Labels) and mask2.data.shape == image.data.shape
    np.testing.assert_array_equal(mask2.data[4], widget.state.mask.data[4])
    assert widget2.state.corrected_slices == sorted({z, 4})


def test_series_picker_opens_another_series(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from llm4seg_napari._reader import read_layers

    from tests.helpers import write_ct_series

    from .test_reader_writer import SERIES_A, SERIES_B

    write_ct_series(tmp_path, SERIES_A, 5, "Chest 2.5 mm", dz=2.5)
    write_ct_series(tmp_path / "sub", SERIES_B, 3, "Axial 5 mm", dz=5.0)
    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    assert not widget.series_row.isVisibleTo(widget)  # no DICOM folder yet
    ((data, kwargs, _),) = read_layers(str(tmp_path))
    first = viewer.add_image(data, **kwargs)
    assert widget.series_row.isVisibleTo(widget)
    assert widget.series_combo.count() == 2
    assert widget.series_combo.itemData(0) == SERIES_A  # the one shown comes first
    widget.series_combo.setCurrentIndex(1)
    assert widget.open_series()
    _wait(qtbot, widget)
    new = [layer for layer in viewer.layers if not isinstance(layer, Labels)][-1]
    assert new is not first and new.data.shape == (3, 128, 128)
    assert new.scale[0] == pytest.approx(5.0)
    assert widget.state.image is new
    assert new.metadata[VOLUME_KEY]["meta"]["series_uid"] == SERIES_B


def _segment_gives(monkeypatch, pattern: np.ndarray) -> None:
    """Segment jobs write ``pattern`` into the slices they do (no model runs)."""
    import llm4seg_napari.widget as widget_module
    from llm4seg_napari._tasks import SegmentResult

    def fake_job(get_segmenter, volume, todo, buffer, callbacks):
        seg = get_segmenter()
        for z in todo:
            buffer[z] = pattern[z]
        callbacks.progress(len(todo), len(todo))  # the slices done so far are final
        return SegmentResult(seg, list(todo), 0.01)

    monkeypatch.setattr(widget_module, "segment_job", fake_job)


def test_the_mask_is_made_ahead_and_segment_fills_it(setup, qtbot, monkeypatch) -> None:
    """The empty mask is there once the image is (not built inside the Segment click)."""
    viewer, widget, image = setup
    state = widget.state
    qtbot.waitUntil(lambda: state.mask is not None)
    mask = state.mask
    assert [layer.name for layer in viewer.layers] == ["ct", "ct mask"]
    assert mask.data.shape == image.data.shape and mask.data.dtype == np.uint8
    assert not np.any(mask.data) and not mask._undo_history
    assert tuple(mask.scale) == pytest.approx(SCALE)
    assert tuple(mask.translate) == pytest.approx(TRANSLATE)
    assert viewer.layers.selection.active is image  # the image's controls stay shown
    assert widget.corrections_label.text().startswith("No corrected slices yet")
    start = len(notification_manager.records)
    widget.save_button.click()  # nothing in it: nothing to save
    assert any("no mask to save yet" in m for m in _messages(start))

    # one per image: going back and forth between images makes no more
    other = viewer.add_image(_synthetic(), name="ct2")
    assert state.image is image  # the current image stays: no mask for ct2 yet
    widget.image_combo.setCurrentText("ct2")
    qtbot.waitUntil(lambda: state.image is other and state.mask is not None)
    for name in ("ct", "ct2", "ct"):
        widget.image_combo.setCurrentText(name)
        qtbot.wait(20)
    assert sorted(layer.name for layer in viewer.layers) == ["ct", "ct mask", "ct2", "ct2 mask"]
    assert state.mask is mask

    # a stroke before Segment is a correction; Segment fills that layer around it
    mask.paint((3, 30, 30), 2)
    assert state.corrected_slices == [3]
    history = len(mask._undo_history)
    _segment_gives(monkeypatch, np.ones(image.data.shape, np.uint8))
    assert widget.segment()
    _wait(qtbot, widget)
    assert state.mask is mask and viewer.layers.selection.active is mask
    assert sum(isinstance(layer, Labels) for layer in viewer.layers) == 2
    assert mask.data[3, 30, 30] == 2 and not np.any(mask.data[3] == 1)  # kept as painted
    assert np.all(np.delete(mask.data, 3, axis=0) == 1)
    assert len(mask._undo_history) == history  # the model's output is no undo step
    assert state.corrected_slices == [3]


def test_an_unused_mask_made_ahead_goes_with_its_image(setup, qtbot) -> None:
    viewer, widget, image = setup
    state = widget.state
    qtbot.waitUntil(lambda: state.mask is not None)
    image.name = "ct renamed"  # the empty mask follows the name
    qtbot.waitUntil(lambda: state.mask is not None and state.mask.name == "ct renamed mask")
    assert [layer.name for layer in viewer.layers] == ["ct renamed", "ct renamed mask"]
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: len(viewer.layers) == 0)

    # one with a stroke in it stays when its image goes
    other = viewer.add_image(_synthetic(), name="b")
    qtbot.waitUntil(lambda: state.mask is not None)
    state.mask.paint((2, 10, 10), 1)
    viewer.layers.remove(other)
    qtbot.wait(50)
    assert [layer.name for layer in viewer.layers] == ["b mask"]

    # a mask the person deleted is not made again for that image
    viewer.add_image(_synthetic(), name="c")
    qtbot.waitUntil(lambda: "c mask" in viewer.layers)
    viewer.layers.remove("c mask")
    qtbot.wait(50)
    assert "c mask" not in viewer.layers and state.mask is None
    assert widget.segment()  # Segment makes it then
    _wait(qtbot, widget)
    assert state.mask is not None and state.mask.name == "c mask"


def test_keep_what_continues_my_corrections(setup, qtbot, monkeypatch) -> None:
    viewer, widget, image = setup
    pattern = np.zeros(image.data.shape, np.uint8)
    pattern[2:9, 20:30, 20:30] = 1  # the lesion the person will outline on slice 5
    pattern[0:2, 50:55, 50:55] = 1  # stray false positives, touching no correction
    pattern[10:12, 5:8, 5:8] = 1
    _segment_gives(monkeypatch, pattern)
    assert widget.segment()
    _wait(qtbot, widget)
    mask = widget.state.mask
    np.testing.assert_array_equal(mask.data, pattern)  # unticked: everything stays
    mask.paint((5, 25, 25), 1)
    assert widget.state.corrected_slices == [5]
    widget.keep_check.setChecked(True)
    assert widget.segment()
    _wait(qtbot, widget)
    assert not mask.data[0:2].any() and not mask.data[10:12].any()
    np.testing.assert_array_equal(mask.data[2:9, 20:30, 20:30], 1)
    assert "continues your corrections: 68 voxels in 2 region(s) removed" in widget.state.status
    assert widget.state.corrected_slices == [5]


def test_fill_between_corrected_slices(setup, qtbot, monkeypatch) -> None:
    _viewer, widget, image = setup
    pattern = np.zeros(image.data.shape, np.uint8)
    pattern[2:9, 22:28, 22:28] = 1  # the model under-segments the lesion between the outlines
    _segment_gives(monkeypatch, pattern)
    assert not widget.fill_check.isEnabled()  # only with "keep what continues my corrections"
    assert widget.segment()
    _wait(qtbot, widget)
    mask = widget.state.mask
    mask.brush_size = 15
    for z in (2, 8):  # the person outlines the whole lesion on two slices
        mask.paint((z, 25, 25), 1)
    assert widget.state.corrected_slices == [2, 8]
    outline = mask.data[2].copy()
    assert outline.sum() > 4 * 36
    widget.keep_check.setChecked(True)
    assert widget.fill_check.isEnabled() and widget.fill_check.isChecked()
    assert widget.segment()
    _wait(qtbot, widget)
    for z in range(3, 8):  # the same outline on both ends: the gap gets that outline
        np.testing.assert_array_equal(mask.data[z], outline)
    assert "filled in 1 gap(s) between corrected slices" in widget.state.status
    assert widget.state.corrected_slices == [2, 8]  # filled slices are model output, not corrections
    np.testing.assert_array_equal(mask.data[2], outline)
    widget.fill_check.setChecked(False)
    assert widget.segment()
    _wait(qtbot, widget)
    np.testing.assert_array_equal(mask.data[3:8], pattern[3:8])
    assert "gap" not in widget.state.status


def test_state_is_the_session(setup, qtbot) -> None:
    """What hosts such as the app use: WidgetState's properties and signals, the public methods."""
    viewer, widget, image = setup
    state = widget.state
    heard: dict[str, list] = {name: [] for name in (
        "job_started", "job_finished", "progress", "mask_changed", "corrections_changed",
        "model_changed", "device_changed", "window_changed", "status_changed")}
    qtbot.waitUntil(lambda: state.mask is not None)  # the image's mask, made ahead (empty)
    ahead = state.mask
    for name, calls in heard.items():
        getattr(state, name).connect(lambda *args, calls=calls: calls.append(args))
    assert state.image is image and ahead.name == "ct mask" and not state.is_busy
    assert state.model_arg == TINY and state.model_text == "tiny CMUNeXt (test)"
    assert [c.arg for c in state.model_choices][0] is None  # the default model comes first
    assert state.device_arg == "auto" and state.device_text.startswith("auto (")
    assert state.window_choices[0] == "as loaded" and state.window_enabled

    assert widget.segment()
    assert state.is_busy and state.kind == "segment"
    assert heard["job_started"] == [("segment",)]
    _wait(qtbot, widget)
    assert heard["job_finished"] == [("segment", "done")] and state.kind is None
    assert (12, 12) in heard["progress"] and heard["progress"][-1] == (0, 0)
    assert state.mask is ahead and heard["mask_changed"] == []  # Segment filled that one
    assert state.status.startswith("Segmented 12 slice(s)")
    assert widget.status_label.text() == state.status and heard["status_changed"]

    state.mask.paint((3, 30, 30), 2)
    assert heard["corrections_changed"][-1] == ([3],) and state.corrected_slices == [3]

    widget.select_window("bone")
    assert state.window_preset == "bone" and heard["window_changed"] == [("bone",)]
    assert tuple(image.contrast_limits) == pytest.approx(window_limits("bone"))
    assert widget.window_combo.currentText() == "bone"
    widget.select_window("no such window")
    assert state.window_preset == "bone" and widget.window_combo.currentText() == "bone"

    assert widget.select_device("cpu") and state.device_arg == "cpu"
    assert heard["device_changed"] == [("cpu",)] and widget.device_combo.currentText() == "cpu"
    assert not widget.select_device("no-such-device") and state.device_arg == "cpu"

    widget.model_combo.setCurrentIndex(0)  # a pick in the combo changes the state
    assert state.model_arg is None and heard["model_changed"][-1][0].startswith("default")
    widget.select_model(TINY)
    assert state.model_arg == TINY and widget.model_combo.currentText() == "tiny CMUNeXt (test)"

    saves: list[int] = []
    widget.set_save_handler(lambda: saves.append(1))
    widget.save_button.click()  # the host's Save As, not the widget's dialog
    assert saves == [1] and not state.is_busy


def test_job_runner_outcomes(qtbot) -> None:
    from llm4seg_core.errors import Cancelled, LLM4SegError
    from llm4seg_napari.jobs import JobRunner, Outcome

    runner = JobRunner()
    outcomes: list[Outcome] = []
    progress: list[tuple[int, int]] = []
    runner.finished.connect(outcomes.append)
    runner.progress.connect(lambda d, t: progress.append((d, t)))

    def counted(cb):
        for k in range(3):
            cb.progress(k + 1, 3)
        return 42

    assert runner.start("count", counted)
    assert runner.is_busy and runner.kind == "count"
    assert not runner.start("other", lambda cb: 0)  # one job at a time
    qtbot.waitUntil(lambda: not runner.is_busy, timeout=JOB_TIMEOUT_MS)
    assert outcomes[-1] == Outcome("count", 42) and outcomes[-1].how == "done"
    assert progress == [(1, 3), (2, 3), (3, 3)]

    def bad(cb):
        raise LLM4SegError("no such file")

    assert runner.start("open", bad)
    qtbot.waitUntil(lambda: not runner.is_busy, timeout=JOB_TIMEOUT_MS)
    assert outcomes[-1].how == "failed" and isinstance(outcomes[-1].error, LLM4SegError)
    assert "no such file" in outcomes[-1].trace

    def until_cancelled(cb):
        while not cb.cancelled():
            time.sleep(0.01)
        raise Cancelled("stopped")

    n = len(outcomes)
    assert runner.start("wait", until_cancelled)
    qtbot.wait(50)  # the last worker's end arrives now: it must not end this job
    assert runner.is_busy and runner.kind == "wait" and len(outcomes) == n
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.is_busy, timeout=JOB_TIMEOUT_MS)
    assert outcomes[-1].how == "cancelled" and runner.cancel_requested


def test_mask_layer_helpers(make_napari_viewer, tmp_path: Path) -> None:
    from llm4seg_napari import make_mask_layer, mask_name, suggested_mask_path
    from llm4seg_napari.masks import find_mask

    viewer = make_napari_viewer()
    source = tmp_path / "ct.nii.gz"
    image = viewer.add_image(_synthetic(), name="ct", scale=SCALE, translate=TRANSLATE,
                             metadata={VOLUME_KEY: {"source": str(source), "kind": "volume"}})
    assert find_mask(viewer, image) is None
    mask = make_mask_layer(viewer, image, image.data.shape)
    assert mask.name == mask_name("ct") == "ct mask" and find_mask(viewer, image) is mask
    assert mask.data.dtype == np.uint8 and not mask.data.any()
    assert tuple(mask.scale) == pytest.approx(SCALE)
    assert tuple(mask.translate) == pytest.approx(TRANSLATE)
    assert mask.metadata[VOLUME_KEY] == image.metadata[VOLUME_KEY]
    assert mask.metadata[VOLUME_KEY] is not image.metadata[VOLUME_KEY]  # a copy
    assert suggested_mask_path(image) == str(tmp_path / "ct_mask.nii.gz")
    assert suggested_mask_path(mask) == suggested_mask_path(image)
    picture = viewer.add_image(np.zeros((8, 9), np.uint8), name="a b",
                               metadata={VOLUME_KEY: {"source": "", "kind": "image2d"}})
    assert suggested_mask_path(picture) == str(Path.home() / "a_b_mask.png")


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch) -> Path:
    """Shipped models of the tiny spec: default, breast-us (grey pictures), polyp (colour)."""
    folder = write_tiny_zoo(tmp_path / "zoo", TINY)
    (folder / "broken.safetensors").write_bytes(b"not a checkpoint")  # must not get in the way
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [folder])
    return folder


def _colour_picture() -> np.ndarray:
    rgb = np.zeros((40, 48, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[10:30, 12:30] = (230, 120, 90)
    return rgb


def test_the_model_picker_preselects_the_suggested_model(make_napari_viewer, tiny_zoo) -> None:
    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg")
    state = widget.state
    assert state.suggestion is None and not widget.suggest_label.isVisibleTo(widget)

    grey = viewer.add_image(np.full((40, 48), 90, np.uint8), name="benign (1)")
    assert state.image is grey and state.suggestion.task == "breast-us"
    assert state.model_arg == "breast-us" and widget.model_combo.currentText().startswith(
        "breast-us")
    assert widget.suggest_label.isVisibleTo(widget)
    assert widget.suggest_label.text() == ("Suggested for this image: ultrasound picture; a guess, "
                                           "no hint in the name or DICOM header.")
    assert "1. breast-us" in widget.suggest_label.toolTip()

    viewer.add_image(_colour_picture(), name="cju0qkwl35piu0993l0dewei2", rgb=True)
    widget.image_combo.setCurrentText("cju0qkwl35piu0993l0dewei2")
    assert state.suggestion.task == "polyp" and state.model_arg == "polyp"
    # the person's choice for an image is never overridden, also when they come back to it
    widget.model_combo.setCurrentIndex(0)
    assert state.model_arg is None
    assert "polyp" in widget.suggest_label.text() and "you chose another" in \
        widget.suggest_label.text()
    widget.image_combo.setCurrentText("benign (1)")
    assert state.model_arg == "breast-us"  # no choice made for this one: its suggestion
    widget.image_combo.setCurrentText("cju0qkwl35piu0993l0dewei2")
    assert state.model_arg is None
    widget.refresh_models()
    assert state.model_arg is None

    viewer.add_image(_synthetic(), name="ct")  # a volume: the general model
    widget.image_combo.setCurrentText("ct")
    assert state.suggestion.task == "default" and state.model_arg is None
    assert "broken" not in [s.task for s in state.suggestions]  # unreadable: skipped


def test_segment_gives_the_mask_the_models_label_names_and_colours(make_napari_viewer, qtbot,
                                                                   tiny_zoo) -> None:
    from napari.utils.colormaps import DirectLabelColormap

    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg")
    viewer.add_image(_colour_picture(), name="kvasir frame", rgb=True)
    state = widget.state
    assert state.model_arg == "polyp" and "name mentions 'kvasir'" in state.suggestion.reason
    assert widget.segment()
    _wait(qtbot, widget)
    assert "with the polyp model (polyp.safetensors)" in state.status
    mask = state.mask
    assert isinstance(mask.colormap, DirectLabelColormap)
    colours = mask.colormap.map(np.array([0, 1, 2, 7]))
    np.testing.assert_allclose(colours[1:3, :3], [[0x3C / 255, 0xB4 / 255, 0x4B / 255],
                                                  [0x43 / 255, 0x63 / 255, 0xD8 / 255]], atol=0.01)
    assert colours[0, 3] == 0 and colours[3, 3] == 1  # background clear; a hand-painted 7 shows
    assert list(mask.features["name"]) == ["background", "polyp", "stalk"]
    mask.data[:] = 0
    mask.data[20, 20] = 2
    assert "name: stalk" in mask.get_status((20, 20))["value"]
    assert "name: background" in mask.get_status((1, 1))["value"]

    # an untrained spec names no labels: a new mask keeps napari's colours
    widget.select_model(TINY)
    viewer.layers.remove(mask)
    assert widget.segment()
    _wait(qtbot, widget)
    assert not isinstance(state.mask.colormap, DirectLabelColormap)
    assert state.mask.features.shape[1] == 0


def test_dicom_seg_save_names_the_model_and_a_fallback_model_is_said(
        make_napari_viewer, qtbot, tmp_path: Path, monkeypatch) -> None:
    """Segment says when the model used is not the one asked for (a damaged current version
    passed over), once per loaded model; the mask remembers that model, and Save writes it
    as the algorithm of a DICOM-SEG that reads back to the same voxels."""
    import highdicom as hd

    import llm4seg_napari.widget as widget_module
    from llm4seg_core.io import read_mask
    from llm4seg_napari._reader import read_layers
    from llm4seg_napari.masks import MODEL_KEY

    from tests.helpers import write_ct_series

    from .test_reader_writer import SERIES_A

    folder = tmp_path / "ct"
    write_ct_series(folder, SERIES_A, 5, "Chest 2.5 mm", dz=2.5)
    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    ((data, kwargs, _),) = read_layers(str(folder))
    viewer.add_image(data, **kwargs)
    widget.select_model(TINY, "tiny CMUNeXt (test)")
    pattern = np.zeros(data.shape, np.uint8)
    pattern[1:3, 20:60, 30:70] = 1
    _segment_gives(monkeypatch, pattern)
    real = widget_module.load_segmenter
    fallback = "the current liver version 'liver-3' is damaged; used 'liver-2' instead"

    def load(*args, **kwargs):
        seg = real(*args, **kwargs)
        seg.warning, seg.task = fallback, "liver"
        return seg

    monkeypatch.setattr(widget_module, "load_segmenter", load)
    start = len(notification_manager.records)
    assert widget.segment(scope="volume")
    _wait(qtbot, widget)
    state = widget.state
    assert f"WARNING: {fallback}" in state.status
    assert sum(fallback in m for m in _messages(start)) == 1
    model = state.mask.metadata[MODEL_KEY]
    assert model["task"] == "liver" and model["model"]
    assert widget.segment(scope="volume")  # the cached model: said in the status, not again
    _wait(qtbot, widget)
    assert f"WARNING: {fallback}" in state.status
    assert sum(fallback in m for m in _messages(start)) == 1

    out = tmp_path / "mask.dcm"
    assert widget.save_mask(str(out))
    _wait(qtbot, widget)
    np.testing.assert_array_equal(read_mask(out, reference=read_image(folder)), pattern)
    algo = hd.seg.segread(str(out)).SegmentSequence[0] \
        .SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "LLM4Seg" and "liver" in algo.AlgorithmVersion
