"""A model file scored on a dataset split through the Segmenter a user gets.

Each case is read at its own resolution, segmented by
:class:`~llm4seg_core.inference.Segmenter` (the shipped path: resizing,
intensity, post-processing), and scored per label against its reference:
Dice, IoU, HD95 (pixels for pictures, mm for volumes). A label that was not
contoured in a case (partial labels, ``cases.json``) is not scored there.
What the model cards, ``scripts/export_zoo_model.py`` and
``bench/paper_table.py`` report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.jobs import Callbacks

__all__ = ["score_cases", "score_split", "summarise"]


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
    if not v.size:
        return {"mean": None, "sd": None, "median": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std()), "median": float(np.median(v)),
            "n": int(v.size)}


def score_split(model: str | Path, dataset: str | Path, *, part: str = "val", device: str = "cpu",
                callbacks: Callbacks | None = None, tta: bool | None = None,
                one_object: bool | None = None, engine: str = "auto") -> dict[str, Any]:
    """Per-case and summary scores of ``model`` on the ``part`` split of ``dataset``.

    ``tta`` / ``one_object`` None: as the model's checkpoint says
    (:class:`~llm4seg_core.inference.Segmenter`); the paper's table passes
    ``tta=False`` (no test-time augmentation, as the paper).

    A prompt model is refused (:class:`~llm4seg_core.errors.LLM4SegError`): it segments the
    object prompts point at, not a whole case (``bench/prompt_bench.py`` scores those)."""
    from llm4seg_core.inference import Segmenter

    # a prompt model is refused here, first
    seg = Segmenter.load(str(model), device=device, tta=tta, one_object=one_object, engine=engine)
    return score_cases(lambda _case, vol: seg.segment(vol), dataset, seg.model.spec.n_labels,
                       part=part, callbacks=callbacks, tta=seg.tta, one_object=seg.one_object)


def score_cases(predict: Callable[[str, Any], np.ndarray], dataset: str | Path, n_labels: int, *,
                part: str = "val", callbacks: Callbacks | None = None,
                **extra: Any) -> dict[str, Any]:
    """Per-case and summary scores of ``predict(case, volume) -> labels`` on the ``part``
    split of ``dataset`` (``extra`` is recorded in the summary)."""
    from llm4seg_core.datasets import open_dataset
    from llm4seg_core.metrics import score

    cb = callbacks or Callbacks()
    data = open_dataset(dataset)
    label_map = data.label_map()
    lut = label_map.lut()
    contoured = getattr(data, "contoured", None)
    cases = list(data.split.val if part == "val" else data.split.train)
    rows = []
    t0 = time.perf_counter()
    cb.progress(0, len(cases))
    for i, case in enumerate(cases):
        if cb.cancelled():
            break
        vol, ref_values = data.read_case(case)
        ref = lut[ref_values]
        pred = predict(case, vol)
        spacing = vol.scale_zyx if ref.ndim == 3 else vol.scale_zyx[-2:]
        per_label = {}
        for k in range(1, n_labels + 1):
            values = [v for v in label_map.values if lut[v] == k] or [k]
            if contoured is not None and not set(values) & set(contoured[case]):
                continue  # not contoured in this case: no reference to score against
            s = score(pred, ref, label=k, spacing_zyx=spacing).to_dict()
            per_label[k] = {key: s[key] for key in ("dice", "iou", "hd95")}
        rows.append({
            "case": case, "ref_empty": not ref.any(), "labels": per_label,
            "dice": float(np.mean([r["dice"] for r in per_label.values()])) if per_label else None,
            "iou": float(np.mean([r["iou"] for r in per_label.values()])) if per_label else None,
        })
        cb.progress(i + 1, len(cases))
    return summarise(rows, n_labels, seconds=time.perf_counter() - t0,
                     split=data.split.origin, kind=data.kind, **extra)


def summarise(rows: list[dict[str, Any]], n_labels: int, **extra: Any) -> dict[str, Any]:
    """Means and spreads: per case (mean over its labels), per label, and for the cases with a label."""
    hd = [float(np.mean(v)) if (v := [r["hd95"] for r in row["labels"].values()
                                      if r["hd95"] is not None]) else None for row in rows]
    empty = [r for r in rows if r["ref_empty"]]
    out: dict[str, Any] = {
        "cases": len(rows), **extra,
        "dice": _stats([r["dice"] for r in rows]), "iou": _stats([r["iou"] for r in rows]),
        "hd95": _stats(hd),
        "per_label": {k: {m: _stats([r["labels"][k][m] for r in rows if k in r["labels"]])
                          for m in ("dice", "iou", "hd95")} for k in range(1, n_labels + 1)},
        # cases with nothing to find (BUSI's normal pictures): Dice is 1 only for an empty mask
        "empty_references": len(empty),
        "empty_references_left_empty": sum(r["dice"] == 1.0 for r in empty),
        "dice_nonempty": _stats([r["dice"] for r in rows if not r["ref_empty"]]),
        "iou_nonempty": _stats([r["iou"] for r in rows if not r["ref_empty"]]),
        "rows": rows,
    }
    means = [v["dice"]["mean"] for v in out["per_label"].values() if v["dice"]["mean"] is not None]
    out["mean_label_dice"] = float(np.mean(means)) if means else None
    return out
