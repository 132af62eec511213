"""Tests of llm4seg_core.io on real files: pydicom's CT / MR / ultrasound DICOM,
the pyradiomics NRRD demo scans, and series folders built from real CT slices."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from llm4seg_core.data import demo_case, fetch_demo_data
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import (
    SUPPORTED_MASK_SUFFIXES,
    SUPPORTED_READ_SUFFIXES,
    DicomSeries,
    Volume,
    folder_has_dicom,
    is_dicom_file,
    list_dicom_series,
    mask_suffix_for,
    read_image,
    read_mask,
    suffix_of,
    write_mask,
)
from tests.helpers import pydicom_file, write_ct_series

SERIES_A = "1.2.826.0.1.3680043.8.498.1001"
SERIES_B = "1.2.826.0.1.3680043.8.498.1002"


def _geometry(image: Path | Volume) -> tuple:
    vol = image if isinstance(image, Volume) else read_image(image)
    return vol.spatial_shape, vol.spacing, vol.origin, vol.direction


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return fetch_demo_data(log=lambda _msg: None)


@pytest.fixture(scope="session")
def breast(demo_dir: Path) -> tuple[Volume, np.ndarray]:
    image, label = demo_case("breast1")
    return read_image(image), read_mask(label)


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two CT series (5 and 3 slices, the second in a subfolder), a localizer of another
    size inside series A, a non-DICOM file and a DICOMDIR-like stray file."""
    root = tmp_path_factory.mktemp("dicom_series")
    write_ct_series(root, SERIES_A, 5, "Axial 2.5 mm", z0=-75.0, dz=2.5)
    write_ct_series(root / "sub", SERIES_B, 3, "Axial 5 mm", z0=-80.0, dz=5.0)
    localizer = pydicom.dcmread(pydicom_file("MR_small.dcm"))  # 64x64: another size, dropped
    localizer.SeriesInstanceUID = SERIES_A
    localizer.save_as(root / "localizer.dcm")
    (root / "notes.txt").write_text("not an image\n")
    return root


# --------------------------------------------------------------------------- DICOM folders


def test_list_dicom_series_largest_first_sorted_by_position(series_folder: Path) -> None:
    series = list_dicom_series(series_folder)
    assert [s.uid for s in series] == [SERIES_A, SERIES_B]
    a, b = series
    assert isinstance(a, DicomSeries)
    assert (a.n_files, b.n_files) == (5, 3)
    assert (a.description, b.description) == ("Axial 2.5 mm", "Axial 5 mm")
    assert a.modality == "CT" and b.modality == "CT"
    assert len(a.files) == 5 and all(f.parent == series_folder for f in a.files)
    assert all(f.parent == series_folder / "sub" for f in b.files)
    # names run against position: the sorted list is in position order, i.e. reversed names
    assert [f.name for f in a.files] == [f"img_{i:03d}.dcm" for i in range(5, 0, -1)]
    zs = [
        float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in a.files
    ]
    assert zs == sorted(zs)
    assert "Axial 2.5 mm" in a.label and "5 files" in a.label


def test_read_dicom_folder_reads_largest_series(series_folder: Path) -> None:
    vol = read_image(series_folder)
    assert vol.kind == "volume" and not vol.is_rgb
    assert vol.array.shape == (5, 128, 128)
    assert vol.array.dtype == np.int16  # HU, narrowed from GDCM's int32
    assert vol.modality == "CT"
    assert vol.meta["series_uid"] == SERIES_A
    assert vol.meta["series_description"] == "Axial 2.5 mm"
    assert vol.meta["n_series_in_folder"] == "2"
    assert "PatientName" not in vol.meta and "patient_name" not in vol.meta
    assert vol.spacing[:2] == pytest.approx((0.661468, 0.661468))
    assert vol.spacing[2] == pytest.approx(2.5)
    assert vol.origin == pytest.approx((-158.135803, -179.035797, -75.0))
    # slice k carries marker 1000 + k (stored) -> HU 1000 + k - 1024
    assert [int(v) for v in vol.array[:, 0, 0]] == [k - 24 for k in range(5)]
    assert vol.n_slices == 5 and vol.source == str(series_folder)


