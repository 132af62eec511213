"""Minimal GGUF reader: header, metadata and tensor table (little endian, v2/v3).

The header reader here is fast, unlike ``gguf.GGUFReader`` which decodes the whole
tokenizer vocabulary (long arrays are skipped). Tensor bytes are memory-mapped and
dequantised with ``gguf.quants.dequantize``. llama.cpp stores the rows of ``attn_q`` /
``attn_k`` permuted for its rotary layout (per head, the two rotary halves are
interleaved); :func:`_unpermute_rotary_rows` puts them back in the half-split order
that transformers' ``rotate_half`` expects. Only the ``llama`` architecture is read.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.llm.arch import config_class
from llm4seg_core.model.llm.hashing import TensorHasher

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
class GGUFHeader:
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
def _read_gguf_header_cached(path_str: str, mtime_ns: int, size: int) -> GGUFHeader:
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
    return GGUFHeader(path=path, version=version, metadata=metadata, tensors=tensors)


def read_gguf_header(path: Path) -> GGUFHeader:
    """Metadata and tensor table of `path` (cached while the file is unchanged)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise LLM4SegError(f"cannot read {path}: {exc}") from exc
    return _read_gguf_header_cached(str(path), st.st_mtime_ns, st.st_size)


def _gguf_arch(header: GGUFHeader) -> str:
    arch = str(header.metadata.get("general.architecture", "")).lower()
    if arch != "llama":
        raise LLM4SegError(
            f"unsupported GGUF architecture '{arch or 'unknown'}' in {header.path}: only llama "
            "GGUF files work; for qwen2 models point to the Hugging Face folder "
            "(config.json + *.safetensors)"
        )
    return arch


def gguf_config(header: GGUFHeader) -> Any:
    """The LlamaConfig described by the GGUF metadata."""
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
    return config_class("llama")(**kwargs)


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


def gguf_layer_tensors(
    header: GGUFHeader, layer: int, config: Any, hasher: TensorHasher
) -> dict[str, torch.Tensor]:
    """Block `layer` dequantised to float32, named as in the transformers layer.

    The raw (quantised) bytes go to `hasher`, in tensor-name order.
    """
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

