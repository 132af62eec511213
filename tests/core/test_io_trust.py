"""No silently misplaced mask: faulty DICOM series (made from real CT slices), files named as
another format, header/data mismatches, zero spacing, grey+alpha PNG, truncated DICOM, and the
command line naming the series it did not read."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from llm4seg_core.cli import main
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import list_dicom_series, read_image, read_mask
from tests.helpers import pydicom_file, write_ct_series

UID = "1.2.826.0.1.3680043.8.498.2001"
OTHER = "1.2.826.0.1.3680043.8.498.2002"
FAST = ["--model", "cmunext,image_size=32,dims=4:8:8:16:16", "--device", "cpu", "-q"]
N, DZ = 10, 5.0


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """10 real CT slices 5 mm apart (pixel [0, 0] of slice k holds 1000 + k)."""
    root = tmp_path_factory.mktemp("good") / "series"
    write_ct_series(root, UID, N, "Axial 5 mm", DZ)
    return root


def faulty(good: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "faulty"
    shutil.copytree(good, folder)
    return folder


def slice_file(folder: Path, k: int) -> Path:
    """The file of slice k (write_ct_series names them against the slice order)."""
    return folder / f"img_{N - k:03d}.dcm"


def stored_first_pixels(vol) -> list[int]:
    """Stored value of pixel [0, 0] of each slice (write_ct_series: 1000 + k, then rescaled)."""
    return [int(v) for v in vol.array[:, 0, 0]]


# ---- duplicates --------------------------------------------------------------------------

@pytest.mark.parametrize("new_uid", [False, True], ids=["exact-copy", "copy-new-uid"])
def test_duplicate_slice_is_dropped_and_said(good, tmp_path, new_uid, capsys):
    ref = read_image(good)
    folder = faulty(good, tmp_path)
    ds = pydicom.dcmread(slice_file(folder, 4))
    if new_uid:
        ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "zz_copy.dcm")
    vol = read_image(folder)
    assert vol.spatial_shape == ref.spatial_shape and vol.spacing == ref.spacing == (
        pytest.approx(ref.spacing[0]), pytest.approx(ref.spacing[1]), DZ)
    assert vol.origin == ref.origin
    assert stored_first_pixels(vol) == stored_first_pixels(ref)  # every slice in its place
    warning = vol.meta["warning"]
    assert "1 duplicate slice" in warning and "zz_copy.dcm" in warning
    assert ("exact copy" in warning) != new_uid
    assert list_dicom_series(folder)[0].n_files == N
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(folder), "-o", str(out), *FAST]) == 0
    assert "WARNING: 1 duplicate slice(s) left out" in capsys.readouterr().err
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize()[2] == N and mask.GetSpacing()[2] == pytest.approx(DZ)


def test_several_slices_at_every_position_are_refused(good, tmp_path):
    folder = faulty(good, tmp_path)
    for k in range(N):  # a second "phase" at every position
        ds = pydicom.dcmread(slice_file(folder, k))
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = 100 + k
        ds.save_as(folder / f"phase2_{k:03d}.dcm")
    with pytest.raises(LLM4SegError, match="several slices at each position"):
        read_image(folder)


# ---- gaps and uneven spacing ---------------------------------------------------------------

def test_missing_slice_is_refused_with_one_clear_message(good, tmp_path, capsys):
    folder = faulty(good, tmp_path)
    slice_file(folder, 5).unlink()
    with pytest.raises(LLM4SegError) as err:
        read_image(folder)
    text = str(err.value)
    assert "gap of 10 mm" in text and "one slice missing" in text and "5 mm apart" in text
    assert "up to 2.5 mm" in text and "Export the complete series" in text
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(folder), "-o", str(out), *FAST]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llm4seg: error: DICOM series") and not out.exists()


def test_slice_with_another_series_uid_is_named_in_the_refusal(good, tmp_path):
    folder = faulty(good, tmp_path)
    stray = slice_file(folder, 5)
    ds = pydicom.dcmread(stray)
    ds.SeriesInstanceUID = OTHER
    ds.save_as(stray)
    with pytest.raises(LLM4SegError, match="gap of 10 mm") as err:
        read_image(folder)
    assert f"{stray.name} (series {OTHER}) lies in the gap" in str(err.value)
    assert "SeriesInstanceUID is wrong" in str(err.value)


def test_uneven_spacing_is_refused(tmp_path):
    folder = tmp_path / "uneven"
    write_ct_series(folder, UID, 8, "uneven", DZ)
    for i, f in enumerate(sorted(folder.iterdir())):  # steps of 4 and 6 mm, alternating
        ds = pydicom.dcmread(f)
        k = int(ds.InstanceNumber) - 1
        z = -75.0 + 5.0 * k + (0.0 if k % 2 == 0 else -1.0)
        ds.ImagePositionPatient = [-158.135803, -179.035797, z]
        ds.save_as(f)
    with pytest.raises(LLM4SegError, match="uneven slice spacing, from 4 mm to 6 mm"):
        read_image(folder)


def test_tiny_position_noise_is_not_a_gap(tmp_path):
    folder = tmp_path / "noisy"
    write_ct_series(folder, UID, 6, "noisy", DZ)
    for i, f in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(f)
        z = float(ds.ImagePositionPatient[2]) + (0.004 if i % 2 else -0.004)
        ds.ImagePositionPatient = [-158.135803, -179.035797, z]
        ds.save_as(f)
    vol = read_image(folder)
    assert vol.n_slices == 6 and "warning" not in vol.meta


# ---- two series: the command line names the other -------------------------------------------

def test_cli_names_the_other_series_and_series_picks_it(good, tmp_path, capsys):
    folder = faulty(good, tmp_path)
    write_ct_series(folder / "small", OTHER, 3, "Small", 2.0)
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(folder), "-o", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert f"read the largest, {UID} (10 files)" in err and OTHER in err and "--series UID" in err
    assert sitk.ReadImage(str(out)).GetSize()[2] == N
    assert main(["segment", str(folder), "--series", OTHER, "-o", str(out), *FAST]) == 0
    assert "--series UID" not in capsys.readouterr().err
    assert sitk.ReadImage(str(out)).GetSize()[2] == 3


# ---- files recognised by content --------------------------------------------------------------

def test_dicom_named_png_is_read_as_dicom(tmp_path):
    src = pydicom_file("CT_small.dcm")
    ref = read_image(src)
    for name in ("scan.png", "scan.nii.gz", "scan.jpg"):
        shutil.copy(src, tmp_path / name)
        vol = read_image(tmp_path / name)
        assert vol.spacing == ref.spacing and vol.origin == ref.origin, name
        np.testing.assert_array_equal(vol.array, ref.array)
        assert "is a DICOM file by its content" in vol.meta["warning"], name


def test_other_formats_named_wrongly_are_read_by_content(tmp_path):
    arr = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.75, 2.0))
    for real, named in ((".nii.gz", "a.png"), (".nii", "b.nrrd"), (".nrrd", "c.png"),
                        (".mha", "d.nii"), (".nii.gz", "e.nii")):
        sitk.WriteImage(img, str(tmp_path / f"real{real}"))
        shutil.copy(tmp_path / f"real{real}", tmp_path / named)
        vol = read_image(tmp_path / named)
        np.testing.assert_array_equal(vol.array, arr)
        assert vol.spacing == pytest.approx((0.5, 0.75, 2.0)), named
    pic = sitk.GetImageFromArray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    sitk.WriteImage(pic, str(tmp_path / "p.png"))
    shutil.copy(tmp_path / "p.png", tmp_path / "p.nii.gz")
    vol = read_image(tmp_path / "p.nii.gz")
    assert vol.kind == "image2d" and "PNG file by its content" in vol.meta["warning"]


# ---- headers that do not fit their data ----------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True])
def test_nrrd_header_with_fewer_slices_than_its_data_is_an_error(tmp_path, compressed):
    arr = np.arange(5 * 8 * 8, dtype=np.int16).reshape(5, 8, 8)
    path = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path), useCompression=compressed)
    data = path.read_bytes()
    assert b"sizes: 8 8 5" in data
    path.write_bytes(data.replace(b"sizes: 8 8 5", b"sizes: 8 8 4", 1))
    with pytest.raises(LLM4SegError, match=r"more image data than its header's sizes \(8, 8, 4\)"):
        read_image(path)


def test_nifti_with_zero_voxel_size_is_an_error(tmp_path):
    path = tmp_path / "v.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16)), str(path))
    data = bytearray(path.read_bytes())
    data[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)  # pixdim[1..3]
    path.write_bytes(bytes(data))
    with pytest.raises(LLM4SegError, match=r"voxel size \(0.0, 0.0, 0.0\).*pixdim"):
        read_image(path)
    gz = tmp_path / "v.nii.gz"
    import gzip

    gz.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(LLM4SegError, match="voxel size"):
        read_image(gz)


# ---- pictures and truncated DICOM -----------------------------------------------------------------

def _png(path: Path, arr: np.ndarray, colour_type: int) -> Path:
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def test_grey_alpha_png_is_read(tmp_path):
    la = np.zeros((12, 16, 2), np.uint8)
    la[..., 0] = np.arange(16, dtype=np.uint8)[None] * 15
    la[..., 1] = 200
    vol = read_image(_png(tmp_path / "la.png", la, 4))
    assert vol.kind == "image2d" and not vol.is_rgb and vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array, la[..., 0])
    mask = np.zeros((12, 16, 2), np.uint8)
    mask[3:6, 4:9, 0] = 255
    mask[..., 1] = 255
    labels = read_mask(_png(tmp_path / "mask.png", mask, 4), reference=vol)
    assert labels.sum() == 15 and labels.max() == 1


def test_truncated_dicom_is_reported_as_truncated(tmp_path):
    data = pydicom_file("CT_small.dcm").read_bytes()
    for cut, why in ((1000, "header ends after 1000 bytes"), (len(data) // 2, "bytes of pixel data")):
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(LLM4SegError, match="truncated DICOM file") as err:
            read_image(path)
        assert why in str(err.value) and "without an image" not in str(err.value)
    # a real non-image DICOM file still says so
    rt = pydicom_file("rtplan.dcm")
    with pytest.raises(LLM4SegError, match="without an image"):
        read_image(rt)
