"""Prompted segmentation (issue 13): encoding, prompt files, the simulated user, propagation,
the prompted dataset, a tiny prompt model end to end, and the command line."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest
from scipy import ndimage
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from llm4seg_core.cli import main
from llm4seg_core.datasets import open_dataset
from llm4seg_core.datasets.prompted import PromptedSlices, open_prompted
from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.io import Volume, read_image, write_mask
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import build_model
from llm4seg_core.model.spec import PRESETS, ModelSpec, parse_spec
from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input
from llm4seg_core.prompts import (
    Box, Point, PromptSegmenter, SlicePrompts, SliceRequest, parse_prompts, prompt_maps,
    propagate, propagate_mask, read_prompts, segment_prompted,
)
from llm4seg_core.prompts.encode import CLICK_RADIUS, to_grid
from llm4seg_core.prompts.simulate import (
    box_of, click_until, error_clicks, first_click, inner_distance, next_click, perturb,
)

TINY = "prompt-cmunext,image_size=32,dims=8:8:16:16:32"
TINY_SPEC = parse_spec(TINY)
CLI_TINY = ["--model", TINY, "--device", "cpu", "--engine", "torch", "-q"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine is shared with a training run."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _volume(n: int = 12, h: int = 40, w: int = 48, seed: int = 0) -> tuple[Volume, np.ndarray]:
    """An MR-like volume (non-square slices) and its labels: 1 an ellipse on slices 2..9,
    2 a square on 4..7, 3 a small disc on 3..6."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((n, h, w), np.uint8)
    for z in range(2, 10):
        lab[z][((yy - 14) / 8.0) ** 2 + ((xx - 14) / 10.0) ** 2 <= 1] = 1
    lab[4:8, 24:34, 28:40] = 2
    for z in range(3, 7):
        lab[z][(yy - 32) ** 2 + (xx - 10) ** 2 <= 9] = 3
    arr = np.full((n, h, w), 100, np.int16)
    arr[lab == 1], arr[lab == 2], arr[lab == 3] = 400, 700, 900
    arr = arr + rng.integers(-10, 10, arr.shape).astype(np.int16)
    vol = Volume(arr, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return vol, lab


def _write_pair(folder, case, vol, lab):
    for suffix, a in (("image", vol.array), ("label", lab)):
        img = sitk.GetImageFromArray(a)
        img.SetSpacing(vol.spacing)
        sitk.WriteImage(img, str(folder / f"{case}_{suffix}.nii.gz"))


@pytest.fixture
def volume_set(tmp_path):
    """Two cases of :func:`_volume`; in case ``a`` label 3 is drawn but not contoured."""
    root = tmp_path / "vols"
    root.mkdir()
    for k, case in enumerate(("a", "b")):
        vol, lab = _volume(seed=k)
        _write_pair(root, case, vol, lab)
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "one", "2": "two",
                                                  "3": "three"}))
    (root / "cases.json").write_text(json.dumps({"a": {"labels_present": ["one", "two"]},
                                                 "b": {"labels_present": [1, 2, 3]}}))
    (root / "vols_train.txt").write_text("a\nb\n")
    (root / "vols_val.txt").write_text("b\n")
    return root


