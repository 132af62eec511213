"""Validation: mean loss, Dice and IoU per image of a dataset, at the model grid.

A multi-class model also gets each class's Dice pooled over the images
(``val_class_dice_<k>``: twice the summed overlap over the summed sizes, in
the images where class k was contoured) and their mean (``val_class_dice``).
The per-image mean counts an image where a class is absent from both the
prediction and the reference as a perfect 1.0, so on a 3-D set, where most
slices hold few of the organs, it can look good while an organ is never
found; the pooled figure of that organ is then 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from llm4seg_core.device import autocast
from llm4seg_core.metrics import overlap_scores
from llm4seg_core.training.distributed import DistInfo, all_reduce_sum
from llm4seg_core.training.losses import segmentation_loss

__all__ = ["evaluate"]


def _labels_of(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def _per_image_scores(pred: np.ndarray, ref: np.ndarray, num_classes: int,
                      present: np.ndarray | None = None) -> tuple[float, float]:
    """Mean Dice and IoU over the foreground classes (over the contoured ones with ``present``)."""
    labels = [1] if num_classes == 1 else list(range(1, num_classes))
    if present is not None:
        labels = [k for k in labels if present[k]] or labels
    d = i = 0.0
    for k in labels:
        s = overlap_scores(pred == k, ref == k)
        d += s["dice"]
        i += s["iou"]
    return d / len(labels), i / len(labels)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, *, device: torch.device | str = "cpu",
             batch_size: int = 8, bce_weight: float = 0.5, amp: bool = True,
             shard: DistInfo | None = None) -> dict[str, float]:
    """Mean loss, Dice and IoU per image (mean over foreground classes) at the model grid.

    Items may carry which classes were contoured (``(x, y, present)``,
    partial labels): an uncontoured class is left out of the loss and scores.

    With ``shard`` each rank scores its share and the sums are all-reduced.
    """
    device = torch.device(device)
    net = model.module if hasattr(model, "module") else model
    num_classes = net.spec.num_classes
    was_training = net.training
    net.eval()
    shard = shard or DistInfo()
    idx = list(range(shard.rank, len(dataset), shard.world_size))
    sums = [0.0, 0.0, 0.0, 0.0]  # loss * n, dice, iou, n
    classes = list(range(1, num_classes)) if num_classes > 1 else []
    pooled = [0.0] * (2 * len(classes))  # per class: 2 * overlap, prediction + reference sizes
    try:
        for start in range(0, len(idx), batch_size):
            items = [dataset[i] for i in idx[start:start + batch_size]]
            x = torch.stack([it[0] for it in items]).to(device)
            y = torch.stack([it[1] for it in items]).to(device)
            present = torch.stack([it[2] for it in items]) if len(items[0]) > 2 else None
            with autocast(device, amp):
                logits = net(x)
            sums[0] += float(segmentation_loss(logits, y, bce_weight, present=present)) * len(items)
            pred = _labels_of(logits.float()).cpu().numpy()
            ref = y.cpu().numpy()
            pres = present.numpy() if present is not None else [None] * len(items)
            for p, r, c in zip(pred, ref, pres, strict=True):
                d, i = _per_image_scores(p, r, num_classes, c)
                sums[1] += d
                sums[2] += i
                for j, k in enumerate(classes):
                    if c is None or c[k]:
                        pk, rk = p == k, r == k
                        pooled[2 * j] += 2.0 * float(np.count_nonzero(pk & rk))
                        pooled[2 * j + 1] += float(np.count_nonzero(pk) + np.count_nonzero(rk))
            sums[3] += len(items)
    finally:
        if was_training:
            net.train()
    sums = all_reduce_sum(sums + pooled, device)
    sums, pooled = sums[:4], sums[4:]
    n = max(sums[3], 1.0)
    out = {"val_loss": sums[0] / n, "val_dice": sums[1] / n, "val_iou": sums[2] / n}
    if classes:
        per = {k: pooled[2 * j] / pooled[2 * j + 1] if pooled[2 * j + 1] else 1.0
               for j, k in enumerate(classes)}
        out["val_class_dice"] = float(np.mean(list(per.values())))
        out.update({f"val_class_dice_{k}": v for k, v in per.items()})
    return out
