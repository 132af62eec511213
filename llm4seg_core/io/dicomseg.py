"""DICOM-SEG out (and back in): a label mask of an image read from DICOM, with highdicom.

One segment per label, with its name, colour and a coded category and type;
the algorithm identified (LLM4Seg, the model's task and version); every frame
referencing the source instance it lies on (the image's own files, in slice
order: :attr:`~llm4seg_core.io.Volume.dicom_files`). The SEG joins the
source's study (patient and study attributes copied by highdicom) as a new
series. :func:`read_dicom_seg_labels` reads one back onto its source's grid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.labels import Label, label_table
from llm4seg_core.io.volume import Volume

SEG_SUFFIXES = (".dcm",)


@dataclass(frozen=True)
class Algorithm:
    """Who made the mask: the model's task and version (a store version, a file), and how."""

    task: str = "default"
    model: str = ""  # a store version name or a checkpoint file name
    automatic: bool = True  # False once a person corrected it (SEMIAUTOMATIC)


def _codes(name: str) -> tuple[Any, Any]:
    """(category, type) coded concepts for a label name (SNOMED CT, CID 7150 / 7151 style)."""
    from pydicom.sr.codedict import codes
    from highdicom.sr import CodedConcept

    altered = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    low = name.lower()
    words = set(re.split(r"[^a-z]+", low))
    if words & {"tumour", "tumor", "cancer", "neoplasm", "carcinoma", "metastasis"}:
        return altered, codes.SCT.Neoplasm
    if words & {"nodule", "nodules"}:
        return altered, codes.SCT.Nodule
    if words & {"mass"}:
        return altered, codes.SCT.Mass
    if words & {"lesion", "lesions", "polyp", "polyps", "cyst"}:
        return altered, codes.SCT.Lesion
    if re.fullmatch(r"label \d+", low):
        return codes.SCT.Tissue, codes.SCT.Tissue
    return codes.SCT.AnatomicalStructure, codes.SCT.AnatomicalStructure


SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a DICOM Segmentation object (by its SOP class)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def check_dicom_seg_path(reference: Volume) -> None:
    """Refuse, saying why, a DICOM-SEG for an image not read from DICOM files."""
    if not reference.dicom_files:
        raise LLM4SegError(
            "a DICOM-SEG (.dcm) refers to the DICOM files of its image, and this image was not "
            "read from DICOM; save the mask as .nii.gz, .nrrd, .mha or .png"
        )
    if reference.is_rgb and reference.kind == "volume" and len(reference.dicom_files) > 1:
        raise LLM4SegError("a DICOM-SEG of a colour series of several files is not supported; "
                           "save the mask as .nii.gz")


def _source_datasets(reference: Volume) -> list[Any]:
    import pydicom

    out = []
    for f in reference.dicom_files:
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as exc:  # moved or damaged since it was read
            raise LLM4SegError(f"cannot read the source DICOM file {f} again ({exc}); a DICOM-SEG "
                               "refers to it, so it must stay where it was read") from None
    return out


