"""Model resolution: what a ``--model`` / ``--base`` argument stands for; the CLI and the GUIs all use it.

A text is, in this order (the first that fits wins):

1. a checkpoint file: a :class:`~pathlib.Path`, or a text that looks like a
   path (a checkpoint suffix, a ``/``, a leading ``~``); it must exist;
2. ``current``: the default task's current version;
3. a version in the model store;
4. a task (:mod:`~llm4seg_core.store.tasks`; ``default`` included): that
   task's current version in the store, else its shipped file (for
   ``default``, else the untrained default spec); nothing at all (``None``
   or an empty text) means task ``default``;
5. a model spec: a preset, ``key=value`` overrides or a JSON object (an
   untrained model; task names are never preset names);
6. a bare name that is an existing file (e.g. ``model.weights`` in the
   working directory).

The task of the result (:attr:`ResolvedModel.task`, where a fine-tune from
it saves its version): a version's own task; the task named; for a file, the
task its metadata records, else the shipped task it is the file of, else
``default``; ``default`` for a spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import LLM4SegNet
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.store import tasks as _tasks
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
    ``task``: the task it belongs to (a fine-tune from it saves there).
    ``warning``: set when this is not what was asked for (the task's current
    version was damaged and another is used); front ends show it.
    """

    model: LLM4SegNet | None
    spec: ModelSpec
    name: str
    source: str
    trained: bool
    version: VersionInfo | None = None
    path: Path | None = None
    task: str = _tasks.DEFAULT_TASK
    warning: str | None = None


def _looks_like_path(text: str) -> bool:
    if text.startswith("{") or "=" in text:
        return False
    return text.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in text or os.sep in text or text.startswith("~")


def _shipped_file(task: str) -> Path | None:
    """The shipped file of ``task`` (``default``: :func:`default_checkpoint`)."""
    if task == _tasks.DEFAULT_TASK:
        return default_checkpoint()
    return _tasks.shipped_tasks().get(task)


def _file_task(meta: object, path: Path) -> str:
    return _tasks.task_from_meta(meta) or _tasks.shipped_task_of(path) or _tasks.DEFAULT_TASK


def resolve_model(
    arg: str | Path | None = None,
    store: ModelStore | None = None,
    *,
    load: bool = True,
    device: torch.device | str = "cpu",
) -> ResolvedModel:
    """The model ``arg`` names, loaded (or only its spec with ``load=False``).

    ``arg`` is a checkpoint file, ``current``, a version in the model store, a
    task name (its current version, else its shipped model), or a spec
    (preset name and/or ``key=value`` overrides, or a JSON object; an
    untrained model); the module docstring gives the order. ``None`` means
    task ``default``: the store's current default version if there is one,
    else the shipped default checkpoint, else the untrained default spec.
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
        return ResolvedModel(model, spec, info.name, f"model version {info.name} ({info.path})", True,
                             info, info.path, info.task)

    def from_file(path: Path, label: str, task: str | None = None) -> ResolvedModel:
        if load:
            model, ck = load_checkpoint(path, device=device)
            spec = model.spec
        else:
            model, ck = None, read_checkpoint_info(path)
            spec = ck.spec
        return ResolvedModel(model, spec, path.name, f"{label} {path}", True, None, path,
                             task or _file_task(ck.meta, path))

    def from_spec(spec: ModelSpec, label: str, task: str = _tasks.DEFAULT_TASK) -> ResolvedModel:
        model = build_model(spec, device=device) if load else None
        return ResolvedModel(model, spec, "untrained model", label, False, task=task)

    def from_task(task: str) -> ResolvedModel:
        cur, warning = store.current_choice(task)
        if cur is not None:
            r = from_version(cur)
            r.warning = warning
            return r
        shipped = _shipped_file(task)
        if shipped is not None:
            label = "shipped default checkpoint" if task == _tasks.DEFAULT_TASK else f"shipped {task} model"
            r = from_file(shipped, label, task)
            r.warning = warning
            return r
        if task == _tasks.DEFAULT_TASK:
            return from_spec(ModelSpec(), "untrained default spec")
        raise LLM4SegError(f"task {task!r} has no usable model version in the model store {store.root} "
                           "and no shipped model")

    if isinstance(arg, Path):
        return from_file(arg.expanduser(), "checkpoint")
    text = (arg or "").strip()
    if not text:
        return from_task(_tasks.DEFAULT_TASK)
    if text.lower() == "current":
        cur, warning = store.current_choice()
        if cur is None:
            what = "no usable model version" if store.versions() else "no model version yet"
            raise LLM4SegError(f"the model store {store.root} holds {what}; train one first")
        r = from_version(cur)
        r.warning = warning
        return r
    path = Path(text).expanduser()
    if _looks_like_path(text):
        return from_file(path, "checkpoint")
    if text in store:  # a version name never looks like a path or a spec, and is never a preset
        return from_version(store.get(text))
    if _tasks.is_task_name(text) and text in store.tasks():  # never a preset either
        return from_task(text)
    head = text.split(",", 1)[0].strip()
    if text.startswith("{") or "=" in head or head in PRESETS:
        return from_spec(parse_spec(text), f"untrained spec {text}")
    if path.is_file():
        return from_file(path, "checkpoint")
    names = [v.name for v in store.versions()]
    raise LLM4SegError(
        f"unknown model {text!r}: not a checkpoint file, not a version in the model store {store.root} "
        f"(versions: {', '.join(names) if names else 'none yet'}), not a task "
        f"({', '.join(store.tasks())}), not a preset ({', '.join(PRESETS)}), not key=value spec overrides"
    )
