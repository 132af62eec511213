"""``llm4seg series FOLDER``: the DICOM series in a folder, one a line."""

from __future__ import annotations

import argparse

COMMAND = "series"
HELP = "list the DICOM series in a folder"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.io import list_dicom_series

    for s in list_dicom_series(args.folder):
        print(f"{s.uid}\t{s.modality or '?'}\t{s.n_files} files\t{s.description or ''}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
