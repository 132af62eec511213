"""3D image/label volume pairs, sampled slice-wise.

``imagesTr/`` + ``labelsTr/`` (nnU-Net naming, ``case_0000.nii.gz`` /
``case.nii.gz``) or ``<case>_image.<ext>`` / ``<case>_label.<ext>`` files in
one folder (the demo data folder). Every slice holding a label is used, plus
a seeded share of empty slices. A ``cases.json`` with ``labels_present`` per
case marks partial labels: items then carry which classes were contoured
(``(x, y, present)``), and the loss leaves the others out instead of taking
them for background. Volumes stay in their file's dtype (int16 for
CT) in a small LRU cache bounded in bytes, and labels as uint8.
"""

from __future__ import annotations

import math
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4seg_core.datasets.files import case_stem, listing
from llm4seg_core.datasets.items import ModelGrid, SliceDataset, make_item
from llm4seg_core.datasets.labels import LabelMap, Split, read_contoured, read_split_files
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import VOLUME_SUFFIXES, Volume, read_image, read_mask, suffix_of
from llm4seg_core.preprocess import intensity_range

__all__ = ["VolumePairs", "present_classes"]


def present_classes(values: frozenset[int], label_map: LabelMap) -> torch.Tensor:
    """Bool ``(num_classes,)`` (at least 2): True for background and each contoured class."""
    lut = label_map.lut()
    present = torch.zeros(max(2, label_map.num_classes), dtype=torch.bool)
    present[0] = True
    for v in values:
        if 0 < v < 256 and lut[v]:
            present[int(lut[v])] = True
    return present


