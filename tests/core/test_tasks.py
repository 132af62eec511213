"""Tasks in the model store: a line of versions per task, per-task current, resolution, shipped tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm4seg_core.cli import main
from llm4seg_core.datasets import CorrectionSet
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.loop import finetune_corrections
from llm4seg_core.model import ModelSpec, build_model
from llm4seg_core.store import ModelStore, resolve_model, save_checkpoint, shipped_tasks
from llm4seg_core.store.tasks import shipped_task_of, validate_task
from llm4seg_core.training import FinetuneConfig

from .conftest import make_ct

TINY = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32))
FAST = FinetuneConfig(steps=2, batch_size=1, crop_size=16, device="cpu")


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Two shipped folders: default + polyp (+ files that are no task) first, then breast-us."""
    first, second = tmp_path / "ship1", tmp_path / "ship2"
    for folder in (first, second):
        folder.mkdir()
    save_checkpoint(build_model(TINY, seed=0), first / "default.safetensors")
    save_checkpoint(build_model(TINY, seed=1), first / "polyp.safetensors")
    save_checkpoint(build_model(TINY, seed=2), second / "polyp.safetensors")  # hidden by the first
    save_checkpoint(build_model(TINY, seed=3), second / "breast-us.safetensors",
                    {"task": "breast-us", "labels": [{"value": 1, "name": "lesion", "color": "#123456"}],
                     "fits": {"kind": "2d", "modality": "US"}})
    for junk in ("Bad Name.safetensors", "cmunext.safetensors", "v0007.safetensors"):
        (first / junk).write_bytes(b"not a task")  # invalid or clashing names: not tasks
    (first / "polyp.md").write_text("# polyp\n")
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [first, second])
    return first, second


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "store")


def _corrections() -> CorrectionSet:
    vol = make_ct(n=4, size=32)
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[[1, 3], 12:20, 10:18] = 1
    return CorrectionSet(vol, labels, [1, 3])


def test_shipped_tasks_are_found(shipped):
    first, second = shipped
    found = shipped_tasks()
    assert found == {"breast-us": second / "breast-us.safetensors",
                     "default": first / "default.safetensors",
                     "polyp": first / "polyp.safetensors"}
    assert shipped_task_of(second / "breast-us.safetensors") == "breast-us"
    assert shipped_task_of(second / "polyp.safetensors") is None  # hidden by the first folder's


def test_task_names_are_validated():
    for good in ("default", "polyp", "breast-us", "fetal-head-us", "hn-ct-oar", "hippocampus-mr", "t2"):
        assert validate_task(good) == good
    for bad in ("", "Polyp", "a b", "-x", "x-", "a.b", "cmunext", "llm4seg", "current", "shipped",
                "v0001", "a" * 65, None):
        with pytest.raises(LLM4SegError, match="bad task name"):
            validate_task(bad)


def test_lines_of_versions_per_task(shipped, store):
    assert store.tasks() == ["default", "breast-us", "polyp"]  # shipped ones, default first
    d1 = store.save(build_model(TINY, seed=4))
    p1 = store.save(build_model(TINY, seed=5), task="polyp")
    p2 = store.save(build_model(TINY, seed=6), task="polyp", parent=p1.name)
    d2 = store.save(build_model(TINY, seed=7))
    n1 = store.save(build_model(TINY, seed=8), task="new-task")
    assert [v.task for v in (d1, p1, p2, d2, n1)] == ["default", "polyp", "polyp", "default", "new-task"]
    assert [v.name for v in store.versions("polyp")] == [p1.name, p2.name]
    assert [v.name for v in store.versions("default")] == [d1.name, d2.name]
    assert len(store.versions()) == 5
    assert store.tasks() == ["default", "breast-us", "new-task", "polyp"]
    # each task its own current; saving in one never moves another's
    assert (store.current().name, store.current("polyp").name) == (d2.name, p2.name)
    assert store.current("breast-us") is None and store.current("new-task").name == n1.name
    assert json.loads(p1.json_path.read_text())["task"] == "polyp"
    store.set_current(p1.name)  # rollback within polyp
    assert store.current("polyp").name == p1.name and store.current().name == d2.name
    store.rollback(d1.name)
    assert store.current().name == d1.name and store.current("polyp").name == p1.name
    assert (store.root / "CURRENT").read_text().strip() == d1.name
    assert (store.root / "CURRENT.polyp").read_text().strip() == p1.name
    # back to the shipped model of a task
    store.rollback_to_shipped("polyp")
    assert store.current("polyp") is None and store.current().name == d1.name
    assert resolve_model("polyp", store, load=False).path == shipped[0] / "polyp.safetensors"
    with pytest.raises(LLM4SegError, match="no shipped model"):
        store.rollback_to_shipped("new-task")
    # names never clash: a version is not called after a task, a task not after a version
    with pytest.raises(LLM4SegError, match="name of a task"):
        store.save(build_model(TINY), name="polyp")
    store.save(build_model(TINY), name="mine")
    with pytest.raises(LLM4SegError, match="name of a model version"):
        store.save(build_model(TINY), task="mine")
    with pytest.raises(LLM4SegError, match="bad task name"):
        store.save(build_model(TINY), task="cmunext")


