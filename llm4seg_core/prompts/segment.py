"""``PromptSegmenter``: one slice and its prompts in, the object's uint8 mask (slice size) out.

The image channels are made exactly as the
:class:`~llm4seg_core.inference.Segmenter` makes them (``slice_stack`` ->
``intensity_range`` -> ``to_model_input``, so a prompt model sees what the
training items of :mod:`llm4seg_core.datasets.prompted` gave it); the four
prompt maps of :mod:`~llm4seg_core.prompts.encode` follow them. Binary
output: logit > 0 at the slice's own size.

Usable from a worker thread: each call flushes denormals for its thread,
forwards run one at a time under a lock, and the per-volume intensity range
is cached per image object (weakly, so a closed image is not kept alive).

A request with a box is segmented in a window around the box, not on the
whole slice (:func:`box_window`): a square of twice the box's longer side (at
least :data:`MIN_WINDOW` pixels, at most the slice), so the object fills a
good part of the 128 x 128 model grid whatever the slice's size. The box gives
the object's scale; on the whole 512 x 512 slice a 20-pixel tumour is 5 grid
pixels, and the demo CTs' small tumours were missed from a box (Dice 0.0) that
the window finds (0.83, 0.88; docs/benchmarks.md). Clicks outside the window
are left out of it, the guide is cropped with it, and the mask is 0 outside.
Intensities keep the whole image's range.

The model of task :data:`PROMPT_TASK` is used by default (:meth:`load`);
while none is trained or imported, asking for it fails with a message that
says so, and an explicit spec (``prompt-llm4seg``) is an untrained model
(``trained`` False: front ends print their UNTRAINED notice).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4seg_core.device import flush_denormals, resolve_device
from llm4seg_core.errors import LLM4SegError
from llm4seg_core.model.spec import PROMPT_CHANNELS
from llm4seg_core.preprocess import intensity_range, logits_to_labels, slice_stack, to_model_input
from llm4seg_core.prompts.encode import prompt_maps
from llm4seg_core.prompts.records import SlicePrompts
from llm4seg_core.tta import model_logits

__all__ = ["ENGINES", "PROMPT_TASK", "PromptSegmenter", "SliceRequest", "check_prompt_model"]

PROMPT_TASK = "prompt"
"""The model store task of promptable models."""

ENGINES = ("auto", "torch", "openvino")
"""The CPU forward: ``auto`` (the model's OpenVINO form when it is already cached, else
PyTorch), ``torch``, ``openvino`` (converted now if need be)."""

DEFAULT_BATCH = {"cpu": 2, "cuda": 8, "mps": 8}

MIN_WINDOW = 64
"""The smallest side (image pixels) of the window a box's request is segmented in."""

NO_PROMPT_MODEL = (
    "no prompt model: task 'prompt' has no version in the model store {root} and none is "
    "shipped; train one (scripts/train_prompt_model.py) and add it with 'llm4seg models import "
    "FILE --task prompt', or pass --model with a prompt model checkpoint"
)


@dataclass(frozen=True)
class SliceRequest:
    """One slice to segment: its index, its prompts and its guide mask (slice-sized, or None)."""

    z: int
    prompts: SlicePrompts | None = None
    guide: np.ndarray | None = None


def box_window(box: Any, hw: tuple[int, int], min_side: int = MIN_WINDOW) -> tuple[int, int, int]:
    """``(y0, x0, side)``: the square window a request with ``box`` is segmented in, on a
    slice of size ``hw``: twice the box's longer side (at least ``min_side``), centred on the
    box and moved (not shrunk) to stay inside the slice; never larger than the slice."""
    h, w = hw
    side = max(2 * max(box.y1 - box.y0, box.x1 - box.x0), min_side)
    side = int(min(side, h, w))
    cy, cx = (box.y0 + box.y1) / 2, (box.x0 + box.x1) / 2
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, x0, side