class _LRU:
    """A tiny LRU cache bounded by the bytes of the numpy arrays it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: Any, make) -> Any:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value, size = make()
        self.items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, (_, s) = self.items.popitem(last=False)
            self.bytes -= s
        return value


class VolumePairs:
    """3D image/label pairs, sampled slice-wise.

    The split: ``split`` (e.g. read back from a run folder), else the split
    files ``<name>_train.txt`` / ``<name>_val.txt`` (``split_name``, or the one
    pair in the folder), else a seeded random split.

    ``empty_fraction``: per case, the number of label-free slices kept is this
    fraction of its labelled slices (seeded choice); 1.0 with ``all_slices``
    keeps every slice. ``cache_bytes`` bounds the volumes kept in RAM (in their
    file dtype) between items.
    """

    kind = "3d"

    def __init__(self, root: str | Path, *, split_name: str | None = None,
                 split: Split | None = None, seed: int = 0,
                 val_fraction: float = 0.2, empty_fraction: float = 0.25,
                 all_slices: bool = False, cache_bytes: int = 1 << 30) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise LLM4SegError(f"no such dataset folder: {self.root}")
        self.pairs = self._discover()
        self.cases = sorted(self.pairs)
        self.split = split or read_split_files(self.root, split_name, self.cases, seed, val_fraction,
                                               lambda line: case_stem(Path(line)))
        unknown = sorted((set(self.split.train) | set(self.split.val)) - set(self.cases))
        if unknown:
            raise LLM4SegError(f"the split names case(s) not in {self.root}: {listing(unknown)}")
        self.contoured = read_contoured(self.root)
        if self.contoured is not None:
            unlisted = sorted(set(self.cases) - set(self.contoured))
            if unlisted:
                raise LLM4SegError(
                    f"{self.root / 'cases.json'} lists the contoured labels of some cases but not of "
                    f"{listing(unlisted)}"
                )
        self.seed = seed
        self.empty_fraction = empty_fraction
        self.all_slices = all_slices
        self._cache = _LRU(cache_bytes)
        self._index: dict[str, tuple[list[int], list[int], tuple[int, ...]]] = {}

    def _discover(self) -> dict[str, tuple[Path, Path]]:
        img_dir, lab_dir = self.root / "imagesTr", self.root / "labelsTr"
        pairs: dict[str, tuple[Path, Path]] = {}
        if img_dir.is_dir() or lab_dir.is_dir():
            if not (img_dir.is_dir() and lab_dir.is_dir()):
                raise LLM4SegError(f"{self.root} needs both imagesTr/ and labelsTr/")
            images: dict[str, Path] = {}
            for p in sorted(img_dir.iterdir()):
                if suffix_of(p) not in VOLUME_SUFFIXES or p.name.startswith("."):
                    continue
                stem = case_stem(p)
                m = re.fullmatch(r"(.+)_(\d{4})", stem)
                if m and m.group(2) != "0000":
                    continue  # further modalities: the model reads channel 0000
                images[m.group(1) if m else stem] = p
            labels = {case_stem(p): p for p in sorted(lab_dir.iterdir())
                      if suffix_of(p) in VOLUME_SUFFIXES and not p.name.startswith(".")}
            where = (img_dir, lab_dir)
        else:
            images, labels = {}, {}
            for p in sorted(self.root.iterdir()):
                if not p.is_file() or suffix_of(p) not in VOLUME_SUFFIXES:
                    continue
                m = re.fullmatch(r"(.+)_(image|label|mask|seg)", case_stem(p), flags=re.IGNORECASE)
                if not m:
                    continue
                (images if m.group(2).lower() == "image" else labels)[m.group(1)] = p
            where = (self.root, self.root)
        if not images and not labels:
            raise LLM4SegError(
                f"no training data in {self.root}: expected images/ + masks/0/ (2D), imagesTr/ + "
                "labelsTr/, or <case>_image.<ext> + <case>_label.<ext> volume pairs"
            )
        missing = sorted(set(images) - set(labels))
        if missing:
            raise LLM4SegError(
                f"{len(missing)} image(s) have no label volume in {where[1]}: "
                f"{listing([images[c].name for c in missing])}"
            )
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise LLM4SegError(
                f"{len(orphans)} label volume(s) have no image in {where[0]}: "
                f"{listing([labels[c].name for c in orphans])}"
            )
        for c in images:
            pairs[c] = (images[c], labels[c])
        return pairs

    def _load(self, case: str) -> tuple[Volume, np.ndarray, tuple[float, float] | None]:
        def make():
            img_path, lab_path = self.pairs[case]
            vol = read_image(img_path)
            lab = read_mask(lab_path)
            if lab.shape != vol.spatial_shape:
                raise LLM4SegError(
                    f"label {lab_path.name} has shape {lab.shape} but image {img_path.name} has "
                    f"shape {vol.spatial_shape}; they must be the same grid"
                )
            if vol.kind == "image2d":
                vol = Volume(vol.array[None], (*vol.spacing, 1.0), (*vol.origin, 0.0),
                             (1, 0, 0, 0, 1, 0, 0, 0, 1), is_rgb=vol.is_rgb, source=vol.source)
                lab = lab[None]
            return (vol, lab, {}), vol.array.nbytes + lab.nbytes

        return self._cache.get(case, make)

    def read_case(self, case: str) -> tuple[Volume, np.ndarray]:
        """A case's volume and its label map (mask values)."""
        vol, lab, _ = self._load(case)
        return vol, lab

    def _scan(self, case: str) -> tuple[list[int], list[int], tuple[int, ...]]:
        if case not in self._index:
            _, lab, _ = self._load(case)
            has = lab.reshape(lab.shape[0], -1).any(axis=1)
            fg = [int(z) for z in np.flatnonzero(has)]
            empty = [int(z) for z in np.flatnonzero(~has)]
            values = tuple(int(v) for v in np.unique(lab) if v)
            self._index[case] = (fg, empty, values)
        return self._index[case]

    def label_map(self) -> LabelMap:
        values: set[int] = set()
        for case in self.cases:
            values.update(self._scan(case)[2])
        return LabelMap(tuple(sorted(values)) or (1,))

    @property
    def is_rgb(self) -> bool:
        return bool(self._load(self.cases[0])[0].is_rgb)

    def slices_of(self, case: str) -> list[int]:
        fg, empty, _ = self._scan(case)
        if self.all_slices:
            return sorted(fg + empty)
        k = min(len(empty), math.ceil(len(fg) * self.empty_fraction)) if fg else len(empty)
        rng = random.Random(f"{self.seed}:{case}")
        return sorted(fg + rng.sample(empty, k))

    def item(self, case: str, z: int, grid: ModelGrid, label_map: LabelMap):
        vol, lab, limits = self._load(case)
        key = grid.intensity
        if key not in limits:
            limits[key] = intensity_range(vol, grid.intensity)
        x, y = make_item(vol, lab[z], z, limits[key], grid, label_map)
        if self.contoured is None:
            return x, y
        return x, y, present_classes(self.contoured[case], label_map)

    def dataset(self, part: str, spec: Any, label_map: LabelMap | None = None) -> SliceDataset:
        if part not in ("train", "val"):
            raise ValueError(part)
        cases = self.split.train if part == "train" else self.split.val
        refs = [(c, z) for c in cases for z in self.slices_of(c)]
        return SliceDataset(self, refs, ModelGrid.of(spec), label_map or self.label_map())

    def describe(self) -> str:
        return (f"3D volumes {self.root}: {len(self.cases)} cases, {len(self.split.train)} train / "
                f"{len(self.split.val)} val ({self.split.origin})")
