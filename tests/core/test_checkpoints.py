"""Checkpoint files: round trip, nothing frozen stored, refusals, atomic writes."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from llm4seg_core.atomic import file_mode
from llm4seg_core.store import load_checkpoint, read_checkpoint_info, save_checkpoint
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model import ModelSpec, build_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model = build_model(ModelSpec(image_size=64))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    path = save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.safetensors", {"note": "t"})
    return model, path


def test_round_trip_gives_the_same_outputs(trained):
    model, path = trained
    loaded, info = load_checkpoint(path)
    assert info.spec == model.spec and info.meta == {"note": "t"}
    assert path.stat().st_mode & 0o777 == file_mode()  # an ordinary file, not mkstemp's 0600
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_frozen_llm_layer_is_not_stored(trained):
    model, path = trained
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert not any(".llm." in k for k in keys)
    assert "net.bottleneck.proj_in.weight" in keys
    assert path.stat().st_size < 20e6  # adapters + CNN only, not the 3.5 M-param layer


def test_other_llm_layer_is_refused(trained, tmp_path):
    model, path = trained
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta["llm_sha256"] = "0" * 64
    bad = tmp_path / "other.safetensors"
    save_file(load_file(str(path)), str(bad), metadata=meta)
    with pytest.raises(LLM4SegError, match="another LLM layer"):
        load_checkpoint(bad)


def test_damaged_and_foreign_files_are_refused(trained, tmp_path):
    _, path = trained
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(LLM4SegError):
        load_checkpoint(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LLM4SegError):
        read_checkpoint_info(junk)
    with pytest.raises(LLM4SegError, match="not found"):
        read_checkpoint_info(tmp_path / "missing.safetensors")


def test_failed_save_leaves_the_old_file(trained, tmp_path, monkeypatch):
    model, path = trained
    target = tmp_path / "keep.safetensors"
    target.write_bytes(path.read_bytes())
    before = target.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]
