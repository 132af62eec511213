"""Which model fits an image: task profiles from checkpoint metadata, and their ranking."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from llm4seg_core.io import Volume
from llm4seg_core.model import ModelSpec, build_model
from llm4seg_core.store import (
    ImageInfo,
    ModelStore,
    model_profile,
    save_checkpoint,
    suggest_models,
    task_profiles,
)
from llm4seg_core.store import suggest as suggest_module

GREY = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32))
RGB = GREY.with_(in_channels=3)

#: The zoo as the export script describes it (task: fits), all 2-D/3-D kinds and modalities.
ZOO = {
    "breast-us": {"kind": "2d", "rgb": False, "modality": "US", "body_part": "BREAST",
                  "keywords": ["breast", "busi"]},
    "thyroid-us": {"kind": "2d", "rgb": False, "modality": "US", "body_part": "THYROID",
                   "keywords": ["thyroid", "ddti"]},
    "fetal-head-us": {"kind": "2d", "rgb": False, "modality": "US", "body_part": "HEAD",
                      "keywords": ["fetal", "hc18"]},
    "polyp": {"kind": "2d", "rgb": True, "modality": "ES", "body_part": "COLON",
              "keywords": ["kvasir", "colon"]},
    "skin-lesion": {"kind": "2d", "rgb": True, "modality": "XC", "body_part": "SKIN",
                    "keywords": ["isic", "dermoscopy"]},
    "cardiac-mr": {"kind": "3d", "rgb": False, "modality": "MR", "body_part": "HEART",
                   "keywords": ["acdc", "cardiac"]},
    "hn-ct-oar": {"kind": "3d", "rgb": False, "modality": "CT", "body_part": "HEADNECK",
                  "keywords": ["openkbp", "parotid"]},
    "hippocampus-mr": {"kind": "3d", "rgb": False, "modality": "MR", "body_part": "BRAIN",
                       "keywords": ["hippocampus"]},
}


def _meta(task: str, **extra) -> dict:
    return {"task": task, "fits": ZOO[task],
            "labels": [{"value": 1, "name": f"{task} label", "color": "#e6194b"}], **extra}


@pytest.fixture
def zoo(tmp_path, monkeypatch) -> Path:
    """A shipped folder holding the whole zoo (tiny models) and a default without ``fits``."""
    folder = tmp_path / "ship"
    folder.mkdir()
    save_checkpoint(build_model(GREY, seed=0), folder / "default.safetensors", {"task": "default"})
    for task, fits in ZOO.items():
        spec = RGB if fits["rgb"] else GREY
        save_checkpoint(build_model(spec, seed=1), folder / f"{task}.safetensors", _meta(task))
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [folder])
    return folder


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def _tasks(image, store) -> list[str]:
    return [s.task for s in suggest_models(image, store)]


def test_a_grey_picture_without_hints_gets_an_ultrasound_model_as_a_guess(zoo, store) -> None:
    ranked = suggest_models(ImageInfo("2d", names=("benign (1).png", "images")), store)
    assert ranked[0].task in {"breast-us", "thyroid-us", "fetal-head-us"}
    assert "guess" in ranked[0].reason and ranked[0].reason.startswith("ultrasound picture")
    order = [s.task for s in ranked]
    # then the general model; colour and volume models only after it
    assert order.index("default") == 3
    assert set(order[4:]) == {"polyp", "skin-lesion", "cardiac-mr", "hn-ct-oar", "hippocampus-mr"}
    assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)


def test_keywords_in_the_name_break_ties(zoo, store) -> None:
    ranked = suggest_models(ImageInfo("2d", names=("Thyroid_scan_03.png",)), store)
    assert ranked[0].task == "thyroid-us"
    assert ranked[0].reason == "ultrasound picture, name mentions 'thyroid'"
    assert "guess" not in ranked[0].reason
    assert ranked[0].score > ranked[1].score  # breast-us / fetal-head-us: a guess, next
    assert _tasks(ImageInfo("2d", names=("busi",)), store)[0] == "breast-us"
    # the task name's long words count too; short ones ('us') only as a whole word
    assert _tasks(ImageInfo("2d", names=("fetal_042.png",)), store)[0] == "fetal-head-us"
    assert suggest_module._mentions("us", "us_001.png")
    assert not suggest_module._mentions("us", "thus.png")


def test_colour_must_match(zoo, store) -> None:
    ranked = suggest_models(ImageInfo("2d", rgb=True, names=("cju0qkwl35piu0993l0dewei2.jpg",)),
                            store)
    assert [s.task for s in ranked[:2]] == ["polyp", "skin-lesion"]
    assert "guess" in ranked[0].reason and ranked[0].reason.startswith("endoscopy picture")
    assert all(s.score < 0 for s in ranked[2:])  # every grey model, default included
    assert _tasks(ImageInfo("2d", rgb=True, names=("ISIC_0000042.jpg",)), store)[0] == \
        "skin-lesion"


def test_an_rgb_picture_with_grey_pixels_counts_as_grey(zoo, store) -> None:
    grey = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[:2, :5] = (255, 255, 0)  # a small coloured caption does not make it a colour picture
    vol = Volume(rgb, (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), kind="image2d",
                 modality="US", is_rgb=True, source="/data/thyroid/scan.png",
                 meta={"body_part": "THYROID"})
    info = ImageInfo.of(vol)
    assert not info.rgb and info.names == ("scan.png", "thyroid")
    ranked = suggest_models(vol, store)
    assert ranked[0].task == "thyroid-us"
    assert ranked[0].reason == ("ultrasound picture, DICOM modality US, DICOM body part THYROID, "
                                "name mentions 'thyroid'")
    colour = np.zeros((40, 50, 3), np.uint8)
    colour[..., 0] = 200
    assert ImageInfo.of(Volume(colour, (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0),
                               kind="image2d", is_rgb=True)).rgb


def test_dicom_header_scores_high(zoo, store) -> None:
    us = ImageInfo("2d", modality="US", body_part="BREAST", names=("thyroid.dcm",))
    ranked = suggest_models(us, store)
    assert ranked[0].task == "breast-us"  # the header outweighs a name
    assert "DICOM modality US" in ranked[0].reason and "BREAST" in ranked[0].reason
    # another modality in the header: the ultrasound models are not a guess any more
    xray = suggest_models(ImageInfo("2d", modality="DX"), store)
    assert xray[0].task == "default"
    assert "the DICOM header says DX" in xray[1].reason


def test_volumes_get_volume_models_and_default_is_the_last_resort(zoo, store) -> None:
    assert _tasks(ImageInfo("3d", names=("case_001.nii.gz",)), store)[0] == "default"
    ct_hn = suggest_models(ImageInfo("3d", modality="CT", body_part="HEAD NECK"), store)
    assert ct_hn[0].task == "hn-ct-oar" and "DICOM modality CT" in ct_hn[0].reason
    # a head MR: the brain model (a related body part), not the cardiac one
    head_mr = _tasks(ImageInfo("3d", modality="MR", body_part="HEAD"), store)
    assert head_mr[0] == "hippocampus-mr"
    assert head_mr.index("default") < head_mr.index("cardiac-mr")  # HEART contradicts HEAD
    chest_ct = _tasks(ImageInfo("3d", modality="CT", body_part="CHEST"), store)
    assert chest_ct[0] == "default"
    # a 2-D model for a volume only when nothing else is left
    ranked = suggest_models(ImageInfo("3d", modality="CT"), store)
    two_d = {"breast-us", "thyroid-us", "fetal-head-us", "polyp", "skin-lesion"}
    assert all(s.score < 0 for s in ranked if s.task in two_d)
    assert {s.task for s in ranked if s.score < 0} == two_d
    only_2d = [p for p in task_profiles(store) if p.task in two_d]
    assert suggest_models(ImageInfo("3d"), profiles=only_2d)[0].reason.startswith("made for 2-D")


def test_profiles_carry_fits_and_labels(zoo, store) -> None:
    profiles = {p.task: p for p in task_profiles(store)}
    assert set(profiles) == {"default", *ZOO}
    assert profiles["polyp"].fits.rgb is True and profiles["polyp"].fits.kind == "2d"
    assert profiles["polyp"].fits.keywords == ("kvasir", "colon")
    assert profiles["polyp"].labels[0].name == "polyp label"
    assert profiles["polyp"].labels[0].color == "#e6194b"
    assert profiles["polyp"].version is None  # the shipped file
    assert profiles["default"].fits.kind is None and profiles["default"].labels == ()


def test_a_fine_tuned_version_keeps_its_tasks_fits_and_labels(zoo, store) -> None:
    info = store.save(build_model(GREY, seed=5), task="thyroid-us")  # no fits in its metadata
    profile = {p.task: p for p in task_profiles(store)}["thyroid-us"]
    assert profile.version == info.name and profile.path == info.path
    assert profile.fits.body_part == "THYROID" and profile.labels[0].name == "thyroid-us label"
    assert _tasks(ImageInfo("2d", names=("thyroid.png",)), store)[0] == "thyroid-us"
    assert model_profile(info.name, store).labels == profile.labels


def test_model_profile_names_the_labels_of_any_model_argument(zoo, store) -> None:
    assert model_profile("polyp", store).labels[0].name == "polyp label"
    assert model_profile(str(zoo / "skin-lesion.safetensors"), store).task == "skin-lesion"
    assert model_profile(None, store).task == "default"
    assert model_profile("cmunext", store) is None  # an untrained spec: no labels
    assert model_profile("no-such-model", store) is None


def test_labels_without_metadata_come_from_the_spec(zoo, tmp_path, store) -> None:
    path = tmp_path / "named.safetensors"
    save_checkpoint(build_model(GREY.with_(num_classes=3, label_names=("liver", "tumour")),
                                seed=0), path, {"labels": [{"value": "x"}, 3]})
    labels = model_profile(str(path), store).labels
    assert [(lab.value, lab.name, lab.color) for lab in labels] == [(1, "liver", None),
                                                                     (2, "tumour", None)]


def test_damaged_checkpoints_are_skipped_with_a_reason(zoo, store, caplog) -> None:
    (zoo / "cardiac-mr.safetensors").write_bytes(b"not a checkpoint at all")
    save_checkpoint(build_model(GREY, seed=2), zoo / "odd.safetensors",
                    {"task": "odd", "fits": "2d please"})
    hn = store.save(build_model(GREY, seed=3), task="hn-ct-oar")
    hn.path.write_bytes(b"truncated")  # its current version, now damaged
    liver = store.save(build_model(GREY, seed=4), task="liver")  # a task of the store only
    liver.path.write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="llm4seg_core.store.suggest"):
        profiles = {p.task: p for p in task_profiles(store)}
    assert "cardiac-mr" not in profiles and "liver" not in profiles
    # never described by its damaged version (the store falls back to the shipped file)
    assert "hn-ct-oar" not in profiles or profiles["hn-ct-oar"].version is None
    assert "odd" in profiles and profiles["odd"].fits.kind is None  # bad fits: unknown
    text = caplog.text
    assert "task cardiac-mr not suggested" in text and "task liver not suggested" in text
    assert "'fits' metadata is not a mapping" in text
    ranked = _tasks(ImageInfo("3d", modality="MR", body_part="HEART"), store)
    assert "cardiac-mr" not in ranked and ranked[0] == "default"


def test_headers_are_read_once_per_file_state(zoo, store, monkeypatch) -> None:
    import llm4seg_core.store.checkpoint as checkpoint

    reads: list[str] = []
    real = checkpoint.read_checkpoint_info
    monkeypatch.setattr(checkpoint, "read_checkpoint_info",
                        lambda path: reads.append(str(path)) or real(path))
    suggest_module._read.cache_clear()
    task_profiles(store)
    first = len(reads)
    assert first == len(ZOO) + 1
    task_profiles(store)
    assert len(reads) == first  # cached
    target = zoo / "polyp.safetensors"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    task_profiles(store)
    assert reads[first:] == [str(target)]  # a changed file is read again


def test_the_shipped_zoo_files(store) -> None:
    """The real shipped models: a grey picture and a colour picture each get their model."""
    from llm4seg_core.store import shipped_tasks

    shipped = shipped_tasks()
    if not {"polyp", "breast-us"} <= set(shipped):
        pytest.skip("the polyp and breast-us models are not shipped here")
    grey = Volume(np.zeros((64, 64), np.uint8), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0),
                  kind="image2d", source="benign (1).png")
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[..., 0] = 180
    rgb = Volume(colour, (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0), kind="image2d",
                 is_rgb=True, source="cju0qkwl35piu0993l0dewei2.jpg")
    assert suggest_models(grey, store)[0].task == "breast-us"
    assert suggest_models(rgb, store)[0].task == "polyp"
    assert _tasks(ImageInfo("3d"), store)[0] == "default"
    assert model_profile("polyp", store).labels[0].name == "polyp"
