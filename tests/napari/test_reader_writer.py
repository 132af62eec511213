"""The napari plugin's GUI-free contributions: reader, writer, sample data, manifest.

Plain functions, no viewer: these run without napari or Qt installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import llm4seg_napari
from llm4seg_core.data import demo_case, fetch_demo_data
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import Volume, read_image, read_mask
from llm4seg_core.preprocess import window_limits
from llm4seg_napari.geometry import SERIES_KEY, VOLUME_KEY, WINDOW_KEY, volume_record
from llm4seg_napari._reader import READER_SUFFIXES, napari_get_reader, read_layers
from llm4seg_napari._sample_data import make_lung2_sample
from llm4seg_napari._writer import write_labels
from tests.helpers import pydicom_file, run_python, write_ct_series

PLUGIN = "llm4seg-napari"
MANIFEST = Path(llm4seg_napari.__file__).parent / "napari.yaml"
SERIES_A = "1.2.826.0.1.3680043.8.498.2001"
SERIES_B = "1.2.826.0.1.3680043.8.498.2002"


# --------------------------------------------------------------------------- helpers


def _read(path: Path | str) -> list:
    reader = napari_get_reader(str(path))
    assert callable(reader), f"the reader declined {path}"
    return reader(str(path))


@pytest.fixture(scope="module")
def demo_dir() -> Path:
    return fetch_demo_data(log=lambda _msg: None)


@pytest.fixture(scope="module")
def lung2_layer(demo_dir: Path) -> tuple:
    (layer,) = _read(demo_case("lung2")[0])
    return layer


@pytest.fixture(scope="module")
def dicom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder: a 5-slice chest series and a 3-slice series in a subfolder."""
    root = tmp_path_factory.mktemp("study")
    write_ct_series(root, SERIES_A, 5, "Chest 2.5 mm", dz=2.5)
    write_ct_series(root / "sub", SERIES_B, 3, "Axial 5 mm", dz=5.0)
    (root / "notes.txt").write_text("not an image\n")
    return root


# --------------------------------------------------------------------------- reader


def test_reader_nrrd_ct(lung2_layer: tuple) -> None:
    data, kwargs, layer_type = lung2_layer
    assert layer_type == "image"
    assert data.shape == (61, 512, 512) and data.dtype == np.int16
    assert kwargs["name"] == "lung2_image"
    assert kwargs["scale"] == pytest.approx((5.0, 0.6269531, 0.6269531))
    assert kwargs["translate"] == pytest.approx((-360.0, -324.5, -170.5))
    assert "affine" not in kwargs and kwargs["rgb"] is False
    # HU volume without DICOM hints: the soft-tissue preset
    assert kwargs["contrast_limits"] == window_limits("mediastinum")
    meta = kwargs["metadata"]
    assert meta[WINDOW_KEY] == "mediastinum" and SERIES_KEY not in meta
    record = meta[VOLUME_KEY]
    assert record["shape"] == [61, 512, 512] and record["kind"] == "volume"
    assert record["spacing"] == pytest.approx([0.6269531, 0.6269531, 5.0])
    assert record["direction"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert record["is_rgb"] is False and record["source"].endswith("lung2_image.nrrd")


def test_reader_flipped_direction_uses_affine(demo_dir: Path) -> None:
    path = demo_case("brain1")[0]  # y axis flipped
    ((data, kwargs, _),) = _read(path)
    vol = read_image(path)
    assert "scale" not in kwargs and "translate" not in kwargs
    np.testing.assert_allclose(kwargs["affine"], vol.affine_zyx)
    assert kwargs["affine"][1, 1] < 0
    assert "contrast_limits" not in kwargs  # MR: napari picks the range
    assert WINDOW_KEY not in kwargs["metadata"]


def test_reader_dicom_folder_largest_series(dicom_root: Path) -> None:
    ((data, kwargs, layer_type),) = _read(dicom_root)
    assert layer_type == "image" and data.shape == (5, 128, 128)
    assert kwargs["name"] == f"{dicom_root.name}: Chest 2.5 mm"
    assert kwargs["scale"] == pytest.approx((2.5, 0.661468, 0.661468))
    assert kwargs["translate"] == pytest.approx((-75.0, -179.035803, -158.135803))
    assert kwargs["contrast_limits"] == window_limits("lung")  # a chest series
    meta = kwargs["metadata"]
    assert meta[VOLUME_KEY]["modality"] == "CT"
    assert meta[VOLUME_KEY]["meta"]["series_uid"] == SERIES_A
    series = meta[SERIES_KEY]
    assert [s["uid"] for s in series] == [SERIES_A, SERIES_B]  # the shown one first
    assert [s["n_files"] for s in series] == [5, 3]
    assert "Axial 5 mm" in series[1]["label"]


def test_reader_dicom_stacked_files_and_single_file(dicom_root: Path, tmp_path: Path) -> None:
    files = sorted((dicom_root / "sub").glob("*.dcm"))
    reader = napari_get_reader([str(f) for f in files])
    assert callable(reader)
    ((data, kwargs, _),) = reader([str(f) for f in files])
    assert data.shape == (3, 128, 128) and kwargs["scale"][0] == pytest.approx(5.0)
    assert SERIES_KEY not in kwargs["metadata"]  # only one series in that folder

    # one slice with its own display window, saved without a suffix
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 400
    plain = tmp_path / "IM000001"
    ds.save_as(plain)
    ((data, kwargs, _),) = _read(plain)
    assert data.shape == (1, 128, 128)
    assert kwargs["name"] == "IM000001"
    assert kwargs["contrast_limits"] == (-160.0, 240.0)
    assert kwargs["metadata"][WINDOW_KEY] == "dicom"


def test_reader_declines_what_it_does_not_read(tmp_path: Path) -> None:
    png = tmp_path / "photo.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.uint8)), str(png))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello\n")
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    (plain_dir / "a.png").write_bytes(png.read_bytes())
    zarr = tmp_path / "image.zarr"
    zarr.mkdir()
    for path in (png, txt, plain_dir, zarr, tmp_path / "missing.nii.gz", tmp_path / "x.tif"):
        assert napari_get_reader(str(path)) is None, path
    assert napari_get_reader([str(png), str(txt)]) is None
    assert napari_get_reader([]) is None


