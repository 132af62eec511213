"""Simulated click sessions in prompt-model training (training/click_sessions.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.network import build_model
from llm4seg_core.model.spec import parse_spec
from llm4seg_core.prompts.simulate import next_click
from llm4seg_core.training.click_sessions import (
    BOX, GUIDE, NEG, POS, ClickSessions, first_prompt_only,
)

TINY = "prompt-cmunext,image_size=32,dims=8:8:16:16:32"


def disc(cy, cx, r, size=32):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_session_click_goes_to_the_largest_error():
    target = disc(16, 16, 8)
    rng = np.random.default_rng(0)
    c = next_click(target, np.zeros_like(target), rng)
    y, x, positive = c.y, c.x, c.positive
    assert positive and target[y, x]
    assert (y - 16) ** 2 + (x - 16) ** 2 <= 5 * 5  # the inner half of the missed object
    stray = target | disc(4, 27, 3)
    c = next_click(target, stray, rng)
    y, x, positive = c.y, c.x, c.positive
    assert not positive and stray[y, x] and not target[y, x]
    assert next_click(target, target.copy(), rng) is None


def batch():
    """Item 0 has a positive click on a disc object; item 1 only a guide (a propagation item)."""
    x = torch.zeros(2, 5, 32, 32)
    x[:, 0] = torch.from_numpy(disc(16, 16, 8).astype(np.float32))
    x[0, POS][torch.from_numpy(disc(16, 16, 3))] = 1.0
    x[1, GUIDE] = torch.from_numpy(disc(15, 15, 7).astype(np.float32))
    y = torch.from_numpy(np.stack([disc(16, 16, 8), disc(16, 16, 8)]).astype(np.uint8))
    return x, y


def test_a_session_rewrites_only_prompted_items_and_restores_training_mode():
    model = build_model(parse_spec(TINY), seed=0)
    model.train()
    x, y = batch()
    out = ClickSessions(share=1.0, max_rounds=3)(model, x, y, torch.Generator().manual_seed(1))
    assert model.training
    assert torch.equal(out[1], x[1])  # the guide item is left as drawn
    assert torch.equal(x, batch()[0])  # the input batch is not changed in place
    # item 0: the guide is now the model's own mask, the first click is kept
    with torch.no_grad():
        model.eval()
        first = (model(x[:1])[:, 0] > 0).float()
    assert set(out[0, GUIDE].unique().tolist()) <= {0.0, 1.0}
    assert (out[0, POS] >= x[0, POS]).all()
    assert out[0, POS].sum() + out[0, NEG].sum() >= x[0, POS].sum()
    assert torch.equal(out[0, BOX], x[0, BOX])
    if not torch.equal(first[0], y[0].float()):  # the untrained net errs: a correction came
        assert out[0, POS].sum() + out[0, NEG].sum() > x[0, POS].sum()
    again = ClickSessions(share=1.0, max_rounds=3)(model, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(again, out)  # the step's generator decides: resumable


def test_share_zero_and_bad_settings():
    model = build_model(parse_spec(TINY), seed=0)
    x, y = batch()
    assert ClickSessions(share=0.0)(model, x, y, torch.Generator().manual_seed(0)) is x
    assert ClickSessions.parse("0.5,4") == ClickSessions(0.5, 4)
    assert ClickSessions.parse("0.3") == ClickSessions(0.3)
    for bad in ("", "a", "0.5,x", "2", "0.5,0", "1,2,3"):
        with pytest.raises(LLM4SegError):
            ClickSessions.parse(bad)


def test_keep_first_leaves_first_prompts_as_drawn():
    x = torch.zeros(4, 5, 32, 32)
    x[:, 0] = torch.from_numpy(disc(16, 16, 8).astype(np.float32))
    x[0, POS][torch.from_numpy(disc(16, 16, 3))] = 1.0  # a first click
    x[1, BOX, 6:26, 6:26] = 1.0  # a first box
    x[2, POS][torch.from_numpy(disc(16, 16, 3) | disc(8, 22, 3))] = 1.0  # two clicks
    x[3, POS][torch.from_numpy(disc(16, 16, 3))] = 1.0  # a click on a previous mask
    x[3, GUIDE] = torch.from_numpy(disc(15, 15, 7).astype(np.float32))
    assert first_prompt_only(x).tolist() == [True, True, False, False]
    y = torch.from_numpy(np.stack([disc(16, 16, 8)] * 4).astype(np.uint8))
    model = build_model(parse_spec(TINY), seed=0)
    out = ClickSessions(1.0, 3, keep_first=True)(model, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(out[:2], x[:2])
    assert not torch.equal(out[3, GUIDE], x[3, GUIDE])  # rewritten with the model's own mask
    assert ClickSessions.parse("0.7,4,keep-first") == ClickSessions(0.7, 4, keep_first=True)
    with pytest.raises(LLM4SegError):
        ClickSessions.parse("0.7,4,first")
