"""Training data: 2D dataset folders, 3D volume pairs, and a session's corrected slices.

Three sources, one item format (:mod:`~llm4seg_core.datasets.items`): every
source yields model-ready pairs ``(x, y)``, made exactly as the Segmenter
makes its input, with ``y`` the class indices (0 background, 1..N labels).

- ``labels``: LabelMap (mask values -> classes), Split, random_split (torch-free)
- ``folder2d``: Folder2D, the reference 2D layout images/ + masks/0/
- ``volumes``: VolumePairs, 3D image/label pairs (imagesTr/ + labelsTr/ or
  ``<case>_image`` / ``<case>_label``)
- ``corrections``: CorrectionSet, the corrected slices of one volume
- ``items``: ModelGrid, SliceDataset (the torch dataset the sources hand out)
- ``prompted``: PromptedSlices, PromptedMix, open_prompted: one object of a
  slice with simulated prompts, for the prompt model (``llm4seg_core.prompts``)

Nothing is held in RAM as float. The names below are imported lazily (on
first use), so importing this package, or reading a split, does not import
torch. Slice lists (``"3,7,10-12"``) live in :mod:`llm4seg_core.slices`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llm4seg_core.errors import LLM4SegError
from llm4seg_core.lazy import lazy_exports

if TYPE_CHECKING:
    from llm4seg_core.datasets.corrections import CorrectionSet
    from llm4seg_core.datasets.folder2d import Folder2D
    from llm4seg_core.datasets.items import ModelGrid, SliceDataset
    from llm4seg_core.datasets.labels import SPLIT_FILE, LabelMap, Split, random_split
    from llm4seg_core.datasets.prompted import PromptedMix, PromptedSlices, open_prompted
    from llm4seg_core.datasets.volumes import VolumePairs

_EXPORTS = {
    "SPLIT_FILE": ".labels",
    "LabelMap": ".labels",
    "Split": ".labels",
    "random_split": ".labels",
    "ModelGrid": ".items",
    "SliceDataset": ".items",
    "Folder2D": ".folder2d",
    "VolumePairs": ".volumes",
    "CorrectionSet": ".corrections",
    "PromptedSlices": ".prompted",
    "PromptedMix": ".prompted",
    "open_prompted": ".prompted",
}

__all__ = sorted([*_EXPORTS, "open_dataset"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def open_dataset(path: str | Path, *, split_name: str | None = None, split: Split | None = None,
                 seed: int = 0, val_fraction: float = 0.2) -> Folder2D | VolumePairs:
    """The dataset at ``path``: a 2D folder (images/ + masks/) or 3D volume pairs."""
    from llm4seg_core.datasets.folder2d import Folder2D
    from llm4seg_core.datasets.volumes import VolumePairs

    root = Path(path).expanduser()
    if not root.is_dir():
        raise LLM4SegError(f"no such dataset folder: {root}")
    if (root / "images").is_dir() or (root / "masks").is_dir():
        return Folder2D(root, split_name=split_name, split=split, seed=seed,
                        val_fraction=val_fraction)
    return VolumePairs(root, split_name=split_name, split=split, seed=seed,
                       val_fraction=val_fraction)