def test_reader_errors_are_llm4seg_errors(tmp_path: Path, dicom_root: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all" * 20)
    reader = napari_get_reader(str(bad))
    assert callable(reader)  # claimed by its suffix ...
    with pytest.raises(LLM4SegError):  # ... and the failure is a message for a person
        reader(str(bad))
    mixed = [str(next(dicom_root.glob("*.dcm"))), str(next((dicom_root / "sub").glob("*.dcm")))]
    with pytest.raises(LLM4SegError, match="not one series"):
        read_layers(mixed)


# --------------------------------------------------------------------------- writer


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_writer_round_trip_in_source_geometry(
    demo_dir: Path, tmp_path: Path, suffix: str
) -> None:
    path = demo_case("brain1")[0]  # flipped direction: the hardest geometry
    ((data, kwargs, _),) = _read(path)
    labels = np.zeros(data.shape, np.uint8)
    labels[10:15, 100:140, 90:130] = 1
    labels[12, 0:4, 0:4] = 2
    # what napari hands a writer: the layer's data and its attributes
    attributes = {"name": "mask", "metadata": kwargs["metadata"], "affine": kwargs["affine"]}
    (written,) = write_labels(str(tmp_path / f"mask{suffix}"), labels, attributes)
    assert written == str(tmp_path / f"mask{suffix}")
    src, back = read_image(path), read_image(written)
    assert back.spatial_shape == src.spatial_shape and back.array.dtype == np.uint8
    tol = 1e-4 if suffix == ".nii.gz" else 0  # NIfTI stores geometry as float32
    assert back.spacing == pytest.approx(src.spacing, abs=tol)
    assert back.origin == pytest.approx(src.origin, abs=tol)
    assert back.direction == pytest.approx(src.direction, abs=tol)
    np.testing.assert_array_equal(back.array, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"mask{suffix}"]  # atomic


def test_writer_lung2_from_reader_metadata(lung2_layer: tuple, tmp_path: Path) -> None:
    data, kwargs, _ = lung2_layer
    labels = np.zeros(data.shape, np.uint8)
    labels[30, 200:260, 200:260] = 1
    attrs = {"metadata": kwargs["metadata"], "scale": kwargs["scale"]}
    (written,) = write_labels(str(tmp_path / "lung2_mask"), labels, attrs)  # no suffix
    assert written.endswith("lung2_mask.nii.gz")
    back, src = read_image(written), read_image(kwargs["metadata"][VOLUME_KEY]["source"])
    assert back.spatial_shape == src.spatial_shape
    assert back.spacing == pytest.approx(src.spacing, rel=1e-6)
    assert back.origin == pytest.approx(src.origin, abs=1e-4)
    assert back.direction == pytest.approx(src.direction, abs=1e-6)


def test_writer_from_layer_transform_without_record(tmp_path: Path) -> None:
    labels = np.zeros((4, 6, 5), np.uint8)
    labels[1, 2, 3] = 7
    attrs = {"scale": (2.5, 0.8, 0.7), "translate": (100.0, 5.0, -10.0), "metadata": {}}
    (written,) = write_labels(str(tmp_path / "m.nrrd"), labels, attrs)
    back = read_image(written)
    assert back.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert back.origin == pytest.approx((-10.0, 5.0, 100.0))
    assert back.direction == pytest.approx(tuple(np.eye(3).ravel()))
    np.testing.assert_array_equal(back.array, labels)

    # an affine-placed layer (flipped y) gives back the same ITK geometry
    ref = Volume(
        array=labels,
        spacing=(0.7, 0.8, 2.5),
        origin=(-10.0, 5.0, 100.0),
        direction=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    )
    (written,) = write_labels(str(tmp_path / "f.mha"), labels, {"affine": ref.affine_zyx})
    back = read_image(written)
    assert back.spacing == pytest.approx(ref.spacing)
    assert back.origin == pytest.approx(ref.origin)
    assert back.direction == pytest.approx(ref.direction)

    with pytest.raises(LLM4SegError, match="shear"):
        write_labels(str(tmp_path / "s.nrrd"), labels, {"shear": (0.5, 0.0, 0.0)})


def test_writer_png_for_2d(tmp_path: Path) -> None:
    picture = tmp_path / "lesion.png"
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 1] = 128
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(picture))
    # the reader leaves pictures to napari; a front end passes read_image's record
    record = volume_record(read_image(picture))
    labels = np.zeros((20, 30), np.uint8)
    labels[5:10, 5:20] = 1
    attrs = {"metadata": {VOLUME_KEY: record}}
    (written,) = write_labels(str(tmp_path / "lesion_mask"), labels, attrs)
    assert written.endswith("lesion_mask.png")
    back = read_image(written)
    assert back.kind == "image2d" and back.spatial_shape == (20, 30)
    assert set(np.unique(back.array)) == {0, 255}  # binary: the 0/255 convention
    np.testing.assert_array_equal(read_mask(written), labels)
    # plain napari 2-D labels (scale 1, translate 0) also go to PNG
    (written,) = write_labels(str(tmp_path / "plain.png"), labels, {"scale": (1.0, 1.0)})
    np.testing.assert_array_equal(read_mask(written), labels)


