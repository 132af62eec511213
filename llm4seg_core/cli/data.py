"""``llm4seg data fetch|path``: the demo data, fetched from PyPI once."""

from __future__ import annotations

import argparse
import sys

COMMAND = "data"
HELP = "demo data: fetch it from PyPI (once) or print where it is"


def run(args: argparse.Namespace) -> int:
    from llm4seg_core.data import data_dir, fetch_demo_data

    if args.action == "fetch":
        path = fetch_demo_data(log=lambda m: print(m, file=sys.stderr))
        print(path)
    else:
        print(data_dir())
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["fetch", "path"])
