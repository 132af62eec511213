"""2D dataset folders in the reference layout (BUSI, ISIC, Kvasir, TNSCUI).

``<root>/images/<case>.<ext>``, ``<root>/masks/0/<case>.<ext>`` (png/jpg/bmp/tif;
0/255 or label values; ``masks/1``, ``masks/2``... hold further classes when
present; or ``masks/<case>.<ext>`` label-index maps, 0 background, as in ACDC
slices) with split files ``<name>_train.txt`` / ``<name>_val.txt``; without
split files a seeded 80/20 split is made (the caller stores it with the run).
Pictures are read when an item is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llm4seg_core.datasets.files import case_stem, listing
from llm4seg_core.datasets.items import ModelGrid, SliceDataset, make_item
from llm4seg_core.datasets.labels import LabelMap, Split, read_split_files
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import PICTURE_SUFFIXES, Volume, read_image, read_mask, suffix_of
from llm4seg_core.preprocess import intensity_range

__all__ = ["Folder2D"]


class Folder2D:
    """A 2D dataset folder in the reference layout (BUSI, ISIC, Kvasir, TNSCUI).

    ``split_name`` picks ``<name>_train.txt`` / ``<name>_val.txt`` (looked for
    in the root and its parent); when None and exactly one such pair exists it
    is used. ``split`` (e.g. read back from a run folder) wins over both.
    Without split files a seeded 80/20 split is made.
    """

    kind = "2d"

    def __init__(self, root: str | Path, *, split_name: str | None = None,
                 split: Split | None = None, seed: int = 0, val_fraction: float = 0.2) -> None:
        self.root = Path(root).expanduser()
        img_dir = self.root / "images"
        mask_root = self.root / "masks"
        if not img_dir.is_dir() or not mask_root.is_dir():
            raise LLM4SegError(
                f"{self.root} is not a 2D dataset folder: it needs images/ and masks/0/ "
                "(or give a folder of 3D image/label volumes)"
            )
        self.mask_dirs = sorted(
            (d for d in mask_root.iterdir() if d.is_dir() and d.name.isdigit()),
            key=lambda d: int(d.name),
        )
        if not self.mask_dirs and self._pictures(mask_root):
            self.mask_dirs = [mask_root]  # masks/<case>.png: label-index maps (ACDC slices)
        if not self.mask_dirs:
            raise LLM4SegError(
                f"{mask_root} has no class folder 0/ and no masks; put the masks in {mask_root / '0'}"
            )
        self.images = self._pictures(img_dir)
        if not self.images:
            raise LLM4SegError(f"no pictures (png/jpg/bmp/tif) in {img_dir}")
        self.masks: list[dict[str, Path]] = []
        for d in self.mask_dirs:
            masks = self._pictures(d)
            missing = sorted(set(self.images) - set(masks))
            if missing:
                raise LLM4SegError(
                    f"{len(missing)} image(s) have no mask in {d}: "
                    f"{listing([self.images[c].name for c in missing])}"
                )
            orphans = sorted(set(masks) - set(self.images))
            if orphans:
                raise LLM4SegError(
                    f"{len(orphans)} mask(s) in {d} have no image of the same name in {img_dir}: "
                    f"{listing([masks[c].name for c in orphans])}"
                )
            self.masks.append(masks)
        self.cases = sorted(self.images)
        self.split = split or self._read_split(split_name, seed, val_fraction)
        unknown = sorted((set(self.split.train) | set(self.split.val)) - set(self.cases))
        if unknown:
            raise LLM4SegError(
                f"the split ({self.split.origin}) names {len(unknown)} case(s) not in {img_dir}: "
                f"{listing(unknown)}"
            )
        self._label_map: LabelMap | None = None

    @staticmethod
    def _pictures(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and suffix_of(p) in PICTURE_SUFFIXES:
                stem = case_stem(p)
                if stem in out:
                    raise LLM4SegError(
                        f"two files for case {stem!r} in {folder}: {out[stem].name} and {p.name}"
                    )
                out[stem] = p
        return out

    def _read_split(self, name: str | None, seed: int, val_fraction: float) -> Split:
        def to_id(line: str) -> str:
            p = Path(line)
            return case_stem(p) if suffix_of(p) in PICTURE_SUFFIXES else p.name

        return read_split_files(self.root, name, self.cases, seed, val_fraction, to_id)

    def _read_pair(self, case: str) -> tuple[Volume, np.ndarray]:
        img_path = self.images[case]
        vol = read_image(img_path)
        if vol.kind != "image2d":
            raise LLM4SegError(f"{img_path} is not a 2D picture ({vol.kind}, shape {vol.array.shape})")
        labels = np.zeros(vol.spatial_shape, np.uint8)
        for k, masks in enumerate(self.masks):
            m = read_mask(masks[case])
            if m.shape != vol.spatial_shape:
                raise LLM4SegError(
                    f"mask {masks[case]} has shape {m.shape} but image {img_path.name} has shape "
                    f"{vol.spatial_shape}; the mask must be drawn on that image"
                )
            if len(self.masks) == 1:
                labels = m
            else:
                labels[m > 0] = k + 1
        return vol, labels

    def read_case(self, case: str) -> tuple[Volume, np.ndarray]:
        """A case's picture and its label map (mask values), as read from the files."""
        return self._read_pair(case)

    def label_map(self) -> LabelMap:
        """The label values of all masks (read once)."""
        if self._label_map is None:
            if len(self.masks) > 1:
                self._label_map = LabelMap(tuple(range(1, len(self.masks) + 1)))
            else:
                values: set[int] = set()
                for case in self.cases:
                    values.update(int(v) for v in np.unique(read_mask(self.masks[0][case])))
                values.discard(0)
                self._label_map = LabelMap(tuple(sorted(values)) or (1,))
        return self._label_map

    @property
    def is_rgb(self) -> bool:
        return read_image(self.images[self.cases[0]]).is_rgb

    def item(self, case: str, z: int, grid: ModelGrid, label_map: LabelMap):
        vol, labels = self._read_pair(case)
        limits = intensity_range(vol, grid.intensity)
        return make_item(vol, labels, 0, limits, grid, label_map)

    def dataset(self, part: str, spec: Any, label_map: LabelMap | None = None) -> SliceDataset:
        cases = self._part(part)
        return SliceDataset(self, [(c, 0) for c in cases], ModelGrid.of(spec),
                            label_map or self.label_map())

    def _part(self, part: str) -> list[str]:
        if part not in ("train", "val"):
            raise ValueError(part)
        return list(self.split.train if part == "train" else self.split.val)

    def describe(self) -> str:
        return (f"2D folder {self.root}: {len(self.cases)} cases, {len(self.split.train)} train / "
                f"{len(self.split.val)} val ({self.split.origin})")