def test_writer_refusals(lung2_layer: tuple, tmp_path: Path) -> None:
    _, kwargs, _ = lung2_layer
    attrs = {"metadata": kwargs["metadata"]}
    with pytest.raises(LLM4SegError, match="does not match|has shape"):
        write_labels(str(tmp_path / "m.nii.gz"), np.zeros((2, 3, 4), np.uint8), attrs)
    small = np.zeros((3, 4, 5), np.uint8)
    with pytest.raises(LLM4SegError, match="PNG"):
        write_labels(str(tmp_path / "m.png"), small, {})
    with pytest.raises(LLM4SegError, match=r"\.tif"):
        write_labels(str(tmp_path / "m.tif"), small, {})
    with pytest.raises(LLM4SegError, match="does not exist"):
        write_labels(str(tmp_path / "nowhere" / "m.nrrd"), small, {})
    assert list(tmp_path.iterdir()) == []


class _Colormap:
    """What the writer reads of a layer's colormap: ``map(values)`` -> RGBA rows."""

    def __init__(self, colors: dict[int, tuple[float, float, float, float]]) -> None:
        self.colors = colors

    def map(self, values):
        return np.array([self.colors.get(int(v), (0.0, 0.0, 0.0, 0.0)) for v in values])


def _seg_pattern(shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 20:60, 30:70] = 1
    labels[3, 70:100, 10:40] = 2
    return labels


