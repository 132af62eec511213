"""``llm4seg train``, ``llm4seg finetune`` and ``llm4seg eval``.

:func:`register` adds the three subcommands to the main parser
(:func:`llm4seg_core.cli.build_parser`). ``train`` also runs under
``torchrun --nproc_per_node N -m llm4seg_core train ...`` (DDP; only rank 0
prints and writes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.postprocess import DEFAULT_STEP_MM


def _step_mm(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of mm: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the step must be more than 0 mm")
    return value


def _log_fn(quiet: bool):
    return (lambda *_: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _bar(desc: str, unit: str, enabled: bool):
    """(update(done, total), write(text), close) for a tqdm bar on stderr (or plain prints)."""
    if not enabled:
        return (lambda d, t: None), (lambda s: print(s, file=sys.stderr, flush=True)), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return update, bar.write, bar.close


def _fmt_metrics(m: dict[str, Any]) -> str:
    parts = [f"epoch {m['epoch']}", f"step {m['step']}", f"loss {m['loss']:.4f}"]
    for k in ("val_loss", "val_dice", "val_iou"):
        if k in m:
            parts.append(f"{k} {m[k]:.4f}")
    parts.append(f"lr {m['lr']:.2e}")
    parts.append(f"{m['epoch_s']:.1f} s")
    if m.get("best"):
        parts.append("*best*")
    return "  ".join(parts)


# --------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from llm4seg_core.datasets import SPLIT_FILE, Split, open_dataset
    from llm4seg_core.model.network import build_model
    from llm4seg_core.model.spec import ModelSpec, parse_spec
    from llm4seg_core.training import (
        Callbacks, TrainConfig, Trainer, has_train_state, init_distributed, read_train_state_info,
    )

    dist_ = init_distributed(args.device)
    main_rank = dist_.is_main
    log = _log_fn(args.quiet or not main_rank)
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
        )
    train_ds = data.dataset("train", spec, label_map)
    val_ds = data.dataset("val", spec, label_map)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        if not split_path.is_file():
            data.split.save(split_path)
    log(data.describe())
    log(f"{len(train_ds)} training / {len(val_ds)} validation slices; labels {list(label_map.values)}"
        f" -> num_classes {spec.num_classes}")
    model = build_model(spec, device="cpu", seed=args.seed)
    cancel_meta = {"dataset": str(Path(args.dataset).expanduser().resolve()),
                   "split": data.split.origin, "labels": list(label_map.values)}
    update, write, close = _bar("training", "step", not (args.quiet or not main_rank))

    def on_metrics(m: dict[str, Any]) -> None:
        if main_rank and not args.quiet:
            write(_fmt_metrics(m))

    trainer = Trainer(model, cfg, Callbacks(on_progress=update, on_metrics=on_metrics,
                                            on_log=lambda s: write(s) if main_rank else None))
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
        close()
        if main_rank:
            print(f"llm4seg: interrupted; training state saved in {out}; continue with "
                  f"`llm4seg train {args.dataset} -o {out} --resume`", file=sys.stderr)
        return 130
    finally:
        close()
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


# --------------------------------------------------------------------------- finetune


def cmd_finetune(args: argparse.Namespace) -> int:
    import numpy as np

    from llm4seg_core import store as checkpoints
    from llm4seg_core.datasets import CorrectionSet, parse_slices
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_core.training import Callbacks, FinetuneConfig, finetune

    log = _log_fn(args.quiet)
    slices = parse_slices(args.slices)
    if args.seeded and not args.complete:
        raise LLM4SegError("--seeded filters the completed mask: give --complete OUT too")
    has_store = hasattr(checkpoints, "ModelStore")
    out_is_file = bool(args.output) and args.output.lower().endswith(".safetensors")
    if not has_store and not out_is_file:
        raise LLM4SegError("give -o FILE.safetensors: where to save the fine-tuned model")
    volume = read_image(args.image)
    if args.complete:
        from llm4seg_core.io import check_mask_path

        check_mask_path(volume, args.complete)  # a bad -o fails now, not after training
    mask = read_mask(args.mask, reference=volume)
    labels = np.zeros(volume.spatial_shape, np.uint8)  # only the corrected slices are copied
    view_m = mask if volume.kind == "volume" else mask[None]
    view_l = labels if volume.kind == "volume" else labels[None]
    n = volume.n_slices
    bad = [z for z in slices if z >= n]
    if bad:
        raise LLM4SegError(f"slices {bad} are outside the image's slices 0..{n - 1}")
    for z in slices:
        view_l[z] = view_m[z]
    del mask, view_m
    corrections = CorrectionSet(volume, labels, slices)

    parent = None
    if has_store and hasattr(checkpoints, "resolve_model"):
        store = checkpoints.ModelStore(args.store) if args.store else checkpoints.ModelStore()
        resolved = checkpoints.resolve_model(args.base, store)
        model, parent, trained = resolved.model, resolved.name, resolved.trained
        source = resolved.source
    else:
        if args.base and Path(args.base).expanduser().is_file():
            model, _ = checkpoints.load_checkpoint(Path(args.base).expanduser())
            source, trained = str(args.base), True
        else:
            path = checkpoints.default_checkpoint()
            if path is None:
                raise LLM4SegError("no base model: pass --base CHECKPOINT")
            model, _ = checkpoints.load_checkpoint(path)
            source, trained = str(path), True
    if not trained:
        print("NOTE: the base model is UNTRAINED; the fine-tune starts from random weights.",
              file=sys.stderr)
    log(f"base: {source}; {len(slices)} corrected slice(s): {args.slices}")
    cfg = FinetuneConfig(device=args.device, seed=args.seed)
    if args.steps:
        cfg.steps = args.steps
    if args.trainable:
        cfg.trainable = args.trainable
    update, write, close = _bar("fine-tuning", "step", not args.quiet)
    try:
        result = finetune(model, corrections, cfg, Callbacks(on_progress=update))
    finally:
        close()
    m = result.best_metrics
    log(f"fine-tuned {cfg.steps} steps in {result.seconds:.1f} s (encoder features cached: "
        f"{result.info['cached_encoder']}); on the corrected slices dice {m['train_dice']:.4f}")
    data = {"image": str(Path(args.image).resolve()), "mask": str(Path(args.mask).resolve()),
            "slices": slices, "finetune": cfg.to_dict()}
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
    if out_is_file or not has_store:
        path = checkpoints.save_checkpoint(model, Path(args.output).expanduser(),
                                           {"parent": parent, "data": data, "metrics": metrics})
        print(f"wrote {path}")
    else:
        info = store.save(
            model, name=args.output or None, parent=parent, data=data, metrics=metrics,
            note=args.note or f"fine-tuned on {len(slices)} slice(s) of {Path(args.image).name}")
        print(f"saved model version {info.name} ({info.path})")
    if args.complete:
        _complete(args, model, volume, labels, slices, log)
    return 0


def _complete(args: argparse.Namespace, model: Any, volume: Any, labels: Any, slices: list[int],
              log: Callable[[str], None]) -> None:
    """Segment the other slices with the fine-tuned model; corrected slices keep their labels."""
    from llm4seg_core.inference import Segmenter
    from llm4seg_core.io import write_mask

    others = [z for z in range(volume.n_slices) if z not in set(slices)]
    update, _write, close = _bar("segmenting", "slice", not args.quiet)
    try:
        out = Segmenter(model, device=args.device).segment(volume, slices=others, progress=update,
                                                            out=labels.copy())
    finally:
        close()
    if args.seeded:
        from llm4seg_core.postprocess import keep_seeded_components, pixel_mm

        out, info = keep_seeded_components(out, slices, step_mm=args.step_mm,
                                           pixel_size=pixel_mm(volume),
                                           fill_between=args.fill_between)
        per_label = info.get("labels", {}).values()
        removed = sum(v.get("voxels_removed", 0) for v in per_label)
        log(f"removed {removed} voxel(s) that do not continue the corrected slices")
        if args.fill_between:
            filled = sum(v.get("voxels_filled", 0) for v in per_label)
            gaps = sum(v.get("gaps_filled", 0) for v in per_label)
            log(f"filled {filled} voxel(s) in {gaps} gap(s) between the corrected slices")
    path = write_mask(out, volume, args.complete)
    print(f"wrote {path} ({len(others)} slice(s) segmented, {len(slices)} from the mask)")


# --------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    from llm4seg_core.datasets import parse_slices
    from llm4seg_core.io import read_image, read_mask
    from llm4seg_core.metrics import METRIC_NAMES, score_labels

    ref_vol = read_image(args.reference)
    ref = read_mask(args.reference)
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


# --------------------------------------------------------------------------- parser


def register(sub: Any) -> None:
    """Add ``train``, ``finetune`` and ``eval`` to the main parser's subparsers."""
    from llm4seg_core.training import TRAINABLE

    t = sub.add_parser("train", help="train a model on a dataset folder (2D or 3D); torchrun for DDP")
    t.add_argument("dataset", help="images/ + masks/0/ (2D), imagesTr/ + labelsTr/, or *_image/*_label volumes")
    t.add_argument("-o", "--output", required=True, help="model folder: best/last.safetensors + training state")
    t.add_argument("--model", help="model spec: preset and/or key=value overrides (num_classes comes from the masks)")
    t.add_argument("--epochs", type=int, help="epochs (default 300, the reference)")
    t.add_argument("--batch-size", type=int, help="batch size per process (default 8)")
    t.add_argument("--lr", type=float, help="base learning rate (default 0.01, SGD + poly decay)")
    t.add_argument("--trainable", default="all-but-llm", choices=TRAINABLE, help="what gets gradients")
    t.add_argument("--crop", type=int, help="train on random crops of this size (multiple of 16)")
    t.add_argument("--max-steps", type=int, help="stop after this many steps")
    t.add_argument("--split-name", help="use <NAME>_train.txt / <NAME>_val.txt")
    t.add_argument("--workers", type=int, default=0, help="data loading processes (default 0)")
    t.add_argument("--resume", action="store_true", help="continue the run saved in the output folder")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], mps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    f = sub.add_parser("finetune", help="fine-tune a model on corrected slices of one image")
    f.add_argument("image", help="the image (DICOM folder/file, NIfTI, NRRD, MHA, PNG...)")
    f.add_argument("mask", help="its label mask; only the --slices are read")
    f.add_argument("--slices", required=True, help="corrected slices, e.g. 3,7,10-12")
    f.add_argument("--base", help="model to start from: version, checkpoint file or spec (default: current)")
    f.add_argument("-o", "--output", help="new version name (model store) or FILE.safetensors")
    f.add_argument("--steps", type=int, help="optimizer steps (default: FinetuneConfig.steps, 180)")
    f.add_argument("--trainable", choices=TRAINABLE, help="default adapters+decoder")
    f.add_argument("--note", help="a note stored with the version")
    f.add_argument("--complete", metavar="OUT",
                   help="then segment the other slices with the new model and write the whole "
                        "mask here (the --slices keep their labels from MASK)")
    f.add_argument("--seeded", action="store_true",
                   help="with --complete: keep only what continues the labels of the --slices, "
                        "slice by slice (see --step-mm)")
    f.add_argument("--step-mm", type=_step_mm, default=DEFAULT_STEP_MM, metavar="MM",
                   help="with --seeded: how far a region may move or grow from one slice to the "
                        f"next (default {DEFAULT_STEP_MM:g}); 'none' keeps whole 3-D regions "
                        "touching a labelled voxel")
    f.add_argument("--fill-between", action=argparse.BooleanOptionalAction, default=True,
                   help="with --seeded: fill the gaps between two --slices holding a label with "
                        "the outline interpolated from theirs, when the two are within --step-mm "
                        "a slice of each other or the kept mask reaches every slice between "
                        "them (default: on)")
    f.add_argument("--store", metavar="DIR", help="model store folder (default: the user's)")
    f.add_argument("--device", default="auto")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("-q", "--quiet", action="store_true")
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser("eval", help="score a predicted mask against a reference mask, per label")
    e.add_argument("prediction", help="predicted mask")
    e.add_argument("reference", help="reference mask (its spacing is used for HD95)")
    e.add_argument("--exclude-slices", help="slices left out, e.g. the fine-tuning slices: 3,7,10-12")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_eval)
