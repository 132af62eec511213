"""``llm4seg eval PREDICTION REFERENCE``: score a predicted mask against a reference, per label.

Two folders are scored case by case (masks paired by file stem), with the mean
over the cases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm4seg_core.errors import LLM4SegError

COMMAND = "eval"
HELP = "score a predicted mask against a reference mask, per label"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.io import mask_labels, read_image, read_mask
    from llm4seg_core.metrics import METRIC_NAMES, score_labels
    from llm4seg_core.slices import parse_slices

    if Path(args.prediction).is_dir() and Path(args.reference).is_dir():
        return _run_folders(args)
    ref_vol = read_image(args.reference)  # its spacing is the one HD95 is measured in
    ref = mask_labels(ref_vol, args.reference)
    pred = read_mask(args.prediction)
    if pred.shape != ref.shape:
        raise LLM4SegError(
            f"prediction {Path(args.prediction).name} has shape {pred.shape} but reference "
            f"{Path(args.reference).name} has shape {ref.shape}; compare masks of the same image"
        )
    exclude = parse_slices(args.exclude_slices) if args.exclude_slices else []
    scores = score_labels(pred, ref, spacing_zyx=ref_vol.scale_zyx, exclude_slices=exclude)
    if args.json:
        print(json.dumps({"prediction": str(args.prediction), "reference": str(args.reference),
                          "excluded_slices": exclude,
                          "labels": {str(k): s.to_dict() for k, s in scores.items()}}, indent=2))
        return 0
    if not scores:
        print("no labels in either mask")
        return 0
    head = ["label", *[n if n != "hd95" else "hd95_mm" for n in METRIC_NAMES], "voxels_pred", "voxels_ref"]
    print("  ".join(f"{h:>11}" for h in head))
    for k, s in scores.items():
        d = s.to_dict()
        cells = [f"{k:>11}"]
        for n in METRIC_NAMES:
            v = d[n]
            cells.append(f"{'n/a':>11}" if v is None else f"{v:>11.4f}")
        cells += [f"{d['voxels_pred']:>11}", f"{d['voxels_ref']:>11}"]
        print("  ".join(cells))
    if exclude:
        print(f"(slices {args.exclude_slices} excluded)")
    return 0


def _run_folders(args: argparse.Namespace) -> int:
    from llm4seg_core.batch import score_folders

    if args.exclude_slices:
        raise LLM4SegError("--exclude-slices is for one volume, not for folders of masks")
    res = score_folders(args.prediction, args.reference)
    names = ("dice", "iou", "hd95")
    labels = res.label_values
    if args.json:
        print(json.dumps({
            "prediction": str(args.prediction), "reference": str(args.reference),
            "missing_predictions": res.missing, "unmatched_predictions": res.unmatched,
            "mean": {str(k): {n: res.mean(k, n) for n in names} for k in labels},
            "cases": {c.name: {str(k): s.to_dict() for k, s in c.labels.items()} for c in res.cases},
        }, indent=2))
        return 0
    width = max([len(c.name) for c in res.cases] + [4])
    print(f"{'case':<{width}}  {'label':>5}  " + "  ".join(f"{n if n != 'hd95' else 'hd95_mm':>9}"
                                                   for n in names))

    def row(name: str, k: int, values: list[float | None]) -> None:
        cells = [f"{'n/a':>9}" if v is None else f"{v:>9.4f}" for v in values]
        print(f"{name:<{width}}  {k:>5}  " + "  ".join(cells))

    for c in res.cases:
        for k in labels:
            row(c.name, k, [c.labels[k].to_dict()[n] for n in names])
    for k in labels:
        row("mean", k, [res.mean(k, n) for n in names])
    print(f"{len(res.cases)} case(s) scored")
    if res.missing:
        print(f"{len(res.missing)} reference mask(s) have no prediction: {', '.join(res.missing[:5])}"
              + (" ..." if len(res.missing) > 5 else ""))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prediction", help="predicted mask, or a folder of them")
    p.add_argument("reference", help="reference mask (its spacing is used for HD95), or a folder")
    p.add_argument("--exclude-slices", help="slices left out, e.g. the fine-tuning slices: 3,7,10-12")
    p.add_argument("--json", action="store_true", help="print JSON")
