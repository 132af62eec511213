"""Medical image reading and mask writing, on SimpleITK.

``read_image`` turns a path (a DICOM series folder, a DICOM file, NIfTI, NRRD,
MetaImage or a 2-D picture) into a :class:`Volume`: a numpy array in numpy
axis order plus the geometry in ITK order, so that a mask drawn on the array
can be written back in the image's own geometry with :func:`write_mask`.

Conventions
-----------
* Arrays are ``(z, y, x)`` for volumes, ``(z, y, x, 3)`` for RGB stacks
  (ultrasound cine), ``(y, x)`` / ``(y, x, 3)`` for 2-D pictures.
* ``spacing``, ``origin`` and ``direction`` are in ITK order ``(x, y[, z])``;
  ``scale_zyx`` / ``translate_zyx`` / ``affine_zyx`` give the numpy/napari order.
* The pixel type is the file's (int16 HU for most CT). Two DICOM exceptions:
  GDCM widens rescaled integers to int32 (narrowed back to int16 when the
  values fit) and uses float64 for fractional rescale slopes (stored as
  float32: DICOM integer pixels never need more).
* 2-D picture formats (PNG, JPEG, BMP, TIFF) carry no patient geometry; their
  print resolution (dpi) is ignored and they are read in pixel units
  (spacing 1, origin 0, identity direction), so that a PNG mask written for
  them reads back with identical geometry.
* A DICOM image is ``image2d`` only when it is one frame with no patient
  position (ultrasound stills, X-ray projections, secondary captures); a CT /
  MR slice (it has ImagePositionPatient) stays a one-slice ``volume``.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from llm4seg_core.errors import LLM4SegError

__all__ = [
    "DICOM_SUFFIXES",
    "PICTURE_SUFFIXES",
    "SUPPORTED_MASK_SUFFIXES",
    "SUPPORTED_READ_SUFFIXES",
    "VOLUME_SUFFIXES",
    "DicomSeries",
    "Volume",
    "list_dicom_series",
    "mask_suffix_for",
    "read_image",
    "read_mask",
    "write_mask",
]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
PICTURE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: File suffixes read_image accepts (plus any folder holding DICOM files, and
#: DICOM files without a suffix, recognised by their "DICM" preamble).
SUPPORTED_READ_SUFFIXES: tuple[str, ...] = DICOM_SUFFIXES + VOLUME_SUFFIXES + PICTURE_SUFFIXES
#: File suffixes write_mask writes. ".seg.nrrd" counts as ".nrrd".
SUPPORTED_MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")
_VOLUME_MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")

_FORMAT_NAMES: dict[str, str] = {
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

# DICOM header fields read while scanning a folder (no pixel data).
_DICOM_SCAN_TAGS = [
    "SOPClassUID",
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


# --------------------------------------------------------------------------- records


@dataclass(eq=False)
class Volume:
    """An image in memory: pixels in numpy order plus geometry in ITK order."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    kind: str = "volume"
    modality: str | None = None
    is_rgb: bool = False
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("volume", "image2d"):
            raise LLM4SegError(f"unknown image kind {self.kind!r}; use 'volume' or 'image2d'")
        nd = self.ndim
        want = nd + (1 if self.is_rgb else 0)
        if self.array.ndim != want:
            raise LLM4SegError(
                f"a {'RGB ' if self.is_rgb else ''}{self.kind} needs a {want}-D array, got shape "
                f"{tuple(self.array.shape)}; pass (z,y,x) for volumes, (y,x) for 2-D pictures, "
                "plus a last axis of 3 for RGB"
            )
        if self.is_rgb and self.array.shape[-1] != 3:
            raise LLM4SegError(
                f"an RGB image needs a last axis of 3, got shape {tuple(self.array.shape)}"
            )
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in self.direction)
        if len(self.spacing) != nd or len(self.origin) != nd or len(self.direction) != nd * nd:
            raise LLM4SegError(
                f"geometry does not fit a {nd}-D image: spacing {self.spacing}, "
                f"origin {self.origin}, "
                f"direction of length {len(self.direction)} (needs {nd}, {nd} and {nd * nd} values)"
            )

    def __repr__(self) -> str:
        return (
            f"Volume(kind={self.kind!r}, shape={tuple(self.array.shape)}, "
            f"dtype={self.array.dtype}, "
            f"modality={self.modality!r}, is_rgb={self.is_rgb}, spacing={self.spacing}, "
            f"source={self.source!r})"
        )

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions: 3 for a volume, 2 for a 2-D picture."""
        return 3 if self.kind == "volume" else 2

    @property
    def n_slices(self) -> int:
        """Number of z slices (1 for a 2-D picture)."""
        return int(self.array.shape[0]) if self.kind == "volume" else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The array shape without the RGB axis: the shape a mask must have."""
        shape = tuple(int(s) for s in self.array.shape)
        return shape[:-1] if self.is_rgb else shape

    @property
    def scale_zyx(self) -> tuple[float, ...]:
        """Spacing in numpy/napari axis order."""
        return tuple(reversed(self.spacing))

    @property
    def translate_zyx(self) -> tuple[float, ...]:
        """Origin in numpy/napari axis order."""
        return tuple(reversed(self.origin))

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction cosines as an (ndim, ndim) matrix in ITK (x, y, z) order."""
        nd = self.ndim
        return np.asarray(self.direction, dtype=float).reshape(nd, nd)

    @property
    def affine_zyx(self) -> np.ndarray:
        """Homogeneous (ndim+1)x(ndim+1) matrix from array index (z,y,x) to physical (z,y,x) mm.

        Includes spacing, direction and origin; for napari's ``affine=``.
        """
        nd = self.ndim
        rev = np.eye(nd)[::-1]
        linear = rev @ self.direction_matrix @ np.diag(self.spacing) @ rev
        out = np.eye(nd + 1)
        out[:nd, :nd] = linear
        out[:nd, nd] = self.translate_zyx
        return out

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        """A SimpleITK image holding ``array`` (default: this image's array) in this geometry.

        ``array`` must have this image's spatial shape, optionally with one extra
        last axis of components (e.g. RGB).
        """
        arr = self.array if array is None else np.asarray(array)
        spatial = self.spatial_shape
        if arr.shape == spatial:
            is_vector = False
        elif arr.ndim == len(spatial) + 1 and arr.shape[:-1] == spatial:
            is_vector = True
        else:
            raise LLM4SegError(
                f"array of shape {tuple(arr.shape)} does not fit this image of shape {spatial}"
            )
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=is_vector)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


@dataclass
class DicomSeries:
    """One DICOM series found in a folder (what a series picker shows)."""

    uid: str
    description: str
    modality: str | None
    n_files: int
    files: list[Path]
    n_frames: int = 0  # frames in all files together (a cine file has one file, many frames)

    @property
    def label(self) -> str:
        """A one-line description for a picker: description, modality, file count."""
        desc = self.description or "(no description)"
        return (
            f"{desc} [{self.modality or '?'}] {self.n_files} file{'s' if self.n_files != 1 else ''}"
        )


# --------------------------------------------------------------------------- helpers


def _suffix_of(path: Path) -> str:
    name = path.name.lower()
    for suf in sorted(
        set(SUPPORTED_READ_SUFFIXES + SUPPORTED_MASK_SUFFIXES), key=len, reverse=True
    ):
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def _sitk_reason(exc: BaseException) -> str:
    """The most telling line of a SimpleITK/ITK exception, shortened."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    best = lines[-1] if lines else type(exc).__name__
    for ln in reversed(lines):
        if "ERROR" in ln or "error" in ln:
            best = ln.split("ERROR:", 1)[-1]
            break
    best = re.sub(r"\b\w+\(0x[0-9a-fA-F]+\):\s*", "", best).strip()  # drop "GDCMImageIO(0x55..): "
    return best[:200]


def has_dicom_preamble(path: Path) -> bool:
    """True when the file starts with the 128-byte preamble and the "DICM" marker."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_dicom_header(path: Path, tags: list[str] | None = None) -> Any | None:
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


def _format_name(suffix: str) -> str:
    return _FORMAT_NAMES.get(suffix, suffix.lstrip(".").upper() or "image")


def _sitk_read(path: Path, fmt: str, image_io: str | None = None) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise LLM4SegError(
            f"cannot read {path.name}: not a valid {fmt} file, or it is damaged/truncated "
            f"({_sitk_reason(exc)})"
        ) from exc
    size = reader.GetSize()
    if any(int(s) == 0 for s in size):
        raise LLM4SegError(
            f"{path.name} holds an empty image (size {tuple(size)}); choose another file"
        )
    _check_dims(tuple(int(s) for s in size), reader.GetNumberOfComponents(), path)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise LLM4SegError(
            f"cannot read {path.name}: the {fmt} file is damaged or truncated "
            f"({_sitk_reason(exc)}); "
            "copy or export it again"
        ) from exc


_MULTI_MSG = (
    "4-D images (time series / multi-channel) are not supported; extract one 3-D volume first"
)


def _check_dims(size: tuple[int, ...], n_components: int, path: Path) -> None:
    if len(size) > 3 and any(s != 1 for s in size[3:]):
        raise LLM4SegError(f"{path.name} has size {size}: {_MULTI_MSG}")
    if n_components not in (1, 2, 3, 4):
        raise LLM4SegError(f"{path.name} has {n_components} values per pixel: {_MULTI_MSG}")


def _squeeze_extra_dims(img: sitk.Image, path: Path) -> sitk.Image:
    size = list(img.GetSize())
    if len(size) <= 3:
        return img
    if any(s != 1 for s in size[3:]):
        raise LLM4SegError(f"{path.name} has size {tuple(size)}: {_MULTI_MSG}")
    extract = sitk.ExtractImageFilter()
    extract.SetSize(size[:3] + [0] * (len(size) - 3))
    extract.SetIndex([0] * len(size))
    extract.SetDirectionCollapseToStrategy(sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    try:
        return extract.Execute(img)
    except RuntimeError:
        extract.SetDirectionCollapseToStrategy(sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOIDENTITY)
        return extract.Execute(img)


def _pixels(img: sitk.Image, path: Path) -> tuple[np.ndarray, bool]:
    """Array from an image; colour handling: RGB kept, alpha dropped, other vectors refused."""
    n_comp = img.GetNumberOfComponentsPerPixel()
    arr = sitk.GetArrayFromImage(img)
    if n_comp == 1:
        return arr, False
    integer = np.issubdtype(arr.dtype, np.integer)
    if n_comp == 2 and integer:  # gray + alpha
        return np.ascontiguousarray(arr[..., 0]), False
    if n_comp in (3, 4) and integer:
        return np.ascontiguousarray(arr[..., :3]), True
    raise LLM4SegError(f"{path.name} has {n_comp} {arr.dtype} values per pixel: {_MULTI_MSG}")


def _geometry(img: sitk.Image) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Geometry of an image, canonicalised so that write -> read is a fixed point.

    File formats store geometry with rounding noise (NRRD keeps spacing x
    direction, so 1.0 comes back as 0.9999999999999999). Spacing and origin are
    kept to 12 significant digits and direction cosines to 12 decimals: far
    below any physical meaning, and stable under every later write and read.
    """
    return (
        tuple(float(f"{float(v):.12g}") for v in img.GetSpacing()),
        tuple(float(f"{float(v):.12g}") + 0.0 for v in img.GetOrigin()),
        tuple(round(float(v), 12) + 0.0 for v in img.GetDirection()),
    )


def _unit_geometry(nd: int) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    return (
        (1.0,) * nd,
        (0.0,) * nd,
        tuple(float(v) for v in np.eye(nd).ravel()),
    )


def _narrow_dicom_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.size and arr.dtype == np.int32:
        lo, hi = int(arr.min()), int(arr.max())
        if -32768 <= lo and hi <= 32767:
            return arr.astype(np.int16)
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    return arr


def _check_nonempty(arr: np.ndarray, path: Path) -> None:
    if arr.size == 0:
        raise LLM4SegError(
            f"{path.name} holds an empty image (shape {tuple(arr.shape)}); choose another file"
        )


# --------------------------------------------------------------------------- readers


def _read_sitk_file(path: Path, suffix: str) -> Volume:
    fmt = _format_name(suffix)
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path, compressed=suffix == ".nii.gz")
    if suffix in (".jpg", ".jpeg", ".bmp"):
        _check_picture_complete(path, suffix)
    img = _squeeze_extra_dims(_sitk_read(path, fmt), path)
    arr, is_rgb = _pixels(img, path)
    _check_nonempty(arr, path)
    nd = img.GetDimension()
    if nd not in (2, 3):
        raise LLM4SegError(
            f"{path.name} is a {nd}-D image; only 2-D pictures and 3-D volumes are supported"
        )
    if suffix in PICTURE_SUFFIXES:
        spacing, origin, direction = _unit_geometry(nd)
    else:
        spacing, origin, direction = _geometry(img)
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


