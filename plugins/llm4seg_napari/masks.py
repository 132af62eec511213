"""The mask of an image: its layer name, the one way to make it, where to save it.

The mask of image ``X`` is the labels layer ``"X mask"``, placed like the
image (scale, translate, rotate, shear, affine) and carrying its metadata
(the ``llm4seg_volume`` record), so the plugin's writer saves it in the
image's geometry. The dock widget and the app both make it with
:func:`make_mask_layer`.

A mask shows the labels of the model that segments it (their names and
colours, :class:`~llm4seg_core.store.ModelLabel`): :func:`apply_labels` gives
the layer a ``DirectLabelColormap`` (the model's colours; any other value
keeps napari's usual colour) and a ``features`` table (``index``, ``name``),
so napari's status bar names the label under the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4seg_napari.geometry import VOLUME_KEY

if TYPE_CHECKING:
    from napari.layers import Image, Labels

    from llm4seg_core.io.labels import Label
    from llm4seg_core.store import ModelLabel

__all__ = ["DICOM_SEG_FILTER", "MASK_FILTERS", "MODEL_KEY", "apply_labels", "find_mask",
           "is_from_dicom", "label_features", "labels_kwargs", "layer_labels", "make_mask_layer",
           "mask_filters", "mask_name", "suggested_mask_path"]

#: Key of the model that segmented a mask in its ``metadata``: ``{"task", "model"}``
#: (a DICOM-SEG names it as its algorithm).
MODEL_KEY = "llm4seg_model"

#: The layer transform a mask copies from its image, so the two overlay.
_PLACEMENT = ("scale", "translate", "rotate", "shear", "affine")

#: File-dialog filters for saving a mask (the writer's formats).
MASK_FILTERS = (
    "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha);;PNG, 2-D pictures only (*.png)"
)
#: The file-dialog filter of a DICOM-SEG, offered for images read from DICOM only.
DICOM_SEG_FILTER = "DICOM-SEG (*.dcm)"


def is_from_dicom(layer: Any) -> bool:
    """Whether the image of ``layer`` (an image or its mask) was read from DICOM files."""
    record = (getattr(layer, "metadata", None) or {}).get(VOLUME_KEY) or {}
    return bool(record.get("dicom_files"))


def mask_filters(layer: Any) -> str:
    """The Save dialog's filters for the mask of ``layer``: DICOM-SEG too when it is DICOM."""
    return MASK_FILTERS + (";;" + DICOM_SEG_FILTER if is_from_dicom(layer) else "")


def mask_name(image_name: str) -> str:
    """The name of the labels layer that holds the mask of image ``image_name``."""
    return f"{image_name} mask"


def find_mask(viewer: Any, image: Image | None) -> Labels | None:
    """The mask of ``image`` in ``viewer``: the Labels layer named :func:`mask_name`, or None."""
    from napari.layers import Labels

    if image is None:
        return None
    name = mask_name(image.name)
    if name in viewer.layers and isinstance(viewer.layers[name], Labels):
        return viewer.layers[name]
    return None


def make_mask_layer(viewer: Any, image: Image, shape: tuple[int, ...],
                    labels: Sequence[ModelLabel] = ()) -> Labels:
    """Add an empty uint8 mask of spatial ``shape`` for ``image`` to ``viewer``, placed like it.

    ``labels``: the model's labels, shown with their names and colours (:func:`apply_labels`).
    """
    metadata = {k: (dict(v) if isinstance(v, dict) else v) for k, v in image.metadata.items()}
    mask = viewer.add_labels(
        np.zeros(shape, np.uint8),
        name=mask_name(image.name),
        **{key: getattr(image, key) for key in _PLACEMENT},
        metadata=metadata,
        opacity=0.5,
    )
    apply_labels(mask, labels)
    return mask


def label_features(labels: Sequence[ModelLabel]) -> dict[str, list[Any]]:
    """The features table of a mask with ``labels``: a row per value (0: background)."""
    return {"index": [0, *(lab.value for lab in labels)],
            "name": ["background", *(lab.name for lab in labels)]}


