"""napari sample data contribution: the demo chest CT with its expert label.

The demo cases are fetched once at set-up time (``llm4seg data fetch``, part
of ``make setup``); nothing here touches the network. When they are missing,
opening the sample raises LLM4SegError, which napari shows as a notification.
"""

from __future__ import annotations

from typing import Any

from llm4seg_core.data import data_dir, demo_case, demo_data_available
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.io import read_mask
from llm4seg_napari.geometry import VOLUME_KEY, layer_kwargs, reference_from_record
from llm4seg_napari._reader import LayerData, read_layers

__all__ = ["make_lung2_sample"]


def _demo_paths(case: str) -> tuple[Any, Any]:
    if not demo_data_available():
        raise LLM4SegError(
            f"the LLM4Seg demo data is not on this computer (looked in {data_dir()}); "
            "run `llm4seg data fetch` (or `make setup`) once, then open the sample again"
        )
    return demo_case(case)


def make_lung2_sample() -> list[LayerData]:
    """Demo chest CT (lung2): the CT in the lung window plus its expert lesion label."""
    image_path, label_path = _demo_paths("lung2")
    image = read_layers(str(image_path), window="lung")[0]
    data, kwargs, _ = image
    kwargs["name"] = "lung2 CT"
    record = kwargs["metadata"][VOLUME_KEY]
    reference = reference_from_record(record, tuple(record["shape"]))
    mask = read_mask(label_path, reference)
    label_kwargs: dict[str, Any] = {
        "name": "lung2 expert label",
        **layer_kwargs(reference),
        "metadata": {VOLUME_KEY: dict(record), "llm4seg_label_source": str(label_path)},
    }
    return [(data, kwargs, "image"), (mask, label_kwargs, "labels")]
