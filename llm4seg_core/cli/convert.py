"""``llm4seg convert LABELS --reference IMAGE -o OUT``: a DICOM-SEG or RTSTRUCT to a label mask.

The labels are read onto the reference image's grid (the DICOM series they were
made on; an RTSTRUCT's contours are rasterised) and written with their names
and colours: NIfTI/NRRD/MHA with a ``<mask>.labels.json`` sidecar, or ``.dcm``
(a DICOM-SEG of MANUAL segments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "convert"
HELP = "a DICOM-SEG or RTSTRUCT to a named label mask on its image (NIfTI, NRRD, MHA, DICOM-SEG)"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.cli.common import report_image
    from llm4seg_core.io import check_mask_path, read_image, read_labels, write_mask
    from llm4seg_core.io.dicomseg import Algorithm
    from llm4seg_core.io.labels import describe_labels

    reference = read_image(args.reference, series_uid=args.series)
    report_image(reference, chose_series=args.series is not None)
    out = check_mask_path(reference, args.output)  # a bad output name fails before the work
    result = read_labels(args.labels, reference)
    for note in result.notes:
        print(f"WARNING: {note}", file=sys.stderr)
    algorithm = Algorithm(task="convert", model=Path(args.labels).name, manual=True)
    written = write_mask(result.labels, reference, out, labels=result.table, algorithm=algorithm)
    print(f"{written}: {len(result.table)} label(s) from {Path(args.labels).name}")
    for line in describe_labels(result.labels, result.table, reference.spacing):
        print(line)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("labels", help="a DICOM-SEG or RTSTRUCT file (.dcm)")
    p.add_argument("--reference", required=True,
                   help="the image the labels were made on: its DICOM folder (or file)")
    p.add_argument("--series", help="SeriesInstanceUID to read from a reference folder holding "
                   "several")
    p.add_argument("-o", "--output", required=True,
                   help="label mask: .nii.gz/.nrrd/.mha (with a .labels.json sidecar) or .dcm "
                   "(DICOM-SEG)")
