"""DICOM-SEG out (and back in): a label mask of an image read from DICOM, with highdicom.

One segment per label, with its name, colour and a coded category and type;
the algorithm identified (LLM4Seg, the model's task and version); every frame
referencing the source instance it lies on (the image's own files, in slice
order: :attr:`~llm4seg_core.io.Volume.dicom_files`). The SEG joins the
source's study (patient and study attributes copied by highdicom) as a new
series. :func:`read_dicom_seg_labels` reads one back onto its source's grid (refusing a SEG
made on another series).
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
from llm4seg_core.io.dicom import reference_uids
from llm4seg_core.io.labels import Label, label_table
from llm4seg_core.io.volume import Volume

SEG_SUFFIXES = (".dcm",)


@dataclass(frozen=True)
class Algorithm:
    """Who made the mask: the model's task and version (a store version, a file), and how."""

    task: str = "default"
    model: str = ""  # a store version name or a checkpoint file name
    automatic: bool = True  # False once a person corrected it (SEMIAUTOMATIC)
    manual: bool = False  # drawn by a person (converted from an RTSTRUCT): MANUAL, no algorithm


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
    if algorithm.manual:
        kind, ident = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
    descriptions = []
    for i, lab in enumerate(ordered):
        category, prop = _codes(lab.name)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=lab.name[:64], segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=kind, algorithm_identification=ident,
            tracking_uid=generate_uid(), tracking_id=f"{algorithm.task}:{lab.value}:{lab.name}"[:64],
            display_color=hd.color.CIELabColor.from_rgb(*lab.rgb)))
    what = f"converted from {algorithm.model}" if algorithm.manual else f"model {model}"
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
            content_description=f"LLM4Seg segmentation, {what}"[:64],
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


def seg_sources(ds: Any) -> tuple[set[str], set[str]]:
    """(series UIDs, frame of reference UIDs) a DICOM-SEG dataset says it was made on."""
    series = {str(r.SeriesInstanceUID) for r in ds.get("ReferencedSeriesSequence", [])
              if r.get("SeriesInstanceUID")}
    frames = {str(ds.FrameOfReferenceUID)} if ds.get("FrameOfReferenceUID") else set()
    return series, frames


def _read_seg(path: str | os.PathLike[str]) -> Any:
    import highdicom as hd

    try:
        return hd.seg.segread(str(path))
    except Exception as exc:  # highdicom and pydicom raise assorted errors
        raise LLM4SegError(f"{Path(path).name} is not a readable DICOM-SEG ({exc})") from None


def _check_seg_source(seg: Any, reference: Volume, name: str) -> None:
    if not reference.dicom_files:
        raise LLM4SegError(f"{name} is a DICOM-SEG: it is read onto the DICOM image it was made "
                           "on; give that image (its folder) as the reference")
    series, _frame = reference_uids(reference)
    theirs, _frames = seg_sources(seg)
    if series and theirs and series not in theirs:
        raise LLM4SegError(f"{name} was made on series {sorted(theirs)[0]}, not the reference "
                           f"image's series {series}; open the series it was made on")
    if len(seg.segment_numbers) > 255:
        raise LLM4SegError(f"{name} has {len(seg.segment_numbers)} segments; a label mask holds "
                           "at most 255")


def _seg_frames(seg: Any, reference: Volume, uids: list[str], name: str) -> np.ndarray:
    """The segment number of each voxel, slice by slice in the reference's order."""
    numbers = list(seg.segment_numbers)
    if reference.kind == "image2d" or (len(uids) == 1 and seg.get("NumberOfFrames")
                                       and reference.n_slices > 1):
        n = reference.n_slices if reference.kind == "volume" else 1
        return np.asarray(seg.get_pixels_by_source_frame(
            source_sop_instance_uid=uids[0], source_frame_numbers=list(range(1, n + 1)),
            segment_numbers=numbers, combine_segments=True, skip_overlap_checks=True,
            assert_missing_frames_are_empty=True))
    referenced = {str(x[2]) for x in seg.get_source_image_uids()}
    unknown = referenced - set(uids)
    if unknown:
        raise LLM4SegError(f"{name} refers to {len(unknown)} image(s) that are not in the "
                           "reference image's series; open the series it was made on")
    return np.asarray(seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=True,
        skip_overlap_checks=True, assert_missing_frames_are_empty=True))


def _seg_table(seg: Any) -> tuple[np.ndarray, tuple[Label, ...]]:
    """(segment number -> label value lookup, the label table) of a SEG's segments."""
    import highdicom as hd

    numbers = list(seg.segment_numbers)
    lut = np.zeros(max(numbers, default=0) + 1, np.uint8)
    table = []
    for n in numbers:
        d = seg.get_segment_description(n)
        value = _value_of(d, n)
        lut[n] = value
        color = None
        if "RecommendedDisplayCIELabValue" in d:
            cielab = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue)
            r, g, b = cielab.to_rgb()
            color = f"#{r:02x}{g:02x}{b:02x}"
        table.append({"value": value, "name": str(d.segment_label), "color": color})
    return lut, label_table(meta_labels=table)


def read_dicom_seg_labels(path: str | os.PathLike[str],
                          reference: Volume) -> tuple[np.ndarray, tuple[Label, ...]]:
    """A DICOM-SEG as labels on ``reference``'s grid (read from the SEG's source files) and its
    label table (segment number -> value, label -> name, display colour -> colour).

    Refused: a SEG made on another series than ``reference``, more than 255 segments.
    """
    import pydicom

    name = Path(path).name
    seg = _read_seg(path)
    _check_seg_source(seg, reference, name)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                .SOPInstanceUID) for f in reference.dicom_files]
    try:
        frames = _seg_frames(seg, reference, uids, name)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise LLM4SegError(f"cannot read the segments of {name} onto the reference image "
                           f"({exc})") from None
    lut, table = _seg_table(seg)
    out = lut[frames]
    if reference.kind == "image2d":
        out = out[0]
    return np.ascontiguousarray(out.reshape(reference.spatial_shape)), table


def _value_of(description: Any, number: int) -> int:
    """The label value a segment stands for: ours record it in the tracking ID
    (``task:value:name``); any other SEG's segment number is the value."""
    m = re.match(r"^[^:]*:(\d{1,3}):", str(description.get("TrackingID", "") or ""))
    value = int(m.group(1)) if m else number
    return value if 1 <= value <= 255 else number
