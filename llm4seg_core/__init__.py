"""LLM4Seg engine: model, LLM layer sources, medical image I/O and inference.

This package never imports Qt or napari.
"""

from __future__ import annotations

from llm4seg_core.errors import Cancelled, LLM4SegError

__version__ = "0.1.0"

__all__ = ["Cancelled", "LLM4SegError", "__version__"]
