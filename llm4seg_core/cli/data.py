"""``llm4seg data fetch|path [--rtstruct]``: the demo data (and the RTSTRUCT test cases),
fetched from PyPI once."""

from __future__ import annotations

import argparse
import sys

COMMAND = "data"
HELP = "demo data: fetch it from PyPI (once) or print where it is"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.data import data_dir, fetch_demo_data, fetch_rtstruct_cases, rtstruct_dir

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    if args.action == "fetch":
        print(fetch_demo_data(log=log))
        if args.rtstruct:
            print(fetch_rtstruct_cases(log=log))
    else:
        print(rtstruct_dir() if args.rtstruct else data_dir())
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["fetch", "path"])
    p.add_argument("--rtstruct", action="store_true",
                   help="the RTSTRUCT test cases too (fetch) or instead (path): four lung CTs "
                   "with tumour contours, from pycerr 2.5.1 (CC BY-NC 3.0)")
