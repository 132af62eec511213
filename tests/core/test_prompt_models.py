"""Prompt models in the rest of the engine (issue 13): Segment refuses them, suggestions and
pickers leave them out, and they fine-tune on corrections like any model (task ``prompt``)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from llm4seg_core.cli import main
from llm4seg_core.datasets import CorrectionSet
from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.inference import Segmenter
from llm4seg_core.io import Volume, read_image, write_mask
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model.network import build_model
from llm4seg_core.model.spec import parse_spec
from llm4seg_core.store import ImageInfo, ModelStore, save_checkpoint, suggest_models, task_profiles
from llm4seg_core.training import FinetuneConfig, finetune_prompt
from llm4seg_core.training.evaluation import evaluate
from llm4seg_core.training.prompt_finetune import _first_prompts, _Inputs, correction_objects

TINY = "prompt-cmunext,image_size=32,dims=8:8:16:16:32"
SEG_TINY = "cmunext,image_size=32,dims=8:8:16:16:32"
REFUSED = "is a prompt model: give it --prompts"
POINTED = "it segments the object you point at"
#: learns a bright disc in 30 steps from random weights (the decoder alone barely moves)
LEARN = FinetuneConfig(steps=30, lr=1e-2, trainable="all-but-llm", device="cpu")
FAST = FinetuneConfig(steps=3, device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the machine is shared with a training run."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _prompt_model():
    return build_model(parse_spec(TINY))


def _disc_volume(n: int = 8, h: int = 40, w: int = 40) -> tuple[Volume, np.ndarray]:
    """A bright disc (label 1) on slices 1..6, drifting one pixel a slice; noise elsewhere."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((n, h, w), np.uint8)
    for z in range(1, 7):
        lab[z][(yy - 20) ** 2 + (xx - 18 - z) ** 2 <= 64] = 1
    arr = np.full((n, h, w), 100, np.int16) + rng.integers(-10, 10, (n, h, w)).astype(np.int16)
    arr[lab == 1] += 600
    vol = Volume(arr, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                 source="disc.nii.gz")
    return vol, lab


def _corrections(slices=(3, 4)) -> tuple[CorrectionSet, np.ndarray]:
    vol, lab = _disc_volume()
    corrected = np.zeros_like(lab)
    corrected[list(slices)] = lab[list(slices)]
    return CorrectionSet(vol, corrected, list(slices)), lab


def _vol_file(tmp_path) -> tuple:
    vol, lab = _disc_volume()
    path = tmp_path / "vol.nii.gz"
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing)
    sitk.WriteImage(img, str(path))
    mask = tmp_path / "mask.nii.gz"
    write_mask(lab, read_image(path), mask)
    return path, mask, lab