def test_read_dicom_folder_by_series_uid(series_folder: Path) -> None:
    vol = read_image(series_folder, series_uid=SERIES_B)
    assert vol.array.shape == (3, 128, 128)
    assert vol.spacing[2] == pytest.approx(5.0)
    assert vol.origin[2] == pytest.approx(-80.0)
    assert vol.meta["series_uid"] == SERIES_B


def test_unknown_series_uid_lists_available(series_folder: Path) -> None:
    with pytest.raises(LLM4SegError) as err:
        read_image(series_folder, series_uid="1.2.3.4.5")
    msg = str(err.value)
    assert "1.2.3.4.5" in msg and SERIES_A in msg and SERIES_B in msg
    assert "\n" not in msg


def test_single_slice_series_folder_is_a_volume(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "one", SERIES_A, 1, "single", z0=10.0, dz=1.0)
    vol = read_image(tmp_path / "one")
    assert vol.kind == "volume" and vol.n_slices == 1 and vol.array.shape == (1, 128, 128)
    assert vol.origin[2] == pytest.approx(10.0)


def test_dicom_series_mask_round_trip(series_folder: Path, tmp_path: Path) -> None:
    vol = read_image(series_folder)
    mask = np.zeros(vol.spatial_shape, np.uint8)
    mask[1:4, 30:60, 40:90] = 1
    mask[2, 70:80, 70:80] = 2
    out = write_mask(mask, vol, tmp_path / "ct_mask.nrrd")
    back = read_image(out)
    assert _geometry(back) == _geometry(vol)
    np.testing.assert_array_equal(read_mask(out, vol), mask)


# --------------------------------------------------------------------------- DICOM files


def test_dicom_ct_file_hu_values_match_pydicom() -> None:
    path = pydicom_file("693_UNCR.dcm")  # real 512x512 head CT slice
    vol = read_image(path)
    ds = pydicom.dcmread(path)
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert vol.kind == "volume" and vol.n_slices == 1
    assert vol.array.shape == (1, 512, 512)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array[0], hu.astype(np.int16))
    assert vol.array.min() < -1000  # air in HU
    assert vol.modality == "CT"
    assert vol.spacing[:2] == pytest.approx((0.478516, 0.478516))
    assert vol.origin == pytest.approx((-122.5, -112.4, 47.0))
    assert vol.meta["window_center"] == "40" and vol.meta["window_width"] == "100"


def test_dicom_ultrasound_rgb_still_is_2d() -> None:
    path = pydicom_file("US1_UNCR.dcm")
    vol = read_image(path)
    assert vol.kind == "image2d" and vol.is_rgb and vol.modality == "US"
    assert vol.array.shape == (480, 640, 3) and vol.array.dtype == np.uint8
    assert vol.spatial_shape == (480, 640) and vol.n_slices == 1
    assert len(vol.spacing) == 2 and len(vol.direction) == 4
    np.testing.assert_array_equal(vol.array, pydicom.dcmread(path).pixel_array)


def test_dicom_ultrasound_multiframe_palette_is_rgb_stack() -> None:
    vol = read_image(pydicom_file("OBXXXX1A_2frame.dcm"))  # 2-frame palette-colour ultrasound
    assert vol.kind == "volume" and vol.is_rgb and vol.modality == "US"
    assert vol.array.shape == (2, 600, 800, 3) and vol.array.dtype == np.uint8
    assert vol.spatial_shape == (2, 600, 800) and vol.n_slices == 2


def test_dicom_multiframe_mr() -> None:
    vol = read_image(pydicom_file("emri_small.dcm"))
    assert vol.kind == "volume" and not vol.is_rgb and vol.modality == "MR"
    assert vol.array.shape == (10, 64, 64) and vol.array.dtype == np.uint16


def test_dicom_ultrasound_mask_png_round_trip(tmp_path: Path) -> None:
    vol = read_image(pydicom_file("US1_UNCR.dcm"))
    assert mask_suffix_for(vol) == ".png"
    mask = np.zeros(vol.spatial_shape, np.uint8)
    mask[100:200, 300:420] = 1
    out = write_mask(mask, vol, tmp_path / "us_mask.png")
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))) == {0, 255}
    back = read_image(out)
    assert back.kind == "image2d" and not back.is_rgb
    assert _geometry(back) == _geometry(vol)
    np.testing.assert_array_equal(read_mask(out, vol), mask)


