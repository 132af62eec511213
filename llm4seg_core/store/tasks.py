"""Tasks in the model store: each shipped model is a task with its own line of versions.

A task is a name such as ``default``, ``polyp`` or ``breast-us``. The
shipped model of task ``T`` is ``<shipped models dir>/T.safetensors`` (+
``T.md``, its card), found through
:func:`llm4seg_core.paths.shipped_models_dirs` (the first folder holding a
task's file wins). Every store version belongs to one task
(:attr:`~llm4seg_core.store.versions.VersionInfo.task`); a fine-tune saves
its version in the task of its base and moves only that task's current.

Current pointers (one small text file per task, each written atomically):
``CURRENT`` for task ``default`` (the file llm4seg always had, so stores
written before tasks read the same), ``CURRENT.<task>`` for every other task.
A pointer holds a version name of that task, or ``shipped``: the task's
shipped model is its current again (``llm4seg models rollback TASK``).

Task names: 1-64 lowercase letters, digits, ``-`` or ``_`` (starting and
ending with a letter or digit), never a model spec preset (``llm4seg``,
``cmunext``...), ``current``, ``shipped``, or an automatic version name
(``v0001``), so a ``--model`` text is never two things at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from llm4seg_core.errors import LLM4SegError

DEFAULT_TASK = "default"
"""The task of the shipped default model, and of every version saved before tasks existed."""

SHIPPED = "shipped"
"""What a current pointer holds when the task's shipped model is its current."""

POINTER_PREFIX = "CURRENT"

_TASK_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
_AUTO_VERSION_RE = re.compile(r"^v\d+$")
_RESERVED = {"current", SHIPPED}


def task_problem(name: object) -> str | None:
    """Why ``name`` cannot name a task; ``None`` when it can."""
    from llm4seg_core.model.spec import PRESETS

    if not isinstance(name, str) or not _TASK_RE.match(name):
        return ("use 1-64 lowercase letters, digits, '-' or '_', starting and ending with a "
                "letter or digit")
    if name in PRESETS:
        return "it is the name of a model spec preset"
    if name in _RESERVED or _AUTO_VERSION_RE.match(name):
        return "it is a reserved word or looks like an automatic version name"
    return None


def is_task_name(name: object) -> bool:
    return task_problem(name) is None


def validate_task(name: object) -> str:
    """``name`` if it can name a task, else a :class:`LLM4SegError` saying why."""
    problem = task_problem(name)
    if problem:
        raise LLM4SegError(f"bad task name {name!r}: {problem}")
    return str(name)


def shipped_tasks() -> dict[str, Path]:
    """The tasks shipped with the package: ``{task: its .safetensors file}``, sorted by name.

    Files whose stem is not a valid task name are not tasks (and are skipped).
    """
    from llm4seg_core import paths

    found: dict[str, Path] = {}
    for folder in paths.shipped_models_dirs():
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.safetensors")):
            if f.is_file() and is_task_name(f.stem) and f.stem not in found:
                found[f.stem] = f
    return dict(sorted(found.items()))


def shipped_task_of(path: str | Path) -> str | None:
    """The task whose shipped file ``path`` is, else ``None``."""
    try:
        target = Path(path).expanduser().resolve()
    except OSError:
        return None
    for task, f in shipped_tasks().items():
        if f.resolve() == target:
            return task
    return None


def task_from_meta(meta: object) -> str | None:
    """The valid task a checkpoint's metadata records, else ``None``."""
    task = meta.get("task") if isinstance(meta, dict) else None
    return task if is_task_name(task) else None


def pointer_file(root: Path, task: str) -> Path:
    """The current pointer of ``task`` in the store folder ``root``."""
    return root / (POINTER_PREFIX if task == DEFAULT_TASK else f"{POINTER_PREFIX}.{task}")


def pointer_tasks(root: Path) -> list[str]:
    """The tasks that have a current pointer in ``root``."""
    if not root.is_dir():
        return []
    out = [DEFAULT_TASK] if (root / POINTER_PREFIX).is_file() else []
    for p in root.glob(f"{POINTER_PREFIX}.*"):
        task = p.name[len(POINTER_PREFIX) + 1:]
        if is_task_name(task):
            out.append(task)
    return out


def ordered(tasks: set[str] | list[str]) -> list[str]:
    """``default`` first, then the others by name."""
    rest = sorted(t for t in set(tasks) if t != DEFAULT_TASK)
    return [DEFAULT_TASK, *rest] if DEFAULT_TASK in set(tasks) else rest