def _windowed(volume: Any, r: SliceRequest, window: tuple[int, int, int],
              ) -> tuple[Any, SliceRequest]:
    """The one-slice image of ``window`` and ``r`` moved into it (clicks outside it dropped)."""
    import dataclasses

    from llm4seg_core.prompts.records import Box, Point

    y0, x0, side = window
    ys, xs = slice(y0, y0 + side), slice(x0, x0 + side)
    if volume.kind == "volume":
        array = volume.array[int(r.z): int(r.z) + 1, ys, xs]
    else:
        array = volume.array[ys, xs]
    sub = dataclasses.replace(volume, array=np.ascontiguousarray(array))
    p = r.prompts
    points = tuple(Point(q.y - y0, q.x - x0, q.positive) for q in p.points
                   if 0 <= q.y - y0 < side and 0 <= q.x - x0 < side)
    b = p.box
    last = side - 1  # corners are included
    box = Box(min(max(b.y0 - y0, 0), last), min(max(b.x0 - x0, 0), last),
              min(max(b.y1 - y0, 0), last), min(max(b.x1 - x0, 0), last))
    guide = None if r.guide is None else np.asarray(r.guide)[ys, xs]
    return sub, SliceRequest(0, SlicePrompts(points, box), guide)


def check_prompt_model(spec: Any, name: str) -> None:
    """A clear error unless ``spec`` is a prompt model's."""
    if getattr(spec, "prompt_channels", 0) != PROMPT_CHANNELS:
        raise LLM4SegError(f"{name} is not a prompt model (it takes no prompt channels); use the "
                           f"'{PROMPT_TASK}' task's model or a prompt model checkpoint")


