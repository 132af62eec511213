"""``llm4seg finetune IMAGE MASK --slices ...``: fine-tune on corrected slices of one image.

Saves a new model store version (or ``-o FILE.safetensors``); ``--complete OUT``
then segments the other slices with the new model, and ``--seeded`` keeps what
continues the corrections (:mod:`llm4seg_core.loop`).

``--base prompt`` (a prompt model) trains on the corrected objects with
simulated prompts and saves in task ``prompt``; its ``--complete`` propagates
each label of the corrected slices through the volume (nothing for
``--seeded`` to filter: a propagation continues the corrections).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from llm4seg_core.cli.common import Log, log_fn, open_store, report_image
from llm4seg_core.cli.progress import ProgressBar
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.postprocess import DEFAULT_STEP_MM

COMMAND = "finetune"
HELP = "fine-tune a model on corrected slices of one image"


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


def _corrections(args: argparse.Namespace, slices: list[int]) -> Any:
    """The image and, of its mask, only the corrected slices, as a CorrectionSet."""
    import numpy as np

    from llm4seg_core.datasets import CorrectionSet
    from llm4seg_core.io import check_mask_path, read_image, read_mask

    volume = read_image(args.image)
    report_image(volume)
    if args.complete:
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
    return CorrectionSet(volume, labels, slices)


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.loop import finetune_corrections
    from llm4seg_core.slices import parse_slices
    from llm4seg_core.store import resolve_model, save_checkpoint
    from llm4seg_core.training import FinetuneConfig

    log = log_fn(args.quiet)
    slices = parse_slices(args.slices)
    if args.seeded and not args.complete:
        raise LLM4SegError("--seeded keeps what continues the corrections in the completed mask: "
                           "give --complete OUT too")
    to_file = bool(args.output) and args.output.lower().endswith(".safetensors")
    store = open_store(args)
    if to_file:
        folder = Path(args.output).expanduser().parent
        if not folder.is_dir():
            raise LLM4SegError(f"folder {folder} does not exist; create it or choose another place")
    elif args.output:
        store.check_new_name(args.output)  # a taken name fails now, not after training
    _check_prompt_base(args.base, store)
    corrections = _corrections(args, slices)
    base = resolve_model(args.base, store, load=False)  # loaded by finetune_corrections
    if base.warning:
        print(f"WARNING: {base.warning}", file=sys.stderr)
    if not base.trained:
        print("NOTE: the base model is UNTRAINED; the fine-tune starts from random weights.",
              file=sys.stderr)
    log(f"base: {base.source} (task {base.task}); {len(slices)} corrected slice(s): {args.slices}")
    if base.spec.is_prompt_model:
        log("a prompt model: trained on the corrected objects with simulated clicks, boxes and "
            "guides")
    cfg = FinetuneConfig(device=args.device, seed=args.seed)
    if args.steps:
        cfg.steps = args.steps
    if args.trainable:
        cfg.trainable = args.trainable
    data = {"image": str(Path(args.image).resolve()), "mask": str(Path(args.mask).resolve()),
            "slices": slices, "finetune": cfg.to_dict()}
    with ProgressBar("fine-tuning", "step", not args.quiet) as bar:
        outcome = finetune_corrections(
            base, corrections, cfg, bar.callbacks(), store=store, save=not to_file,
            name=args.output or None, data=data,
            note=args.note or f"fine-tuned on {len(slices)} slice(s) of {Path(args.image).name}")
    result = outcome.result
    log(f"fine-tuned {cfg.steps} steps in {result.seconds:.1f} s (encoder features cached: "
        f"{result.info['cached_encoder']}); on the corrected slices dice "
        f"{result.best_metrics['train_dice']:.4f}")
    if outcome.version is None:
        path = save_checkpoint(outcome.model, Path(args.output).expanduser(),
                               {"parent": outcome.parent, "data": data, "metrics": outcome.metrics,
                                "task": outcome.task})
        print(f"wrote {path}")
    else:
        v = outcome.version
        print(f"saved model version {v.name} ({v.path})"
              + (f" in task {v.task}" if v.task != "default" else ""))
    if args.complete:
        _complete(args, outcome.model, corrections, log)
    return 0


def _check_prompt_base(text: str | None, store: Any) -> None:
    """``--base prompt`` while no prompt model exists: the prompt segmenter's message."""
    from llm4seg_core.store.suggest import PROMPT_TASK

    if (text or "").strip() == PROMPT_TASK and PROMPT_TASK not in store.tasks():
        from llm4seg_core.prompts.segment import NO_PROMPT_MODEL

        raise LLM4SegError(NO_PROMPT_MODEL.format(root=store.root))


