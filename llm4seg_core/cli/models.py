"""``llm4seg models [list|show|compare|rollback|import]``: the model store's tasks and versions."""

from __future__ import annotations

import argparse
from typing import Any

from llm4seg_core.cli.common import open_store
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.metrics import format_metrics, format_value

COMMAND = "models"
HELP = "the model store: list tasks and versions, show, compare, roll back, import"


def _short_time(created: str) -> str:
    return created[:16].replace("T", " ") if created else "?"


def _task_of(task: str) -> str:
    """How a task is named in messages: nothing for ``default`` (as before tasks), else ``polyp ``."""
    return "" if task == "default" else f"{task} "


PROMPT_MARK = " [prompt model: segments the object you point at; 'llm4seg segment --prompts']"
"""What ``models list`` adds to a prompt task's heading: Segment does not run its models."""


def _list(store: Any) -> int:
    from llm4seg_core.store import shipped_tasks
    from llm4seg_core.store.suggest import prompt_tasks

    versions = store.versions(verify=True)  # sha256 of every weights file: DAMAGED when changed
    shipped = shipped_tasks()
    prompt = set(prompt_tasks(store))

    def prompt_mark(task: str) -> str:
        return PROMPT_MARK if task in prompt else ""

    print(f"model store: {store.root}")
    if not versions:
        print("no model versions yet (train or fine-tune a model, or 'llm4seg models import FILE')")
        for task, path in shipped.items():
            print(f"task {task}: shipped ({path}){prompt_mark(task)}")
        return 0
    header = ("", "name", "created", "parent", "LLM", "metrics")
    lines: list[str | tuple[str, ...]] = [header]  # a task's heading, then its versions' rows
    warnings = []
    for task in store.tasks():
        mine = [v for v in versions if v.task == task]
        cur, warning = store.current_choice(task)
        if warning:
            warnings.append(warning)
        if cur is not None:
            state = f"current {cur.name}"
        elif task in shipped:
            state = f"current shipped ({shipped[task]})" if mine else f"shipped ({shipped[task]})"
        else:
            state = "no usable version" if mine else "no versions, nothing shipped (untrained)"
        lines.append(f"task {task}: {state}{prompt_mark(task)}")
        for v in mine:
            mark = "*" if cur is not None and v.name == cur.name else ""
            info = f"DAMAGED: {v.damaged}" if v.damaged else (format_metrics(v.metrics, limit=3) or "-")
            lines.append((mark, v.name, _short_time(v.created), v.parent or "-", v.llm, info))
    rows = [r for r in lines if isinstance(r, tuple)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in lines:
        if isinstance(r, str):
            print(r)
        else:
            print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    print("* = current (used by Segment for its task, by --prompts for a prompt task; change it "
          "with 'llm4seg models rollback NAME', or 'rollback TASK' for the task's shipped model)")
    for w in warnings:
        print(f"WARNING: {w}")
    return 0


def _show(store: Any, name: str) -> int:
    v = store.get(name, verify=True)
    cur = store.current(v.task)
    print(f"model store: {store.root}")
    print(f"name:     {v.name}{'  (current)' if cur is not None and cur.name == v.name else ''}")
    print(f"task:     {v.task}")
    if v.damaged:
        print(f"DAMAGED:  {v.damaged}")
    print(f"weights:  {v.path} ({v.n_tensors} tensors, {v.size:,} bytes)")
    print(f"metadata: {v.json_path}")
    print(f"created:  {v.created or '?'}")
    print(f"parent:   {v.parent or '-'}")
    print(f"LLM:      {v.llm} (weights sha256 {v.llm_sha256 or '-'})")
    if v.note:
        print(f"note:     {v.note}")
    print("metrics:" + ("" if v.metrics else " -"))
    for k, val in v.metrics.items():
        print(f"  {k}: {format_value(val)}")
    print("data:" + ("" if v.data else " -"))
    for k, val in v.data.items():
        print(f"  {k}: {val}")
    if v.spec is not None:
        print(f"spec:     {v.spec.to_json()}")
    return 0


def _compare(store: Any, a: str, b: str) -> int:
    c = store.compare(a, b)
    print(f"model store: {store.root}")
    print(f"compare {c['a']} -> {c['b']}")
    print(f"  created: {_short_time(c['created'][0])} -> {_short_time(c['created'][1])}")
    print(f"  parent:  {c['parent'][0] or '-'} / {c['parent'][1] or '-'}")
    if c["metrics"]:
        w = max(len(k) for k in c["metrics"])
        print("metrics:")
        print(f"  {'':{w}}  {c['a']:>10}  {c['b']:>10}")
        for k, (x, y) in c["metrics"].items():
            delta = ""
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                delta = f"  ({y - x:+.4f})"
            print(f"  {k:{w}}  {format_value(x):>10}  {format_value(y):>10}{delta}")
    else:
        print("metrics:  none recorded")
    if c["spec"]:
        print("spec differences:")
        for k, (x, y) in c["spec"].items():
            print(f"  {k}: {x} -> {y}")
    else:
        print("spec: the same")
    llm = c["llm"]
    print(f"LLM layer: {'the same' if llm['same'] else 'DIFFERENT'} ({llm['a']} / {llm['b']})")
    wt = c["weights"]
    print(
        f"weights: {wt['common']} tensors in both ({wt['changed']} changed, {wt['unchanged']} "
        f"unchanged); relative change overall {wt['overall_rel_change']:.4g}, mean "
        f"{wt['mean_rel_change']:.4g}, max {wt['max_rel_change']:.4g}"
    )
    for label, key in (("only in " + c["a"], "only_a"), ("only in " + c["b"], "only_b"),
                       ("other shape", "shape_differs")):
        if wt[key]:
            print(f"  {label}: {len(wt[key])} tensors")
    if wt["top"]:
        print("  largest changes:")
        for k, r in wt["top"][:5]:
            print(f"    {r:.4g}  {k}")
    return 0


def _rollback(store: Any, name: str) -> int:
    """``rollback VERSION``: that version becomes its task's current; ``rollback TASK``: the shipped one."""
    from llm4seg_core.store import shipped_tasks

    if name not in store and name in shipped_tasks():
        task, label = name, "the shipped model"
        before = store.current(task)
        store.rollback_to_shipped(task)
    else:
        task = store.get(name).task  # an unknown name: the error lists the versions
        before, label = store.current(task), name
        store.set_current(name)
    was = before.name if before else ("the shipped model" if task in shipped_tasks() else "none")
    print(f"model store: {store.root}")
    print(f"current {_task_of(task)}model: {label} (was {was}); no version was deleted")
    return 0


def run(args: argparse.Namespace) -> int:
    store = open_store(args)
    action = getattr(args, "action", None) or "list"
    if action == "list":
        return _list(store)
    if action == "show":
        return _show(store, args.name)
    if action == "compare":
        return _compare(store, args.a, args.b)
    if action == "rollback":
        return _rollback(store, args.name)
    if action == "import":
        v = store.import_file(args.file, name=args.name, task=args.task)
        print(f"model store: {store.root}")
        print(f"imported {args.file} as {v.name} ({v.llm}); it is now the current {_task_of(v.task)}model")
        return 0
    raise LLM4SegError(f"unknown models action {action!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", help="model store folder (default: the user data folder, "
                   "or $LLM4SEG_HOME/models)")
    p.set_defaults(action=None)
    acts = p.add_subparsers(dest="action")

    def act(name: str, help: str) -> argparse.ArgumentParser:
        a = acts.add_parser(name, help=help)
        a.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS, help="model store folder")
        return a

    act("list", "list the tasks and their versions (the default)")
    a = act("show", "all metadata of one version")
    a.add_argument("name")
    a = act("compare", "two versions side by side: metrics, spec, weight changes")
    a.add_argument("a")
    a.add_argument("b")
    a = act("rollback", "make a version the current one of its task (used by Segment), or with a "
            "task name make that task's shipped model current again; deletes nothing")
    a.add_argument("name", help="a version, or a task with a shipped model")
    a = act("import", "add a checkpoint file to the store as a new version")
    a.add_argument("file")
    a.add_argument("--name", help="version name (default: the next v0001, v0002, ...)")
    a.add_argument("--task", help="the version's task (default: the one the file records, else "
                   "'default')")