def test_dicom_without_image_or_damaged(tmp_path: Path) -> None:
    with pytest.raises(LLM4SegError, match="without an image"):
        read_image(pydicom_file("rtplan.dcm"))
    with pytest.raises(LLM4SegError):
        read_image(pydicom_file("MR_truncated.dcm"))
    data = pydicom_file("693_UNCR.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 20000])  # header intact, pixel data cut short
    with pytest.raises(LLM4SegError, match="cut.dcm"):
        read_image(cut)


def test_dicom_file_without_suffix_is_recognised(tmp_path: Path) -> None:
    plain = tmp_path / "IM0001"
    shutil.copy(pydicom_file("CT_small.dcm"), plain)
    vol = read_image(plain)
    assert vol.modality == "CT" and vol.array.shape == (1, 128, 128)


# --------------------------------------------------------------------------- NRRD / NIfTI / MHA


def test_nrrd_ct_demo_case(demo_dir: Path) -> None:
    image, label = demo_case("lung1")
    vol = read_image(image)
    assert vol.kind == "volume" and vol.modality is None and not vol.is_rgb
    assert vol.array.shape == (48, 512, 512) and vol.array.dtype == np.int16
    assert vol.array.min() <= -1000 and vol.array.max() > 0  # HU
    assert vol.scale_zyx == tuple(reversed(vol.spacing))
    assert vol.translate_zyx == tuple(reversed(vol.origin))
    mask = read_mask(label, vol)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".seg.nrrd", ".mha"])
def test_volume_mask_round_trip(
    breast: tuple[Volume, np.ndarray], tmp_path: Path, suffix: str
) -> None:
    vol, label = breast
    mask = label.copy()
    mask[0, :5, :5] = 3  # multi-class labels are kept as they are
    out = write_mask(mask, vol, tmp_path / f"mask{suffix}")
    assert out == tmp_path / f"mask{suffix}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp file left
    back = read_image(out)
    assert back.array.dtype == np.uint8 and back.kind == "volume"
    assert back.spatial_shape == vol.spatial_shape
    if suffix == ".nii.gz":  # NIfTI stores geometry as float32
        assert back.spacing == pytest.approx(vol.spacing, rel=1e-6)
        assert back.origin == pytest.approx(vol.origin, abs=1e-4)
        assert back.direction == pytest.approx(vol.direction, abs=1e-6)
    else:
        assert (back.spacing, back.origin, back.direction) == (
            vol.spacing,
            vol.origin,
            vol.direction,
        )
    np.testing.assert_array_equal(read_mask(out, vol), mask)


def test_nifti_source_round_trip_is_exact(demo_dir: Path, tmp_path: Path) -> None:
    image, label = demo_case("brain1")  # flipped y direction
    src = tmp_path / "brain1.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(image)), str(src))
    vol = read_image(src)
    assert vol.array.dtype == np.int16 and vol.meta["format"] == "NIfTI"
    mask = read_mask(label, vol)
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        out = write_mask(mask, vol, tmp_path / f"m{suffix}")
        assert _geometry(out) == _geometry(vol)


def test_affine_and_to_sitk_agree_with_itk(demo_dir: Path) -> None:
    vol = read_image(demo_case("brain1")[0])
    img = vol.to_sitk()
    assert img.GetSize() == tuple(reversed(vol.spatial_shape))
    assert img.GetSpacing() == vol.spacing and img.GetOrigin() == vol.origin
    assert img.GetDirection() == vol.direction
    idx_zyx = (3, 17, 200)
    phys_xyz = img.TransformIndexToPhysicalPoint(tuple(reversed(idx_zyx)))
    got = vol.affine_zyx @ np.array([*idx_zyx, 1.0])
    np.testing.assert_allclose(got[:3], tuple(reversed(phys_xyz)), atol=1e-9)
    with pytest.raises(LLM4SegError, match="does not fit"):
        vol.to_sitk(np.zeros((2, 2, 2), np.uint8))


