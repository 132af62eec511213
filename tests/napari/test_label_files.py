"""The reader on label files: a DICOM-SEG or RTSTRUCT onto the open image it was made on, a
mask with a label sidecar; names and colours on the labels layer (no viewer needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llm4seg_napari._reader as reader_module
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import Label, read_image, write_mask
from llm4seg_napari._label_files import NOTES_KEY
from llm4seg_napari._reader import napari_get_reader, read_layers
from llm4seg_napari._writer import write_labels
from llm4seg_napari.geometry import VOLUME_KEY
from tests.helpers import write_ct_series, write_rtstruct

SERIES = "1.2.826.0.1.3680043.8.498.5001"
OTHER = "1.2.826.0.1.3680043.8.498.5002"
TABLE = (Label(1, "tumour", "#e6194b"), Label(2, "liver", "#3cb44b"))


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("labels") / "ct"
    write_ct_series(folder, SERIES, 5, "Chest 2.5 mm", 2.5)
    return folder


@pytest.fixture(scope="module")
def image_layer(ct) -> tuple:
    ((data, kwargs, kind),) = read_layers(str(ct))
    assert kind == "image"
    return data, kwargs


def pattern(shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[1:3, 20:60, 30:70] = 1
    out[2:4, 70:100, 10:40] = 2
    return out


def rtstruct(path: Path, ct: Path, with_empty: bool = False) -> Path:
    vol = read_image(ct)
    sx, sy, sz = vol.spacing
    ox, oy, oz = vol.origin
    # around the voxel centres of columns 10..30 and rows 20..30 of slice 2
    x0, x1, y0, y1, z = ox + 9.6 * sx, ox + 30.4 * sx, oy + 19.6 * sy, oy + 30.4 * sy, oz + 2 * sz
    contour = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    rois = [("GTV", (0, 230, 0), [contour])] + ([("Lost", (1, 2, 3), [])] if with_empty else [])
    return write_rtstruct(path, ct, rois)


def check_named(kwargs: dict, table: tuple[Label, ...]) -> None:
    """The layer keywords name and colour ``table``'s labels, on a real napari labels layer."""
    assert kwargs["features"]["name"] == ["background", *(t.name for t in table)]
    napari = pytest.importorskip("napari")
    layer = napari.layers.Labels(np.zeros((2, 2), np.uint8), colormap=kwargs["colormap"],
                                 features=kwargs["features"])
    for t in table:
        rgba = np.asarray(layer.colormap.map(np.array([t.value])), float).reshape(-1)
        np.testing.assert_allclose(rgba[:3], np.array(t.rgb) / 255, atol=1 / 255)
    assert np.asarray(layer.colormap.map(np.array([0])), float).reshape(-1)[3] == 0


def test_a_mask_with_a_sidecar_opens_as_named_labels(ct, tmp_path):
    vol = read_image(ct)
    named = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "named.nii.gz", labels=TABLE)
    reader = napari_get_reader(str(named))
    ((data, kwargs, kind),) = reader(str(named))
    assert kind == "labels" and kwargs["name"] == "named"
    np.testing.assert_array_equal(data, pattern(vol.spatial_shape))
    assert kwargs["scale"] == pytest.approx(vol.scale_zyx)
    check_named(kwargs, TABLE)
    # no sidecar: an image, as before
    plain = write_mask(pattern(vol.spatial_shape), vol, tmp_path / "plain.nii.gz")
    ((_, _, kind),) = read_layers(str(plain))
    assert kind == "image"


def test_an_rtstruct_goes_onto_the_open_image_it_was_drawn_on(ct, image_layer, tmp_path):
    _, image_kwargs = image_layer
    rs = rtstruct(tmp_path / "rs.dcm", ct)
    with pytest.raises(LLM4SegError, match=r"open the DICOM series it was made on first "
                                           r"\(no image is open\)"):
        read_layers(str(rs))
    other = tmp_path / "other"
    write_ct_series(other, OTHER, 3, "Axial 5 mm", 5.0)
    ((_, other_kwargs, _),) = read_layers(str(other))
    with pytest.raises(LLM4SegError, match=r"none of the open images is it"):
        read_layers(str(rs), images=[("other", other_kwargs["metadata"])])
    images = [("other", other_kwargs["metadata"]), (image_kwargs["name"], image_kwargs["metadata"])]
    ((labels, kwargs, kind),) = read_layers(str(rs), images=images)
    assert kind == "labels" and kwargs["name"] == f"{image_kwargs['name']} rs"
    assert labels.shape == image_layer[0].shape and (labels[2, 20:31, 10:31] == 1).all()
    assert (labels[2] == 1).sum() == 21 * 11
    assert not labels[[0, 1, 3, 4]].any()
    assert kwargs["scale"] == image_kwargs["scale"]
    assert kwargs["translate"] == image_kwargs["translate"]
    assert kwargs["metadata"][VOLUME_KEY] == image_kwargs["metadata"][VOLUME_KEY]
    check_named(kwargs, (Label(1, "GTV", "#00e600"),))
    # saved as a DICOM-SEG of the image (the layer carries its record) and read back
    attrs = {"metadata": kwargs["metadata"], "features": kwargs["features"]}
    (seg,) = write_labels(str(tmp_path / "gtv.dcm"), labels, attrs)
    ((back, back_kwargs, _),) = read_layers(seg, images=images)
    np.testing.assert_array_equal(back, labels)
    assert back_kwargs["features"]["name"] == ["background", "GTV"]


def test_the_reader_function_uses_the_viewers_images_and_tells(ct, image_layer, tmp_path,
                                                                monkeypatch):
    napari = pytest.importorskip("napari")
    import napari.utils.notifications as notifications

    _, image_kwargs = image_layer
    monkeypatch.setattr(reader_module, "_open_images",
                        lambda: [(image_kwargs["name"], image_kwargs["metadata"])])
    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", shown.append)
    rs = rtstruct(tmp_path / "rs_empty.dcm", ct, with_empty=True)
    reader = napari_get_reader(str(rs))
    ((labels, kwargs, kind),) = reader(str(rs))
    assert kind == "labels" and labels.any()
    assert kwargs["metadata"][NOTES_KEY] == ["1 ROI(s) without contours skipped: Lost"]
    assert shown == [f"{kwargs['name']}: 1 ROI(s) without contours skipped: Lost"]
    assert napari is not None