def _volume_from_dicom_image(img: sitk.Image, ds: Any, path: Path, n_frames_total: int) -> Volume:
    img = _squeeze_extra_dims(img, path)
    arr, is_rgb = _pixels(img, path)
    _check_nonempty(arr, path)
    arr = _narrow_dicom_dtype(arr)
    spacing, origin, direction = _geometry(img)
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


def _read_dicom_file(path: Path, series_uid: str | None, ds: Any | None = None) -> Volume:
    if ds is None:
        ds = _read_dicom_header(path)
    if ds is None:
        raise LLM4SegError(
            f"{path.name} is not a readable DICOM file; check that it is not damaged"
        )
    if "Rows" not in ds or "Columns" not in ds:
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
    img = _sitk_read(path, "DICOM", image_io="GDCMImageIO")
    return _volume_from_dicom_image(img, ds, path, _n_frames(ds))


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


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """The DICOM image series in ``folder`` (searched recursively), largest first.

    Each series' files are sorted along the slice normal (ImagePositionPatient),
    then by InstanceNumber, then by name. Files of another size or orientation
    than most of their series (localizers) are left out of it.
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
        ds = _read_dicom_header(f, _DICOM_SCAN_TAGS)
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
            )
        )
    result.sort(key=lambda s: (-s.n_files, s.description, s.uid))
    return result


def _read_dicom_folder(folder: Path, series_uid: str | None) -> Volume:
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
    first_ds = _read_dicom_header(chosen.files[0])
    if chosen.n_files == 1:
        vol = _read_dicom_file(chosen.files[0], None, ds=first_ds)
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
                f"slices do not fit together ({_sitk_reason(exc)})"
            ) from exc
        vol = _volume_from_dicom_image(img, first_ds, folder, chosen.n_files)
        if vol.kind == "image2d":  # defensive: a stack of several files is a volume
            raise LLM4SegError(f"series {chosen.uid} could not be stacked into a volume")
    vol.source = str(folder)
    vol.meta["n_files"] = str(chosen.n_files)
    vol.meta["n_series_in_folder"] = str(len(series))
    return vol


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
        return _read_dicom_folder(p, series_uid)
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
    suffix = _suffix_of(p)
    if suffix in DICOM_SUFFIXES or (suffix not in SUPPORTED_READ_SUFFIXES and has_dicom_preamble(p)):
        return _read_dicom_file(p, series_uid)
    if series_uid is not None:
        raise LLM4SegError(
            f"series_uid applies to DICOM only, and {p.name} is not DICOM; drop the series choice"
        )
    if suffix in VOLUME_SUFFIXES or suffix in PICTURE_SUFFIXES:
        return _read_sitk_file(p, suffix)
    raise LLM4SegError(
        f"unsupported file type {suffix or '(no suffix)'} for {p.name}; open a DICOM folder or a "
        f"{', '.join(SUPPORTED_READ_SUFFIXES)} file"
    )


# --------------------------------------------------------------------------- masks


def _png_can_hold(reference: Volume) -> bool:
    nd = reference.ndim
    spacing, origin, direction = _unit_geometry(nd)
    return (
        reference.kind == "image2d"
        and reference.spacing == spacing
        and reference.origin == origin
        and reference.direction == direction
    )


def mask_suffix_for(reference: Volume) -> str:
    """The suffix a mask for ``reference`` is best saved with: ".png" or ".nii.gz"/".nrrd".

    PNG for 2-D pictures in pixel units; ".nrrd" for 2-D images with real
    geometry (PNG cannot store it); ".nii.gz" for volumes.
    """
    if reference.kind == "image2d":
        return ".png" if _png_can_hold(reference) else ".nrrd"
    return ".nii.gz"


def _as_label_array(mask: Any, what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.size == 0:
        raise LLM4SegError(f"{what} is empty (shape {tuple(arr.shape)})")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LLM4SegError(
                f"{what} holds non-integer values; threshold it into labels 0-255 first"
            )
        lo, hi = float(arr.min()), float(arr.max())
    else:
        raise LLM4SegError(f"{what} has pixel type {arr.dtype}; a mask needs integer labels 0-255")
    if lo < 0 or hi > 255:
        raise LLM4SegError(f"{what} has labels {lo:g}..{hi:g}; masks hold labels 0-255")
    return arr.astype(np.uint8, copy=False)


def check_mask_path(reference: Volume, path: str | os.PathLike[str]) -> Path:
    """Raise a clear error now if a mask of ``reference`` cannot be saved at ``path``.

    Front ends call this before long work, so a bad output name fails at once.
    """
    p = Path(path).expanduser()
    suffix = _suffix_of(p)
    if suffix not in SUPPORTED_MASK_SUFFIXES:
        raise LLM4SegError(
            f"cannot save a mask as {suffix or '(no suffix)'}; "
            f"use one of {', '.join(SUPPORTED_MASK_SUFFIXES)}"
        )
    if suffix == ".png":
        if reference.kind != "image2d":
            raise LLM4SegError(
                "a PNG holds one 2-D picture, but this image is a volume "
                f"({reference.n_slices} slices); "
                "save its mask as .nii.gz, .nrrd or .mha"
            )
        if not _png_can_hold(reference):
            raise LLM4SegError(
                f"PNG cannot store this image's geometry (spacing {reference.spacing}, origin "
                f"{reference.origin}); save the mask as .nrrd, .nii.gz or .mha"
            )
    parent = p.parent
    if not parent.is_dir():
        raise LLM4SegError(f"folder {parent} does not exist; create it or choose another place")
    return p


def write_mask(mask: np.ndarray, reference: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a label mask in ``reference``'s geometry; atomic (temp file + rename).

    Volumes: .nii.gz, .nii, .nrrd (also .seg.nrrd) or .mha, uint8, compressed.
    2-D pictures: .png (a binary 0/1 mask is stored as 0/255), or the volume
    formats when the picture has real geometry that PNG cannot store.
    """
    p = check_mask_path(reference, path)
    suffix = _suffix_of(p)
    arr = _as_label_array(mask, "the mask")
    if arr.shape != reference.spatial_shape:
        raise LLM4SegError(
            f"mask shape {tuple(arr.shape)} does not match the image shape "
            f"{reference.spatial_shape}; "
            "segment this image again or load the matching mask"
        )
    if suffix == ".png":
        if int(arr.max()) == 1:  # binary mask: the 0/255 convention of BUSI/ISIC/Kvasir
            arr = arr * np.uint8(255)
    parent = p.parent
    img = reference.to_sitk(arr)
    tmp = parent / f".{p.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        sitk.WriteImage(img, str(tmp), useCompression=suffix != ".png")
        os.replace(tmp, p)
    except RuntimeError as exc:
        raise LLM4SegError(f"cannot save the mask to {p}: {_sitk_reason(exc)}") from exc
    except OSError as exc:
        raise LLM4SegError(
            f"cannot save the mask to {p}: {exc.strerror or exc}; check the folder's permissions"
        ) from exc
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return p


