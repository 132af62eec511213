"""DICOM-SEG and RTSTRUCT in (``llm4seg convert``, :func:`llm4seg_core.io.read_labels`) and
named labels read back (:func:`read_labelled_mask`, ``llm4seg info MASK``).

Real contours: the four lung CTs of pycerr's radiomics phantom with their tumour RTSTRUCTs
(``llm4seg data fetch --rtstruct``; skipped when not fetched). The refusals run on synthetic
structure sets drawn on a CT series made from pydicom's CT_small.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from llm4seg_core.cli import main
from llm4seg_core.data import RTSTRUCT_CASES, rtstruct_case, rtstruct_data_available
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import (
    Label,
    read_image,
    read_labelled_mask,
    read_labels,
    read_mask,
    write_mask,
)
from llm4seg_core.io.labels import sidecar_path
from tests.helpers import pydicom_file, write_ct_series, write_rtstruct

SERIES = "1.2.826.0.1.3680043.8.498.4001"
OTHER_SERIES = "1.2.826.0.1.3680043.8.498.4002"
TABLE = (Label(1, "tumour", "#e6194b"), Label(2, "liver", "#3cb44b"))

needs_rt_cases = pytest.mark.skipif(
    not rtstruct_data_available(),
    reason="RTSTRUCT cases not fetched: run `llm4seg data fetch --rtstruct` (or `make setup`)")


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A 6-slice CT series (128 x 128, 2.5 mm apart)."""
    folder = tmp_path_factory.mktemp("convert") / "ct"
    write_ct_series(folder, SERIES, 6, "Axial 2.5 mm", 2.5)
    return folder


@pytest.fixture(scope="module")
def other_ct(tmp_path_factory) -> Path:
    """Another series of the same frame of reference (CT_small's)."""
    folder = tmp_path_factory.mktemp("convert") / "other"
    write_ct_series(folder, OTHER_SERIES, 4, "Axial 5 mm", 5.0)
    return folder


def square(vol, k: int, cols: tuple[int, int], rows: tuple[int, int]) -> np.ndarray:
    """A contour (patient mm) on slice ``k`` around the voxel centres of columns
    ``cols[0]..cols[1]`` and rows ``rows[0]..rows[1]`` (identity direction)."""
    sx, sy, sz = vol.spacing
    ox, oy, oz = vol.origin
    x0, x1 = ox + (cols[0] - 0.4) * sx, ox + (cols[1] + 0.4) * sx
    y0, y1 = oy + (rows[0] - 0.4) * sy, oy + (rows[1] + 0.4) * sy
    z = oz + k * sz
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])


# --------------------------------------------------------------------------- real RTSTRUCTs


