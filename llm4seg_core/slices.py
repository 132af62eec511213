"""Slice lists: reading ``"3,7,10-12"`` and choosing few-shot slices of a mask.

Torch-free (numpy only), so the CLI, the UI and the benchmarks can use it
without importing the training stack.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

from llm4seg_core.errors import LLM4SegError

__all__ = ["choose_slices", "parse_slices", "structure_slices"]


def parse_slices(text: str | Iterable[int]) -> list[int]:
    """``"3,7,10-12"`` -> ``[3, 7, 10, 11, 12]`` (sorted, unique). Lists pass through."""
    if not isinstance(text, str):
        return sorted({int(v) for v in text})
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise LLM4SegError(
                f"cannot read slice list {text!r} at {part!r}; write e.g. 3,7,10-12"
            )
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise LLM4SegError(f"slice range {part!r} runs backwards; write {b}-{a}")
        out.update(range(a, b + 1))
    if not out:
        raise LLM4SegError(f"slice list {text!r} names no slices; write e.g. 3,7,10-12")
    return sorted(out)


def structure_slices(mask: np.ndarray) -> list[int]:
    """The z indices (first axis) whose slice holds any of the structure."""
    return [int(z) for z in np.nonzero(np.asarray(mask).reshape(mask.shape[0], -1).any(1))[0]]


def choose_slices(mask: np.ndarray, k: int) -> list[int]:
    """``k`` annotated slices, evenly spaced among the slices that hold the structure.

    Slice i (0-based) sits at the quantile (i+1)/(k+1) of the structure's
    slices: with its n slices in z order, at position floor((i+1)*n/(k+1)).
    k = 1 takes the middle one; the choice is symmetric and deterministic.
    """
    zs = structure_slices(mask)
    n = len(zs)
    if k < 1:
        raise ValueError("k must be at least 1")
    if n < k:
        raise ValueError(f"the structure spans {n} slice(s); cannot annotate {k}")
    pos = [min(n - 1, math.floor((i + 1) * n / (k + 1))) for i in range(k)]
    if len(set(pos)) < k:  # only when n is about k: spread over all positions instead
        pos = [round(i * (n - 1) / max(k - 1, 1)) for i in range(k)] if k > 1 else [n // 2]
    return [zs[p] for p in pos]