class PromptSegmenter:
    """A prompt model, ready to segment the object prompts point at, slice by slice."""

    def __init__(self, model: Any, *, device: str | torch.device = "auto", trained: bool = True,
                 name: str = "", task: str = PROMPT_TASK, engine: str = "auto",
                 batch_size: int | None = None, tta: bool = False) -> None:
        check_prompt_model(model.spec, name or "this model")
        if engine not in ENGINES:
            raise LLM4SegError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
        self.device = resolve_device(device)
        if self.device.type == "cuda" and model.llm_block is not None and model.spec.freeze_llm:
            model.llm_block.llm.to(torch.bfloat16)
        # channels-last: the convolutions run faster so on a CPU (the Segmenter does the same)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.engine = engine
        self.batch_size = batch_size or DEFAULT_BATCH.get(self.device.type, 8)
        self.trained = trained
        self.name = name or ("untrained " if not trained else "") + "prompt model"
        self.task = task
        # average the 8 rotations/flips of image and prompts (llm4seg_core.tta): 8x a click's time
        self.tta = bool(tta)
        self.warning: str | None = None
        self.labels: tuple = ()
        self._lock = threading.Lock()
        self._limits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._forward: Any = None

    @classmethod
    def load(cls, model: str | Path | None = None, *, store: Any = None,
             device: str | torch.device = "auto", engine: str = "auto",
             batch_size: int | None = None) -> PromptSegmenter:
        """The prompt model ``model`` names (anything ``resolve_model`` takes); None or
        ``prompt``: task ``prompt``'s current version, else its shipped model, else an error."""
        from llm4seg_core.inference import model_labels
        from llm4seg_core.store import ModelStore, resolve_model
        from llm4seg_core.store.tasks import DEFAULT_TASK

        store = store if store is not None else ModelStore()
        text = model if isinstance(model, Path) else (model or "").strip()
        if text in ("", PROMPT_TASK) and PROMPT_TASK not in store.tasks():
            raise LLM4SegError(NO_PROMPT_MODEL.format(root=store.root))
        r = resolve_model(text or PROMPT_TASK, store, device="cpu")
        check_prompt_model(r.spec, r.name)
        seg = cls(r.model, device=device, trained=r.trained, name=r.name,
                  task=r.task if r.task != DEFAULT_TASK else PROMPT_TASK, engine=engine,
                  batch_size=batch_size)
        seg.warning = r.warning
        seg.labels = model_labels(r)
        return seg

    def label_table(self, values: Sequence[int] = ()) -> tuple:
        """The labels of a mask: the model's, else value 1 named "object"."""
        from llm4seg_core.io.labels import label_table

        if self.labels:
            return label_table(values, meta_labels=[lab.to_dict() for lab in self.labels])
        return label_table(values, names=("object",))

    def limits(self, volume: Any) -> tuple[float, float]:
        """The intensity range of ``volume`` (computed once per image object)."""
        with self._lock:
            lim = self._limits.get(volume)
            if lim is None:
                lim = intensity_range(volume, self.model.spec.intensity)
                self._limits[volume] = lim
            return lim

    def inputs(self, volume: Any, requests: Sequence[SliceRequest]) -> torch.Tensor:
        """The network input of ``requests``: (B, in + 4, S, S) float32 on the CPU."""
        spec = self.model.spec
        s = spec.image_size
        hw = _slice_hw(volume)
        n = volume.n_slices
        for r in requests:
            if not 0 <= int(r.z) < n:
                raise LLM4SegError(f"slice {r.z} does not exist (the image has slices 0..{n - 1})")
        x = to_model_input(slice_stack(volume, [int(r.z) for r in requests], spec.in_channels),
                           self.limits(volume), s)
        p = np.stack([prompt_maps(r.prompts, r.guide, hw, s) for r in requests])
        return torch.cat([x, torch.from_numpy(p)], dim=1)

    def _forward_fn(self) -> Any:
        if self._forward is None:
            self._forward = self.model
            if self.device.type == "cpu" and self.engine != "torch":
                from llm4seg_core import fastpath

                fwd = fastpath.compiled_forward(self.model,
                                                build_if_missing=self.engine == "openvino")
                if fwd is None and self.engine == "openvino":
                    raise LLM4SegError("the OpenVINO engine is not available for this model: "
                                       "use --engine torch")
                self._forward = fwd or self.model
        return self._forward

    def segment_slices(self, volume: Any, requests: Sequence[SliceRequest]) -> list[np.ndarray]:
        """The object's uint8 mask (0/1, the slice's size) for each request, in order
        (a request with a box: in its :func:`box_window`)."""
        hw = _slice_hw(volume)
        n = volume.n_slices
        out: list[np.ndarray | None] = [None] * len(requests)
        whole = []
        for i, r in enumerate(requests):
            if r.prompts is None or r.prompts.box is None:
                whole.append(i)
                continue
            if not 0 <= int(r.z) < n:
                raise LLM4SegError(f"slice {r.z} does not exist (the image has slices 0..{n - 1})")
            window = box_window(r.prompts.box, hw)
            sub, moved = _windowed(volume, r, window)
            limits = self.limits(volume)  # the whole image's intensity range
            with self._lock:
                self._limits[sub] = limits
            y0, x0, side = window
            mask = np.zeros(hw, np.uint8)
            mask[y0:y0 + side, x0:x0 + side] = self._segment(sub, [moved])[0]
            out[i] = mask
        for i, m in zip(whole, self._segment(volume, [requests[i] for i in whole]), strict=True):
            out[i] = m
        return out  # type: ignore[return-value]

    def _segment(self, volume: Any, requests: Sequence[SliceRequest]) -> list[np.ndarray]:
        """:meth:`segment_slices` on the whole slices, batched."""
        flush_denormals()
        hw = _slice_hw(volume)
        out: list[np.ndarray] = []
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start:start + self.batch_size])
            x = self.inputs(volume, batch)
            with self._lock, torch.inference_mode(), autocast:
                logits = model_logits(self._forward_fn(), x.to(self.device), model=self.model,
                                      tta=self.tta)
                labels = logits_to_labels(logits, hw).cpu().numpy()
            out.extend(labels[k] for k in range(len(batch)))
        return out

    def segment_slice(self, volume: Any, z: int, prompts: SlicePrompts | None = None,
                      guide: np.ndarray | None = None) -> np.ndarray:
        """The object's uint8 mask on slice ``z`` (0 for a 2-D picture)."""
        return self.segment_slices(volume, [SliceRequest(z, prompts, guide)])[0]


def _slice_hw(volume: Any) -> tuple[int, int]:
    shape = tuple(int(s) for s in volume.spatial_shape)
    return shape[-2], shape[-1]
