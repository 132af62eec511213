"""napari writer contribution: a labels layer as a mask file in its image's geometry.

Volumes go to NIfTI (.nii.gz, .nii), NRRD (.nrrd, also .seg.nrrd) or
MetaImage (.mha); 2-D pictures in pixel units to PNG (a 0/1 mask is stored as
0/255). An image read from DICOM can also get a DICOM-SEG (.dcm): one segment
per label with the model's names and colours, LLM4Seg and the model's task and
version as its algorithm (``metadata["llm4seg_model"]``, set by Segment),
frames referencing the source files (the record's ``dicom_files``); another
image gets a message saying why not. The named labels of the layer
(:func:`~llm4seg_napari.masks.layer_labels`) also go into NIfTI/NRRD/MHA, as
a ``<mask>.labels.json`` sidecar. The geometry comes from, in this order:

1. ``metadata["llm4seg_volume"]``, the record the LLM4Seg reader puts on an
   image layer (the dock widget copies it to the labels it makes): the mask is
   written exactly in the source image's spacing, origin and direction;
2. else the layer's own ``scale``, ``translate``, ``rotate`` and ``affine``
   (napari z, y, x order, turned into ITK's x, y, z).

The write is atomic (``llm4seg_core.io.write_mask``: temp file + rename).
Every problem (wrong suffix, PNG for a volume, shape that does not match the
image, labels outside 0-255, no such folder) raises LLM4SegError, which napari
shows as a notification.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.io import Volume, mask_suffix_for, suffix_of, write_mask
from llm4seg_core.io.dicomseg import Algorithm
from llm4seg_core.io.masks import DICOM_SEG_SUFFIX
from llm4seg_napari.geometry import (
    VOLUME_KEY,
    reference_from_layer,
    reference_from_record,
)
from llm4seg_napari.masks import MODEL_KEY, layer_labels

__all__ = ["labels_reference", "write_labels"]


def _as_array(data: Any) -> np.ndarray:
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]):
        data = data[0]  # multiscale labels: the full-resolution level
    return np.asarray(data)


def labels_reference(attributes: Mapping[str, Any], shape: tuple[int, ...]) -> Volume:
    """The pixel-less reference Volume a labels layer of ``shape`` is saved in."""
    metadata = attributes.get("metadata") or {}
    record = metadata.get(VOLUME_KEY) if isinstance(metadata, Mapping) else None
    if record:
        return reference_from_record(record, shape)
    return reference_from_layer(attributes, shape)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer (``data``, layer attributes ``meta``) to ``path``.

    A path without a suffix gets the suggested one (.nii.gz for volumes, .png
    for pictures in pixel units); .dcm is a DICOM-SEG (images read from DICOM
    only); another suffix than those and ``SUPPORTED_MASK_SUFFIXES`` raises.
    Returns ``[written path]``.
    """
    arr = _as_array(data)
    reference = labels_reference(meta or {}, tuple(int(s) for s in arr.shape))
    p = Path(path).expanduser()
    if not p.suffix:
        p = p.with_name(p.name + mask_suffix_for(reference))
    labels = layer_labels(meta or {})
    algorithm = None
    if suffix_of(p) == DICOM_SEG_SUFFIX:
        metadata = (meta or {}).get("metadata") or {}
        model = metadata.get(MODEL_KEY) if isinstance(metadata, Mapping) else None
        model = model if isinstance(model, Mapping) else {}
        algorithm = Algorithm(task=str(model.get("task") or "default"),
                              model=str(model.get("model") or ""),
                              automatic=bool(model.get("automatic", True)))
    return [str(write_mask(arr, reference, p, labels=labels or None, algorithm=algorithm))]
