"""Case names of dataset files, and short listings of them for error messages. Torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm4seg_core.io import suffix_of

__all__ = ["case_stem", "listing"]


def case_stem(path: Path) -> str:
    """The case name of a file: its name without the known suffix (``a.nii.gz`` -> ``a``)."""
    s = suffix_of(path)
    return path.name[: -len(s)] if s and path.name.lower().endswith(s) else path.stem


def listing(names: Sequence[str], limit: int = 5) -> str:
    """``"a, b, c, d, e and 3 more"``."""
    shown = ", ".join(str(n) for n in list(names)[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")
