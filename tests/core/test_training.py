"""Trainer, fine-tuning and the train/finetune/eval commands, on tiny models."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from llm4seg_core.store import load_checkpoint, save_checkpoint
from llm4seg_core.cli import main
from llm4seg_core.datasets import CorrectionSet
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import read_image
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import build_model
from llm4seg_core.model.spec import ModelSpec
from llm4seg_core.training import (
    FinetuneConfig, TrainConfig, Trainer, finetune, has_train_state, read_train_state_info,
)
from tests.helpers import run_python

from .conftest import make_ct

TINY = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32))
TINY_LLM = ModelSpec(image_size=32, dims=(8, 8, 16, 16, 32))  # the real SmolLM2 layer
TINY_CLI = "cmunext,image_size=32,dims=8:8:16:16:32"


class Blobs(torch.utils.data.Dataset):
    """Bright discs (labels 1, or 1 and 2 for multi-class) on noise."""

    def __init__(self, n=8, size=32, classes=1, seed=0):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.items = []
        for _ in range(n):
            cy, cx = torch.randint(8, size - 8, (2,), generator=g).tolist()
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < 25
            y = disc.to(torch.uint8)
            x = torch.randn(1, size, size, generator=g) * 0.3 + disc.float()
            if classes > 1:
                half = disc & (xx < cx)
                y[half] = 2
                x[0][half] += 1.0
            self.items.append((x, y))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a 2-core machine shared with other jobs, 2 OpenMP threads
    spin against each other and tiny steps take seconds instead of milliseconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cfg(**kw):
    base = dict(epochs=2, batch_size=4, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_split_forward_matches_model():
    m = build_model(TINY)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m.net.decode(m.net.encode(x)))


def test_loss_decreases_and_best_by_val_iou():
    model = build_model(TINY, seed=0)
    seen = []
    result = Trainer(model, cfg(epochs=6, optimizer="adam", lr=3e-3),
                     Callbacks(on_metrics=seen.append)).fit(Blobs(8), Blobs(4, seed=1))
    losses = [m["loss"] for m in result.history]
    assert len(losses) == 6 and len(seen) == 6
    assert losses[-1] < losses[0]
    assert {"val_dice", "val_iou", "val_loss"} <= set(result.history[0])
    best = max(m["val_iou"] for m in result.history)
    assert result.best_metrics["val_iou"] == best
    assert result.best_state.keys() == model.stored_state_dict().keys()
    assert not model.training


def test_same_seed_same_weights():
    runs = []
    for _ in range(2):
        model = build_model(TINY, seed=3)
        Trainer(model, cfg(seed=3)).fit(Blobs(6))
        runs.append(weights(model))
    assert same(*runs)
    other = build_model(TINY, seed=3)
    Trainer(other, cfg(seed=4)).fit(Blobs(6))
    assert not same(runs[0], weights(other))


def test_cancel_stops_within_a_step():
    cancel = threading.Event()
    steps = []

    def progress(step, total):
        steps.append(step)
        if step == 2:
            cancel.set()

    model = build_model(TINY)
    result = Trainer(model, cfg(epochs=5), Callbacks(on_progress=progress, cancel=cancel)).fit(Blobs(8))
    assert result.cancelled and result.steps == 2 and max(steps) == 2


def test_resume_continues_identically(tmp_path):
    ref = build_model(TINY, seed=1)
    ref_result = Trainer(ref, cfg(epochs=3, seed=1)).fit(Blobs(8), Blobs(4, seed=1))

    cancel = threading.Event()
    model = build_model(TINY, seed=1)
    r1 = Trainer(model, cfg(epochs=3, seed=1),
                 Callbacks(on_progress=lambda s, t: s == 3 and cancel.set(), cancel=cancel)
                 ).fit(Blobs(8), Blobs(4, seed=1), checkpoint_dir=tmp_path)
    assert r1.cancelled and r1.steps == 3  # stopped mid-epoch 2
    assert has_train_state(tmp_path) and read_train_state_info(tmp_path)["step"] == 3
    fresh = build_model(TINY, seed=99)  # weights come from the state
    r2 = Trainer(fresh, cfg(epochs=3, seed=1)).fit(Blobs(8), Blobs(4, seed=1),
                                                    checkpoint_dir=tmp_path, resume=True)
    assert r2.steps == ref_result.steps == 6
    assert same(weights(ref), weights(fresh))
    assert [m["val_iou"] for m in r2.history] == [m["val_iou"] for m in ref_result.history]
    for name in ("best.safetensors", "last.safetensors"):
        load_checkpoint(tmp_path / name)


def test_keyboard_interrupt_saves_state(tmp_path):
    def boom(step, total):
        if step == 3:
            raise KeyboardInterrupt

    model = build_model(TINY)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, cfg(epochs=3), Callbacks(on_progress=boom)).fit(Blobs(8), checkpoint_dir=tmp_path)
    assert read_train_state_info(tmp_path)["step"] == 3


@pytest.mark.parametrize(
    "trainable, changes",
    [
        ("adapters", {"adapters"}),
        ("adapters+decoder", {"adapters", "decoder"}),
        ("all-but-llm", {"adapters", "decoder", "encoder"}),
        ("all", {"adapters", "decoder", "encoder", "llm"}),
    ],
)
def test_trainable_choices(trainable, changes):
    model = build_model(TINY_LLM, seed=0)
    before = weights(model)
    llm_names = model.llm_parameter_names()
    Trainer(model, cfg(epochs=1, trainable=trainable, lr=0.05)).fit(Blobs(4))
    after = weights(model)

    def part(name):
        if name in llm_names:
            return "llm"
        if ".proj_in." in name or ".proj_out." in name:
            return "adapters"
        if name.startswith(("net.decoder.", "net.head.")):
            return "decoder"
        return "encoder"

    changed = {part(k) for k in before if not torch.equal(before[k], after[k])}
    assert changed == changes  # frozen parts (their BatchNorm statistics too) never change
    if trainable == "all":
        assert not model.spec.freeze_llm and llm_names <= set(model.stored_state_dict())
    else:
        assert not (llm_names & set(model.stored_state_dict()))


def test_adapters_need_an_llm_block():
    with pytest.raises(LLM4SegError, match="adapters"):
        Trainer(build_model(TINY), cfg(trainable="adapters"))


def test_multiclass_training():
    model = build_model(TINY.with_(num_classes=3), seed=0)
    result = Trainer(model, cfg(epochs=4, optimizer="adam", lr=3e-3)).fit(Blobs(8, classes=3),
                                                                           Blobs(4, classes=3, seed=2))
    losses = [m["loss"] for m in result.history]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert 0.0 <= result.best_metrics["val_dice"] <= 1.0


def tumour_volume(n=6, size=48):
    vol = make_ct(n=n, size=size)
    labels = np.zeros(vol.array.shape, np.uint8)
    for z in range(n):
        vol.array[z, 18:26, 14:22] = 60  # a soft-tissue nodule in the left lung
        labels[z, 18:26, 14:22] = 1
    return vol, labels


@pytest.mark.parametrize("cache", [True, False])
def test_finetune_ignores_uncorrected_slices(cache):
    vol, labels = tumour_volume()
    conf = FinetuneConfig(steps=6, batch_size=2, crop_size=16, device="cpu", cache_encoder=cache)
    spec = TINY_LLM
    runs = []
    for other in (0, 1):
        lab = labels.copy()
        lab[[0, 2, 4, 5]] = other  # labels of uncorrected slices: nothing, or all foreground
        model = build_model(spec, seed=0)
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        res = finetune(model, CorrectionSet(vol, lab, [1, 3]), conf)
        assert res.info["cached_encoder"] is cache and res.steps == 6
        assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
        runs.append(weights(model))
    assert same(*runs)
    start = weights(build_model(spec, seed=0))
    assert not same(start, runs[0])


def test_finetune_learns_and_cancel_restores():
    vol, labels = tumour_volume()
    model = build_model(TINY, seed=0)
    conf = FinetuneConfig(steps=40, batch_size=2, crop_size=None, device="cpu", freeze_bn=False,
                          lr=3e-3)
    res = finetune(model, CorrectionSet(vol, labels, [1, 3]), conf)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert 0.0 <= res.best_metrics["train_dice"] <= 1.0
    cancel = threading.Event()
    before = weights(model)
    res = finetune(model, CorrectionSet(vol, labels, [2]), conf,
                   Callbacks(on_progress=lambda s, t: s == 2 and cancel.set(), cancel=cancel))
    assert res.cancelled and same(before, weights(model))


# --------------------------------------------------------------------------- CLI


def make_2d_folder(root, n=6, size=32):
    (root / "images").mkdir(parents=True)
    (root / "masks" / "0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 80, (size, size)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cy, cx = rng.integers(8, size - 8, 2)
        mask[cy - 4:cy + 4, cx - 4:cx + 4] = 255
        img[mask > 0] += 150
        sitk.WriteImage(sitk.GetImageFromArray(img), str(root / "images" / f"c{i}.png"))
        sitk.WriteImage(sitk.GetImageFromArray(mask), str(root / "masks" / "0" / f"c{i}.png"))
    return root


def test_cli_train_resume_and_refusals(tmp_path, capsys):
    data = make_2d_folder(tmp_path / "data")
    out = tmp_path / "run"
    base = ["train", str(data), "-o", str(out), "--model", TINY_CLI, "--device", "cpu",
            "--batch-size", "2", "-q"]
    assert main([*base, "--epochs", "1"]) == 0
    for name in ("best.safetensors", "last.safetensors", "train_state.json",
                 "train_state.safetensors", "split.json"):
        assert (out / name).is_file(), name
    assert read_train_state_info(out)["epoch"] == 1
    assert main([*base, "--epochs", "1"]) == 2  # already holds a run
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    info = read_train_state_info(out)
    assert info["epoch"] == 2 and len(info["history"]) == 2
    model, ck = load_checkpoint(out / "best.safetensors")
    assert model.spec.num_classes == 1 and model.spec.image_size == 32
    assert main(["train", str(tmp_path / "nope"), "-o", str(tmp_path / "r2")]) == 2


def test_cli_train_ctrl_c_saves_state(tmp_path, monkeypatch, capsys):
    import llm4seg_core.training.trainer as trainer

    data = make_2d_folder(tmp_path / "data")
    calls = {"n": 0}
    real = trainer.segmentation_loss

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(trainer, "segmentation_loss", interrupting)
    out = tmp_path / "run"
    code = main(["train", str(data), "-o", str(out), "--model", TINY_CLI, "--device", "cpu",
                 "--batch-size", "2", "--epochs", "3", "-q"])
    assert code == 130
    assert "--resume" in capsys.readouterr().err
    assert read_train_state_info(out)["step"] == 2


def write_volume(path, arr, spacing=(0.8, 0.8, 2.5)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def test_cli_finetune_to_file_and_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM4SEG_HOME", str(tmp_path / "home"))
    vol, labels = tumour_volume()
    img = write_volume(tmp_path / "ct.nrrd", vol.array)
    lab = write_volume(tmp_path / "lab.nrrd", labels)
    base = save_checkpoint(build_model(TINY.with_(image_size=48), seed=0), tmp_path / "base.safetensors")
    args = ["finetune", str(img), str(lab), "--slices", "1,3", "--base", str(base), "--steps", "3",
            "--device", "cpu", "-q"]
    assert main([*args, "-o", str(tmp_path / "ft.safetensors")]) == 0
    model, _ = load_checkpoint(tmp_path / "ft.safetensors")
    assert model.spec.image_size == 48
    assert main([*args, "-o", "ft-v1"]) == 0
    assert "ft-v1" in capsys.readouterr().out
    from llm4seg_core.store import ModelStore

    v = ModelStore().get("ft-v1")
    assert v.parent == "base.safetensors" and v.data["slices"] == [1, 3]
    assert main([*args[:4], "9", *args[5:], "-o", "x.safetensors"]) == 2  # slice out of range

    # --complete: the other slices segmented by the new model, the corrected ones from the mask
    out = tmp_path / "completed.nrrd"
    assert main([*args, "-o", str(tmp_path / "ft2.safetensors"), "--complete", str(out),
                 "--seeded"]) == 0
    done = read_image(out)
    assert done.spatial_shape == vol.spatial_shape and done.spacing == pytest.approx(vol.spacing)
    np.testing.assert_array_equal(done.array[[1, 3]], labels[[1, 3]])
    # filling between slices 1 and 3 only adds: the same seeded run without it is a subset
    out_nofill = tmp_path / "completed_nofill.nrrd"
    assert main([*args, "-o", str(tmp_path / "ft3.safetensors"), "--complete", str(out_nofill),
                 "--seeded", "--no-fill-between"]) == 0
    nofill = read_image(out_nofill).array
    assert not (nofill.astype(bool) & ~done.array.astype(bool)).any()
    # --seeded without --complete, and a bad output suffix, fail before any training
    assert main([*args, "-o", "y.safetensors", "--seeded"]) == 2
    assert main([*args, "-o", "z.safetensors", "--complete", str(tmp_path / "m.xyz")]) == 2
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "z.safetensors").exists()


def test_cli_eval(tmp_path, capsys):
    ref = np.zeros((4, 10, 10), np.uint8)
    pred = np.zeros((4, 10, 10), np.uint8)
    ref[1, 2:6, 2:6] = 1
    pred[1, 2:6, 2:4] = 1
    pred[3, 0:3, 0:3] = 1
    r = write_volume(tmp_path / "ref.nrrd", ref)
    p = write_volume(tmp_path / "pred.nrrd", pred)
    assert main(["eval", str(p), str(r)]) == 0
    text = capsys.readouterr().out
    assert "dice" in text and "hd95_mm" in text
    assert main(["eval", str(p), str(r), "--exclude-slices", "3", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    s = js["labels"]["1"]
    assert s["dice"] == pytest.approx(2 * 8 / (8 + 16))
    assert s["precision"] == 1.0 and s["sensitivity"] == 0.5
    assert js["excluded_slices"] == [3]
    bad = write_volume(tmp_path / "bad.nrrd", np.zeros((4, 5, 5), np.uint8))
    assert main(["eval", str(bad), str(r)]) == 2


def test_loss_skips_ignored_pixels_and_batch_dice() -> None:
    import torch

    from llm4seg_core.training import IGNORE_LABEL, batch_dice, segmentation_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    partial = target.clone()
    partial[:, :4] = IGNORE_LABEL
    # ignored pixels: changing the logits there changes nothing
    other = logits.clone()
    other[:, :, :4] = torch.randn(2, 3, 4, 8, generator=g) * 10
    a = segmentation_loss(logits, partial)
    b = segmentation_loss(other, partial)
    assert torch.isfinite(a) and torch.allclose(a, b)
    assert not torch.allclose(segmentation_loss(logits, target), segmentation_loss(other, target))
    # binary, same property
    lb, tb = logits[:, :1], (target > 0).to(torch.uint8)
    pb = tb.clone()
    pb[:, :4] = IGNORE_LABEL
    assert torch.allclose(segmentation_loss(lb, pb), segmentation_loss(other[:, :1], pb))
    # hard batch Dice: perfect, disjoint, both empty
    t = torch.zeros(1, 4, 4)
    t[0, :2] = 1
    assert batch_dice((t * 2 - 1)[:, None] * 5, t) == 1.0
    assert batch_dice(((1 - t) * 2 - 1)[:, None] * 5, t) == 0.0
    assert batch_dice(-torch.ones(1, 1, 4, 4), torch.zeros(1, 4, 4)) == 1.0


def test_training_config_imports_without_torch():
    code = (
        "import sys\n"
        "import llm4seg_core.training.config as c\n"
        "import llm4seg_core.training as t\n"
        "assert t.TrainConfig is c.TrainConfig and 'all' in t.TRAINABLE\n"
        "import llm4seg_core.datasets.labels, llm4seg_core.slices\n"
        "print('torch' in sys.modules)\n"
    )
    assert run_python(code).strip() == "False"


def test_lazy_exports_are_the_functions_not_the_modules():
    import llm4seg_core.training as training
    import llm4seg_core.training.evaluation  # noqa: F401 - a submodule import must not shadow
    import llm4seg_core.training.finetuning  # noqa: F401

    from llm4seg_core.training import evaluate
    from llm4seg_core.training.finetuning import finetune as real_finetune

    assert callable(evaluate) and training.finetune is real_finetune is finetune
    assert set(training.__all__) <= set(dir(training))
    with pytest.raises(AttributeError):
        training.no_such_name  # noqa: B018


def test_device_import_leaves_denormals_alone_until_an_engine_call():
    code = (
        "import torch\n"
        "import llm4seg_core.device as d\n"
        "tiny = torch.tensor([1e-39])\n"
        "before = float(tiny * 1.0)\n"
        "supported = d.flush_denormals()\n"
        "after = float(torch.tensor([1e-39]) * 1.0)\n"
        "print(before != 0, supported, after == 0 or not supported)\n"
    )
    before_kept, _supported, after_ok = run_python(code).split()
    assert before_kept == "True" and after_ok == "True"


def test_train_state_record_round_trips_through_its_json_part():
    from llm4seg_core.training import TrainState

    st = TrainState(step=7, epoch=2, batch=1, loss_sum=0.5, loss_n=1,
                    history=[{"epoch": 1}], best_metrics={"val_iou": 0.3}, best_iou=0.3)
    info = json.loads(json.dumps(st.progress()))
    assert "best_state" not in info
    assert TrainState.from_info(info) == st
    st.end_epoch({"epoch": 3})
    assert (st.epoch, st.batch, st.loss_n, st.loss_sum, len(st.history)) == (3, 0, 0, 0.0, 2)


def test_learning_rate_schedules():
    from llm4seg_core.errors import LLM4SegError
    from llm4seg_core.training.config import TrainConfig

    poly = TrainConfig(lr=0.01)
    assert poly.learning_rate(0, 100) == pytest.approx(0.01)
    assert poly.learning_rate(50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)  # the reference's poly decay
    cos = TrainConfig(lr=1e-3, optimizer="adamw", schedule="cosine", warmup_steps=10)
    assert cos.learning_rate(0, 110) == pytest.approx(1e-4)  # warm-up starts at lr / warmup
    assert cos.learning_rate(9, 110) == pytest.approx(1e-3)
    assert cos.learning_rate(60, 110) == pytest.approx(0.5e-3)  # half way through the cosine
    assert cos.learning_rate(110, 110) == pytest.approx(0.0, abs=1e-12)
    assert TrainConfig(schedule="constant").learning_rate(99, 100) == pytest.approx(0.01)
    with pytest.raises(LLM4SegError, match="schedule"):
        TrainConfig(schedule="step")
