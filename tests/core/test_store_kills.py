"""The model store and the writers survive kills: stale locks, names checked first, verified
weights, a damaged current passed over, no temp file left in a user's folder, normal file modes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from llm4seg_core import atomic
from llm4seg_core.cli import main
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.inference import Segmenter
from llm4seg_core.io import read_image, write_mask
from llm4seg_core.model import ModelSpec, build_model
from llm4seg_core.overlay import write_png
from llm4seg_core.paths import staging_root
from llm4seg_core.store import ModelStore, locks
from llm4seg_core.store import resolve as resolve_module

from .conftest import make_ct

TINY = ModelSpec(llm_mode="none", image_size=32, dims=(4, 8, 8, 16, 16))
TINY_CLI = "cmunext,image_size=32,dims=4:8:8:16:16"


@pytest.fixture(autouse=True)
def no_shipped(monkeypatch):
    monkeypatch.setattr(resolve_module, "default_checkpoint", lambda: None)
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [])


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "store")


def tiny(seed: int):
    return build_model(TINY, seed=seed)


def dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_ct(path, n=4):
    vol = make_ct(n=n, size=32)
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    sitk.WriteImage(img, str(path))
    return path


# ---- locks -------------------------------------------------------------------

def test_lock_of_a_dead_process_is_stale_at_once(store):
    store.save(tiny(0))
    lock = locks.lock_path(store.root, "named")
    lock.write_text(f"{dead_pid()} {atomic._host_tag()}\n")  # a kill -9 mid-save, a second ago
    assert locks.lock_is_stale(lock)
    v = store.save(tiny(1), name="named")  # no hour's wait
    assert v.ok and not lock.exists()
    # a live owner (this process) holds its name: refused, saying so, and before training too
    lock = locks.lock_path(store.root, "busy")
    lock.write_text(f"{os.getpid()} {atomic._host_tag()}\n")
    for call in (lambda: store.save(tiny(2), name="busy"), lambda: store.check_new_name("busy")):
        with pytest.raises(LLM4SegError, match="being saved by another running llm4seg"):
            call()
    # another host's lock, or an unreadable one, is not judged by this host's processes...
    other = locks.lock_path(store.root, "remote")
    other.write_text(f"{dead_pid()} 0badc0de\n")
    young = locks.lock_path(store.root, "young")
    young.write_text("")
    assert not locks.lock_is_stale(other) and not locks.lock_is_stale(young)
    # ...until they are old
    old = os.stat(other).st_mtime - 2 * locks.STALE_S
    for p in (other, young):
        os.utime(p, (old, old))
    assert locks.lock_is_stale(other) and locks.lock_is_stale(young)


def test_cleanup_removes_a_dead_saves_leftovers_at_once(store):
    store.save(tiny(0))
    tag = f"{atomic._host_tag()}-{dead_pid()}-"
    (store.root / f".v0002.safetensors.llm4seg-{tag}abc.tmp").write_bytes(b"partial")
    (store.root / f".v0002.json.llm4seg-{tag}def.tmp").write_bytes(b"")
    # weights renamed, metadata never written, lock of the dead save still there
    from llm4seg_core.store import save_checkpoint

    save_checkpoint(tiny(1), store.root / "v0002.safetensors", {"store_name": "v0002"})
    locks.lock_path(store.root, "v0002").write_text(f"{dead_pid()} {atomic._host_tag()}\n")
    live = store.root / f".named.json.llm4seg-{atomic._host_tag()}-{os.getpid()}-xyz.tmp"
    live.write_bytes(b"")  # a save in progress in this process: kept
    v = store.save(tiny(2))
    assert v.name == "v0002" and v.ok  # the name freed and reused at once
    left = sorted(p.name for p in store.root.iterdir())
    assert left == [live.name, "CURRENT", "v0001.json", "v0001.safetensors", "v0002.json",
                    "v0002.safetensors"]


# ---- names before training ------------------------------------------------------

def test_finetune_checks_the_name_before_training(store, tmp_path, monkeypatch, capsys):
    img = write_ct(tmp_path / "ct.nrrd")
    lab = tmp_path / "lab.nrrd"
    mask = np.zeros((4, 32, 32), np.uint8)
    mask[1, 10:20, 10:20] = 1
    write_mask(mask, read_image(img), lab)
    store.save(tiny(0), name="taken")
    trained = []
    monkeypatch.setattr("llm4seg_core.training.finetune",
                        lambda *a, **k: trained.append(1) or pytest.fail("trained"))
    base = ["finetune", str(img), str(lab), "--slices", "1", "--base", TINY_CLI, "--steps", "2",
            "--device", "cpu", "--store", str(store.root), "-q"]
    locks.lock_path(store.root, "busy").write_text(f"{os.getpid()} {atomic._host_tag()}\n")
    for name, why in (("taken", "already exists"), ("busy", "being saved by another"),
                      ("a b", "bad model version name"), ("default", "name of a task")):
        capsys.readouterr()
        assert main([*base, "-o", name]) == 2, name
        assert why in capsys.readouterr().err, name
    # the engine call refuses before training as well
    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.loop import finetune_corrections
    from llm4seg_core.training import FinetuneConfig

    vol = read_image(img)
    with pytest.raises(LLM4SegError, match="already exists"):
        finetune_corrections(TINY_CLI, CorrectionSet(vol, mask, [1]), FinetuneConfig(device="cpu"),
                             store=store, name="taken")
    assert not trained


# ---- verified weights, damaged current ---------------------------------------------

def flip_tensor_bytes(path):
    """Flip bytes inside the tensor data (header intact, same size): only sha256 sees it."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data) - 32):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_models_list_verifies_weights_and_a_damaged_current_falls_back(store, tmp_path, capsys):
    store.save(tiny(0))
    store.save(tiny(1))
    v3 = store.save(tiny(2))
    flip_tensor_bytes(v3.path)
    assert store.versions()[-1].ok  # the cheap checks (size, header) cannot see it
    assert "sha256" in store.versions(verify=True)[-1].damaged
    assert main(["models", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if " v0003 " in f" {line} ")
    assert "DAMAGED" in row and "changed after it was saved" in row
    assert "task default: current v0002" in out and "WARNING: the current default model version v0003 is damaged" in out
    assert main(["models", "show", "v0003", "--store", str(store.root)]) == 0
    assert "DAMAGED" in capsys.readouterr().out
    # CURRENT names v0003: Segment uses the newest intact version (v0002) and says so
    cur, warning = store.current_choice()
    assert cur.name == "v0002" and "v0003 is damaged" in warning
    seg = Segmenter.load(store=store, device="cpu")
    assert seg.name == "v0002" and seg.warning
    src = write_ct(tmp_path / "ct.nrrd", n=2)
    assert main(["segment", str(src), "-o", str(tmp_path / "m.nii.gz"), "--store", str(store.root),
                 "--device", "cpu", "-q"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: the current default model version v0003 is damaged" in err and "v0002" in err
    with pytest.raises(LLM4SegError, match="damaged"):
        store.set_current("v0003")  # a rollback to it is refused
    # nothing intact left and nothing shipped: the damaged one is returned, and loading says why
    for v in store.versions()[:2]:
        flip_tensor_bytes(v.path)
    assert store.current().name == "v0003"
    with pytest.raises(LLM4SegError, match="damaged|changed after it was saved"):
        Segmenter.load(store=store, device="cpu")


# ---- temp files and modes of results ------------------------------------------------

KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    import SimpleITK as sitk
    from llm4seg_core.io import read_image, write_mask
    from llm4seg_core.overlay import write_png

    what, src, out = sys.argv[1:4]
    real = sitk.WriteImage

    def killed(image, path, *a, **k):
        Path(path).write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)

    sitk.WriteImage = killed
    if what == "mask":
        vol = read_image(src)
        write_mask(np.zeros(vol.spatial_shape, np.uint8), vol, out)
    else:
        write_png(np.zeros((8, 8, 3), np.uint8), out)
""")


@pytest.mark.parametrize("what, name", [("mask", "mask.nii.gz"), ("overlay", "overlay.png")])
def test_a_killed_write_leaves_nothing_in_the_users_folder(tmp_path, what, name):
    src = write_ct(tmp_path / "ct.nrrd", n=2)
    folder = tmp_path / "results"
    folder.mkdir()
    out = folder / name
    out.write_bytes(b"the previous result")
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, what, str(src), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == [name]  # no hidden temp file
    assert out.read_bytes() == b"the previous result"  # the previous result whole
    staged = list(staging_root().iterdir())
    assert len(staged) == 1 and staged[0].read_bytes() == b"half a file"  # the temp was staged
    # the next write sweeps the dead process's temp file out of the staging folder
    if what == "mask":
        vol = read_image(src)
        write_mask(np.zeros(vol.spatial_shape, np.uint8), vol, out)
    else:
        write_png(np.zeros((8, 8, 3), np.uint8), out)
    assert list(staging_root().iterdir()) == []
    assert sorted(p.name for p in folder.iterdir()) == [name]


def test_a_killed_write_beside_the_target_is_swept_by_the_next(tmp_path):
    """Where no staging folder is on the target's file system, the temp file is next to it."""
    target = tmp_path / "mask.txt"
    gone = tmp_path / f".mask.txt.llm4seg-{atomic._host_tag()}-{dead_pid()}-abc123.tmp"
    gone.write_bytes(b"")
    mine = tmp_path / f".mask.txt.llm4seg-{atomic._host_tag()}-{os.getpid()}-abc456.tmp"
    mine.write_bytes(b"")
    atomic.atomic_write_text(target, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "mask.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_get_the_users_normal_file_mode(tmp_path, umask):
    src = write_ct(tmp_path / "ct.nrrd", n=2)
    vol = read_image(src)
    old = os.umask(umask)
    try:
        paths = [write_mask(np.zeros(vol.spatial_shape, np.uint8), vol, tmp_path / "m.nii.gz"),
                 write_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "o.png"),
                 ModelStore(tmp_path / "store").save(tiny(0)).path]
    finally:
        os.umask(old)
    for p in paths:
        assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask, p
    # a result written again keeps the mode its owner gave it
    os.chmod(paths[0], 0o640)
    write_mask(np.ones(vol.spatial_shape, np.uint8), vol, paths[0])
    assert os.stat(paths[0]).st_mode & 0o777 == 0o640


# ---- kill at every file operation of a save --------------------------------------

KILL_AT_EVERY_MOMENT = textwrap.dedent("""
    import json, os, signal, sys, tempfile
    import torch
    torch.set_num_threads(1)
    from llm4seg_core.model import ModelSpec, build_model
    from llm4seg_core.store import ModelStore

    root = sys.argv[1]
    spec = ModelSpec(llm_mode="none", image_size=32, dims=(4, 8, 8, 16, 16))
    model = build_model(spec, seed=3)
    ModelStore(root).save(build_model(spec, seed=1), name="first")

    def save_killed_at(n):
        count = [0]

        def tick():
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

        def wrap(fn):
            def inner(*a, **k):
                tick()
                out = fn(*a, **k)
                tick()
                return out
            return inner

        os.replace = wrap(os.replace)
        os.open = wrap(os.open)
        os.link = wrap(os.link)
        tempfile.mkstemp = wrap(tempfile.mkstemp)
        ModelStore(root).save(model, name="second")
        return count[0]

    results = []
    n = 1
    while True:
        pid = os.fork()
        if pid == 0:
            try:
                total = save_killed_at(n)
            except BaseException:
                os._exit(3)
            os._exit(0 if total < n else 4)
        _, status = os.waitpid(pid, 0)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        store = ModelStore(root)
        names = sorted(v.name for v in store.versions(verify=True) if v.ok)
        damaged = [v.name for v in store.versions(verify=True) if not v.ok]
        files = sorted(os.listdir(root))
        cur = store.current()
        # the same name again, at once: it works, or the version exists whole
        try:
            again = store.save(model, name="second").name
        except Exception as exc:
            again = str(exc)
        after = sorted(os.listdir(root))
        results.append(dict(n=n, signal=sig, code=code, versions=names, damaged=damaged,
                            files=files, current=cur.name if cur else None, again=again,
                            after=after))
        if sig == 0:
            break
        for f in os.listdir(root):
            if "second" in f or f.startswith("CURRENT"):
                os.unlink(os.path.join(root, f))
        n += 1
    print(json.dumps(results))
""")


@pytest.mark.slow
def test_a_save_killed_at_every_file_operation_leaves_a_sound_store(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-c", KILL_AT_EVERY_MOMENT, str(root)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    killed = [r for r in results if r["signal"] == signal.SIGKILL]
    assert len(killed) >= 8, results  # lock, two temp files, three renames, before and after
    assert results[-1]["signal"] == 0 and results[-1]["code"] == 0
    for r in killed:
        assert r["damaged"] == [], r
        assert r["versions"] in (["first"], ["first", "second"]), r
        assert r["current"] in r["versions"], r
        assert r["again"] == "second" or ("already exists" in r["again"] and "second" in r["versions"]), r
        expected = sorted(["first.json", "first.safetensors", "second.json", "second.safetensors"])
        assert [f for f in r["after"] if not f.startswith("CURRENT")] == expected, r
