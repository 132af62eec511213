"""``llm4seg segment IMAGE -o MASK``: segment an image or volume and write the mask.

A folder of pictures (no DICOM in it) is segmented picture by picture:
``llm4seg segment FOLDER -o OUT_FOLDER`` writes one mask per picture, same stem.
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
    report_image,
)
from llm4seg_core.cli.progress import ProgressBar

COMMAND = "segment"
HELP = "segment an image or volume and write the mask"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.io import check_mask_path, read_image, write_mask

    from llm4seg_core.batch import is_picture_folder

    log = log_fn(args.quiet)
    if is_picture_folder(args.input):
        return _run_folder(args, log)
    volume = read_image(args.input, series_uid=args.series)
    report_image(volume, chose_series=args.series is not None)
    out = check_mask_path(volume, args.output)  # fail now, not after segmenting
    seg = load_segmenter(args)
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


def _run_folder(args: argparse.Namespace, log) -> int:
    """Every picture of a folder; exit 2 when some could not be segmented (the rest are written)."""
    from llm4seg_core.batch import segment_folder

    seg = load_segmenter(args)
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
    add_model_args(p)
