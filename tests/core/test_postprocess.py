"""keep_seeded_components: regions not touching the corrected slices' labels are dropped."""

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
    out, info = keep_seeded_components(lab, [4, 7])
    expect = np.zeros_like(lab)
    expect[2:7, 5:9, 5:9] = 1
    expect[5:8, 12:15, 2:5] = 2
    np.testing.assert_array_equal(out, expect)
    assert info["labels"][1] == {"seeded": True, "regions_kept": 1, "regions_dropped": 2,
                                 "voxels_removed": 2 * 9 + 4}
    assert info["labels"][2]["regions_dropped"] == 1
    np.testing.assert_array_equal(lab, _volume())  # the input is not changed


def test_diagonal_neighbours_connect_and_unseeded_labels_stay() -> None:
    lab = np.zeros((4, 6, 6), np.uint8)
    lab[0, 1, 1] = 1
    lab[1, 2, 2] = 1  # touches (0,1,1) only by a corner: same region (26-neighbourhood)
    lab[3, 4, 4] = 3  # label 3 has no seed on the corrected slice: left alone
    out, info = keep_seeded_components(lab, [0])
    np.testing.assert_array_equal(out, lab)
    assert info["labels"][3] == {"seeded": False}


def test_no_seed_anywhere_changes_nothing_and_2d_passes_through() -> None:
    lab = _volume()
    out, _ = keep_seeded_components(lab, [0])  # slice 0 holds no label
    np.testing.assert_array_equal(out, lab)
    pic = np.zeros((8, 8), np.uint8)
    pic[1, 1] = 1
    out2, info2 = keep_seeded_components(pic, [0])
    np.testing.assert_array_equal(out2, pic)
    assert "2-D" in info2["note"]
