"""NIfTI, NRRD, MetaImage and PNG/JPEG/BMP/TIFF files into a :class:`Volume`.

ITK reads all of them; the completeness checks here catch the truncated files
it would otherwise fill with zeros without complaint.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.formats import PICTURE_SUFFIXES, format_name
from llm4seg_core.io.itk import check_nonempty, geometry, pixels, sitk_read, squeeze_extra_dims
from llm4seg_core.io.volume import Volume, unit_geometry


def _check_nifti_complete(path: Path, compressed: bool) -> None:
    """ITK zero-fills a truncated NIfTI without complaint: check the data length ourselves."""
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as fh:  # type: ignore[operator]
            head = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return  # ITK will report an unreadable header
    if len(head) < 348:
        return
    expected: int | None = None
    for endian in ("<", ">"):
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            vox_offset = struct.unpack(endian + "f", head[108:112])[0]
        elif sizeof_hdr == 540 and len(head) >= 540:
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            vox_offset = struct.unpack(endian + "q", head[168:176])[0]
        else:
            continue
        ndim = int(dims[0])
        if not 1 <= ndim <= 7 or bitpix <= 0 or not np.isfinite(vox_offset):
            return
        n_vox = 1
        for d in dims[1 : ndim + 1]:
            n_vox *= max(int(d), 0)
        expected = max(int(vox_offset), 348) + n_vox * int(bitpix) // 8
        break
    if expected is None:
        return
    if not compressed:
        actual = path.stat().st_size
    else:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", fh.read(4))
        if isize == expected % (1 << 32):
            return
        actual = 0
        try:
            with gzip.open(path, "rb") as fh:
                while True:
                    chunk = fh.read(1 << 22)
                    if not chunk:
                        break
                    actual += len(chunk)
        except (OSError, EOFError, zlib.error):
            pass
    if actual < expected:
        what = (
            f"its compressed data ends before the {expected} bytes its header announces"
            if compressed
            else f"it holds {actual} of the {expected} bytes its header announces"
        )
        raise LLM4SegError(f"{path.name} is truncated: {what}; copy or download the file again")


def _check_picture_complete(path: Path, suffix: str) -> None:
    """libjpeg and ITK's BMP reader fill a truncated picture with filler: catch that."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LLM4SegError(
            f"cannot read {path}: {exc.strerror or exc}; check the file's permissions"
        ) from exc
    truncated = False
    if suffix in (".jpg", ".jpeg"):
        if data[:2] == b"\xff\xd8":
            last_scan = data.rfind(b"\xff\xda")
            truncated = last_scan < 0 or data.rfind(b"\xff\xd9") < last_scan
    elif suffix == ".bmp" and data[:2] == b"BM" and len(data) >= 30:
        off_bits = struct.unpack("<I", data[10:14])[0]
        header_size = struct.unpack("<I", data[14:18])[0]
        if header_size >= 40 and len(data) >= 34:
            width, height = struct.unpack("<ii", data[18:26])
            bit_count = struct.unpack("<H", data[28:30])[0]
            compression = struct.unpack("<I", data[30:34])[0]
            if compression in (0, 3):  # BI_RGB / BI_BITFIELDS: fixed size
                row = ((bit_count * abs(width) + 31) // 32) * 4
                truncated = len(data) < off_bits + row * abs(height)
    if truncated:
        raise LLM4SegError(
            f"{path.name} is truncated (its image data ends early); copy the file again"
        )


def read_sitk_file(path: Path, suffix: str) -> Volume:
    """A NIfTI/NRRD/MetaImage volume in its geometry, or a picture in pixel units."""
    fmt = format_name(suffix)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path, compressed=suffix == ".nii.gz")
    if suffix in (".jpg", ".jpeg", ".bmp"):
        _check_picture_complete(path, suffix)
    img = squeeze_extra_dims(sitk_read(path, fmt), path)
    arr, is_rgb = pixels(img, path)
    check_nonempty(arr, path)
    nd = img.GetDimension()
    if nd not in (2, 3):
        raise LLM4SegError(
            f"{path.name} is a {nd}-D image; only 2-D pictures and 3-D volumes are supported"
        )
    if suffix in PICTURE_SUFFIXES:
        spacing, origin, direction = unit_geometry(nd)
    else:
        spacing, origin, direction = geometry(img)
    return Volume(
        array=arr,
        spacing=spacing,
        origin=origin,
        direction=direction,
        kind="volume" if nd == 3 else "image2d",
        modality=None,
        is_rgb=is_rgb,
        source=str(path),
        meta={"format": fmt},
    )
