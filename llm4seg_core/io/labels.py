"""Named labels: the table (value, name, colour) that travels with models, masks and outputs.

A model says what its labels are in its checkpoint (``meta["labels"] =
[{"value", "name", "color"}]``, the zoo's) or its spec (``label_names``);
:func:`label_table` makes one table of that for the values a mask holds,
naming and colouring the rest. NIfTI/NRRD/MetaImage masks carry the table in a
sidecar ``<mask>.labels.json`` written beside them (:func:`write_label_sidecar`),
which :func:`read_label_sidecar` reads back; DICOM-SEG carries it in its
segment descriptions (:mod:`~llm4seg_core.io.dicomseg`), an RTSTRUCT in its ROI
names and display colours (:mod:`~llm4seg_core.io.rtstruct`). A mask read with
its table is a :class:`LabelVolume`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.errors import LLM4SegError

SIDECAR_SUFFIX = ".labels.json"
SIDECAR_FORMAT = "llm4seg-labels/1"

#: Distinct colours for labels without one (Sasha Trubetskoy's 20, the zoo's too).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000",
           "#aaffc3", "#808000", "#ffd8b1", "#000075", "#808080", "#ffe119")

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Label:
    """One label of a mask: its value (1-255), its name, its colour ``#rrggbb``."""

    value: int
    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "color": self.color}


@dataclass(frozen=True, eq=False)
class LabelVolume:
    """Labels read onto an image's grid (uint8, its spatial shape), their table, and what a
    person should know about how they were read (structures skipped, overlaps)."""

    labels: np.ndarray
    table: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()


def default_color(value: int) -> str:
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def label_table(values: Iterable[int] = (), meta_labels: Any = None,
                names: Iterable[str] = ()) -> tuple[Label, ...]:
    """The labels for ``values`` (and every value the model names), sorted by value.

    ``meta_labels``: a checkpoint's ``meta["labels"]`` (list of dicts; bad
    entries are skipped); ``names``: a spec's ``label_names`` (name of value
    1, 2, ...). A value neither names gets ``label <value>``; a missing or
    bad colour, one of :data:`PALETTE`.
    """
    found: dict[int, tuple[str | None, str | None]] = {}
    for i, n in enumerate(names):
        if str(n).strip():
            found[i + 1] = (str(n).strip(), None)
    if isinstance(meta_labels, (list, tuple)):
        for item in meta_labels:
            if not isinstance(item, dict):
                continue
            try:
                v = int(item.get("value"))
            except (TypeError, ValueError):
                continue
            if not 1 <= v <= 255:
                continue
            name = str(item.get("name") or "").strip() or None
            color = item.get("color")
            color = color if isinstance(color, str) and _COLOR_RE.match(color) else None
            old = found.get(v, (None, None))
            found[v] = (name or old[0], color or old[1])
    for v in values:
        v = int(v)
        if 1 <= v <= 255:
            found.setdefault(v, (None, None))
    return tuple(Label(v, n or f"label {v}", (c or default_color(v)).lower())
                 for v, (n, c) in sorted(found.items()))


def sidecar_path(mask_path: str | os.PathLike[str]) -> Path:
    """``mask.nii.gz`` -> ``mask.labels.json`` (beside it, the mask's own suffix dropped)."""
    from llm4seg_core.io.formats import suffix_of

    p = Path(mask_path)
    suffix = suffix_of(p)
    stem = p.name[: -len(suffix)] if suffix and p.name.lower().endswith(suffix) else p.stem
    return p.with_name(stem + SIDECAR_SUFFIX)


def write_label_sidecar(mask_path: str | os.PathLike[str], labels: Iterable[Label]) -> Path:
    """Write the label table beside a mask file (atomically); returns the sidecar's path."""
    from llm4seg_core.atomic import atomic_write_text

    path = sidecar_path(mask_path)
    record = {"format": SIDECAR_FORMAT, "mask": Path(mask_path).name,
              "labels": [lab.to_dict() for lab in labels]}
    return atomic_write_text(path, json.dumps(record, indent=1) + "\n", staged=True)


def read_label_sidecar(mask_path: str | os.PathLike[str]) -> tuple[Label, ...] | None:
    """The label table beside a mask file; None when there is none.

    A sidecar that is not ours, or damaged, is an error saying so (never a
    silent fallback to unnamed labels).
    """
    path = sidecar_path(mask_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LLM4SegError(f"the label table {path.name} beside the mask is unreadable ({exc}); "
                           "fix or delete it") from None
    if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
        raise LLM4SegError(f"{path.name} is not an llm4seg label table (format "
                           f"{record.get('format') if isinstance(record, dict) else None!r}); "
                           "rename it or delete it")
    return label_table(meta_labels=record.get("labels"))


def describe_labels(labels: np.ndarray, table: Iterable[Label] = (),
                    spacing: Iterable[float] = ()) -> list[str]:
    """One line per label value in ``labels``: value, name, colour, voxels (and mL with the
    voxel ``spacing`` (x, y, z) in mm); the table's labels without voxels are said to be empty."""
    spacing = tuple(float(v) for v in spacing)
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    found = {int(v): int(n) for v, n in zip(values, counts) if v > 0}
    voxel_ml = float(np.prod(spacing)) / 1000.0 if len(spacing) == 3 else None
    named = {lab.value: lab for lab in label_table(found, meta_labels=[t.to_dict() for t in table])}
    lines = []
    for v, lab in sorted(named.items()):
        n = found.get(v, 0)
        size = f"{n} voxels" + (f", {n * voxel_ml:.2f} mL" if voxel_ml is not None else "")
        lines.append(f"{v:>4}  {lab.name}  {lab.color}  {size if n else 'empty'}")
    return lines
