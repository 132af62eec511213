"""The segmentation loss and the live fit score.

Binary models: ``bce_weight * BCE + (1 - soft Dice)``; multi-class: ``CE +
(1 - mean soft Dice)``. Two kinds of missing labels:

- target pixels equal to :data:`IGNORE_LABEL` take no part at all;
- ``present`` (per image, per class) says which structures were contoured:
  a class left out of an image is not background there. Its background
  pixels are scored by the marginal cross-entropy (background or any
  uncontoured class is right), and its Dice term skips that image (the
  marginal loss of Shi et al., MedIA 2021, "Marginal loss and exclusion loss
  for partially supervised multi-organ segmentation").
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["IGNORE_LABEL", "batch_dice", "segmentation_loss"]

IGNORE_LABEL = 255
"""Target value that the loss skips (pixels with no label, not background)."""


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5,
                      smooth: float = 1.0, present: torch.Tensor | None = None) -> torch.Tensor:
    """Binary (1 channel): ``bce_weight * BCE-with-logits + (1 - soft Dice)``.

    Multi-class (K channels, target = class indices): ``CE + (1 - mean soft Dice
    of the foreground classes)``. Soft Dice is over the whole batch (smooth 1),
    so that label-free slices do not make it undefined.

    Target pixels equal to :data:`IGNORE_LABEL` (255) take no part in either
    term: partial labels (a structure deliberately left out of pretraining).

    ``present``: bool ``(B, K)`` (K = channels; column 0, background, is
    ignored), False where class k was not contoured in image b. None: every
    class of every image was contoured (the plain loss, unchanged).
    """
    logits = logits.float()
    valid = target != IGNORE_LABEL
    if present is not None:
        present = present.to(device=logits.device, dtype=torch.bool)
        if present.shape != (logits.shape[0], max(logits.shape[1], 2)):
            raise ValueError(f"present must be (batch, classes), not {tuple(present.shape)}")
        if logits.shape[1] == 1:  # binary: an image without the contour teaches nothing
            valid = valid & present[:, 1, None, None]
            present = None
        elif bool(present[:, 1:].all()):
            present = None
    if logits.shape[1] == 1:
        t = torch.where(valid, target, 0).float()
        x = logits[:, 0]
        w = valid.float()
        bce = (F.binary_cross_entropy_with_logits(x, t, reduction="none") * w).sum() / w.sum().clamp_min(1)
        p = torch.sigmoid(x) * w
        inter = (p * t).sum()
        dice = (2 * inter + smooth) / (p.sum() + t.sum() + smooth)
        return bce_weight * bce + (1 - dice)
    t = target.long()
    k = logits.shape[1]
    t0 = torch.where(valid, t, 0)
    onehot = F.one_hot(t0, k).permute(0, 3, 1, 2)
    if present is None:
        ce = F.cross_entropy(logits, t, ignore_index=IGNORE_LABEL)
        w = valid.unsqueeze(1).float()
    else:
        # marginal CE: on a background pixel, background or an uncontoured class is right
        missing = ~present
        missing[:, 0] = False
        allowed = onehot.bool() | ((t0 == 0)[:, None] & missing[:, :, None, None])
        lp = torch.log_softmax(logits, dim=1).masked_fill(~allowed, float("-inf"))
        nll = -torch.logsumexp(lp, dim=1)
        vw = valid.float()
        ce = (nll * vw).sum() / vw.sum().clamp_min(1)
        w = (valid[:, None] & present[:, 1:, None, None]).float()
    p = torch.softmax(logits, dim=1)[:, 1:] * w
    oh = onehot[:, 1:].float() * w
    dims = (0, 2, 3)
    inter = (p * oh).sum(dims)
    dice = (2 * inter + smooth) / (p.sum(dims) + oh.sum(dims) + smooth)
    if present is not None:
        scored = present[:, 1:].any(0)  # a class contoured in no image of the batch: no Dice term
        dice = dice[scored] if bool(scored.any()) else dice.new_ones(1)
    return ce + (1 - dice.mean())


@torch.no_grad()
def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Hard Dice of one batch (thresholded/argmax prediction), foreground classes pooled.

    1.0 when neither prediction nor target has foreground. What the live
    fine-tune plot shows: the fit to the corrected slices, not a held-out score.
    """
    valid = target != IGNORE_LABEL
    if logits.shape[1] == 1:
        pred = (logits[:, 0].float() > 0) & valid
        ref = (target > 0.5) & valid
    else:
        pred = (logits.float().argmax(1) > 0) & valid
        ref = (target.long() > 0) & valid
    denom = int(pred.sum()) + int(ref.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & ref).sum()) / denom
