"""Prompted training items: one object of a labelled slice, its simulated prompts, its mask.

Wraps the dataset sources (:class:`~llm4seg_core.datasets.folder2d.Folder2D`,
:class:`~llm4seg_core.datasets.volumes.VolumePairs`; :func:`open_dataset`)
for the class-agnostic prompt model (:mod:`llm4seg_core.prompts`). An item
is ``(x, y)``: ``x`` float32 ``(in_channels + 4, S, S)``, the image channels
made as every item's (``slice_stack`` -> ``intensity_range`` ->
``to_model_input``) followed by the prompt maps of
:func:`~llm4seg_core.prompts.encode.prompt_maps`; ``y`` uint8 ``(S, S)``, the
object's binary mask (nearest neighbour). So the :class:`Trainer` trains on
it as on any binary dataset (its rotations, flips and crops move the prompt
maps with the image).

The object is one label value of the slice (a structure: an organ, a lesion,
the myocardium), not a connected component: a structure is what a person
outlines and what propagation carries from slice to slice, and its pieces on
one slice (a mandible cut in two) stay one object; a missed piece is what a
corrective click is for. Objects smaller than ``min_pixels`` are never
chosen. Partial labels are respected: a value a case's ``cases.json`` does
not list as contoured is never an object there.

The prompts (:class:`PromptMix`, seeded by ``(seed, epoch, index)``, so
items are the same for a seed and a resumed run sees what an uninterrupted
one saw; :meth:`PromptedSlices.set_epoch` draws new prompts for an epoch):

- a guide mask: in a 3-D set the same label on the slice above or below
  (half the time lightly perturbed, as a propagated prediction would be),
  which also gives "the object ended" items (the neighbour holds it, this
  slice does not: an empty target); in a 2-D set a perturbed copy of the
  target; sometimes with a corrective click;
- a box (jittered), sometimes with a corrective click;
- else 1-3 clicks: the first inside the object, the others at the largest
  error regions of a perturbed "previous prediction", which is given as the
  guide half the time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4seg_core.datasets.items import ModelGrid
from llm4seg_core.datasets.volumes import _LRU
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.preprocess import intensity_range, slice_stack, to_model_input
from llm4seg_core.prompts.encode import grid_index, prompt_maps
from llm4seg_core.prompts.records import SlicePrompts
from llm4seg_core.prompts.simulate import box_or_clicks, error_clicks, perturb

__all__ = ["HELD_OUT", "PromptMix", "PromptedMix", "PromptedSlices", "open_prompted"]

HELD_OUT = ("colin27", "aal", "mni152")
"""Datasets never trained on: the few-shot benchmark's held-out tasks (bench/fewshot_tasks.py)."""


@dataclass(frozen=True)
class PromptMix:
    """The shares of the prompt kinds (the rest: clicks only) and their details."""

    guide: float = 0.35
    box: float = 0.25
    max_clicks: int = 3  # clicks of a clicks-only item: 1..max_clicks
    extra_click: float = 0.3  # chance of one corrective click with a guide or a box
    previous_as_guide: float = 0.5  # chance that the corrected "previous prediction" is the guide
    perturb_neighbour: float = 0.5  # chance that a 3-D neighbour's mask is perturbed (strength 0.5)

    def __post_init__(self) -> None:
        if min(self.guide, self.box) < 0 or self.guide + self.box > 1 or self.max_clicks < 1:
            raise LLM4SegError("prompt mix: guide and box are shares (sum at most 1); "
                               "max_clicks >= 1")


@dataclass(frozen=True)
class _Ref:
    case: str
    z: int
    here: tuple[int, ...]  # objects on this slice
    near: tuple[tuple[int, int], ...]  # (value, dz) of objects on the slice z + dz (dz = +-1)


