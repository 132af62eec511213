"""The front ends' prompting session without Qt: prompts from layer data, results into a mask,
the latest-request-wins worker."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.prompts.records import Box, Point, SlicePrompts
from llm4seg_core.prompts.session import (
    LatestPerKey,
    layer_prompts,
    merge_object,
    merge_propagation,
    outside_message,
    propagation_seeds,
    segmentable,
)

# ------------------------------------------------------------------ prompts from layers


def test_clicks_take_the_pixel_they_fall_in_grouped_by_slice():
    pts = np.array([[2.0, 10.4, 20.6], [2.2, 30.0, 5.0], [5.0, 7.0, 7.0]])
    found = layer_prompts(pts, [True, False, True], [], (8, 40, 50))
    assert found.slices == {
        2: SlicePrompts((Point(10, 21, True), Point(30, 5, False))),
        5: SlicePrompts((Point(7, 7, True),)),
    }
    assert found.outside_points == () and found.outside_boxes == ()
    # a pixel's extent: -0.5 .. 0.5 is pixel 0; 39.49 still the last row
    edge = layer_prompts(np.array([[0.0, -0.49, 39.49]]), None, [], (1, 40, 40))
    assert edge.slices[0].points == (Point(0, 39, True),)


def test_clicks_outside_the_image_are_left_out_and_named():
    pts = np.array([[1.0, 5.0, 5.0], [1.0, -0.6, 5.0], [9.0, 5.0, 5.0], [1.0, 5.0, 50.0]])
    found = layer_prompts(pts, None, [], (8, 40, 50))
    assert found.outside_points == (1, 2, 3)
    assert found.slices == {1: SlicePrompts((Point(5, 5),))}
    text = outside_message(found, (8, 40, 50))
    assert text.startswith("3 clicks outside the image (slices 0..7, rows 0..39, columns 0..49)")
    assert outside_message(layer_prompts(pts[:1], None, [], (8, 40, 50)), (8, 40, 50)) == ""


def test_a_picture_has_one_slice_and_two_coordinates():
    found = layer_prompts(np.array([[3.0, 4.0]]), [False], [np.array(
        [[1.0, 1.0], [1.0, 9.0], [6.0, 9.0], [6.0, 1.0]])], (20, 30))
    assert found.slices == {0: SlicePrompts((Point(3, 4, False),), Box(1, 1, 6, 9))}
    assert "rows 0..19, columns 0..29" in outside_message(
        layer_prompts(np.array([[30.0, 4.0]]), None, [], (20, 30)), (20, 30))


def test_boxes_are_clipped_the_newest_on_a_slice_wins():
    rect = lambda z, y0, x0, y1, x1: np.array(  # noqa: E731
        [[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)
    boxes = [rect(3, 2.6, 4.0, 10.4, 12.0), rect(3, -5, -5, 8, 8), rect(4, 30, 30, 45, 60),
             rect(4, 45, 5, 60, 9), rect(12, 1, 1, 3, 3)]
    found = layer_prompts(np.zeros((0, 3)), [], boxes, (8, 40, 50))
    assert found.slices == {3: SlicePrompts((), Box(0, 0, 8, 8)),
                            4: SlicePrompts((), Box(30, 30, 39, 49))}
    assert found.replaced_boxes == (0,)  # slice 3's older box
    assert found.outside_boxes == (3, 4)  # below the image; a slice that does not exist
    assert "2 boxes outside" in outside_message(found, (8, 40, 50))
    # corners in any order, a zero-size box is one pixel
    one = layer_prompts(np.zeros((0, 3)), [], [np.array([[1, 6, 6]] * 4, float)], (3, 9, 9))
    assert one.slices[1].box == Box(6, 6, 6, 6)


def test_only_a_positive_click_or_a_box_says_which_object():
    assert segmentable(SlicePrompts((Point(1, 1, True),)))
    assert segmentable(SlicePrompts((Point(1, 1, False),), Box(0, 0, 2, 2)))
    assert not segmentable(SlicePrompts((Point(1, 1, False),)))
    assert not segmentable(None) and not segmentable(SlicePrompts())


def test_flags_must_match_the_points():
    with pytest.raises(ValueError, match="2 points but 1"):
        layer_prompts(np.zeros((2, 3)), [True], [], (4, 4, 4))
    with pytest.raises(LLM4SegError, match="2-D picture or a 3-D volume"):
        layer_prompts(np.zeros((0, 4)), [], [], (2, 4, 4, 4))


# ------------------------------------------------------------------ results into a mask


def test_merge_object_replaces_its_label_and_keeps_the_others():
    labels = np.array([[1, 1, 0, 2],
                       [0, 1, 2, 2],
                       [0, 0, 0, 3]], np.uint8)
    obj = np.array([[0, 1, 1, 1],
                    [0, 0, 1, 0],
                    [1, 0, 0, 1]], np.uint8)
    out = merge_object(labels, obj, 1)
    np.testing.assert_array_equal(out, [[0, 1, 1, 2],
                                        [0, 0, 2, 2],
                                        [1, 0, 0, 3]])
    assert out.dtype == np.uint8 and labels[0, 0] == 1  # a new array
    np.testing.assert_array_equal(merge_object(labels, np.zeros_like(obj), 2),
                                  np.where(labels == 2, 0, labels))
    with pytest.raises(LLM4SegError, match="shape"):
        merge_object(labels, obj[:2], 1)
    with pytest.raises(LLM4SegError, match="does not fit"):
        merge_object(labels, obj, 300)


def test_seeds_are_the_corrected_slices_and_need_the_object():
    labels = np.zeros((6, 5, 5), np.uint8)
    labels[2, 1:3, 1:3] = 1
    labels[4, 0, 0] = 2
    seeds = propagation_seeds(labels, [2, 4, 9], 1)
    assert sorted(seeds) == [2, 4]
    assert seeds[2].sum() == 4 and not seeds[4].any()  # an empty seed bounds the walks
    with pytest.raises(LLM4SegError, match="label 2 is on none of the corrected slices"):
        propagation_seeds(labels, [2], 2)
    with pytest.raises(LLM4SegError, match="nothing to propagate from"):
        propagation_seeds(labels, [], 1)
    with pytest.raises(LLM4SegError, match="2-D picture"):
        propagation_seeds(labels[0], [0], 1)


def test_merge_propagation_leaves_kept_slices_and_other_labels():
    labels = np.zeros((4, 3, 3), np.uint8)
    labels[0] = 1  # a seed: kept as it is
    labels[1, 0, 0] = 2
    labels[3, 2, 2] = 1  # old model output beyond the object's end: replaced
    prop = np.zeros_like(labels)
    prop[0:3, 0, :] = 1
    out = merge_propagation(labels, prop, 1, keep=[0])
    np.testing.assert_array_equal(out[0], labels[0])
    np.testing.assert_array_equal(out[1], [[2, 1, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[2], [[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    assert not out[3].any()


# ------------------------------------------------------------------ the latest request wins


def test_the_newest_request_of_a_slice_wins():
    gate = threading.Event()
    ran: list[str] = []
    done: list = []

    def run(payload):
        if payload == "a1":
            gate.wait(10)  # the first request is still running while the next ones come
        ran.append(payload)
        return payload.upper()

    worker = LatestPerKey(run, done.append)
    n1 = worker.submit(5, "a1")
    time.sleep(0.05)
    n2 = worker.submit(5, "a2")  # waits: replaced by a3 before it runs
    n3 = worker.submit(5, "a3")
    n4 = worker.submit(6, "b1")  # another slice: runs too
    assert worker.busy and not worker.is_current(5, n1) and not worker.is_current(5, n2)
    gate.set()
    assert worker.wait_idle(10)
    assert ran == ["a1", "a3", "b1"]
    assert [(d.key, d.number, d.value) for d in done] == [(5, n1, "A1"), (5, n3, "A3"),
                                                          (6, n4, "B1")]
    assert [worker.is_current(d.key, d.number) for d in done] == [False, True, True]
    worker.forget(6)  # e.g. the prompts of slice 6 were cleared: its result is stale
    assert not worker.is_current(6, n4) and not worker.busy
    worker.close()


def test_errors_are_delivered_and_the_worker_goes_on():
    done: list = []

    def run(payload):
        if payload == "bad":
            raise LLM4SegError("no prompt model")
        return payload

    worker = LatestPerKey(run, done.append)
    worker.submit(0, "bad")
    assert worker.wait_idle(10)
    worker.submit(0, "good")
    assert worker.wait_idle(10)
    assert isinstance(done[0].error, LLM4SegError) and "LLM4SegError" in done[0].trace
    assert done[1].value == "good" and done[1].error is None
    worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(0, "late")
