"""The one item format of every source: model-ready ``(x, y)`` pairs of one slice.

``x`` is float32 ``(C, S, S)`` made by the same
:func:`~llm4seg_core.preprocess.slice_stack` + ``intensity_range`` +
``to_model_input`` calls the :class:`~llm4seg_core.inference.Segmenter` uses
(so training and inference see identical inputs); ``y`` uint8 ``(S, S)``
class indices, resized with nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llm4seg_core.datasets.labels import LabelMap
from llm4seg_core.io import Volume
from llm4seg_core.preprocess import slice_stack, to_model_input

__all__ = ["ModelGrid", "SliceDataset", "make_item"]


@dataclass(frozen=True)
class ModelGrid:
    """What a dataset needs to know about the model: channels, input size, intensity scheme."""

    in_channels: int = 1
    image_size: int = 256
    intensity: str = "auto"

    @classmethod
    def of(cls, spec: Any) -> ModelGrid:
        return cls(spec.in_channels, spec.image_size, spec.intensity)


def make_item(
    volume: Volume, labels2d: np.ndarray, z: int, limits: tuple[float, float], grid: ModelGrid,
    label_map: LabelMap,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` pair of slice ``z`` of ``volume`` with its labels ``labels2d``."""
    x = to_model_input(slice_stack(volume, [z], grid.in_channels), limits, grid.image_size)[0]
    y = torch.from_numpy(np.ascontiguousarray(label_map.apply(labels2d)))
    s = grid.image_size
    if tuple(y.shape) != (s, s):
        y = F.interpolate(y[None, None].float(), size=(s, s), mode="nearest-exact")[0, 0]
        y = y.to(torch.uint8)
    return x.contiguous(), y.contiguous()


class SliceDataset(torch.utils.data.Dataset):
    """Model-ready ``(x, y)`` pairs for a list of ``(case, z)`` slices of a source.

    :meth:`keep_in_memory` makes each item decoded and resized once: later
    epochs read it from memory (the items are already at the model grid, so a
    128 x 128 RGB item is 0.2 MB). Items past the memory budget are read from
    the files as before.
    """

    def __init__(self, source: Any, refs: Sequence[tuple[str, int]], grid: ModelGrid,
                 label_map: LabelMap) -> None:
        self.source = source
        self.refs = list(refs)
        self.grid = grid
        self.label_map = label_map
        self._kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._budget = 0  # bytes left for kept items

    def keep_in_memory(self, max_mb: float) -> SliceDataset:
        """Keep up to ``max_mb`` MB of items in memory once read (0: keep none)."""
        self._budget = int(max_mb * 2**20)
        return self

    @property
    def kept_items(self) -> int:
        return len(self._kept)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        kept = self._kept.get(i)
        if kept is not None:
            return kept
        case, z = self.refs[i]
        item = self.source.item(case, z, self.grid, self.label_map)
        size = sum(t.element_size() * t.nelement() for t in item)
        if size <= self._budget:
            self._kept[i] = item
            self._budget -= size
        return item
