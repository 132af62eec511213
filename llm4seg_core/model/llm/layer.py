"""Building the frozen LLM layer: a fresh transformers decoder layer from a source.

The layer is made on the meta device and the source's tensors are assigned into
it, so nothing but that one layer is ever allocated.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.llm.arch import (
    SUPPORTED_ARCHS,
    arch_of,
    head_dim_of,
    meta_layer,
    rope_theta_of,
    unsupported_arch,
)
from llm4seg_core.model.llm.hf import cached_models
from llm4seg_core.model.llm.sources import (
    SMOLLM2_SOURCE,
    GGUFFileSource,
    HFFolderSource,
    LLMLayerSource,
    RandomInitSource,
    resolve_llm_source,
)

if TYPE_CHECKING:  # transformers is imported lazily (it takes seconds)
    from transformers import PretrainedConfig


@dataclass
class LLMLayer:
    """One loaded decoder layer plus what the model code needs to know about it."""

    module: torch.nn.Module  # LlamaDecoderLayer / Qwen2DecoderLayer, eval mode, in `dtype`
    config: PretrainedConfig  # LlamaConfig / Qwen2Config, _attn_implementation = "sdpa"
    arch: str  # "llama" | "qwen2"
    hidden_size: int
    num_heads: int
    head_dim: int
    rope_theta: float
    source: str  # canonical source string: "smollm2", an absolute path, or a hub id
    layer_index: int
    weights_sha256: str  # see hashing.TensorHasher; "random-init" for random init
    resolved_path: str = ""  # the file / folder actually read ("" only if unknown)


def _finish_config(config: Any) -> Any:
    config._attn_implementation = "sdpa"
    return config


def _check_layer_index(layer: int, config: Any, canonical: str) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise LLM4SegError(f"LLM layer index must be an integer, got {layer!r}")
    n = int(config.num_hidden_layers)
    layer = int(layer)
    if not 0 <= layer < n:
        raise LLM4SegError(
            f"LLM layer {layer} is out of range for {canonical}: it has {n} layers (use 0..{n - 1})"
        )
    return layer


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = dict(module.state_dict())
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise LLM4SegError(
            f"{where}: layer tensors do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "the checkpoint is damaged or a different variant"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise LLM4SegError(
                f"{where}: tensor {k} has shape {tuple(v.shape)}, "
                f"config expects {tuple(expected[k].shape)}; "
                "config.json and weights disagree"
            )
    module.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in _named_tensors(module) if t.is_meta]
    if leftovers:
        raise LLM4SegError(f"{where}: tensors {leftovers[:3]} were not loaded")


def _named_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def _as_source(source: str | os.PathLike[str] | LLMLayerSource) -> LLMLayerSource:
    return source if isinstance(source, LLMLayerSource) else resolve_llm_source(source)


def load_llm_config(source: str | os.PathLike[str] | LLMLayerSource) -> PretrainedConfig:
    """The LlamaConfig / Qwen2Config of `source` without reading any weights."""
    return _finish_config(_as_source(source).config())


def load_llm_layer(
    source: str | os.PathLike[str] | LLMLayerSource,
    layer: int,
    *,
    dtype: torch.dtype = torch.float32,
    random_init: bool = False,
    seed: int = 0,
) -> LLMLayer:
    """Load decoder layer `layer` of `source` into a fresh transformers layer.

    `source` is a source string (see :func:`resolve_llm_source`) or a source object.
    Only that layer's tensors are read. With ``random_init`` no weights are read at
    all: the layer gets the same shapes, re-initialised deterministically from ``seed``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LLM4SegError(f"LLM layer dtype must be a torch floating dtype, got {dtype!r}")
    src = _as_source(source)
    if random_init:
        src = RandomInitSource(src, seed)
    config = _finish_config(src.config())
    arch = arch_of(config)
    if arch not in SUPPORTED_ARCHS:
        raise unsupported_arch(arch, src.path)
    layer = _check_layer_index(layer, config, src.canonical)

    tensors = src.layer_tensors(layer, dtype)
    digest = tensors.sha256
    module = meta_layer(arch, config, layer)
    _load_into(module, tensors.state, str(src.path))
    del tensors
    module.eval()
    return LLMLayer(
        module=module,
        config=config,
        arch=arch,
        hidden_size=int(config.hidden_size),
        num_heads=int(config.num_attention_heads),
        head_dim=head_dim_of(config),
        rope_theta=rope_theta_of(config),
        source=src.canonical,
        layer_index=layer,
        weights_sha256=digest,
        resolved_path=str(src.path),
    )


def available_llm_sources() -> list[dict[str, Any]]:
    """LLM sources usable offline.

    The bundled SmolLM2 (found or not) plus llama/qwen2 models in the local HF cache.

    Each entry: name (the source string to pass), kind ("bundled-gguf" | "hf-cache"), found,
    path, arch, hidden_size, num_layers; a missing SmolLM2 also carries ``hint``.
    """
    sources: list[dict[str, Any]] = []
    try:
        sources.append(GGUFFileSource.bundled().describe())
    except LLM4SegError as exc:
        sources.append(
            {
                "name": SMOLLM2_SOURCE,
                "kind": "bundled-gguf",
                "found": False,
                "path": None,
                "arch": "llama",
                "hidden_size": 576,
                "num_layers": 30,
                "hint": str(exc),
            }
        )

    seen: set[str] = set()
    for hub_id, snap in cached_models():
        if hub_id in seen:
            continue
        src = HFFolderSource.cached(hub_id, snap)
        try:
            entry = src.describe()
        except LLM4SegError:
            continue
        if not src.has_weights():
            continue
        seen.add(hub_id)
        sources.append(entry)
    return sources
