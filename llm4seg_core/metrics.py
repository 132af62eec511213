"""Overlap metrics between label volumes."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray, label: int | None = None) -> float:
    """Dice of ``pred`` vs ``ref`` for one label (any foreground when ``label`` is None).

    Both empty counts as a perfect 1.0.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {ref.shape}")
    p = pred > 0 if label is None else pred == label
    r = ref > 0 if label is None else ref == label
    denom = int(p.sum()) + int(r.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / denom
