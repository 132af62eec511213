"""Fast checks of the few-shot benchmark's task logic (bench/fewshot_tasks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from fewshot_tasks import (  # noqa: E402
    MRICRON_TEMPLATES,
    aal_labels,
    choose_slices,
    load_task,
    score_other_slices,
    structure_slices,
    volume_from_nibabel,
)


def mask_on(zs, n=30, size=8) -> np.ndarray:
    m = np.zeros((n, size, size), np.uint8)
    for z in zs:
        m[z, 2:5, 3:6] = 1
    return m


def test_structure_slices():
    assert structure_slices(mask_on([3, 4, 9])) == [3, 4, 9]


@pytest.mark.parametrize(
    "zs, k, want",
    [
        (range(15, 26), 1, [20]),  # 11 slices: the middle one
        (range(15, 26), 2, [18, 22]),  # symmetric thirds
        (range(15, 26), 3, [17, 20, 23]),
        (range(11, 18), 1, [14]),
        (range(11, 18), 3, [12, 14, 16]),
        ([2, 3], 2, [2, 3]),  # as many slices as k
        ([5], 1, [5]),
        ([1, 2, 3, 10, 11, 12], 1, [10]),  # a split structure: positions among its slices
    ],
)
def test_choose_slices(zs, k, want):
    m = mask_on(zs)
    got = choose_slices(m, k)
    assert got == want
    assert got == sorted(set(got)) and len(got) == k
    assert all(m[z].any() for z in got)
    assert choose_slices(m, k) == got  # deterministic


def test_choose_slices_spread_and_errors():
    m = mask_on(range(40, 80), n=100)
    for k in (1, 2, 3, 5):
        got = choose_slices(m, k)
        assert len(set(got)) == k
        gaps = np.diff([40, *got, 79])
        assert gaps.max() - gaps.min() <= 2  # evenly spaced inside the extent
    with pytest.raises(ValueError):
        choose_slices(mask_on([4]), 2)
    with pytest.raises(ValueError):
        choose_slices(mask_on([4]), 0)


def test_score_excludes_annotated_and_counts_empty_slices():
    ref = mask_on([3, 4, 5])
    pred = ref.copy()
    # wrong on the annotated slice 4: must not count
    pred[4] = 0
    s = score_other_slices(pred, ref, [4])
    assert s["dice"] == 1.0 and s["scored_slices"] == 29
    assert s["voxels_ref"] == 18 and s["fp_voxels_on_empty_slices"] == 0
    # false positives on a slice without the structure lower the score
    pred[10, 0, 0:2] = 1
    s = score_other_slices(pred, ref, [4])
    assert s["fp_voxels_on_empty_slices"] == 2
    assert s["dice"] == pytest.approx(2 * 18 / (2 * 18 + 2))
    # ... unless that slice was annotated
    assert score_other_slices(pred, ref, [4, 10])["dice"] == 1.0


def test_volume_from_nibabel_geometry():
    class Img:  # the two attributes of a nibabel image that are read
        dataobj = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # x, y, z
        affine = np.array([[2.0, 0, 0, -10], [0, 1.5, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])

    v = volume_from_nibabel(Img())
    assert v.array.shape == (4, 3, 2)  # z, y, x
    assert v.array[3, 2, 1] == Img.dataobj[1, 2, 3]
    assert v.spacing == (2.0, 1.5, 3.0)
    assert v.origin == (10.0, 20.0, 5.0)  # RAS -> LPS
    assert v.direction == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def test_load_lung2():
    from llm4seg_core.data import demo_data_available

    if not demo_data_available():
        pytest.skip("demo data not fetched (llm4seg data fetch)")
    t = load_task("lung2")
    assert t.mask.shape == t.volume.spatial_shape == (61, 512, 512)
    assert t.mask.dtype == np.uint8 and set(np.unique(t.mask)) == {0, 1}
    assert t.structure_slices == list(range(15, 26))  # the tumour spans 11 slices
    assert choose_slices(t.mask, 2) == [18, 22]


def test_unknown_task():
    with pytest.raises(KeyError):
        load_task("no-such-task")


def test_aal_names(tmp_path):
    txt = tmp_path / "aal.nii.txt"
    txt.write_text("1 Precentral_L 2001\n37 Hippocampus_L 4101\n\n77 Thalamus_L 7101\n")
    assert aal_labels(txt) == {"Precentral_L": 1, "Hippocampus_L": 37, "Thalamus_L": 77}
    real = MRICRON_TEMPLATES / "aal.nii.txt"
    if real.is_file():
        names = aal_labels(real)
        assert len(names) == 116
        assert names["Hippocampus_L"] == 37 and names["Caudate_R"] == 72
