#!/usr/bin/env python3
"""The picture zoo models on their val splits with and without test-time augmentation.

    .venv/bin/python bench/zoo_tta.py [--only polyp,breast-us] [--json out/zoo_tta.json]

Each shipped picture model is scored twice through the Segmenter a user gets
(:func:`llm4seg_core.valscore.score_split`): one forward a picture, and the
mean of its 8 rotations/flips (:mod:`llm4seg_core.tta`, what the model's
``meta["tta"]`` turns on). Nothing is tuned on the val split: the 8 variants
are the training's own augmentation. Prints Dice, IoU, HD95 and seconds side
by side, and the Dice gain.
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


def main() -> int:
    from llm4seg_core.paths import datasets_root
    from llm4seg_core.valscore import score_split

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated tasks (default: all five)")
    p.add_argument("--data", type=Path, help="the datasets folder (default ../shared/data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    data = args.data or datasets_root()
    if data is None:
        print("no datasets folder (../shared/data): nothing to score", file=sys.stderr)
        return 2
    tasks = args.only.split(",") if args.only else list(MODELS)
    rows = {}
    print("| model | val set | Dice 1 pass | Dice 8 averaged | gain | IoU 1 / 8 | HD95 px 1 / 8 "
          "| lesion Dice 1 / 8 | s 1 / 8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in tasks:
        model = ROOT / "resources" / "models" / f"{task}.safetensors"
        res = {tta: score_split(model, data / MODELS[task], device=args.device, tta=tta)
               for tta in (False, True)}
        a, b = res[False], res[True]
        print(f"| {task} | {MODELS[task]} ({a['cases']}) | {a['dice']['mean']:.3f} | "
              f"{b['dice']['mean']:.3f} | {b['dice']['mean'] - a['dice']['mean']:+.3f} | "
              f"{a['iou']['mean']:.3f} / {b['iou']['mean']:.3f} | "
              f"{a['hd95']['mean']:.1f} / {b['hd95']['mean']:.1f} | "
              f"{a['dice_nonempty']['mean']:.3f} / {b['dice_nonempty']['mean']:.3f} | "
              f"{a['seconds']:.0f} / {b['seconds']:.0f} |", flush=True)
        rows[task] = {str(k): {m: v[m] for m in ("cases", "dice", "iou", "hd95", "dice_nonempty",
                                                   "seconds", "tta")} for k, v in res.items()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