def test_finetune_on_one_task_leaves_the_others(shipped, store):
    base_d = store.save(build_model(TINY, seed=4))
    base_p = store.save(build_model(TINY, seed=5), task="polyp")
    o = finetune_corrections("polyp", _corrections(), FAST, store=store)
    assert o.task == "polyp" and o.version.task == "polyp" and o.version.parent == base_p.name
    assert store.current("polyp").name == o.version.name
    assert store.current().name == base_d.name  # default untouched
    # a fine-tune from the shipped model of a task without store versions joins that task
    o2 = finetune_corrections("breast-us", _corrections(), FAST, store=store)
    assert o2.version.task == "breast-us" and o2.version.parent == "breast-us.safetensors"
    # it keeps the shipped model's label colours and what it fits, for the pickers and layers
    from llm4seg_core.store import read_checkpoint_info

    meta = read_checkpoint_info(o2.version.path).meta
    assert meta["labels"] == [{"value": 1, "name": "lesion", "color": "#123456"}]
    assert meta["fits"] == {"kind": "2d", "modality": "US"}
    from llm4seg_core.inference import Segmenter

    assert [lab.color for lab in Segmenter.load(o2.version.name, store=store, device="cpu").labels] \
        == ["#123456"]
    assert store.current("breast-us").name == o2.version.name
    assert store.current("polyp").name == o.version.name and store.current().name == base_d.name
    # several in a row on different tasks: each started from its own task's current
    o3 = finetune_corrections(None, _corrections(), FAST, store=store)  # None: task default
    o4 = finetune_corrections("polyp", _corrections(), FAST, store=store)
    assert o3.version.task == "default" and o3.version.parent == base_d.name
    assert o4.version.parent == o.version.name
    assert [v.name for v in store.versions("polyp")] == [base_p.name, o.version.name, o4.version.name]
    # from a version: its task
    o5 = finetune_corrections(o2.version.name, _corrections(), FAST, store=store)
    assert o5.version.task == "breast-us" and store.current().name == o3.version.name


def test_names_resolve(shipped, store, tmp_path):
    first, second = shipped
    # default: nothing in the store -> the shipped default; a task with nothing -> its shipped file
    for arg in (None, "", "default"):
        r = resolve_model(arg, store, load=False)
        assert r.trained and r.path == first / "default.safetensors" and r.task == "default", arg
    r = resolve_model("polyp", store, load=False)
    assert r.path == first / "polyp.safetensors" and r.task == "polyp" and r.version is None
    d = store.save(build_model(TINY, seed=4))
    p = store.save(build_model(TINY, seed=5), task="polyp")
    for arg, name, task in ((None, d.name, "default"), ("default", d.name, "default"),
                            ("current", d.name, "default"), ("polyp", p.name, "polyp"),
                            (p.name, p.name, "polyp"), (d.name, d.name, "default")):
        r = resolve_model(arg, store, load=False)
        assert (r.name, r.task) == (name, task) and r.version is not None, arg
    # files: the task their metadata records, else the shipped task they are, else default
    tagged = save_checkpoint(build_model(TINY), tmp_path / "tagged.safetensors", {"task": "polyp"})
    plain = save_checkpoint(build_model(TINY), tmp_path / "plain.safetensors")
    assert resolve_model(str(tagged), store, load=False).task == "polyp"
    assert resolve_model(plain, store, load=False).task == "default"
    assert resolve_model(str(first / "polyp.safetensors"), store, load=False).task == "polyp"
    assert resolve_model(str(second / "breast-us.safetensors"), store).model is not None
    # specs: untrained, task default
    r = resolve_model("cmunext,image_size=32,dims=8:8:16:16:32", store, load=False)
    assert not r.trained and r.task == "default"
    with pytest.raises(LLM4SegError, match=r"unknown model 'polp'.*not a task \(default, breast-us, polyp\)"):
        resolve_model("polp", store)
    # a task whose only version is damaged and nothing shipped: said so, nothing loaded
    n = store.save(build_model(TINY), task="mine")
    n.path.write_bytes(b"broken")
    with pytest.raises(LLM4SegError, match="damaged"):
        resolve_model("mine", store, load=False)
    (store.root / "CURRENT.mine").unlink()
    with pytest.raises(LLM4SegError, match="task 'mine' has no usable model version"):
        resolve_model("mine", store, load=False)


