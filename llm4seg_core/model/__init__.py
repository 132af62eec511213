"""The LLM4Seg network, its spec, and where its LLM layer comes from."""

from __future__ import annotations

from llm4seg_core.model.network import LLM4SegNet, ParamCounts, build_model
from llm4seg_core.model.spec import PRESETS, ModelSpec, parse_spec

__all__ = ["PRESETS", "LLM4SegNet", "ModelSpec", "ParamCounts", "build_model", "parse_spec"]
