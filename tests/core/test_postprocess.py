"""keep_seeded_components: only what continues the corrected slices' labels is kept."""

from __future__ import annotations

import numpy as np

from llm4seg_core.postprocess import keep_seeded_components


def _volume() -> np.ndarray:
    lab = np.zeros((10, 20, 20), np.uint8)
    lab[2:7, 5:9, 5:9] = 1  # a lesion across slices 2..6 (outlined on slice 4)
    lab[2:4, 14:17, 14:17] = 1  # a false positive far away, on slices 2..3 only
    lab[8, 1:3, 1:3] = 1  # a false positive on a slice with no lesion
    lab[5:8, 12:15, 2:5] = 2  # another label value, seeded on slice 7
    lab[1, 15:18, 2:4] = 2  # ... and a stray region of it
    return lab


def test_drops_unseeded_regions_and_keeps_seeded_ones_whole() -> None:
    lab = _volume()
    expect = np.zeros_like(lab)
    expect[2:7, 5:9, 5:9] = 1
    expect[5:8, 12:15, 2:5] = 2
    for step in (3.0, None):  # slice by slice, and whole 3-D regions: the same here
        out, info = keep_seeded_components(lab, [4, 7], step_mm=step)
        np.testing.assert_array_equal(out, expect)
        one = info["labels"][1]
        assert (one["regions_kept"], one["regions_dropped"], one["voxels_removed"]) == (1, 2, 2 * 9 + 4)
        assert info["labels"][2]["regions_dropped"] == 1
    assert info["labels"][1]["slices_kept"] == [2, 3, 4, 5, 6]
    np.testing.assert_array_equal(lab, _volume())  # the input is not changed


def test_diagonal_neighbours_connect_and_unseeded_labels_stay() -> None:
    lab = np.zeros((4, 6, 6), np.uint8)
    lab[0, 1, 1] = 1
    lab[1, 2, 2] = 1  # touches (0,1,1) only by a corner: same region (26-neighbourhood)
    lab[3, 4, 4] = 3  # label 3 has no seed on the corrected slice: left alone
    out, info = keep_seeded_components(lab, [0], step_mm=None)
    np.testing.assert_array_equal(out, lab)
    assert info["labels"][3] == {"seeded": False}
    # slice by slice a region must overlap what was kept on the slice before
    out2, _ = keep_seeded_components(lab, [0])
    assert out2[1, 2, 2] == 0 and out2[0, 1, 1] == 1 and out2[3, 4, 4] == 3


def _leak() -> np.ndarray:
    """A lesion on slices 1..3 and, touching it, a vessel that runs off sideways on 4..7."""
    lab = np.zeros((8, 30, 30), np.uint8)
    lab[1:4, 10:16, 10:16] = 1
    for i, z in enumerate(range(4, 8)):
        lab[z, 14:16, 14 + 4 * i:20 + 4 * i] = 1  # shifts 4 px a slice
    return lab


def test_a_region_may_grow_only_step_mm_a_slice() -> None:
    lab = _leak()
    whole, _ = keep_seeded_components(lab, [2], step_mm=None)
    np.testing.assert_array_equal(whole, lab)  # 3-D connectivity follows the vessel to the end
    out, info = keep_seeded_components(lab, [2], step_mm=2.0, pixel_size=(1.0, 1.0))
    np.testing.assert_array_equal(out[1:4], lab[1:4])
    # slice 4 keeps the vessel's part within 2 px of the lesion (x 14..17); on slice 5 the
    # vessel (x 18..23) no longer overlaps that, so the walk stops
    assert out[4].sum() == 2 * 4 and out[4, 14:16, 14:18].all()
    assert not out[5:].any()
    assert info["labels"][1]["slices_kept"] == [1, 2, 3, 4]
    # the pixel size turns mm into pixels: 2 mm at 0.5 mm pixels is 4 pixels
    out_fine, _ = keep_seeded_components(lab, [2], step_mm=2.0, pixel_size=(0.5, 0.5))
    assert out_fine.sum() > out.sum()


