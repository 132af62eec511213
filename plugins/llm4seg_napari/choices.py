"""What the model and device pickers offer, without Qt.

:func:`model_choices` lists the model store's tasks, each with its versions
(and the default and untrained specs): what Segment can run, so prompt models
(task ``prompt``: they segment the object a person points at, and Segment
refuses them) are left out; :func:`prompt_model_choices` lists those, for a
Click tool's picker. :func:`device_choices` lists the places the model can
run. The widget shows them in its combo boxes, the app in its menus; both
read them from :class:`~llm4seg_napari.state.WidgetState`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm4seg_core.metrics import format_metrics
from llm4seg_core.store import DEFAULT_TASK, ModelStore, VersionInfo, default_checkpoint, shipped_tasks
from llm4seg_core.store.suggest import PROMPT_TASK, prompt_tasks

__all__ = ["UNTRAINED_CHOICES", "UNTRAINED_PROMPT_CHOICES", "Choice", "auto_device_text",
           "device_choices", "model_choices", "prompt_model_choices", "task_arg"]

#: Untrained specs offered in the model picker: (text, spec argument).
UNTRAINED_CHOICES: tuple[tuple[str, str], ...] = (
    ("untrained LLM4Seg (SmolLM2 layer)", "llm4seg"),
    ("untrained CMUNeXt (no LLM layer)", "cmunext"),
)

#: Untrained prompt model specs offered in a prompt model picker: (text, spec argument).
UNTRAINED_PROMPT_CHOICES: tuple[tuple[str, str], ...] = (
    ("untrained prompt LLM4Seg (SmolLM2 layer)", "prompt-llm4seg"),
    ("untrained prompt CMUNeXt (no LLM layer)", "prompt-cmunext"),
)


@dataclass(frozen=True)
class Choice:
    """One entry of a picker: the argument it stands for, the text shown, its tooltip."""

    arg: str | None  # a model argument (None: the default model) or a device argument
    text: str
    tip: str = ""
    enabled: bool = True


def task_arg(task: str) -> str | None:
    """The model picker's argument for ``task``'s entry (``None``: the default model)."""
    return None if task == DEFAULT_TASK else task


def _version_choice(v: VersionInfo, current: str | None) -> Choice:
    bits = [f"{v.task}: {v.name}"]
    if v.name == current:
        bits.append("(current)")
    if v.damaged:
        bits.append("(damaged)")
    else:
        text = format_metrics(v.metrics, 2, for_display=True)
        if text:
            bits.append("· " + text)
    tip = [f"model version {v.name} of task {v.task}", f"LLM layer: {v.llm}", f"created {v.created}"]
    if v.parent:
        tip.append(f"fine-tuned from {v.parent}")
    if v.note:
        tip.append(v.note)
    if v.damaged:
        tip.append(f"cannot be used: {v.damaged}")
    return Choice(v.name, " ".join(bits), "\n".join(tip), enabled=v.ok)


def _task_choice(task: str, current: VersionInfo | None, shipped: dict) -> Choice:
    """A task's entry (its argument: the task name): its current version, else its shipped model."""
    if current is not None:
        return Choice(task, f"{task}: current version ({current.name})",
                      f"task {task}: the model store's current {task} version")
    if task in shipped:
        return Choice(task, f"{task}: shipped", f"task {task}: the shipped model {shipped[task]}")
    return Choice(task, f"{task}: no usable version", f"task {task}: every version is damaged",
                  enabled=False)


def _is_prompt_version(v: VersionInfo) -> bool:
    return v.spec is not None and v.spec.is_prompt_model


def model_choices(store: ModelStore) -> list[Choice]:
    """The Segment model picker's entries, grouped by task, then the untrained specs.

    Task ``default`` first: its entry (argument ``None``, the default model)
    and its versions (newest first); then each other task: its entry
    (argument: the task name) and its versions. Prompt models are left out
    (:func:`~llm4seg_core.store.suggest.prompt_tasks`, and any prompt model
    version of another task): Segment refuses them.
    """
    current = store.current()
    if current is not None:
        default = Choice(None, f"default: current version ({current.name})",
                         "the model store's current version")
    elif default_checkpoint() is not None:
        default = Choice(None, "default: shipped model", str(default_checkpoint()))
    else:
        default = Choice(None, "default: untrained LLM4Seg (no trained model yet)",
                         "no model version and no shipped checkpoint: fine-tune one first")
    versions = store.versions()
    shipped = shipped_tasks()
    out = [default]
    prompt = set(prompt_tasks(store)) - {DEFAULT_TASK}
    for task in store.tasks():
        if task in prompt:
            continue
        cur = current if task == DEFAULT_TASK else store.current(task)
        if task != DEFAULT_TASK:
            out.append(_task_choice(task, cur, shipped))
        out += [_version_choice(v, cur.name if cur else None)
                for v in reversed(versions) if v.task == task and not _is_prompt_version(v)]
    untrained = [Choice(arg, text, f"model spec {arg!r}, random weights")
                 for text, arg in UNTRAINED_CHOICES]
    return [*out, *untrained]


def prompt_model_choices(store: ModelStore) -> list[Choice]:
    """A prompt model picker's entries (a Click tool's): each prompt task, its entry
    (argument: the task name) and its versions, newest first; then the untrained prompt specs.

    Task ``prompt`` is always listed, first; while it has no model its entry is disabled.
    """
    versions = store.versions()
    shipped = shipped_tasks()
    tasks = [PROMPT_TASK, *(t for t in prompt_tasks(store) if t != PROMPT_TASK)]
    out = []
    for task in tasks:
        cur = store.current(task)
        mine = [v for v in reversed(versions) if v.task == task]
        if cur is None and task not in shipped and not mine:
            out.append(Choice(task, f"{task}: no prompt model yet",
                              "train one (scripts/train_prompt_model.py) and import it with "
                              "'llm4seg models import FILE --task prompt'", enabled=False))
            continue
        out.append(_task_choice(task, cur, shipped))
        out += [_version_choice(v, cur.name if cur else None) for v in mine]
    untrained = [Choice(arg, text, f"model spec {arg!r}, random weights")
                 for text, arg in UNTRAINED_PROMPT_CHOICES]
    return [*out, *untrained]


def auto_device_text() -> str:
    """What ``auto`` resolves to here, e.g. 'cpu, 2 threads' or 'cuda:0, NVIDIA H100'."""
    from llm4seg_core.device import describe_device, resolve_device

    try:
        text = describe_device(resolve_device("auto"))
    except Exception:  # noqa: BLE001 - a broken driver must not break the picker
        return "cpu"
    return text.replace(" (", ", ").rstrip(")")


def device_choices() -> list[Choice]:
    """auto (showing what it resolves to), cpu, and the GPUs; absent ones listed but disabled."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    out = [Choice("auto", f"auto ({auto_device_text()})", "CUDA GPU, else Apple MPS, else CPU"),
           Choice("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append(Choice(f"cuda:{i}", f"cuda:{i} ({torch.cuda.get_device_name(i)})"))
    else:
        out.append(Choice("cuda", "cuda (no CUDA GPU here)",
                          f"torch {torch.__version__} sees no CUDA GPU", enabled=False))
    if has_mps:
        out.append(Choice("mps", "mps (Apple GPU)"))
    return out
