"""Segmenter: shapes, batching, slice subsets, progress, cancel, normalisation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from llm4seg_core.errors import Cancelled, LLM4SegError
from llm4seg_core.inference import Segmenter
from llm4seg_core.io import Volume
from llm4seg_core.jobs import Callbacks
from llm4seg_core.model import ModelSpec, build_model
from llm4seg_core.preprocess import CT_MODEL_RANGE, intensity_range, looks_like_ct, window_limits

SMALL = ModelSpec(llm_mode="none", image_size=64, dims=(8, 8, 16, 16, 32))


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter(build_model(SMALL), device="cpu", batch_size=2, trained=False)


def test_output_shape_dtype_and_batch_independence(segmenter, small_ct):
    labels = segmenter.segment(small_ct)
    assert labels.shape == small_ct.array.shape and labels.dtype == np.uint8
    one = Segmenter(segmenter.model, device="cpu", batch_size=1).segment(small_ct)
    five = Segmenter(segmenter.model, device="cpu", batch_size=5).segment(small_ct)
    # eval-mode BatchNorm: results do not depend on how slices are batched
    assert np.array_equal(labels, one) and np.array_equal(labels, five)


def test_labels_match_a_direct_forward(segmenter, small_ct):
    """The Segmenter's label for a slice is the model's own output, resized back."""
    labels = segmenter.segment(small_ct)
    lo, hi = CT_MODEL_RANGE
    x = torch.tensor(small_ct.array[2:3, None], dtype=torch.float32).clamp(lo, hi)
    x = (x - lo) / (hi - lo) * 2 - 1  # 48 -> 64: upsampling, no antialias effect
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        logits = segmenter.model(x)
    logits = torch.nn.functional.interpolate(logits, size=(48, 48), mode="bilinear", align_corners=False)
    expected = (logits[0, 0] > 0).numpy().astype(np.uint8)
    assert np.array_equal(labels[2], expected)


def test_slice_subset_writes_only_those_slices(segmenter, small_ct):
    out = np.full(small_ct.array.shape, 7, np.uint8)
    full = segmenter.segment(small_ct)
    segmenter.segment(small_ct, slices=[1, 3], out=out)
    assert np.all(out[[0, 2, 4]] == 7)
    assert np.array_equal(out[[1, 3]], full[[1, 3]])


def test_progress_and_cancel(segmenter, small_ct):
    calls = []
    segmenter.segment(small_ct, callbacks=Callbacks(on_progress=lambda d, t: calls.append((d, t))))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5) and len(calls) == 4  # 0, 2, 4, 5
    flag = threading.Event()
    out = np.full(small_ct.array.shape, 7, np.uint8)

    def cancel_after_first(done, total):
        if done >= 2:
            flag.set()

    with pytest.raises(Cancelled):
        segmenter.segment(small_ct, callbacks=Callbacks(on_progress=cancel_after_first, cancel=flag),
                          out=out)
    assert (out[:2] != 7).all() and (out[2:] == 7).all()  # the first batch is in, the rest untouched


def test_bad_arguments(segmenter, small_ct):
    with pytest.raises(LLM4SegError, match="slice indices"):
        segmenter.segment(small_ct, slices=[9])
    with pytest.raises(LLM4SegError, match="shape"):
        segmenter.segment(small_ct, out=np.zeros((2, 2), np.uint8))
    with pytest.raises(LLM4SegError):
        Segmenter(segmenter.model, batch_size=0)


def test_2d_rgb_and_three_channel_inputs(small_ct):
    rgb = Volume(
        array=np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8),
        spacing=(1.0, 1.0), origin=(0.0, 0.0), direction=(1.0, 0.0, 0.0, 1.0),
        kind="image2d", modality=None, is_rgb=True, source="x.png", meta={},
    )
    for spec in (SMALL, SMALL.with_(in_channels=3)):
        seg = Segmenter(build_model(spec), device="cpu")
        assert seg.segment(rgb).shape == (40, 30)
        assert seg.segment(small_ct).shape == small_ct.array.shape


def test_ct_normalisation_ignores_display_window(small_ct):
    assert looks_like_ct(small_ct)
    assert intensity_range(small_ct) == CT_MODEL_RANGE
    assert window_limits("lung") == (-1350.0, 150.0)
    mr = Volume(**{**small_ct.__dict__, "array": (small_ct.array + 1000).astype(np.int16)})
    assert not looks_like_ct(mr)
    lo, hi = intensity_range(mr)
    assert -25 <= lo < hi <= 1100  # percentiles of the data, not the CT range


def test_device_errors():
    from llm4seg_core.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(LLM4SegError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(LLM4SegError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_device_bf16_layer_and_agreement(small_ct):
    model = build_model(ModelSpec(image_size=64), device="cpu")
    cpu = Segmenter(model, device="cpu").segment(small_ct)
    gpu_seg = Segmenter(build_model(ModelSpec(image_size=64), device="cpu"), device="auto")
    assert gpu_seg.device.type == "cuda"
    assert next(gpu_seg.model.llm_block.llm.parameters()).dtype == torch.bfloat16
    gpu = gpu_seg.segment(small_ct)
    assert (gpu == cpu).mean() > 0.95  # bf16 vs fp32: nearly all voxels agree