def test_old_store_without_tasks_reads_as_default(shipped, store):
    a = store.save(build_model(TINY, seed=4))
    b = store.save(build_model(TINY, seed=5))
    for v in (a, b):  # what llm4seg wrote before tasks: no "task" in the record
        meta = json.loads(v.json_path.read_text())
        del meta["task"]
        v.json_path.write_text(json.dumps(meta))
    (store.root / "CURRENT").write_text(a.name + "\n")
    assert all(v.task == "default" and v.ok for v in store.versions())
    assert store.current().name == a.name and store.current("polyp") is None
    assert store.tasks() == ["default", "breast-us", "polyp"]
    assert resolve_model(None, store, load=False).name == a.name
    store.set_current(b.name)
    assert (store.root / "CURRENT").read_text().strip() == b.name
    assert [p.name for p in store.root.glob("CURRENT*")] == ["CURRENT"]
    # a record naming a bad task is listed as damaged, never loaded
    meta = json.loads(a.json_path.read_text())
    meta["task"] = "Bad Task"
    a.json_path.write_text(json.dumps(meta))
    bad = store.get(a.name)
    assert bad.damaged and "bad task" in bad.damaged


def test_cli_lists_tasks_and_rolls_back_per_task(shipped, store, tmp_path, capsys):
    s = ["--store", str(store.root)]
    assert main(["models", *s]) == 0
    text = capsys.readouterr().out
    assert "no model versions yet" in text and "task polyp: shipped (" in text
    d = store.save(build_model(TINY, seed=4), metrics={"val_dice": 0.5})
    p1 = store.save(build_model(TINY, seed=5), task="polyp")
    p2 = store.save(build_model(TINY, seed=6), task="polyp", parent=p1.name)
    capsys.readouterr()
    assert main(["models", *s]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = {line: i for i, line in enumerate(lines)}
    assert at["task default: current v0001"] < at["task breast-us: shipped (" + str(
        shipped[1] / "breast-us.safetensors") + ")"] < at["task polyp: current v0003"]
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line
            for line in lines[2:-1] if not line.startswith("task ")}
    assert rows[d.name].startswith("*") and "val_dice=0.5000" in rows[d.name]
    assert rows[p2.name].startswith("*") and not rows[p1.name].startswith("*")
    assert main(["models", "rollback", p1.name, *s]) == 0
    assert f"current polyp model: {p1.name} (was {p2.name})" in capsys.readouterr().out
    assert store.current("polyp").name == p1.name and store.current().name == d.name
    assert main(["models", "rollback", "polyp", *s]) == 0
    assert f"current polyp model: the shipped model (was {p1.name})" in capsys.readouterr().out
    assert store.current("polyp") is None
    assert main(["models", *s]) == 0
    assert "task polyp: current shipped (" in capsys.readouterr().out
    path = save_checkpoint(build_model(TINY), tmp_path / "x.safetensors")
    assert main(["models", "import", str(path), "--task", "breast-us", *s]) == 0
    assert "now the current breast-us model" in capsys.readouterr().out
    assert store.current("breast-us").name == "v0004" and store.current().name == d.name
    assert main(["models", "show", "v0004", *s]) == 0
    assert "task:     breast-us" in capsys.readouterr().out
    for argv in (["models", "rollback", "nope"], ["models", "import", str(path), "--task", "Bad"]):
        capsys.readouterr()
        assert main([*argv, *s]) == 2, argv


def test_model_picker_groups_by_task(shipped, store):
    from llm4seg_napari.choices import model_choices

    d = store.save(build_model(TINY, seed=4), metrics={"val_dice": 0.7})
    p = store.save(build_model(TINY, seed=5), task="polyp")
    choices = model_choices(store)
    args = [c.arg for c in choices]
    assert args[:2] == [None, d.name] and choices[0].text == f"default: current version ({d.name})"
    assert choices[1].text.startswith(f"default: {d.name} (current)")
    i = args.index("breast-us")
    assert choices[i].text == "breast-us: shipped"
    j = args.index("polyp")
    assert choices[j].text == f"polyp: current version ({p.name})"
    assert args[j + 1] == p.name and choices[j + 1].text == f"polyp: {p.name} (current)"
    assert args[-2:] == ["llm4seg", "cmunext"]  # the untrained specs last
