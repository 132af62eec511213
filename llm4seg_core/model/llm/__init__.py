"""Load ONE decoder layer of a pre-trained LLM (LLaMA or Qwen2 architecture).

LLM4Seg puts a single frozen LLM decoder layer at the bottleneck of a CNN.
Loading the whole LLM just to keep one layer costs gigabytes of RAM, so only
the tensors of the requested layer are read, into a fresh transformers
``LlamaDecoderLayer`` / ``Qwen2DecoderLayer``.

Sources (the ``source`` argument of :func:`load_llm_layer`): ``"smollm2"`` (the
bundled SmolLM2-135M-Instruct GGUF), a path to a llama ``.gguf`` file, a local
Hugging Face folder, or a hub id resolved OFFLINE in the local Hugging Face
cache; ``random_init`` keeps a source's shapes and re-initialises the weights.

Modules: ``sources`` (an `LLMLayerSource` per kind, ``resolve_llm_source``),
``layer`` (building the layer, ``load_llm_layer``, discovery), ``gguf`` (GGUF
reader), ``hf`` (Hugging Face folders and cache), ``arch`` (llama/qwen2
classes), ``hashing`` (the weights sha256 that checkpoints record).
"""

from __future__ import annotations

from llm4seg_core.model.llm.arch import SUPPORTED_ARCHS
from llm4seg_core.model.llm.hf import hf_cache_dirs
from llm4seg_core.model.llm.layer import (
    LLMLayer,
    available_llm_sources,
    load_llm_config,
    load_llm_layer,
)
from llm4seg_core.model.llm.sources import (
    SMOLLM2_FILE,
    SMOLLM2_PIP,
    SMOLLM2_SOURCE,
    GGUFFileSource,
    HFFolderSource,
    LayerTensors,
    LLMLayerSource,
    RandomInitSource,
    resolve_llm_source,
    smollm2_gguf_path,
)

__all__ = [
    "SMOLLM2_FILE",
    "SMOLLM2_PIP",
    "SMOLLM2_SOURCE",
    "SUPPORTED_ARCHS",
    "GGUFFileSource",
    "HFFolderSource",
    "LLMLayer",
    "LLMLayerSource",
    "LayerTensors",
    "RandomInitSource",
    "available_llm_sources",
    "hf_cache_dirs",
    "load_llm_config",
    "load_llm_layer",
    "resolve_llm_source",
    "smollm2_gguf_path",
]
