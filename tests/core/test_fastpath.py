"""The fast CPU forward (OpenVINO): same labels as PyTorch for every shipped model, its cache
rebuilt when stale, refused when unequal, and no network use."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino)")

from llm4seg_core import fastpath  # noqa: E402
from llm4seg_core.errors import LLM4SegError  # noqa: E402
from llm4seg_core.inference import Segmenter  # noqa: E402
from llm4seg_core.io import read_image  # noqa: E402
from llm4seg_core.paths import datasets_root, shipped_models_dirs  # noqa: E402

# the dataset each shipped model was trained on: its first val case is the real input here
OWN_DATA = {"polyp": "kvasir", "breast-us": "busi", "thyroid-us": "ddti", "skin-lesion": "isic128",
            "fetal-head-us": "hc18", "cardiac-mr": "acdc_slices", "hippocampus-mr": "msd_hippocampus",
            "hn-ct-oar": "openkbp_hn_ct"}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test with its own empty cache folder and nothing held in memory."""
    monkeypatch.setattr(fastpath, "cache_dir", lambda: tmp_path / "openvino")
    fastpath.forget_compiled()
    yield tmp_path / "openvino"
    fastpath.forget_compiled()


def shipped_tasks(prompt: bool = False) -> list[str]:
    """The shipped tasks: segmentation models, or (``prompt``) prompt models."""
    from llm4seg_core.store import read_checkpoint_info

    return sorted({p.stem for d in shipped_models_dirs() for p in d.glob("*.safetensors")
                   if read_checkpoint_info(p).spec.is_prompt_model == prompt})


