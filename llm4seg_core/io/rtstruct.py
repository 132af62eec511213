"""RTSTRUCT in: the structures of an RT structure set, rasterised onto a reference image's grid.

An RTSTRUCT holds, per ROI (``StructureSetROISequence``: number, name), closed
planar contours in patient coordinates (mm) and a display colour
(``ROIContourSequence``). :func:`read_rtstruct_labels` maps the contour points
through the reference :class:`~llm4seg_core.io.Volume`'s geometry to voxel
indices, fills each contour on its slice (voxel centres inside the polygon,
``skimage.draw.polygon``; contours of one ROI on one slice are combined by XOR,
so a contour inside another is a hole) and returns one label per ROI, named
and coloured.

Refused, with the reason: a file that is not an RTSTRUCT, one drawn on another
series or frame of reference than the reference image, a structure set with no
contoured ROI, more than 255 of them, contours that all lie outside the image.
Told (notes): ROIs without contours (skipped, by name), contours that are not
closed planar or not on the image's slices, ROIs outside the image, overlaps
(where structures overlap, the smaller one is kept: a tumour inside an organ
stays visible).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io.dicom import reference_uids
from llm4seg_core.io.labels import LabelVolume, label_table
from llm4seg_core.io.volume import Volume

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: How far (in slices) a contour's points may lie from the slice it is filled on.
PLANE_TOLERANCE = 0.25

__all__ = ["RTSTRUCT_SOP_CLASS", "Structure", "read_rtstruct_labels", "read_structures",
           "rtstruct_sources"]


@dataclass(frozen=True)
class Structure:
    """One ROI of a structure set: its name, display colour and closed planar contours (mm)."""

    number: int
    name: str
    color: str | None
    contours: tuple[np.ndarray, ...]  # each (n, 3): x, y, z in patient mm
    other_contours: int = 0  # points or open contours: not areas, left out


def _read(path: str | os.PathLike[str]) -> Any:
    import pydicom

    name = Path(path).name
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises assorted errors on damaged files
        raise LLM4SegError(f"{name} is not a readable DICOM file ({exc})") from None
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS and ds.get("Modality") != "RTSTRUCT":
        raise LLM4SegError(f"{name} is not an RTSTRUCT (modality {ds.get('Modality', '?')}); "
                           "give an RT structure set or a DICOM-SEG")
    return ds


def rtstruct_sources(ds: Any) -> tuple[set[str], set[str]]:
    """(series UIDs, frame of reference UIDs) an RTSTRUCT dataset says it was drawn on."""
    series: set[str] = set()
    frames = {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])
              if r.get("ReferencedFrameOfReferenceUID")}
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        if ref.get("FrameOfReferenceUID"):
            frames.add(str(ref.FrameOfReferenceUID))
        for study in ref.get("RTReferencedStudySequence", []):
            for s in study.get("RTReferencedSeriesSequence", []):
                if s.get("SeriesInstanceUID"):
                    series.add(str(s.SeriesInstanceUID))
    return series, frames


def _check_reference(ds: Any, reference: Volume, name: str) -> None:
    if reference.kind != "volume" or not reference.dicom_files:
        raise LLM4SegError(f"{name} is an RTSTRUCT: its contours are drawn on a DICOM series; "
                           "give that series (its folder) as the reference image")
    series, frame = reference_uids(reference)
    their_series, their_frames = rtstruct_sources(ds)
    if frame and their_frames and frame not in their_frames:
        raise LLM4SegError(f"{name} was drawn in frame of reference {sorted(their_frames)[0]}, "
                           f"not the reference image's ({frame}); open the series it was drawn on")
    if series and their_series and series not in their_series:
        raise LLM4SegError(f"{name} was drawn on series {sorted(their_series)[0]}, not the "
                           f"reference image's series {series}; open the series it was drawn on")


def _color(value: Any) -> str | None:
    try:
        r, g, b = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return f"#{r:02x}{g:02x}{b:02x}" if all(0 <= c <= 255 for c in (r, g, b)) else None


def _contours(item: Any) -> tuple[tuple[np.ndarray, ...], int]:
    """(closed planar contours as (n, 3) arrays, how many others) of one ROIContourSequence item."""
    closed, other = [], 0
    for c in item.get("ContourSequence", []) or []:
        points = np.asarray([float(v) for v in c.get("ContourData", [])], float)
        if c.get("ContourGeometricType") != "CLOSED_PLANAR" or points.size < 9 \
                or points.size % 3:
            other += 1
            continue
        closed.append(points.reshape(-1, 3))
    return tuple(closed), other


def read_structures(ds: Any) -> list[Structure]:
    """The ROIs of an RTSTRUCT dataset, in the order of its StructureSetROISequence."""
    contours = {}
    for item in ds.get("ROIContourSequence", []) or []:
        try:
            number = int(item.ReferencedROINumber)
        except (AttributeError, TypeError, ValueError):
            continue
        contours[number] = (item.get("ROIDisplayColor"), *_contours(item))
    out = []
    for roi in ds.get("StructureSetROISequence", []) or []:
        number = int(roi.get("ROINumber", 0) or 0)
        color, closed, other = contours.get(number, (None, (), 0))
        name = str(roi.get("ROIName", "") or "").strip() or f"ROI {number}"
        out.append(Structure(number, name, _color(color), closed, other))
    return out


def _to_index(points: np.ndarray, reference: Volume) -> np.ndarray:
    """Patient mm (x, y, z) to continuous voxel indices (i, j, k) on ``reference``'s grid."""
    linear = reference.direction_matrix @ np.diag(reference.spacing)
    return np.linalg.solve(linear, (points - np.asarray(reference.origin)).T).T


