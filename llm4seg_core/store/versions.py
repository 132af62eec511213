"""The versioned model store: numbered versions of trained models in the user's data folder.

Each version is ``<name>.safetensors`` (a checkpoint, see
:mod:`llm4seg_core.store.checkpoint`) + ``<name>.json`` (a :class:`VersionInfo`:
all metadata, human-readable), both written atomically, the JSON last, so a
version exists only once both are complete. Each version belongs to a task
(:mod:`llm4seg_core.store.tasks`: ``default``, ``polyp``, ...; a record
without one, written before tasks, is task ``default``); each task has its
own current version, named by its pointer file (``CURRENT`` for ``default``,
``CURRENT.<task>`` for the others, see that module), the one Segment uses for
that task.
"""

from __future__ import annotations

import json
import re
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
from llm4seg_core.store import tasks as _tasks
from llm4seg_core.store.checkpoint import (
    CHECKPOINT_SUFFIXES,
    load_checkpoint,
    save_checkpoint,
    spec_differences,
)
from llm4seg_core.store.compare import compare_versions
from llm4seg_core.store.record import (  # noqa: F401 - re-exported
    VERSION_FORMAT,
    VersionInfo,
    _jsonable,
    _parse_time,
    _sha256_cached,
    _sha256_file,
    _weights_damage,
)

