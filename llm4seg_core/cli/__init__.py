"""``llm4seg``: the headless front end, one module per subcommand.

``segment``, ``info``, ``models``, ``data``, ``series``, ``convert``, ``demo``,
``train``, ``finetune``, ``eval``: each module has ``COMMAND`` and ``HELP`` (its name and
one-line help), ``add_arguments(parser)`` and ``run(args)``; :func:`build_parser`
makes one subparser of each. User errors print one line on stderr and exit with
status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llm4seg_core.cli import convert, data, demo, finetune, info, models, segment, series, train
from llm4seg_core.cli import eval as eval_
from llm4seg_core.errors import Cancelled, LLM4SegError

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (segment, info, models, data, series, convert, demo, train, finetune, eval_)  # --help order


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm4seg",
        description="LLM4Seg: medical image segmentation with a frozen pre-trained LLM layer.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        sp = sub.add_parser(module.COMMAND, help=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(func=module.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LLM4SegError as exc:
        print(f"llm4seg: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"llm4seg: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("llm4seg: interrupted", file=sys.stderr)
        return 130
