"""The corrections autosave (llm4seg_core.autosave): session folders, atomic saves, merging."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from llm4seg_core import autosave
from llm4seg_core.atomic import file_mode
from llm4seg_core.autosave import (
    INFO_FILE,
    LABELS_FILE,
    load_session,
    merge_saved,
    plan_restore,
    read_info,
    restorable_slices,
    save_session,
    session_dir,
    session_key,
)
from tests.helpers import run_python

SHAPE = (6, 8, 10)


def _slices(*zs: int, value: int = 1) -> dict[int, np.ndarray]:
    out = {}
    for z in zs:
        labels = np.zeros(SHAPE[1:], np.uint8)
        labels[z % SHAPE[1], :] = value
        out[z] = labels
    return out


def test_session_dir_is_under_the_sessions_root() -> None:
    folder = session_dir("/data/ct.nii.gz", SHAPE)
    assert folder.parent == Path(os.environ["LLM4SEG_HOME"]).resolve() / "sessions"
    assert folder.name == session_key("/data/ct.nii.gz", SHAPE)
    assert not folder.exists()  # nothing is made until a save


def test_session_key_is_stable_and_tells_images_apart() -> None:
    key = session_key("/data/ct.nii.gz", SHAPE)
    assert key == session_key("/data/ct.nii.gz", list(SHAPE)) and len(key) == 20
    assert key != session_key("/data/ct.nii.gz", (6, 8, 11))
    assert key != session_key("/data/other.nii.gz", SHAPE)
    # the same in a fresh interpreter: no per-process hash salt
    code = ("from llm4seg_core.autosave import session_key; "
            f"print(session_key('/data/ct.nii.gz', {SHAPE}))")
    assert run_python(code).strip() == key


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "session"
    slices = _slices(4, 1, value=3)
    save_session(folder, slices, {"source": "/data/ct.nii.gz", "shape": list(SHAPE), "image": "ct"})
    session = load_session(folder)
    assert session is not None and session.folder == folder
    assert session.z == [1, 4]  # sorted
    assert session.labels.shape == (2, *SHAPE[1:])
    for z, labels in session.slices().items():
        np.testing.assert_array_equal(labels, slices[z])
    info = read_info(folder)
    assert info is not None and info["z"] == [1, 4] and info["image"] == "ct"
    assert info["shape"] == list(SHAPE) and isinstance(info["saved_at"], float)
    assert session.info == info
    assert session.fits(SHAPE) and not session.fits((6, 8, 11)) and not session.fits((7, 8, 10))
    # atomic: no temp file left, and the files get an ordinary file's mode
    assert sorted(p.name for p in folder.iterdir()) == sorted([LABELS_FILE, INFO_FILE])
    for name in (LABELS_FILE, INFO_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == file_mode()


def test_save_of_no_slices_and_2d_pictures(tmp_path: Path) -> None:
    save_session(tmp_path / "empty", {}, {"shape": list(SHAPE)})
    session = load_session(tmp_path / "empty")
    assert session is not None and session.z == [] and session.slices() == {}
    picture = np.zeros((5, 7), np.uint8)
    picture[2, 3] = 1
    save_session(tmp_path / "picture", {0: picture}, {"shape": [5, 7]})
    session = load_session(tmp_path / "picture")
    assert session is not None and session.z == [0] and session.fits((5, 7))
    np.testing.assert_array_equal(session.slices()[0], picture)


def test_missing_or_damaged_sessions_read_as_none(tmp_path: Path) -> None:
    assert load_session(tmp_path / "nothing") is None
    assert read_info(tmp_path / "nothing") is None
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / LABELS_FILE).write_bytes(b"not an npz")
    (folder / INFO_FILE).write_text("{not json")
    assert load_session(folder) is None and read_info(folder) is None
    np.savez(folder / LABELS_FILE, z=np.array([1, 2]), labels=np.zeros((1, 3, 3)))
    assert load_session(folder) is None  # z and labels disagree


def test_a_failed_write_keeps_the_previous_save(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "session"
    save_session(folder, _slices(2), {"shape": list(SHAPE)})
    before = (folder / LABELS_FILE).read_bytes()

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(autosave.np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        save_session(folder, _slices(2, 3), {"shape": list(SHAPE)})
    assert (folder / LABELS_FILE).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == sorted([LABELS_FILE, INFO_FILE])
    assert load_session(folder).z == [2]


def test_merge_saved_keeps_the_slices_a_new_set_lacks(tmp_path: Path) -> None:
    folder = tmp_path / "session"
    assert merge_saved(folder, _slices(1), SHAPE[1:]).keys() == {1}  # nothing saved yet
    save_session(folder, _slices(1, 3, value=2), {"shape": list(SHAPE)})
    mine = _slices(3, 5, value=7)
    merged = merge_saved(folder, mine, SHAPE[1:])
    assert sorted(merged) == [1, 3, 5]
    np.testing.assert_array_equal(merged[3], mine[3])  # the new edit wins
    np.testing.assert_array_equal(merged[1], _slices(1, value=2)[1])
    assert sorted(merge_saved(folder, mine, (8, 11))) == [3, 5]  # other slice shape: not mixed in


def test_restorable_slices(tmp_path: Path) -> None:
    folder = tmp_path / "session"
    assert restorable_slices(folder, SHAPE, []) == []
    save_session(folder, _slices(0, 2, 4), {"shape": list(SHAPE)})
    assert restorable_slices(folder, SHAPE, []) == [0, 2, 4]
    assert restorable_slices(folder, SHAPE, [2, 5]) == [0, 4]
    assert restorable_slices(folder, (6, 8, 11), []) == []  # another image's shape
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["z"] == [0, 2, 4]


def test_plan_restore_never_overwrites_corrected_slices(tmp_path: Path) -> None:
    folder = tmp_path / "session"
    save_session(folder, _slices(0, 2, 4, 9), {"shape": list(SHAPE)})
    session = load_session(folder)
    plan = plan_restore(session, SHAPE[0], corrected=[2, 3])
    assert plan.restored == [0, 4]  # 9 is outside the mask
    assert plan.skipped == [2]
    np.testing.assert_array_equal(plan.slices[4], _slices(4)[4])
