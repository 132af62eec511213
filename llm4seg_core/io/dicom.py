"""DICOM: headers (pydicom, no pixels), series listing, and series / file reading (GDCM).

pydicom is imported lazily: only DICOM input needs it.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.formats import DICOM_SUFFIXES
from llm4seg_core.io.itk import (
    check_nonempty,
    geometry,
    pixels,
    sitk_read,
    sitk_reason,
    squeeze_extra_dims,
)
from llm4seg_core.io.damage import pixel_data_mismatch, refuse_if_truncated
from llm4seg_core.io.positions import plan_slices, series_refusal
from llm4seg_core.io.volume import DicomSeries, Volume

# DICOM header fields read while scanning a folder (no pixel data).
_DICOM_SCAN_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
]
# Non-identifying header fields copied into Volume.meta.
_DICOM_META_TAGS: dict[str, str] = {
    "SeriesInstanceUID": "series_uid",
    "SeriesDescription": "series_description",
    "SeriesNumber": "series_number",
    "BodyPartExamined": "body_part",
    "Manufacturer": "manufacturer",
    "PhotometricInterpretation": "photometric",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "SOPClassUID": "sop_class_uid",
}


def read_dicom_header(path: Path, tags: list[str] | None = None) -> Any | None:
    """pydicom dataset without pixel data, or None when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, struct.error):
        pass
    except Exception:  # pragma: no cover - pydicom raises assorted errors on garbage
        return None
    if path.suffix.lower() in DICOM_SUFFIXES:
        # Old files without the 128-byte preamble: accept them only if they parse as an image.
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags, force=True)
        except Exception:
            return None
        if "Rows" in ds and "Columns" in ds:
            return ds
    return None


def _ds_str(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword, None) if ds is not None else None
    if value is None:
        return None
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        items = list(value)
        if not items:
            return None
        value = items[0]
    text = str(value).strip()
    return text or None


