"""Label masks: where they can be saved, writing them in an image's geometry, reading them back.

Masks are uint8 labels 0-255. A binary mask in a PNG is stored as 0/255 (the
convention of BUSI/ISIC/Kvasir) and read back as 0/1. :func:`read_mask` gives the
labels, :func:`read_labelled_mask` the labels and their table (a NIfTI/NRRD/MHA
mask's sidecar, a DICOM-SEG's segments, an RTSTRUCT's ROIs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from llm4seg_core.atomic import atomic_write
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.formats import SUPPORTED_MASK_SUFFIXES, suffix_of
from llm4seg_core.io.itk import sitk_reason
from llm4seg_core.io.read import read_image
from llm4seg_core.io.dicomlabels import label_object_kind, read_labels
from llm4seg_core.io.dicomseg import Algorithm, check_dicom_seg_path, write_dicom_seg
from llm4seg_core.io.labels import (
    Label,
    LabelVolume,
    label_table,
    read_label_sidecar,
    write_label_sidecar,
)
from llm4seg_core.io.volume import Volume, unit_geometry

DICOM_SEG_SUFFIX = ".dcm"
"""A mask saved with this suffix is a DICOM-SEG (for an image read from DICOM)."""


def _png_can_hold(reference: Volume) -> bool:
    nd = reference.ndim
    spacing, origin, direction = unit_geometry(nd)
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
    suffix = suffix_of(p)
    if suffix == DICOM_SEG_SUFFIX:
        check_dicom_seg_path(reference)
    elif suffix not in SUPPORTED_MASK_SUFFIXES:
        raise LLM4SegError(
            f"cannot save a mask as {suffix or '(no suffix)'}; "
            f"use one of {', '.join(SUPPORTED_MASK_SUFFIXES)} (or {DICOM_SEG_SUFFIX}, a DICOM-SEG, "
            "for an image read from DICOM)"
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


def write_mask(mask: np.ndarray, reference: Volume, path: str | os.PathLike[str], *,
               labels: Iterable[Label] | None = None, algorithm: Algorithm | None = None) -> Path:
    """Write a label mask in ``reference``'s geometry, atomically (temp file + rename).

    Volumes: .nii.gz, .nii, .nrrd (also .seg.nrrd) or .mha, uint8, compressed.
    2-D pictures: .png (a binary 0/1 mask is stored as 0/255), or the volume
    formats when the picture has real geometry that PNG cannot store.
    .dcm: a DICOM-SEG, for an image read from DICOM (:mod:`~llm4seg_core.io.dicomseg`;
    ``algorithm`` names the model that made it).

    ``labels``: the label table (names, colours); a DICOM-SEG holds it, the
    other formats get it in a sidecar ``<mask>.labels.json`` (not PNG: a
    picture's mask is 0/255).
    """
    p = check_mask_path(reference, path)
    suffix = suffix_of(p)
    arr = _as_label_array(mask, "the mask")
    if arr.shape != reference.spatial_shape:
        raise LLM4SegError(
            f"mask shape {tuple(arr.shape)} does not match the image shape "
            f"{reference.spatial_shape}; "
            "segment this image again or load the matching mask"
        )
    if suffix == DICOM_SEG_SUFFIX:
        return write_dicom_seg(arr, reference, p, labels or (), algorithm)
    if suffix == ".png":
        if int(arr.max()) == 1:  # binary mask: the 0/255 convention of BUSI/ISIC/Kvasir
            arr = arr * np.uint8(255)
    img = reference.to_sitk(arr)
    try:
        atomic_write(
            p,
            lambda tmp: sitk.WriteImage(img, tmp, useCompression=suffix != ".png"),
            suffix=suffix, staged=True,
        )
    except RuntimeError as exc:
        raise LLM4SegError(f"cannot save the mask to {p}: {sitk_reason(exc)}") from exc
    except OSError as exc:
        raise LLM4SegError(
            f"cannot save the mask to {p}: {exc.strerror or exc}; check the folder's permissions"
        ) from exc
    if labels is not None and suffix != ".png":
        present = [int(v) for v in np.unique(arr) if v > 0]
        write_label_sidecar(p, label_table(present, meta_labels=[t.to_dict() for t in labels]))
    return p


def read_mask(path: str | os.PathLike[str], reference: Volume | None = None) -> np.ndarray:
    """Read a label mask as uint8; a 0/255 mask becomes 0/1 (JPEG masks are split at 128).

    With ``reference``, the mask's shape must be the image's spatial shape. A
    DICOM-SEG or RTSTRUCT is read onto ``reference``'s grid (which it then needs).
    """
    p = Path(path).expanduser()
    if label_object_kind(p):
        return read_labels(p, _reference_for(p, reference)).labels
    return mask_labels(read_image(p), p, reference)


def read_labelled_mask(path: str | os.PathLike[str],
                       reference: Volume | None = None) -> LabelVolume:
    """:func:`read_mask` and the mask's label table: from its ``<mask>.labels.json`` sidecar
    (none: an empty table), or a DICOM-SEG's segments, or an RTSTRUCT's ROIs (with notes)."""
    p = Path(path).expanduser()
    if label_object_kind(p):
        return read_labels(p, _reference_for(p, reference))
    labels = mask_labels(read_image(p), p, reference)
    return LabelVolume(labels, read_label_sidecar(p) or ())


def _reference_for(path: Path, reference: Volume | None) -> Volume:
    if reference is None:
        kind = "a DICOM-SEG" if label_object_kind(path) == "seg" else "an RTSTRUCT"
        raise LLM4SegError(f"{path.name} is {kind}: open the image it was made on first "
                           "(it is read onto that image's grid)")
    return reference


def mask_labels(vol: Volume, path: str | os.PathLike[str],
                reference: Volume | None = None) -> np.ndarray:
    """The labels of a mask already read as ``vol`` from ``path`` (see :func:`read_mask`);
    for a caller that also needs the mask's own geometry, without reading the file twice."""
    p = Path(path)
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
    if suffix_of(p) in (".jpg", ".jpeg") and np.issubdtype(arr.dtype, np.integer):
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