def test_4d_images(tmp_path: Path) -> None:
    frames = [sitk.GetImageFromArray(np.full((3, 4, 5), i, np.int16)) for i in range(2)]
    four_d = tmp_path / "fmri.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(four_d))
    with pytest.raises(LLM4SegError, match="4-D images"):
        read_image(four_d)
    single = tmp_path / "one_frame.nrrd"  # (x, y, z, 1): squeezed to 3-D
    sitk.WriteImage(sitk.JoinSeries(frames[:1]), str(single))
    vol = read_image(single)
    assert vol.kind == "volume" and vol.array.shape == (3, 4, 5) and len(vol.direction) == 9
    field_img = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True)
    vector = tmp_path / "displacement.nii.gz"  # a vector field is not RGB
    sitk.WriteImage(field_img, str(vector))
    with pytest.raises(LLM4SegError, match="not supported"):
        read_image(vector)


# --------------------------------------------------------------------------- 2-D pictures


def _write_picture(path: Path, array: np.ndarray) -> None:
    vector = array.ndim == 3
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path))


_rng = np.random.default_rng(7)
_PICTURES = {
    "gray8.png": (_rng.integers(0, 256, (60, 80)).astype(np.uint8), np.uint8, False),
    "gray16.png": (_rng.integers(0, 65536, (60, 80)).astype(np.uint16), np.uint16, False),
    "rgb8.png": (_rng.integers(0, 256, (60, 80, 3)).astype(np.uint8), np.uint8, True),
    "rgba8.png": (_rng.integers(0, 256, (60, 80, 4)).astype(np.uint8), np.uint8, True),
    "rgb8.bmp": (_rng.integers(0, 256, (60, 80, 3)).astype(np.uint8), np.uint8, True),
    "gray16.tif": (_rng.integers(0, 65536, (60, 80)).astype(np.uint16), np.uint16, False),
    "rgb8.tiff": (_rng.integers(0, 256, (60, 80, 3)).astype(np.uint8), np.uint8, True),
}


@pytest.mark.parametrize("name", sorted(_PICTURES))
def test_picture_read_and_png_mask_round_trip(tmp_path: Path, name: str) -> None:
    array, dtype, is_rgb = _PICTURES[name]
    src = tmp_path / name
    _write_picture(src, array)
    vol = read_image(src)
    assert vol.kind == "image2d" and vol.is_rgb == is_rgb and vol.modality is None
    assert vol.array.dtype == dtype
    np.testing.assert_array_equal(
        vol.array, array[..., :3] if array.ndim == 3 else array
    )  # alpha dropped
    assert (
        vol.spacing == (1.0, 1.0)
        and vol.origin == (0.0, 0.0)
        and vol.direction == (1.0, 0.0, 0.0, 1.0)
    )
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:50] = 1
    out = write_mask(mask, vol, tmp_path / "mask.png")
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert raw.dtype == np.uint8 and set(np.unique(raw)) == {0, 255}  # BUSI/ISIC/Kvasir convention
    assert _geometry(out) == _geometry(vol)
    np.testing.assert_array_equal(read_mask(out, vol), mask)
    multi = mask.copy()
    multi[40:50, 60:70] = 2  # multi-class labels are written as they are
    out2 = write_mask(multi, vol, tmp_path / "multi.png")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out2))), multi)
    np.testing.assert_array_equal(read_mask(out2, vol), multi)


def test_jpeg_picture_and_jpeg_mask(tmp_path: Path) -> None:
    gray = np.tile(np.linspace(0, 255, 80).astype(np.uint8), (60, 1))
    src = tmp_path / "scan.jpg"
    _write_picture(src, gray)
    vol = read_image(src)
    assert vol.kind == "image2d" and vol.array.shape == (60, 80) and vol.array.dtype == np.uint8
    jmask = np.zeros((60, 80), np.uint8)
    jmask[20:40, 20:60] = 255
    mpath = tmp_path / "mask.jpeg"  # Kvasir ships lossy JPEG masks
    _write_picture(mpath, jmask)
    np.testing.assert_array_equal(read_mask(mpath, vol), (jmask > 0).astype(np.uint8))


def test_multipage_tiff_is_a_volume(tmp_path: Path) -> None:
    stack = _rng.integers(0, 256, (4, 30, 40)).astype(np.uint8)
    src = tmp_path / "stack.tif"
    sitk.WriteImage(sitk.GetImageFromArray(stack), str(src))
    vol = read_image(src)
    assert vol.kind == "volume" and vol.array.shape == (4, 30, 40)
    np.testing.assert_array_equal(vol.array, stack)


