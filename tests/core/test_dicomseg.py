"""DICOM-SEG out (highdicom): segments named and coloured from the model, the algorithm
identified, frames referencing the source instances; read back it gives the same voxels as
the NIfTI mask of the same run. Also the label sidecar of NIfTI/NRRD masks."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from llm4seg_core.cli import main
from llm4seg_core.inference import Segmenter
from llm4seg_core.io import read_image, read_mask, write_mask
from llm4seg_core.io.dicomseg import Algorithm, read_dicom_seg_labels
from llm4seg_core.io.labels import read_label_sidecar, sidecar_path
from llm4seg_core.model import build_model
from llm4seg_core.model.spec import parse_spec
from llm4seg_core.store import save_checkpoint
from tests.helpers import pydicom_file, write_ct_series

UID = "1.2.826.0.1.3680043.8.498.3001"
LABELS = [{"value": 1, "name": "tumour", "color": "#e6194b"},
          {"value": 2, "name": "liver", "color": "#3cb44b"}]


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg") / "ct"
    write_ct_series(root, UID, 6, "Axial 2.5 mm", 2.5)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    spec = parse_spec("cmunext,image_size=32,dims=4:8:8:16:16,num_classes=3")
    path = tmp_path_factory.mktemp("model") / "liver.safetensors"
    return save_checkpoint(build_model(spec, seed=0), path, {"task": "liver", "labels": LABELS})


def pattern(shape) -> np.ndarray:
    """Labels 1 and 2 on some slices, slice 0 empty (frames of empty slices are left out)."""
    out = np.zeros(shape, np.uint8)
    out[1:4, 20:60, 30:70] = 1
    out[3:5, 70:100, 10:40] = 2
    return out


def source_uids(folder: Path) -> list[str]:
    vol = read_image(folder)
    return [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in vol.dicom_files]


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed-labels", "model-output"])
def test_segment_to_dicom_seg_round_trips_to_the_nifti_voxels(series, checkpoint, tmp_path,
                                                              monkeypatch, fixed):
    if fixed:
        monkeypatch.setattr(Segmenter, "segment", lambda self, vol, **k: pattern(vol.spatial_shape))
    args = ["--model", str(checkpoint), "--device", "cpu", "-q"]
    nii, dcm = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    assert main(["segment", str(series), "-o", str(nii), *args]) == 0
    assert main(["segment", str(series), "-o", str(dcm), *args]) == 0
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(nii)))
    if fixed:
        assert (expected == pattern(expected.shape)).all()
    seg = hd.seg.segread(str(dcm))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    uids = source_uids(series)
    # read back with highdicom alone, slice by slice in the source's order
    present = sorted(int(v) for v in np.unique(expected) if v > 0)
    if present:
        back = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=list(seg.segment_numbers),
            combine_segments=True, assert_missing_frames_are_empty=True)
        numbers = {int(d.SegmentNumber): int(d.TrackingID.split(":")[1]) for d in seg.SegmentSequence}
        lut = np.zeros(max(numbers) + 1, np.uint8)
        for n, v in numbers.items():
            lut[n] = v
        np.testing.assert_array_equal(lut[np.asarray(back)], expected)
    # and with ours, onto the image's grid
    vol = read_image(series)
    np.testing.assert_array_equal(read_mask(dcm, reference=vol), expected)
    labels, table = read_dicom_seg_labels(dcm, vol)
    np.testing.assert_array_equal(labels, expected)
    named = {lab.value: (lab.name, lab.color) for lab in table}
    for v in present:
        assert named[v] == ({1: ("tumour", "#e6194b"), 2: ("liver", "#3cb44b")}[v])
    # segments: name, colour, coded category and type, the algorithm identified
    for d in seg.SegmentSequence:
        assert d.SegmentLabel in ("tumour", "liver")
        assert d.SegmentAlgorithmType == "AUTOMATIC" and d.SegmentAlgorithmName == "LLM4Seg"
        alg = d.SegmentationAlgorithmIdentificationSequence[0]
        assert "liver" in alg.AlgorithmVersion and "liver.safetensors" in alg.AlgorithmVersion
        cat = d.SegmentedPropertyCategoryCodeSequence[0]
        assert cat.CodingSchemeDesignator == "SCT"
        want = "Morphologically Altered Structure" if d.SegmentLabel == "tumour" else "Anatomical Structure"
        assert cat.CodeMeaning == want
        assert "RecommendedDisplayCIELabValue" in d
    # frames reference the source instances, at their positions; same study, new series
    by_uid = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in vol.dicom_files}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert src in by_uid
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert pos == pytest.approx([float(v) for v in by_uid[src].ImagePositionPatient])
    first = next(iter(by_uid.values()))
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.SeriesInstanceUID != UID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID


def test_dicom_seg_of_a_single_file_and_refusal_for_non_dicom(tmp_path, capsys):
    src = pydicom_file("CT_small.dcm")
    vol = read_image(src)
    mask = np.zeros(vol.spatial_shape, np.uint8)
    mask[0, 40:80, 40:80] = 1
    out = write_mask(mask, vol, tmp_path / "one.dcm", algorithm=Algorithm("default", "v0001", False))
    np.testing.assert_array_equal(read_mask(out, reference=vol), mask)
    assert hd.seg.segread(str(out)).SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    # an image not read from DICOM: refused at once, before segmenting
    nrrd = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(vol.array), str(nrrd))
    assert main(["segment", str(nrrd), "-o", str(tmp_path / "m.dcm"), "--model",
                 "cmunext,image_size=32,dims=4:8:8:16:16", "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DICOM-SEG" in err[0] and not (tmp_path / "m.dcm").exists()


def test_nifti_and_nrrd_masks_carry_their_label_table(series, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(Segmenter, "segment", lambda self, vol, **k: pattern(vol.spatial_shape))
    for name in ("mask.nii.gz", "mask.nrrd"):
        out = tmp_path / name
        assert main(["segment", str(series), "-o", str(out), "--model", str(checkpoint),
                     "--device", "cpu", "-q"]) == 0
        assert sidecar_path(out).name == "mask.labels.json"
        table = read_label_sidecar(out)
        assert [(t.value, t.name, t.color) for t in table] == [
            (1, "tumour", "#e6194b"), (2, "liver", "#3cb44b")]
    # a damaged sidecar is an error, never silently unnamed labels
    sidecar_path(tmp_path / "mask.nrrd").write_text("{ nope")
    with pytest.raises(Exception, match="label table .* unreadable"):
        read_label_sidecar(tmp_path / "mask.nrrd")