def read_mask(path: str | os.PathLike[str], reference: Volume | None = None) -> np.ndarray:
    """Read a label mask as uint8; a 0/255 mask becomes 0/1 (JPEG masks are split at 128).

    With ``reference``, the mask's shape must be the image's spatial shape.
    """
    p = Path(path).expanduser()
    vol = read_image(p)
    arr = vol.array
    if vol.is_rgb:
        if not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            raise LLM4SegError(
                f"{p.name} is a colour picture, not a label mask; "
                "save the mask as gray labels (0/1 or 0/255)"
            )
        arr = arr[..., 0]
    if _suffix_of(p) in (".jpg", ".jpeg") and np.issubdtype(arr.dtype, np.integer):
        arr = (arr >= 128).astype(np.uint8)  # lossy: the labels are blurred around 0 and 255
    labels = _as_label_array(arr, f"mask {p.name}")
    values = np.unique(labels)
    if values.size <= 2 and values[-1] == 255 and values[0] in (0, 255):
        labels = (labels == 255).astype(np.uint8)
    if reference is not None and labels.shape != reference.spatial_shape:
        raise LLM4SegError(
            f"mask {p.name} has shape {tuple(labels.shape)} but the image has shape "
            f"{reference.spatial_shape}; load the mask that belongs to this image"
        )
    return np.ascontiguousarray(labels)