CURRENT_FILE = _tasks.POINTER_PREFIX
"""The pointer file naming the default task's current version (``CURRENT.<task>``: another task's)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_RESERVED = {"current", _tasks.SHIPPED}


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
    def _read(self, name: str, *, verify: bool = False) -> VersionInfo:
        info = VersionInfo.from_json(self._meta(name))
        if info.ok:
            info.damaged = _weights_damage(info, verify=verify)
        return info

    def versions(self, task: str | None = None, *, verify: bool = False) -> list[VersionInfo]:
        """All versions (of ``task`` only, when given), oldest first; damaged ones have ``damaged`` set.

        ``verify`` also checks each weights file's sha256 against its metadata
        (bytes changed in place); without it only size and header are checked.
        """
        infos = [self._read(n, verify=verify) for n in self._names()]
        if task is not None:
            infos = [v for v in infos if v.task == task]

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

    def get(self, name: str, *, verify: bool = False) -> VersionInfo:
        """The version called ``name``; an unknown name is an error listing the known ones.

        ``verify``: also check its weights' sha256 (see :meth:`versions`).
        """
        if not isinstance(name, str) or not _NAME_RE.match(name) or not self._meta(name).is_file():
            raise self._unknown(str(name))
        return self._read(name, verify=verify)

    def tasks(self) -> list[str]:
        """The tasks: ``default``, those of the store's versions and the shipped ones (default first)."""
        found = {_tasks.DEFAULT_TASK, *_tasks.shipped_tasks(), *_tasks.pointer_tasks(self.root)}
        found.update(v.task for v in self.versions())
        return _tasks.ordered(found)

    def _pointer(self, task: str) -> str:
        try:
            return _tasks.pointer_file(self.root, task).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def current(self, task: str = _tasks.DEFAULT_TASK) -> VersionInfo | None:
        """The version Segment uses for ``task``: the one rolled back (or forward) to, else its newest.

        ``None`` when the store holds no usable version of ``task``, or when the
        task's shipped model was made current again (``rollback_to_shipped``).
        A damaged choice falls back (see :meth:`current_choice`, which also says so).
        """
        return self.current_choice(task)[0]

    def current_choice(self, task: str = _tasks.DEFAULT_TASK) -> tuple[VersionInfo | None, str | None]:
        """:meth:`current` and a warning when it is not the version the task's pointer names.

        The chosen version's weights are verified (sha256). When the version
        the pointer names (or, without a pointer, the newest) is damaged, the
        newest intact version of the task is used instead, else the task's
        shipped model (``None``); with neither, the damaged version is
        returned (loading it says why). The warning says which and why.
        """
        name = self._pointer(task)
        if name == _tasks.SHIPPED and task in _tasks.shipped_tasks():
            return None, None
        chosen: VersionInfo | None = None
        if name and name in self:
            info = self._read(name, verify=True)
            if info.task == task:
                chosen = info  # rolled back (or forward) to
        newest_first = [v for v in reversed(self.versions(task)) if v.ok]
        if chosen is None:
            if not newest_first:
                return None, None
            chosen = self._read(newest_first[0].name, verify=True)
            newest_first = newest_first[1:]
        if chosen.ok:
            return chosen, None
        for v in newest_first:
            if v.name != chosen.name:
                v = self._read(v.name, verify=True)
                if v.ok:
                    return v, (f"the current {task} model version {chosen.name} is damaged "
                               f"({chosen.damaged}); using the newest intact version {v.name} "
                               "instead ('llm4seg models rollback NAME' chooses another)")
        if task in _tasks.shipped_tasks():
            return None, (f"the current {task} model version {chosen.name} is damaged "
                          f"({chosen.damaged}); using the shipped {task} model instead")
        return chosen, None

    def current_name(self, task: str = _tasks.DEFAULT_TASK) -> str | None:
        cur = self.current(task)
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
        if info.weights_sha256 and _sha256_cached(info.path) != info.weights_sha256:
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
        task: str = _tasks.DEFAULT_TASK,
        inherit: dict[str, Any] | None = None,
    ) -> VersionInfo:
        """Save ``model``'s trainable/changed tensors as a new version of ``task`` and return it.

        ``inherit``: what the version carries over from its base's checkpoint
        (``labels``: the label table with colours; ``fits``: what images it suits),
        written into its checkpoint's metadata as the base had them.

        ``name`` defaults to the next ``v0001``, ``v0002``...; an existing name
        (or a task's name) is refused. With ``make_current`` (the default) the
        new version becomes the one Segment uses for ``task``; other tasks keep theirs.
        """
        _tasks.validate_task(task)
        if task in self and task not in self.tasks():
            raise LLM4SegError(f"{task!r} is the name of a model version; choose another task name")
        if name is not None:
            self.validate_name(name)
            self._check_not_a_task(name)
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
            raise LLM4SegError(f"model version {name!r} is being saved by another running llm4seg "
                               "process; choose another name")
        weights, meta_path = self._weights(name), self._meta(name)
        created = created or datetime.now(timezone.utc).astimezone().isoformat(timespec="microseconds")
        try:
            record: dict[str, Any] = {
                "store_name": name,
                "task": task,
                "parent": parent,
                "created": created,
                "data": dict(data or {}),
                "metrics": dict(metrics or {}),
                "note": note,
            }
            for key, value in (inherit or {}).items():
                record.setdefault(key, value)
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
                weights_sha256=_sha256_file(weights), llm4seg_version=__version__, task=task,
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

    def check_new_name(self, name: str) -> str:
        """``name`` if a save could take it now, else the error the save would raise.

        For front ends to call before long work (training), so a taken name
        fails at once, not after it.
        """
        self.validate_name(name)
        self._check_not_a_task(name)
        locks.cleanup(self.root)  # a killed save's leftovers go now, whatever follows
        if self._meta(name).exists():
            raise LLM4SegError(
                f"model version {name!r} already exists in {self.root}; choose another name "
                "(versions are never overwritten)"
            )
        if locks.is_locked(self.root, name):
            raise LLM4SegError(f"model version {name!r} is being saved by another running llm4seg "
                               "process; choose another name")
        return name

    def _check_not_a_task(self, name: str) -> None:
        if name in self.tasks():
            raise LLM4SegError(f"{name!r} is the name of a task; choose another version name")

    def set_current(self, name: str) -> None:
        """Make ``name`` the version Segment uses for its task (roll back or forward); deletes nothing.

        Only that task's current changes.
        """
        info = self.get(name, verify=True)
        if info.damaged:
            raise LLM4SegError(f"model version {name} is damaged ({info.damaged}); choose another version")
        atomic_write_text(_tasks.pointer_file(self.root, info.task), name + "\n")

    rollback = set_current

    def rollback_to_shipped(self, task: str) -> None:
        """Make ``task``'s shipped model its current again (Segment uses it); deletes nothing."""
        if task not in _tasks.shipped_tasks():
            raise LLM4SegError(f"task {task!r} has no shipped model (shipped tasks: "
                               f"{', '.join(_tasks.shipped_tasks()) or 'none'})")
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_tasks.pointer_file(self.root, task), _tasks.SHIPPED + "\n")

    def import_file(self, path: str | Path, name: str | None = None,
                    task: str | None = None) -> VersionInfo:
        """Add an existing checkpoint file as a new version (checked by loading it first).

        ``task``: the version's task (default: the one the file's metadata
        records, else the shipped task the file is, else ``default``).
        """
        path = Path(path).expanduser()
        if task is not None:
            _tasks.validate_task(task)
        if name is not None:
            self.validate_name(name)
            if name in self:
                raise LLM4SegError(f"model version {name!r} already exists in {self.root}; choose another name")
        model, ck = load_checkpoint(path, device="cpu")
        meta = ck.meta if isinstance(ck.meta, dict) else {}
        if task is None:
            task = _tasks.task_from_meta(meta) or _tasks.shipped_task_of(path) or _tasks.DEFAULT_TASK
        data = dict(meta.get("data") or {}) if isinstance(meta.get("data"), dict) else {}
        data["imported_from"] = str(path.resolve())
        if meta.get("created"):
            data["originally_created"] = meta["created"]
        if meta.get("store_name"):
            data["original_name"] = meta["store_name"]
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        note = str(meta.get("note") or f"imported from {path.name}")
        return self.save(model, name=name, data=data, metrics=metrics, note=note, task=task)

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