def test_no_seed_anywhere_changes_nothing_and_2d_passes_through() -> None:
    lab = _volume()
    out, _ = keep_seeded_components(lab, [0])  # slice 0 holds no label
    np.testing.assert_array_equal(out, lab)
    pic = np.zeros((8, 8), np.uint8)
    pic[1, 1] = 1
    out2, info2 = keep_seeded_components(pic, [0])
    np.testing.assert_array_equal(out2, pic)
    assert "2-D" in info2["note"]


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_interpolation_blends_radius_and_position_between_two_outlines() -> None:
    from llm4seg_core.postprocess import interpolate_between

    lower, upper = _disc((40, 40), (20, 12), 4), _disc((40, 40), (20, 24), 10)
    mid = interpolate_between(lower, upper, 3)
    assert mid.shape == (3, 40, 40)
    # the middle slice blends the distances half and half: the points whose distances to
    # the two centres add up to at most 4 + 10 (an ellipse with the centres as foci)
    yy, xx = np.mgrid[:40, :40]
    foci = np.hypot(yy - 20, xx - 12) + np.hypot(yy - 20, xx - 24)
    assert mid[1][foci <= 14 - 2].all() and not mid[1][foci >= 14 + 2].any()  # up to a pixel
    # concentric outlines: the radius steps evenly, 4 -> 5.5, 7, 8.5 -> 10
    grow = interpolate_between(_disc((40, 40), (20, 20), 4), _disc((40, 40), (20, 20), 10), 3)
    for i, r in enumerate((5.5, 7.0, 8.5)):
        dist = np.hypot(yy - 20, xx - 20)
        assert grow[i][dist <= r - 1].all() and not grow[i][dist >= r + 1].any()
    # two identical outlines blend to themselves, whatever the pixel size
    same = interpolate_between(upper, upper, 2, pixel_size=(1.0, 0.5))
    np.testing.assert_array_equal(same[0], upper)
    assert not interpolate_between(lower, np.zeros_like(lower), 2).any()


def _gap_volume() -> np.ndarray:
    """A lesion outlined on slices 2 and 6; the model found only part of it in between."""
    lab = np.zeros((9, 40, 40), np.uint8)
    lab[2] = _disc((40, 40), (20, 20), 8)
    lab[6] = _disc((40, 40), (20, 20), 8)
    for z in (3, 4, 5):
        lab[z] = _disc((40, 40), (20, 20), 4)  # under-segmented
    return lab


def test_fill_between_fills_gaps_of_background_only() -> None:
    lab = _gap_volume()
    lab[4, 24:29, 18:22] = 3  # another label where the outline will go
    out0, info0 = keep_seeded_components(lab, [2, 6])
    assert "gaps_filled" not in info0["labels"][1]
    np.testing.assert_array_equal(out0[3:6] == 1, lab[3:6] == 1)  # off: nothing is added
    out, info = keep_seeded_components(lab, [2, 6], fill_between=True)
    one = info["labels"][1]
    assert one["gaps_filled"] == 1 and one["voxels_filled"] > 0
    for z in (3, 4, 5):  # the outline's radius 8 disc fills the gap
        assert ((out[z] == 1) | (out[z] == 3))[_disc((40, 40), (20, 20), 8)].all()
    assert (out[4][lab[4] == 3] == 3).all()  # another label's voxels are left alone
    np.testing.assert_array_equal(out[[2, 6]], lab[[2, 6]])  # corrected slices unchanged
    assert not out[[0, 1, 7, 8]].any()
    assert out.sum() - out0.sum() == one["voxels_filled"]


def test_no_fill_between_outlines_out_of_reach_the_prediction_does_not_join() -> None:
    lab = np.zeros((9, 40, 40), np.uint8)
    lab[2] = _disc((40, 40), (20, 13), 6)  # two outlines 1 px apart in-plane, 4 slices apart
    lab[6] = _disc((40, 40), (20, 26), 6)
    lab[3, 19:22, 10:17] = 1  # the prediction near each, but nothing on slice 4
    lab[5, 19:22, 23:30] = 1
    # at most 0.2 mm a slice, 4 slices: 0.8 mm of reach, less than the 1 px between them
    out, info = keep_seeded_components(lab, [2, 6], step_mm=0.2, fill_between=True)
    assert info["labels"][1]["gaps_filled"] == 0  # maybe two lesions: no fill
    np.testing.assert_array_equal(out, lab)
    # reach is in mm: at 0.1 mm pixels the 1 px between them is within 0.8 mm
    _, info = keep_seeded_components(lab, [2, 6], step_mm=0.2, pixel_size=(0.1, 0.1),
                                     fill_between=True)
    assert info["labels"][1]["gaps_filled"] == 1
    # at the default 3 mm a slice they are well within reach of each other
    _, info = keep_seeded_components(lab, [2, 6], fill_between=True)
    assert info["labels"][1]["gaps_filled"] == 1
    lab[3:6, 19:22, 10:30] = 1  # the prediction joins them: one lesion that moves
    out, info = keep_seeded_components(lab, [2, 6], step_mm=0.2, fill_between=True)
    assert info["labels"][1]["gaps_filled"] == 1 and info["labels"][1]["voxels_filled"] > 0
    assert out[3, 18, 13] and out[5, 22, 26]  # outside the bridge: the blended outlines
    # overlapping outlines are filled even where the model saw nothing between them
    lab2 = _gap_volume()
    lab2[3:6][lab2[3:6] == 1] = 0
    out2, info2 = keep_seeded_components(lab2, [2, 6], fill_between=True)
    assert info2["labels"][1]["gaps_filled"] == 1
    assert (out2[4] == 1).sum() > 0
    # an empty corrected slice between two outlines means "nothing here": no gap to fill
    lab3 = _gap_volume()
    lab3[4] = 0
    _, info3 = keep_seeded_components(lab3, [2, 4, 6], fill_between=True)
    assert info3["labels"][1]["gaps_filled"] == 0