@pytest.fixture
def picture_set(tmp_path):
    """A 2-D folder of four 30 x 50 pictures with label-index masks (values 1 and 2)."""
    root = tmp_path / "pics"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:30, :50]
    for k in range(4):
        lab = np.zeros((30, 50), np.uint8)
        lab[(yy - 15) ** 2 + (xx - 12 - k) ** 2 <= 36] = 1
        lab[5:12, 30:44] = 2
        img = (40 + 100 * (lab == 1) + 180 * (lab == 2)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(img), str(root / "images" / f"c{k}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(lab), str(root / "masks" / f"c{k}.png"))
    return root


# ------------------------------------------------------------------ encoding


def test_click_maps_sit_where_the_click_is_on_a_non_square_slice():
    hw, s = (50, 100), 32
    maps = prompt_maps(SlicePrompts((Point(25, 75, True), Point(5, 10, False))), None, hw, s)
    assert maps.shape == (4, s, s) and maps.dtype == np.float32
    for ch, (y, x) in ((0, (25, 75)), (1, (5, 10))):
        gy, gx = to_grid(y, x, hw, s)
        assert (gy, gx) == pytest.approx(((y + 0.5) * s / hw[0] - 0.5, (x + 0.5) * s / hw[1] - 0.5))
        ys, xs = np.nonzero(maps[ch])
        assert abs(ys.mean() - gy) < 0.6 and abs(xs.mean() - gx) < 0.6
        assert np.hypot(ys - gy, xs - gx).max() <= CLICK_RADIUS + 1e-6
        assert len(ys) >= 20  # a disc, not a dot
    assert not (maps[0] * maps[1]).any()  # each click on its own channel
    assert not maps[2].any() and not maps[3].any()


def test_box_and_guide_map_like_the_labels_resize():
    hw, s = (50, 100), 32
    box = Box.spanning(29, 59, 10, 20)  # corners in any order
    assert (box.y0, box.x0, box.y1, box.x1) == (10, 20, 29, 59)
    native = np.zeros(hw, np.uint8)
    native[10:30, 20:60] = 1
    want = F.interpolate(torch.from_numpy(native)[None, None].float(), size=(s, s),
                         mode="nearest-exact")[0, 0].numpy()
    guide = np.zeros(hw, np.uint8)
    guide[30:45, 70:95] = 3  # any non-zero value is the object
    want_guide = F.interpolate(torch.from_numpy((guide > 0).astype(np.float32))[None, None],
                               size=(s, s), mode="nearest-exact")[0, 0].numpy()
    maps = prompt_maps(SlicePrompts(box=box), guide, hw, s)
    assert np.array_equal(maps[2], want)  # filled, exactly the label's grid pixels
    assert np.array_equal(maps[3], want_guide)
    assert not maps[0].any() and not maps[1].any()
    # a box thinner than a grid pixel still marks one
    thin = prompt_maps(SlicePrompts(box=Box(7, 3, 7, 3)), None, (400, 400), s)[2]
    assert thin.sum() == 1
    with pytest.raises(ValueError, match="guide mask has shape"):
        prompt_maps(None, np.zeros((10, 10)), hw, s)


# ------------------------------------------------------------------ prompt files


def _vol_file(tmp_path):
    vol, lab = _volume()
    path = tmp_path / "vol.nii.gz"
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    sitk.WriteImage(img, str(path))
    return path, read_image(path), lab


BAD_PROMPTS = [  # (file text, the message it must give), on the 12 x 40 x 48 volume
    ('[{"type": "point", "zyx": [2, 5', "not valid JSON"),
    ("[]", "holds no prompts"),
    (" \n", "is empty; it must hold a JSON list of prompts"),
    ('{"type": "point", "zyx": [2, 5, 5]}', "must hold a JSON list of prompts"),
    ('[{"type": "point", "zyx": [2, 40, 10]}]', "y=40 is outside the image (rows 0..39)"),
    ('[{"type": "point", "zyx": [2, 10, -1]}]', "x=-1 is outside the image (columns 0..47)"),
    ('[{"type": "point", "zyx": [12, 5, 5]}]',
     "slice z=12 does not exist (the volume has slices 0..11)"),
    ('[{"type": "box", "z": 30, "yx0": [1, 1], "yx1": [5, 5]}]', "slice z=30 does not exist"),
    ('[{"type": "box", "z": 3, "yx0": [1, 1], "yx1": [5, 48]}]', "yx1 x=48 is outside the image"),
    ('[{"type": "box", "yx0": [1, 1], "yx1": [5, 5]}]', 'say the box\'s slice with "z"'),
    ('[{"type": "circle", "zyx": [1, 1, 1]}]', "unknown type 'circle'"),
    ('[{"zyx": [1, 1, 1]}]', "no type"),
    ('[{"type": "point", "zyx": [1, 1, 1], "postive": true}]', "unknown key 'postive'"),
    ('[{"type": "point", "zyx": [1, 1.5, 1]}]', "zyx must be 3 integers"),
    ('[{"type": "point", "zyx": [1, 1]}]', "zyx must be 3 integers"),
    ('[{"type": "point", "yx": [1, 1]}]', '"zyx": [z, y, x]'),
    ('[{"type": "point", "zyx": [1, 1, 1], "positive": "yes"}]', "positive must be true or false"),
    ('[3]', "prompt 1 in"),
    ('[{"type": "box", "z": 3, "yx0": [1, 1], "yx1": [5, 5]},'
     ' {"type": "box", "z": 3, "yx0": [2, 2], "yx1": [6, 6]}]', "prompts 1 and 2"),
    ('[{"type": "point", "zyx": [4, 3, 3], "positive": false}]',
     "slice 4 has only negative clicks"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PROMPTS)
def test_bad_prompts_are_refused_with_an_apt_message(tmp_path, text, message):
    _, vol, _ = _vol_file(tmp_path)
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(LLM4SegError) as err:
        read_prompts(f, vol)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_prompts_are_grouped_per_slice_and_pictures_drop_z(tmp_path):
    _, vol, _ = _vol_file(tmp_path)
    got = parse_prompts([
        {"type": "point", "zyx": [5, 10, 12]},
        {"type": "box", "z": 7, "yx0": [20, 30], "yx1": [4, 2]},
        {"type": "point", "zyx": [5, 30, 40], "positive": False},
        {"type": "point", "zyx": [5.0, 11, 13], "positive": True},
    ], vol)
    assert list(got) == [5, 7]
    assert got[5].positive == (Point(10, 12), Point(11, 13))
    assert got[5].negative == (Point(30, 40, False),)
    assert got[7].box == Box(4, 2, 20, 30) and not got[7].points
    with pytest.raises(LLM4SegError, match="prompt file not found"):
        read_prompts(tmp_path / "missing.json", vol)
    pic = Volume(np.zeros((30, 50), np.uint8), (1.0, 1.0), (0.0, 0.0), (1, 0, 0, 1), kind="image2d")
    got = parse_prompts([{"type": "point", "yx": [29, 49]},
                         {"type": "box", "yx0": [0, 0], "yx1": [3, 3]}], pic)
    assert list(got) == [0] and got[0].box == Box(0, 0, 3, 3)
    for bad, msg in (({"type": "point", "zyx": [0, 1, 1]}, '"yx": [y, x] (no z)'),
                     ({"type": "box", "z": 0, "yx0": [0, 0], "yx1": [1, 1]}, "without z"),
                     ({"type": "point", "yx": [30, 1]}, "y=30 is outside")):
        with pytest.raises(LLM4SegError, match=re.escape(msg)):
            parse_prompts([bad], pic)


# ------------------------------------------------------------------ the simulated user


def test_first_click_is_inside_at_the_most_interior_point():
    m = np.zeros((40, 60), bool)
    m[5:35, 5:15] = True  # an L: a tall bar ...
    m[25:35, 5:55] = True  # ... and a long foot
    p = first_click(m)
    assert p.positive and m[p.y, p.x]
    d = inner_distance(m)
    assert d[p.y, p.x] == d.max()
    rng_clicks = {first_click(m, np.random.default_rng(s)) for s in range(20)}
    assert all(m[q.y, q.x] for q in rng_clicks) and len(rng_clicks) > 1
    assert first_click(m, np.random.default_rng(3)) == first_click(m, np.random.default_rng(3))
    assert first_click(np.zeros((5, 5))) is None
    # the image border is a boundary: an object touching it is clicked away from the border
    edge = np.zeros((20, 20), bool)
    edge[:, :6] = True
    assert 1 <= first_click(edge).x <= 4


def test_next_click_lands_in_the_largest_error_region_with_the_right_sign():
    gt = np.zeros((50, 50), bool)
    gt[10:40, 10:40] = True
    missed = gt.copy()
    missed[10:40, 25:40] = False  # the right half of the object is missed
    missed[2:5, 2:5] = True  # and a small false positive
    p = next_click(gt, missed)
    assert p.positive and gt[p.y, p.x] and not missed[p.y, p.x]
    assert 28 <= p.x <= 36  # the centre of the missed part
    spill = gt.copy()
    spill[10:45, 40:50] = True  # a large false positive beside it
    spill[20:22, 20:22] = False  # and a small hole
    p = next_click(gt, spill)
    assert not p.positive and spill[p.y, p.x] and not gt[p.y, p.x]
    assert next_click(gt, gt) is None
    clicks = error_clicks(gt, spill, 5)
    assert [c.positive for c in clicks] == [False, True]  # by area, largest first
    b = box_of(gt)
    assert (b.y0, b.x0, b.y1, b.x1) == (10, 10, 39, 39)
    jb = box_of(gt, np.random.default_rng(1))
    assert jb != b and abs(jb.y0 - 10) <= 3 and abs(jb.x1 - 39) <= 3
    assert jb == box_of(gt, np.random.default_rng(1))


def test_click_until_counts_clicks_and_perturb_keeps_an_imperfect_object():
    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    calls = []

    def predict(prompts, guide):  # a model that fixes one quarter per click
        calls.append(guide is not None)
        out = np.zeros_like(gt)
        for k in range(min(len(prompts.points), 4)):
            out[5:35, 5 + 8 * k:5 + 8 * (k + 1)] = True
        return out & gt

    scores = click_until(gt, predict, target_iou=0.9, max_clicks=20)
    assert len(scores) == 4 and scores[-1] >= 0.9 and scores[0] < 0.5
    assert calls == [False, True, True, True]  # the previous mask is the next guide
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(20):
        p = perturb(gt, rng)
        assert p.any()
        changed += not np.array_equal(p, gt)
        inter = (p & gt).sum()
        assert inter / (p | gt).sum() > 0.3  # imperfect, but still this object
    assert changed >= 15
    assert np.array_equal(perturb(gt, np.random.default_rng(5)),
                          perturb(gt, np.random.default_rng(5)))


# ------------------------------------------------------------------ propagation


class ThresholdSegmenter:
    """A fake prompt model: the bright pixels near the guide (none without a guide)."""

    def __init__(self, threshold=300):
        self.threshold = threshold
        self.calls: list[list[int]] = []

    def segment_slices(self, volume, requests):
        self.calls.append([r.z for r in requests])
        out = []
        for r in requests:
            bright = volume.array[r.z] > self.threshold
            if r.guide is None or not r.guide.any():
                out.append(np.zeros_like(bright, np.uint8))
                continue
            from scipy import ndimage

            near = ndimage.binary_dilation(r.guide > 0, iterations=3)
            out.append((bright & near).astype(np.uint8))
        return out


class CopyGuide:
    """A fake that returns its guide while the object continues (``alive`` slices)."""

    def __init__(self, alive, empty_from_below_at=None):
        self.alive, self.empty_from_below_at = set(alive), empty_from_below_at
        self.calls: list[list[int]] = []

    def segment_slices(self, volume, requests):
        self.calls.append([r.z for r in requests])
        out = []
        for r in requests:
            g = (r.guide > 0).astype(np.uint8)
            if r.z not in self.alive or (r.z == self.empty_from_below_at and g[:, :20].any()):
                g = np.zeros_like(g)
            out.append(g)
        return out


def _slices_with(mask):
    return [int(z) for z in np.nonzero(mask.reshape(mask.shape[0], -1).any(1))[0]]


def test_propagation_runs_both_ways_and_stops_where_the_object_ends():
    vol, lab = _volume()
    obj = lab == 1  # slices 2..9
    fake = ThresholdSegmenter(threshold=300)
    seen = []
    cb = Callbacks(on_progress=lambda d, t: seen.append((d, t)))
    prop = propagate(fake, vol, {5: obj[5]}, callbacks=cb)
    assert _slices_with(prop.mask) == list(range(2, 10))
    assert prop.stopped == [1, 10]  # the first empty slice each way, and no further
    assert prop.segmented == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    # the bright square (label 2) and disc (3) are not part of the object
    assert not prop.mask[lab == 2].any() and not prop.mask[lab == 3].any()
    assert prop.mask[obj].mean() > 0.99
    assert fake.calls[0] == [4, 6]  # both directions go to the model together
    assert seen[-1] == (11, 11)
    with pytest.raises(Cancelled):
        propagate(fake, vol, {5: obj[5]}, callbacks=Callbacks(cancel=lambda: True))
    pic = Volume(vol.array[0], (1.0, 1.0), (0.0, 0.0), (1, 0, 0, 1), kind="image2d")
    with pytest.raises(LLM4SegError, match="needs a volume"):
        propagate(fake, pic, {0: obj[0]})


def _halves(h=40, w=48):
    left = np.zeros((h, w), np.uint8)
    left[10:30, 5:15] = 1
    right = np.zeros((h, w), np.uint8)
    right[10:30, 30:40] = 1
    return left, right


def test_between_two_seeds_the_interpolated_outline_is_the_guide():
    from llm4seg_core.postprocess import interpolate_between, pixel_mm

    vol, _ = _volume()
    small, large = np.zeros((40, 48), np.uint8), np.zeros((40, 48), np.uint8)
    small[16:24, 18:26] = 1
    large[8:32, 10:34] = 1
    fake = CopyGuide(alive=range(12))
    prop = propagate(fake, vol, {2: small, 10: large}, shrink=0)
    want = interpolate_between(small, large, 7, pixel_mm(vol))
    for i, z in enumerate(range(3, 10)):
        assert np.array_equal(prop.mask[z], want[i]), z
    areas = [int(prop.mask[z].sum()) for z in range(2, 11)]
    assert areas == sorted(areas) and areas[0] < areas[-1]  # it grows from one seed to the other
    assert fake.calls[0] == [3, 4, 5, 6, 7, 8, 9]  # the gap in one batch, before the walks
    assert sorted(z for c in fake.calls for z in c) == [0, 1, 3, 4, 5, 6, 7, 8, 9, 11]  # each once
    # unshrunk, a walk copying its guide runs to the volume's end
    assert np.array_equal(prop.mask[0], small) and np.array_equal(prop.mask[11], large)
    # a slice between the seeds where the model sees nothing stays empty; nothing stops
    prop = propagate(CopyGuide(alive=set(range(12)) - {6}), vol, {2: small, 10: large}, shrink=0)
    assert not prop.mask[6].any() and prop.mask[5].any() and prop.stopped == []


def test_a_walk_shrinks_its_guide_and_ends_where_it_vanishes():
    vol, _ = _volume()  # slices 2 mm apart, 1 mm pixels: 0.75 x 2 = 1.5 pixels a slice
    left, _ = _halves()  # 20 x 10
    fake = CopyGuide(alive=range(12))
    prop = propagate(fake, vol, {5: left})
    erode = lambda m, k: ndimage.binary_erosion(m, iterations=k).astype(np.uint8)  # noqa: E731
    assert np.array_equal(prop.mask[4], erode(left, 1))  # 1.5: one pixel, 0.5 carried
    assert np.array_equal(prop.mask[3], erode(left, 3))  # 2.0: two more
    assert np.array_equal(prop.mask[6], erode(left, 1))  # the same going up
    assert _slices_with(prop.mask) == [2, 3, 4, 5, 6, 7, 8]  # 10 wide: gone after 5 pixels a side
    assert prop.stopped == [1, 9]  # where the shrunk guide vanished; no model call there
    assert sorted(z for c in fake.calls for z in c) == [2, 3, 4, 6, 7, 8]
    # an empty corrected slice bounds the object: no walk from it, none past it
    prop = propagate(CopyGuide(alive=range(12)), vol, {2: left, 6: np.zeros_like(left)})
    assert _slices_with(prop.mask) == [0, 1, 2, 3, 4, 5]


def test_propagate_mask_keeps_the_corrected_slices_and_each_label():
    vol, lab = _volume()
    mask = np.zeros_like(lab)
    mask[5] = lab[5]  # labels 1, 2 and 3 on the corrected slice
    mask[0] = 1  # junk on an uncorrected slice is replaced
    out, props = propagate_mask(ThresholdSegmenter(threshold=300), vol, mask, [5])
    assert sorted(props) == [1, 2, 3]
    assert np.array_equal(out[5], lab[5])
    assert not out[0].any()
    assert _slices_with(out == 1) == list(range(2, 10))
    assert _slices_with(out == 2) == [4, 5, 6, 7]
    with pytest.raises(LLM4SegError, match="holds no label"):
        propagate_mask(ThresholdSegmenter(), vol, mask, [11])
    with pytest.raises(LLM4SegError, match="outside the image's slices"):
        propagate_mask(ThresholdSegmenter(), vol, mask, [5, 12])


# ------------------------------------------------------------------ the prompted dataset


def test_prompted_items_have_the_prompt_channels_and_never_an_uncontoured_label(volume_set):
    src = open_dataset(volume_set)
    ds = PromptedSlices(src, "train", TINY_SPEC, seed=0)
    kinds = {"guide": 0, "box": 0, "clicks": 0, "ended": 0}
    for i in range(len(ds)):
        ref, value, prompts, guide, target = ds.draw(i)
        if ref.case == "a":
            assert value != 3  # drawn in case a, but not contoured there
        x, y = ds[i]
        assert x.shape == (1 + 4, 32, 32) and x.dtype == torch.float32
        assert y.shape == (32, 32) and y.dtype == torch.uint8 and int(y.max()) <= 1
        assert ((x[1:] == 0) | (x[1:] == 1)).all()
        if prompts.box is not None:
            kinds["box"] += 1
        elif guide is not None and not prompts.points:
            kinds["guide"] += 1
        else:
            kinds["clicks"] += 1
            assert prompts.points[0].positive and target[prompts.points[0].y, prompts.points[0].x]
        if not target.any():
            kinds["ended"] += 1
            assert guide is not None and guide.any()
    assert all(kinds.values()), kinds
    values_b = {ds.draw(i)[1] for i in range(len(ds)) if ds.draw(i)[0].case == "b"}
    assert 3 in values_b  # contoured in case b: an object there
    # the image channel is the Segmenter's preprocessing of the same slice
    ref = ds.draw(0)[0]
    vol, _ = src.read_case(ref.case)
    want = to_model_input(slice_stack(vol, [ref.z], 1), intensity_range(vol, "auto"), 32)[0]
    assert torch.equal(ds[0][0][:1], want)
    # seeded: the same items again; another epoch, other prompts
    assert torch.equal(ds[3][0], ds[3][0])
    before = [ds[i][0] for i in range(6)]
    ds.set_epoch(1)
    assert any(not torch.equal(a, ds[i][0]) for i, a in enumerate(before))


def test_prompted_2d_items_and_a_mix_of_datasets(picture_set, volume_set, tmp_path):
    mix = open_prompted([picture_set, volume_set], "train", TINY_SPEC, items=10)
    assert len(mix) == 20
    x, y = mix[0]
    assert x.shape == (5, 32, 32) and set(np.unique(y.numpy())) <= {0, 1}
    pics = mix.datasets[0]
    guides = [pics.draw(i) for i in range(10)]
    for ref, value, prompts, guide, target in guides:
        assert value in (1, 2) and target.any()
        assert guide is None or guide.shape == (30, 50)
    mix.set_epoch(2)
    assert all(d.epoch == 2 for d in mix.datasets)
    held = tmp_path / "colin27_aal"
    held.mkdir()
    with pytest.raises(LLM4SegError, match="held out"):
        open_prompted([held], "train", TINY_SPEC)


# ------------------------------------------------------------------ a tiny prompt model


def test_a_tiny_prompt_model_trains_and_segments_through_the_prompt_segmenter(volume_set, tmp_path):
    from llm4seg_core.store import load_checkpoint, save_checkpoint
    from llm4seg_core.training import TrainConfig, Trainer

    ds = PromptedSlices(open_dataset(volume_set), "train", TINY_SPEC, seed=0, items=10)
    model = build_model(TINY_SPEC)
    assert model.net.stem[0].in_channels == 5  # 1 image channel + 4 prompt maps
    cfg = TrainConfig(epochs=1, max_steps=5, batch_size=2, device="cpu", lr=0.01)
    result = Trainer(model, cfg).fit(ds)
    assert result.steps == 5 and np.isfinite(result.history[-1]["loss"])
    vol, lab = _volume()
    seg = PromptSegmenter(model, device="cpu", engine="torch")
    prompts = SlicePrompts((Point(14, 14),), Box(6, 4, 22, 24))
    x = seg.inputs(vol, [SliceRequest(5, prompts, lab[5] == 1)])
    assert x.shape == (1, 5, 32, 32)
    assert torch.equal(x[0, 1:], torch.from_numpy(prompt_maps(prompts, lab[5] == 1, (40, 48), 32)))
    out: dict = {}

    def work():
        try:
            out["mask"] = seg.segment_slice(vol, 5, prompts)
            out["prop"] = segment_prompted(seg, vol, {5: prompts}, propagate_from=True)
        except Exception as exc:  # noqa: BLE001 - reported below
            out["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join(120)
    assert "error" not in out, out.get("error")
    mask = out["mask"]
    assert mask.shape == (40, 48) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert out["prop"].mask.shape == vol.spatial_shape and 5 in out["prop"].segmented
    # saved and loaded back as the prompt task's model
    path = save_checkpoint(model, tmp_path / "p.safetensors", {"task": "prompt"})
    again = PromptSegmenter.load(str(path), device="cpu", engine="torch")
    assert again.trained and again.task == "prompt" and again.model.spec == TINY_SPEC
    assert np.array_equal(again.segment_slice(vol, 5, prompts), mask)
    assert load_checkpoint(path)[0].spec.prompt_channels == 4


def test_old_specs_and_checkpoints_load_and_prompt_specs_round_trip(tmp_path):
    from llm4seg_core.store import load_checkpoint, save_checkpoint

    old = ('{"attention": "bidirectional", "depths": [1, 1, 1, 3, 1], "dims": [8, 8, 16, 16, 32], '
           '"freeze_llm": true, "image_size": 32, "in_channels": 1, "intensity": "auto", '
           '"kernels": [3, 3, 7, 7, 7], "label_names": [], "llm_layer": 14, "llm_mode": "none", '
           '"llm_source": "smollm2", "num_classes": 1, "positional": "rope2d"}')
    spec = ModelSpec.from_json(old)
    assert spec.prompt_channels == 0 and spec.total_in_channels == 1
    assert spec.to_json() == old  # a spec without prompts writes what it always wrote
    path = save_checkpoint(build_model(spec), tmp_path / "old.safetensors")
    model, _ = load_checkpoint(path)
    assert model.spec == spec and model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    p = PRESETS["prompt-llm4seg"]
    assert (p.image_size, p.in_channels, p.prompt_channels, p.llm_mode) == (128, 1, 4, "pretrained")
    assert PRESETS["prompt-cmunext"] == p.with_(llm_mode="none")
    assert ModelSpec.from_json(TINY_SPEC.to_json()) == TINY_SPEC
    net = build_model(TINY_SPEC)
    assert net(torch.zeros(2, 5, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(RuntimeError):
        net(torch.zeros(1, 1, 32, 32))  # the prompt channels are part of the input
    with pytest.raises(LLM4SegError, match="prompt_channels must be 0"):
        ModelSpec(prompt_channels=2)
    from llm4seg_core.fastpath import _check_input

    assert _check_input(TINY_SPEC).shape == (2, 5, 32, 32)
    from llm4seg_core.store.tasks import is_task_name

    assert is_task_name("prompt")  # the task's name is not a preset's


# ------------------------------------------------------------------ command line


def _run(argv, capsys):
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [BAD_PROMPTS[i] for i in (0, 1, 2, 4, 6, 7)])
def test_cli_bad_prompts_exit_2_with_one_line(tmp_path, capsys, text, message):
    src, _, _ = _vol_file(tmp_path)
    f = tmp_path / "p.json"
    f.write_text(text)
    out = tmp_path / "m.nii.gz"
    rc, err = _run(["segment", str(src), "-o", str(out), "--prompts", str(f), *CLI_TINY], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("llm4seg: error: ")
    assert message in lines[0]
    assert not out.exists()


def test_cli_prompts_need_a_prompt_model(tmp_path, capsys, no_shipped_prompt_model):
    src, _, _ = _vol_file(tmp_path)
    f = tmp_path / "p.json"
    f.write_text('[{"type": "point", "zyx": [5, 14, 14]}]')
    out = tmp_path / "m.nii.gz"
    for extra in ([], ["--model", "prompt"]):
        rc, err = _run(["segment", str(src), "-o", str(out), "--prompts", str(f), "-q", *extra],
                       capsys)
        assert rc == 2 and "no prompt model: task 'prompt' has no version" in err, err
    rc, err = _run(["segment", str(src), "-o", str(out), "--prompts", str(f), "-q",
                    "--model", "cmunext,image_size=32,dims=8:8:16:16:32"], capsys)
    assert rc == 2 and "is not a prompt model" in err
    rc, err = _run(["segment", str(src), "-o", str(out), *CLI_TINY], capsys)
    assert rc == 2 and "is a prompt model: give it --prompts" in err
    for bad, msg in ((["--slices", "3"], "--slices names the corrected slices"),
                     (["--from-mask", str(src)], "--from-mask needs --slices"),
                     (["--propagate"], "--propagate carries the object")):
        rc, err = _run(["segment", str(src), "-o", str(out), *bad, *CLI_TINY], capsys)
        assert rc == 2 and msg in err, (bad, err)
    assert not out.exists()


def test_cli_prompted_untrained_spec_runs_with_the_untrained_notice(tmp_path, capsys):
    src, vol, lab = _vol_file(tmp_path)
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"type": "point", "zyx": [5, 14, 14]},
                             {"type": "box", "z": 5, "yx0": [6, 4], "yx1": [22, 24]}]))
    out = tmp_path / "m.nii.gz"
    rc, err = _run(["segment", str(src), "-o", str(out), "--prompts", str(f), "--propagate",
                    *CLI_TINY], capsys)
    assert rc == 0, err
    assert "UNTRAINED" in err
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
    mask_path = tmp_path / "corrected.nii.gz"
    corrected = np.zeros_like(lab)
    corrected[5] = lab[5]
    write_mask(corrected, vol, mask_path)
    out2 = tmp_path / "m2.nii.gz"
    rc, err = _run(["segment", str(src), "-o", str(out2), "--from-mask", str(mask_path),
                    "--slices", "5", *CLI_TINY], capsys)
    assert rc == 0, err
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out2)))
    assert np.array_equal(got[5], lab[5])  # the corrected slice is kept as it is
    rc, err = _run(["segment", str(src), "-o", str(out2), "--from-mask", str(mask_path),
                    "--slices", "5,40", *CLI_TINY], capsys)
    assert rc == 2 and "outside the image's slices" in err


