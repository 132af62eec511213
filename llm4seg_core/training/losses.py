"""The segmentation loss and the live fit score.

Binary models: ``bce_weight * BCE + (1 - soft Dice)``; multi-class: ``CE +
(1 - mean soft Dice)``. Target pixels equal to :data:`IGNORE_LABEL` take no
part (partial labels).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["IGNORE_LABEL", "batch_dice", "segmentation_loss"]

IGNORE_LABEL = 255
"""Target value that the loss skips (pixels with no label, not background)."""


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5,
                      smooth: float = 1.0) -> torch.Tensor:
    """Binary (1 channel): ``bce_weight * BCE-with-logits + (1 - soft Dice)``.

    Multi-class (K channels, target = class indices): ``CE + (1 - mean soft Dice
    of the foreground classes)``. Soft Dice is over the whole batch (smooth 1),
    so that label-free slices do not make it undefined.

    Target pixels equal to :data:`IGNORE_LABEL` (255) take no part in either
    term: partial labels (a structure deliberately left out of pretraining).
    """
    logits = logits.float()
    valid = target != IGNORE_LABEL
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
    ce = F.cross_entropy(logits, t, ignore_index=IGNORE_LABEL)
    w = valid.unsqueeze(1).float()
    p = torch.softmax(logits, dim=1)[:, 1:] * w
    onehot = F.one_hot(torch.where(valid, t, 0), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    dims = (0, 2, 3)
    inter = (p * onehot).sum(dims)
    dice = (2 * inter + smooth) / (p.sum(dims) + onehot.sum(dims) + smooth)
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
