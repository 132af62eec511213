"""Train the promptable model (store task ``prompt``) on a mix of the labelled datasets.

Every labelled structure of every dataset is an object (each label of a
multi-label map; 3-D sets also give neighbouring-slice guide masks), with
the simulated prompts of :mod:`llm4seg_core.datasets.prompted`. Grayscale
input whatever the modality (RGB pictures become luminance, as the Segmenter
gives a 1-channel model).

  # the LLM4Seg prompt model and its no-LLM twin, all of shared/data, a step budget
  python scripts/train_prompt_model.py -o out/prompt/llm4seg --steps 20000
  python scripts/train_prompt_model.py -o out/prompt/cmunext --model prompt-cmunext --steps 20000
  # a smoke run
  python scripts/train_prompt_model.py -o /tmp/prompt-smoke --data busi,msd_hippocampus \
      --model "prompt-cmunext,image_size=32,dims=8:8:16:16:32" --steps 20 --epoch-steps 10 \
      --batch 4 --val-items 8 --device cpu

An epoch is ``--epoch-steps`` steps; its items are shared equally among the
datasets, each item a random slice of its dataset with freshly drawn
prompts (the datasets hear the epoch after each one, so every epoch draws
anew; seeded, so a resumed run sees what an uninterrupted one saw).
Validation: ``--val-items`` fixed items of each dataset's val split.

The output folder is the Trainer's run folder (``best.safetensors``,
``last.safetensors``, the training state; ``--resume`` continues it); the
checkpoints record task ``prompt``, so ``llm4seg models import
OUT/best.safetensors`` files them under that task. ``--save-to-store``
does that at the end. Colin27/AAL and MNI152 are never trained on (the
few-shot benchmark's held-out tasks). ``torchrun --nproc_per_node N
scripts/train_prompt_model.py ...`` trains with DDP (the Trainer's).

The defaults are the paper table's recipe (bench/paper_table.py): AdamW 2e-3,
weight decay 1e-2, 100 warm-up steps, cosine decay, batch 8 at 128 x 128. On
the 2-core CPU with 2 threads and nothing else running, one ``prompt-llm4seg``
step takes about 1.9 s (validation included); beside test runs 3.6-5 s. The
shipped ``prompt`` model: ``--steps 1500 --epoch-steps 250 --val-items 32``
(resources/models/prompt.md). ``--init FILE --sessions 0.7,4`` continues a
model with simulated click sessions on its own masks (70 % of the batches run
1-4 corrections without gradients first; llm4seg_core/training/click_sessions.py);
a session round costs a forward pass, about 0.4-0.5 s at batch 8.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def dataset_paths(names: str | None) -> list[Path]:
    """The dataset folders: names under the datasets root, or paths; default all of them."""
    from llm4seg_core.errors import LLM4SegError
    from llm4seg_core.paths import datasets_root

    root = datasets_root()
    if not names:
        if root is None:
            raise LLM4SegError("no datasets folder (set LLM4SEG_DATASETS or pass --data)")
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        p = Path(name).expanduser()
        if not p.is_dir() and root is not None:
            p = root / name
        if not p.is_dir():
            raise LLM4SegError(f"no dataset folder {name!r} (looked in {root})")
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="run folder")
    ap.add_argument("--data", help="comma-separated dataset names (under shared/data) or folders; "
                    "default: every dataset there")
    ap.add_argument("--model", default="prompt-llm4seg", help="spec (default prompt-llm4seg)")
    ap.add_argument("--steps", type=int, required=True, help="the step budget")
    ap.add_argument("--epoch-steps", type=int, default=500, help="steps an epoch (default 500)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--optimizer", default="adamw", choices=("sgd", "adam", "adamw"))
    ap.add_argument("--schedule", default="cosine", choices=("poly", "cosine", "constant"))
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--crop", type=int, help="random crops of the model grid (a multiple of 16)")
    ap.add_argument("--val-items", type=int, default=64, help="fixed val items per dataset")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="start from this prompt checkpoint's weights (e.g. "
                    "resources/models/prompt.safetensors); its spec replaces --model")
    ap.add_argument("--sessions", help="simulated click sessions on the model's own masks: "
                    "SHARE[,ROUNDS[,keep-first]] of the batches, 1..ROUNDS corrections (e.g. 0.5,4; "
                    "keep-first: items with only a first click or box stay as drawn; "
                    "training/click_sessions.py); give it again with --resume")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--save-to-store", action="store_true",
                    help="at the end, save the best weights as a version of task 'prompt'")
    ap.add_argument("--store", help="model store folder (default: the user's)")
    args = ap.parse_args(argv)

    from llm4seg_core.datasets.prompted import open_prompted
    from llm4seg_core.errors import LLM4SegError
    from llm4seg_core.jobs import Callbacks
    from llm4seg_core.metrics import format_metrics
    from llm4seg_core.model.network import build_model
    from llm4seg_core.model.spec import ModelSpec, parse_spec
    from llm4seg_core.prompts.segment import PROMPT_TASK
    from llm4seg_core.training import (
        TrainConfig, Trainer, has_train_state, init_distributed, read_train_state_info,
    )
    from llm4seg_core.training.click_sessions import ClickSessions

    try:
        dist_ = init_distributed(args.device)  # under torchrun: DDP, rank 0 writes
        out = Path(args.output).expanduser()
        state, init = None, None
        if args.resume:
            if not has_train_state(out):
                raise LLM4SegError(f"nothing to resume in {out}")
            state = read_train_state_info(out)
        elif has_train_state(out):
            raise LLM4SegError(f"{out} already holds a run; --resume, or another folder")
        if state is not None:
            spec = ModelSpec.from_dict(state["spec"])
            cfg = TrainConfig.from_dict(state["config"])
            cfg.device = args.device
        else:
            if args.init:
                from llm4seg_core.store import load_checkpoint

                init, init_info = load_checkpoint(args.init)
                spec = init_info.spec
            else:
                spec = parse_spec(args.model)
            if not spec.is_prompt_model:
                raise LLM4SegError(f"{args.model!r} is not a prompt model spec (prompt_channels=4)")
            epochs = max(1, math.ceil(args.steps / args.epoch_steps))
            cfg = TrainConfig(epochs=epochs, max_steps=args.steps, batch_size=args.batch,
                              lr=args.lr, weight_decay=args.weight_decay,
                              optimizer=args.optimizer, schedule=args.schedule,
                              warmup_steps=args.warmup, crop_size=args.crop, seed=args.seed,
                              device=args.device, num_workers=args.workers)
        paths = dataset_paths(args.data)
        per_set = max(1, (args.epoch_steps * cfg.batch_size) // len(paths))
        t0 = time.perf_counter()
        train = open_prompted(paths, "train", spec, items=per_set, seed=cfg.seed)
        val = open_prompted(paths, "val", spec, items=args.val_items, seed=cfg.seed + 1)
        print(f"datasets read in {time.perf_counter() - t0:.0f} s: {train.describe()}", flush=True)
        if state is not None:
            train.set_epoch(int(state.get("epoch", 0)))
        model = build_model(spec, seed=cfg.seed)
        if state is None and init is not None:
            model.load_state_dict(init.stored_state_dict(), strict=False)
        sessions = ClickSessions.parse(args.sessions) if args.sessions else None

        def on_metrics(m: dict) -> None:
            print(format_metrics(m), flush=True)
            train.set_epoch(int(m["epoch"]))  # the next epoch draws new slices and prompts

        def on_progress(done: int, total: int) -> None:
            if done % 50 == 0 or done == total:
                print(f"step {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

        meta = {"task": PROMPT_TASK, "datasets": [p.name for p in paths],
                "prompt_mix": json.loads(json.dumps(train.datasets[0].mix.__dict__))}
        if sessions is not None:
            meta["click_sessions"] = {"share": sessions.share, "max_rounds": sessions.max_rounds,
                                      "keep_first": sessions.keep_first}
        if args.init:
            meta["init"] = str(args.init)
        trainer = Trainer(model, cfg, Callbacks(on_progress=on_progress, on_metrics=on_metrics,
                                                on_log=print), batch_hook=sessions)
        result = trainer.fit(train, val, checkpoint_dir=out, resume=state is not None, meta=meta)
        best = result.best_metrics
        print(f"done: {result.steps} steps in {result.seconds:.0f} s; best "
              + ", ".join(f"{k} {best[k]:.4f}" for k in ("val_dice", "val_iou") if k in best)
              + f"; wrote {out / 'best.safetensors'}", flush=True)
        if args.save_to_store and dist_.is_main:
            from llm4seg_core.store import ModelStore

            model.load_state_dict(result.best_state, strict=False)
            store = ModelStore(args.store) if args.store else ModelStore()
            info = store.save(model, task=PROMPT_TASK, data={"datasets": meta["datasets"]},
                              metrics={k: v for k, v in best.items()
                                       if isinstance(v, (int, float))},
                              note=f"prompt model, {result.steps} steps")
            print(f"saved as {info.name} (task {PROMPT_TASK}) in {store.root}")
    except LLM4SegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