def test_cli_uses_the_prompt_task_of_the_store(tmp_path, capsys):
    from llm4seg_core.store import ModelStore

    model = build_model(TINY_SPEC)
    ModelStore().save(model, task="prompt", note="tiny test prompt model")
    src, _, _ = _vol_file(tmp_path)
    f = tmp_path / "p.json"
    f.write_text('[{"type": "point", "zyx": [5, 14, 14]}]')
    out = tmp_path / "m.nii.gz"
    rc, err = _run(["segment", str(src), "-o", str(out), "--prompts", str(f), "--device", "cpu",
                    "--engine", "torch"], capsys)
    assert rc == 0, err
    assert "UNTRAINED" not in err and "v0001" in err
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).shape == (12, 40, 48)


def test_the_fast_cpu_path_takes_a_prompt_models_input(tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is not installed")
    from llm4seg_core import fastpath

    monkeypatch.setattr(fastpath, "cache_dir", lambda: tmp_path / "openvino")
    fastpath.forget_compiled()
    vol, lab = _volume()
    prompts = SlicePrompts((Point(14, 14),))
    fast = PromptSegmenter(build_model(TINY_SPEC), device="cpu", engine="openvino")
    plain = PromptSegmenter(build_model(TINY_SPEC), device="cpu", engine="torch")
    got = fast.segment_slices(vol, [SliceRequest(5, prompts), SliceRequest(6, None, lab[6] == 1)])
    want = plain.segment_slices(vol, [SliceRequest(5, prompts), SliceRequest(6, None, lab[6] == 1)])
    assert fast._forward is not fast.model  # the converted form ran
    assert all((a == b).mean() > 0.999 for a, b in zip(got, want, strict=True))
    fastpath.forget_compiled()


def test_cli_prompts_on_a_2d_picture(tmp_path, capsys):
    rgb = np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    src = tmp_path / "us.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(src))
    f = tmp_path / "p.json"
    f.write_text('[{"type": "point", "yx": [15, 40]},'
                 ' {"type": "box", "yx0": [2, 30], "yx1": [28, 49]}]')
    out = tmp_path / "mask.png"
    rc, err = _run(["segment", str(src), "-o", str(out), "--prompts", str(f), *CLI_TINY], capsys)
    assert rc == 0, err
    assert read_image(out).array.shape == (30, 50)
    rc, err = _run(["segment", str(src), "-o", str(tmp_path / "m2.png"), "--prompts", str(f),
                    "--propagate", *CLI_TINY], capsys)
    assert rc == 2 and "--propagate needs a volume" in err
    f.write_text('[{"type": "point", "zyx": [0, 15, 40]}]')
    rc, err = _run(["segment", str(src), "-o", str(tmp_path / "m3.png"), "--prompts", str(f),
                    *CLI_TINY], capsys)
    assert rc == 2 and '"yx": [y, x] (no z)' in err


def test_a_box_is_segmented_in_a_window_of_twice_its_size():
    from llm4seg_core.prompts import Box
    from llm4seg_core.prompts.segment import MIN_WINDOW, box_window

    assert box_window(Box(200, 300, 219, 309), (512, 512)) == (178, 272, MIN_WINDOW)  # centred
    assert box_window(Box(100, 100, 199, 149), (512, 512)) == (50, 26, 198)
    assert box_window(Box(0, 490, 60, 511), (512, 512)) == (0, 392, 120)  # moved inside
    assert box_window(Box(0, 0, 300, 300), (400, 500)) == (0, 0, 400)  # at most the slice
    assert box_window(Box(5, 5, 9, 9), (30, 40)) == (0, 0, 30)


def test_a_boxed_request_sees_only_its_window_and_the_mask_is_empty_outside():
    """A model that marks every pixel: the boxed request's mask is exactly its window, and the
    network saw the window (its input's image channel is the window's pixels, resized)."""
    from llm4seg_core.io import Volume
    from llm4seg_core.io.volume import unit_geometry
    from llm4seg_core.prompts import Box, Point, PromptSegmenter, SlicePrompts
    from llm4seg_core.prompts.segment import SliceRequest, box_window

    model = build_model(parse_spec("prompt-cmunext,image_size=32,dims=8:8:16:16:32"))
    seen = []

    class Everything(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.ones(x.shape[0], 1, *x.shape[-2:]) * 5

    arr = np.zeros((3, 200, 160), np.int16)
    arr[1, 100:110, 60:70] = 1000
    vol = Volume(arr, *unit_geometry(3))
    seg = PromptSegmenter(model, device="cpu", engine="torch", trained=False)
    seg._forward = Everything()
    box = Box(100, 60, 109, 69)
    reqs = [SliceRequest(1, SlicePrompts((Point(105, 65), Point(5, 5, False)), box)),
            SliceRequest(1, SlicePrompts((Point(105, 65),)))]
    boxed, whole = seg.segment_slices(vol, reqs)
    y0, x0, side = box_window(box, (200, 160))
    want = np.zeros((200, 160), np.uint8)
    want[y0:y0 + side, x0:x0 + side] = 1
    assert np.array_equal(boxed, want) and whole.all()
    # the boxed input: the bright square fills the window's middle; the far click was dropped
    x = seen[0][0]
    assert float(x[0].max()) > float(x[0].min()) and int(x[2].sum()) == 0
