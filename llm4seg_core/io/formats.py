"""File formats: the suffixes read and written, their names, and content sniffing.

Nothing here reads pixels; these helpers decide which reader a path goes to
(and let a front end such as the napari reader claim files cheaply).
"""

from __future__ import annotations

import os
from pathlib import Path

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
PICTURE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: File suffixes read_image accepts (plus any folder holding DICOM files, and
#: DICOM files without a suffix, recognised by their "DICM" preamble).
SUPPORTED_READ_SUFFIXES: tuple[str, ...] = DICOM_SUFFIXES + VOLUME_SUFFIXES + PICTURE_SUFFIXES
#: File suffixes write_mask writes. ".seg.nrrd" counts as ".nrrd".
SUPPORTED_MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")

_KNOWN_SUFFIXES: tuple[str, ...] = tuple(
    sorted(set(SUPPORTED_READ_SUFFIXES + SUPPORTED_MASK_SUFFIXES), key=len, reverse=True)
)

_FORMAT_NAMES: dict[str, str] = {
    ".dcm": "DICOM",
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

#: How many folder entries :func:`folder_has_dicom` looks at before giving up.
FOLDER_PROBE_LIMIT = 500


def suffix_of(path: str | os.PathLike[str]) -> str:
    """The file's known suffix in lower case, longest first (".nii.gz" before ".gz")."""
    path = Path(path)
    name = path.name.lower()
    for suf in _KNOWN_SUFFIXES:
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def format_name(suffix: str) -> str:
    """The format's name for messages: "NIfTI" for ".nii.gz", "PNG" for ".png"."""
    return _FORMAT_NAMES.get(suffix, suffix.lstrip(".").upper() or "image")


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the 128-byte preamble and the "DICM" marker."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def sniff_suffix(path: str | os.PathLike[str]) -> str | None:
    """The format a file's first bytes show, as its usual suffix; None when they show none.

    DICOM (the "DICM" marker), PNG, JPEG, BMP, TIFF, NRRD, NIfTI-1/2 (plain or
    gzip: a gzip file is taken for ``.nii.gz``) and MetaImage headers.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(544)
    except OSError:
        return None
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ".dcm"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"BM") and len(head) >= 26:
        return ".bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return ".tif"
    if head.startswith(b"NRRD000"):
        return ".nrrd"
    if head.startswith(b"\x1f\x8b"):
        return ".nii.gz"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return ".nii"
    if len(head) >= 544 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return ".nii"
    text = head[:64].lstrip().lower()
    if text.startswith((b"objecttype", b"ndims")):
        return ".mha"
    return None


def same_family(a: str, b: str) -> bool:
    """Whether two suffixes name one reader's format (".nrrd"/".nhdr", ".mha"/".mhd", ...)."""
    families = ((".nii.gz", ".nii"), (".nrrd", ".nhdr"), (".mha", ".mhd"), (".jpg", ".jpeg"),
                (".tif", ".tiff"), DICOM_SUFFIXES)
    return a == b or any(a in f and b in f for f in families)


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """By suffix, or by the "DICM" preamble (files named without a suffix, by UID ("1.2.3.4"),
    or as another format: the content decides). DICOMDIR index files are not images.
    """
    path = Path(path)
    suffix = suffix_of(path)
    if suffix in DICOM_SUFFIXES:
        return True
    if path.name == "DICOMDIR":
        return False
    return has_dicom_preamble(path)


def folder_has_dicom(folder: str | os.PathLike[str], limit: int = FOLDER_PROBE_LIMIT) -> bool:
    """Cheap check: a DICOM file among the first ``limit`` files below ``folder``.

    Hidden folders are skipped; files are visited in sorted order.
    """
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in sorted(dirs) if not d.startswith(".")]
        for name in sorted(files):
            seen += 1
            if seen > limit:
                return False
            if is_dicom_file(Path(root) / name):
                return True
    return False
