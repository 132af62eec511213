"""``llm4seg train DATASET -o FOLDER``: train a model on a dataset folder (2D or 3D).

Also runs under ``torchrun --nproc_per_node N -m llm4seg_core train ...``
(DDP; only rank 0 prints and writes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from llm4seg_core.cli.common import log_fn
from llm4seg_core.cli.progress import ProgressBar
from llm4seg_core.errors import LLM4SegError

BACKGROUND_PRIOR = 0.75
"""Initial background probability of a multi-class head trained on partial labels
(0.75 with 8 classes: background's bias 3 above the others, the start measured on OpenKBP)."""

COMMAND = "train"
HELP = "train a model on a dataset folder (2D or 3D); torchrun for DDP"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.datasets import SPLIT_FILE, Split, open_dataset
    from llm4seg_core.jobs import Callbacks
    from llm4seg_core.metrics import format_metrics
    from llm4seg_core.model.network import build_model
    from llm4seg_core.model.spec import ModelSpec, parse_spec
    from llm4seg_core.training import (
        TrainConfig, Trainer, has_train_state, init_distributed, read_train_state_info,
    )

    dist_ = init_distributed(args.device)
    main_rank = dist_.is_main
    log = log_fn(args.quiet or not main_rank)
    out = Path(args.output).expanduser()
    if out.exists() and not out.is_dir():
        raise LLM4SegError(f"{out} is a file; -o needs a folder for the model")
    split_path = out / SPLIT_FILE
    state = None
    if args.resume:
        if not has_train_state(out):
            raise LLM4SegError(f"nothing to resume in {out}: it holds no training state")
        state = read_train_state_info(out)
    elif has_train_state(out):
        raise LLM4SegError(
            f"{out} already holds a training run; pass --resume to continue it, or choose another folder"
        )

    split = Split.load(split_path) if split_path.is_file() else None
    data = open_dataset(args.dataset, split_name=args.split_name, split=split, seed=args.seed)
    label_map = data.label_map()
    if state is not None:
        spec = ModelSpec.from_dict(state["spec"])
        cfg = TrainConfig.from_dict(state["config"])
        if args.epochs is not None:  # allow extending a finished run
            cfg.epochs = args.epochs
        cfg.device = args.device
    else:
        text = args.model or ""
        spec = parse_spec(text) if text else ModelSpec()
        if "num_classes" in text and spec.num_classes != label_map.num_classes:
            raise LLM4SegError(
                f"--model says num_classes={spec.num_classes} but the masks hold "
                f"{len(label_map.values)} label(s) {list(label_map.values)}, i.e. num_classes="
                f"{label_map.num_classes}"
            )
        spec = spec.with_(num_classes=label_map.num_classes)
        if "in_channels" not in text and data.is_rgb:
            spec = spec.with_(in_channels=3)
        defaults = TrainConfig()
        cfg = TrainConfig(
            epochs=args.epochs or defaults.epochs,
            batch_size=args.batch_size or defaults.batch_size,
            lr=args.lr or defaults.lr,
            seed=args.seed,
            device=args.device,
            trainable=args.trainable,
            crop_size=args.crop,
            max_steps=args.max_steps,
            num_workers=args.workers,
            optimizer=args.optimizer or defaults.optimizer,
            weight_decay=defaults.weight_decay if args.weight_decay is None else args.weight_decay,
            schedule=args.schedule or defaults.schedule,
            warmup_steps=args.warmup or 0,
            eval_every=args.eval_every or defaults.eval_every,
            augment=args.augment != "none",
        )
    # decoded and resized once; with DataLoader workers each process would keep its own copy
    keep_mb = args.keep_mb if cfg.num_workers == 0 else 0
    train_ds = data.dataset("train", spec, label_map).keep_in_memory(keep_mb * 0.8)
    val_ds = data.dataset("val", spec, label_map).keep_in_memory(keep_mb * 0.2)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        if not split_path.is_file():
            data.split.save(split_path)
    log(data.describe())
    log(f"{len(train_ds)} training / {len(val_ds)} validation slices; labels {list(label_map.values)}"
        f" -> num_classes {spec.num_classes}")
    contoured = getattr(data, "contoured", None)
    if contoured is not None:
        partial = sum(len(v) < len(label_map.values) for v in contoured.values())
        log(f"partial labels: {partial} of {len(contoured)} cases lack some structures "
            "(cases.json); those are left out of the loss there, not taken for background")
    model = build_model(spec, device="cpu", seed=args.seed)
    if contoured is not None and state is None:
        model.set_background_prior(BACKGROUND_PRIOR)
    cancel_meta = {"dataset": str(Path(args.dataset).expanduser().resolve()),
                   "split": data.split.origin, "labels": list(label_map.values)}
    bar = ProgressBar("training", "step", not (args.quiet or not main_rank))

    def on_metrics(m: dict[str, Any]) -> None:
        if main_rank and not args.quiet:
            bar.write(format_metrics(m))

    trainer = Trainer(model, cfg, Callbacks(on_progress=bar.update, on_metrics=on_metrics,
                                            on_log=lambda s: bar.write(s) if main_rank else None))
    counts = model.param_counts()
    log(f"device {trainer.device}{f', {dist_.world_size} processes (DDP)' if dist_.distributed else ''}; "
        f"trainable {cfg.trainable}: {counts.trainable:,} of {counts.total:,} parameters")
    t0 = time.perf_counter()
    finished = False
    try:
        result = trainer.fit(train_ds, val_ds, checkpoint_dir=out, resume=state is not None,
                             meta=cancel_meta)
        finished = True
    except KeyboardInterrupt:
        bar.close()
        if main_rank:
            print(f"llm4seg: interrupted; training state saved in {out}; continue with "
                  f"`llm4seg train {args.dataset} -o {out} --resume`", file=sys.stderr)
        return 130
    finally:
        bar.close()
        if dist_.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                if finished:
                    # all ranks leave together: a rank tearing gloo down while rank 0 still
                    # writes its checkpoint aborted once in CI ("terminate called without an
                    # active exception", exit -6)
                    dist.barrier()
                dist.destroy_process_group()
    best = result.best_metrics
    log(f"done: {result.steps} steps in {time.perf_counter() - t0:.1f} s; best "
        + ", ".join(f"{k} {best[k]:.4f}" for k in ("val_dice", "val_iou") if k in best)
        + f" (epoch {best.get('epoch', '?')}); wrote {out / 'best.safetensors'}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llm4seg_core.training.config import SCHEDULES, TRAINABLE

    p.add_argument("dataset", help="images/ + masks/0/ (2D), imagesTr/ + labelsTr/, or *_image/*_label volumes")
    p.add_argument("-o", "--output", required=True, help="model folder: best/last.safetensors + training state")
    p.add_argument("--model", help="model spec: preset and/or key=value overrides (num_classes comes from the masks)")
    p.add_argument("--epochs", type=int, help="epochs (default 300, the reference)")
    p.add_argument("--batch-size", type=int, help="batch size per process (default 8)")
    p.add_argument("--lr", type=float, help="base learning rate (default 0.01, SGD + poly decay)")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), help="default sgd (the reference)")
    p.add_argument("--weight-decay", type=float, help="default 1e-4")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default poly)")
    p.add_argument("--warmup", type=int, help="linear warm-up steps before the schedule (default 0)")
    p.add_argument("--eval-every", type=int, help="epochs between validations (default 1)")
    p.add_argument("--keep-mb", type=float, default=2048,
                   help="memory for decoded, resized items, kept after their first read (default 2048)")
    p.add_argument("--trainable", default="all-but-llm", choices=TRAINABLE, help="what gets gradients")
    p.add_argument("--augment", choices=("dihedral", "none"), default="dihedral",
                   help="the 8 rotations/flips (default), or none: for labels with a side "
                        "(left/right organs), which a flip would swap")
    p.add_argument("--crop", type=int, help="train on random crops of this size (multiple of 16)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--split-name", help="use <NAME>_train.txt / <NAME>_val.txt")
    p.add_argument("--workers", type=int, default=0, help="data loading processes (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in the output folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