def _complete(args: argparse.Namespace, model: Any, corrections: Any, log: Log) -> None:
    """Segment the other slices with the fine-tuned model (a prompt model: propagate from the
    corrected slices); corrected slices keep their labels."""
    from llm4seg_core.io import write_mask
    from llm4seg_core.loop import is_prompt, keep_continuations, segment_rest
    from llm4seg_core.postprocess import pixel_mm

    volume, slices = corrections.volume, list(corrections.slices)
    prompt = is_prompt(model)
    with ProgressBar("propagating" if prompt else "segmenting", "slice", not args.quiet) as bar:
        out = segment_rest(model, volume, corrections.labels, slices, bar.callbacks(),
                           device=args.device)
    if prompt:
        log("the other slices: each label propagated from the corrected slices"
            + (" (it continues them by construction: nothing for --seeded to filter)"
               if args.seeded else ""))
    elif args.seeded:
        out, summary = keep_continuations(out, slices, pixel_size=pixel_mm(volume),
                                          step_mm=args.step_mm, fill_between=args.fill_between)
        log(summary.describe())
    path = write_mask(out, volume, args.complete)
    n_other = volume.n_slices - len(slices)
    print(f"wrote {path} ({n_other} slice(s) segmented, {len(slices)} from the mask)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llm4seg_core.training import TRAINABLE

    p.add_argument("image", help="the image (DICOM folder/file, NIfTI, NRRD, MHA, PNG...)")
    p.add_argument("mask", help="its label mask; only the --slices are read")
    p.add_argument("--slices", required=True, help="corrected slices, e.g. 3,7,10-12")
    p.add_argument("--base", help="model to start from: a task (its current version, else its shipped "
                   "model; e.g. 'default', 'polyp', 'prompt'), a version, a checkpoint file or a "
                   "spec (default: task 'default'); the new version joins the base's task (a "
                   "prompt model's: task 'prompt' unless it has another)")
    p.add_argument("-o", "--output", help="new version name (model store) or FILE.safetensors")
    p.add_argument("--steps", type=int, help="optimizer steps (default: FinetuneConfig.steps, 180)")
    p.add_argument("--trainable", choices=TRAINABLE, help="default adapters+decoder")
    p.add_argument("--note", help="a note stored with the version")
    p.add_argument("--complete", metavar="OUT",
                   help="then segment the other slices with the new model and write the whole "
                        "mask here (the --slices keep their labels from MASK)")
    p.add_argument("--seeded", action="store_true",
                   help="with --complete: keep what continues the corrections (the labels of "
                        "the --slices), slice by slice (see --step-mm)")
    p.add_argument("--step-mm", type=_step_mm, default=DEFAULT_STEP_MM, metavar="MM",
                   help="with --seeded: how far a region may move or grow from one slice to the "
                        f"next (default {DEFAULT_STEP_MM:g}); 'none' keeps whole 3-D regions "
                        "touching a labelled voxel")
    p.add_argument("--fill-between", action=argparse.BooleanOptionalAction, default=True,
                   help="with --seeded: fill the gaps between two --slices holding a label with "
                        "the outline interpolated from theirs, when the two are within --step-mm "
                        "a slice of each other or the kept mask reaches every slice between "
                        "them (default: on)")
    p.add_argument("--store", metavar="DIR", help="model store folder (default: the user's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
