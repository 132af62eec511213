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
