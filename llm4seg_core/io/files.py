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
from llm4seg_core.io.formats import PICTURE_SUFFIXES, format_name, suffix_of
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
        magic = head[344:348] if sizeof_hdr == 348 else head[4:8]
        if sizeof_hdr in (348, 540) and magic not in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00"):
            raise LLM4SegError(
                f"{path.name} is not a NIfTI file (its header lacks the NIfTI magic: damaged, or "
                "an old Analyze 7.5 file, whose orientation is unknown); convert it to NIfTI or "
                "export it again")
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
        if sizeof_hdr == 348:
            pixdim = struct.unpack(endian + "8f", head[76:108])
        else:
            pixdim = struct.unpack(endian + "8d", head[104:168])
        voxel = [float(v) for v in pixdim[1 : min(ndim, 3) + 1]]
        if any(not np.isfinite(v) or v == 0 for v in voxel):
            raise LLM4SegError(
                f"{path.name} has voxel size {tuple(voxel)} in its header (pixdim): a size of 0 "
                "(or not a number) has no meaning, and the mask would get a made-up geometry; "
                "fix the header (e.g. nibabel, fslchfiletype) or export the image again"
            )
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


_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8",
                     "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t",
                     "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32",
                     "uint32_t", "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long",
                     "signed long long int", "int64", "int64_t", "ulonglong", "unsigned long long",
                     "unsigned long long int", "uint64", "uint64_t", "double"), 8),
}


def _check_nrrd_size(path: Path) -> None:
    """ITK reads as many voxels as an NRRD header's sizes say and ignores the rest of the data:
    a header that says fewer slices than the file holds would silently lose slices."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return
    end = head.find(b"\n\n")
    if not head.startswith(b"NRRD") or end < 0:
        return  # a detached header (.nhdr) or a damaged one: ITK says what it finds
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip().lstrip("=").strip()
    if "data file" in fields or "datafile" in fields or "line skip" in fields or "byte skip" in fields:
        return
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        per = _NRRD_TYPE_BYTES[fields["type"].lower()]
    except (KeyError, ValueError):
        return
    if any(v <= 0 for v in sizes):
        raise LLM4SegError(f"{path.name} has sizes {tuple(sizes)} in its header: a size of 0 or "
                           "below is a damaged header; export the image again")
    expected = per
    for v in sizes:
        expected *= max(v, 0)
    encoding = fields.get("encoding", "raw").lower()
    offset = end + 2
    if encoding == "raw":
        actual = path.stat().st_size - offset
    elif encoding in ("gzip", "gz"):
        actual = 0
        try:
            with open(path, "rb") as raw:
                raw.seek(offset)
                with gzip.GzipFile(fileobj=raw) as fh:
                    while chunk := fh.read(1 << 22):
                        actual += len(chunk)
                        if actual > expected:
                            break
        except (OSError, EOFError, zlib.error):
            return  # truncated or damaged data: ITK reports it
    else:
        return
    if actual > expected:
        raise LLM4SegError(
            f"{path.name} holds more image data than its header's sizes {tuple(sizes)} say "
            f"({actual if actual <= expected * 4 else 'over ' + str(expected)} bytes, the header "
            f"announces {expected}): the header is wrong, and reading it would drop slices; "
            "fix the header's sizes or export the image again"
        )


def _named_as(path: Path, suffix: str):
    """A context giving a path ITK can open as ``suffix`` (a link with that suffix when the
    file is named otherwise: ITK picks its reader, and NIfTI its layout, by the name)."""
    import contextlib
    import shutil
    import tempfile

    @contextlib.contextmanager
    def ctx():
        if suffix_of(path) == suffix:
            yield path
            return
        folder = tempfile.mkdtemp(prefix="llm4seg-read-")
        link = Path(folder) / f"image{suffix}"
        try:
            try:
                link.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, link)
            yield link
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return ctx()


def _read_grey_alpha_png(path: Path) -> np.ndarray | None:
    """A grey + alpha PNG (which ITK cannot read) as its grey values; None when it is not one."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or not head.startswith(b"\x89PNG") or head[25] != 4:  # colour type 4: LA
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            grey = im.getchannel(0)
            arr = np.asarray(grey)
    except (OSError, ValueError, SyntaxError) as exc:
        raise LLM4SegError(f"cannot read {path.name}: the PNG file is damaged or truncated "
                           f"({exc}); copy or export it again") from exc
    if head[24] == 16:  # 16-bit grey: PIL gives "I;16" planes
        arr = arr.astype(np.uint16)
    return np.ascontiguousarray(arr)


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
    """A NIfTI/NRRD/MetaImage volume in its geometry, or a picture in pixel units.

    ``suffix``: the format (the content's, when the file is named otherwise).
    """
    fmt = format_name(suffix)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path, compressed=suffix == ".nii.gz")
    if suffix == ".nrrd":
        _check_nrrd_size(path)
    if suffix in (".jpg", ".jpeg", ".bmp"):
        _check_picture_complete(path, suffix)
    if suffix == ".png":
        grey = _read_grey_alpha_png(path)
        if grey is not None:
            spacing, origin, direction = unit_geometry(2)
            return Volume(grey, spacing, origin, direction, "image2d", None, False, str(path),
                          {"format": fmt})
    with _named_as(path, suffix) as readable:
        img = squeeze_extra_dims(sitk_read(path, fmt, file=readable), path)
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
        if any(not np.isfinite(v) or v <= 0 for v in spacing):
            raise LLM4SegError(
                f"{path.name} has voxel size {spacing} in its header: a size of 0, below 0 or "
                "not a number has no meaning; fix the header or export the image again")
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
