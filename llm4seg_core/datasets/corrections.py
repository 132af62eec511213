"""The corrected slices of one volume in a session: the training set of a fine-tune.

Only those slices' labels are ever read, and they are copied when the set is
made, so uncorrected slices (raw model output) never reach the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm4seg_core.datasets.items import ModelGrid, SliceDataset, make_item
from llm4seg_core.datasets.labels import LabelMap
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import Volume
from llm4seg_core.preprocess import intensity_range

__all__ = ["CorrectionSet"]


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
        return make_item(self.volume, self._kept[z], z, self._limits[grid.intensity], grid,
                          label_map)

    def dataset(self, spec: Any, label_map: LabelMap | None = None) -> SliceDataset:
        lm = label_map or self.label_map
        assert lm is not None
        return SliceDataset(self, [("", z) for z in self.slices], ModelGrid.of(spec), lm)
