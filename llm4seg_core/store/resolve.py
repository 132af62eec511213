"""Model resolution: what a ``--model`` argument stands for; the CLI and the GUIs all use it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.store.checkpoint import (
    CHECKPOINT_SUFFIXES,
    default_checkpoint,
    load_checkpoint,
    read_checkpoint_info,
)
from llm4seg_core.store.versions import ModelStore, VersionInfo


@dataclass
class ResolvedModel:
    """What a ``--model`` argument (or none) stands for.

    ``model`` is ``None`` only when :func:`resolve_model` was asked not to
    load. ``trained`` is False for an untrained spec (Segment warns then).
    """

    model: LLM4SegNet | None
    spec: ModelSpec
    name: str
    source: str
    trained: bool
    version: VersionInfo | None = None
    path: Path | None = None


def _looks_like_path(text: str) -> bool:
    if text.startswith("{") or "=" in text:
        return False
    return text.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in text or os.sep in text or text.startswith("~")


def resolve_model(
    arg: str | Path | None = None,
    store: ModelStore | None = None,
    *,
    load: bool = True,
    device: torch.device | str = "cpu",
) -> ResolvedModel:
    """The model ``arg`` names, loaded (or only its spec with ``load=False``).

    ``arg`` is a checkpoint file, a version in the model store, ``current``, or
    a spec (preset name and/or ``key=value`` overrides, or a JSON object; an
    untrained model). ``None`` means the store's current version if there is
    one, else the shipped default checkpoint, else the untrained default spec.
    """
    from llm4seg_core.model.network import build_model
    from llm4seg_core.model.spec import PRESETS, parse_spec

    store = store if store is not None else ModelStore()

    def from_version(info: VersionInfo) -> ResolvedModel:
        if load:
            model, info = store.load(info, device=device)
            spec = model.spec
        else:
            store._check_usable(info)
            model, spec = None, info.spec
        return ResolvedModel(model, spec, info.name, f"model version {info.name} ({info.path})", True, info, info.path)

    def from_file(path: Path, label: str) -> ResolvedModel:
        if load:
            model, ck = load_checkpoint(path, device=device)
            spec = model.spec
        else:
            model, ck = None, read_checkpoint_info(path)
            spec = ck.spec
        return ResolvedModel(model, spec, path.name, f"{label} {path}", True, None, path)

    def from_spec(spec: ModelSpec, label: str) -> ResolvedModel:
        model = build_model(spec, device=device) if load else None
        return ResolvedModel(model, spec, "untrained model", label, False)

    if isinstance(arg, Path):
        return from_file(arg.expanduser(), "checkpoint")
    text = (arg or "").strip()
    if not text:
        cur = store.current()
        if cur is not None:
            return from_version(cur)
        shipped = default_checkpoint()
        if shipped is not None:
            return from_file(shipped, "shipped default checkpoint")
        return from_spec(ModelSpec(), "untrained default spec")
    if text.lower() == "current":
        cur = store.current()
        if cur is None:
            raise LLM4SegError(f"the model store {store.root} holds no model version yet; train one first")
        return from_version(cur)
    path = Path(text).expanduser()
    if _looks_like_path(text):
        return from_file(path, "checkpoint")
    head = text.split(",", 1)[0].strip()
    if text.startswith("{") or "=" in head or head in PRESETS:
        return from_spec(parse_spec(text), f"untrained spec {text}")
    if text in store:  # a version name never looks like a path, a preset or a spec
        return from_version(store.get(text))
    if path.is_file():
        return from_file(path, "checkpoint")
    names = [v.name for v in store.versions()]
    raise LLM4SegError(
        f"unknown model {text!r}: not a checkpoint file, not a version in the model store {store.root} "
        f"(versions: {', '.join(names) if names else 'none yet'}), not a preset "
        f"({', '.join(PRESETS)}), not key=value spec overrides"
    )
