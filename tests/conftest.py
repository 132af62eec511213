"""Test-wide settings: never touch a model hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_model_store(tmp_path_factory, monkeypatch):
    """Each test sees an empty model store of its own, never the user's."""
    monkeypatch.setenv("LLM4SEG_HOME", str(tmp_path_factory.mktemp("llm4seg_home")))


@pytest.fixture
def no_shipped_prompt_model(tmp_path_factory, monkeypatch):
    """The shipped models without the prompt model: as a checkout before it was trained.

    For the tests of what happens while no prompt model exists anywhere.
    """
    from llm4seg_core import paths
    from llm4seg_core.store import read_checkpoint_info

    real = paths.shipped_models_dirs()
    folder = tmp_path_factory.mktemp("shipped-without-prompt")
    for f in real[0].glob("*.safetensors"):
        if not read_checkpoint_info(f).spec.is_prompt_model:
            (folder / f.name).symlink_to(f)
            if f.with_suffix(".md").is_file():
                (folder / f.with_suffix(".md").name).symlink_to(f.with_suffix(".md"))
    monkeypatch.setattr(paths, "shipped_models_dirs", lambda: [folder, *real[1:]])
    return folder