def _run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_error_line(rc: int, err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("llm4seg: error: "), err
    for p in parts:
        assert p in lines[0], (p, lines[0])


def test_the_prompt_task_names_agree():
    from llm4seg_core.prompts.segment import PROMPT_TASK
    from llm4seg_core.store import suggest

    assert suggest.PROMPT_TASK == PROMPT_TASK == "prompt"


# ------------------------------------------------------------------ Segment refuses it


def test_the_segmenter_refuses_a_prompt_model_with_one_clear_line(tmp_path):
    for make in (lambda: Segmenter(_prompt_model(), device="cpu", name="tiny"),
                 lambda: Segmenter.load(spec=parse_spec(TINY), device="cpu"),
                 lambda: Segmenter.load(TINY, device="cpu")):
        with pytest.raises(LLM4SegError) as exc:
            make()
        text = str(exc.value)
        assert REFUSED in text and POINTED in text and "\n" not in text
    store = ModelStore()
    v = store.save(_prompt_model(), task="prompt")
    for arg in ("prompt", v.name):
        with pytest.raises(LLM4SegError, match=f"{v.name} {REFUSED}"):
            Segmenter.load(arg, device="cpu", store=store)
    path = save_checkpoint(_prompt_model(), tmp_path / "p.safetensors", {})
    with pytest.raises(LLM4SegError, match=REFUSED):
        Segmenter.load(path, device="cpu")
    Segmenter(build_model(parse_spec(SEG_TINY)), device="cpu")  # a segmentation model is fine


def test_valscore_and_segment_folder_refuse_a_prompt_model(tmp_path):
    from llm4seg_core.batch import segment_folder
    from llm4seg_core.prompts import PromptSegmenter
    from llm4seg_core.valscore import score_split

    path = save_checkpoint(_prompt_model(), tmp_path / "p.safetensors", {})
    with pytest.raises(LLM4SegError, match=REFUSED):
        score_split(path, tmp_path / "no-such-dataset")  # refused before the dataset is read
    pics = tmp_path / "pics"
    pics.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.uint8)), str(pics / "a.png"))
    with pytest.raises(LLM4SegError, match=REFUSED):
        segment_folder(PromptSegmenter(_prompt_model(), device="cpu"), pics, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_segment_folder_and_demo_exit_2_for_a_prompt_model(tmp_path, capsys):
    src, _, _ = _vol_file(tmp_path)
    out = tmp_path / "m.nii.gz"
    cpu = ["--device", "cpu", "--engine", "torch", "-q"]
    for model in (TINY, "prompt"):  # no prompt model in the store: refused by the task's name
        rc, _, err = _run(["segment", str(src), "-o", str(out), "--model", model, *cpu], capsys)
        _one_error_line(rc, err, REFUSED, POINTED)
    ModelStore().save(_prompt_model(), task="prompt")
    rc, _, err = _run(["segment", str(src), "-o", str(out), "--model", "prompt", *cpu], capsys)
    _one_error_line(rc, err, REFUSED)
    assert not out.exists()
    pics = tmp_path / "pics"
    pics.mkdir()
    for k in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 20), 40 * k, np.uint8)),
                        str(pics / f"p{k}.png"))
    rc, _, err = _run(["segment", str(pics), "-o", str(tmp_path / "masks"), "--model", TINY,
                       *cpu], capsys)
    _one_error_line(rc, err, REFUSED)
    assert not (tmp_path / "masks").exists()
    # the demo refuses it before fetching any data
    rc, _, err = _run(["demo", "--out", str(tmp_path / "demo"), "--model", "prompt", *cpu],
                      capsys)
    _one_error_line(rc, err, REFUSED)
    assert not (tmp_path / "demo").exists()


# ------------------------------------------------------------------ suggestions and pickers


@pytest.fixture
def zoo_with_prompt(tmp_path, monkeypatch):
    """Shipped: default, a grey 2-D ultrasound model, and a prompt model whose metadata fits
    everything (it must still never be suggested)."""
    folder = tmp_path / "ship"
    folder.mkdir()
    grey = parse_spec(SEG_TINY)
    save_checkpoint(build_model(grey), folder / "default.safetensors", {"task": "default"})
    save_checkpoint(build_model(grey), folder / "breast-us.safetensors",
                    {"task": "breast-us", "fits": {"kind": "2d", "rgb": False, "modality": "US",
                                                   "keywords": ["breast"]}})
    save_checkpoint(_prompt_model(), folder / "prompt.safetensors",
                    {"task": "prompt", "fits": {"kind": "3d", "rgb": False, "modality": "CT",
                                                "keywords": ["breast", "lung"]}})
    monkeypatch.setattr("llm4seg_core.paths.shipped_models_dirs", lambda: [folder])
    return folder


def test_suggestions_never_include_a_prompt_model(zoo_with_prompt, tmp_path):
    store = ModelStore(tmp_path / "store")
    # a prompt model imported under another task's name is a prompt task too
    store.save(_prompt_model(), task="clicks")
    profiles = {p.task: p for p in task_profiles(store)}
    assert profiles["prompt"].prompt and profiles["clicks"].prompt
    assert not profiles["breast-us"].prompt and not profiles["default"].prompt
    for image in (ImageInfo("3d", modality="CT", names=("lung breast",)),
                  ImageInfo("2d", modality="US", names=("breast",)), ImageInfo("2d", rgb=True),
                  ImageInfo("3d")):
        tasks = [s.task for s in suggest_models(image, store)]
        assert tasks and "prompt" not in tasks and "clicks" not in tasks, tasks
    assert [s.task for s in suggest_models(ImageInfo("3d", modality="CT"), store)][0] == "default"
    store.save(_prompt_model(), task="prompt")  # a store version of the task: still never
    assert "prompt" not in [s.task for s in suggest_models(ImageInfo("3d"), store)]


