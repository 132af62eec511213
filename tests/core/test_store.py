"""The versioned model store: save/list/load, names, refusals, damage, crashes, rollback, CLI."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from llm4seg_core.store import locks, versions
from llm4seg_core.store import resolve as resolve_module
from llm4seg_core.store import (
    ModelStore,
    resolve_model,
    save_checkpoint,
    store_root,
)
from llm4seg_core.cli import main
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.inference import Segmenter
from llm4seg_core.model import ModelSpec, build_model

from .conftest import make_ct

SPEC = ModelSpec(image_size=64)  # the default SmolLM2 layer, a small grid
TINY = ModelSpec(llm_mode="none", image_size=32, dims=(4, 8, 8, 16, 16))  # no LLM, very small


def nudged(model, seed: int, scale: float = 0.01):
    """``model`` with its trainable weights moved a little (a stand-in for training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def m1():
    return nudged(build_model(SPEC), 1)


@pytest.fixture(scope="module")
def m2():
    return nudged(build_model(SPEC), 2)


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in an empty working directory with its own LLM4SEG_HOME, no shipped default."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("LLM4SEG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(resolve_module, "default_checkpoint", lambda: None)
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [])  # no shipped tasks
    yield cwd
    assert list(cwd.iterdir()) == [], "the store wrote into the working directory"


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "store")


def out(model, x):
    with torch.inference_mode():
        return model(x)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def files(root):
    return sorted(p.name for p in root.iterdir())


# ---- location ---------------------------------------------------------------

def test_store_root_is_the_user_data_folder_or_llm4seg_home(tmp_path, monkeypatch):
    assert store_root() == (tmp_path / "home").resolve() / "models"
    assert ModelStore().root == store_root()
    monkeypatch.delenv("LLM4SEG_HOME")
    import platformdirs

    root = store_root()
    assert root.is_absolute() and root == platformdirs.user_data_path("llm4seg").resolve() / "models"
    assert not ModelStore(tmp_path / "nothing").versions()
    assert not (tmp_path / "nothing").exists()  # reading never creates the folder


# ---- save / list / load -----------------------------------------------------

def test_save_list_load_round_trip(store, m1, x):
    v = store.save(m1, data={"cases": ["lung2"], "slices": np.int64(12)},
                   metrics={"val_dice": np.float32(0.5), "val_iou": 0.25}, note="first")
    assert v.name == "v0001" and v.ok and v.parent is None and v.n_tensors > 0
    assert files(store.root) == ["CURRENT", "v0001.json", "v0001.safetensors"]
    meta = json.loads((store.root / "v0001.json").read_text())  # plain, human-readable JSON
    assert meta["spec"] == SPEC.to_dict() and meta["llm_source"] == "smollm2" and meta["llm_layer"] == 14
    assert meta["llm_sha256"] == m1.llm_source_sha256 and len(meta["llm_sha256"]) == 64
    assert meta["data"] == {"cases": ["lung2"], "slices": 12}
    assert meta["metrics"] == {"val_dice": 0.5, "val_iou": 0.25} and meta["note"] == "first"
    assert meta["size"] == v.path.stat().st_size == v.size
    # only what is trainable or changed: no frozen LLM tensors in the weights
    from safetensors import safe_open

    with safe_open(str(v.path), framework="pt") as f:
        assert not any(".llm." in k for k in f.keys())
    [listed] = store.versions()
    assert listed.name == "v0001" and listed.spec == SPEC and listed.metrics["val_dice"] == 0.5
    loaded, info = store.load("v0001")
    assert info.name == "v0001" and loaded.spec == SPEC
    torch.testing.assert_close(out(loaded, x), out(m1, x), rtol=0, atol=0)


def test_auto_names_parent_order_and_duplicates(store, m1, m2):
    a = store.save(m1)
    b = store.save(m2, parent=a.name, metrics={"val_dice": 0.7})
    c = store.save(m1, name="best-2024.1_a", parent=b.name)
    d = store.save(m2)
    assert [v.name for v in (a, b, c, d)] == ["v0001", "v0002", "best-2024.1_a", "v0003"]
    assert [v.name for v in store.versions()] == ["v0001", "v0002", "best-2024.1_a", "v0003"]
    assert store.get("best-2024.1_a").parent == "v0002"
    before = (store.root / "v0002.safetensors").read_bytes()
    with pytest.raises(LLM4SegError, match="already exists"):
        store.save(m1, name="v0002")
    assert (store.root / "v0002.safetensors").read_bytes() == before  # never overwritten
    for bad in ("../evil", "a b", "", "current", "cmunext", "x.safetensors", "x.pt", ".hidden", "a/b", "a" * 65):
        with pytest.raises(LLM4SegError, match="name"):
            store.save(m1, name=bad)
    assert len(store.versions()) == 4
    with pytest.raises(LLM4SegError, match=r"no model version 'v9'.*v0001, v0002, best-2024.1_a, v0003"):
        store.get("v9")


