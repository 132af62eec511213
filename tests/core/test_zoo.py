"""Every model shipped in resources/models loads, names its task and labels, and segments."""

from __future__ import annotations

import numpy as np
import pytest

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
    seg = Segmenter.load(str(path), device="cpu")
    assert seg.trained
    rng = np.random.default_rng(0)
    if info.spec.in_channels == 3:
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