def build_dicom_seg(labels: np.ndarray, reference: Volume, table: Iterable[Label] = (),
                    algorithm: Algorithm | None = None) -> Any:
    """The highdicom ``Segmentation`` of ``labels`` (uint8, the image's spatial shape)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from llm4seg_core import __version__

    check_dicom_seg_path(reference)
    algorithm = algorithm or Algorithm()
    arr = np.asarray(labels, dtype=np.uint8)
    values = [int(v) for v in np.unique(arr) if v > 0]
    table = {lab.value: lab for lab in label_table(values, meta_labels=[t.to_dict() for t in table])}
    ordered = sorted(table.values(), key=lambda lab: lab.value)
    number = {lab.value: i + 1 for i, lab in enumerate(ordered)}  # segment numbers 1..N
    seg_map = np.zeros(arr.shape, np.uint16 if len(ordered) > 255 else np.uint8)
    for v, n in number.items():
        seg_map[arr == v] = n
    if reference.kind == "image2d":
        seg_map = seg_map[None]
    sources = _source_datasets(reference)
    if len(sources) > 1 and seg_map.shape[0] != len(sources):
        raise LLM4SegError(f"the mask has {seg_map.shape[0]} slices but the image's series "
                           f"{len(sources)} files; segment this image again")
    if not ordered:  # an empty mask: one named segment with no voxels
        ordered = list(label_table([1]))
    model = f"{algorithm.task}" + (f" {algorithm.model}" if algorithm.model else "")
    ident = hd.AlgorithmIdentificationSequence(
        name="LLM4Seg", family=codes.cid7162.ArtificialIntelligence,
        version=f"{__version__} (model {model})"[:64],
        parameters={"task": algorithm.task, "model": algorithm.model or "-"})
    kind = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if algorithm.automatic else \
        hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    descriptions = []
    for i, lab in enumerate(ordered):
        category, prop = _codes(lab.name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=lab.name[:64], segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=kind, algorithm_identification=ident,
            tracking_uid=generate_uid(), tracking_id=f"{algorithm.task}:{lab.value}:{lab.name}"[:64],
            display_color=hd.color.CIELabColor.from_rgb(*lab.rgb)))
    first = sources[0]
    try:
        series_number = int(first.get("SeriesNumber", 0) or 0) + 1000
    except (TypeError, ValueError):
        series_number = 1000
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=seg_map,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=generate_uid(),
            series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="LLM4Seg", manufacturer_model_name="LLM4Seg desktop",
            software_versions=__version__, device_serial_number="none",
            series_description=f"LLM4Seg {model}"[:64], content_label="LLM4SEG",
            content_description=f"LLM4Seg segmentation, model {model}"[:64],
            omit_empty_frames=bool(seg_map.any()))
    except (ValueError, TypeError, AttributeError) as exc:
        raise LLM4SegError(f"cannot make a DICOM-SEG of this image ({exc}); save the mask as "
                           ".nii.gz instead") from None


def write_dicom_seg(labels: np.ndarray, reference: Volume, path: str | os.PathLike[str],
                    table: Iterable[Label] = (), algorithm: Algorithm | None = None) -> Path:
    """Write ``labels`` as a DICOM-SEG at ``path`` (atomically, staged); returns the path."""
    from llm4seg_core.atomic import atomic_write

    seg = build_dicom_seg(labels, reference, table, algorithm)
    p = Path(path).expanduser()
    try:
        atomic_write(p, lambda tmp: seg.save_as(tmp), suffix=".dcm", staged=True)
    except OSError as exc:
        raise LLM4SegError(f"cannot save the DICOM-SEG to {p}: {exc.strerror or exc}; check the "
                           "folder's permissions") from exc
    return p


def read_dicom_seg_labels(path: str | os.PathLike[str],
                          reference: Volume) -> tuple[np.ndarray, tuple[Label, ...]]:
    """A DICOM-SEG as labels on ``reference``'s grid (read from the SEG's source files) and its
    label table (segment number -> value, label -> name, display colour -> colour)."""
    import highdicom as hd
    import pydicom

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise LLM4SegError(f"{Path(path).name} is not a readable DICOM-SEG ({exc})") from None
    if not reference.dicom_files:
        raise LLM4SegError("a DICOM-SEG is read onto the DICOM image it refers to; open that "
                           "image (its folder) as the reference")
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                .SOPInstanceUID) for f in reference.dicom_files]
    numbers = list(seg.segment_numbers)
    if reference.kind == "image2d" or (len(uids) == 1 and seg.get("NumberOfFrames")
                                       and reference.n_slices > 1):
        frames = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=uids[0],
            source_frame_numbers=list(range(1, reference.n_slices + 1)) if reference.kind == "volume" else [1],
            segment_numbers=numbers, combine_segments=True, skip_overlap_checks=True,
            assert_missing_frames_are_empty=True)
    else:
        referenced = {str(x[2]) for x in seg.get_source_image_uids()}
        unknown = referenced - set(uids)
        if unknown:
            raise LLM4SegError(f"{Path(path).name} refers to {len(unknown)} image(s) that are not "
                               "in the reference image's series; open the series it was made on")
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=True,
            skip_overlap_checks=True, assert_missing_frames_are_empty=True)
    seg_numbers = np.asarray(frames)
    table = []
    lut = np.zeros(max(numbers, default=0) + 1, np.uint8)
    for n in numbers:
        d = seg.get_segment_description(n)
        name = str(d.segment_label)
        value = _value_of(d, n)
        lut[n] = value
        color = None
        if "RecommendedDisplayCIELabValue" in d:
            r, g, b = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
            color = f"#{r:02x}{g:02x}{b:02x}"
        table.append({"value": value, "name": name, "color": color})
    out = lut[seg_numbers]
    if reference.kind == "image2d":
        out = out[0]
    return np.ascontiguousarray(out.reshape(reference.spatial_shape)), label_table(meta_labels=table)


def _value_of(description: Any, number: int) -> int:
    """The label value a segment stands for: ours record it in the tracking ID
    (``task:value:name``); any other SEG's segment number is the value."""
    m = re.match(r"^[^:]*:(\d{1,3}):", str(description.get("TrackingID", "") or ""))
    value = int(m.group(1)) if m else number
    return value if 1 <= value <= 255 else number