def labels_kwargs(labels: Sequence[Label]) -> dict[str, Any]:
    """Layer keywords that show ``labels`` on a new labels layer (a reader's layer-data tuple):
    their colours (other values: :data:`~llm4seg_core.io.labels.PALETTE`) and names."""
    from llm4seg_core.io.labels import default_color

    colors: dict[int | None, Any] = {v: default_color(v) for v in range(1, 256)}
    colors.update({0: (0.0, 0.0, 0.0, 0.0), None: (0.0, 0.0, 0.0, 0.0)})
    colors.update({int(lab.value): lab.color for lab in labels if lab.color})
    return {"colormap": colors, "features": label_features(labels)}


def apply_labels(mask: Labels, labels: Sequence[ModelLabel]) -> None:
    """Show ``labels`` on ``mask``: their colours, and their names under the cursor.

    Values the model does not name keep the colour napari gave them, so a
    label painted by hand stays visible. No labels: the layer is left as it is.
    """
    if not labels:
        return
    from napari.utils.colormaps import DirectLabelColormap

    values = np.arange(256)
    base = np.asarray(mask.colormap.map(values), dtype=np.float32)
    colors: dict[int | None, Any] = {int(v): base[v] for v in values}
    colors[0] = np.zeros(4, np.float32)
    colors[None] = np.zeros(4, np.float32)  # values over 255 (uint8 masks hold none)
    for lab in labels:
        if lab.color:
            colors[int(lab.value)] = lab.color
    mask.colormap = DirectLabelColormap(color_dict=colors)
    mask.features = label_features(labels)


def _column(features: Any, name: str) -> list[Any]:
    if features is None:
        return []
    try:
        return list(features[name])
    except (KeyError, TypeError, IndexError):
        return []


def layer_labels(attributes: Mapping[str, Any]) -> tuple[Label, ...]:
    """The named labels of a mask layer (its state ``attributes``): what a saved mask carries.

    Names from the ``features`` table :func:`apply_labels` set (``index``,
    ``name``; the background row left out), colours from the layer's colormap
    as shown. Empty when the layer names no label (then a DICOM-SEG says
    "label 1", ...).
    """
    from llm4seg_core.io.labels import Label, default_color

    features = attributes.get("features")
    values, names = _column(features, "index"), _column(features, "name")
    colormap = attributes.get("colormap")
    out: dict[int, Label] = {}
    for value, name in zip(values, names):
        try:
            v = int(value)
        except (TypeError, ValueError):
            continue
        if not 1 <= v <= 255 or not str(name or "").strip():
            continue
        color = None
        try:
            rgba = np.asarray(colormap.map(np.array([v])), float).reshape(-1)[:4]
            if rgba.size >= 3 and (rgba.size < 4 or rgba[3] > 0):
                color = "#" + "".join(f"{round(float(c) * 255):02x}"
                                      for c in np.clip(rgba[:3], 0, 1))
        except Exception:  # no colormap, or one without map(): the default colour
            color = None
        out[v] = Label(v, str(name).strip(), color or default_color(v))
    return tuple(out[v] for v in sorted(out))


def suggested_mask_path(layer: Image | Labels) -> str:
    """Where to save the mask of an image layer (or the mask layer itself) by default.

    Beside the image's source (in a DICOM folder: in it), else in the home
    folder; named after the mask layer; NIfTI, or PNG for 2-D pictures.
    """
    from napari.layers import Image

    record = layer.metadata.get(VOLUME_KEY) or {}
    text = str(record.get("source") or "")
    source = Path(text)
    if not text or text == ".":
        folder = Path.home()
    else:
        folder = source if source.is_dir() else source.parent
    name = mask_name(layer.name) if isinstance(layer, Image) else layer.name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "mask"
    suffix = ".png" if record.get("kind") == "image2d" else ".nii.gz"
    return str(folder / f"{stem}{suffix}")
