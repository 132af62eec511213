"""Training data: 2D dataset folders, 3D volume pairs, and a session's corrected slices.

Three sources, one item format. Every source yields model-ready pairs
``(x, y)``: ``x`` float32 ``(C, S, S)`` made by the same
:func:`~llm4seg_core.preprocess.slice_stack` + ``intensity_range`` +
``to_model_input`` calls the :class:`~llm4seg_core.inference.Segmenter` uses
(so training and inference see identical inputs), ``y`` uint8 ``(S, S)``
class indices (0 background, 1..N labels), resized with nearest neighbour.

* :class:`Folder2D` - the reference layout ``<root>/images/<case>.<ext>``,
  ``<root>/masks/0/<case>.<ext>`` (png/jpg/bmp/tif; 0/255 or label values;
  ``masks/1``, ``masks/2``... hold further classes when present) with split
  files ``<name>_train.txt`` / ``<name>_val.txt``; without split files a
  seeded 80/20 split is made (the caller stores it with the run).
* :class:`VolumePairs` - 3D image/label pairs: ``imagesTr/`` + ``labelsTr/``
  (nnU-Net naming, ``case_0000.nii.gz`` / ``case.nii.gz``) or
  ``<case>_image.<ext>`` / ``<case>_label.<ext>`` files in one folder (the
  demo data folder). Sampled slice-wise: every slice holding a label plus a
  seeded share of empty slices.
* :class:`CorrectionSet` - the corrected slices of one volume in a session.
  Only those slices' labels are ever read.

Nothing is held in RAM as float: 2D pictures are read when an item is asked
for; volumes stay in their file's dtype (int16 for CT) in a small LRU cache
bounded in bytes, and labels as uint8.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import PICTURE_SUFFIXES, VOLUME_SUFFIXES, Volume, read_image, read_mask
from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input

__all__ = [
    "CorrectionSet",
    "Folder2D",
    "LabelMap",
    "SliceDataset",
    "Split",
    "VolumePairs",
    "choose_slices",
    "open_dataset",
    "parse_slices",
    "structure_slices",
]

SPLIT_FILE = "split.json"


# --------------------------------------------------------------------------- helpers


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


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in VOLUME_SUFFIXES + PICTURE_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _stem(path: Path) -> str:
    s = _suffix(path)
    return path.name[: -len(s)] if s and path.name.lower().endswith(s) else path.stem


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in list(names)[:limit])
    more = len(names) - limit
    return shown + (f" and {more} more" if more > 0 else "")


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


# --------------------------------------------------------------------------- item making


@dataclass(frozen=True)
class ModelGrid:
    """What a dataset needs to know about the model: channels, input size, intensity scheme."""

    in_channels: int = 1
    image_size: int = 256
    intensity: str = "auto"

    @classmethod
    def of(cls, spec: Any) -> ModelGrid:
        return cls(spec.in_channels, spec.image_size, spec.intensity)


def _make_item(
    volume: Volume, labels2d: np.ndarray, z: int, limits: tuple[float, float], grid: ModelGrid,
    label_map: LabelMap,
) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_model_input(slice_stack(volume, [z], grid.in_channels), limits, grid.image_size)[0]
    y = torch.from_numpy(np.ascontiguousarray(label_map.apply(labels2d)))
    s = grid.image_size
    if tuple(y.shape) != (s, s):
        y = F.interpolate(y[None, None].float(), size=(s, s), mode="nearest-exact")[0, 0]
        y = y.to(torch.uint8)
    return x.contiguous(), y.contiguous()


class SliceDataset(torch.utils.data.Dataset):
    """Model-ready ``(x, y)`` pairs for a list of ``(case, z)`` slices of a source."""

    def __init__(self, source: Any, refs: Sequence[tuple[str, int]], grid: ModelGrid,
                 label_map: LabelMap) -> None:
        self.source = source
        self.refs = list(refs)
        self.grid = grid
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        case, z = self.refs[i]
        return self.source.item(case, z, self.grid, self.label_map)


# --------------------------------------------------------------------------- 2D folders


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
        if not self.mask_dirs:
            raise LLM4SegError(f"{mask_root} has no class folder 0/; put the masks in {mask_root / '0'}")
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
                    f"{_listing([self.images[c].name for c in missing])}"
                )
            orphans = sorted(set(masks) - set(self.images))
            if orphans:
                raise LLM4SegError(
                    f"{len(orphans)} mask(s) in {d} have no image of the same name in {img_dir}: "
                    f"{_listing([masks[c].name for c in orphans])}"
                )
            self.masks.append(masks)
        self.cases = sorted(self.images)
        self.split = split or self._read_split(split_name, seed, val_fraction)
        unknown = sorted((set(self.split.train) | set(self.split.val)) - set(self.cases))
        if unknown:
            raise LLM4SegError(
                f"the split ({self.split.origin}) names {len(unknown)} case(s) not in {img_dir}: "
                f"{_listing(unknown)}"
            )
        self._label_map: LabelMap | None = None

    @staticmethod
    def _pictures(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and _suffix(p) in PICTURE_SUFFIXES:
                stem = _stem(p)
                if stem in out:
                    raise LLM4SegError(
                        f"two files for case {stem!r} in {folder}: {out[stem].name} and {p.name}"
                    )
                out[stem] = p
        return out

    def _read_split(self, name: str | None, seed: int, val_fraction: float) -> Split:
        places = [self.root, self.root.parent]
        if name is None:
            names = sorted({p.name[: -len("_train.txt")] for d in places
                            for p in d.glob("*_train.txt")})
            names = [n for n in names if any((d / f"{n}_val.txt").is_file() for d in places)]
            if len(names) > 1:
                raise LLM4SegError(
                    f"several split files next to {self.root}: {', '.join(names)}; choose one "
                    "with --split-name"
                )
            if not names:
                return random_split(self.cases, seed, val_fraction)
            name = names[0]
        for d in places:
            tr, va = d / f"{name}_train.txt", d / f"{name}_val.txt"
            if tr.is_file() and va.is_file():
                return Split(self._ids(tr), self._ids(va), origin=f"{tr.name} / {va.name}")
        raise LLM4SegError(f"no split files {name}_train.txt and {name}_val.txt in {self.root}")

    def _ids(self, path: Path) -> list[str]:
        ids = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            ids.append(_stem(p) if _suffix(p) in PICTURE_SUFFIXES else p.name)
        if not ids:
            raise LLM4SegError(f"split file {path} lists no cases")
        return ids

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
        return _make_item(vol, labels, 0, limits, grid, label_map)

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


# --------------------------------------------------------------------------- 3D pairs


class VolumePairs:
    """3D image/label pairs, sampled slice-wise.

    ``empty_fraction``: per case, the number of label-free slices kept is this
    fraction of its labelled slices (seeded choice); 1.0 with ``all_slices``
    keeps every slice. ``cache_bytes`` bounds the volumes kept in RAM (in their
    file dtype) between items.
    """

    kind = "3d"

    def __init__(self, root: str | Path, *, split: Split | None = None, seed: int = 0,
                 val_fraction: float = 0.2, empty_fraction: float = 0.25,
                 all_slices: bool = False, cache_bytes: int = 1 << 30) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise LLM4SegError(f"no such dataset folder: {self.root}")
        self.pairs = self._discover()
        self.cases = sorted(self.pairs)
        self.split = split or random_split(self.cases, seed, val_fraction)
        unknown = sorted((set(self.split.train) | set(self.split.val)) - set(self.cases))
        if unknown:
            raise LLM4SegError(f"the split names case(s) not in {self.root}: {_listing(unknown)}")
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
                if _suffix(p) not in VOLUME_SUFFIXES or p.name.startswith("."):
                    continue
                stem = _stem(p)
                m = re.fullmatch(r"(.+)_(\d{4})", stem)
                if m and m.group(2) != "0000":
                    continue  # further modalities: the model reads channel 0000
                images[m.group(1) if m else stem] = p
            labels = {_stem(p): p for p in sorted(lab_dir.iterdir())
                      if _suffix(p) in VOLUME_SUFFIXES and not p.name.startswith(".")}
            where = (img_dir, lab_dir)
        else:
            images, labels = {}, {}
            for p in sorted(self.root.iterdir()):
                if not p.is_file() or _suffix(p) not in VOLUME_SUFFIXES:
                    continue
                m = re.fullmatch(r"(.+)_(image|label|mask|seg)", _stem(p), flags=re.IGNORECASE)
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
                f"{_listing([images[c].name for c in missing])}"
            )
        orphans = sorted(set(labels) - set(images))
        if orphans:
            raise LLM4SegError(
                f"{len(orphans)} label volume(s) have no image in {where[0]}: "
                f"{_listing([labels[c].name for c in orphans])}"
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
        return _make_item(vol, lab[z], z, limits[key], grid, label_map)

    def dataset(self, part: str, spec: Any, label_map: LabelMap | None = None) -> SliceDataset:
        if part not in ("train", "val"):
            raise ValueError(part)
        cases = self.split.train if part == "train" else self.split.val
        refs = [(c, z) for c in cases for z in self.slices_of(c)]
        return SliceDataset(self, refs, ModelGrid.of(spec), label_map or self.label_map())

    def describe(self) -> str:
        return (f"3D volumes {self.root}: {len(self.cases)} cases, {len(self.split.train)} train / "
                f"{len(self.split.val)} val ({self.split.origin})")


def open_dataset(path: str | Path, *, split_name: str | None = None, split: Split | None = None,
                 seed: int = 0, val_fraction: float = 0.2) -> Folder2D | VolumePairs:
    """The dataset at ``path``: a 2D folder (images/ + masks/) or 3D volume pairs."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LLM4SegError(f"no such dataset folder: {root}")
    if (root / "images").is_dir() or (root / "masks").is_dir():
        return Folder2D(root, split_name=split_name, split=split, seed=seed,
                        val_fraction=val_fraction)
    if split_name:
        raise LLM4SegError("--split-name applies to 2D dataset folders (images/ + masks/0/) only")
    return VolumePairs(root, split=split, seed=seed, val_fraction=val_fraction)


