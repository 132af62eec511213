"""Checkpoint files, the versioned model store, and model resolution.

A checkpoint stores what is trainable or changed (never a frozen pre-trained
LLM layer: that is re-read from its source) and, in the safetensors header,
the model spec and the sha256 of the LLM layer it was trained with. Loading
rebuilds the network from the spec, re-reads the layer, checks the hash, and
loads the stored tensors strictly. Nothing is ever unpickled.

:class:`ModelStore` keeps numbered versions of a model in the user's data
folder (never the working directory): ``<name>.safetensors`` (a checkpoint as
above) + ``<name>.json`` (all metadata, human-readable), both written
atomically, the JSON last, so a version exists only once both are complete.
:func:`resolve_model` turns a ``--model`` argument (file, version, spec) into
a model; the CLI and the GUIs all use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as f:  # on disk before it takes the final name
            os.fsync(f.fileno())
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
    """The trained default model shipped with the package, if there is one."""
    from llm4seg_core.paths import shipped_models_dirs

    for folder in shipped_models_dirs():
        if (folder / "default.safetensors").is_file():
            return folder / "default.safetensors"
    return None


# --------------------------------------------------------------------------
# The versioned model store
# --------------------------------------------------------------------------

STORE_ENV = "LLM4SEG_HOME"
"""When set, the store lives in ``$LLM4SEG_HOME/models``."""

VERSION_FORMAT = "llm4seg-version/1"
CURRENT_FILE = "CURRENT"
"""The pointer file naming the version Segment uses by default."""

STALE_S = 3600.0
"""Temp and lock files older than this are leftovers of a crash (removed on the next save)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_AUTO_RE = re.compile(r"^v(\d+)$")
_RESERVED = {"current"}
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def store_root() -> Path:
    """Where the model store lives: ``$LLM4SEG_HOME/models``, else the user data folder.

    Always an absolute path, never the working directory.
    """
    env = os.environ.get(STORE_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve() / "models"
    import platformdirs

    return Path(platformdirs.user_data_dir("llm4seg")).expanduser().resolve() / "models"


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


def _file_mode() -> int:
    """The mode an ordinary new file gets (0o666 less the umask); mkstemp alone makes 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a hidden temp file + ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def spec_differences(a: ModelSpec, b: ModelSpec) -> dict[str, tuple[Any, Any]]:
    """The spec fields where ``a`` and ``b`` differ: ``{field: (a_value, b_value)}``."""
    da, db = a.to_dict(), b.to_dict()
    return {k: (da.get(k), db.get(k)) for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)}


@dataclass
class VersionInfo:
    """One version in a :class:`ModelStore`.

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
        if low in _RESERVED or low in PRESETS or low.endswith((*_FILE_SUFFIXES, ".json", ".tmp", ".lock")):
            raise LLM4SegError(f"{name!r} cannot name a model version (reserved word); choose another name")
        return name

    def _weights(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def _meta(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _lock(self, name: str) -> Path:
        return self.root / f".{name}.lock"

    def _names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.stem for p in self.root.glob("*.json") if _NAME_RE.match(p.stem)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(_NAME_RE.match(name)) and self._meta(name).is_file()

    # ---- reading ---------------------------------------------------------
    def _read(self, name: str) -> VersionInfo:
        meta_path, weights = self._meta(name), self._weights(name)
        info = VersionInfo(name=name, path=weights, spec=None)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            info.damaged = f"metadata {meta_path.name} is unreadable ({exc})"
            try:  # still show what the weights say, when they are readable
                ck = read_checkpoint_info(weights)
                info.spec, info.llm_sha256 = ck.spec, ck.llm_sha256
            except LLM4SegError:
                pass
            return info
        if meta.get("format") != VERSION_FORMAT:
            info.damaged = f"metadata {meta_path.name} is not an llm4seg model version (format {meta.get('format')!r})"
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
        try:
            spec_data = meta.get("spec")
            if not isinstance(spec_data, dict):
                raise LLM4SegError("the model spec is missing")
            info.spec = ModelSpec.from_dict(spec_data)
        except (LLM4SegError, TypeError) as exc:
            info.damaged = f"metadata holds no usable model spec ({exc})"
            return info
        if not weights.is_file():
            info.damaged = f"weights file {weights.name} is missing"
            return info
        if info.size and weights.stat().st_size != info.size:
            info.damaged = (
                f"weights file {weights.name} has {weights.stat().st_size} bytes, its metadata says "
                f"{info.size} (truncated or replaced)"
            )
            return info
        try:
            ck = read_checkpoint_info(weights)
        except LLM4SegError as exc:
            info.damaged = str(exc)
            return info
        if ck.spec != info.spec or (ck.llm_sha256 or None) != info.llm_sha256:
            info.damaged = f"weights file {weights.name} does not match its metadata (spec or LLM hash differ)"
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
    def _cleanup(self) -> None:
        """Remove stale leftovers of crashed saves: temp files, locks, weights without metadata."""
        if not self.root.is_dir():
            return
        now = time.time()
        for p in self.root.iterdir():
            try:
                if now - p.stat().st_mtime < STALE_S:
                    continue
                if p.name.startswith(".") and p.name.endswith((".tmp", ".lock")):
                    p.unlink(missing_ok=True)
                elif p.suffix == ".safetensors" and not self._meta(p.stem).exists():
                    # weights whose metadata was never written: a save that died between the two
                    # renames (only files this store wrote, as their header says)
                    try:
                        owner = read_checkpoint_info(p).meta.get("store_name")
                    except LLM4SegError:
                        continue
                    if owner == p.stem:
                        p.unlink(missing_ok=True)
            except OSError:
                continue

    def _reserve(self, name: str) -> bool:
        """Take ``name`` for a save in progress (an exclusive lock file); False when taken."""
        try:
            fd = os.open(self._lock(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        if self._meta(name).exists():
            self._lock(name).unlink(missing_ok=True)
            return False
        return True

    def _next_auto_number(self) -> int:
        n = 0
        if self.root.is_dir():
            for p in self.root.iterdir():
                stem = p.name.lstrip(".").split(".")[0]
                m = _AUTO_RE.match(stem)
                if m:
                    n = max(n, int(m.group(1)))
        return n + 1

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
        self._cleanup()
        if name is None:
            n = self._next_auto_number()
            while not self._reserve(name := f"v{n:04d}"):
                n += 1
        elif self._meta(name).exists():
            raise LLM4SegError(
                f"model version {name!r} already exists in {self.root}; choose another name "
                "(versions are never overwritten)"
            )
        elif not self._reserve(name):
            raise LLM4SegError(
                f"model version {name!r} is being saved by another llm4seg process (if none is "
                f"running, delete {self._lock(name)})"
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

            with safe_open(str(weights), framework="pt") as f:
                n_tensors = len(list(f.keys()))
            from llm4seg_core import __version__

            spec = model.spec
            meta = {
                "format": VERSION_FORMAT,
                "name": name,
                "weights": weights.name,
                "created": created,
                "parent": parent,
                "note": note,
                "llm": _llm_label(spec),
                "llm_source": spec.llm_source if spec.has_llm else None,
                "llm_layer": spec.llm_layer if spec.has_llm else None,
                "llm_mode": spec.llm_mode,
                "llm_sha256": model.llm_source_sha256 or None,
                "metrics": record["metrics"],
                "data": record["data"],
                "spec": spec.to_dict(),
                "n_tensors": n_tensors,
                "size": weights.stat().st_size,
                "weights_sha256": _sha256_file(weights),
                "llm4seg_version": __version__,
            }
            _atomic_write_text(meta_path, json.dumps(meta, indent=2, default=_jsonable) + "\n")
        except BaseException:
            # the version never came to exist: drop its weights, keep the store as it was
            if not meta_path.exists():
                weights.unlink(missing_ok=True)
            raise
        finally:
            self._lock(name).unlink(missing_ok=True)
        if make_current:
            self.set_current(name)
        return self._read(name)

    def set_current(self, name: str) -> None:
        """Make ``name`` the version Segment uses (roll back or forward); deletes nothing."""
        info = self.get(name)
        if info.damaged:
            raise LLM4SegError(f"model version {name} is damaged ({info.damaged}); choose another version")
        _atomic_write_text(self.root / CURRENT_FILE, name + "\n")

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
        from safetensors.torch import load_file

        va = a if isinstance(a, VersionInfo) else self.get(a)
        vb = b if isinstance(b, VersionInfo) else self.get(b)
        for v in (va, vb):
            self._check_usable(v)
        keys = list(dict.fromkeys([*va.metrics, *vb.metrics]))
        metrics = {k: (va.metrics.get(k), vb.metrics.get(k)) for k in keys}
        spec_diff = spec_differences(va.spec, vb.spec) if va.spec and vb.spec else {}
        ta, tb = load_file(str(va.path)), load_file(str(vb.path))
        common = sorted(ta.keys() & tb.keys())
        rel: dict[str, float] = {}
        shape_differs: list[str] = []
        other_changed: list[str] = []  # integer tensors (e.g. batch-norm counters)
        other_same: list[str] = []
        num = den = 0.0
        for k in common:
            x, y = ta[k], tb[k]
            if x.shape != y.shape:
                shape_differs.append(k)
                continue
            if not (x.is_floating_point() and y.is_floating_point()):
                (other_changed if not torch.equal(x, y) else other_same).append(k)
                continue
            x, y = x.double(), y.double()
            d, n = float(torch.linalg.vector_norm(y - x)), float(torch.linalg.vector_norm(x))
            num += d * d
            den += n * n
            rel[k] = d / n if n > 0 else (0.0 if d == 0 else math.inf)
        changed = {k: r for k, r in rel.items() if r > 0}
        top = sorted(changed.items(), key=lambda kv: kv[1], reverse=True)[:10]
        values = list(rel.values())
        return {
            "a": va.name,
            "b": vb.name,
            "created": (va.created, vb.created),
            "parent": (va.parent, vb.parent),
            "metrics": metrics,
            "spec": spec_diff,
            "llm": {"a": va.llm, "b": vb.llm, "same": va.llm_sha256 == vb.llm_sha256 and va.llm == vb.llm},
            "weights": {
                "common": len(common),
                "only_a": sorted(ta.keys() - tb.keys()),
                "only_b": sorted(tb.keys() - ta.keys()),
                "shape_differs": shape_differs,
                "changed": len(changed) + len(other_changed),
                "unchanged": len(rel) - len(changed) + len(other_same),
                "mean_rel_change": (sum(values) / len(values)) if values else 0.0,
                "max_rel_change": max(values) if values else 0.0,
                "overall_rel_change": math.sqrt(num / den) if den > 0 else 0.0,
                "top": top,
            },
        }


# --------------------------------------------------------------------------
# Model resolution: one function for the CLI and the GUIs
# --------------------------------------------------------------------------

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
    return text.lower().endswith(_FILE_SUFFIXES) or "/" in text or os.sep in text or text.startswith("~")


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
