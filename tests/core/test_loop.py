"""llm4seg_core.loop: keep what continues the corrections, fine-tune and save, segment the rest."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from llm4seg_core.datasets import CorrectionSet
from llm4seg_core.errors import Cancelled
from llm4seg_core.jobs import Callbacks
from llm4seg_core.loop import (
    ContinuationSummary, correction_loop, finetune_corrections, keep_continuations, segment_rest,
)
from llm4seg_core.model import ModelSpec, build_model
from llm4seg_core.store import ModelStore, resolve_model
from llm4seg_core.training import FinetuneConfig

from .conftest import make_ct

TINY = ModelSpec(llm_mode="none", image_size=32, dims=(8, 8, 16, 16, 32))
FAST = FinetuneConfig(steps=2, batch_size=1, crop_size=16, device="cpu")


def corrected_volume() -> np.ndarray:
    """Label 1 outlined on slices 2 and 6; the prediction continues it on 3, adds a blob on 4."""
    lab = np.zeros((9, 20, 20), np.uint8)
    lab[2, 8:12, 8:12] = 1  # corrected
    lab[6, 8:12, 8:12] = 1  # corrected
    lab[3, 8:12, 8:12] = 1  # continues slice 2: kept
    lab[4, 0:3, 0:3] = 1  # far from anything corrected: removed
    return lab


def test_keep_continuations_keeps_removes_and_fills() -> None:
    lab = corrected_volume()
    out, s = keep_continuations(lab, [2, 6], pixel_size=(1.0, 1.0), fill_between=True)
    assert isinstance(s, ContinuationSummary) and s.seeded
    assert (s.voxels_removed, s.regions_dropped) == (9, 1)
    assert not out[4, 0:3, 0:3].any()
    np.testing.assert_array_equal(out[3], lab[3])  # the continuation stays as predicted
    np.testing.assert_array_equal(out[[2, 6]], lab[[2, 6]])  # the corrections are untouched
    # the gap 3..5 between the two outlines: slices 4 and 5 get the interpolated square
    assert s.gaps_filled == 1 and s.voxels_filled == 32
    assert out[4, 8:12, 8:12].all() and out[5, 8:12, 8:12].all()
    assert int(np.count_nonzero(out)) == 16 * 5
    assert "9 voxels in 1 region(s) removed" in s.describe()
    assert "32 voxels filled in 1 gap(s)" in s.describe()
    assert s.describe(whose="your").startswith("kept what continues your corrections")

    nofill, s2 = keep_continuations(lab, [2, 6], pixel_size=(1.0, 1.0), fill_between=False)
    assert (s2.voxels_filled, s2.gaps_filled, s2.voxels_removed) == (0, 0, 9)
    assert not nofill[[4, 5]].any() and "filled" not in s2.describe()
    assert not (nofill.astype(bool) & ~out.astype(bool)).any()  # filling only adds


def test_keep_continuations_without_seeds_or_on_a_picture() -> None:
    lab = corrected_volume()
    out, s = keep_continuations(lab, [0, 8], pixel_size=(1.0, 1.0))  # slices without a label
    assert not s.seeded and not s.changed and "hold no label" in s.describe()
    np.testing.assert_array_equal(out, lab)
    pic = np.ones((5, 5), np.uint8)
    out2, s2 = keep_continuations(pic, [0], pixel_size=(1.0, 1.0))
    np.testing.assert_array_equal(out2, pic)
    assert "2-D" in s2.describe()


def _corrections() -> CorrectionSet:
    vol = make_ct(n=4, size=32)
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[[1, 3], 12:20, 10:18] = 1
    return CorrectionSet(vol, labels, [1, 3])


@pytest.fixture
def store_with_base(tmp_path) -> tuple[ModelStore, str]:
    store = ModelStore(tmp_path / "models")
    info = store.save(build_model(TINY, seed=0), note="base")
    return store, info.name


def test_finetune_corrections_saves_a_child_of_the_base(store_with_base) -> None:
    store, base = store_with_base
    before = {k: v.clone() for k, v in resolve_model(base, store).model.state_dict().items()}
    steps = []
    outcome = finetune_corrections(base, _corrections(), FAST,
                                   Callbacks(on_progress=lambda d, t: steps.append(d)), store=store)
    assert steps[-1] == 2
    v = outcome.version
    assert v is not None and v.parent == base == outcome.parent and v.name != base
    assert store.current().name == v.name and [x.name for x in store.versions()] == [base, v.name]
    assert v.data["slices"] == [1, 3] and v.data["base_model"] == base
    assert "train_dice" in v.metrics and outcome.base.name == base
    # the base version is as it was: the fine-tune ran on a fresh copy
    after = resolve_model(base, store).model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)

    # an untrained spec as base: no parent; save=False stores nothing
    spec = "cmunext,image_size=32,dims=8:8:16:16:32"
    o2 = finetune_corrections(spec, _corrections(), FAST, store=store, name="from-spec")
    assert o2.version.name == "from-spec" and o2.version.parent is None
    o3 = finetune_corrections(spec, _corrections(), FAST, store=store, save=False)
    assert o3.version is None and len(store.versions()) == 3


def test_cancel_before_start_saves_nothing(store_with_base) -> None:
    store, base = store_with_base
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="nothing was saved"):
        finetune_corrections(base, _corrections(), FAST, Callbacks(cancel=stop), store=store)
    assert [v.name for v in store.versions()] == [base] and store.current().name == base


def test_segment_rest_and_the_whole_loop(store_with_base) -> None:
    store, base = store_with_base
    cs = _corrections()
    model = build_model(TINY, seed=1)
    seen = []
    out = segment_rest(model, cs.volume, cs.labels, cs.slices,
                       Callbacks(on_progress=lambda d, t: seen.append((d, t))), device="cpu")
    assert out is not cs.labels and out.dtype == np.uint8
    np.testing.assert_array_equal(out[[1, 3]], cs.labels[[1, 3]])
    assert seen[-1] == (2, 2)  # slices 0 and 2 only

    res = correction_loop(base, cs, FAST, store=store, save=False, device="cpu")
    assert res.segmented == [0, 2] and res.outcome.version is None
    assert res.summary is not None and res.summary.seeded
    np.testing.assert_array_equal(res.labels[[1, 3]], cs.labels[[1, 3]])
    # slice 0 lies outside the corrected slices: the filter only removes there
    assert not (res.labels[0].astype(bool) & ~res.raw[0].astype(bool)).any()
    raw_only = correction_loop(base, cs, FAST, store=store, save=False, keep=False, device="cpu")
    assert raw_only.summary is None and raw_only.labels is raw_only.raw
    assert [v.name for v in store.versions()] == [base]
