"""Training data sources: 2D folders, 3D volume pairs, corrected slices."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from llm4seg_core.datasets import (
    CorrectionSet, Folder2D, LabelMap, Split, VolumePairs, open_dataset,
)
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import read_image
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input
from llm4seg_core.slices import parse_slices

from .conftest import make_ct

SPEC = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32))


def write_png(path, arr):
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


def make_folder(root, n=5, size=40, rgb=False, values=(255,), ext=".png", mask_ext=".png"):
    (root / "images").mkdir(parents=True)
    (root / "masks" / "0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size, size + 4, 3) if rgb else (size, size + 4)
        img = rng.integers(0, 255, shape).astype(np.uint8)
        mask = np.zeros((size, size + 4), np.uint8)
        for k, v in enumerate(values):
            mask[5 + 8 * k: 12 + 8 * k, 6:20] = v
        if rgb:
            sitk.WriteImage(sitk.GetImageFromArray(img, isVector=True), str(root / "images" / f"case{i}{ext}"))
        else:
            write_png(root / "images" / f"case{i}{ext}", img)
        write_png(root / "masks" / "0" / f"case{i}{mask_ext}", mask)
    return root


def test_parse_slices():
    assert parse_slices("3,7,10-12") == [3, 7, 10, 11, 12]
    assert parse_slices(" 5, 1 ,1") == [1, 5]
    assert parse_slices([4, 2, 2]) == [2, 4]
    for bad in ("a", "3-1", "", "1;2"):
        with pytest.raises(LLM4SegError):
            parse_slices(bad)


def test_2d_folder_with_split_files(tmp_path):
    root = make_folder(tmp_path / "busi")
    (root / "busi_train.txt").write_text("case0\ncase1.png\ncase2\n")
    (root / "busi_val.txt").write_text("case3\ncase4.png\n")
    data = open_dataset(root)
    assert isinstance(data, Folder2D)
    assert data.split.train == ["case0", "case1", "case2"] and data.split.val == ["case3", "case4"]
    lm = data.label_map()
    assert lm.binary and lm.num_classes == 1
    ds = data.dataset("train", SPEC)
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.uint8 and set(y.unique().tolist()) == {0, 1}
    # the input is exactly what inference computes
    vol = read_image(root / "images" / "case0.png")
    want = to_model_input(slice_stack(vol, [0], 1), intensity_range(vol, "auto"), 32)[0]
    assert torch.equal(x, want)
    # a split file naming an unknown case
    (root / "busi_val.txt").write_text("case3\nnope\n")
    with pytest.raises(LLM4SegError, match="nope"):
        open_dataset(root)


def test_2d_folder_without_split_files_is_seeded(tmp_path):
    root = make_folder(tmp_path / "d", n=10)
    a = open_dataset(root, seed=1)
    b = open_dataset(root, seed=1)
    c = open_dataset(root, seed=2)
    assert len(a.split.train) == 8 and len(a.split.val) == 2
    assert a.split.train == b.split.train and a.split.val == b.split.val
    assert sorted(a.split.train + a.split.val) == a.cases
    assert c.split.val != a.split.val or c.split.train != a.split.train
    # stored with a run and read back: the same split whatever the seed
    path = a.split.save(tmp_path / "split.json")
    again = open_dataset(root, seed=99, split=Split.load(path))
    assert again.split.val == a.split.val


def test_2d_folder_errors_name_the_files(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "masks" / "0" / "case3.png").unlink()
    with pytest.raises(LLM4SegError, match="case3.png"):
        open_dataset(root)
    write_png(root / "masks" / "0" / "case3.png", np.zeros((40, 44), np.uint8))
    write_png(root / "masks" / "0" / "extra.png", np.zeros((40, 44), np.uint8))
    with pytest.raises(LLM4SegError, match="extra.png"):
        open_dataset(root)
    (root / "masks" / "0" / "extra.png").unlink()
    write_png(root / "masks" / "0" / "case2.png", np.zeros((20, 20), np.uint8))  # wrong shape
    data = open_dataset(root)
    with pytest.raises(LLM4SegError, match="case2"):
        data.item("case2", 0, data.dataset("train", SPEC).grid, LabelMap((1,)))
    with pytest.raises(LLM4SegError, match="images/"):
        open_dataset(tmp_path)  # no data at all
    with pytest.raises(LLM4SegError):
        open_dataset(tmp_path / "missing")


def test_2d_multiclass_and_rgb(tmp_path):
    root = make_folder(tmp_path / "mc", n=3, values=(1, 2), rgb=True, ext=".bmp")
    data = open_dataset(root)
    lm = data.label_map()
    assert lm.values == (1, 2) and lm.num_classes == 3
    assert data.is_rgb
    ds = data.dataset("train", SPEC.with_(in_channels=3, num_classes=3))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and set(y.unique().tolist()) == {0, 1, 2}
    # gray-level class codes (0/128/255) map to 1..N in order
    gl = LabelMap((128, 255))
    assert gl.apply(np.array([0, 128, 255], np.uint8)).tolist() == [0, 1, 2]


def write_volume(path, arr, spacing=(0.8, 0.8, 2.5)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def volume_pair(n=6, size=40, labelled=(2, 3), value=1):
    vol = make_ct(n=n, size=size)
    lab = np.zeros(vol.array.shape, np.uint8)
    for z in labelled:
        lab[z, 10:20, 12:22] = value
    return vol.array, lab


def test_volume_pairs_from_image_label_files(tmp_path):
    for case in ("a", "b", "c"):
        img, lab = volume_pair()
        write_volume(tmp_path / f"{case}_image.nrrd", img)
        write_volume(tmp_path / f"{case}_label.nrrd", lab)
    data = open_dataset(tmp_path, seed=0)
    assert isinstance(data, VolumePairs) and data.cases == ["a", "b", "c"]
    assert len(data.split.val) == 1 and len(data.split.train) == 2
    # labelled slices, plus ceil(25% of 2) = 1 empty slice per case
    sl = data.slices_of("a")
    assert {2, 3} <= set(sl) and len(sl) == 3
    ds = data.dataset("train", SPEC)
    assert len(ds) == 6
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and y.shape == (32, 32)
    # volumes are cached in their file dtype, never as float
    for (vol, lab, _), _size in data._cache.items.values():
        assert vol.array.dtype == np.int16 and lab.dtype == np.uint8
    # three input channels = neighbouring slices, as in inference
    x3, _ = data.dataset("train", SPEC.with_(in_channels=3))[0]
    assert x3.shape == (3, 32, 32)
    (tmp_path / "c_label.nrrd").unlink()
    with pytest.raises(LLM4SegError, match="c_image.nrrd"):
        open_dataset(tmp_path)


def test_volume_pairs_nnunet_layout_and_shape_mismatch(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in ("p1", "p2"):
        img, lab = volume_pair(value=2)
        write_volume(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", img)
        write_volume(tmp_path / "labelsTr" / f"{case}.nii.gz", lab)
    data = open_dataset(tmp_path)
    assert data.cases == ["p1", "p2"]
    assert data.label_map().values == (2,)
    write_volume(tmp_path / "labelsTr" / "p2.nii.gz", np.zeros((6, 20, 20), np.uint8))
    data = open_dataset(tmp_path)
    with pytest.raises(LLM4SegError, match="p2.nii.gz"):
        data.slices_of("p2")
    write_volume(tmp_path / "labelsTr" / "zz.nii.gz", np.zeros((6, 20, 20), np.uint8))
    with pytest.raises(LLM4SegError, match="zz.nii.gz"):
        open_dataset(tmp_path)


def test_correction_set_reads_only_its_slices():
    vol = make_ct(n=6, size=40)
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[1, 5:15, 5:15] = 1
    labels[4, 20:30, 20:30] = 1  # not corrected: never read
    cs = CorrectionSet(vol, labels, [1, 3])
    assert cs.slices == [1, 3] and len(cs) == 2
    labels[1] = 0  # later edits do not leak in
    assert cs.slice_labels(1).sum() == 100
    ds = cs.dataset(SPEC, LabelMap((1,)))
    assert len(ds) == 2
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and y.sum() > 0
    assert ds[1][1].sum() == 0
    with pytest.raises(LLM4SegError, match="no corrected slices"):
        CorrectionSet(vol, labels, [])
    with pytest.raises(LLM4SegError, match="outside"):
        CorrectionSet(vol, labels, [6])
    with pytest.raises(LLM4SegError, match="shape"):
        CorrectionSet(vol, labels[:3], [1])


def test_keep_in_memory_reads_each_item_once_within_budget():
    import torch

    from llm4seg_core.datasets.items import ModelGrid, SliceDataset
    from llm4seg_core.datasets.labels import LabelMap

    class Source:
        reads = 0

        def item(self, case, z, grid, label_map):
            Source.reads += 1
            return torch.zeros(1, 16, 16), torch.zeros(16, 16, dtype=torch.uint8)

    item_bytes = 16 * 16 * 4 + 16 * 16
    ds = SliceDataset(Source(), [("a", 0), ("b", 0), ("c", 0)], ModelGrid(1, 16), LabelMap((1,)))
    ds.keep_in_memory(2.5 * item_bytes / 2**20)  # room for two items
    for _ in range(3):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (1, 16, 16)
    assert ds.kept_items == 2
    assert Source.reads == 3 + 2  # two kept after the first pass, the third read every time
    plain = SliceDataset(Source(), [("a", 0)], ModelGrid(1, 16), LabelMap((1,)))
    plain[0], plain[0]
    assert plain.kept_items == 0
