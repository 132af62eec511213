"""Helpers several test modules share: pydicom's test files, CT series folders, a fresh
interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def pydicom_file(name: str) -> Path:
    """A file of pydicom's test data (the pydicom-data package)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    return Path(path)


def write_ct_series(
    folder: Path, uid: str, n: int, description: str, dz: float, *, z0: float = -75.0
) -> None:
    """n real CT slices (pydicom's CT_small) as one series, ``dz`` mm apart from ``z0``.

    File names run against the slice order, and pixel [0, 0] of slice k holds
    the stored value 1000 + k, so the reading order can be checked.
    """
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    src = pydicom_file("CT_small.dcm")
    for k in range(n):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-158.135803, -179.035797, z0 + k * dz]
        ds.SliceLocation = z0 + k * dz
        pixels = ds.pixel_array.copy()
        pixels[0, 0] = 1000 + k
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"img_{n - k:03d}.dcm")


def run_python(code: str, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter (no module of this one loaded); its stdout.

    Fails the test, with the end of stderr, when the code fails.
    """
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


#: A small model zoo for GUI tests: (task, RGB?, fits, labels) of tiny checkpoints.
TINY_ZOO = (
    ("breast-us", False, {"kind": "2d", "rgb": False, "modality": "US", "body_part": "BREAST",
                          "keywords": ["breast"]},
     [{"value": 1, "name": "lesion", "color": "#e6194b"}]),
    ("polyp", True, {"kind": "2d", "rgb": True, "modality": "ES", "body_part": "COLON",
                     "keywords": ["kvasir"]},
     [{"value": 1, "name": "polyp", "color": "#3cb44b"}, {"value": 2, "name": "stalk",
                                                          "color": "#4363d8"}]),
)


def write_tiny_zoo(folder: Path, spec: str) -> Path:
    """Shipped-model files in ``folder``: a ``default`` (no fits) and :data:`TINY_ZOO`, all of
    the tiny model spec ``spec`` (RGB ones with 3 input channels); returns ``folder``."""
    from llm4seg_core.model import build_model
    from llm4seg_core.model.spec import parse_spec
    from llm4seg_core.store import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    grey = parse_spec(spec)
    save_checkpoint(build_model(grey, seed=0), folder / "default.safetensors", {"task": "default"})
    for task, rgb, fits, labels in TINY_ZOO:
        model_spec = grey.with_(in_channels=3 if rgb else 1, num_classes=len(labels) + 1
                                if len(labels) > 1 else 1)
        save_checkpoint(build_model(model_spec, seed=1), folder / f"{task}.safetensors",
                        {"task": task, "fits": fits, "labels": labels})
    return folder


RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def write_rtstruct(path: Path, series: Path, rois: list, *, frame_uid: str | None = None,
                   series_uid: str | None = None) -> Path:
    """An RTSTRUCT at ``path`` drawn on the CT series in folder ``series`` (its frame of
    reference and series, unless ``frame_uid`` / ``series_uid`` say others).

    ``rois``: ``(name, (r, g, b), contours)``, each contour an (n, 3) array of patient mm
    (x, y, z); an ROI with no contours gets no ContourSequence.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    first = pydicom.dcmread(sorted(series.glob("*.dcm"))[0], stop_before_pixels=True)
    frame = frame_uid or str(first.FrameOfReferenceUID)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientName, ds.PatientID = "Test^RT", "rt"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, generate_uid()
    ds.StructureSetLabel = "test"
    referenced = Dataset()
    referenced.SeriesInstanceUID = series_uid or str(first.SeriesInstanceUID)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [referenced]
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = frame
    ref_frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [ref_frame]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, (name, color, contours) in enumerate(rois, 1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame, name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ROIDisplayColor = number, list(color)
        if contours:
            item.ContourSequence = []
            for points in contours:
                c = Dataset()
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(points)
                c.ContourData = [round(float(v), 3) for v in points.ravel()]
                item.ContourSequence.append(c)
        ds.ROIContourSequence.append(item)
    ds.save_as(path, enforce_file_format=True)
    return path
