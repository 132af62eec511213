"""``llm4seg segment IMAGE -o MASK``: segment an image or volume and write the mask.

A folder of pictures (no DICOM in it) is segmented picture by picture:
``llm4seg segment FOLDER -o OUT_FOLDER`` writes one mask per picture, same stem.

Prompted (task ``prompt``, :mod:`llm4seg_core.prompts`): ``--prompts FILE``
segments the object the prompts point at on their slices, ``--propagate``
carries it through the volume from them; ``--from-mask MASK --slices LIST``
propagates each label of MASK's corrected slices.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from llm4seg_core.cli.common import (
    add_model_args,
    describe_segmenter,
    load_segmenter,
    log_fn,
    open_store,
    report_image,
)
from llm4seg_core.cli.progress import ProgressBar
from llm4seg_core.errors import LLM4SegError

COMMAND = "segment"
HELP = "segment an image or volume and write the mask"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.io import check_mask_path, read_image, write_mask

    from llm4seg_core.batch import is_picture_folder

    log = log_fn(args.quiet)
    prompted = _check_prompt_args(args)
    if is_picture_folder(args.input):
        if prompted:
            raise LLM4SegError("prompts are for one image, not a folder of pictures")
        return _run_folder(args, log)
    volume = read_image(args.input, series_uid=args.series)
    report_image(volume, chose_series=args.series is not None)
    out = check_mask_path(volume, args.output)  # fail now, not after segmenting
    if prompted:
        return _run_prompted(args, volume, out, log)
    seg = load_segmenter(args)  # a prompt model is refused (inference.PROMPT_MODEL_REFUSED)
    describe_segmenter(seg, log)
    log(f"image: {args.input}: {volume.kind}, shape {volume.array.shape}, spacing {volume.spacing}")
    t0 = time.perf_counter()
    with ProgressBar("segmenting", "slice", not args.quiet) as bar:
        labels = seg.segment(volume, callbacks=bar.callbacks(on_log=log))  # the engine's choice
    dt = time.perf_counter() - t0
    from llm4seg_core.io.dicomseg import Algorithm

    values = [int(v) for v in np.unique(labels) if v > 0]
    path = write_mask(labels, volume, out, labels=seg.label_table(values),
                      algorithm=Algorithm(seg.task, seg.name))
    log(
        f"wrote {path} ({int((labels > 0).sum())} foreground voxels; {volume.n_slices} slices "
        f"in {dt:.1f} s, {volume.n_slices / dt:.2f} slices/s)"
    )
    return 0


def _check_prompt_args(args: argparse.Namespace) -> bool:
    """Whether this is a prompted run; a clear error for options that do not go together."""
    if args.slices is not None and args.from_mask is None:
        raise LLM4SegError("--slices names the corrected slices of --from-mask MASK")
    if args.from_mask is not None and args.slices is None:
        raise LLM4SegError("--from-mask needs --slices LIST: the slices of MASK that are correct")
    if args.prompts is not None and args.from_mask is not None:
        raise LLM4SegError("give either --prompts or --from-mask, not both")
    if args.propagate and args.prompts is None and args.from_mask is None:
        raise LLM4SegError("--propagate carries the object of --prompts FILE through the volume")
    return args.prompts is not None or args.from_mask is not None


def _run_prompted(args: argparse.Namespace, volume, out, log) -> int:
    """The prompt model on the prompted slices (and on from them), or from a mask's slices."""
    from llm4seg_core.io import read_labelled_mask, write_mask
    from llm4seg_core.io.dicomseg import Algorithm
    from llm4seg_core.prompts import (
        PromptSegmenter, propagate_mask, read_prompts, segment_prompted,
    )
    from llm4seg_core.slices import parse_slices

    prompts = slices = read = None
    if args.prompts is not None:
        prompts = read_prompts(args.prompts, volume)  # bad prompts fail before the model loads
        if args.propagate and volume.kind != "volume":
            raise LLM4SegError("--propagate needs a volume; this image is a 2-D picture")
    else:
        if volume.kind != "volume":
            raise LLM4SegError("--from-mask propagates through a volume; this image is a "
                               "2-D picture")
        slices = parse_slices(args.slices)
        n = volume.n_slices
        bad = [z for z in slices if z >= n]
        if bad:
            raise LLM4SegError(f"slices {bad} are outside the image's slices 0..{n - 1}")
        read = read_labelled_mask(args.from_mask, reference=volume)
    seg = PromptSegmenter.load(args.model, store=open_store(args), device=args.device,
                               engine=args.engine, batch_size=args.batch_size)
    describe_segmenter(seg, log)
    t0 = time.perf_counter()
    with ProgressBar("propagating" if read is not None or args.propagate else "segmenting",
                     "slice", not args.quiet) as bar:
        cb = bar.callbacks(on_log=log)
        if prompts is not None:
            prop = segment_prompted(seg, volume, prompts, propagate_from=args.propagate,
                                    callbacks=cb)
            labels, ran = prop.mask, prop.segmented
            table = seg.label_table([1] if labels.any() else [])
            log(f"prompted slice(s) {sorted(prompts)}; {prop.describe()}")
        else:
            labels, props = propagate_mask(seg, volume, read.labels, slices, callbacks=cb)
            ran = sorted({z for p in props.values() for z in p.segmented})
            table = read.table or seg.label_table(sorted(props))
            for v, p in props.items():
                log(f"label {v}: {p.describe()}")
    dt = time.perf_counter() - t0
    path = write_mask(labels, volume, out, labels=table, algorithm=Algorithm(seg.task, seg.name))
    log(f"wrote {path} ({int((labels > 0).sum())} foreground voxels; {len(ran)} slice(s) "
        f"segmented in {dt:.1f} s)")
    return 0


