"""What a dataset's labels mean and which cases train: LabelMap, Split, random_split.

Torch-free: the CLI reads and writes a run's split without importing torch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError

__all__ = ["CASES_FILE", "LABELS_FILE", "SPLIT_FILE", "LabelMap", "Split", "random_split", "read_contoured",
           "read_split_files",
           "read_label_names"]

SPLIT_FILE = "split.json"
"""The split a training run used, kept in its run folder."""

CASES_FILE = "cases.json"
"""Per-case facts of a dataset folder; ``labels_present`` lists what was contoured."""

LABELS_FILE = "labels.json"
"""A dataset's label names: ``{"0": "background", "1": "Brainstem", ...}``."""


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


def read_split_files(root: Path, name: str | None, cases: Sequence[str], seed: int,
                     val_fraction: float, to_id: Callable[[str], str]) -> Split:
    """The split of a dataset folder from ``<name>_train.txt`` / ``<name>_val.txt``.

    Looked for in ``root`` and its parent. With ``name`` None: the one such
    pair there (several: an error naming them), or a seeded random split
    when there is none. ``to_id`` turns a listed line into a case id (e.g.
    strips a file suffix).
    """
    places = [root, root.parent]
    if name is None:
        names = sorted({p.name[: -len("_train.txt")] for d in places for p in d.glob("*_train.txt")})
        names = [n for n in names if any((d / f"{n}_val.txt").is_file() for d in places)]
        if len(names) > 1:
            raise LLM4SegError(
                f"several split files next to {root}: {', '.join(names)}; choose one with --split-name"
            )
        if not names:
            return random_split(cases, seed, val_fraction)
        name = names[0]
    for d in places:
        tr, va = d / f"{name}_train.txt", d / f"{name}_val.txt"
        if tr.is_file() and va.is_file():
            return Split(_split_ids(tr, to_id), _split_ids(va, to_id), origin=f"{tr.name} / {va.name}")
    raise LLM4SegError(f"no split files {name}_train.txt and {name}_val.txt in {root}")


def _split_ids(path: Path, to_id: Callable[[str], str]) -> list[str]:
    ids = [to_id(line.strip()) for line in
           path.read_text(encoding="utf-8", errors="replace").splitlines()
           if line.strip() and not line.strip().startswith("#")]
    if not ids:
        raise LLM4SegError(f"split file {path} lists no cases")
    return ids


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


def read_label_names(root: str | Path) -> dict[int, str]:
    """``labels.json`` of a dataset folder as ``{value: name}`` (background left out); {} if none."""
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        names = {int(k): str(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise LLM4SegError(f"cannot read {path}: {exc}") from None
    return {k: v for k, v in names.items() if k}


def read_contoured(root: str | Path) -> dict[str, frozenset[int]] | None:
    """The mask values contoured in each case, from ``cases.json``'s ``labels_present``.

    For partially labelled datasets (a structure that was not contoured in a
    case has no mask there, so 0 means "background or not contoured"). Entries
    name labels by their ``labels.json`` name or by value. None when the
    folder has no such file or no case lists its labels: every case is then
    fully labelled.
    """
    path = Path(root) / CASES_FILE
    if not path.is_file():
        return None
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LLM4SegError(f"cannot read {path}: {exc}") from None
    if not isinstance(cases, dict):
        raise LLM4SegError(f"{path} must map case ids to their facts")
    by_name = {n: v for v, n in read_label_names(root).items()}
    out: dict[str, frozenset[int]] = {}
    for case, facts in cases.items():
        if not isinstance(facts, dict) or "labels_present" not in facts:
            continue
        values = set()
        for entry in facts["labels_present"]:
            if isinstance(entry, int) or (isinstance(entry, str) and entry.isdigit()):
                values.add(int(entry))
            elif entry in by_name:
                values.add(by_name[entry])
            else:
                raise LLM4SegError(
                    f"{path}: case {case} lists label {entry!r}, which {LABELS_FILE} does not name"
                )
        out[str(case)] = frozenset(values)
    return out or None
