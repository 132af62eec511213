"""napari reader contribution: DICOM (folders and files), NIfTI, NRRD, MetaImage.

npe2 calls :func:`napari_get_reader` with the path (or, when napari stacks,
a list of paths). It answers at once, from names and at most a few file
headers, with a function that reads, or ``None`` when the path is not ours
(PNG, JPEG, TIFF, zarr folders...: napari and other plugins open those).

The reading function returns napari layer-data tuples ``(array, kwargs,
"image")``. Choices:

* **Placement**: see :mod:`llm4seg_napari.geometry`: ``scale`` + ``translate``
  in mm (z, y, x) when the image axes are the patient axes, else one
  ``affine`` (``Volume.affine_zyx``). Anisotropic CT shows with its true
  proportions.
* **Metadata**: ``metadata["llm4seg_volume"]`` is the image's geometry record
  (spacing, origin, direction, kind, modality, is_rgb, source, meta, shape),
  so that masks drawn on the image are saved in its geometry by the writer.
* **Display**: grayscale; CT (DICOM modality CT, or HU values) gets
  ``contrast_limits`` from a window: the DICOM file's own window when it has
  one, else the ``lung`` preset for chest/lung/thorax series and the
  ``mediastinum`` (soft tissue) preset otherwise. RGB arrives as ``rgb=True``.
* **Folders with several DICOM series**: one layer, the largest series (what
  ``read_image`` picks); the others are listed in ``metadata["llm4seg_series"]``
  (uid, description, modality, n_files, label; the chosen one first) for the
  dock widget's series picker, which reads another one with
  ``read_layers(folder, series_uid=...)``. Loading every series at once would
  fill memory with localizers and duplicate reconstructions in other geometries.
* **A stacked list of DICOM files** from one folder reads as that series;
  a list of other files gives one layer per file.
* **Label files** are labels layers with their names and colours
  (:mod:`llm4seg_napari._label_files`): a DICOM-SEG or RTSTRUCT on the open
  image it was made on (none open: an error saying to open it first), a mask
  file with a ``<mask>.labels.json`` sidecar on its own geometry.
* **Errors**: a path we claim but cannot read (damaged, truncated, empty,
  unsupported contents) raises :class:`~llm4seg_core.errors.LLM4SegError`
  from the reading function, with a message for a person; napari catches
  reader errors and shows them as a notification, and keeps running.
* **What the engine had to decide** (``Volume.meta["warning"]``: duplicate
  slices left out, a DICOM file named .png read as DICOM; ``"other_series"``:
  the folder held other series): :func:`image_notes` words it, and the reading
  function napari calls shows each note as a warning notification (the app,
  which calls :func:`read_layers` itself, shows them in its status bar and
  message dialog).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import (
    DICOM_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    folder_has_dicom,
    is_dicom_file,
    list_dicom_series,
    read_image,
    suffix_of,
)
from llm4seg_napari._label_files import NOTES_KEY, is_label_file, label_file_layer
from llm4seg_napari.geometry import (
    SERIES_KEY,
    VOLUME_KEY,
    WINDOW_KEY,
    layer_kwargs,
    volume_record,
)

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

#: File suffixes this reader claims (also the manifest's filename_patterns).
READER_SUFFIXES: tuple[str, ...] = DICOM_SUFFIXES + VOLUME_SUFFIXES
_CHEST_WORDS = ("CHEST", "LUNG", "THORAX", "THX", "PULM")

__all__ = ["READER_SUFFIXES", "LayerData", "image_notes", "napari_get_reader", "read_layers",
           "volume_layer"]


# --------------------------------------------------------------------------- claiming


def _claims(path: Path) -> bool:
    if path.is_dir():
        return path.suffix.lower() != ".zarr" and folder_has_dicom(path)
    if not path.is_file():
        return False
    return suffix_of(path) in READER_SUFFIXES or is_dicom_file(path)


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The reader function for ``path``, or None when this plugin does not read it."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    ps = [Path(p).expanduser() for p in paths]
    if not all(_claims(p) for p in ps):
        return None
    return _read_and_tell


def image_notes(metadata: Any, *, other_series: bool = True) -> list[str]:
    """What a person should know about how an image layer was read (its ``metadata``).

    The engine's ``Volume.meta["warning"]`` (duplicate slices left out, a
    file read by its content), and, with ``other_series``, the other series
    of its DICOM folder that were not read. Empty when there is nothing to say.
    """
    record = (metadata or {}).get(VOLUME_KEY) if isinstance(metadata, dict) else None
    meta = (record or {}).get("meta") or {}
    notes = []
    if meta.get("warning"):
        notes.append(f"{meta['warning']} (check the image before trusting its mask)")
    others = meta.get("other_series")
    if other_series and others:
        n = int(meta.get("n_series_in_folder") or 0) or None
        notes.append(f"the folder holds {n or 'several'} DICOM series; read the largest "
                     f"({meta.get('n_files', '?')} files); not read: {others}. Open another "
                     "with the LLM4Seg widget's series list")
    return notes


def _open_images() -> list[tuple[str, Any]]:
    """The image layers of napari's current viewer as (name, metadata): what a DICOM-SEG or
    RTSTRUCT is read onto."""
    try:
        import napari
        from napari.layers import Image
    except ImportError:  # npe2 without napari: no viewer
        return []
    viewer = napari.current_viewer()
    if viewer is None:
        return []
    return [(layer.name, layer.metadata) for layer in viewer.layers if isinstance(layer, Image)]


def _read_and_tell(path: str | Sequence[str]) -> list[LayerData]:
    """:func:`read_layers` as napari calls it (label files onto the viewer's images), its notes
    shown as warning notifications."""
    layers = read_layers(path, images=_open_images())
    try:
        from napari.utils.notifications import show_warning
    except ImportError:  # npe2 without napari: nothing to show them in
        return layers
    for _data, kwargs, kind in layers:
        metadata = kwargs.get("metadata") or {}
        notes = metadata.get(NOTES_KEY, []) if kind == "labels" else image_notes(metadata)
        for note in notes:
            show_warning(f"{kwargs.get('name', 'the image')}: {note}")
    return layers


# --------------------------------------------------------------------------- reading


def _layer_name(volume: Volume, path: Path) -> str:
    if path.is_dir():
        desc = volume.meta.get("series_description")
        return f"{path.name}: {desc}" if desc else path.name
    name = path.name
    suffix = suffix_of(path)
    if suffix and name.lower().endswith(suffix):
        name = name[: -len(suffix)]
    return name or path.name


def _first_number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(str(text).replace("[", "").replace("]", "").split("\\")[0].split(",")[0])
    except ValueError:
        return None


def _ct_window(volume: Volume, window: str | None) -> tuple[str, tuple[float, float]] | None:
    """(name, (low, high)) display limits for a CT, or None for anything else."""
    from llm4seg_core.preprocess import CT_WINDOWS, looks_like_ct, window_limits

    if volume.is_rgb or not looks_like_ct(volume):
        return None
    if window is not None:
        if window not in CT_WINDOWS:
            raise LLM4SegError(
                f"unknown CT window {window!r}; choose one of {', '.join(CT_WINDOWS)}"
            )
        return window, window_limits(window)
    center = _first_number(volume.meta.get("window_center"))
    width = _first_number(volume.meta.get("window_width"))
    if center is not None and width is not None and width > 1:
        return "dicom", (center - width / 2, center + width / 2)
    text = " ".join(
        volume.meta.get(k, "") for k in ("body_part", "series_description")
    ).upper()
    name = "lung" if any(w in text for w in _CHEST_WORDS) else "mediastinum"
    return name, window_limits(name)


def volume_layer(
    volume: Volume,
    name: str,
    *,
    window: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> LayerData:
    """The napari image layer-data tuple for an already read Volume.

    ``window`` forces a CT preset of ``llm4seg_core.preprocess.CT_WINDOWS``.
    """
    metadata: dict[str, Any] = {VOLUME_KEY: volume_record(volume)}
    kwargs: dict[str, Any] = {"name": name, "rgb": bool(volume.is_rgb), **layer_kwargs(volume)}
    if not volume.is_rgb:
        kwargs["colormap"] = "gray"
        ct = _ct_window(volume, window)
        if ct is not None:
            metadata[WINDOW_KEY] = ct[0]
            kwargs["contrast_limits"] = (float(ct[1][0]), float(ct[1][1]))
    if extra_metadata:
        metadata.update(extra_metadata)
    kwargs["metadata"] = metadata
    return (volume.array, kwargs, "image")


def _series_list(folder: Path, chosen_uid: str | None) -> list[dict[str, Any]]:
    series = list_dicom_series(folder)
    series.sort(key=lambda s: s.uid != chosen_uid)  # stable: the chosen one first
    return [
        {
            "uid": s.uid,
            "description": s.description,
            "modality": s.modality,
            "n_files": s.n_files,
            "label": s.label,
        }
        for s in series
    ]


def _read_one(path: Path, *, series_uid: str | None = None, window: str | None = None) -> LayerData:
    folder = path.is_dir()
    volume = read_image(path, series_uid=series_uid)
    extra: dict[str, Any] = {}
    if folder and int(volume.meta.get("n_series_in_folder", "1") or 1) > 1:
        extra[SERIES_KEY] = _series_list(path, volume.meta.get("series_uid"))
    return volume_layer(volume, _layer_name(volume, path), window=window, extra_metadata=extra)


def _series_uid_of(path: Path) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"], force=True
        )
    except Exception:  # pydicom raises assorted errors on damaged files
        return None
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    return uid or None


def read_layers(path: str | os.PathLike | Sequence[str], *, series_uid: str | None = None,
                window: str | None = None,
                images: Sequence[tuple[str, Any]] = ()) -> list[LayerData]:
    """Read ``path`` (or a list of paths) into napari layer-data tuples.

    ``series_uid`` picks a series of a DICOM folder (default: the largest);
    ``window`` forces a CT preset of ``llm4seg_core.preprocess.CT_WINDOWS``.
    Label files (a DICOM-SEG, an RTSTRUCT, a mask with a label sidecar) are
    labels layers with their names and colours (:mod:`llm4seg_napari._label_files`);
    a DICOM-SEG or RTSTRUCT goes onto the one of ``images`` (open image layers
    as (name, metadata)) it was made on.
    No Qt: front ends call it in a worker thread. Raises LLM4SegError for
    anything unreadable (napari shows the message).
    """
    paths = (
        [Path(path).expanduser()]
        if isinstance(path, (str, os.PathLike))
        else [Path(p).expanduser() for p in path]
    )
    if not paths:
        raise LLM4SegError("no file given; choose a DICOM folder or an image file")
    if len(paths) > 1 and all(p.is_file() and is_dicom_file(p) for p in paths):
        parents = {p.parent for p in paths}
        uids = {_series_uid_of(p) for p in paths}
        if len(parents) == 1 and len(uids) == 1 and None not in uids:
            folder = paths[0].parent
            layer = _read_one(folder, series_uid=uids.pop(), window=window)
            return [layer]
        raise LLM4SegError(
            "the chosen DICOM files are not one series in one folder; "
            "open their folder instead (the largest series is read, the others are listed)"
        )
    return [label_file_layer(p, images) if is_label_file(p)
            else _read_one(p, series_uid=series_uid, window=window) for p in paths]
