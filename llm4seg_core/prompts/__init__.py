"""Prompted segmentation (issue 13): the object a person points at, one object at a time.

A prompt model (spec ``prompt_channels=4``, presets ``prompt-llm4seg`` and
``prompt-cmunext``, store task ``prompt``) takes four maps after the image
channels: positive clicks, negative clicks, a box, a guide mask (a
neighbouring slice's mask or the previous prediction). It is class-agnostic:
whatever the modality, it segments the object the prompts say.

Modules, one job each:

- ``records``: Point, Box, SlicePrompts (torch-free)
- ``encode``: prompts -> the four maps at the model grid (numpy)
- ``parse``: PROMPTS.json read and checked against an image (torch-free)
- ``simulate``: the simulated user (first click, box, next click; NoC loop)
- ``segment``: PromptSegmenter (one slice + its prompts -> the object's mask)
- ``propagate``: through a volume from seed slices, both ways, stop when empty

The names below are imported lazily, so importing this package (or ``parse``)
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm4seg_core.lazy import lazy_exports

if TYPE_CHECKING:
    from llm4seg_core.prompts.encode import CHANNELS, CLICK_RADIUS, prompt_maps
    from llm4seg_core.prompts.parse import parse_prompts, read_prompts
    from llm4seg_core.prompts.propagate import (
        Propagation, propagate, propagate_mask, segment_prompted,
    )
    from llm4seg_core.prompts.records import Box, Point, SlicePrompts
    from llm4seg_core.prompts.segment import PROMPT_TASK, PromptSegmenter, SliceRequest
    from llm4seg_core.prompts.simulate import box_of, click_until, first_click, next_click, perturb

_EXPORTS = {
    "Box": ".records",
    "Point": ".records",
    "SlicePrompts": ".records",
    "CHANNELS": ".encode",
    "CLICK_RADIUS": ".encode",
    "prompt_maps": ".encode",
    "parse_prompts": ".parse",
    "read_prompts": ".parse",
    "box_of": ".simulate",
    "click_until": ".simulate",
    "first_click": ".simulate",
    "next_click": ".simulate",
    "perturb": ".simulate",
    "PROMPT_TASK": ".segment",
    "PromptSegmenter": ".segment",
    "SliceRequest": ".segment",
    "Propagation": ".propagate",
    "propagate": ".propagate",
    "propagate_mask": ".propagate",
    "segment_prompted": ".propagate",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
