"""Segmentation metrics, per case and per class.

Overlap metrics (Dice, IoU, sensitivity, precision, F1, accuracy,
specificity) come from voxel counts; HD95 (95th percentile of the symmetric
surface distance) is in millimetres, using the voxel spacing, computed with
SimpleITK distance maps. Slices can be excluded (e.g. the slices a model was
fine-tuned on): they count for nothing.

Conventions for empty structures: when neither prediction nor reference has
the label, overlap metrics are 1.0 and HD95 is 0.0; when only one has it,
Dice/IoU are 0.0 and HD95 is NaN (undefined; ``None`` in JSON).

:func:`format_metrics` writes a metrics record (training, fine-tune, a model
version's) as one line of text, for the command line and the UIs alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError

METRIC_NAMES = ("dice", "iou", "sensitivity", "precision", "f1", "accuracy", "specificity", "hd95")


@dataclass(frozen=True)
class Scores:
    dice: float
    iou: float
    sensitivity: float
    precision: float
    f1: float
    accuracy: float
    specificity: float
    hd95: float
    voxels_pred: int
    voxels_ref: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _ratio(num: int, den: int, empty: float = 1.0) -> float:
    return num / den if den else empty


def overlap_scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Overlap metrics of two boolean arrays of the same shape."""
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(~pred & ref))
    tn = pred.size - tp - fp - fn
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "dice": dice,
        "iou": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": dice,  # F1 of voxel classification equals Dice
        "accuracy": _ratio(tp + tn, pred.size),
        "specificity": _ratio(tn, tn + fp),
    }


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """95th percentile symmetric surface distance in mm (boolean arrays, numpy axis order)."""
    import SimpleITK as sitk

    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("nan")

    def image(mask: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
        return img

    def surface(mask: np.ndarray) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.LabelContour(image(mask), fullyConnected=False)) > 0

    def dist_to(mask: np.ndarray) -> np.ndarray:
        d = sitk.SignedMaurerDistanceMap(
            image(mask), insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        return np.abs(sitk.GetArrayFromImage(d))

    sp, sr = surface(pred), surface(ref)
    # distance from each surface voxel of one mask to the nearest boundary of the other
    d_pr = dist_to(ref)[sp]
    d_rp = dist_to(pred)[sr]
    # a surface voxel lying inside the other mask's boundary band counts as distance 0
    d_pr = np.where(sr[sp], 0.0, d_pr)
    d_rp = np.where(sp[sr], 0.0, d_rp)
    return float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))


def score(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    label: int | None = None,
    spacing_zyx: Sequence[float] | None = None,
    exclude_slices: Iterable[int] = (),
    with_hd95: bool = True,
) -> Scores:
    """Scores of one label (any foreground when ``label`` is None).

    ``pred`` and ``ref`` are label arrays of one shape ((z, y, x) or (y, x));
    ``exclude_slices`` are z indices left out of every metric.
    """
    if pred.shape != ref.shape:
        raise LLM4SegError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    p = pred > 0 if label is None else pred == label
    r = ref > 0 if label is None else ref == label
    excluded = sorted(set(int(z) for z in exclude_slices))
    if excluded:
        if p.ndim != 3:
            raise LLM4SegError("slices can be excluded only from volumes")
        if excluded[0] < 0 or excluded[-1] >= p.shape[0]:
            raise LLM4SegError(f"excluded slices must be within 0..{p.shape[0] - 1}")
        keep = np.ones(p.shape[0], bool)
        keep[excluded] = False
        p_kept, r_kept = p[keep], r[keep]
        # for distances keep the geometry: blank the excluded slices in both
        p, r = p.copy(), r.copy()
        p[~keep] = False
        r[~keep] = False
    else:
        p_kept, r_kept = p, r
    over = overlap_scores(p_kept, r_kept)
    spacing = tuple(spacing_zyx) if spacing_zyx is not None else (1.0,) * p.ndim
    dist = hd95(p, r, spacing) if with_hd95 else float("nan")
    return Scores(
        **over, hd95=dist, voxels_pred=int(p_kept.sum()), voxels_ref=int(r_kept.sum())
    )


def score_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    spacing_zyx: Sequence[float] | None = None,
    exclude_slices: Iterable[int] = (),
    labels: Iterable[int] | None = None,
    with_hd95: bool = True,
) -> dict[int, Scores]:
    """Scores per label value (every non-zero value in either array unless ``labels`` given)."""
    if labels is None:
        labels = sorted((set(np.unique(pred)) | set(np.unique(ref))) - {0})
    excl = list(exclude_slices)
    return {
        int(k): score(pred, ref, label=int(k), spacing_zyx=spacing_zyx, exclude_slices=excl,
                      with_hd95=with_hd95)
        for k in labels
    }


def dice(pred: np.ndarray, ref: np.ndarray, label: int | None = None) -> float:
    """Dice of one label (any foreground when ``label`` is None); both empty is 1.0."""
    if pred.shape != ref.shape:
        raise LLM4SegError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    p = pred > 0 if label is None else pred == label
    r = ref > 0 if label is None else ref == label
    return overlap_scores(p, r)["dice"]


# --------------------------------------------------------------------------- text

SHORT_KEYS = (
    "val_dice", "dice", "train_dice", "val_iou", "train_iou", "val_loss", "train_loss", "loss",
)
"""The keys people look for first, in the order the short form shows them."""


def format_value(value: Any, key: str = "") -> str:
    """One metric value as text: ``0.8123``, ``1.00e-02`` for a learning rate, ``12.3`` seconds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key == "lr":
        return f"{value:.2e}"
    if key.endswith("_s") or key == "seconds":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _word(key: str) -> str:
    return key.split("_", 1)[1] if key.startswith(("val_", "train_")) else key


def format_metrics(metrics: Mapping[str, Any], limit: int | None = None, *,
                   for_display: bool = False) -> str:
    """``val_dice=0.8123 val_iou=0.7011``: a metrics record as one line ('' when it has no number).

    ``for_display``: the words a person reads in a GUI, ``dice 0.812 · iou 0.701``
    (the ``val_``/``train_`` prefix dropped, three decimals).

    With ``limit``: the short form, at most ``limit`` scores, the
    :data:`SHORT_KEYS` first (one per kind: ``val_dice`` hides ``dice`` and
    ``train_dice``), then other Dice/IoU keys. Without: every number, epoch
    and step first, then the scores, then the rest, and ``*best*`` for the
    best epoch of a training run.
    """
    nums = {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    scores = [k for k in SHORT_KEYS if k in nums]
    scores += [k for k in nums if k not in scores and ("dice" in k.lower() or "iou" in k.lower())]
    if limit is not None:
        shown: list[str] = []
        for k in scores:
            if k in SHORT_KEYS and _word(k) in {_word(s) for s in shown}:
                continue
            shown.append(k)
        keys = shown[:limit]
    else:
        head = [k for k in ("epoch", "step") if k in nums]
        keys = head + [k for k in scores if k not in head]
        keys += [k for k in nums if k not in keys]
    if for_display:
        return " · ".join(f"{_word(k)} {nums[k]:.3f}" if isinstance(nums[k], float)
                          else f"{_word(k)} {nums[k]}" for k in keys)
    parts = [f"{k}={format_value(nums[k], k)}" for k in keys]
    if limit is None and metrics.get("best") is True:
        parts.append("*best*")
    return " ".join(parts)