def test_writer_dicom_seg_round_trip_with_names_colours_and_model(dicom_root: Path,
                                                                   tmp_path: Path) -> None:
    import highdicom as hd

    from llm4seg_napari.masks import MODEL_KEY, is_from_dicom, mask_filters

    ((data, kwargs, _),) = read_layers(str(dicom_root))
    record = kwargs["metadata"][VOLUME_KEY]
    vol = read_image(dicom_root)
    assert record["dicom_files"] == list(vol.dicom_files) and len(vol.dicom_files) == 5
    labels = _seg_pattern(data.shape)
    # a mask layer's state as napari hands it to a writer: the image's metadata plus the
    # model that segmented it, the model's label names (features) and colours (colormap)
    attrs = {
        "metadata": {**kwargs["metadata"], MODEL_KEY: {"task": "liver", "model": "v3"}},
        "scale": kwargs["scale"], "translate": kwargs["translate"],
        "features": {"index": [0, 1, 2], "name": ["background", "liver", "tumour"]},
        "colormap": _Colormap({1: (1.0, 0.0, 0.0, 1.0), 2: (0.0, 0.5, 1.0, 1.0)}),
    }
    (written,) = write_labels(str(tmp_path / "mask.dcm"), labels, attrs)
    assert written == str(tmp_path / "mask.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.dcm"]  # no temp left
    np.testing.assert_array_equal(read_mask(written, reference=vol), labels)  # same voxels

    seg = hd.seg.segread(written)
    names = {d.SegmentNumber: d.SegmentLabel for d in seg.SegmentSequence}
    assert sorted(names.values()) == ["liver", "tumour"]
    by_name = {d.SegmentLabel: d for d in seg.SegmentSequence}
    for name, rgb in (("liver", (255, 0, 0)), ("tumour", (0, 128, 255))):  # the layer's colours
        back = hd.color.CIELabColor.from_dicom_value(
            tuple(by_name[name].RecommendedDisplayCIELabValue)).to_rgb()
        assert np.allclose(back, rgb, atol=2), (name, back)
    algo = by_name["tumour"].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "LLM4Seg" and "liver" in algo.AlgorithmVersion \
        and "v3" in algo.AlgorithmVersion
    assert by_name["liver"].SegmentAlgorithmType == "AUTOMATIC"
    refs = {str(r.ReferencedSOPInstanceUID)
            for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                    for f in vol.dicom_files}

    # the Save dialogs offer DICOM-SEG for this image only
    class _Layer:
        def __init__(self, metadata):
            self.metadata = metadata

    assert is_from_dicom(_Layer(kwargs["metadata"]))
    assert mask_filters(_Layer(kwargs["metadata"])).endswith(";;DICOM-SEG (*.dcm)")


def test_writer_dicom_seg_refused_for_an_image_not_from_dicom(lung2_layer: tuple,
                                                               tmp_path: Path) -> None:
    from llm4seg_napari.masks import is_from_dicom, mask_filters

    data, kwargs, _ = lung2_layer
    assert kwargs["metadata"][VOLUME_KEY]["dicom_files"] == []

    class _Layer:
        metadata = kwargs["metadata"]

    assert not is_from_dicom(_Layer()) and "DICOM-SEG" not in mask_filters(_Layer())
    with pytest.raises(LLM4SegError, match="not read from DICOM.*nii.gz"):
        write_labels(str(tmp_path / "m.dcm"), np.zeros(data.shape, np.uint8),
                     {"metadata": kwargs["metadata"]})
    assert list(tmp_path.iterdir()) == []


def test_writer_named_labels_go_into_a_nifti_sidecar(dicom_root: Path, tmp_path: Path) -> None:
    from llm4seg_core.io.labels import read_label_sidecar

    ((data, kwargs, _),) = read_layers(str(dicom_root))
    attrs = {"metadata": kwargs["metadata"],
             "features": {"index": [0, 1, 2], "name": ["background", "liver", "tumour"]},
             "colormap": _Colormap({1: (1.0, 0.0, 0.0, 1.0), 2: (0.0, 0.0, 1.0, 1.0)})}
    (written,) = write_labels(str(tmp_path / "mask.nii.gz"), _seg_pattern(data.shape), attrs)
    table = read_label_sidecar(written)
    assert [(t.value, t.name, t.color) for t in table] == [(1, "liver", "#ff0000"),
                                                           (2, "tumour", "#0000ff")]


def _duplicated_series(folder: Path) -> Path:
    import shutil

    write_ct_series(folder, SERIES_A, 5, "Chest 2.5 mm", dz=2.5)
    first = sorted(folder.glob("*.dcm"))[0]
    shutil.copy(first, folder / "copy_of_one_slice.dcm")  # an exact duplicate
    return folder


