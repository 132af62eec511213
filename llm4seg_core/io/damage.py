"""Telling a truncated DICOM file from one that holds no image (a report, an RT plan).

pydicom stops quietly where a file ends, so a file cut inside its header
reads as a dataset without Rows/Columns, and one cut inside its pixel data
reads with too few pixel bytes. The SOP class and the pixel data's length say
which it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm4seg_core.errors import LLM4SegError

_NO_IMAGE_WORDS = ("Structured Report", "SR Storage", "RT Plan", "RT Structure Set", "RT Dose",
                   "Presentation State", "Encapsulated", "Waveform", "Key Object", "Segmentation",
                   "Raw Data", "Spatial Registration", "Spatial Fiducials", "Surface")


def _sop_name(ds: Any) -> str:
    try:
        return str(ds.SOPClassUID.name)
    except Exception:  # no SOPClassUID, or an unknown one
        return ""


def is_image_class(ds: Any) -> bool:
    """Whether the file's SOP class stores an image (CT, MR, US, ... "Image Storage")."""
    name = _sop_name(ds)
    return "Image" in name and not any(w in name for w in _NO_IMAGE_WORDS)


def _media_class_name(ds: Any) -> str:
    try:
        return str(ds.file_meta.MediaStorageSOPClassUID.name)
    except Exception:
        return ""


def truncation(path: Path, ds: Any) -> str | None:
    """Why ``path`` (header ``ds``, read without pixels) looks cut short; None when it does not."""
    size = path.stat().st_size
    if "Rows" not in ds or "Columns" not in ds:
        if is_image_class(ds):
            return (f"its header ends after {size} bytes, before the image it announces "
                    f"({_sop_name(ds)})")
        media = _media_class_name(ds)
        if "SOPClassUID" not in ds and ("Image" in media or not media):
            return (f"it ends after {size} bytes, before its header's first elements"
                    + (f" ({media})" if media else ""))
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return None
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
        return None  # compressed frames have no fixed length
    expected = rows * cols * samples * frames * bits // 8
    have = _pixel_data_length(path)
    if have is None:
        return f"its pixel data cannot be read ({size} bytes in all)"
    if have < expected:
        return f"it holds {have} of the {expected} bytes of pixel data its header announces"
    return None


def _pixel_data_length(path: Path) -> int | None:
    """The byte length of the file's PixelData as stored (0 when there is none), without loading it."""
    import pydicom

    try:
        full = pydicom.dcmread(path, force=True, defer_size=1024)
        if "PixelData" not in full:
            return 0
        elem = full.get_item("PixelData")
        if elem.value is None and getattr(elem, "length", None) is None:
            return 0
        length = getattr(elem, "length", None)
        if isinstance(length, int) and length != 0xFFFFFFFF and elem.value is None:
            return length
        return len(full.PixelData)
    except Exception:
        return None


def pixel_data_mismatch(path: Path, ds: Any) -> str | None:
    """Why an uncompressed file's pixel data does not fit its Rows x Columns x frames x bits
    (shorter: truncated; longer: a damaged header, whose image would be read wrongly)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (AttributeError, TypeError, ValueError):
        return None
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None or getattr(tsyntax, "is_compressed", True):
        return None
    expected = rows * cols * samples * frames * bits // 8
    have = _pixel_data_length(path)
    if have is None or have == 0:
        return None
    if have < expected:
        return (f"{path.name} is a truncated DICOM file: it holds {have} of the {expected} bytes "
                "of pixel data its header announces; copy or export it again")
    if have > expected + 1 + (rows * cols * samples * frames if bits % 8 else 0):
        return (f"{path.name} is damaged: its pixel data has {have} bytes, but its header "
                f"({rows} rows x {cols} columns x {frames} frame(s), {bits} bits) announces "
                f"{expected}; the image would be read wrongly; export it again")
    if bits % 8:
        return (f"{path.name} is damaged: {bits} bits allocated per pixel is not a whole number of "
                "bytes; export it again")
    return None


def refuse_if_truncated(path: Path, ds: Any) -> None:
    """Raise the "truncated" error when ``path`` looks cut short."""
    why = truncation(path, ds)
    if why:
        raise LLM4SegError(f"{path.name} is a truncated DICOM file: {why}; copy or export it again")
