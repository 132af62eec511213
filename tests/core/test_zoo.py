"""Every model shipped in resources/models loads, names its task and labels, and segments."""

from __future__ import annotations

import numpy as np
import pytest

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import Volume
from llm4seg_core.io.volume import unit_geometry
from llm4seg_core.paths import shipped_models_dirs
from llm4seg_core.store import read_checkpoint_info

SHIPPED = sorted(shipped_models_dirs()[0].glob("*.safetensors"))


def test_the_zoo_is_there():
    names = {p.stem for p in SHIPPED}
    assert {"default", "polyp", "breast-us"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_segments_a_tiny_input(path):
    from llm4seg_core.inference import Segmenter

    info = read_checkpoint_info(path)
    if path.stem != "default":  # the zoo models carry their task, label names and data license
        assert info.meta["task"] == path.stem
        assert [lab["name"] for lab in info.meta["labels"]] == list(info.spec.label_names)
        assert info.meta["data"]["license"]
    if info.spec.is_prompt_model:  # task "prompt": it answers prompts, Segment refuses it
        from llm4seg_core.prompts import Point, PromptSegmenter, SlicePrompts

        with pytest.raises(LLM4SegError, match="prompt model"):
            Segmenter.load(str(path), device="cpu")
        seg = PromptSegmenter.load(str(path), device="cpu")
        assert seg.trained
        yy, xx = np.mgrid[:40, :56]
        disc = np.where((yy - 20) ** 2 + (xx - 28) ** 2 < 100, 300, -200)[None]
        vol = Volume(np.repeat(disc, 2, axis=0).astype(np.int16), *unit_geometry(3))
        mask = seg.segment_slice(vol, 1, SlicePrompts((Point(20, 28),)))
        assert mask.shape == (40, 56) and mask.dtype == np.uint8 and int(mask.max()) <= 1
        return
    seg = Segmenter.load(str(path), device="cpu")
    assert seg.trained
    rng = np.random.default_rng(0)
    rgb = (info.meta.get("fits") or {}).get("rgb", info.spec.in_channels == 3)
    if rgb:
        vol = Volume((rng.random((40, 56, 3)) * 255).astype(np.uint8), *unit_geometry(2), kind="image2d",
                     is_rgb=True)
    else:
        vol = Volume((rng.random((2, 40, 56)) * 400 - 200).astype(np.int16), *unit_geometry(3))
    labels = seg.segment(vol)
    assert labels.shape == vol.spatial_shape and labels.dtype == np.uint8
    assert int(labels.max()) <= max(info.spec.num_classes, 1)


def test_polyp_model_finds_the_polyp_in_real_pictures():
    """The shipped polyp model on three Kvasir val pictures (skipped without ../shared/data)."""
    from pathlib import Path

    from llm4seg_core.inference import Segmenter
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_core.metrics import dice

    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "kvasir"
    if not root.is_dir():
        pytest.skip("../shared/data/kvasir is not on this machine")
    cases = (root / "kvasir_val.txt").read_text().split()[:3]
    seg = Segmenter.load(str(shipped_models_dirs()[0] / "polyp.safetensors"), device="cpu")
    scores = []
    for case in cases:
        image = next((root / "images").glob(f"{case}.*"))
        vol = read_image(image)
        scores.append(dice(seg.segment(vol), read_mask(next((root / "masks" / "0").glob(f"{case}.*")))))
    assert np.mean(scores) > 0.5, scores  # val mean is 0.78 (model card); the default scores 0


def test_demo_pictures_segment_with_the_zoo(tmp_path, monkeypatch, capsys):
    """`llm4seg demo --pictures`: one ultrasound and one endoscopy picture, scored and overlaid."""
    import argparse

    from llm4seg_core.cli import demo
    from llm4seg_core.paths import datasets_root

    root = datasets_root()
    if root is None or not all((root / d).is_dir() for d, _, _ in demo.DEMO_PICTURES):
        pytest.skip("the labelled datasets (shared/data: busi, kvasir) are absent on this machine")
    monkeypatch.setenv("LLM4SEG_HOME", str(tmp_path / "home"))
    demo._pictures(argparse.Namespace(device="cpu", store=None), tmp_path)
    out = capsys.readouterr().out
    for _, task, _ in demo.DEMO_PICTURES:
        assert f"zoo model {task!r}" in out
    dices = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "Dice against" in line]
    assert len(dices) == 2 and all(d > 0.5 for d in dices)  # the zoo finds both structures
    assert len(list(tmp_path.glob("*_overlay.png"))) == 2


def test_demo_pictures_without_data_says_why(tmp_path, monkeypatch, capsys):
    import argparse

    from llm4seg_core.cli import demo

    monkeypatch.setattr("llm4seg_core.paths.datasets_root", lambda: None)
    demo._pictures(argparse.Namespace(device="cpu", store=None), tmp_path)
    assert "no package registry ships" in capsys.readouterr().err


def test_shipped_prompt_model_finds_the_demo_tumours_from_a_box_or_a_click(tmp_path, capsys):
    """Out of the box, the CLI path a user takes (``segment --prompts``) on the demo CTs, on the
    slice where each tumour is largest: a box around it finds both tumours (lung1's is 347
    pixels of 512 x 512: the box's window makes that possible), one click inside finds lung2's.
    One click does not find lung1's (Dice 0.08 measured; docs/benchmarks.md): not asserted."""
    import json

    from llm4seg_core.cli import main
    from llm4seg_core.data import demo_case, demo_data_available
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_core.metrics import overlap_scores
    from llm4seg_core.prompts.simulate import box_of, first_click

    if not demo_data_available():
        pytest.skip("demo data not fetched (llm4seg data fetch)")
    scores = {}
    for case, kind in (("lung1", "box"), ("lung2", "box"), ("lung2", "point")):
        image, label = demo_case(case)
        tumour = read_mask(label, reference=read_image(image)) > 0
        z = int(np.argmax(tumour.reshape(len(tumour), -1).sum(1)))
        if kind == "box":
            b = box_of(tumour[z])
            prompt = {"type": "box", "z": z, "yx0": [b.y0, b.x0], "yx1": [b.y1, b.x1]}
        else:
            c = first_click(tumour[z])
            prompt = {"type": "point", "zyx": [z, c.y, c.x]}
        prompts = tmp_path / f"{case}-{kind}.json"
        prompts.write_text(json.dumps([prompt]))
        out = tmp_path / f"{case}-{kind}.nii.gz"
        assert main(["segment", str(image), "-o", str(out), "--prompts", str(prompts),
                     "--device", "cpu", "-q"]) == 0, capsys.readouterr().err
        got = read_mask(out, reference=read_image(image)) > 0
        assert not got[np.arange(len(got)) != z].any()  # only the prompted slice
        scores[f"{case} {kind}"] = overlap_scores(got[z], tumour[z])["dice"]
    assert min(scores.values()) >= 0.7, scores
