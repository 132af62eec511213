"""DICOM label objects in: which kind a file is (DICOM-SEG, RTSTRUCT), what it was made on,
and reading either onto a reference image's grid as named, coloured labels."""

from __future__ import annotations

import os
from pathlib import Path

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.dicom import read_dicom_header, reference_uids
from llm4seg_core.io.dicomseg import SEG_SOP_CLASS, read_dicom_seg_labels, seg_sources
from llm4seg_core.io.formats import is_dicom_file
from llm4seg_core.io.labels import LabelVolume
from llm4seg_core.io.rtstruct import RTSTRUCT_SOP_CLASS, read_rtstruct_labels, rtstruct_sources
from llm4seg_core.io.volume import Volume

__all__ = ["label_object_kind", "read_labels", "refers_to"]

_KINDS = {SEG_SOP_CLASS: "seg", RTSTRUCT_SOP_CLASS: "rtstruct"}
_MODALITIES = {"SEG": "seg", "RTSTRUCT": "rtstruct"}


def label_object_kind(path: str | os.PathLike[str]) -> str | None:
    """``"seg"`` (a DICOM-SEG), ``"rtstruct"`` (an RT structure set) or None (anything else),
    by the file's SOP class (or, failing that, its modality); reads one header, no pixels."""
    p = Path(path)
    if not p.is_file() or not is_dicom_file(p):
        return None
    ds = read_dicom_header(p, ["SOPClassUID", "Modality"])
    if ds is None:
        return None
    return _KINDS.get(str(ds.get("SOPClassUID", ""))) or _MODALITIES.get(str(ds.get("Modality")))


def refers_to(path: str | os.PathLike[str], reference: Volume) -> bool:
    """Whether the SEG or RTSTRUCT at ``path`` was made on ``reference`` (a DICOM image): its
    series, or, when it names none, its frame of reference."""
    import pydicom

    series, frame = reference_uids(reference)
    if series is None:
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not readable: refers to nothing
        return False
    theirs, frames = (seg_sources if label_object_kind(path) == "seg" else rtstruct_sources)(ds)
    if theirs:
        return series in theirs
    return frame is not None and frame in frames


def read_labels(path: str | os.PathLike[str], reference: Volume) -> LabelVolume:
    """A DICOM-SEG or RTSTRUCT as labels on ``reference``'s grid, with its label table.

    ``reference``: the image it was made on (read from its DICOM files). Raises
    LLM4SegError for any other file, and for the refusals of
    :mod:`~llm4seg_core.io.dicomseg` and :mod:`~llm4seg_core.io.rtstruct`.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise LLM4SegError(f"no such file: {p}")
    kind = label_object_kind(p)
    if kind == "seg":
        return LabelVolume(*read_dicom_seg_labels(p, reference))
    if kind == "rtstruct":
        return read_rtstruct_labels(p, reference)
    raise LLM4SegError(f"{p.name} is not a DICOM-SEG or an RTSTRUCT; give the segmentation or "
                       "RT structure set file (.dcm)")