def demo_ct(n: int = 4, with_label: bool = False):
    """The middle ``n`` slices of the demo CT lung1; ``with_label``: the ``n`` slices around
    its tumour's largest one, and the tumour there (bool)."""
    from llm4seg_core.data import demo_case

    try:
        image, label = demo_case("lung1")
    except LLM4SegError as exc:  # set-up fetches it; say so when it did not
        pytest.skip(str(exc))
    vol = read_image(image)
    mid = vol.n_slices // 2
    if not with_label:
        return dataclasses.replace(vol, array=vol.array[mid - n // 2: mid + n // 2])
    from llm4seg_core.io import read_mask

    tumour = read_mask(label, reference=vol) > 0
    mid = min(max(int(np.argmax(tumour.reshape(len(tumour), -1).sum(1))), n // 2),
              vol.n_slices - n // 2)
    zs = slice(mid - n // 2, mid + n // 2)
    return dataclasses.replace(vol, array=vol.array[zs]), tumour[zs]


def real_input(task: str):
    """The first val case of the model's own dataset when ../shared/data has it, else the demo CT."""
    root = datasets_root()
    name = OWN_DATA.get(task)
    if root is None or name is None or not (root / name).is_dir():
        return demo_ct(), "demo CT"
    folder = root / name
    case = next(line.strip() for line in (folder / f"{name}_val.txt").read_text().splitlines()
                if line.strip())
    images = folder / ("imagesTr" if (folder / "imagesTr").is_dir() else "images")
    path = next(images.glob(f"{case}.*"))
    vol = read_image(path)
    if vol.kind == "volume" and vol.n_slices > 6:
        mid = vol.n_slices // 2
        vol = dataclasses.replace(vol, array=vol.array[mid - 3: mid + 3])
    return vol, f"{name}/{path.name}"


@pytest.mark.parametrize("task", shipped_tasks())
def test_fast_path_labels_equal_the_plain_forward_for_every_shipped_model(task):
    volume, where = real_input(task)
    plain = Segmenter.load(task, device="cpu", engine="torch")
    fast = Segmenter.load(task, device="cpu", engine="openvino")
    lines: list[str] = []
    fwd = fast.forward_for(volume.n_slices, lines.append)
    assert isinstance(fwd, fastpath.CompiledForward), lines
    want = plain.segment(volume)
    got = fast.segment(volume)
    equal = float((want == got).mean())
    assert equal >= 0.999, f"{task} on {where}: only {100 * equal:.3f} % of voxels equal"
    # the logits themselves agree, so equal labels are not a matter of empty masks
    from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input

    spec = plain.model.spec
    x = to_model_input(slice_stack(volume, [0], spec.in_channels),
                       intensity_range(volume, spec.intensity), spec.image_size)
    with torch.inference_mode():
        ref = plain.model(x)
        out = fwd(x)
    assert ref.shape == out.shape
    scale = float(ref.abs().max()) + 1.0
    assert float((ref - out).abs().max()) <= 1e-3 * scale, f"{task}: logits differ"


@pytest.mark.parametrize("task", shipped_tasks(prompt=True))
def test_fast_path_masks_equal_the_plain_forward_for_every_shipped_prompt_model(task):
    from llm4seg_core.prompts import PromptSegmenter, SlicePrompts
    from llm4seg_core.prompts.segment import SliceRequest
    from llm4seg_core.prompts.simulate import box_of, first_click

    volume, tumour = demo_ct(4, with_label=True)
    plain = PromptSegmenter.load(task, device="cpu", engine="torch")
    fast = PromptSegmenter.load(task, device="cpu", engine="openvino")
    assert isinstance(fast._forward_fn(), fastpath.CompiledForward)
    z = int(np.argmax(tumour.reshape(len(tumour), -1).sum(1)))  # the slice with most tumour
    assert tumour[z].any(), "the demo CT's middle slices hold no tumour"
    reqs = [SliceRequest(z, SlicePrompts((first_click(tumour[z]),))),
            SliceRequest(z, SlicePrompts(box=box_of(tumour[z]))),
            SliceRequest(z, None, tumour[z].astype(np.uint8))]
    want = np.stack(plain.segment_slices(volume, reqs))
    got = np.stack(fast.segment_slices(volume, reqs))
    assert want.any(), f"{task} on the demo CT: nothing segmented, the comparison says little"
    equal = float((want == got).mean())
    assert equal >= 0.999, f"{task} on the demo CT: only {100 * equal:.3f} % of pixels equal"
    x = plain.inputs(volume, reqs)
    with torch.inference_mode():
        ref = plain.model(x)
        out = fast._forward_fn()(x)
    scale = float(ref.abs().max()) + 1.0
    assert float((ref - out).abs().max()) <= 1e-3 * scale, f"{task}: logits differ"


def model():
    """A small untrained net (no LLM layer, 64 x 64): quick to convert, for the cache's mechanics."""
    from llm4seg_core.model import build_model, parse_spec

    torch.manual_seed(0)
    return build_model(parse_spec("cmunext,image_size=64"), device="cpu").eval()


def test_a_stale_cache_is_rebuilt(cache):
    m = model()
    key = fastpath.model_key(m)
    assert fastpath.compiled_forward(m, build_if_missing=True) is not None
    assert fastpath.cached_state(key) == "ready"
    fastpath.forget_compiled()
    # another library version wrote it: stale, rebuilt, and the new record names this one
    record = cache / f"{key}.json"
    rec = json.loads(record.read_text())
    rec["versions"]["openvino"] = "0.0.0"
    record.write_text(json.dumps(rec))
    assert fastpath.cached_state(key) == "stale"
    lines: list[str] = []
    assert fastpath.compiled_forward(m, build_if_missing=False, log=lines.append) is None
    assert fastpath.compiled_forward(m, build_if_missing=True, log=lines.append) is not None
    assert any("stale" in t for t in lines), lines
    assert json.loads(record.read_text())["versions"] == fastpath.library_versions()
    # damaged weights in the cache: stale too (never run), then rebuilt
    fastpath.forget_compiled()
    weights = cache / f"{key}.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fastpath.cached_state(key) == "stale"
    assert fastpath.compiled_forward(m, build_if_missing=True) is not None
    assert fastpath.cached_state(key) == "ready"


def test_a_changed_model_is_a_new_key():
    m = model()
    before = fastpath.model_key(m)
    with torch.no_grad():
        next(p for p in m.parameters() if p.requires_grad).add_(1e-3)
    assert fastpath.model_key(m) != before


def test_an_unequal_conversion_is_refused_and_pytorch_used(cache, monkeypatch):
    monkeypatch.setattr(fastpath, "CHECK_MIN_EQUAL", 1.01)  # nothing can pass
    seg = Segmenter(model(), device="cpu")
    lines: list[str] = []
    assert seg.forward_for(500, lines.append) is seg.model
    key = fastpath.model_key(seg.model)
    assert fastpath.cached_state(key) == "refused"
    assert not (cache / f"{key}.xml").exists()
    assert any("not used" in t for t in lines)
    with pytest.raises(LLM4SegError, match="--engine torch"):
        Segmenter(seg.model, device="cpu", engine="openvino").forward_for(1)


def test_auto_converts_only_for_a_long_call_then_uses_the_cache():
    from llm4seg_core.inference import FAST_BUILD_MIN_SLICES

    seg = Segmenter(model(), device="cpu")
    lines: list[str] = []
    assert seg.forward_for(1, lines.append) is seg.model
    assert "too few slices" in lines[-1]
    assert seg.forward_for(FAST_BUILD_MIN_SLICES, lines.append) is not seg.model
    fastpath.forget_compiled()
    assert seg.forward_for(1, lines.append) is not seg.model  # cached now: even one slice uses it
    assert "from the cache" in lines[-1]


def test_a_saved_model_converts_for_any_volume_a_fresh_one_only_for_a_long_call():
    from llm4seg_core.inference import FAST_BUILD_MIN_SLICES, FAST_BUILD_MIN_SLICES_SAVED

    assert Segmenter.load("default", device="cpu").convert_min_slices == FAST_BUILD_MIN_SLICES_SAVED
    assert Segmenter(model(), device="cpu").convert_min_slices == FAST_BUILD_MIN_SLICES
    assert FAST_BUILD_MIN_SLICES_SAVED > 1  # a single picture never waits for a conversion


def test_conversion_needs_no_network(monkeypatch):
    def refuse(*_a, **_k):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    m = model()
    assert fastpath.compiled_forward(m, build_if_missing=True) is not None


def test_other_devices_and_torch_engine_use_the_model():
    seg = Segmenter(model(), device="cpu", engine="torch")
    assert seg.forward_for(1000) is seg.model
    with pytest.raises(LLM4SegError, match="unknown engine"):
        Segmenter(seg.model, device="cpu", engine="fast")


def test_segment_cli_shows_the_engine_choice(tmp_path, capsys):
    from llm4seg_core.cli import main
    from llm4seg_core.data import demo_case

    try:
        image = demo_case("brain1")[0]  # 25 slices of 256 x 256: quick
    except LLM4SegError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "m.nii.gz"
    assert main(["segment", str(image), "-o", str(out), "--engine", "openvino"]) == 0
    assert out.is_file()
    assert "fast CPU path: OpenVINO" in capsys.readouterr().err