def _n_frames(ds: Any) -> int:
    try:
        return max(int(_ds_str(ds, "NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _dicom_meta(ds: Any) -> dict[str, str]:
    meta: dict[str, str] = {"format": "DICOM"}
    for keyword, key in _DICOM_META_TAGS.items():
        value = _ds_str(ds, keyword)
        if value is not None:
            meta[key] = value
    return meta


def _narrow_dicom_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.size and arr.dtype == np.int32:
        lo, hi = int(arr.min()), int(arr.max())
        if -32768 <= lo and hi <= 32767:
            return arr.astype(np.int16)
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    return arr


def _volume_from_dicom_image(img: sitk.Image, ds: Any, path: Path, n_frames_total: int) -> Volume:
    img = squeeze_extra_dims(img, path)
    arr, is_rgb = pixels(img, path)
    check_nonempty(arr, path)
    arr = _narrow_dicom_dtype(arr)
    spacing, origin, direction = geometry(img)
    meta = _dicom_meta(ds)
    modality = _ds_str(ds, "Modality")
    has_position = ds is not None and "ImagePositionPatient" in ds
    if img.GetDimension() == 3 and n_frames_total == 1 and arr.shape[0] == 1 and not has_position:
        # One picture without patient geometry (ultrasound still, X-ray, screen capture).
        arr = np.ascontiguousarray(arr[0])
        d = direction
        direction2 = (d[0], d[1], d[3], d[4])
        if abs(np.linalg.det(np.reshape(direction2, (2, 2)))) < 1e-6:
            direction2 = (1.0, 0.0, 0.0, 1.0)
        return Volume(
            array=arr,
            spacing=spacing[:2],
            origin=origin[:2],
            direction=direction2,
            kind="image2d",
            modality=modality,
            is_rgb=is_rgb,
            source=str(path),
            meta=meta,
        )
    if img.GetDimension() == 2:  # not produced by GDCM, but be safe
        return Volume(arr, spacing, origin, direction, "image2d", modality, is_rgb, str(path), meta)
    return Volume(arr, spacing, origin, direction, "volume", modality, is_rgb, str(path), meta)


def read_dicom_file(path: Path, series_uid: str | None, ds: Any | None = None) -> Volume:
    """One DICOM file (a slice, a still, or a multi-frame cine); ``ds`` is its header if read."""
    if ds is None:
        ds = read_dicom_header(path)
    if ds is None:
        raise LLM4SegError(
            f"{path.name} is not a readable DICOM file; check that it is not damaged"
        )
    if "Rows" not in ds or "Columns" not in ds:
        refuse_if_truncated(path, ds)  # cut inside its header: not "without an image"
        raise LLM4SegError(
            f"{path.name} is a DICOM file without an image (e.g. a report or RT plan); "
            "open an image series"
        )
    file_uid = _ds_str(ds, "SeriesInstanceUID")
    if series_uid is not None and series_uid != file_uid:
        raise LLM4SegError(
            f"{path.name} belongs to series {file_uid}, not {series_uid}; "
            "open the folder to pick a series"
        )
    try:
        img = sitk_read(path, "DICOM", image_io="GDCMImageIO")
    except LLM4SegError:
        refuse_if_truncated(path, ds)  # the clearer reason, when it is one
        raise
    mismatch = pixel_data_mismatch(path, ds)  # GDCM reads a header that lies about the pixels
    if mismatch:
        raise LLM4SegError(mismatch)
    vol = _volume_from_dicom_image(img, ds, path, _n_frames(ds))
    vol.dicom_files = (str(path),)
    return vol


def _iter_files(folder: Path) -> list[Path]:
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / name)
    return out


def _float_list(value: Any) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out


def _position_along(ds: Any, normal: np.ndarray | None) -> float | None:
    pos = _float_list(ds.get("ImagePositionPatient", None) or [])
    if normal is None or not pos or len(pos) != 3:
        return None
    return float(np.dot(normal, pos))


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """The DICOM image series in ``folder`` (searched recursively), largest first.

    Each series' files are sorted along the slice normal (ImagePositionPatient),
    then by InstanceNumber, then by name. Files of another size or orientation
    than most of their series (localizers) are left out of it, and so are
    duplicates of a slice position (:mod:`~llm4seg_core.io.positions`;
    ``DicomSeries.dropped`` says which; ``DicomSeries.problem`` says why a
    series with gaps or uneven spacing cannot be read).
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise LLM4SegError(f"no such folder: {root}; check the path")
    if not root.is_dir():
        raise LLM4SegError(f"{root} is not a folder; pass the folder that holds the DICOM files")
    files = _iter_files(root)
    if not files:
        raise LLM4SegError(f"folder {root} is empty; choose the folder that holds the DICOM files")

    groups: dict[str, list[tuple[Path, Any]]] = {}
    for f in files:
        ds = read_dicom_header(f, _DICOM_SCAN_TAGS)
        if ds is None or "Rows" not in ds or "Columns" not in ds:
            continue
        uid = _ds_str(ds, "SeriesInstanceUID") or "unknown"
        groups.setdefault(uid, []).append((f, ds))
    if not groups:
        raise LLM4SegError(
            f"no DICOM images found in {root} ({len(files)} files checked); "
            "choose the folder that holds the .dcm files of one study"
        )

    result: list[DicomSeries] = []
    for uid, items in groups.items():
        # Keep the most common (rows, columns, orientation): localizers / odd sizes drop out.
        def key(item: tuple[Path, Any]) -> tuple[Any, ...]:
            ds = item[1]
            iop = _float_list(ds.get("ImageOrientationPatient", None) or [])
            return (
                int(ds.Rows),
                int(ds.Columns),
                tuple(round(v, 3) for v in iop) if iop else None,
            )

        counts = Counter(key(it) for it in items)
        best_key = max(counts, key=lambda k: (counts[k], str(k)))
        kept = [it for it in items if key(it) == best_key]

        iop = best_key[2]
        normal = None
        if iop and len(iop) == 6:
            normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))

        def order(item: tuple[Path, Any], normal: np.ndarray | None = normal) -> tuple[Any, ...]:
            ds = item[1]
            pos = _float_list(ds.get("ImagePositionPatient", None) or [])
            along = (
                float(np.dot(normal, pos)) if normal is not None and pos and len(pos) == 3 else 0.0
            )
            try:
                inst = int(ds.get("InstanceNumber", 0) or 0)
            except (TypeError, ValueError):
                inst = 0
            return (along, inst, str(item[0]))

        kept.sort(key=order)
        positions = [_position_along(ds, normal) for _, ds in kept]
        plan = plan_slices([p.name for p, _ in kept], positions,
                           [_ds_str(ds, "SOPInstanceUID") for _, ds in kept])
        kept = [kept[i] for i in plan.keep]  # duplicate positions dropped (plan.dropped says which)
        first = kept[0][1]
        n_frames = sum(_n_frames(ds) for _, ds in kept)
        result.append(
            DicomSeries(
                uid=uid,
                description=_ds_str(first, "SeriesDescription") or "",
                modality=_ds_str(first, "Modality"),
                n_files=len(kept),
                files=[p for p, _ in kept],
                n_frames=n_frames,
                dropped=plan.dropped,
                problem=plan.problem,
                positions=[positions[i] for i in plan.keep],
                normal=tuple(float(v) for v in normal) if normal is not None else None,
            )
        )
    result.sort(key=lambda s: (-s.n_files, s.description, s.uid))
    return result


def read_dicom_folder(folder: Path, series_uid: str | None) -> Volume:
    """The largest series in ``folder``, or the one whose SeriesInstanceUID is ``series_uid``."""
    series = list_dicom_series(folder)
    if series_uid is None:
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            available = "; ".join(f"{s.uid} ({s.label})" for s in series)
            raise LLM4SegError(
                f"series {series_uid} is not in {folder}; available series: {available}"
            )
        chosen = matches[0]
    if chosen.problem and chosen.n_files > 1:
        raise LLM4SegError(series_refusal(chosen, series, folder))
    first_ds = read_dicom_header(chosen.files[0])
    if chosen.n_files == 1:
        vol = read_dicom_file(chosen.files[0], None, ds=first_ds)
    else:
        if chosen.n_frames > chosen.n_files:
            raise LLM4SegError(
                f"series {chosen.uid} in {folder.name} is made of several multi-frame files; "
                "open one of its files directly"
            )
        reader = sitk.ImageSeriesReader()
        reader.SetImageIO("GDCMImageIO")
        reader.SetFileNames([str(f) for f in chosen.files])
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            raise LLM4SegError(
                f"cannot read DICOM series {chosen.uid} in {folder.name}: a file is damaged or the "
                f"slices do not fit together ({sitk_reason(exc)})"
            ) from exc
        vol = _volume_from_dicom_image(img, first_ds, folder, chosen.n_files)
        if vol.kind == "image2d":  # defensive: a stack of several files is a volume
            raise LLM4SegError(f"series {chosen.uid} could not be stacked into a volume")
    vol.source = str(folder)
    vol.dicom_files = tuple(str(f) for f in chosen.files)
    vol.meta["n_files"] = str(chosen.n_files)
    vol.meta["n_series_in_folder"] = str(len(series))
    others = [s for s in series if s is not chosen]
    if others:  # so a front end can say which series it did not read
        vol.meta["other_series"] = "; ".join(f"{s.uid} ({s.label})" for s in others)
    if chosen.dropped:
        vol.meta["warning"] = (f"{len(chosen.dropped)} duplicate slice(s) left out: "
                               + "; ".join(chosen.dropped))
    return vol


def reference_uids(reference: Volume) -> tuple[str | None, str | None]:
    """(SeriesInstanceUID, FrameOfReferenceUID) of an image read from DICOM files.

    What a DICOM-SEG or RTSTRUCT must refer to, to be read onto this image;
    (None, None) for an image not read from DICOM or whose first file is gone.
    """
    if not reference.dicom_files:
        return None, None
    ds = read_dicom_header(Path(reference.dicom_files[0]),
                           ["SeriesInstanceUID", "FrameOfReferenceUID"])
    if ds is None:
        return reference.meta.get("series_uid"), None
    return _ds_str(ds, "SeriesInstanceUID"), _ds_str(ds, "FrameOfReferenceUID")
