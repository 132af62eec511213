"""Prompted segmentation in the dock widget: clicks, boxes, supersede, undo, propagate
(in a real napari viewer, under Xvfb with QT_QPA_PLATFORM=xcb).

The prompt model is a tiny untrained one saved in the test's own model store as task
``prompt``; its head's bias is shifted so that its masks are mixed (an untrained net says
one thing everywhere). Its masks mean nothing, so the tests check that each slice holds
what the segmenter gives for those prompts, called directly, and that nothing else changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Points, Shapes  # noqa: E402
from napari.utils._proxies import ReadOnlyWrapper  # noqa: E402
from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402

from llm4seg_core.io import Volume  # noqa: E402
from llm4seg_core.prompts import Box, Point, SlicePrompts, propagate  # noqa: E402
from llm4seg_core.prompts.session import merge_object, merge_propagation  # noqa: E402
from llm4seg_napari._prompting import BOX_NAME, POINTS_NAME  # noqa: E402
from llm4seg_napari.widget import LLM4SegWidget  # noqa: E402

pytestmark = pytest.mark.gui

TINY_PROMPT = "prompt-cmunext,image_size=32,dims=8:8:16:16:32"
SCALE = (2.5, 0.8, 0.8)
TRANSLATE = (10.0, -5.0, 3.0)
TIMEOUT_MS = 60_000
GREEN, RED = (0.0, 1.0, 0.0, 1.0), (1.0, 0.0, 0.0, 1.0)


def _synthetic(n: int = 12, size: int = 48) -> np.ndarray:
    """A CT-like volume (HU): air around a soft-tissue body with a dense disc in it."""
    rng = np.random.default_rng(0)
    vol = np.full((n, size, size), -1000.0, np.float32)
    yy, xx = np.mgrid[:size, :size]
    vol[:, (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2] = 40.0
    vol[:, (yy - size / 2) ** 2 + (xx - size / 2 + 6) ** 2 < (size * 0.15) ** 2] = 300.0
    vol += rng.normal(0, 10, vol.shape).astype(np.float32)
    return vol.astype(np.int16)


def save_prompt_model(array: np.ndarray, z: int = 0) -> None:
    """A tiny prompt model in the test's model store (task ``prompt``), its masks mixed on
    ``array`` (its head's bias: minus the median logit of a click on slice ``z``)."""
    import torch

    from llm4seg_core.model.network import build_model
    from llm4seg_core.model.spec import parse_spec
    from llm4seg_core.prompts import PromptSegmenter, SliceRequest
    from llm4seg_core.store import ModelStore

    torch.manual_seed(0)
    model = build_model(parse_spec(TINY_PROMPT))
    rgb = array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8
    kind = "image2d" if array.ndim == 2 or rgb else "volume"
    vol = Volume(array, (1.0,) * (2 if kind == "image2d" else 3), (0.0,) * (2 if kind ==
                 "image2d" else 3), (1, 0, 0, 1) if kind == "image2d" else
                 (1, 0, 0, 0, 1, 0, 0, 0, 1), kind=kind, is_rgb=rgb)
    h, w = vol.spatial_shape[-2:]
    x = PromptSegmenter(model, device="cpu", engine="torch").inputs(
        vol, [SliceRequest(z, SlicePrompts((Point(h // 2, w // 2),)))])
    with torch.no_grad():
        model.net.head.bias -= model(x).median()
    ModelStore().save(model, task="prompt", note="tiny test prompt model")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: the machine is shared with a training run."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _make(make_napari_viewer, qtbot, data=None, with_model=True, **image_kw):
    viewer = make_napari_viewer()
    widget = LLM4SegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg", area="right")
    data = _synthetic() if data is None else data
    if with_model:
        save_prompt_model(data, 5 if data.ndim == 3 and not image_kw.get("rgb") else 0)
    image = viewer.add_image(data, name="ct", **image_kw)
    qtbot.waitUntil(lambda: widget.state.mask is not None)  # the empty mask, made ahead
    return viewer, widget, image


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer, widget, image = _make(make_napari_viewer, qtbot, scale=SCALE, translate=TRANSLATE,
                                  contrast_limits=(-1000, 1000))
    yield viewer, widget, image
    _cleanup(qtbot, widget)


def _cleanup(qtbot, widget) -> None:
    if widget.state.is_busy:
        widget.cancel_job()
        qtbot.waitUntil(lambda: not widget.state.is_busy, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget.prompts.idle, timeout=TIMEOUT_MS)


@dataclass
class _Mouse:
    """A vispy mouse event as napari's layer callbacks see it (world coordinates)."""

    type: str
    position: tuple
    button: int = 1
    modifiers: list = field(default_factory=list)
    is_dragging: bool = False
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = field(default_factory=lambda: [1, 2])


def click(layer, image, zyx, button: int = 1, modifiers=()) -> None:
    """Press and release the mouse on image voxel ``zyx`` (as a person would, through the
    layer's mouse callbacks: napari's own "add" adds the point on release)."""
    world = tuple(float(v) for v in image.data_to_world(zyx))
    dims = [0, 1] if len(zyx) == 2 else [1, 2]
    for kind, run in (("mouse_press", mouse_press_callbacks),
                      ("mouse_release", mouse_release_callbacks)):
        event = _Mouse(kind, world, button, list(modifiers), dims_displayed=dims)
        run(layer, ReadOnlyWrapper(event, exceptions=("handled",)))


def _wait(qtbot, widget, applied: int | None = None) -> None:
    tool = widget.prompts
    qtbot.waitUntil(lambda: tool.idle and (applied is None or tool.applied >= applied),
                    timeout=TIMEOUT_MS)


def _wait_job(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.state.is_busy, timeout=TIMEOUT_MS)


def _direct(widget, image, z, prompts, guide=None) -> np.ndarray:
    """The segmenter's own mask of the object for ``prompts`` on slice ``z``."""
    tool = widget.prompts
    seg = tool.segmenter(None, widget.state.device_arg)
    return seg.segment_slice(tool._volume_of(image), z, prompts, guide)


def _messages(start: int) -> list[str]:
    return [str(n.message) for n in notification_manager.records[start:]]


def _goto(viewer, image, z: int) -> None:
    viewer.dims.set_point(0, float(image.data_to_world((z, 0, 0))[0]))


def rect(z, y0, x0, y1, x1) -> np.ndarray:
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)


# ------------------------------------------------------------------ clicks


def test_a_click_segments_its_slice_only_and_keeps_other_labels(setup, qtbot) -> None:
    viewer, widget, image = setup
    mask = widget.state.mask
    mask.data[5, 2:6, 2:8] = 2  # another label on the prompted slice: kept
    mask.data[6, 10:20, 10:20] = 1  # the label on another slice: untouched
    before = mask.data.copy()
    widget.prompt_button.click()
    tool = widget.prompts
    assert tool.active and widget.prompt_button.isChecked()
    points = viewer.layers[POINTS_NAME]
    assert isinstance(points, Points) and isinstance(viewer.layers[BOX_NAME], Shapes)
    assert viewer.layers.selection.active is points and points.mode == "add"
    assert tool.mode == "click"
    assert tuple(points.scale) == pytest.approx(SCALE)  # placed like the image
    assert tuple(points.translate) == pytest.approx(TRANSLATE)

    _goto(viewer, image, 5)
    click(points, image, (5, 24, 18))
    assert len(points.data) == 1 and bool(points.features["positive"][0])
    assert tuple(points.face_color[0]) == GREEN
    _wait(qtbot, widget, applied=1)
    want = merge_object(before[5], _direct(widget, image, 5, SlicePrompts((Point(24, 18),))), 1)
    np.testing.assert_array_equal(mask.data[5], want)
    assert not np.array_equal(mask.data[5], before[5])
    assert np.all(mask.data[5][before[5] == 2] == 2)  # the other label is kept
    others = [z for z in range(12) if z != 5]
    np.testing.assert_array_equal(mask.data[others], before[others])
    assert widget.state.corrected_slices == [5]  # a prompted slice is a correction
    assert "Segmented the object on slice 5" in widget.state.status

    # Undo (the mask's own napari history) takes the whole result back in one step
    widget.prompt_undo_button.click()
    np.testing.assert_array_equal(mask.data, before)


def test_negative_clicks_and_the_modifiers(setup, qtbot) -> None:
    viewer, widget, image = setup
    widget.start_prompts("click")
    points = widget.prompts.points
    start = len(notification_manager.records)
    click(points, image, (3, 10, 10), button=2)  # only "not the object" on slice 3
    _wait(qtbot, widget)
    assert widget.prompts.applied == 0 and "only 'not the object' clicks" in widget.state.status
    assert not widget.state.corrected_slices

    click(points, image, (4, 24, 18))
    click(points, image, (4, 8, 30), button=2)  # right click
    click(points, image, (4, 40, 8), modifiers=["Control"])  # Ctrl+click
    click(points, image, (4, 30, 30), modifiers=["Shift"])
    click(points, image, (4, 12, 40), modifiers=["Alt"])
    click(points, image, (4, 30, 24))  # a plain click is positive again
    assert list(points.features["positive"]) == [False, True, False, False, False, False, True]
    assert [tuple(c) for c in points.face_color] == [RED, GREEN, RED, RED, RED, RED, GREEN]
    _wait(qtbot, widget)
    prompts = SlicePrompts((Point(24, 18), Point(8, 30, False), Point(40, 8, False),
                            Point(30, 30, False), Point(12, 40, False), Point(30, 24)))
    np.testing.assert_array_equal(widget.state.mask.data[4],
                                  merge_object(np.zeros((48, 48), np.uint8),
                                               _direct(widget, image, 4, prompts), 1))
    assert widget.state.corrected_slices == [4]
    assert not _messages(start)  # nothing went wrong


def test_a_box_and_the_newest_box_of_a_slice_wins(setup, qtbot) -> None:
    viewer, widget, image = setup
    widget.start_prompts("box")
    boxes = widget.prompts.boxes
    assert viewer.layers.selection.active is boxes and boxes.mode == "add_rectangle"
    assert widget.prompt_box.isChecked() and widget.prompts.mode == "box"
    boxes.add(rect(7, 10.2, 12.0, 30.0, 33.6), shape_type="rectangle")
    _wait(qtbot, widget, applied=1)
    mask = widget.state.mask
    empty = np.zeros((48, 48), np.uint8)
    first = merge_object(empty, _direct(widget, image, 7, SlicePrompts((), Box(10, 12, 30, 34))), 1)
    np.testing.assert_array_equal(mask.data[7], first)

    boxes.add(rect(7, 2.0, 2.0, 20.0, 46.0), shape_type="rectangle")  # a newer box, same slice
    _wait(qtbot, widget, applied=2)
    qtbot.waitUntil(lambda: boxes.nshapes == 1)  # the older one is removed
    np.testing.assert_allclose(boxes.data[0], rect(7, 2.0, 2.0, 20.0, 46.0))
    want = merge_object(first, _direct(widget, image, 7, SlicePrompts((), Box(2, 2, 20, 46))), 1)
    np.testing.assert_array_equal(mask.data[7], want)
    assert widget.state.corrected_slices == [7]

    # a click with the box: both go to the model
    widget.start_prompts("click")
    click(widget.prompts.points, image, (7, 12, 20), button=2)
    _wait(qtbot, widget, applied=3)
    both = SlicePrompts((Point(12, 20, False),), Box(2, 2, 20, 46))
    done = merge_object(want, _direct(widget, image, 7, both), 1)
    np.testing.assert_array_equal(mask.data[7], done)

    # Clear prompts: no click, no box, the mask as it was; a new object can start
    widget.prompt_clear_button.click()
    _wait(qtbot, widget)
    assert len(widget.prompts.points.data) == 0 and boxes.nshapes == 0
    np.testing.assert_array_equal(mask.data[7], done)
    assert widget.prompts.applied == 3


def test_a_newer_click_supersedes_one_still_running(setup, qtbot) -> None:
    viewer, widget, image = setup
    tool = widget.prompts
    seg = tool.segmenter(None, widget.state.device_arg)  # loaded: the worker reuses it
    gate, running = threading.Event(), threading.Event()
    calls: list[SlicePrompts] = []
    real = seg.segment_slice

    def slow(volume, z, prompts=None, guide=None):
        calls.append(prompts)
        if len(calls) == 1:
            running.set()
            gate.wait(30)  # the first click's request is still running...
        return real(volume, z, prompts, guide)

    seg.segment_slice = slow
    try:
        widget.start_prompts("click")
        click(tool.points, image, (2, 20, 20))
        assert running.wait(30)
        click(tool.points, image, (2, 30, 10))  # ... when the second click comes
        click(tool.points, image, (9, 30, 10))  # another slice: not superseded
        gate.set()
        _wait(qtbot, widget)
    finally:
        seg.segment_slice = real
    assert tool.dropped == 1 and tool.applied == 2
    both = SlicePrompts((Point(20, 20), Point(30, 10)))
    assert calls == [SlicePrompts((Point(20, 20),)), both, SlicePrompts((Point(30, 10),))]
    empty = np.zeros((48, 48), np.uint8)
    np.testing.assert_array_equal(widget.state.mask.data[2],
                                  merge_object(empty, _direct(widget, image, 2, both), 1))
    assert widget.state.corrected_slices == [2, 9]


def test_the_guide_is_the_slices_mask_when_asked_for(setup, qtbot) -> None:
    viewer, widget, image = setup
    mask = widget.state.mask
    mask.data[6, 15:35, 10:30] = 1  # e.g. a Segment's output
    guide = (mask.data[6] == 1).astype(np.uint8)
    widget.prompt_guide_check.setChecked(True)
    widget.start_prompts("click")
    click(widget.prompts.points, image, (6, 24, 18))
    _wait(qtbot, widget, applied=1)
    got = _direct(widget, image, 6, SlicePrompts((Point(24, 18),)), guide)
    np.testing.assert_array_equal(mask.data[6], merge_object(guide, got, 1))


def test_a_click_outside_the_image_is_a_notification_and_is_removed(setup, qtbot) -> None:
    viewer, widget, image = setup
    widget.start_prompts("click")
    points = widget.prompts.points
    start = len(notification_manager.records)
    click(points, image, (5, 24, 60))  # right of the image
    qtbot.waitUntil(lambda: len(points.data) == 0)
    assert any("1 click outside the image" in m for m in _messages(start))
    assert widget.prompts.idle and widget.prompts.applied == 0
    click(points, image, (5, 24, 18))  # the next one works
    _wait(qtbot, widget, applied=1)
    assert widget.state.corrected_slices == [5]


# ------------------------------------------------------------------ propagate


def test_propagate_fills_other_slices_undo_and_cancel(setup, qtbot) -> None:
    viewer, widget, image = setup
    widget.start_prompts("click")
    click(widget.prompts.points, image, (5, 24, 18))
    _wait(qtbot, widget, applied=1)
    mask = widget.state.mask
    before = mask.data.copy()

    # cancelled at once: nothing written
    assert widget.propagate()
    assert widget.state.kind == "propagate" and not widget.propagate_button.isEnabled()
    widget.cancel_job()
    _wait_job(qtbot, widget)
    assert "Cancelled" in widget.state.status
    np.testing.assert_array_equal(mask.data, before)
    assert widget.propagate_button.isEnabled()

    progress: list[tuple[int, int]] = []
    widget.state.progress.connect(lambda d, t: progress.append((d, t)))
    widget.propagate_button.click()
    _wait_job(qtbot, widget)
    assert "Propagated label 1 from slice(s) 5" in widget.state.status, widget.state.status
    seg = widget.prompts.segmenter(None, widget.state.device_arg)
    prop = propagate(seg, widget.prompts._volume_of(image), {5: (before[5] == 1).astype(np.uint8)})
    np.testing.assert_array_equal(mask.data, merge_propagation(before, prop.mask, 1, [5]))
    filled = [z for z in range(12) if z != 5 and (mask.data[z] == 1).any()]
    assert filled, "the tiny model's propagation should reach other slices"
    np.testing.assert_array_equal(mask.data[5], before[5])
    assert widget.state.corrected_slices == [5]  # propagated slices are model output
    assert (11, 11) in progress  # every other slice, as the job's progress

    widget.prompts.undo()  # one undoable step
    np.testing.assert_array_equal(mask.data, before)


def test_propagate_needs_a_corrected_slice_with_the_label(setup, qtbot) -> None:
    viewer, widget, image = setup
    start = len(notification_manager.records)
    assert not widget.propagate()
    assert any("nothing to propagate from" in m for m in _messages(start))
    assert not widget.state.is_busy


# ------------------------------------------------------------------ errors, pictures


def test_no_prompt_model_is_a_notification(make_napari_viewer, qtbot, no_shipped_prompt_model) -> None:
    viewer, widget, image = _make(make_napari_viewer, qtbot, with_model=False)
    try:
        widget.start_prompts("click")
        start = len(notification_manager.records)
        click(widget.prompts.points, image, (5, 24, 18))
        _wait(qtbot, widget)
        assert any("no prompt model" in m for m in _messages(start))
        assert "Prompt failed: no prompt model" in widget.state.status
        assert not np.any(widget.state.mask.data) and widget.prompts.applied == 0
        # the widget goes on: the person can still use everything else
        assert widget.segment_button.isEnabled() and widget.prompts.active
    finally:
        _cleanup(qtbot, widget)


def test_an_rgb_picture_is_prompted_and_not_propagated(make_napari_viewer, qtbot) -> None:
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 180
    rgb[10:30, 12:34] = (230, 120, 90)
    viewer, widget, image = _make(make_napari_viewer, qtbot, data=rgb, rgb=True)
    try:
        widget.start_prompts("click")
        points = widget.prompts.points
        assert points.ndim == 2
        click(points, image, (20, 22))
        _wait(qtbot, widget, applied=1)
        mask = widget.state.mask
        assert mask.data.shape == (40, 50)
        np.testing.assert_array_equal(mask.data, merge_object(
            np.zeros((40, 50), np.uint8), _direct(widget, image, 0, SlicePrompts((Point(20, 22),))),
            1))
        assert widget.state.corrected_slices == [0]
        start = len(notification_manager.records)
        assert not widget.propagate()
        assert any("this image is a 2-D picture" in m for m in _messages(start))
    finally:
        _cleanup(qtbot, widget)


def test_another_image_turns_prompting_off(setup, qtbot) -> None:
    viewer, widget, image = setup
    widget.prompt_button.click()
    assert widget.prompts.active
    viewer.add_image(_synthetic(6, 40), name="other")
    widget.image_combo.setCurrentText("other")
    assert widget.state.image.name == "other"
    assert not widget.prompts.active and not widget.prompt_button.isChecked()
    widget.prompt_button.click()  # on the new image: the prompt layers are made for it
    qtbot.waitUntil(lambda: widget.prompts.active)
    assert widget.prompts.points.metadata["llm4seg_prompts_for"] == "other"
    assert widget.prompts.points.ndim == 3
    widget.prompt_button.click()
    assert not widget.prompts.active

    viewer.dims.ndisplay = 3  # prompts are given on a slice
    start = len(notification_manager.records)
    assert not widget.start_prompts("click")
    assert any("switch the viewer to its 2-D view" in m for m in _messages(start))
    assert not widget.prompt_button.isChecked()


def test_finetune_with_the_prompt_tool_on_trains_the_prompt_model(setup, qtbot) -> None:
    from llm4seg_core.store import ModelStore

    viewer, widget, image = setup
    store = ModelStore()
    before = store.current_name("prompt")
    segment_model = widget.state.model_arg
    assert widget.finetune_button.text() == "Fine-tune"
    widget.prompt_button.click()
    assert widget.finetune_button.text() == "Fine-tune prompt model"
    points = viewer.layers[POINTS_NAME]
    _goto(viewer, image, 5)
    click(points, image, (5, 24, 18))
    _wait(qtbot, widget, applied=1)
    assert widget.state.corrected_slices == [5]
    widget.steps_spin.setValue(3)
    assert widget.finetune()
    assert "Fine-tuning the prompt model" in widget.state.status
    _wait_job(qtbot, widget)
    after = store.current_name("prompt")
    assert after is not None and after != before  # a new version of task "prompt", current
    info = next(v for v in store.versions("prompt") if v.name == after)
    assert info.parent == before
    assert widget.state.model_arg == segment_model  # the Segment model is left as it was
    assert f"Saved prompt model version {after}" in widget.state.status
    assert widget.prompts.segmenter(None, widget.state.device_arg).name == after
    widget.prompt_button.click()
    assert widget.finetune_button.text() == "Fine-tune"