# --------------------------------------------------------------------------- corrections


@dataclass
class CorrectionSet:
    """The corrected slices of one volume: the training set of a session.

    ``labels`` is the full label array of the volume (its spatial shape);
    only ``slices`` are read from it, so uncorrected slices (raw model output,
    or nothing) never reach the loss.
    """

    volume: Volume
    labels: np.ndarray
    slices: Sequence[int]
    label_map: LabelMap | None = None
    _limits: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        shape = self.volume.spatial_shape
        if tuple(self.labels.shape) != tuple(shape):
            raise LLM4SegError(
                f"the labels have shape {tuple(self.labels.shape)} but the image "
                f"{self.volume.source or ''} has shape {shape}; use the mask of this image"
            )
        self.slices = sorted({int(z) for z in self.slices})
        if not self.slices:
            raise LLM4SegError(
                "no corrected slices: correct (or mark as correct) at least one slice first"
            )
        n = self.volume.n_slices
        bad = [z for z in self.slices if z < 0 or z >= n]
        if bad:
            raise LLM4SegError(f"corrected slices {bad} are outside the image's slices 0..{n - 1}")
        # copy only the corrected slices (uint8): later edits elsewhere cannot leak in
        view = self.labels if self.volume.kind == "volume" else self.labels[None]
        self._kept = {z: np.array(view[z], dtype=np.uint8) for z in self.slices}
        if self.label_map is None:
            values = sorted({int(v) for a in self._kept.values() for v in np.unique(a) if v})
            self.label_map = LabelMap(tuple(values) or (1,))

    def __len__(self) -> int:
        return len(self.slices)

    def slice_labels(self, z: int) -> np.ndarray:
        return self._kept[z]

    def item(self, case: str, z: int, grid: ModelGrid, label_map: LabelMap):
        if grid.intensity not in self._limits:
            self._limits[grid.intensity] = intensity_range(self.volume, grid.intensity)
        return _make_item(self.volume, self._kept[z], z, self._limits[grid.intensity], grid,
                          label_map)

    def dataset(self, spec: Any, label_map: LabelMap | None = None) -> SliceDataset:
        lm = label_map or self.label_map
        assert lm is not None
        return SliceDataset(self, [("", z) for z in self.slices], ModelGrid.of(spec), lm)


# --------------------------------------------------------------------------- few-shot slice choice


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
