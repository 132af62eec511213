#!/usr/bin/env python3
"""The picture zoo models on their val splits: one pass, 8 rotations/flips averaged, and
that with only the largest region kept.

    .venv/bin/python bench/zoo_tta.py [--only polyp,breast-us] [--json out/zoo_tta.json]

Each shipped picture model is scored through the Segmenter a user gets
(:func:`llm4seg_core.valscore.score_cases`, each picture at its own size):
one forward a picture; the mean of its 8 rotations/flips (:mod:`llm4seg_core.tta`,
what ``meta["tta"]`` turns on); and the same averaged masks with, per label,
only the largest region kept (:func:`llm4seg_core.postprocess.keep_largest_region`,
``meta["one_object"]``). Nothing is tuned on the val split: the 8 variants are
the training's own augmentation, and "one object" is what the training masks
hold (``--train-regions`` prints their region counts). Prints Dice, IoU, HD95,
lesion Dice (pictures with something to find) and seconds side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"polyp": "kvasir", "breast-us": "busi", "thyroid-us": "ddti",
          "skin-lesion": "isic128", "fetal-head-us": "hc18"}
COLUMNS = ("1 pass", "8 averaged", "8 + largest")


def train_regions(folder: Path) -> str:
    """How many training masks hold 0, 1 or several regions, and the largest's share."""
    import numpy as np
    from scipy import ndimage

    from llm4seg_core.datasets import open_dataset

    src = open_dataset(folder)
    counts = [0, 0, 0]
    shares = []
    for case in src.split.train:
        _, lab = src.read_case(case)
        cc, k = ndimage.label(np.asarray(lab) > 0, structure=np.ones((3, 3)))
        counts[min(k, 2)] += 1
        if k:
            sizes = np.bincount(cc.ravel())[1:]
            shares.append(sizes.max() / sizes.sum())
    return (f"{folder.name} train masks: {counts[0]} empty, {counts[1]} one region, {counts[2]} "
            f"several; the largest region holds {100 * np.mean(shares):.1f} % of the foreground "
            f"on average (min {100 * np.min(shares):.1f} %)")


def main() -> int:
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.paths import datasets_root
    from llm4seg_core.postprocess import keep_largest_region
    from llm4seg_core.valscore import score_cases

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated tasks (default: all five)")
    p.add_argument("--data", type=Path, help="the datasets folder (default ../shared/data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default="torch", choices=("auto", "torch", "openvino"))
    p.add_argument("--train-regions", action="store_true",
                   help="also count the regions of the training masks")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    data = args.data or datasets_root()
    if data is None:
        print("no datasets folder (../shared/data): nothing to score", file=sys.stderr)
        return 2
    tasks = args.only.split(",") if args.only else list(MODELS)
    rows = {}
    lines = [f"| model | val set | Dice: {' / '.join(COLUMNS)} | IoU | HD95 px "
             "| lesion Dice | seconds |", "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for task in tasks:
        model = ROOT / "resources" / "models" / f"{task}.safetensors"
        one = Segmenter.load(str(model), device=args.device, engine=args.engine,
                             tta=False, one_object=False)
        eight = Segmenter.load(str(model), device=args.device, engine=args.engine,
                               tta=True, one_object=False)
        averaged: dict = {}

        def predict8(case, vol, eight=eight, averaged=averaged):
            averaged[case] = eight.segment(vol)
            return averaged[case]

        n = one.model.spec.n_labels
        folder = data / MODELS[task]
        res = {
            COLUMNS[0]: score_cases(lambda _c, vol, one=one: one.segment(vol), folder, n),
            COLUMNS[1]: score_cases(predict8, folder, n),
            COLUMNS[2]: score_cases(lambda c, _v, averaged=averaged: keep_largest_region(averaged[c]),
                                     folder, n),
        }

        def col(metric, fmt, res=res):
            return " / ".join(fmt.format(res[v][metric]["mean"]) for v in COLUMNS)

        secs = " / ".join(f"{res[v]['seconds']:.0f}" for v in COLUMNS)
        line = (f"| {task} | {MODELS[task]} ({res[COLUMNS[0]]['cases']}) | {col('dice', '{:.3f}')} "
                f"| {col('iou', '{:.3f}')} | {col('hd95', '{:.1f}')} | {col('dice_nonempty', '{:.3f}')} "
                f"| {secs} |")
        print(line, flush=True)
        if args.train_regions:
            print("  " + train_regions(folder), flush=True)
        rows[task] = {v: {m: r[m] for m in ("cases", "dice", "iou", "hd95", "dice_nonempty",
                                            "seconds")} for v, r in res.items()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
