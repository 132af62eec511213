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