def _run_folder(args: argparse.Namespace, log) -> int:
    """Every picture of a folder; exit 2 when some could not be segmented (the rest are written)."""
    from llm4seg_core.batch import segment_folder

    seg = load_segmenter(args)  # a prompt model is refused before any picture is read
    describe_segmenter(seg, log)
    with ProgressBar("segmenting", "picture", not args.quiet) as bar:
        run = segment_folder(seg, args.input, args.output, bar.callbacks(on_log=log))
    n = len(run.results)
    for r in run.failed:
        print(f"{r.source.name}: {r.error}", file=sys.stderr)
    log(f"wrote {len(run.written)} of {n} masks to {args.output} in {run.seconds:.1f} s "
        f"({n / max(run.seconds, 1e-9):.2f} pictures/s)"
        + (f"; {len(run.failed)} picture(s) could not be segmented (listed above)" if run.failed else ""))
    return 2 if run.failed else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="DICOM folder or file, NIfTI, NRRD, MHA/MHD, PNG/JPG/BMP/TIFF, "
                   "or a folder of pictures")
    p.add_argument("-o", "--output", required=True, help="mask file: .nii.gz/.nrrd/.mha (volumes), "
                   ".png (2D), .dcm (a DICOM-SEG, for a DICOM image); for a folder of pictures, "
                   "the output folder. Beside a .nii.gz/.nrrd/.mha mask, <mask>.labels.json holds "
                   "the label names and colours")
    p.add_argument("--series", help="SeriesInstanceUID to read from a DICOM folder holding several")
    g = p.add_argument_group("prompted segmentation (a prompt model: task 'prompt', or --model)")
    g.add_argument("--prompts", metavar="FILE", help="a JSON list of prompts of one object, in "
                   'voxel indices: {"type": "point", "zyx": [z, y, x], "positive": true}, '
                   '{"type": "box", "z": z, "yx0": [y0, x0], "yx1": [y1, x1]} (a 2-D picture: '
                   '"yx" and no z); segments the object on the prompted slices')
    g.add_argument("--propagate", action="store_true", help="with --prompts: carry the object "
                   "through the volume from the prompted slices, both ways, until it ends")
    g.add_argument("--from-mask", metavar="MASK", help="propagate each label of MASK's --slices "
                   "(its corrected slices) through the volume; MASK's other slices are replaced")
    g.add_argument("--slices", metavar="LIST", help="with --from-mask: the corrected slices, "
                   "e.g. 3,7,10-12")
    add_model_args(p)