def test_image2d_with_real_geometry_refuses_png(tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.arange(1200, dtype=np.int16).reshape(30, 40))
    img.SetSpacing((0.3, 0.7))
    img.SetOrigin((5.0, 6.0))
    src = tmp_path / "xray.nrrd"
    sitk.WriteImage(img, str(src))
    vol = read_image(src)
    assert vol.kind == "image2d" and vol.spacing == (0.3, 0.7)
    assert mask_suffix_for(vol) == ".nrrd"
    mask = np.zeros((30, 40), np.uint8)
    with pytest.raises(LLM4SegError, match="PNG cannot store"):
        write_mask(mask, vol, tmp_path / "m.png")
    out = write_mask(mask, vol, tmp_path / "m.nrrd")
    assert _geometry(out) == _geometry(vol)


# --------------------------------------------------------------------------- bad input


def test_nonexistent_path() -> None:
    with pytest.raises(LLM4SegError, match="no such file or folder"):
        read_image("/no/such/scan.nii.gz")


def test_empty_folder_and_folder_without_dicom(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LLM4SegError, match="is empty"):
        read_image(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hello")
    _write_picture(other / "photo.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(LLM4SegError, match="no DICOM images"):
        read_image(other)
    with pytest.raises(LLM4SegError, match="no DICOM images"):
        list_dicom_series(other)


def test_unsupported_suffix_and_empty_file(tmp_path: Path) -> None:
    doc = tmp_path / "report.docx"
    doc.write_bytes(b"PK\x03\x04 not an image")
    with pytest.raises(LLM4SegError, match="unsupported file type") as err:
        read_image(doc)
    assert ".nii.gz" in str(err.value)
    zero = tmp_path / "zero.nrrd"
    zero.write_bytes(b"")
    with pytest.raises(LLM4SegError, match="empty file"):
        read_image(zero)


def test_garbage_with_nifti_suffix(tmp_path: Path) -> None:
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8).tobytes())
    with pytest.raises(LLM4SegError, match="not a valid NIfTI"):
        read_image(bad)


def _truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_truncated_files(tmp_path: Path, breast: tuple[Volume, np.ndarray]) -> None:
    vol, _ = breast
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        full = tmp_path / f"full{suffix}"
        sitk.WriteImage(vol.to_sitk(), str(full), True)
        assert read_image(full).array.shape == vol.spatial_shape
        with pytest.raises(LLM4SegError, match="truncated|damaged"):
            read_image(_truncate(full, tmp_path / f"cut{suffix}"))
    pic = tmp_path / "full.jpg"
    _write_picture(pic, _rng.integers(0, 256, (120, 160, 3)).astype(np.uint8))
    with pytest.raises(LLM4SegError, match="truncated"):
        read_image(_truncate(pic, tmp_path / "cut.jpg"))
    bmp = tmp_path / "full.bmp"
    _write_picture(bmp, _rng.integers(0, 256, (120, 160, 3)).astype(np.uint8))
    with pytest.raises(LLM4SegError, match="truncated"):
        read_image(_truncate(bmp, tmp_path / "cut.bmp"))
    png = tmp_path / "full.png"
    _write_picture(png, _rng.integers(0, 256, (120, 160, 3)).astype(np.uint8))
    with pytest.raises(LLM4SegError):
        read_image(_truncate(png, tmp_path / "cut.png"))


def test_zero_size_volume(tmp_path: Path) -> None:
    header = tmp_path / "empty.mha"
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 0 10 10\n"
        "ElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    with pytest.raises(LLM4SegError, match="empty image"):
        read_image(header)


