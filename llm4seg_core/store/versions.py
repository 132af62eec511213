"""The versioned model store: numbered versions of trained models in the user's data folder.

Each version is ``<name>.safetensors`` (a checkpoint, see
:mod:`llm4seg_core.store.checkpoint`) + ``<name>.json`` (a :class:`VersionInfo`:
all metadata, human-readable), both written atomically, the JSON last, so a
version exists only once both are complete. ``CURRENT`` names the version
Segment uses by default.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from llm4seg_core.atomic import atomic_write_text
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.paths import store_root
from llm4seg_core.store import locks
from llm4seg_core.store.checkpoint import (
    CHECKPOINT_SUFFIXES,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    spec_differences,
)
from llm4seg_core.store.compare import compare_versions

VERSION_FORMAT = "llm4seg-version/1"
CURRENT_FILE = "CURRENT"
"""The pointer file naming the version Segment uses by default."""

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_RESERVED = {"current"}


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


def _weights_damage(info: VersionInfo) -> str | None:
    """Why ``info``'s weights file does not fit its metadata (missing, truncated, other header)."""
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
    return None


class ModelStore:
    """Versions of trained models: list, save, load, compare, roll back.

    ``root`` defaults to :func:`store_root`. Reading never creates anything;
    the folder is made on the first save. A save never overwrites a version,
    and a crash or Ctrl-C mid-save leaves the store as it was (at most a
    hidden temp file, removed by the next save).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else store_root()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # ---- names and files ------------------------------------------------
    @staticmethod
    def validate_name(name: str) -> str:
        """``name`` if it can name a version, else a :class:`LLM4SegError` saying why."""
        from llm4seg_core.model.spec import PRESETS

        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise LLM4SegError(
                f"bad model version name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        low = name.lower()
        reserved_suffixes = (*CHECKPOINT_SUFFIXES, ".json", ".tmp", ".lock")
        if low in _RESERVED or low in PRESETS or low.endswith(reserved_suffixes):
            raise LLM4SegError(f"{name!r} cannot name a model version (reserved word); choose another name")
        return name

    def _weights(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def _meta(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.stem for p in self.root.glob("*.json") if _NAME_RE.match(p.stem)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(_NAME_RE.match(name)) and self._meta(name).is_file()

    # ---- reading ---------------------------------------------------------
    def _read(self, name: str) -> VersionInfo:
        info = VersionInfo.from_json(self._meta(name))
        if info.ok:
            info.damaged = _weights_damage(info)
        return info

    def versions(self) -> list[VersionInfo]:
        """All versions, oldest first; damaged ones are listed with ``damaged`` set."""
        infos = [self._read(n) for n in self._names()]

        def key(v: VersionInfo) -> tuple[float, int, str]:
            try:
                mtime_ns = v.json_path.stat().st_mtime_ns
            except OSError:
                mtime_ns = 0
            t = _parse_time(v.created)
            return (t if t is not None else mtime_ns / 1e9, mtime_ns, v.name)

        return sorted(infos, key=key)

    def _unknown(self, name: str) -> LLM4SegError:
        names = [v.name for v in self.versions()]
        known = ", ".join(names) if names else "none yet"
        return LLM4SegError(f"no model version {name!r} in the model store {self.root} (versions: {known})")

    def get(self, name: str) -> VersionInfo:
        """The version called ``name``; an unknown name is an error listing the known ones."""
        if not isinstance(name, str) or not _NAME_RE.match(name) or not self._meta(name).is_file():
            raise self._unknown(str(name))
        return self._read(name)

    def current(self) -> VersionInfo | None:
        """The version Segment uses by default: the one rolled back (or forward) to, else the newest.

        ``None`` when the store holds no usable version.
        """
        pointer = self.root / CURRENT_FILE
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if name and name in self:
            return self._read(name)  # chosen explicitly: shown even when damaged (loading says why)
        usable = [v for v in self.versions() if v.ok]
        return usable[-1] if usable else None

    def current_name(self) -> str | None:
        cur = self.current()
        return cur.name if cur else None

    # ---- checks -----------------------------------------------------------
    def check_compatible(self, info: VersionInfo | str, spec: ModelSpec) -> None:
        """Refuse ``info`` for a model built from ``spec``, saying which spec fields differ."""
        if isinstance(info, str):
            info = self.get(info)
        if info.spec is None:
            raise LLM4SegError(f"model version {info.name} is damaged: {info.damaged}")
        diffs = spec_differences(info.spec, spec)
        if diffs:
            parts = "; ".join(f"{k} {a!r} in the version, {b!r} here" for k, a, b in ((k, *v) for k, v in diffs.items()))
            raise LLM4SegError(f"model version {info.name} was made for another model spec: {parts}")

    def _check_usable(self, info: VersionInfo) -> None:
        if info.damaged:
            raise LLM4SegError(
                f"model version {info.name} in {self.root} is damaged: {info.damaged}; use another "
                "version (llm4seg models rollback NAME)"
            )
        if info.weights_sha256 and _sha256_file(info.path) != info.weights_sha256:
            raise LLM4SegError(
                f"model version {info.name}: {info.path.name} was changed after it was saved (its "
                "sha256 differs from the metadata); use another version (llm4seg models rollback NAME)"
            )

    # ---- loading ----------------------------------------------------------
    def load(self, name: str | VersionInfo, *, device: torch.device | str = "cpu") -> tuple[LLM4SegNet, VersionInfo]:
        """Rebuild a version's model (re-reading its frozen LLM layer) and load its weights.

        Refused, saying why, when the version is damaged or its LLM layer's
        weights differ from the layer its source holds here.
        """
        info = name if isinstance(name, VersionInfo) else self.get(name)
        self._check_usable(info)
        try:
            model, ck = load_checkpoint(info.path, device="cpu")
        except LLM4SegError as exc:
            raise LLM4SegError(f"model version {info.name}: {exc}") from None
        if info.spec is not None and info.spec.llm_mode == "pretrained" and info.llm_sha256 != model.llm_source_sha256:
            raise LLM4SegError(
                f"model version {info.name} was trained with another LLM layer than "
                f"{info.spec.llm_source!r} layer {info.spec.llm_layer} holds here (weights sha256 "
                f"{(info.llm_sha256 or '?')[:12]} in the version, {(model.llm_source_sha256 or '?')[:12]} "
                "here); install the LLM weights it was trained with, or use another version"
            )
        dev = torch.device(device)
        if dev.type == "cuda" and info.spec is not None and info.spec.freeze_llm and model.llm_block:
            model.llm_block.llm.to(torch.bfloat16)
        return model.to(dev), info

    # ---- writing ----------------------------------------------------------
    def save(
        self,
        model: LLM4SegNet,
        *,
        name: str | None = None,
        parent: str | None = None,
        data: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        note: str = "",
        make_current: bool = True,
        created: str | None = None,
    ) -> VersionInfo:
        """Save ``model``'s trainable/changed tensors as a new version and return it.

        ``name`` defaults to the next ``v0001``, ``v0002``...; an existing name
        is refused. With ``make_current`` (the default) the new version becomes
        the one Segment uses.
        """
        if name is not None:
            self.validate_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        locks.cleanup(self.root)
        if name is None:
            n = locks.next_auto_number(self.root)
            while not locks.reserve(self.root, name := f"v{n:04d}"):
                n += 1
        elif self._meta(name).exists():
            raise LLM4SegError(
                f"model version {name!r} already exists in {self.root}; choose another name "
                "(versions are never overwritten)"
            )
        elif not locks.reserve(self.root, name):
            raise LLM4SegError(
                f"model version {name!r} is being saved by another llm4seg process (if none is "
                f"running, delete {locks.lock_path(self.root, name)})"
            )
        weights, meta_path = self._weights(name), self._meta(name)
        created = created or datetime.now(timezone.utc).astimezone().isoformat(timespec="microseconds")
        try:
            record: dict[str, Any] = {
                "store_name": name,
                "parent": parent,
                "created": created,
                "data": dict(data or {}),
                "metrics": dict(metrics or {}),
                "note": note,
            }
            record = json.loads(json.dumps(record, default=_jsonable))  # plain JSON types only
            save_checkpoint(model, weights, record)
            from safetensors import safe_open

            from llm4seg_core import __version__

            with safe_open(str(weights), framework="pt") as f:
                n_tensors = len(list(f.keys()))
            info = VersionInfo(
                name=name, path=weights, spec=model.spec, llm_sha256=model.llm_source_sha256 or None,
                parent=parent, created=created, data=record["data"], metrics=record["metrics"],
                note=note, n_tensors=n_tensors, size=weights.stat().st_size,
                weights_sha256=_sha256_file(weights), llm4seg_version=__version__,
            )
            atomic_write_text(meta_path, info.to_json())
        except BaseException:
            # the version never came to exist: drop its weights, keep the store as it was
            if not meta_path.exists():
                weights.unlink(missing_ok=True)
            raise
        finally:
            locks.release(self.root, name)
        if make_current:
            self.set_current(name)
        return self._read(name)

    def set_current(self, name: str) -> None:
        """Make ``name`` the version Segment uses (roll back or forward); deletes nothing."""
        info = self.get(name)
        if info.damaged:
            raise LLM4SegError(f"model version {name} is damaged ({info.damaged}); choose another version")
        atomic_write_text(self.root / CURRENT_FILE, name + "\n")

    def import_file(self, path: str | Path, name: str | None = None) -> VersionInfo:
        """Add an existing checkpoint file as a new version (checked by loading it first)."""
        path = Path(path).expanduser()
        if name is not None:
            self.validate_name(name)
            if name in self:
                raise LLM4SegError(f"model version {name!r} already exists in {self.root}; choose another name")
        model, ck = load_checkpoint(path, device="cpu")
        meta = ck.meta if isinstance(ck.meta, dict) else {}
        data = dict(meta.get("data") or {}) if isinstance(meta.get("data"), dict) else {}
        data["imported_from"] = str(path.resolve())
        if meta.get("created"):
            data["originally_created"] = meta["created"]
        if meta.get("store_name"):
            data["original_name"] = meta["store_name"]
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        note = str(meta.get("note") or f"imported from {path.name}")
        return self.save(model, name=name, data=data, metrics=metrics, note=note)

    # ---- comparing ----------------------------------------------------------
    def compare(self, a: str | VersionInfo, b: str | VersionInfo) -> dict[str, Any]:
        """Two versions side by side: metrics, spec differences, LLM layer, weight changes.

        ``weights`` summarises the per-tensor relative change ``|b - a| / |a|``
        over the tensors both store (``top`` lists the largest changes).
        """
        va = a if isinstance(a, VersionInfo) else self.get(a)
        vb = b if isinstance(b, VersionInfo) else self.get(b)
        for v in (va, vb):
            self._check_usable(v)
        return compare_versions(va, vb)
