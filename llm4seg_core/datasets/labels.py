"""What a dataset's labels mean and which cases train: LabelMap, Split, random_split.

Torch-free: the CLI reads and writes a run's split without importing torch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError

__all__ = ["SPLIT_FILE", "LabelMap", "Split", "random_split"]

SPLIT_FILE = "split.json"
"""The split a training run used, kept in its run folder."""


@dataclass(frozen=True)
class LabelMap:
    """Mask values -> class indices.

    ``values`` are the foreground values found in the masks (sorted). A single
    value gives a binary model (num_classes 1, sigmoid); N values give
    num_classes N+1 (softmax with background). Values 1..N map to themselves;
    any other set (e.g. 0/128/255 gray levels) maps in sorted order to 1..N.
    """

    values: tuple[int, ...]

    @property
    def binary(self) -> bool:
        return len(self.values) <= 1

    @property
    def num_classes(self) -> int:
        return 1 if self.binary else len(self.values) + 1

    def lut(self) -> np.ndarray:
        lut = np.zeros(256, np.uint8)
        if self.binary:
            lut[1:] = 1
        else:
            for k, v in enumerate(self.values, start=1):
                lut[v] = k
        return lut

    def apply(self, labels: np.ndarray) -> np.ndarray:
        return self.lut()[labels]

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelMap:
        return cls(tuple(int(v) for v in d["values"]))


@dataclass
class Split:
    """Case ids for training and validation, and where the split came from."""

    train: list[str]
    val: list[str]
    origin: str = ""
    seed: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"train": self.train, "val": self.val, "origin": self.origin, "seed": self.seed},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Split:
        d = json.loads(text)
        return cls(list(d["train"]), list(d["val"]), d.get("origin", ""), d.get("seed"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise LLM4SegError(f"cannot read the split file {path}: {exc}") from None


def random_split(cases: Sequence[str], seed: int, val_fraction: float = 0.2) -> Split:
    """A seeded split of ``cases`` (at least one case in each part when there are two or more)."""
    cases = sorted(cases)
    order = cases[:]
    random.Random(seed).shuffle(order)
    if len(order) < 2:
        return Split(list(order), list(order), origin="single case: validation = training", seed=seed)
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    return Split(
        sorted(order[n_val:]), sorted(order[:n_val]),
        origin=f"random {1 - val_fraction:.0%}/{val_fraction:.0%} split, seed {seed}", seed=seed,
    )