def test_reader_tells_what_the_engine_decided(dicom_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("napari")
    import napari.utils.notifications as notifications

    from llm4seg_napari._reader import image_notes

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", shown.append)
    # duplicate slices left out
    folder = _duplicated_series(tmp_path / "dup")
    ((data, kwargs, _),) = _read(folder)
    assert data.shape[0] == 5
    notes = image_notes(kwargs["metadata"])
    assert len(notes) == 1 and "duplicate slice" in notes[0]
    assert len(shown) == 1 and "duplicate slice" in shown[0] and kwargs["name"] in shown[0]
    # the other series of a folder
    shown.clear()
    ((_, kwargs, _),) = _read(dicom_root)
    assert len(shown) == 1 and SERIES_B in shown[0] and "2 DICOM series" in shown[0]
    assert image_notes(kwargs["metadata"], other_series=False) == []
    # nothing to say: nothing shown
    shown.clear()
    _read(demo_case("lung2")[0])
    assert shown == []


# --------------------------------------------------------------------------- sample data


def test_sample_data_lung2(demo_dir: Path) -> None:
    (image, img_kw, img_type), (labels, lab_kw, lab_type) = make_lung2_sample()
    assert (img_type, lab_type) == ("image", "labels")
    assert image.shape == labels.shape == (61, 512, 512)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}
    assert img_kw["contrast_limits"] == window_limits("lung")
    assert lab_kw["scale"] == img_kw["scale"] and lab_kw["translate"] == img_kw["translate"]
    assert lab_kw["metadata"][VOLUME_KEY] == img_kw["metadata"][VOLUME_KEY]


def test_sample_data_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(LLM4SegError, match=r"run `llm4seg data fetch` \(or `make setup`\)"):
        make_lung2_sample()


# --------------------------------------------------------------------------- manifest


def test_manifest_validates_and_resolves() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == PLUGIN and manifest.display_name == "LLM4Seg"
    contrib = manifest.contributions
    has_napari = importlib.util.find_spec("napari") is not None
    for command in contrib.commands:
        assert command.id.startswith(PLUGIN + ".")
        module, _, attr = command.python_name.partition(":")
        if module == "llm4seg_napari.widget" and not has_napari:
            continue  # the dock widget needs napari and Qt; the rest must import without
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name
    if has_napari:
        manifest.validate_imports()
    (reader,) = contrib.readers
    assert reader.accepts_directories
    assert sorted(reader.filename_patterns) == sorted(f"*{s}" for s in READER_SUFFIXES)
    (writer,) = contrib.writers
    assert writer.layer_types == ["labels"]
    assert writer.filename_extensions == [".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".dcm"]
    assert [s.display_name for s in contrib.sample_data] == ["Demo chest CT (lung2)"]
    (widget,) = contrib.widgets
    assert widget.display_name == "LLM4Seg" and widget.command == f"{PLUGIN}.make_widget"


def test_npe2_dispatch_reads_and_writes(dicom_root: Path, tmp_path: Path) -> None:
    """The reader and writer as napari reaches them: through npe2's plugin manager."""
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager()
    pm.register(npe2.PluginManifest.from_file(MANIFEST))
    pm.activate(PLUGIN)  # napari does this on first use: registers the python_name commands
    readers = list(pm.iter_compatible_readers([str(dicom_root)]))
    assert [r.plugin_name for r in readers] == [PLUGIN]
    func = readers[0].exec(
        kwargs={"path": [str(dicom_root)], "stack": False, "_registry": pm.commands}
    )
    ((data, kwargs, _),) = func([str(dicom_root)], stack=False)
    assert data.shape == (5, 128, 128)
    assert list(pm.iter_compatible_readers([str(tmp_path / "a.png")])) == []

    writer, new_path = pm.get_writer(str(tmp_path / "mask.nrrd"), ["labels"], PLUGIN)
    assert writer is not None
    labels = (data > 0).astype(np.uint8)
    attrs = {"metadata": kwargs["metadata"]}
    (written,) = writer.exec(args=(new_path, labels, attrs), _registry=pm.commands)
    back = read_image(written)
    assert back.spacing == pytest.approx(read_image(dicom_root).spacing)


def test_no_napari_or_qt_imported() -> None:
    # in a fresh interpreter: napari's and pytest-qt's pytest plugins import napari and Qt here
    code = (
        "import sys, llm4seg_napari._reader, llm4seg_napari._writer, llm4seg_napari._sample_data\n"
        "import llm4seg_napari.choices, llm4seg_napari.masks\n"
        "from llm4seg_napari import read_layers, mask_name, VOLUME_KEY, SERIES_KEY\n"
        "gui = ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in gui}))\n"
    )
    out = run_python(code)
    assert out.strip() == "[]", out