def test_the_segment_picker_leaves_prompt_models_out_and_models_list_marks_them(
        zoo_with_prompt, tmp_path, capsys):
    from llm4seg_napari.choices import model_choices, prompt_model_choices

    store = ModelStore(tmp_path / "store")
    seg = store.save(build_model(parse_spec(SEG_TINY)))
    p1 = store.save(_prompt_model(), task="prompt")
    p2 = store.save(_prompt_model(), task="prompt")
    other = store.save(_prompt_model(), task="clicks")
    args = [c.arg for c in model_choices(store)]
    texts = " ".join(c.text for c in model_choices(store))
    assert seg.name in args and "breast-us" in args
    for gone in ("prompt", "clicks", p1.name, p2.name, other.name, "prompt-llm4seg"):
        assert gone not in args, gone
    assert "prompt" not in texts
    prompt_args = [c.arg for c in prompt_model_choices(store)]
    assert prompt_args[:3] == ["prompt", p2.name, p1.name]
    assert "clicks" in prompt_args and other.name in prompt_args
    assert seg.name not in prompt_args and "prompt-cmunext" in prompt_args
    rc, out, _ = _run(["models", "list", "--store", str(store.root)], capsys)
    assert rc == 0
    heading = next(line for line in out.splitlines() if line.startswith("task prompt:"))
    assert f"current {p2.name}" in heading and "prompt model" in heading
    assert p1.name in out and p2.name in out
    assert "prompt model" not in next(line for line in out.splitlines()
                                      if line.startswith("task default:"))


def test_a_prompt_picker_without_a_prompt_model_says_so(tmp_path, no_shipped_prompt_model):
    from llm4seg_napari.choices import prompt_model_choices

    choices = prompt_model_choices(ModelStore(tmp_path / "empty"))
    assert choices[0].arg == "prompt" and not choices[0].enabled
    assert "no prompt model yet" in choices[0].text
    assert [c.arg for c in choices[1:]] == ["prompt-llm4seg", "prompt-cmunext"]


# ------------------------------------------------------------------ fine-tuning


def test_correction_objects_are_the_labels_of_the_corrected_slices_and_where_they_end():
    vol, lab = _disc_volume()
    corrected = np.zeros_like(lab)
    corrected[[6, 7]] = lab[[6, 7]]  # the disc is on 6, not on 7: an "it ended" item
    corrected[6, 0:3, 0:3] = 2  # 9 pixels of another label
    corrected[6, 39, 39] = 3  # one stray pixel: too small
    objs = correction_objects(CorrectionSet(vol, corrected, [6, 7]))
    got = [(o.z, o.value, o.ended, [dz for dz, _ in o.neighbours]) for o in objs]
    assert got == [(6, 1, False, []), (6, 2, False, []), (7, 1, True, [-1]), (7, 2, True, [-1])]
    cs, _ = _corrections((3, 4))
    objs = correction_objects(cs)
    assert [(o.z, [dz for dz, _ in o.neighbours]) for o in objs] == [(3, [1]), (4, [-1])]
    assert np.array_equal(objs[0].neighbours[0][1], lab[4] == 1)


def test_finetune_prompt_learns_a_bright_disc_and_reports_like_finetune():
    cs, _ = _corrections((3, 4))
    model = _prompt_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objs = correction_objects(cs)
    inputs = _Inputs(model.spec, cs)
    scored = [inputs.item(o, *_first_prompts(o)) for o in objs]
    loss0 = evaluate(model, scored, device="cpu")["val_loss"]
    progress, metrics = [], []
    result = finetune_prompt(model, cs, LEARN, Callbacks(
        on_progress=lambda d, t: progress.append((d, t)), on_metrics=metrics.append))
    assert not result.cancelled and result.steps == 30
    assert progress[0] == (0, 30) and progress[-1] == (30, 30) and len(progress) == 31
    losses = [m["loss"] for m in result.history]
    assert metrics == result.history and len(losses) == 30  # a point a step for 30 steps
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert result.best_metrics["train_loss"] < 0.5 * loss0
    assert result.best_metrics["train_dice"] > 0.8
    assert {"train_loss", "train_dice", "train_iou"} == set(result.best_metrics)
    assert result.info["cached_encoder"] is False and result.info["objects"] == 2
    after = model.state_dict()
    changed = [k for k in before if before[k].dtype.is_floating_point
               and not torch.equal(before[k], after[k])]
    assert any(k.startswith("net.stem") or "encoder" in k for k in changed)
    assert set(result.best_state) == set(model.stored_state_dict())
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_finetune_prompt_cancel_restores_the_weights_and_refuses_a_segmentation_model():
    cs, _ = _corrections((3, 4))
    model = _prompt_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    result = finetune_prompt(model, cs, LEARN, Callbacks(
        on_progress=lambda d, t: steps.append(d), cancel=lambda: len(steps) > 3))
    assert result.cancelled and result.steps == 3 and not result.best_metrics
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(LLM4SegError, match="takes no prompt channels"):
        finetune_prompt(build_model(parse_spec(SEG_TINY)), cs, FAST)