class PromptedSlices(torch.utils.data.Dataset):
    """Prompted items of one part (``train`` / ``val``) of a source.

    ``items``: None for one item per usable slice (slice order); a number for
    that many items an epoch, each of a slice drawn at random (balancing
    datasets of different sizes in a :class:`PromptedMix`).
    """

    def __init__(self, source: Any, part: str, spec: Any, *, mix: PromptMix | None = None,
                 seed: int = 0, items: int | None = None, min_pixels: int = 8,
                 cache_bytes: int = 512 << 20) -> None:
        if part not in ("train", "val"):
            raise ValueError(part)
        self.source = source
        self.grid = ModelGrid.of(spec)
        self.mix = mix or PromptMix()
        self.seed = seed
        self.epoch = 0
        self.min_pixels = min_pixels
        self.name = Path(getattr(source, "root", "dataset")).name
        self._cache = _LRU(cache_bytes)
        self._limits: dict[str, tuple[float, float]] = {}
        cases = list(source.split.train if part == "train" else source.split.val)
        self.refs = [r for c in cases for r in self._scan(c)]
        if not self.refs:
            raise LLM4SegError(f"{source.root}: no labelled object in the {part} cases")
        self.items = items

    def set_epoch(self, epoch: int) -> None:
        """Draw the prompts (and, with ``items``, the slices) of epoch ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.items if self.items is not None else len(self.refs)

    # -------------------------------------------------------------- reading

    def _read(self, case: str) -> tuple[Any, np.ndarray]:
        """The case's image and label map as (Z, H, W) labels (a picture: Z = 1)."""
        def make():
            vol, lab = self.source.read_case(case)
            lab = np.asarray(lab, np.uint8)
            if vol.kind == "image2d":
                lab = lab[None]
            return (vol, lab), int(vol.array.nbytes + lab.nbytes)

        return self._cache.get(case, make)

    def allowed(self, case: str) -> frozenset[int] | None:
        """The values that may be objects in ``case`` (None: any); partial labels."""
        contoured = getattr(self.source, "contoured", None)
        return None if contoured is None else frozenset(contoured[case])

    def _scan(self, case: str) -> list[_Ref]:
        _, lab = self._read(case)
        allowed = self.allowed(case)
        counts = [np.bincount(s.ravel(), minlength=256) for s in lab]
        objs = [tuple(v for v in (int(k) + 1 for k in np.nonzero(c[1:] >= self.min_pixels)[0])
                      if allowed is None or v in allowed) for c in counts]
        refs = []
        for z, here in enumerate(objs):
            near = tuple((v, dz) for dz in (-1, 1) if 0 <= z + dz < len(objs) for v in objs[z + dz])
            if here or near:
                refs.append(_Ref(case, z, here, near))
        return refs

    def limits(self, case: str, vol: Any) -> tuple[float, float]:
        if case not in self._limits:
            self._limits[case] = intensity_range(vol, self.grid.intensity)
        return self._limits[case]

    # -------------------------------------------------------------- items

    def draw(self, i: int) -> tuple[_Ref, int, SlicePrompts, np.ndarray | None, np.ndarray]:
        """Item ``i``'s slice, object value, prompts, guide and target (the slice's size)."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        ref = self.refs[i] if self.items is None else self.refs[int(rng.integers(len(self.refs)))]
        vol, lab = self._read(ref.case)
        mix = self.mix
        u = float(rng.uniform())
        kind = "guide" if u < mix.guide else "box" if u < mix.guide + mix.box else "clicks"
        if not ref.here:
            kind = "guide"  # only the neighbours hold an object: an "it ended" item
        if kind == "guide":
            pairs = ref.near if lab.shape[0] > 1 else tuple((v, 0) for v in ref.here)
            if not pairs:
                kind = "clicks"
        if kind == "guide":
            value, dz = pairs[int(rng.integers(len(pairs)))]
            target = lab[ref.z] == value
            if dz == 0:  # a 2-D set: a perturbed copy stands for the neighbour / previous mask
                guide = perturb(target, rng)
            else:
                guide = lab[ref.z + dz] == value
                if rng.uniform() < mix.perturb_neighbour:
                    guide = perturb(guide, rng, strength=0.5)
            clicks = error_clicks(target, guide, 1, rng) if rng.uniform() < mix.extra_click else []
            return ref, value, SlicePrompts(tuple(clicks)), guide, target
        value = ref.here[int(rng.integers(len(ref.here)))]
        target = lab[ref.z] == value
        prompts, guide = box_or_clicks(target, kind, rng, mix)
        return ref, value, prompts, guide, target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ref, _, prompts, guide, target = self.draw(int(i))
        vol, _ = self._read(ref.case)
        g = self.grid
        s = g.image_size
        hw = target.shape
        z = ref.z if vol.kind == "volume" else 0
        limits = self.limits(ref.case, vol)
        image = to_model_input(slice_stack(vol, [z], g.in_channels), limits, s)[0]
        maps = torch.from_numpy(prompt_maps(prompts, guide, hw, s))
        y = target[np.ix_(grid_index(hw[0], s), grid_index(hw[1], s))].astype(np.uint8)
        return torch.cat([image, maps]).contiguous(), torch.from_numpy(np.ascontiguousarray(y))

    def describe(self) -> str:
        ends = sum(1 for r in self.refs if not r.here)
        return (f"{self.name}: {len(self.refs)} slices with an object ({ends} only beside one); "
                f"{len(self)} items an epoch")


class PromptedMix(torch.utils.data.ConcatDataset):
    """Several :class:`PromptedSlices` as one dataset; :meth:`set_epoch` reaches each."""

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)

    def describe(self) -> str:
        return "; ".join(d.describe() for d in self.datasets)


def _held_out(path: Path) -> str | None:
    words = set(re.split(r"[^a-z0-9]+", path.name.lower()))
    hit = [h for h in HELD_OUT if h in words]
    return hit[0] if hit else None


def open_prompted(paths: list[str | Path], part: str, spec: Any, *, items: int | None = None,
                  seed: int = 0, mix: PromptMix | None = None,
                  min_pixels: int = 8) -> PromptedMix:
    """Prompted items of ``part`` of each dataset folder (``items`` each an epoch, else one a
    slice)."""
    from llm4seg_core.datasets import open_dataset

    parts = []
    for k, p in enumerate(paths):
        path = Path(p).expanduser()
        hit = _held_out(path)
        if hit:
            raise LLM4SegError(f"{path} looks like {hit}, held out of prompt training (the "
                               "few-shot benchmark's task)")
        parts.append(PromptedSlices(open_dataset(path, seed=seed), part, spec, mix=mix,
                                    seed=seed * 1000 + k, items=items, min_pixels=min_pixels))
    return PromptedMix(parts)