def polygon_areas_by_slice(rs: Path, vol) -> dict[int, float]:
    """Each contour's area (mm², shoelace), summed per slice index (from its z in mm)."""
    ds = pydicom.dcmread(rs)
    areas: dict[int, float] = defaultdict(float)
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            p = np.asarray(contour.ContourData, float).reshape(-1, 3)
            x, y = p[:, 0], p[:, 1]
            areas[int(round((p[0, 2] - vol.origin[2]) / vol.spacing[2]))] += 0.5 * abs(
                np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    return dict(areas)


@needs_rt_cases
@pytest.mark.parametrize("case", RTSTRUCT_CASES)
def test_real_rtstruct_rasterised_onto_its_ct(case):
    folder, rs = rtstruct_case(case)
    vol = read_image(folder)
    assert vol.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    result = read_labels(rs, vol)
    assert result.labels.shape == vol.spatial_shape and result.labels.dtype == np.uint8
    assert result.notes == ()
    roi = pydicom.dcmread(rs).ROIContourSequence[0]
    color = "#" + "".join(f"{int(c):02x}" for c in roi.ROIDisplayColor)
    assert [(t.value, t.name, t.color) for t in result.table] == [(1, "GTV-1", color)]
    mask = result.labels == 1
    voxel_mm3 = float(np.prod(vol.spacing))
    ml = mask.sum() * voxel_mm3 / 1000
    assert 1.0 < ml < 1000.0  # a lung tumour
    # the contour polygons' areas x slice spacing: the same volume within 3 %
    areas = polygon_areas_by_slice(rs, vol)
    expected_ml = sum(areas.values()) * vol.spacing[2] / 1000
    assert ml == pytest.approx(expected_ml, rel=0.03)
    # every contour on its own slice index (and nothing on the others), with its area
    assert sorted(np.unique(np.nonzero(mask)[0]).tolist()) == sorted(areas)
    pixel_mm2 = vol.spacing[0] * vol.spacing[1]
    for k, area in areas.items():
        assert abs(mask[k].sum() * pixel_mm2 - area) <= 0.1 * area + 2 * pixel_mm2, k
    # in-plane placement: the tumour is soft tissue, not the lung's air around it
    assert np.median(vol.array[mask]) > -300


@needs_rt_cases
def test_real_rtstruct_convert_to_nifti_reads_back_named(tmp_path, capsys):
    folder, rs = rtstruct_case("pat_2")
    out = tmp_path / "gtv.nii.gz"
    assert main(["convert", str(rs), "--reference", str(folder), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GTV-1" in printed and " mL" in printed
    assert sidecar_path(out).is_file()
    vol = read_image(folder)
    back = read_labelled_mask(out, vol)
    np.testing.assert_array_equal(back.labels, read_labels(rs, vol).labels)
    assert [t.name for t in back.table] == ["GTV-1"]
    assert read_mask(rs, vol).sum() == back.labels.sum()  # read_mask reads an RTSTRUCT too
    # and to a DICOM-SEG of MANUAL segments, which converts back to the same voxels
    seg = tmp_path / "gtv.dcm"
    assert main(["convert", str(rs), "--reference", str(folder), "-o", str(seg)]) == 0
    d = pydicom.dcmread(seg).SegmentSequence[0]
    assert d.SegmentLabel == "GTV-1" and d.SegmentAlgorithmType == "MANUAL"
    again = read_labels(seg, vol)
    np.testing.assert_array_equal(again.labels, back.labels)
    assert [(t.name, t.color) for t in again.table] == [(t.name, t.color) for t in back.table]


# --------------------------------------------------------------------------- DICOM-SEG in


def pattern(shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[1:4, 20:60, 30:70] = 1
    out[3:5, 70:100, 10:40] = 2
    return out


def test_our_dicom_seg_converts_back_identical(ct, tmp_path):
    vol = read_image(ct)
    seg = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "seg.dcm", labels=TABLE)
    result = read_labels(seg, vol)
    np.testing.assert_array_equal(result.labels, pattern(vol.spatial_shape))
    assert result.table == TABLE
    assert read_labelled_mask(seg, vol).table == TABLE
    out = tmp_path / "back.nrrd"
    assert main(["convert", str(seg), "--reference", str(ct), "-o", str(out)]) == 0
    back = read_labelled_mask(out, vol)
    np.testing.assert_array_equal(back.labels, pattern(vol.spatial_shape))
    assert back.table == TABLE


def test_dicom_seg_of_another_series_is_refused(ct, other_ct, tmp_path):
    vol = read_image(ct)
    seg = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "seg.dcm", labels=TABLE)
    with pytest.raises(LLM4SegError, match=f"made on series {SERIES}, not the reference "
                                           f"image's series {OTHER_SERIES}"):
        read_labels(seg, read_image(other_ct))
    with pytest.raises(LLM4SegError, match="DICOM-SEG: open the image it was made on first"):
        read_mask(seg)


# --------------------------------------------------------------------------- RTSTRUCT rules


def test_rtstruct_holes_overlaps_and_skipped_rois(ct, tmp_path):
    vol = read_image(ct)
    ring = [square(vol, 2, (20, 59), (20, 59)), square(vol, 2, (30, 49), (30, 49))]
    organ = [square(vol, k, (10, 89), (10, 69)) for k in (1, 2, 3)]  # 80 columns, 60 rows
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, [
        ("Body", (0, 0, 255), organ),
        ("Empty", (1, 2, 3), []),
        ("Ring", (255, 0, 0), ring),
    ])
    result = read_labels(rs, vol)
    assert [(t.value, t.name, t.color) for t in result.table] == [
        (1, "Body", "#0000ff"), (2, "Ring", "#ff0000")]
    labels = result.labels
    assert (labels[2, 20:60, 20:60] == 2).sum() == 40 * 40 - 20 * 20  # the inner square: a hole
    assert (labels[2, 30:50, 30:50] == 1).all()  # ... where the organ shows
    assert (labels[1, 10:70, 10:90] == 1).all() and (labels[1] > 0).sum() == 80 * 60
    assert not labels[0].any() and not labels[4:].any()
    notes = " | ".join(result.notes)
    assert "without contours skipped: Empty" in notes
    assert "several structures; each shows the smallest" in notes


def test_rtstruct_refusals(ct, other_ct, tmp_path):
    vol = read_image(ct)
    inside = [square(vol, 1, (10, 20), (10, 20))]
    cases = [
        ("frame", dict(frame_uid="1.2.3.4.5"), [("A", (1, 1, 1), inside)],
         "drawn in frame of reference 1.2.3.4.5, not the reference image's"),
        ("series", dict(series_uid=OTHER_SERIES), [("A", (1, 1, 1), inside)],
         f"drawn on series {OTHER_SERIES}, not the reference image's series {SERIES}"),
        ("outside", {}, [("A", (1, 1, 1), [c + [0, 0, 500.0] for c in inside])],
         r"contours of outside.dcm \(.*\) all lie outside the image"),
        ("empty", {}, [], "empty structure set"),
        ("uncontoured", {}, [("A", (1, 1, 1), []), ("B", (2, 2, 2), [])],
         "no ROI of uncontoured.dcm has a closed contour"),
        ("many", {}, [(f"R{i}", (1, 1, 1), inside) for i in range(256)],
         "256 contoured structures; a label mask holds at most 255"),
    ]
    for name, kwargs, rois, message in cases:
        rs = write_rtstruct(tmp_path / f"{name}.dcm", ct, rois, **kwargs)
        with pytest.raises(LLM4SegError, match=message):
            read_labels(rs, vol)
    # 255 structures are fine
    rs = write_rtstruct(tmp_path / "255.dcm", ct,
                        [(f"R{i}", (1, 1, 1), inside) for i in range(255)])
    assert len(read_labels(rs, vol).table) == 255
    # an RTSTRUCT needs its DICOM series as the reference
    rs = write_rtstruct(tmp_path / "ok.dcm", ct, [("A", (1, 1, 1), inside)])
    with pytest.raises(LLM4SegError, match="RTSTRUCT: open the image it was made on first"):
        read_mask(rs)
    with pytest.raises(LLM4SegError, match=f"not the reference image's series {OTHER_SERIES}"):
        read_labels(rs, read_image(other_ct))


def test_not_a_label_object(ct, tmp_path):
    vol = read_image(ct)
    for path in (sorted(ct.glob("*.dcm"))[0], pydicom_file("CT_small.dcm")):
        with pytest.raises(LLM4SegError, match="is not a DICOM-SEG or an RTSTRUCT"):
            read_labels(path, vol)
    nii = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "m.nii.gz")
    with pytest.raises(LLM4SegError, match="m.nii.gz is not a DICOM-SEG or an RTSTRUCT"):
        read_labels(nii, vol)