@dataclass
class _Tally:
    off_plane: int = 0  # contours not on one of the image's slices
    outside: int = 0  # contours above or below the image


def _slices(structure: Structure, reference: Volume, tally: _Tally) -> dict[int, list[np.ndarray]]:
    """The contours of ``structure`` as (n, 2) (row, column) polygons, by slice index."""
    n_slices = reference.spatial_shape[0]
    by_slice: dict[int, list[np.ndarray]] = {}
    for points in structure.contours:
        idx = _to_index(points, reference)
        k = int(np.rint(idx[:, 2].mean()))
        if np.abs(idx[:, 2] - k).max() > PLANE_TOLERANCE:
            tally.off_plane += 1
        elif not 0 <= k < n_slices:
            tally.outside += 1
        else:
            by_slice.setdefault(k, []).append(idx[:, [1, 0]])
    return by_slice


def _filled(by_slice: dict[int, list[np.ndarray]],
            plane_shape: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
    """Each slice's filled contours (voxel centres inside; nested contours are holes: XOR)."""
    from skimage.draw import polygon

    for k in sorted(by_slice):
        plane = np.zeros(plane_shape, bool)
        for poly in by_slice[k]:
            rr, cc = polygon(poly[:, 0], poly[:, 1], shape=plane_shape)
            plane[rr, cc] ^= True
        yield k, plane


def _voxel_count(by_slice: dict[int, list[np.ndarray]], plane_shape: tuple[int, int]) -> int:
    return sum(int(plane.sum()) for _k, plane in _filled(by_slice, plane_shape))


def _contoured(structures: list[Structure], name: str, notes: list[str]) -> list[Structure]:
    """The ROIs that have closed contours; the others named in ``notes``; refusals."""
    if not structures:
        raise LLM4SegError(f"{name} is an empty structure set (no ROI); nothing to convert")
    kept = [s for s in structures if s.contours]
    empty = [s.name for s in structures if not s.contours]
    if empty:
        notes.append(f"{len(empty)} ROI(s) without contours skipped: {', '.join(empty)}")
    other = sum(s.other_contours for s in structures)
    if other:
        notes.append(f"{other} contour(s) that are points or open lines left out")
    if not kept:
        raise LLM4SegError(f"no ROI of {name} has a closed contour ({len(structures)} ROI(s), "
                           "all empty); nothing to convert")
    if len(kept) > 255:
        raise LLM4SegError(f"{name} has {len(kept)} contoured structures; a label mask holds at "
                           "most 255: split the structure set")
    return kept


def _z_range(structures: list[Structure]) -> str:
    z = np.concatenate([c[:, 2] for s in structures for c in s.contours])
    return f"{z.min():.1f}..{z.max():.1f} mm"


def read_rtstruct_labels(path: str | os.PathLike[str], reference: Volume) -> LabelVolume:
    """An RTSTRUCT's structures as labels on ``reference``'s grid (a DICOM series read with
    :func:`~llm4seg_core.io.read_image`): one label per contoured ROI, in the structure set's
    order, named and coloured from it; the notes say what was skipped."""
    name = Path(path).name
    ds = _read(path)
    _check_reference(ds, reference, name)
    notes: list[str] = []
    kept = _contoured(read_structures(ds), name, notes)
    shape = reference.spatial_shape
    tally = _Tally()
    slices = [_slices(s, reference, tally) for s in kept]
    counts = [_voxel_count(b, shape[1:]) for b in slices]
    if not any(counts):
        raise LLM4SegError(f"the contours of {name} ({_z_range(kept)}) all lie outside the "
                           f"image ({reference.n_slices} slices from z {reference.origin[2]:.1f} "
                           "mm); give the series they were drawn on")
    if tally.off_plane:
        notes.append(f"{tally.off_plane} contour(s) not on the image's slices left out")
    if tally.outside:
        notes.append(f"{tally.outside} contour(s) above or below the image left out")
    missing = [s.name for s, n in zip(kept, counts) if not n]
    if missing:
        notes.append(f"ROI(s) outside the image, left out: {', '.join(missing)}")
    present = [i for i, n in enumerate(counts) if n]
    labels = np.zeros(shape, np.uint8)
    overlap = 0
    for i in sorted(present, key=lambda i: -counts[i]):  # the largest first: the smaller on top
        value = present.index(i) + 1
        for k, plane in _filled(slices[i], shape[1:]):
            overlap += int(np.count_nonzero(labels[k][plane]))
            labels[k][plane] = value
    if overlap:
        notes.append(f"{overlap} voxel(s) lie in several structures; each shows the smallest")
    table = label_table(meta_labels=[{"value": n + 1, "name": kept[i].name, "color": kept[i].color}
                                     for n, i in enumerate(present)])
    return LabelVolume(labels, table, tuple(notes))
