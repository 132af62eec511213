#!/usr/bin/env python3
"""The experiment behind FinetuneConfig's defaults: one few-shot task, several settings.

For each setting (FinetuneConfig fields as ``key=value`` pairs) and seed it runs
bench_fewshot.run_one: a fresh copy of the base is fine-tuned on the k annotated
slices of the task, the other slices are segmented, and Dice is scored on every
other slice twice: raw, and after keeping what continues the corrections
(``llm4seg_core.loop.keep_continuations``; the column "continued", the JSON key
``dice_seeded``).

    python bench/finetune_sweep.py --task lung2 --k 2 \
        --base resources/models/default.safetensors \
        --configs "steps=40" "steps=40,trainable=all-but-llm" "steps=80,lr=3e-3"

The base falls back to an UNTRAINED build of --preset when the file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fewshot_tasks import choose_slices, load_task  # noqa: E402


def parse_config(text: str) -> dict:
    out: dict = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        key, _, val = part.partition("=")
        if val.lower() in ("true", "false"):
            out[key] = val.lower() == "true"
        elif val.lower() == "none":
            out[key] = None
        else:
            try:
                out[key] = int(val)
            except ValueError:
                try:
                    out[key] = float(val)
                except ValueError:
                    out[key] = val
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="lung2")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--base", default="resources/models/default.safetensors")
    ap.add_argument("--preset", default="llm4seg", help="untrained fallback when --base is missing")
    ap.add_argument("--configs", nargs="+", default=[""])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seg-batch", type=int, default=2, help="Segmenter batch size")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench_fewshot import load_base, run_one

    base_path = Path(args.base)
    if not base_path.is_absolute():
        base_path = ROOT / base_path
    base, meta = load_base(args.preset, base_path)
    base_name = str(base_path) if meta["trained"] else f"untrained {args.preset}"
    task = load_task(args.task)
    slices = choose_slices(task.mask, args.k)
    print(f"task {task.name} ({task.description}), k={args.k}, annotated slices {slices}; "
          f"base {base_name}; torch threads {torch.get_num_threads()}")
    print(f"{'setting':<48} {'seed':>4} {'dice':>6} {'cont.':>6} {'prec':>6} {'sens':>6} "
          f"{'fine-tune s':>11} {'segment s':>9}")
    rows = []
    for text in args.configs:
        for seed in (int(s) for s in args.seeds.split(",")):
            kw = parse_config(text)
            seed = kw.pop("seed", seed)
            rec = run_one(base, task, slices, steps=None, seed=seed, device="cpu",
                          seg_batch=args.seg_batch, config=kw)
            rows.append({"setting": text or "(defaults)", "seed": seed, "dice": rec["dice"],
                         "dice_seeded": rec["dice_seeded"], "precision": rec["precision"],
                         "sensitivity": rec["sensitivity"], "finetune_s": rec["finetune_s"],
                         "segment_s": rec["segment_s"]})
            print(f"{(text or '(defaults)'):<48} {seed:>4} {rec['dice']:6.3f} "
                  f"{rec['dice_seeded']:6.3f} {rec['precision']:6.3f} {rec['sensitivity']:6.3f} "
                  f"{rec['finetune_s']:11.1f} {rec['segment_s']:9.1f}", flush=True)
    if len(args.seeds.split(",")) > 1:
        print("means over seeds:")
        for text in args.configs:
            rs = [r for r in rows if r["setting"] == (text or "(defaults)")]
            print(f"  {(text or '(defaults)'):<46} dice {statistics.fmean(r['dice'] for r in rs):.3f}"
                  f" continued {statistics.fmean(r['dice_seeded'] for r in rs):.3f}"
                  f" fine-tune {statistics.fmean(r['finetune_s'] for r in rs):.1f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"task": args.task, "k": args.k, "slices": slices,
                                               "base": base_name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
