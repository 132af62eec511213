"""Segmentation metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.metrics import dice, hd95, overlap_scores, score, score_labels


def test_overlap_counts_by_hand():
    ref = np.zeros((10, 10), bool)
    pred = np.zeros((10, 10), bool)
    ref[0, 0:4] = True  # 4 reference pixels
    pred[0, 2:8] = True  # 6 predicted: tp 2, fp 4, fn 2, tn 92
    s = overlap_scores(pred, ref)
    assert s["dice"] == pytest.approx(2 * 2 / (2 * 2 + 4 + 2))
    assert s["iou"] == pytest.approx(2 / 8)
    assert s["sensitivity"] == pytest.approx(2 / 4)
    assert s["precision"] == pytest.approx(2 / 6)
    assert s["f1"] == pytest.approx(s["dice"])
    assert s["accuracy"] == pytest.approx(94 / 100)
    assert s["specificity"] == pytest.approx(92 / 96)


def test_empty_conventions():
    z = np.zeros((3, 4, 4), np.uint8)
    one = z.copy()
    one[1, 1, 1] = 1
    both_empty = score(z, z)
    assert both_empty.dice == 1.0 and both_empty.iou == 1.0 and both_empty.hd95 == 0.0
    missed = score(z, one)
    assert missed.dice == 0.0 and missed.sensitivity == 0.0 and math.isnan(missed.hd95)
    assert missed.to_dict()["hd95"] is None
    assert dice(z, z) == 1.0 and dice(one, z) == 0.0


def test_hd95_uses_anisotropic_spacing():
    # one voxel each, two slices apart along z (5 mm slices) -> 10 mm
    a = np.zeros((5, 6, 6), bool)
    b = np.zeros((5, 6, 6), bool)
    a[1, 3, 3] = True
    b[3, 3, 3] = True
    assert hd95(a, b, (5.0, 0.7, 0.7)) == pytest.approx(10.0)
    # three voxels apart along x with 0.5 mm pixels -> 1.5 mm, whatever the z spacing
    c = np.zeros((5, 6, 6), bool)
    c[1, 3, 0] = True
    assert hd95(a, c, (5.0, 0.7, 0.5)) == pytest.approx(1.5)
    # diagonal in y/x: sqrt((2*0.7)^2 + (1*0.5)^2)
    d = np.zeros((5, 6, 6), bool)
    d[1, 5, 4] = True
    assert hd95(a, d, (5.0, 0.7, 0.5)) == pytest.approx(math.hypot(1.4, 0.5))
    # identical masks: 0
    assert hd95(a, a, (5.0, 0.7, 0.5)) == 0.0


def test_score_spacing_passes_through():
    a = np.zeros((4, 8, 8), np.uint8)
    b = np.zeros((4, 8, 8), np.uint8)
    a[1, 2:5, 2:5] = 1
    b[2, 2:5, 2:5] = 1  # the same square one 2.5 mm slice further
    s = score(a, b, spacing_zyx=(2.5, 1.0, 1.0))
    assert s.dice == 0.0 and s.hd95 == pytest.approx(2.5)


def test_excluded_slices_count_for_nothing():
    ref = np.zeros((4, 6, 6), np.uint8)
    pred = np.zeros((4, 6, 6), np.uint8)
    ref[0, 1:3, 1:3] = 1
    pred[0, 1:3, 1:3] = 1  # slice 0 perfect (4 voxels)
    pred[2, 0:4, 0:4] = 1  # slice 2: 16 false positives
    full = score(pred, ref, spacing_zyx=(3.0, 1.0, 1.0))
    assert full.dice == pytest.approx(8 / (8 + 16))
    assert full.voxels_pred == 20
    kept = score(pred, ref, spacing_zyx=(3.0, 1.0, 1.0), exclude_slices=[2])
    assert kept.dice == 1.0 and kept.iou == 1.0
    assert kept.voxels_pred == 4 and kept.voxels_ref == 4
    assert kept.accuracy == 1.0
    with pytest.raises(LLM4SegError):
        score(pred, ref, exclude_slices=[4])
    with pytest.raises(LLM4SegError):
        score(pred[0], ref[0], exclude_slices=[0])


def test_score_labels_per_class():
    ref = np.zeros((2, 4, 4), np.uint8)
    pred = np.zeros((2, 4, 4), np.uint8)
    ref[0, 0, 0:2] = 1
    pred[0, 0, 0:2] = 1
    ref[1, 3, 0:2] = 2
    pred[1, 3, 0:1] = 2  # label 2: tp 1, fn 1
    pred[1, 0, 3] = 3  # label 3 only in the prediction
    s = score_labels(pred, ref, spacing_zyx=(1.0, 1.0, 1.0))
    assert sorted(s) == [1, 2, 3]
    assert s[1].dice == 1.0
    assert s[2].dice == pytest.approx(2 / 3) and s[2].sensitivity == 0.5 and s[2].precision == 1.0
    assert s[3].dice == 0.0 and math.isnan(s[3].hd95)
    assert sorted(score_labels(pred, ref, labels=[2])) == [2]
    with pytest.raises(LLM4SegError):
        score(pred, ref[:1])


def test_hd95_ignores_excluded_slices():
    ref = np.zeros((4, 6, 6), np.uint8)
    pred = np.zeros((4, 6, 6), np.uint8)
    ref[0, 1:3, 1:3] = 1
    pred[0, 1:3, 1:3] = 1
    pred[3, 0:4, 0:4] = 1  # 3 slices (9 mm) away: dominates HD95 unless excluded
    assert score(pred, ref, spacing_zyx=(3.0, 1.0, 1.0)).hd95 >= 9.0
    assert score(pred, ref, spacing_zyx=(3.0, 1.0, 1.0), exclude_slices=[3]).hd95 == 0.0


def test_format_metrics_forms():
    from llm4seg_core.metrics import format_metrics

    m = {"train_dice": 0.43601, "train_iou": 0.28718, "loss": 0.5, "seconds": 41.37, "note": "x"}
    # short: scores first, one per kind
    assert format_metrics(m, 2) == "train_dice=0.4360 train_iou=0.2872"
    # display: the words a person reads, as the widget shows them
    assert format_metrics(m, 2, for_display=True) == "dice 0.436 · iou 0.287"
    # long: every number; non-numbers are left out
    long = format_metrics({**m, "epoch": 3, "step": 40, "best": True})
    assert long.startswith("epoch=3 step=40 train_dice=0.4360") and long.endswith("*best*")
    assert "seconds=41.4" in long and "note" not in long
    assert format_metrics({"note": "no numbers"}) == ""
    # val_dice hides the other dice keys in the short form
    assert format_metrics({"dice": 0.1, "val_dice": 0.9, "val_iou": 0.8}, 2) == "val_dice=0.9000 val_iou=0.8000"
