"""``llm4seg segment IMAGE -o MASK``: segment an image or volume and write the mask."""

from __future__ import annotations

import argparse
import time

from llm4seg_core.cli.common import add_model_args, describe_segmenter, load_segmenter, log_fn
from llm4seg_core.cli.progress import ProgressBar

COMMAND = "segment"
HELP = "segment an image or volume and write the mask"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.io import check_mask_path, read_image, write_mask

    log = log_fn(args.quiet)
    volume = read_image(args.input, series_uid=args.series)
    out = check_mask_path(volume, args.output)  # fail now, not after segmenting
    seg = load_segmenter(args)
    describe_segmenter(seg, log)
    log(f"image: {args.input}: {volume.kind}, shape {volume.array.shape}, spacing {volume.spacing}")
    t0 = time.perf_counter()
    with ProgressBar("segmenting", "slice", not args.quiet) as bar:
        labels = seg.segment(volume, callbacks=bar.callbacks())
    dt = time.perf_counter() - t0
    path = write_mask(labels, volume, out)
    log(
        f"wrote {path} ({int((labels > 0).sum())} foreground voxels; {volume.n_slices} slices "
        f"in {dt:.1f} s, {volume.n_slices / dt:.2f} slices/s)"
    )
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="DICOM folder or file, NIfTI, NRRD, MHA/MHD, PNG/JPG/BMP/TIFF")
    p.add_argument("-o", "--output", required=True, help="mask file: .nii.gz/.nrrd/.mha (volumes), .png (2D)")
    p.add_argument("--series", help="SeriesInstanceUID to read from a DICOM folder holding several")
    add_model_args(p)
