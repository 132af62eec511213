"""Test-time augmentation (llm4seg_core.tta): the 8 rotations/flips averaged, and who uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4seg_core.io import Volume
from llm4seg_core.io.volume import unit_geometry
from llm4seg_core.model import ModelSpec, build_model
from llm4seg_core.paths import shipped_models_dirs
from llm4seg_core.store import read_checkpoint_info, save_checkpoint
from llm4seg_core.training.augment import dihedral
from llm4seg_core.tta import averaged_logits, undo_dihedral

TINY = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32))


@pytest.mark.parametrize("d", range(8))
def test_undo_turns_each_variant_back(d):
    t = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(undo_dihedral(dihedral(t, d), d), t)


def test_averaging_is_exact_for_an_equivariant_forward_and_averages_a_position_bias():
    x = torch.randn(2, 1, 6, 6)
    same = averaged_logits(lambda t: t, x)
    assert torch.allclose(same, x, atol=1e-4)  # logit(mean sigmoid) of 8 equal answers
    ramp = torch.arange(6, dtype=torch.float32).expand(6, 6)  # a bias to the right
    calls = []

    def biased(t):
        calls.append(1)
        return torch.zeros_like(t) + ramp
    out = torch.sigmoid(averaged_logits(biased, torch.zeros(1, 1, 6, 6)))
    assert len(calls) == 8
    # turned back, the 8 ramps point every way: the mean has the dihedral symmetry
    for d in range(8):
        assert torch.allclose(dihedral(out, d), out, atol=1e-6)
    assert not torch.allclose(out, torch.sigmoid(ramp).expand_as(out))


def test_multiclass_labels_follow_the_mean_softmax():
    x = torch.zeros(1, 3, 4, 4)
    x[:, 2] = 5.0
    out = averaged_logits(lambda t: t, x)
    assert out.argmax(1).eq(2).all()


def test_the_segmenter_takes_tta_from_the_checkpoint_and_the_caller(tmp_path):
    from llm4seg_core.inference import Segmenter

    model = build_model(TINY, seed=0)
    on = save_checkpoint(model, tmp_path / "on.safetensors", {"task": "t", "tta": True})
    off = save_checkpoint(model, tmp_path / "off.safetensors", {"task": "t"})
    assert Segmenter.load(str(on), device="cpu").tta
    assert not Segmenter.load(str(off), device="cpu").tta
    assert not Segmenter.load(str(on), device="cpu", tta=False).tta
    seg = Segmenter.load(str(off), device="cpu", tta=True, engine="torch")
    calls = []
    forward = seg.model.forward
    seg.model.forward = lambda t: (calls.append(t.shape), forward(t))[1]
    vol = Volume(np.random.default_rng(0).random((3, 20, 24)).astype(np.float32), *unit_geometry(3))
    labels = seg.segment(vol)
    assert labels.shape == (3, 20, 24)
    assert len(calls) == 8 * -(-3 // seg.batch_size)  # 8 forwards a batch


def test_the_picture_zoo_models_average_the_rotations_and_the_volume_models_do_not():
    folder = shipped_models_dirs()[0]
    for name in ("polyp", "breast-us", "thyroid-us", "skin-lesion", "fetal-head-us"):
        assert read_checkpoint_info(folder / f"{name}.safetensors").meta.get("tta") is True, name
    for name in ("hippocampus-mr", "hn-ct-oar", "default"):  # trained without flips / volumes
        assert not read_checkpoint_info(folder / f"{name}.safetensors").meta.get("tta"), name


def test_the_prompt_segmenter_turns_the_prompts_with_the_image():
    """With tta, each of the 8 forwards sees image and prompt channels turned together."""
    from llm4seg_core.prompts import Point, PromptSegmenter, SlicePrompts

    spec = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32), prompt_channels=4)
    seg = PromptSegmenter(build_model(spec, seed=0), device="cpu", engine="torch", tta=True)
    seen = []
    forward = seg.model.forward
    seg.model.forward = lambda t: (seen.append(t.clone()), forward(t))[1]
    vol = Volume(np.random.default_rng(1).random((1, 32, 32)).astype(np.float32), *unit_geometry(3))
    mask = seg.segment_slice(vol, 0, SlicePrompts((Point(4, 20),)))
    assert mask.shape == (32, 32) and len(seen) == 8
    for d, t in enumerate(seen):  # the click disc stays on the same image pixel
        back = undo_dihedral(t, d)
        assert torch.equal(back, seen[0])


def test_keep_largest_region_per_label_and_slice():
    from llm4seg_core.postprocess import keep_largest_region

    lab = np.zeros((2, 12, 12), np.uint8)
    lab[0, 1:6, 1:6] = 1  # 25 px
    lab[0, 8:10, 8:10] = 1  # 4 px: dropped
    lab[0, 0, 11] = 2  # another label's only region: kept
    lab[1, 9:11, 0:2] = 1  # slice 1: its own largest region
    lab[1, 3, 3] = 1  # 1 px: dropped
    out = keep_largest_region(lab)
    assert out[0, 8:10, 8:10].max() == 0 and (out[0, 1:6, 1:6] == 1).all() and out[0, 0, 11] == 2
    assert out[1, 3, 3] == 0 and (out[1, 9:11, 0:2] == 1).all()
    assert lab[0, 8, 8] == 1  # the input is not changed
    diag = np.zeros((4, 4), np.uint8)
    diag[0, 0] = diag[1, 1] = 1  # 8-connected: one region
    assert keep_largest_region(diag).sum() == 2


def test_the_segmenter_keeps_one_region_where_the_checkpoint_says(tmp_path):
    from llm4seg_core.inference import Segmenter

    model = build_model(TINY, seed=0)
    on = save_checkpoint(model, tmp_path / "on.safetensors", {"task": "t", "one_object": True})
    seg = Segmenter.load(str(on), device="cpu", engine="torch")
    assert seg.one_object and not seg.tta
    logits = -torch.ones(1, 1, 32, 32)
    logits[..., 2:12, 2:12] = 1.0  # a large region
    logits[..., 24:28, 24:28] = 1.0  # and a stray one
    seg.model.forward = lambda t: logits.expand(len(t), -1, -1, -1)
    vol = Volume(np.zeros((2, 32, 32), np.float32), *unit_geometry(3))
    kept = seg.segment(vol)
    seg.one_object = False
    raw = seg.segment(vol)
    assert raw[:, 24:28, 24:28].all() and raw[:, 2:12, 2:12].all()
    assert not kept[:, 24:28, 24:28].any() and kept[:, 2:12, 2:12].all()
    from llm4seg_core.postprocess import keep_largest_region
    assert np.array_equal(kept, keep_largest_region(raw))
