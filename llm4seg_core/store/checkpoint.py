"""The checkpoint file: one safetensors file holding a model's stored tensors and its spec.

A checkpoint stores what is trainable or changed (never a frozen pre-trained
LLM layer: that is re-read from its source) and, in the safetensors header,
the model spec and the sha256 of the LLM layer it was trained with. Loading
rebuilds the network from the spec, re-reads the layer, checks the hash, and
loads the stored tensors strictly. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm4seg_core.atomic import atomic_write
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet, build_model
from llm4seg_core.model.spec import ModelSpec

FORMAT = "llm4seg-checkpoint/1"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
"""File names ending so are taken for checkpoint files (never for version names)."""


@dataclass
class CheckpointInfo:
    path: Path
    spec: ModelSpec
    llm_sha256: str | None
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    model: LLM4SegNet,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    *,
    float_dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model``'s stored tensors and metadata to ``path`` atomically.

    ``float_dtype`` (e.g. ``torch.float16``) stores floating-point tensors in a
    smaller type, for checkpoints shipped with the package; loading casts them
    back to the model's own dtype.
    """
    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.stored_state_dict().items():
        v = v.detach().to("cpu")
        if float_dtype is not None and v.is_floating_point():
            v = v.to(float_dtype)
        tensors[k] = v.contiguous()
    header = {
        "format": FORMAT,
        "spec": model.spec.to_json(),
        "llm_sha256": model.llm_source_sha256 or "",
        "meta": json.dumps(meta or {}, sort_keys=True, default=str),
    }

    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


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
    """The trained default model shipped with the package, if there is one."""
    from llm4seg_core.paths import shipped_models_dirs

    for folder in shipped_models_dirs():
        if (folder / "default.safetensors").is_file():
            return folder / "default.safetensors"
    return None


def spec_differences(a: ModelSpec, b: ModelSpec) -> dict[str, tuple[Any, Any]]:
    """The spec fields where ``a`` and ``b`` differ: ``{field: (a_value, b_value)}``."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da.get(k), db.get(k)) for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)}
