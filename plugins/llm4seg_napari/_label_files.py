"""Label files as labels layers, named and coloured: a DICOM-SEG or RTSTRUCT onto the open
image it was made on, and a mask file with a ``<mask>.labels.json`` sidecar.

No napari import: the reader and the app hand in the open image layers as
``(name, metadata)`` pairs; the engine (:func:`llm4seg_core.io.read_labels`)
does the reading. A DICOM-SEG or RTSTRUCT is placed like its image and carries
its geometry record, so that it is saved (also as a DICOM-SEG) in the image's
geometry; what the engine had to skip is in ``metadata[NOTES_KEY]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import (
    Volume,
    label_object_kind,
    mask_labels,
    read_image,
    read_labels,
    refers_to,
)
from llm4seg_core.io.labels import read_label_sidecar, sidecar_path
from llm4seg_napari.geometry import VOLUME_KEY, layer_kwargs, reference_from_record, volume_record
from llm4seg_napari.masks import labels_kwargs

__all__ = ["NOTES_KEY", "is_label_file", "label_file_layer"]

#: Key of what the engine skipped or decided (a list of lines) in a labels layer's metadata.
NOTES_KEY = "llm4seg_notes"
_KIND_NAMES = {"seg": "a DICOM-SEG", "rtstruct": "an RTSTRUCT"}

OpenImage = tuple[str, Mapping[str, Any]]  # an image layer's name and metadata


def is_label_file(path: Path) -> bool:
    """A DICOM-SEG, an RTSTRUCT, or a mask file with a label table beside it."""
    return path.is_file() and (label_object_kind(path) is not None
                               or sidecar_path(path).is_file())


def _reference_image(path: Path, images: Sequence[OpenImage]) -> tuple[str, dict[str, Any],
                                                                           Volume]:
    """The open image ``path`` was made on: (its name, its geometry record, the Volume)."""
    for name, metadata in images:
        record = (metadata or {}).get(VOLUME_KEY) or {}
        if not record.get("dicom_files"):
            continue
        reference = reference_from_record(record, tuple(record["shape"]))
        if refers_to(path, reference):
            return name, dict(record), reference
    kind = _KIND_NAMES[label_object_kind(path) or "seg"]
    opened = "none of the open images is it" if images else "no image is open"
    raise LLM4SegError(f"{path.name} is {kind}: open the DICOM series it was made on first "
                       f"({opened}), then open {path.name} again")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".dcm", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dicom_labels_layer(path: Path, images: Sequence[OpenImage]) -> tuple[Any, dict[str, Any],
                                                                           str]:
    image_name, record, reference = _reference_image(path, images)
    result = read_labels(path, reference)
    kwargs = {"name": f"{image_name} {_stem(path)}", **layer_kwargs(reference), "opacity": 0.5,
              **labels_kwargs(result.table),
              "metadata": {VOLUME_KEY: record, NOTES_KEY: list(result.notes)}}
    return result.labels, kwargs, "labels"


def _mask_layer(path: Path) -> tuple[Any, dict[str, Any], str]:
    volume = read_image(path)
    labels = mask_labels(volume, path)
    table = read_label_sidecar(path) or ()
    kwargs = {"name": _stem(path), **layer_kwargs(volume), "opacity": 0.5,
              **labels_kwargs(table), "metadata": {VOLUME_KEY: volume_record(volume)}}
    return labels, kwargs, "labels"


def label_file_layer(path: Path, images: Sequence[OpenImage] = ()) -> tuple[Any, dict[str, Any],
                                                                             str]:
    """The labels layer-data tuple of a label file (see :func:`is_label_file`).

    ``images``: the open image layers; a DICOM-SEG or RTSTRUCT goes onto the one whose
    DICOM series it was made on, and without one it is an LLM4SegError saying to open it.
    """
    if label_object_kind(path):
        return _dicom_labels_layer(path, images)
    return _mask_layer(path)
