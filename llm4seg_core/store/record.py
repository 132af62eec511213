"""One version's record: :class:`VersionInfo`, the ``<name>.json`` beside its weights.

Written and read here (plain JSON, human-readable); :mod:`~llm4seg_core.store.versions`
keeps the store of them. A record without ``task`` (written before tasks) is task
``default``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.store import tasks
from llm4seg_core.store.checkpoint import read_checkpoint_info

VERSION_FORMAT = "llm4seg-version/1"


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` default: numpy/torch scalars and arrays, paths, sets."""
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def _llm_label(spec: ModelSpec | None) -> str:
    if spec is None:
        return "?"
    if spec.llm_mode == "none":
        return "none"
    label = f"{spec.llm_source} layer {spec.llm_layer}"
    if spec.llm_mode == "random":
        label += " (random init)"
    elif not spec.freeze_llm:
        label += " (fine-tuned)"
    return label


@dataclass
class VersionInfo:
    """One version in a :class:`ModelStore`, and the ``<name>.json`` that records it.

    ``damaged`` says why the version cannot be used (unreadable metadata,
    missing or changed weights, a spec from a newer llm4seg); ``None`` when it
    is fine. A damaged version is listed, never loaded.
    """

    name: str
    path: Path  # the .safetensors file
    spec: ModelSpec | None
    llm_sha256: str | None = None
    parent: str | None = None
    created: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    n_tensors: int = 0
    size: int = 0
    weights_sha256: str | None = None
    llm4seg_version: str = ""
    damaged: str | None = None
    task: str = tasks.DEFAULT_TASK

    @property
    def json_path(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def llm(self) -> str:
        """The LLM layer in words, e.g. ``smollm2 layer 14``."""
        return _llm_label(self.spec)

    @property
    def ok(self) -> bool:
        return self.damaged is None

    # ---- the JSON record ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The metadata as written to ``<name>.json`` (the ``llm*`` fields repeat the spec)."""
        spec = self.spec
        has_llm = spec is not None and spec.has_llm
        return {
            "format": VERSION_FORMAT,
            "name": self.name,
            "task": self.task,
            "weights": self.path.name,
            "created": self.created,
            "parent": self.parent,
            "note": self.note,
            "llm": _llm_label(spec),
            "llm_source": spec.llm_source if has_llm else None,
            "llm_layer": spec.llm_layer if has_llm else None,
            "llm_mode": spec.llm_mode if spec is not None else None,
            "llm_sha256": self.llm_sha256,
            "metrics": self.metrics,
            "data": self.data,
            "spec": spec.to_dict() if spec is not None else None,
            "n_tensors": self.n_tensors,
            "size": self.size,
            "weights_sha256": self.weights_sha256,
            "llm4seg_version": self.llm4seg_version,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n"

    @classmethod
    def from_dict(cls, meta: dict[str, Any], path: Path) -> VersionInfo:
        """The version ``meta`` records, its weights at ``path``; ``damaged`` says what is wrong."""
        info = cls(name=path.stem, path=path, spec=None)
        if meta.get("format") != VERSION_FORMAT:
            info.damaged = (
                f"metadata {info.json_path.name} is not an llm4seg model version "
                f"(format {meta.get('format')!r})"
            )
            return info
        task = meta.get("task") or tasks.DEFAULT_TASK  # none: written before tasks
        if not tasks.is_task_name(task):
            info.damaged = f"metadata {info.json_path.name} names a bad task {task!r}"
            return info
        info.task = task
        info.llm_sha256 = meta.get("llm_sha256") or None
        info.parent = meta.get("parent") or None
        info.created = str(meta.get("created") or "")
        info.data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        info.metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        info.note = str(meta.get("note") or "")
        info.n_tensors = int(meta.get("n_tensors") or 0)
        info.size = int(meta.get("size") or 0)
        info.weights_sha256 = meta.get("weights_sha256") or None
        info.llm4seg_version = str(meta.get("llm4seg_version") or "")
        try:
            spec_data = meta.get("spec")
            if not isinstance(spec_data, dict):
                raise LLM4SegError("the model spec is missing")
            info.spec = ModelSpec.from_dict(spec_data)
        except (LLM4SegError, TypeError) as exc:
            info.damaged = f"metadata holds no usable model spec ({exc})"
        return info

    @classmethod
    def from_json(cls, json_path: str | Path) -> VersionInfo:
        """The version ``<name>.json`` records (its weights: ``<name>.safetensors`` beside it).

        Never raises for a bad file: unreadable metadata gives a damaged
        version, with the spec the weights still tell when they are readable.
        """
        json_path = Path(json_path)
        weights = json_path.with_suffix(".safetensors")
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            info = cls(name=json_path.stem, path=weights, spec=None,
                       damaged=f"metadata {json_path.name} is unreadable ({exc})")
            try:
                ck = read_checkpoint_info(weights)
                info.spec, info.llm_sha256 = ck.spec, ck.llm_sha256
            except LLM4SegError:
                pass
            return info
        return cls.from_dict(meta, weights)


_SHA_CACHE: dict[tuple, str] = {}


def _sha256_cached(path: Path) -> str:
    """``_sha256_file``, remembered per file state (size, times, inode) within this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _SHA_CACHE:
        if len(_SHA_CACHE) > 512:
            _SHA_CACHE.clear()
        _SHA_CACHE[key] = _sha256_file(path)
    return _SHA_CACHE[key]


def _weights_damage(info: VersionInfo, *, verify: bool = False) -> str | None:
    """Why ``info``'s weights file does not fit its metadata (missing, truncated, other header).

    ``verify`` also compares the file's sha256 with the one its metadata
    records (bytes changed in place: same size, same header).
    """
    weights = info.path
    if not weights.is_file():
        return f"weights file {weights.name} is missing"
    if info.size and weights.stat().st_size != info.size:
        return (
            f"weights file {weights.name} has {weights.stat().st_size} bytes, its metadata says "
            f"{info.size} (truncated or replaced)"
        )
    try:
        ck = read_checkpoint_info(weights)
    except LLM4SegError as exc:
        return str(exc)
    if ck.spec != info.spec or (ck.llm_sha256 or None) != info.llm_sha256:
        return f"weights file {weights.name} does not match its metadata (spec or LLM hash differ)"
    if verify and info.weights_sha256:
        try:
            digest = _sha256_cached(weights)
        except OSError as exc:
            return f"weights file {weights.name} cannot be read ({exc.strerror or exc})"
        if digest != info.weights_sha256:
            return (f"weights file {weights.name} was changed after it was saved (its sha256 "
                    "differs from the metadata)")
    return None
