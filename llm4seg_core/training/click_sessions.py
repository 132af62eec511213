"""Simulated click sessions while a prompt model trains: its own masks, corrected by clicks.

The prompted items (:mod:`llm4seg_core.datasets.prompted`) give the network
a first click, or a box, and a few clicks at the errors of a *perturbed copy*
of the target. A user's later clicks correct the network's *own* mask, and
the benchmark's simulated sessions showed a model trained only on copies
does not converge (clicks 2-20 barely helped). So, as in iterative training
of interactive segmentation (Mahadevan et al., BMVC 2018; Sofiiuk et al.,
RITM, 2022), a share of the training batches first runs a short session
without gradients: the model predicts, a click goes to the centre of the
largest error region of that prediction against the target (positive where
the object was missed, negative where it is not the object), the prediction
becomes the guide mask, and again, 1 to ``max_rounds`` times. The batch then
trains on the prompts and guide the session ended with.

Only items with a click or a box take part; pure guide items (propagation,
"the object ended") stay as drawn. With ``keep_first`` the items that hold
only a first prompt (one positive click, or a box, no guide) stay as drawn
too: a session then never replaces the "guess from one click" items, whose
share the plain sessions had cut (the first-click Dice fell with them).
Everything happens at the model grid, after the augmentation, with the same disc clicks as
:func:`~llm4seg_core.prompts.encode.click_map`. The draws come from the
step's generator, so a resumed run sees what an uninterrupted one saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.prompts.encode import CLICK_RADIUS
from llm4seg_core.prompts.simulate import next_click
from llm4seg_core.training.losses import IGNORE_LABEL
from llm4seg_core.training.params import train_mode

__all__ = ["ClickSessions", "first_prompt_only"]

POS, NEG, BOX, GUIDE = -4, -3, -2, -1
"""The prompt channels, counted from the end of an item's channels (encode.CHANNELS)."""


@dataclass(frozen=True)
class ClickSessions:
    """A Trainer batch hook: ``share`` of the batches run a session of 1..``max_rounds``
    corrections of the model's own mask before the training step."""

    share: float = 0.5
    max_rounds: int = 4
    keep_first: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0 or self.max_rounds < 1:
            raise LLM4SegError("click sessions: share in [0, 1], max_rounds >= 1")

    @classmethod
    def parse(cls, text: str) -> ClickSessions:
        """``"SHARE"``, ``"SHARE,ROUNDS"`` or ``"SHARE,ROUNDS,keep-first"`` (the command
        line's form)."""
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if len(parts) == 3 and parts[2] == "keep-first":
            try:
                return cls(float(parts[0]), int(parts[1]), keep_first=True)
            except ValueError:
                pass
        try:
            if len(parts) == 1:
                return cls(float(parts[0]))
            if len(parts) == 2:
                return cls(float(parts[0]), int(parts[1]))
        except ValueError:
            pass
        raise LLM4SegError(f"click sessions {text!r}: give SHARE, SHARE,ROUNDS or "
                           "SHARE,ROUNDS,keep-first (e.g. 0.5,4)")

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        rng = np.random.default_rng(seed)
        if self.share <= 0 or rng.uniform() >= self.share:
            return x
        prompted = ((x[:, POS].flatten(1).amax(1) > 0) | (x[:, BOX].flatten(1).amax(1) > 0))
        if self.keep_first:
            prompted &= ~first_prompt_only(x)
        idx = torch.nonzero(prompted).flatten()
        if idx.numel() == 0:
            return x
        rounds = int(rng.integers(1, self.max_rounds + 1))
        x = x.clone()
        sub = x[idx]
        targets = (y[idx] == 1).cpu().numpy()
        known = (y[idx] != IGNORE_LABEL).cpu().numpy()
        size = sub.shape[-1]
        yy, xx = np.mgrid[:sub.shape[-2], :size]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for _ in range(rounds):
                    pred = (model(sub)[:, 0] > 0).cpu().numpy()
                    for j in range(len(idx)):
                        p = pred[j] & known[j]
                        click = next_click(targets[j], p, rng)
                        sub[j, GUIDE] = torch.from_numpy(pred[j].astype(np.float32)).to(sub.device)
                        if click is None:
                            continue
                        cy, cx = click.y, click.x
                        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= CLICK_RADIUS * CLICK_RADIUS
                        ch = POS if click.positive else NEG
                        sub[j, ch][torch.from_numpy(disc).to(sub.device)] = 1.0
        finally:
            if was_training:
                train_mode(model)
        x[idx] = sub
        return x


def first_prompt_only(x: torch.Tensor) -> torch.Tensor:
    """Per item of a batch: True where the prompts are only a first one: no guide,
    no negative click, and either a box without clicks or one positive click
    (one connected disc in the positive channel)."""
    flat = x.flatten(2)
    neg = (flat[:, NEG] > 0).any(1)
    box = (flat[:, BOX] > 0).any(1)
    guide = (flat[:, GUIDE] > 0).any(1)
    pos = (x[:, POS] > 0).cpu().numpy()
    discs = torch.tensor([ndimage.label(p, structure=np.ones((3, 3)))[1] for p in pos],
                         device=x.device)
    one_click = (discs == 1) & ~box
    box_only = box & (discs == 0)
    return ~guide & ~neg & (one_click | box_only)