def test_wrong_masks(breast: tuple[Volume, np.ndarray], tmp_path: Path) -> None:
    vol, label = breast
    with pytest.raises(LLM4SegError, match="does not match the image shape"):
        write_mask(label[:-1], vol, tmp_path / "m.nii.gz")
    with pytest.raises(LLM4SegError, match="PNG holds one 2-D picture"):
        write_mask(label, vol, tmp_path / "m.png")
    with pytest.raises(LLM4SegError, match="cannot save a mask as .jpg"):
        write_mask(label, vol, tmp_path / "m.jpg")
    with pytest.raises(LLM4SegError, match="labels 0-255"):
        write_mask(label.astype(np.int32) * 300, vol, tmp_path / "m.nrrd")
    with pytest.raises(LLM4SegError, match="non-integer"):
        write_mask(label * 0.5, vol, tmp_path / "m.nrrd")
    with pytest.raises(LLM4SegError, match="does not exist"):
        write_mask(label, vol, tmp_path / "missing" / "m.nrrd")
    assert list(tmp_path.iterdir()) == []
    # a bool mask is fine, and an existing file is replaced
    target = tmp_path / "m.nrrd"
    target.write_text("old")
    write_mask(label.astype(bool), vol, target)
    np.testing.assert_array_equal(read_mask(target, vol), label)
    # reading a mask against the wrong image
    other = Volume(
        np.zeros((2, 3, 4), np.int16),
        (1.0, 1.0, 1.0),
        (0.0, 0.0, 0.0),
        tuple(np.eye(3).ravel()),
        "volume",
    )
    with pytest.raises(LLM4SegError, match="has shape"):
        read_mask(target, other)


def test_volume_record_validates() -> None:
    with pytest.raises(LLM4SegError):
        Volume(
            np.zeros((3, 4), np.uint8),
            (1.0, 1.0, 1.0),
            (0.0,) * 3,
            tuple(np.eye(3).ravel()),
            "volume",
        )
    with pytest.raises(LLM4SegError):
        Volume(np.zeros((3, 4), np.uint8), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), "picture")
    v = Volume(np.zeros((3, 4, 3), np.uint8), (1, 1), (0, 0), (1, 0, 0, 1), "image2d", is_rgb=True)
    assert v.spatial_shape == (3, 4) and v.n_slices == 1 and v.spacing == (1.0, 1.0)


def test_suffix_lists() -> None:
    for suffix in (
        ".dcm",
        ".nii",
        ".nii.gz",
        ".nrrd",
        ".mha",
        ".mhd",
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".tif",
        ".tiff",
    ):
        assert suffix in SUPPORTED_READ_SUFFIXES
    assert set(SUPPORTED_MASK_SUFFIXES) == {".nii.gz", ".nii", ".nrrd", ".mha", ".png"}


def test_suffix_of_longest_known_suffix_first() -> None:
    assert suffix_of("a/CT.NII.GZ") == ".nii.gz"
    assert suffix_of(Path("liver.seg.nrrd")) == ".nrrd"
    assert suffix_of("photo.JPEG") == ".jpeg"
    assert suffix_of("archive.tar.gz") == ".gz"
    assert suffix_of("1.2.840.113619") == ".113619"
    assert suffix_of("IM0001") == ""


def test_dicom_sniffing(tmp_path: Path) -> None:
    plain = tmp_path / "series" / "deep" / "IM0001"
    plain.parent.mkdir(parents=True)
    shutil.copy(pydicom_file("CT_small.dcm"), plain)
    assert is_dicom_file(plain)
    assert is_dicom_file(tmp_path / "any.dcm")  # by suffix alone
    (tmp_path / "notes.txt").write_text("not an image\n")
    assert not is_dicom_file(tmp_path / "notes.txt")
    renamed = tmp_path / "ct.nii"
    shutil.copy(plain, renamed)
    assert is_dicom_file(renamed)  # the content decides, not the name (issue 14)
    shutil.copy(plain, tmp_path / "DICOMDIR")
    assert not is_dicom_file(tmp_path / "DICOMDIR")
    assert folder_has_dicom(tmp_path / "series")
    hidden = tmp_path / "other" / ".cache"
    hidden.mkdir(parents=True)
    shutil.copy(plain, hidden / "IM0001")
    assert not folder_has_dicom(tmp_path / "other")
    many = tmp_path / "many"
    many.mkdir()
    for k in range(3):
        (many / f"a{k}.txt").write_text("x")
    shutil.copy(plain, many / "z.dcm")
    assert folder_has_dicom(many) and not folder_has_dicom(many, limit=3)


def test_write_mask_gives_the_normal_file_mode(
    breast: tuple[Volume, np.ndarray], tmp_path: Path
) -> None:
    vol, label = breast
    out = write_mask(label, vol, tmp_path / "m.nii.gz")
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
