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
    has_dicom_preamble,
    suffix_of,
)
from llm4seg_core.io.volume import Volume


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Volume:
    """Read a medical image or picture into a :class:`Volume`.

    ``path`` is a DICOM folder (the largest series, or the one whose
    SeriesInstanceUID is ``series_uid``), a DICOM file (also multi-frame, RGB
    ultrasound), NIfTI, NRRD, MetaImage or a PNG/JPEG/BMP/TIFF picture.
    Every problem with the input raises :class:`LLM4SegError`.
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
    dicom_by_content = suffix not in SUPPORTED_READ_SUFFIXES and has_dicom_preamble(p)
    if suffix in DICOM_SUFFIXES or dicom_by_content:
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
