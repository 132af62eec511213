"""Medical image reading and mask writing, on SimpleITK.

``read_image`` turns a path (a DICOM series folder, a DICOM file, NIfTI, NRRD,
MetaImage or a 2-D picture) into a :class:`Volume`: a numpy array in numpy
axis order plus the geometry in ITK order, so that a mask drawn on the array
can be written back in the image's own geometry with :func:`write_mask`.

Layout: ``formats`` (suffixes, sniffing), ``volume`` (the records),
``read`` (the dispatcher), ``dicom``, ``files`` (NIfTI/NRRD/MetaImage and
pictures), ``itk`` (SimpleITK plumbing they share), ``masks``.

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

from llm4seg_core.io.dicom import list_dicom_series
from llm4seg_core.io.dicomlabels import label_object_kind, read_labels, refers_to
from llm4seg_core.io.formats import (
    DICOM_SUFFIXES,
    PICTURE_SUFFIXES,
    SUPPORTED_MASK_SUFFIXES,
    SUPPORTED_READ_SUFFIXES,
    VOLUME_SUFFIXES,
    folder_has_dicom,
    format_name,
    has_dicom_preamble,
    is_dicom_file,
    suffix_of,
)
from llm4seg_core.io.labels import Label, LabelVolume
from llm4seg_core.io.masks import (
    check_mask_path,
    mask_labels,
    mask_suffix_for,
    read_labelled_mask,
    read_mask,
    write_mask,
)
from llm4seg_core.io.read import read_image
from llm4seg_core.io.volume import DicomSeries, Volume

__all__ = [
    "DICOM_SUFFIXES",
    "PICTURE_SUFFIXES",
    "SUPPORTED_MASK_SUFFIXES",
    "SUPPORTED_READ_SUFFIXES",
    "VOLUME_SUFFIXES",
    "DicomSeries",
    "Label",
    "LabelVolume",
    "Volume",
    "check_mask_path",
    "folder_has_dicom",
    "format_name",
    "has_dicom_preamble",
    "is_dicom_file",
    "label_object_kind",
    "list_dicom_series",
    "mask_labels",
    "mask_suffix_for",
    "read_image",
    "read_labelled_mask",
    "read_labels",
    "read_mask",
    "refers_to",
    "suffix_of",
    "write_mask",
]
