"""``read_image``: one path (file or DICOM folder) to a :class:`Volume`, by format."""

from __future__ import annotations

import os
from pathlib import Path

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.dicom import read_dicom_file, read_dicom_folder
from llm4seg_core.io.files import read_sitk_file
from llm4seg_core.io.formats import (
    DICOM_SUFFIXES,
    PICTURE_SUFFIXES,
    SUPPORTED_READ_SUFFIXES,
    VOLUME_SUFFIXES,
    format_name,
    same_family,
    sniff_suffix,
    suffix_of,
)
from llm4seg_core.io.volume import Volume, add_warning


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Volume:
    """Read a medical image or picture into a :class:`Volume`.

    ``path`` is a DICOM folder (the largest series, or the one whose
    SeriesInstanceUID is ``series_uid``), a DICOM file (also multi-frame, RGB
    ultrasound), NIfTI, NRRD, MetaImage or a PNG/JPEG/BMP/TIFF picture. A
    file is read as what its content shows (a DICOM file named ``.png`` is
    read as DICOM, and ``meta["warning"]`` says so); its name decides only
    when the content shows nothing. Every problem with the input raises
    :class:`LLM4SegError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise LLM4SegError(f"no such file or folder: {p}; check the path")
    if p.is_dir():
        return read_dicom_folder(p, series_uid)
    if not p.is_file():
        raise LLM4SegError(f"{p} is not a regular file; choose an image file or a DICOM folder")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise LLM4SegError(
            f"cannot read {p}: {exc.strerror or exc}; check the file's permissions"
        ) from exc
    if size == 0:
        raise LLM4SegError(f"{p.name} is an empty file (0 bytes); copy or export it again")
    if not os.access(p, os.R_OK):
        raise LLM4SegError(f"cannot read {p}: permission denied; check the file's permissions")
    suffix = suffix_of(p)
    note = None
    sniffed = sniff_suffix(p)  # the content decides, not the name
    if sniffed == ".tif" and suffix in DICOM_SUFFIXES:
        sniffed = None  # a DICOM preamble may hold a TIFF header (dual-format files)
    if sniffed is not None and not same_family(sniffed, suffix):
        if suffix in SUPPORTED_READ_SUFFIXES:
            note = (f"{p.name} is a {format_name(sniffed)} file by its content, not "
                    f"{format_name(suffix)} as its name says; read as {format_name(sniffed)}")
        suffix = sniffed
    elif sniffed in (".nii", ".nii.gz"):
        suffix = sniffed  # gzip or not, whatever the name says
    vol = _read_by_suffix(p, suffix, series_uid)
    if note:
        add_warning(vol, note)
    return vol


def _read_by_suffix(p: Path, suffix: str, series_uid: str | None) -> Volume:
    if suffix in DICOM_SUFFIXES:
        return read_dicom_file(p, series_uid)
    if series_uid is not None:
        raise LLM4SegError(
            f"series_uid applies to DICOM only, and {p.name} is not DICOM; drop the series choice"
        )
    if suffix in VOLUME_SUFFIXES or suffix in PICTURE_SUFFIXES:
        return read_sitk_file(p, suffix)
    raise LLM4SegError(
        f"unsupported file type {suffix or '(no suffix)'} for {p.name}; open a DICOM folder or a "
        f"{', '.join(SUPPORTED_READ_SUFFIXES)} file"
    )
