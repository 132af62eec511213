#!/usr/bin/env python3
"""Export a trained run as a shipped zoo model, and score what ships on the dataset's val split.

    .venv/bin/python scripts/export_zoo_model.py out/train/kvasir_llm4seg_128/best.safetensors \\
        --task polyp --dataset ../shared/data/kvasir --labels polyp \\
        --data-name "Kvasir-SEG" --license "research and educational use only (Simula)" \\
        [--out resources/models] [--eval-only]

Writes ``<out>/<task>.safetensors`` (the stored tensors in fp16, with the task,
the label names and colours, the training data and its license in the
checkpoint's metadata) and prints the val-split scores of THAT file, read back
and run through the same :class:`~llm4seg_core.inference.Segmenter` a user
gets, at each case's own resolution (:mod:`llm4seg_core.valscore`): Dice, IoU
and HD95 per case and per label, their mean and spread; labels not contoured
in a case (partial labels) are not scored there. The model card (``<task>.md``) is written by
hand from these figures.

The prompt model (task ``prompt``, trained on every dataset by
scripts/train_prompt_model.py) has no val split of its own to be scored on
here: export it with ``--no-score`` and score it with bench/prompt_bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")


def export(src: Path, dst: Path, args: argparse.Namespace) -> dict:
    import torch

    from llm4seg_core.store import load_checkpoint, read_checkpoint_info, save_checkpoint

    model, _ = load_checkpoint(src)
    trained = read_checkpoint_info(src).meta
    names = args.labels.split(",")
    if len(names) != model.spec.n_labels:
        raise SystemExit(f"--labels names {len(names)} label(s); the model has {model.spec.n_labels}")
    if not (args.kind and args.modality):
        raise SystemExit("exporting needs --kind and --modality (what images the model is for)")
    model.spec = model.spec.with_(label_names=tuple(names))
    meta = {
        "task": args.task,
        "labels": [{"value": i + 1, "name": n, "color": COLOURS[i % len(COLOURS)]}
                   for i, n in enumerate(names)],
        "data": {"name": args.data_name, "license": args.license, "split": "train split only"},
        "trained": {k: trained.get(k) for k in ("config", "metrics", "dataset", "split", "labels")
                    if k in trained},
        "intended_use": "research and demonstration; not for diagnosis",
        "tta": bool(args.tta),  # the Segmenter averages the 8 rotations/flips (llm4seg_core.tta)
        "one_object": bool(args.one_object),  # ... and keeps the largest region (postprocess)
        # what images the model is for: read by the model suggestion of the UIs
        "fits": {
            "kind": args.kind,
            "rgb": model.spec.in_channels == 3 and args.kind != "3d",
            "modality": args.modality,
            "body_part": args.body_part,
            "keywords": [k for k in args.keywords.split(",") if k],
        },
    }
    path = save_checkpoint(model, dst, meta, float_dtype=torch.float16)
    return {"path": str(path), "bytes": path.stat().st_size}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--task", required=True)
    p.add_argument("--dataset", type=Path, help="the dataset whose val split scores it")
    p.add_argument("--labels", required=True, help="label names, comma-separated, in value order")
    p.add_argument("--data-name", default="")
    p.add_argument("--license", default="")
    p.add_argument("--kind", choices=("2d", "3d", "any"),
                   help="pictures, volumes, or any (a slice model that also suits volumes)")
    p.add_argument("--modality",
                   help="DICOM modality code the model is for: US, CT, MR, ES (endoscopy), XC (camera)")
    p.add_argument("--body-part", default="", help="DICOM BodyPartExamined, e.g. BREAST, THYROID")
    p.add_argument("--keywords", default="",
                   help="comma-separated words that, in a file or series name, point to this model")
    p.add_argument("--tta", action="store_true", help="the model averages each slice over its "
                   "8 rotations/flips when it segments (only for a model trained with them)")
    p.add_argument("--one-object", action="store_true", help="the pictures hold one object: "
                   "keep each label's largest region (postprocess.keep_largest_region)")
    p.add_argument("--out", type=Path, default=ROOT / "resources" / "models")
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-only", action="store_true", help="score CHECKPOINT itself, export nothing")
    p.add_argument("--json", type=Path, help="also write the scores here")
    p.add_argument("--no-score", action="store_true",
                   help="export only (the prompt model: bench/prompt_bench.py scores it)")
    args = p.parse_args()
    if args.dataset is None and not args.no_score:
        p.error("--dataset is needed to score the model (or --no-score)")
    target = args.checkpoint
    names = args.labels.split(",")
    if not args.eval_only:
        info = export(args.checkpoint, args.out / f"{args.task}.safetensors", args)
        print(f"wrote {info['path']} ({info['bytes'] / 2**20:.1f} MiB)")
        target = Path(info["path"])
    if args.no_score:
        return 0
    from llm4seg_core.valscore import score_split

    res = score_split(target, args.dataset, device=args.device)
    unit = "px" if res["kind"] == "2d" else "mm"
    print(f"{target.name} on {args.dataset.name} val ({res['split']}, {res['cases']} cases, "
          f"{res['seconds']:.1f} s): Dice {res['dice']['mean']:.4f} (sd {res['dice']['sd']:.3f}, "
          f"median {res['dice']['median']:.4f}), IoU {res['iou']['mean']:.4f}, "
          f"HD95 {res['hd95']['mean']:.1f} {unit}")
    if len(res["per_label"]) > 1:
        for k, v in res["per_label"].items():
            d = v["dice"]
            hd = v["hd95"]["mean"]
            hd_text = f"{hd:.1f} {unit}" if hd is not None else "undefined (never found)"
            print(f"  label {k} ({names[k - 1]}): Dice {d['mean']:.4f} (sd {d['sd']:.3f}, "
                  f"{d['n']} cases), IoU {v['iou']['mean']:.4f}, HD95 {hd_text}")
        print(f"  mean label Dice {res['mean_label_dice']:.4f}")
    if res["empty_references"]:
        print(f"  {res['empty_references']} cases have an empty reference "
              f"({res['empty_references_left_empty']} left empty by the model); on the "
              f"{res['dice_nonempty']['n']} with something to find: Dice "
              f"{res['dice_nonempty']['mean']:.4f} (sd {res['dice_nonempty']['sd']:.3f}), "
              f"IoU {res['iou_nonempty']['mean']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