def test_convert_cli_errors_exit_2_with_one_line(ct, other_ct, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    image_file = sorted(ct.glob("*.dcm"))[0]
    assert main(["convert", str(image_file), "--reference", str(ct), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a DICOM-SEG or an RTSTRUCT" in err[0]
    vol = read_image(ct)
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, [("A", (1, 1, 1), [square(vol, 1, (5, 9),
                                                                              (5, 9))])])
    assert main(["convert", str(rs), "--reference", str(other_ct), "-o", str(out)]) == 2
    assert "drawn on series" in capsys.readouterr().err
    assert main(["convert", str(rs), "--reference", str(ct), "-o", str(tmp_path / "m.png")]) == 2
    assert "PNG" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "m.png").exists()
    # warnings, not errors: an ROI without contours is named and skipped
    rs = write_rtstruct(tmp_path / "rs2.dcm", ct, [
        ("A", (1, 1, 1), [square(vol, 1, (5, 9), (5, 9))]), ("Lost", (2, 2, 2), [])])
    assert main(["convert", str(rs), "--reference", str(ct), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "WARNING: 1 ROI(s) without contours skipped: Lost" in captured.err
    assert "   1  A  #010101  25 voxels" in captured.out


# --------------------------------------------------------------------------- named masks


def test_read_labelled_mask_reads_the_sidecar(ct, tmp_path):
    vol = read_image(ct)
    named = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "named.nii.gz", labels=TABLE)
    back = read_labelled_mask(named, vol)
    np.testing.assert_array_equal(back.labels, pattern(vol.spatial_shape))
    assert back.table == TABLE
    plain = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "plain.nrrd")
    assert not sidecar_path(plain).exists() and read_labelled_mask(plain).table == ()


def test_info_shows_a_masks_label_names(ct, tmp_path, capsys):
    vol = read_image(ct)
    named = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "named.nii.gz", labels=TABLE)
    assert main(["info", str(named)]) == 0
    out = capsys.readouterr().out
    assert "labels: 2, named" in out
    assert "   1  tumour  #e6194b" in out and "   2  liver  #3cb44b" in out and " mL" in out
    seg = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "seg.dcm", labels=TABLE)
    assert main(["info", str(seg)]) == 2
    assert "--reference IMAGE" in capsys.readouterr().err
    assert main(["info", str(seg), "--reference", str(ct)]) == 0
    out = capsys.readouterr().out
    assert "DICOM-SEG" in out and "tumour" in out and "liver" in out
