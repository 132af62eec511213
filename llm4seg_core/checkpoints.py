"""Checkpoint files: safetensors weights + JSON metadata in the same file.

A checkpoint stores what is trainable or changed (never a frozen pre-trained
LLM layer: that is re-read from its source) and, in the safetensors header,
the model spec and the sha256 of the LLM layer it was trained with. Loading
rebuilds the network from the spec, re-reads the layer, checks the hash, and
loads the stored tensors strictly. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet, build_model
from llm4seg_core.model.spec import ModelSpec

FORMAT = "llm4seg-checkpoint/1"


@dataclass
class CheckpointInfo:
    path: Path
    spec: ModelSpec
    llm_sha256: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(model: LLM4SegNet, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s stored tensors and metadata to ``path`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.stored_state_dict().items()}
    header = {
        "format": FORMAT,
        "spec": model.spec.to_json(),
        "llm_sha256": model.llm_source_sha256 or "",
        "meta": json.dumps(meta or {}, sort_keys=True, default=str),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The spec and metadata of a checkpoint, without building the model."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LLM4SegError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise LLM4SegError(
            f"{path} is not a readable llm4seg checkpoint (damaged or not safetensors): {exc}"
        ) from None
    if header.get("format") != FORMAT:
        raise LLM4SegError(f"{path} is not an llm4seg checkpoint (format {header.get('format')!r})")
    spec = ModelSpec.from_json(header.get("spec", ""))
    try:
        meta = json.loads(header.get("meta") or "{}")
    except json.JSONDecodeError:
        meta = {}
    return CheckpointInfo(path=path, spec=spec, llm_sha256=header.get("llm_sha256") or None, meta=meta)


def load_checkpoint(
    path: str | Path, *, device: torch.device | str = "cpu", llm_dtype: torch.dtype | None = None
) -> tuple[LLM4SegNet, CheckpointInfo]:
    """Rebuild the model a checkpoint belongs to and load its weights."""
    from safetensors.torch import load_file

    info = read_checkpoint_info(path)
    model = build_model(info.spec, device="cpu", llm_dtype=llm_dtype if llm_dtype else None)
    if info.spec.llm_mode == "pretrained" and info.llm_sha256 != model.llm_source_sha256:
        raise LLM4SegError(
            f"{info.path} was trained with another LLM layer than {info.spec.llm_source!r} layer "
            f"{info.spec.llm_layer} holds here (weights hash differs); use the LLM weights it was "
            "trained with"
        )
    try:
        tensors = load_file(str(info.path))
    except Exception as exc:
        raise LLM4SegError(f"{info.path}: cannot read the weights (damaged file?): {exc}") from None
    expected = model.stored_state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad_shape = sorted(k for k in expected.keys() & tensors.keys() if expected[k].shape != tensors[k].shape)
    if missing or unexpected or bad_shape:
        raise LLM4SegError(
            f"{info.path} does not fit its own model spec (missing {len(missing)}, unexpected "
            f"{len(unexpected)}, wrong shape {len(bad_shape)} tensors): the file is damaged"
        )
    model.load_state_dict(tensors, strict=False)
    model.eval()
    device = torch.device(device)
    if device.type == "cuda" and llm_dtype is None and info.spec.freeze_llm and model.llm_block:
        model.llm_block.llm.to(torch.bfloat16)
    return model.to(device), info


def default_checkpoint() -> Path | None:
    """The trained default model shipped in resources/, if there is one."""
    here = Path(__file__).resolve().parent.parent / "resources" / "models" / "default.safetensors"
    return here if here.is_file() else None