# ---- refusals ---------------------------------------------------------------

def _rewrite_header(store, name, **changes):
    """Rewrite a version's weights header (and its JSON, so that both agree)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = store.root / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    header.update(changes)
    save_file(load_file(str(path)), str(path), metadata=header)
    meta_path = store.root / f"{name}.json"
    meta = json.loads(meta_path.read_text())
    meta.update({k: v for k, v in changes.items() if k in meta})
    meta["size"] = path.stat().st_size
    meta["weights_sha256"] = versions._sha256_file(path)
    meta_path.write_text(json.dumps(meta))


def test_other_llm_layer_is_refused(store, m1):
    store.save(m1)
    store.save(m1)
    _rewrite_header(store, "v0001", llm_sha256="0" * 64)  # trained with another layer
    assert store.get("v0001").ok  # a consistent version, listed normally...
    with pytest.raises(LLM4SegError, match="v0001.*another LLM layer"):
        store.load("v0001")  # ...but refused for the layer this machine holds
    # a hash changed in the JSON only: metadata and weights disagree -> refused too
    meta = json.loads((store.root / "v0002.json").read_text())
    meta["llm_sha256"] = "1" * 64
    (store.root / "v0002.json").write_text(json.dumps(meta))
    assert not store.get("v0002").ok
    with pytest.raises(LLM4SegError, match="v0002"):
        store.load("v0002")


def test_spec_mismatch_is_refused_saying_which_fields(store, m1):
    v = store.save(m1)
    store.check_compatible(v, SPEC)  # same spec: fine
    with pytest.raises(LLM4SegError, match=r"another model spec: .*image_size 64 in the version, 128 here"):
        store.check_compatible(v, SPEC.with_(image_size=128))
    with pytest.raises(LLM4SegError, match="llm_layer.*llm_source"):
        store.check_compatible("v0001", SPEC.with_(llm_source="meta-llama/Llama-3.2-1B", llm_layer=3))


def test_changed_weights_file_is_refused(store, m1):
    v = store.save(m1)
    data = bytearray(v.path.read_bytes())
    data[-8:] = b"\x00" * 8  # same size, different bytes
    v.path.write_bytes(bytes(data))
    with pytest.raises(LLM4SegError, match="changed after it was saved"):
        store.load("v0001")


# ---- damage and crashes -----------------------------------------------------

def test_damaged_versions_are_listed_not_crashing(store, m1, m2):
    store.save(m1)
    store.save(m2)
    store.save(m2)
    (store.root / "v0002.json").write_text("{ not json")
    w3 = store.root / "v0003.safetensors"
    w3.write_bytes(w3.read_bytes()[:500])  # truncated weights
    vs = {v.name: v for v in store.versions()}
    assert set(vs) == {"v0001", "v0002", "v0003"}
    assert vs["v0001"].ok
    assert "unreadable" in vs["v0002"].damaged and vs["v0002"].spec == SPEC  # spec recovered from weights
    assert "truncated" in vs["v0003"].damaged
    for name in ("v0002", "v0003"):
        with pytest.raises(LLM4SegError, match=f"{name}.*damaged"):
            store.load(name)
        with pytest.raises(LLM4SegError, match="damaged"):
            store.set_current(name)
    # the pointer names v0003 (saved last, damaged): Segment falls back to the newest intact
    # version, saying so
    seg = Segmenter.load(store=store, device="cpu")
    assert seg.name == "v0001" and "v0003 is damaged" in seg.warning and "v0001" in seg.warning
    assert store.current().name == "v0001"
    # rolled back: no warning; without a pointer the newest usable version is current
    store.set_current("v0001")
    assert Segmenter.load(store=store, device="cpu").warning is None
    assert store.current().name == "v0001"
    (store.root / "CURRENT").unlink()
    assert store.current().name == "v0001"
    assert main(["models", "--store", str(store.root)]) == 0


def test_crash_mid_save_leaves_no_broken_version(store, m1, m2, monkeypatch):
    store.save(m1)
    before = files(store.root)

    def boom(*a, **k):
        raise KeyboardInterrupt

    # Ctrl-C while writing the weights
    with monkeypatch.context() as mp:
        mp.setattr("safetensors.torch.save_file", boom)
        with pytest.raises(KeyboardInterrupt):
            store.save(m2, metrics={"val_dice": 0.9})
    assert files(store.root) == before
    # a crash after the weights, while writing the metadata
    real = versions.atomic_write_text

    def json_boom(path, text, **kw):
        if path.suffix == ".json":
            raise OSError("disk full")
        return real(path, text, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(versions, "atomic_write_text", json_boom)
        with pytest.raises(OSError, match="disk full"):
            store.save(m2, name="named")
    assert files(store.root) == before
    assert [v.name for v in store.versions()] == ["v0001"] and store.current().name == "v0001"
    # a hard crash (no cleanup ran): stale temp files, a lock, weights without metadata
    save_checkpoint(m2, store.root / "v0002.safetensors", {"store_name": "v0002"})
    leftovers = [".v0002.json.x1.tmp", ".v0003.safetensors.x2.tmp", ".v0004.lock"]
    for name in leftovers:
        (store.root / name).write_bytes(b"partial")
    old = time.time() - 2 * locks.STALE_S
    for name in [*leftovers, "v0002.safetensors"]:
        os.utime(store.root / name, (old, old))
    assert [v.name for v in store.versions()] == ["v0001"]  # ignored...
    assert store.current().name == "v0001"
    v = store.save(m2)  # ...and cleaned by the next save (so the name v0002 is free again)
    assert v.ok and v.name == "v0002" and v.metrics == {}
    assert files(store.root) == ["CURRENT", "v0001.json", "v0001.safetensors", "v0002.json", "v0002.safetensors"]


# ---- current, rollback, resolution ------------------------------------------

def test_rollback_changes_current_and_segmenter_default(store, m1, m2):
    assert store.current() is None
    seg = Segmenter.load(store=store, device="cpu")
    assert not seg.trained  # empty store, no shipped default: the untrained default spec
    store.save(m1)
    store.save(m2)
    assert store.current().name == "v0002"
    seg = Segmenter.load(store=store, device="cpu")
    assert seg.trained and seg.name == "v0002"
    assert same_weights(seg.model, m2) and not same_weights(seg.model, m1)
    store.set_current("v0001")
    assert store.current().name == "v0001"
    assert [v.name for v in store.versions()] == ["v0001", "v0002"]  # nothing deleted
    seg = Segmenter.load(store=store, device="cpu")
    assert seg.name == "v0001" and same_weights(seg.model, m1)
    store.save(m2, parent="v0001")  # a new version becomes current
    assert store.current().name == "v0003"
    with pytest.raises(LLM4SegError, match="no model version 'nope'"):
        store.set_current("nope")
    assert (store.root / "CURRENT").read_text().strip() == "v0003"


def test_resolve_model(store, m1, tmp_path):
    with pytest.raises(LLM4SegError, match="holds no model version"):
        resolve_model("current", store)
    r = resolve_model(None, store, load=False)
    assert not r.trained and r.spec == ModelSpec() and r.model is None
    store.save(m1, name="mine")
    path = save_checkpoint(m1, tmp_path / "file.safetensors")
    for arg, name in ((None, "mine"), ("current", "mine"), ("mine", "mine"),
                      (str(path), "file.safetensors"), (path, "file.safetensors")):
        r = resolve_model(arg, store, load=False)
        assert r.trained and r.spec == SPEC and r.name == name, arg
    r = resolve_model("cmunext,image_size=32,dims=4:8:8:16:16", store)
    assert not r.trained and r.model is not None and r.spec.llm_mode == "none"
    r = resolve_model("mine", store)
    assert r.version.name == "mine" and r.model is not None
    with pytest.raises(LLM4SegError, match=r"unknown model 'mien'.*versions: mine"):
        resolve_model("mien", store)
    with pytest.raises(LLM4SegError, match="not found"):
        resolve_model(str(tmp_path / "missing.safetensors"), store)


def test_compare(store, m1, m2):
    store.save(m1, metrics={"val_dice": 0.5, "val_iou": 0.3})
    store.save(m2, metrics={"val_dice": 0.75, "loss": 0.1}, parent="v0001")
    store.save(m1)
    c = store.compare("v0001", "v0002")
    assert c["metrics"] == {"val_dice": (0.5, 0.75), "val_iou": (0.3, None), "loss": (None, 0.1)}
    assert c["spec"] == {} and c["llm"]["same"]
    w = c["weights"]
    assert w["common"] > 0 and w["changed"] > 0 and not w["only_a"] and not w["only_b"]
    assert 0 < w["overall_rel_change"] < 1 and w["top"][0][1] == w["max_rel_change"]
    same = store.compare("v0001", "v0003")
    assert same["weights"]["changed"] == 0 and same["weights"]["max_rel_change"] == 0
    tiny = store.save(build_model(TINY))
    c = store.compare("v0001", tiny.name)
    assert {"image_size", "llm_mode", "dims"} <= set(c["spec"]) and not c["llm"]["same"]
    assert c["weights"]["only_a"] and c["weights"]["shape_differs"]


def test_import_file(store, m1, tmp_path):
    path = save_checkpoint(m1, tmp_path / "outside.safetensors", {"metrics": {"val_dice": 0.6}})
    v = store.import_file(path)
    assert v.name == "v0001" and v.metrics == {"val_dice": 0.6}
    assert v.data["imported_from"] == str(path) and store.current().name == "v0001"
    loaded, _ = store.load("v0001")
    assert same_weights(loaded, m1)
    assert store.import_file(path, name="again").name == "again"
    with pytest.raises(LLM4SegError, match="already exists"):
        store.import_file(path, name="again")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(LLM4SegError):
        store.import_file(junk)
    assert [v.name for v in store.versions()] == ["v0001", "again"]


# ---- the command line -------------------------------------------------------

def _write_ct(path):
    vol = make_ct(n=3, size=40)
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    sitk.WriteImage(img, str(path))
    return path


def test_cli_models_commands(store, m1, m2, tmp_path, capsys):
    s = ["--store", str(store.root)]
    assert main(["models", *s]) == 0
    assert "no model versions yet" in capsys.readouterr().out
    store.save(m1, metrics={"val_dice": 0.5, "val_iou": 0.33})
    store.save(m2, metrics={"val_dice": 0.6, "val_iou": 0.43}, parent="v0001", note="fine-tuned")
    capsys.readouterr()
    assert main(["models", *s]) == 0
    text = capsys.readouterr().out
    assert str(store.root) in text
    assert "task default: current v0002" in text.splitlines()  # one task, grouped under it
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line
            for line in text.splitlines()[2:-1] if not line.startswith("task ")}
    assert rows["v0002"].startswith("*") and "v0001" in rows["v0002"] and "val_dice=0.6000" in rows["v0002"]
    assert "smollm2 layer 14" in rows["v0001"] and not rows["v0001"].startswith("*")
    assert main(["models", "show", "v0002", *s]) == 0
    text = capsys.readouterr().out
    assert "parent:   v0001" in text and "fine-tuned" in text and "val_iou: 0.4300" in text
    assert "task:     default" in text and "name:     v0002  (current)" in text
    assert main(["models", *s, "compare", "v0001", "v0002"]) == 0
    text = capsys.readouterr().out
    assert "val_dice" in text and "(+0.1000)" in text and "spec: the same" in text
    assert main(["models", "rollback", "v0001", *s]) == 0
    assert "current model: v0001 (was v0002)" in capsys.readouterr().out
    assert store.current().name == "v0001"
    path = save_checkpoint(m2, tmp_path / "ext.safetensors")
    assert main(["models", "import", str(path), "--name", "ext", *s]) == 0
    assert store.current().name == "ext"
    # user errors: exit 2 with one line
    for argv in (["models", "show", "nope"], ["models", "rollback", "nope"], ["models", "compare", "v0001", "x"],
                 ["models", "import", str(tmp_path / "missing.safetensors")],
                 ["models", "import", str(path), "--name", "ext"], ["models", "import", str(path), "--name", "a b"]):
        capsys.readouterr()
        assert main([*argv, *s]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("llm4seg: error: "), (argv, err)
    assert [v.name for v in store.versions()] == ["v0001", "v0002", "ext"]


def test_cli_uses_llm4seg_home_and_segment_model_version(m1, tmp_path, capsys):
    home_store = ModelStore()  # LLM4SEG_HOME from the fixture
    src = _write_ct(tmp_path / "ct.nrrd")
    mask = tmp_path / "mask.nrrd"
    fast = ["--device", "cpu", "-q"]
    # an untrained spec: it says so (an empty store with no --model resolves to one, see
    # test_resolve_model and test_rollback_changes_current_and_segmenter_default)
    assert main(["segment", str(src), "-o", str(mask), "--model", "cmunext,image_size=32,dims=4:8:8:16:16",
                 *fast]) == 0
    assert "UNTRAINED" in capsys.readouterr().err
    home_store.save(m1)
    home_store.save(m1, name="other")
    assert main(["models"]) == 0
    assert str(home_store.root) in capsys.readouterr().out
    for model in ([], ["--model", "v0001"]):
        assert main(["segment", str(src), "-o", str(mask), *model, *fast]) == 0, model
        err = capsys.readouterr().err
        assert "UNTRAINED" not in err, model
    assert main(["segment", str(src), "-o", str(mask), "--model", "v0009", *fast]) == 2
    err = capsys.readouterr().err
    assert "v0009" in err and "v0001, other" in err
    assert main(["info", "--model", "other", "--device", "cpu"]) == 0
    assert "model version other" in capsys.readouterr().out