def test_empty_corrections_are_refused_with_a_clear_error(tmp_path):
    from llm4seg_core.loop import finetune_corrections

    vol, lab = _disc_volume()
    with pytest.raises(LLM4SegError, match="no corrected slices"):
        CorrectionSet(vol, lab, [])
    store = ModelStore()
    store.save(_prompt_model(), task="prompt")
    background = CorrectionSet(vol, np.zeros_like(lab), [0, 7])  # corrected, but no object
    with pytest.raises(LLM4SegError, match=r"slices \[0, 7\] hold no object"):
        finetune_corrections("prompt", background, FAST, store=store)
    assert len(store.versions(task="prompt")) == 1  # nothing saved


def test_finetune_corrections_of_a_prompt_model_saves_in_task_prompt_only():
    from llm4seg_core.loop import finetune_corrections

    store = ModelStore()
    seg = store.save(build_model(parse_spec(SEG_TINY)))
    base = store.save(_prompt_model(), task="prompt")
    cs, _ = _corrections((3, 4))
    out = finetune_corrections("prompt", cs, FAST, store=store)
    v = out.version
    assert v.task == "prompt" and v.parent == base.name and out.task == "prompt"
    assert store.current("prompt").name == v.name
    assert store.current().name == seg.name  # the default task keeps its current
    assert v.spec.is_prompt_model and out.result.info["cached_encoder"] is False
    # an untrained prompt spec (task default as resolved) is saved in task prompt too
    out2 = finetune_corrections(TINY, cs, FAST, store=store)
    assert out2.version.task == "prompt" and out2.version.parent is None
    assert store.current().name == seg.name and store.current("prompt").name == out2.version.name
    # cancelled: nothing saved
    with pytest.raises(Cancelled):
        finetune_corrections("prompt", cs, FAST, Callbacks(cancel=lambda: True), store=store)
    assert len(store.versions(task="prompt")) == 3


def test_the_correction_loop_completes_a_prompt_model_by_propagation(monkeypatch):
    from llm4seg_core.loop import correction_loop, segment_rest

    def no_segmenter(*_a, **_k):
        raise AssertionError("a prompt model must not go through the Segmenter")

    monkeypatch.setattr(Segmenter, "segment", no_segmenter)
    store = ModelStore()
    store.save(_prompt_model(), task="prompt")
    cs, _ = _corrections((3, 4))
    res = correction_loop("prompt", cs, LEARN, store=store, save=False, device="cpu")
    assert res.outcome.version is None
    assert np.array_equal(res.labels[[3, 4]], cs.labels[[3, 4]])
    assert res.segmented and not set(res.segmented) & {3, 4}
    assert res.summary is not None and not res.summary.changed
    assert "propagated from the corrected slices" in res.summary.describe()
    assert np.array_equal(res.raw, res.labels)
    # segment_rest alone, with the model or a PromptSegmenter
    out = segment_rest(res.outcome.model, cs.volume, cs.labels, [3, 4], device="cpu")
    assert np.array_equal(out, res.raw)
    with pytest.raises(LLM4SegError, match="nothing to propagate"):
        segment_rest(res.outcome.model, cs.volume, np.zeros_like(cs.labels), [3, 4],
                     device="cpu")


def test_cli_finetune_base_prompt_saves_in_task_prompt_and_completes(tmp_path, capsys, no_shipped_prompt_model):
    src, mask, lab = _vol_file(tmp_path)
    store = tmp_path / "store"
    argv = ["finetune", str(src), str(mask), "--slices", "3,4", "--store", str(store),
            "--device", "cpu", "--steps", "3"]
    rc, _, err = _run([*argv, "--base", "prompt", "-q"], capsys)
    _one_error_line(rc, err, "no prompt model: task 'prompt' has no version")
    base = ModelStore(store).save(_prompt_model(), task="prompt")
    out = tmp_path / "done.nii.gz"
    rc, stdout, err = _run([*argv, "--base", "prompt", "--complete", str(out), "--seeded"],
                           capsys)
    assert rc == 0, err
    assert "in task prompt" in stdout and "a prompt model" in err
    assert "propagated from the corrected slices" in err
    v = ModelStore(store).current("prompt")
    assert v.name != base.name and v.parent == base.name
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert got.shape == lab.shape and np.array_equal(got[[3, 4]], lab[[3, 4]])
