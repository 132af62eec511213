"""Between a :class:`~llm4seg_core.io.Volume`'s geometry and napari layer keywords.

No napari import here: these are plain functions on numpy arrays and dicts,
shared by the reader, the writer, the sample data, the dock widget and the app.

Placement on the canvas (one rule, used for every layer this plugin makes):

* identity direction (most CT/MR): ``scale`` = ``Volume.scale_zyx`` and
  ``translate`` = ``Volume.translate_zyx``, so that napari's scale bar, its
  coordinates and the ``scale`` field all read in mm;
* any other direction (flipped or oblique axes): ``affine`` =
  ``Volume.affine_zyx`` alone (spacing, direction and origin in one matrix),
  with no ``scale`` / ``translate``.

Either way a pixel lands at its physical (patient) position in mm, in z, y, x
order, so an image and a mask of it overlay, and two series of one study
overlay too. A labels layer made for an image must get the same keywords:
use :func:`layer_kwargs` with the image's record.

The geometry record (``metadata["llm4seg_volume"]``) is a plain, JSON-friendly
dict: everything of the Volume but its pixels (with, for DICOM, its source
files: what a DICOM-SEG of the mask refers to). :func:`reference_from_record`
turns it back into a Volume to hand to ``llm4seg_core.io.write_mask``, and
:func:`volume_from_layer` an image layer into the Volume the engine segments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import Volume

#: Key of the geometry record in a layer's ``metadata``.
VOLUME_KEY = "llm4seg_volume"
#: Key of the other DICOM series of a folder in an image layer's ``metadata``.
SERIES_KEY = "llm4seg_series"
#: Key of the CT display window preset name in an image layer's ``metadata``.
WINDOW_KEY = "llm4seg_window"

__all__ = [
    "SERIES_KEY",
    "VOLUME_KEY",
    "WINDOW_KEY",
    "layer_kwargs",
    "reference_from_layer",
    "reference_from_record",
    "volume_from_layer",
    "volume_record",
]

_TOL = 1e-6


def volume_record(volume: Volume) -> dict[str, Any]:
    """The Volume minus its pixels, as plain Python values (lists, str, bool)."""
    return {
        "shape": list(volume.spatial_shape),
        "dtype": str(volume.array.dtype),
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": list(volume.direction),
        "kind": volume.kind,
        "modality": volume.modality,
        "is_rgb": bool(volume.is_rgb),
        "source": volume.source,
        "meta": dict(volume.meta),
        # read from DICOM: its files in slice order (a DICOM-SEG of the mask refers to them)
        "dicom_files": list(volume.dicom_files),
    }


def reference_from_record(record: Mapping[str, Any], shape: tuple[int, ...]) -> Volume:
    """A pixel-less Volume in ``record``'s geometry, for a mask of spatial ``shape``.

    The Volume's array is a zero-stride view (no memory); ``write_mask`` only
    reads its shape and geometry. Raises when ``shape`` is not the record's.
    """
    try:
        want = tuple(int(s) for s in record["shape"])
        kind = str(record.get("kind", "volume" if len(want) == 3 else "image2d"))
        spacing, origin, direction = record["spacing"], record["origin"], record["direction"]
    except (KeyError, TypeError, ValueError) as exc:
        raise LLM4SegError(
            f"the layer's {VOLUME_KEY} metadata is incomplete ({exc!r}); "
            "open the image again with the LLM4Seg reader"
        ) from exc
    shape = tuple(int(s) for s in shape)
    if shape != want:
        raise LLM4SegError(
            f"the labels have shape {shape} but the image they belong to has shape {want}; "
            "save labels drawn on that image, or remove the layer's "
            f"'{VOLUME_KEY}' metadata to save it with its own scale and translate"
        )
    return Volume(
        array=np.broadcast_to(np.zeros((), np.uint8), shape),
        spacing=tuple(spacing),
        origin=tuple(origin),
        direction=tuple(direction),
        kind=kind,
        modality=record.get("modality"),
        is_rgb=False,
        source=str(record.get("source", "")),
        meta={str(k): str(v) for k, v in dict(record.get("meta") or {}).items()},
        dicom_files=tuple(str(f) for f in (record.get("dicom_files") or ())),
    )


def has_identity_direction(volume: Volume) -> bool:
    return bool(np.allclose(volume.direction_matrix, np.eye(volume.ndim), atol=_TOL))


def layer_kwargs(volume: Volume) -> dict[str, Any]:
    """napari placement keywords for a layer over ``volume`` (see the module docstring)."""
    if has_identity_direction(volume):
        return {"scale": tuple(volume.scale_zyx), "translate": tuple(volume.translate_zyx)}
    return {"affine": volume.affine_zyx}


def _square(value: Any, nd: int, what: str) -> np.ndarray:
    m = np.asarray(value, dtype=float)
    if m.shape == (nd + 1, nd + 1):
        return m
    if m.shape == (nd, nd):
        out = np.eye(nd + 1)
        out[:nd, :nd] = m
        return out
    raise LLM4SegError(
        f"the layer's {what} has shape {m.shape}; expected {nd}x{nd} for {nd}-D labels"
    )


def _get(attributes: Mapping[str, Any], key: str, default: Any) -> Any:
    value = attributes.get(key)
    return default if value is None else value


def reference_from_layer(attributes: Mapping[str, Any], shape: tuple[int, ...]) -> Volume:
    """A pixel-less Volume from a napari layer's own transform (no LLM4Seg record).

    Uses ``scale``, ``translate``, ``rotate`` and ``affine`` of the layer
    state; refuses shear and non-orthogonal axes, which medical formats cannot
    store.
    """
    nd = len(shape)
    if nd not in (2, 3):
        raise LLM4SegError(
            f"labels of shape {tuple(shape)} are {nd}-D; masks are saved for 2-D pictures "
            "or 3-D volumes only"
        )
    scale = np.asarray(_get(attributes, "scale", [1.0] * nd), float)
    translate = np.asarray(_get(attributes, "translate", [0.0] * nd), float)
    if scale.shape != (nd,) or translate.shape != (nd,):
        raise LLM4SegError(
            f"the layer's scale {tuple(scale)} / translate {tuple(translate)} do not fit "
            f"{nd}-D labels"
        )
    shear = attributes.get("shear")
    if shear is not None and np.any(np.abs(np.asarray(shear, float)) > _TOL):
        raise LLM4SegError(
            "the labels layer is sheared; NIfTI/NRRD/MHA cannot store a shear: "
            "reset the layer's shear before saving"
        )
    rotate = _square(_get(attributes, "rotate", np.eye(nd)), nd, "rotate")
    affine = _square(_get(attributes, "affine", np.eye(nd + 1)), nd, "affine")
    # napari: world = affine @ (rotate @ diag(scale) @ index + translate)
    inner = np.eye(nd + 1)
    inner[:nd, :nd] = rotate[:nd, :nd] @ np.diag(scale)
    inner[:nd, nd] = translate
    full = affine @ inner
    linear, offset = full[:nd, :nd], full[:nd, nd]
    spacing_zyx = np.linalg.norm(linear, axis=0)
    if np.any(spacing_zyx <= 0):
        raise LLM4SegError("the labels layer has a zero scale; set a positive scale before saving")
    unit = linear / spacing_zyx
    if not np.allclose(unit.T @ unit, np.eye(nd), atol=1e-5):
        raise LLM4SegError(
            "the labels layer's axes are not at right angles (affine with shear); "
            "NIfTI/NRRD/MHA cannot store that"
        )
    rev = np.eye(nd)[::-1]
    direction_xyz = rev @ unit @ rev
    return Volume(
        array=np.broadcast_to(np.zeros((), np.uint8), tuple(int(s) for s in shape)),
        spacing=tuple(float(v) for v in spacing_zyx[::-1]),
        origin=tuple(float(v) for v in offset[::-1]),
        direction=tuple(float(v) for v in direction_xyz.ravel()),
        kind="volume" if nd == 3 else "image2d",
    )


def volume_from_layer(data: Any, attributes: Mapping[str, Any]) -> Volume:
    """An image layer as a Volume: its pixels plus geometry (``attributes`` = layer state).

    The geometry comes from ``metadata["llm4seg_volume"]`` when the LLM4Seg
    reader made the layer, else from its scale/translate/rotate/affine.
    """
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]):
        data = data[0]  # multiscale: the full-resolution level
    array = np.asarray(data)
    rgb = bool(attributes.get("rgb"))
    spatial = tuple(int(s) for s in (array.shape[:-1] if rgb else array.shape))
    if len(spatial) not in (2, 3):
        raise LLM4SegError(
            f"the image layer has shape {array.shape}: LLM4Seg segments 2-D pictures and 3-D "
            "volumes (z, y, x); split other data into such layers first"
        )
    metadata = attributes.get("metadata") or {}
    record = metadata.get(VOLUME_KEY) if isinstance(metadata, Mapping) else None
    if record:
        ref = reference_from_record(record, spatial)
    else:
        ref = reference_from_layer(attributes, spatial)
    # the reference's geometry around the layer's pixels
    return dataclasses.replace(ref, array=array, is_rgb=rgb, meta=dict(ref.meta))
