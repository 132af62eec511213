"""Tests of llm4seg_core.data: the demo cases fetched from the pyradiomics-bhklab sdist."""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import llm4seg_core.data as data
from llm4seg_core.data import DEMO_CASES, data_dir, demo_case, fetch_demo_data
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import read_image, read_mask


@pytest.fixture(scope="session")
def real_demo() -> Path:
    # CI runs the set-up step first; on a fresh machine this downloads once (~35 MB).
    return fetch_demo_data(log=lambda _msg: None)


def _fake_sdist(
    path: Path, *, extra: list[tarfile.TarInfo] | None = None, skip: str | None = None
) -> str:
    """A tar.gz shaped like the sdist (tiny fake NRRD bytes); returns its sha256."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, _io.BytesIO(payload))

        add("pkg-3.1.4/README.md", b"readme")
        add("pkg-3.1.4/data/unrelated.nrrd", b"x")
        for case in DEMO_CASES:
            for part in ("image", "label"):
                name = f"{case}_{part}.nrrd"
                if name != skip:
                    add(f"pkg-3.1.4/data/{name}", f"{case}-{part}".encode())
        for info in extra or []:
            tar.addfile(info, _io.BytesIO(b"evil" * (info.size // 4)) if info.isfile() else None)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _member(name: str, *, size: int = 4, symlink_to: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if symlink_to is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = symlink_to
    else:
        info.size = size
    return info


def test_demo_cases_listed() -> None:
    assert DEMO_CASES == ("brain1", "brain2", "breast1", "lung1", "lung2")
    assert len(data.SDIST_SHA256) == 64


def test_data_dir_env_override_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.delenv("LLM4SEG_DATA_DIR")
    default = data_dir()
    assert default.name == "demo" and "llm4seg" in default.parent.parts[-1]


def test_demo_case_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(LLM4SegError, match="demo data not fetched: run `llm4seg data fetch`"):
        demo_case("lung2")
    with pytest.raises(LLM4SegError, match="brain1, brain2, breast1, lung1, lung2"):
        demo_case("liver9")
    assert not data.demo_data_available()


def test_real_demo_data(real_demo: Path) -> None:
    marker = json.loads((real_demo / data.MARKER_NAME).read_text())
    assert marker["sha256"] == data.SDIST_SHA256
    for case in DEMO_CASES:
        image, label = demo_case(case)
        assert image.is_file() and label.is_file() and image.parent == real_demo
    # idempotent: returns at once, without logging or downloading
    messages: list[str] = []
    start = time.perf_counter()
    assert fetch_demo_data(log=messages.append) == real_demo
    assert time.perf_counter() - start < 0.5 and messages == []
    # real content: lung2 is a chest CT in HU whose tumour spans 11 slices
    image, label = demo_case("lung2")
    vol = read_image(image)
    assert vol.array.shape == (61, 512, 512) and vol.array.dtype == np.int16
    mask = read_mask(label, vol)
    assert int(np.count_nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))) == 11


def test_fetch_from_local_sdist_is_safe_and_atomic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "cache" / "demo"
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(target))
    sdist = tmp_path / "fake.tar.gz"
    evil = [
        _member("pkg-3.1.4/data/../../escape.nrrd"),
        _member("/abs/data/lung1_image.nrrd"),
        _member("pkg-3.1.4/other/data/brain1_image.nrrd"),
    ]
    digest = _fake_sdist(sdist, extra=evil)
    monkeypatch.setattr(data, "SDIST_SHA256", digest)
    target.mkdir(parents=True)  # an interrupted earlier attempt: no marker
    (target / "partial.nrrd").write_bytes(b"half")
    log: list[str] = []
    out = fetch_demo_data(log=log.append, sdist=sdist)
    assert out == target
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted(
        [data.MARKER_NAME] + [f"{c}_{p}.nrrd" for c in DEMO_CASES for p in ("image", "label")]
    )
    assert (target / "brain1_image.nrrd").read_bytes() == b"brain1-image"  # not the decoy member
    assert (
        not (tmp_path / "escape.nrrd").exists()
        and not (tmp_path / "cache" / "escape.nrrd").exists()
    )
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["demo"]  # temp dir cleaned up
    assert any("ready" in m for m in log)
    assert demo_case("lung1")[0] == target / "lung1_image.nrrd"


def test_fetch_rejects_symlink_members(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(tmp_path / "demo"))
    sdist = tmp_path / "fake.tar.gz"
    digest = _fake_sdist(
        sdist,
        skip="lung2_label.nrrd",
        extra=[_member("pkg-3.1.4/data/lung2_label.nrrd", symlink_to="/etc/passwd")],
    )
    monkeypatch.setattr(data, "SDIST_SHA256", digest)
    with pytest.raises(LLM4SegError, match="lacks lung2_label.nrrd"):
        fetch_demo_data(log=lambda _m: None, sdist=sdist)
    assert not (tmp_path / "demo").exists()


def test_fetch_hash_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(tmp_path / "demo"))
    sdist = tmp_path / "pyradiomics_bhklab-3.1.4.tar.gz"
    _fake_sdist(sdist)  # right shape, wrong bytes
    with pytest.raises(LLM4SegError, match="sha256") as err:
        fetch_demo_data(log=lambda _m: None, sdist=sdist)
    assert data.SDIST_SHA256 in str(err.value)
    assert not (tmp_path / "demo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [sdist.name]
    with pytest.raises(LLM4SegError, match="no such file"):
        fetch_demo_data(log=lambda _m: None, sdist=tmp_path / "missing.tar.gz")


def test_fetch_pip_failure_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLM4SEG_DATA_DIR", str(tmp_path / "demo"))
    empty_links = tmp_path / "links"
    empty_links.mkdir()
    # as if offline: no index, no links with the package
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty_links))
    with pytest.raises(
        LLM4SegError, match="pip could not download pyradiomics-bhklab==3.1.4"
    ) as err:
        fetch_demo_data(log=lambda _m: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "demo").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links"]
