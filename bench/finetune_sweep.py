#!/usr/bin/env python3
"""The experiment behind FinetuneConfig's defaults: one few-shot task, several settings.

For each setting (FinetuneConfig fields as ``key=value`` pairs) and seed: a fresh
copy of the base is fine-tuned on the k annotated slices of the task, the whole
volume is segmented, the annotated slices get the annotation back (as in the
UIs), and Dice is scored on every other slice twice: raw, and after
``keep_seeded_components`` (regions not touching the annotation dropped).

    python bench/finetune_sweep.py --task lung2 --k 2 \
        --base resources/models/default.safetensors \
        --configs "steps=40" "steps=40,trainable=all-but-llm" "steps=80,lr=3e-3"

The base falls back to an UNTRAINED build of --preset when the file is missing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fewshot_tasks import choose_slices, load_task, score_other_slices  # noqa: E402


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
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from llm4seg_core.checkpoints import load_checkpoint
    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.model import build_model
    from llm4seg_core.model.spec import PRESETS
    from llm4seg_core.postprocess import keep_seeded_components
    from llm4seg_core.training import FinetuneConfig, finetune

    base_path = Path(args.base)
    if not base_path.is_absolute():
        base_path = ROOT / base_path
    if base_path.is_file():
        base, _ = load_checkpoint(base_path, device="cpu")
        base_name = str(base_path.relative_to(ROOT) if base_path.is_relative_to(ROOT) else base_path)
    else:
        print(f"WARNING: {base_path} not found: UNTRAINED base of preset {args.preset!r}")
        base = build_model(PRESETS[args.preset], device="cpu")
        base_name = f"untrained {args.preset}"
    base.eval()
    task = load_task(args.task)
    slices = choose_slices(task.mask, args.k)
    print(f"task {task.name} ({task.description}), k={args.k}, annotated slices {slices}; "
          f"base {base_name}; torch threads {torch.get_num_threads()}")
    print(f"{'setting':<48} {'seed':>4} {'dice':>6} {'seeded':>6} {'prec':>6} {'sens':>6} "
          f"{'fine-tune s':>11} {'segment s':>9}")
    rows = []
    for text in args.configs:
        for seed in (int(s) for s in args.seeds.split(",")):
            kw = parse_config(text)
            kw.setdefault("seed", seed)
            cfg = FinetuneConfig(device="cpu", **kw)
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            finetune(model, CorrectionSet(task.volume, task.mask, slices), cfg)
            ft_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pred = Segmenter(model, device="cpu").segment(task.volume)
            seg_s = time.perf_counter() - t0
            pred = (pred > 0).astype(np.uint8)
            pred[slices] = task.mask[slices]
            raw = score_other_slices(pred, task.mask, slices)
            seeded, _ = keep_seeded_components(pred, slices)
            sd = score_other_slices(seeded, task.mask, slices)
            rows.append({"setting": text or "(defaults)", "seed": seed, "dice": raw["dice"],
                         "dice_seeded": sd["dice"], "precision": raw["precision"],
                         "sensitivity": raw["sensitivity"], "finetune_s": ft_s,
                         "segment_s": seg_s})
            print(f"{(text or '(defaults)'):<48} {seed:>4} {raw['dice']:6.3f} {sd['dice']:6.3f} "
                  f"{raw['precision']:6.3f} {raw['sensitivity']:6.3f} {ft_s:11.1f} {seg_s:9.1f}",
                  flush=True)
    if len(args.seeds.split(",")) > 1:
        print("means over seeds:")
        for text in args.configs:
            rs = [r for r in rows if r["setting"] == (text or "(defaults)")]
            print(f"  {(text or '(defaults)'):<46} dice {statistics.fmean(r['dice'] for r in rs):.3f}"
                  f" seeded {statistics.fmean(r['dice_seeded'] for r in rs):.3f}"
                  f" fine-tune {statistics.fmean(r['finetune_s'] for r in rs):.1f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"task": args.task, "k": args.k, "slices": slices,
                                               "base": base_name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
